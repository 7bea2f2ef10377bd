//! Connections: a deadline on request heads closes idle sockets, `max_connections` bounds
//! how many are open (closing the ones beyond at once), and a WebSocket holds its slot.

use std::time::{Duration, Instant};

use cellar_server::ServerOptions;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{STEP, TestServer, local_server};
use crate::events::connect;

/// The header deadline of these tests.
const DEADLINE: Duration = Duration::from_secs(1);
/// A longer one, where the test must tell connections closed at once from those closed at
/// the deadline even on a busy machine.
const LONG_DEADLINE: Duration = Duration::from_secs(3);
/// Slack for a close the deadline causes: it must come after the deadline, and by this.
const CLOSED_BY: Duration = Duration::from_secs(5);
/// How soon a connection beyond `max_connections` must be closed: well before the deadline.
const AT_ONCE: Duration = Duration::from_millis(500);

fn options(max_connections: usize, header_read_timeout: Duration) -> ServerOptions {
    ServerOptions {
        header_read_timeout,
        max_connections,
        ..ServerOptions::default()
    }
}

async fn open(server: &TestServer) -> TcpStream {
    TcpStream::connect(server.addr).await.expect("connects")
}

/// How long after `since` the server closed `stream` (end of stream or reset), reading
/// and dropping whatever it sent; `None` if it is still open `within` after `since`.
async fn closed(stream: &mut TcpStream, since: Instant, within: Duration) -> Option<Duration> {
    let mut buf = [0; 1024];
    let until_closed = async { while let Ok(1..) = stream.read(&mut buf).await {} };
    let left = within.saturating_sub(since.elapsed());
    tokio::time::timeout(left, until_closed)
        .await
        .ok()
        .map(|()| since.elapsed())
}

/// Polls `GET /healthz` on fresh connections until it answers 200; how long that took.
async fn healthz_answers(server: &TestServer) -> Duration {
    let start = Instant::now();
    loop {
        let answer = server.client.get(server.url("/healthz")).send().await;
        if answer.is_ok_and(|answer| answer.status() == 200) {
            return start.elapsed();
        }
        assert!(start.elapsed() < STEP, "/healthz never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_connection_without_a_complete_request_head_is_closed_at_the_deadline() {
    let (server, _engine, _dirs) = local_server(options(64, DEADLINE)).await;

    let silent_since = Instant::now();
    let mut silent = open(&server).await;
    let half_since = Instant::now();
    let mut half = open(&server).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: cellar\r\nX-Half: ")
        .await
        .expect("half a head");
    let mut kept_alive = open(&server).await;
    kept_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: cellar\r\n\r\n")
        .await
        .expect("a request");
    let mut response = Vec::new();
    while !String::from_utf8_lossy(&response).contains(r#"{"status":"ok"}"#) {
        let mut buf = [0; 1024];
        let read = kept_alive.read(&mut buf).await.expect("a response");
        assert!(read > 0, "closed before answering: {response:?}");
        response.extend_from_slice(&buf[..read]);
    }
    let idle_since = Instant::now();

    let (silent, half, idle) = tokio::join!(
        closed(&mut silent, silent_since, CLOSED_BY),
        closed(&mut half, half_since, CLOSED_BY),
        closed(&mut kept_alive, idle_since, CLOSED_BY),
    );
    for (connection, closed) in [
        ("a connection that sent nothing", silent),
        ("a connection that sent half a request head", half),
        ("a keep-alive connection idle after its answer", idle),
    ] {
        let closed = closed.unwrap_or_else(|| panic!("{connection}: open after {CLOSED_BY:?}"));
        assert!(
            closed >= DEADLINE - Duration::from_millis(100),
            "{connection}: closed after {closed:?}, before the deadline"
        );
    }
}

#[tokio::test]
async fn connections_beyond_the_maximum_are_closed_at_once_and_healthz_answers_after_the_deadline()
{
    const MAX: usize = 8;
    let (server, _engine, _dirs) = local_server(options(MAX, LONG_DEADLINE)).await;
    let start = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..MAX + 20 {
        idle.push(open(&server).await);
    }

    let closed_at_once = futures::future::join_all(
        idle.iter_mut()
            .map(|stream| closed(stream, Instant::now(), AT_ONCE)),
    )
    .await;
    let open_still = closed_at_once
        .iter()
        .filter(|closed| closed.is_none())
        .count();
    assert_eq!(
        open_still, MAX,
        "the connections beyond the {MAX} slots are closed at once, the others kept"
    );

    let answered = healthz_answers(&server).await;
    assert!(
        start.elapsed() < LONG_DEADLINE + CLOSED_BY,
        "/healthz answered {answered:?} after polling began, {:?} after the idle flood",
        start.elapsed()
    );
    for stream in &mut idle {
        assert!(
            closed(stream, start, LONG_DEADLINE + CLOSED_BY)
                .await
                .is_some(),
            "an idle connection outlived the deadline"
        );
    }
    let metrics = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    let refused: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("cellar_http_connections_refused_total "))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no refused-connections counter in:\n{metrics}"));
    assert!(
        refused >= 20,
        "{refused} connections counted as refused, 20 were"
    );
}

#[tokio::test]
async fn a_websocket_keeps_its_slot_and_outlives_the_header_deadline() {
    let (server, _engine, _dirs) = local_server(options(1, DEADLINE)).await;
    let (mut socket, _) = connect(&server, "wendy").await;

    let mut other = open(&server).await;
    assert!(
        closed(&mut other, Instant::now(), AT_ONCE).await.is_some(),
        "the only slot is the WebSocket's: another connection is closed at once"
    );

    tokio::time::sleep(DEADLINE + Duration::from_millis(500)).await;
    socket
        .send(Message::Ping(b"still there?".to_vec().into()))
        .await
        .expect("ping");
    let pong = loop {
        match tokio::time::timeout(STEP, socket.next()).await {
            Ok(Some(Ok(Message::Pong(payload)))) => break payload,
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a pong past the header deadline, got {other:?}"),
        }
    };
    assert_eq!(&pong[..], b"still there?");

    socket.close(None).await.expect("close");
    healthz_answers(&server).await;
}

/// Reads from `stream` until what arrived contains `marker`, the server closes it, or
/// `within` passes; what arrived, as text.
async fn read_until(stream: &mut TcpStream, marker: &str, within: Duration) -> String {
    let mut response = Vec::new();
    let read = async {
        let mut buf = [0; 4096];
        while !String::from_utf8_lossy(&response).contains(marker) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(within, read).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_answered_408_and_the_slot_is_freed() {
    let mut options = options(1, LONG_DEADLINE);
    options.limits.body_read_timeout = DEADLINE;
    let (server, _engine, _dirs) = local_server(options).await;
    let mut trickle = open(&server).await;
    let since = Instant::now();
    trickle
        .write_all(
            b"POST /v1/query HTTP/1.1\r\nHost: cellar\r\nX-User-Id: slow\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"statements\"",
        )
        .await
        .expect("a head and part of a body");
    let answer = read_until(&mut trickle, "request_timeout", CLOSED_BY).await;
    let took = since.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(
        took >= DEADLINE - Duration::from_millis(100) && took < CLOSED_BY,
        "answered after {took:?}"
    );
    drop(trickle);
    healthz_answers(&server).await;
}

#[tokio::test]
async fn a_client_that_never_reads_its_answer_loses_the_connection_and_its_slot() {
    let mut options = options(1, LONG_DEADLINE);
    options.write_stall_timeout = DEADLINE;
    let (server, engine, _dirs) = local_server(options).await;
    // A database far larger than the socket buffers between two loopback sockets, made
    // through the engine: an HTTP client would keep the only slot for its keep-alive.
    let reader = cellar_engine::UserId::new("reader").expect("a user id");
    engine
        .transact(&reader, |conn| {
            conn.execute_batch(
                "CREATE TABLE big(b BLOB); INSERT INTO big WITH RECURSIVE c(n) AS (SELECT 1 \
                 UNION ALL SELECT n + 1 FROM c WHERE n < 48) SELECT randomblob(1000000) FROM c",
            )
        })
        .await
        .expect("48 MB written");
    let mut stalled = open(&server).await;
    stalled
        .write_all(b"GET /v1/db/file HTTP/1.1\r\nHost: cellar\r\nX-User-Id: reader\r\n\r\n")
        .await
        .expect("a request");
    let since = Instant::now();
    // It reads nothing; its slot is the only one, so /healthz can only answer once the
    // server has closed the stalled connection.
    let answered = healthz_answers(&server).await;
    assert!(
        since.elapsed() >= DEADLINE - Duration::from_millis(100),
        "/healthz answered after {answered:?}, before the stalled write's deadline"
    );
    let mut rest = Vec::new();
    let read = tokio::time::timeout(CLOSED_BY, stalled.read_to_end(&mut rest)).await;
    let total = rest.len();
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))) && total < 48_000_000,
        "the stalled connection was cut before its 48 MB answer ({total} bytes arrived)"
    );
}
