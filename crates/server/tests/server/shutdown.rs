//! Graceful shutdown: stop accepting, finish requests in flight and their uploads.

use std::time::{Duration, Instant};

use cellar_engine::{ConflictPolicy, UserId};
use cellar_server::ServerOptions;
use futures::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::common::{Dirs, STEP, TestServer, engine};
use crate::events::connect;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight_and_their_uploads() {
    let dirs = Dirs::new();
    let a = engine(dirs.data("a"), dirs.bucket(), ConflictPolicy::LastWriteWins).await;
    let erin = UserId::new("erin").expect("valid id");
    let mut server = TestServer::start(a.clone(), ServerOptions::default()).await;
    let (mut socket, _) = connect(&server, "erin").await;
    let stopper = server.stopper();
    // Holding a session holds erin's lock: the request below waits for it, in flight.
    let held = a.begin(&erin).await.expect("session");

    let in_flight = async {
        let statements = json!({ "statements": ["CREATE TABLE t(x)", "INSERT INTO t VALUES (1)"] });
        (server.query("erin", statements).await, Instant::now())
    };
    let stop = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let asked = Instant::now();
        let release = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(held);
        };
        let (stopped, ()) = tokio::join!(stopper.stop(), release);
        (stopped, asked)
    };
    let ((answer, answered), (stopped, asked)) = tokio::join!(in_flight, stop);

    assert!(
        answered > asked,
        "the request was in flight when shutdown began"
    );
    assert_eq!(
        (answer.status, answer.version),
        (200, Some(1)),
        "{:?}",
        answer.body
    );
    stopped.expect("serve returns cleanly");
    let refused = server.client.get(server.url("/healthz")).send().await;
    assert!(refused.is_err(), "no longer accepting");

    let close = loop {
        match tokio::time::timeout(STEP, socket.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));

    let fresh = engine(dirs.data("b"), dirs.bucket(), ConflictPolicy::LastWriteWins).await;
    let status = fresh.status(&erin).await.expect("status");
    assert_eq!(
        status.version.get(),
        1,
        "the bucket has the in-flight request's upload"
    );
}
