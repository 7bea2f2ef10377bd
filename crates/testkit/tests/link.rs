//! `LimitedLink` forwards both directions intact and paces each connection's
//! downloads to its own budget. Loopback only; every test is bounded in time.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use cellar_testkit::LimitedLink;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: u64 = 1024 * 1024;
/// Length of [`BODY`].
const BODY_LEN: usize = 4 * MIB as usize;
/// 4 MiB at 16 MiB/s: 0.25 s per connection.
const RATE: u64 = 16 * MIB;
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the test server sends after echoing the request: bytes that do not
/// repeat with the proxy's 64 KiB chunks, so a lost, duplicated or reordered
/// chunk shows. Made once, before any timing starts (see [`start_server`]).
static BODY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    (0..BODY_LEN)
        .map(|i| (i % 251) as u8 ^ (i / 65_521) as u8)
        .collect()
});

/// A server that, for each connection, reads the request until the client
/// closes its write side, echoes it, sends [`BODY`], and closes.
async fn start_server() -> anyhow::Result<SocketAddr> {
    LazyLock::force(&BODY);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                conn.read_to_end(&mut request).await?;
                conn.write_all(&request).await?;
                conn.write_all(&BODY).await?;
                conn.shutdown().await
            });
        }
    });
    Ok(addr)
}

/// Sends `request` through `addr`, reads the whole answer, checks it, and
/// returns how long that took.
async fn fetch(addr: SocketAddr, request: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut conn = TcpStream::connect(addr).await?;
    conn.write_all(request.as_bytes()).await?;
    conn.shutdown().await?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await?;
    let elapsed = started.elapsed();
    let body = answer
        .strip_prefix(request.as_bytes())
        .context("the request was not echoed")?;
    ensure!(
        body == BODY.as_slice(),
        "the body arrived altered ({} bytes)",
        body.len()
    );
    Ok(elapsed)
}

#[tokio::test]
async fn one_connection_is_paced_to_the_rate_and_intact() -> anyhow::Result<()> {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let link = LimitedLink::start(start_server().await?, RATE).await?;
        let elapsed = fetch(link.addr(), "GET /one\r\n").await?;
        ensure!(
            elapsed >= Duration::from_millis(200) && elapsed <= Duration::from_secs(2),
            "4 MiB at 16 MiB/s took {elapsed:?}, expected about 0.25 s"
        );
        Ok(())
    })
    .await?
}

#[tokio::test]
async fn parallel_connections_each_get_their_own_rate() -> anyhow::Result<()> {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let link = LimitedLink::start(start_server().await?, RATE).await?;
        let started = Instant::now();
        let (a, b) = tokio::join!(
            fetch(link.addr(), "GET /a\r\n"),
            fetch(link.addr(), "GET /b\r\n")
        );
        let elapsed = started.elapsed();
        for each in [a?, b?] {
            ensure!(
                each >= Duration::from_millis(200),
                "one connection took {each:?}"
            );
        }
        ensure!(
            elapsed < Duration::from_millis(450),
            "2 × 4 MiB at 16 MiB/s each took {elapsed:?}, expected about 0.25 s"
        );
        Ok(())
    })
    .await?
}

#[tokio::test]
async fn a_zero_rate_is_rejected() -> anyhow::Result<()> {
    let addr = start_server().await?;
    let err = LimitedLink::start(addr, 0)
        .await
        .err()
        .context("rate 0 was accepted")?;
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    Ok(())
}

#[tokio::test]
async fn dropping_the_link_stops_accepting() -> anyhow::Result<()> {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let link = LimitedLink::start(start_server().await?, RATE).await?;
        let addr = link.addr();
        drop(link);
        // The accept task is aborted the next time the runtime gets to it.
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    })
    .await?
}
