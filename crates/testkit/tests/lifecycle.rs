//! Servers stop when told, when dropped, and when the test process dies; a
//! missing venv gives an actionable error.
//!
//! Some checks re-run this test binary as a child process (selected with the
//! `CELLAR_TESTKIT_HELPER` environment variable): that is the only way to see
//! what happens when a process dies without running destructors, or to change
//! an environment variable without `unsafe` `set_var` in a threaded process.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cellar_testkit::{S3Kind, S3Server, each_kind};

const HELPER_ENV: &str = "CELLAR_TESTKIT_HELPER";
const ENDPOINT_LINE: &str = "CELLAR_TESTKIT_ENDPOINT=";
const DIR_LINE: &str = "CELLAR_TESTKIT_DIR=";

fn socket_addr(endpoint: &str) -> anyhow::Result<SocketAddr> {
    endpoint
        .strip_prefix("http://")
        .context("endpoint is not http://")?
        .parse()
        .context("endpoint is not host:port")
}

fn accepts_connections(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Waits up to 10 s for nothing to listen on `addr` any more.
fn wait_until_closed(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepts_connections(addr) {
        if Instant::now() > deadline {
            bail!("{addr} still accepts connections");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn every_kind_is_listed_once() {
    let kinds = futures::executor::block_on(each_kind());
    assert_eq!(kinds, S3Kind::ALL.to_vec());
    assert_eq!(kinds, vec![S3Kind::SeaweedFs, S3Kind::Moto]);
}

#[tokio::test]
async fn kill_stops_the_server_and_is_idempotent() -> anyhow::Result<()> {
    let mut server = S3Server::moto().await?;
    let addr = socket_addr(&server.endpoint)?;
    assert!(accepts_connections(addr));
    assert!(server.log_path().is_file());
    let dir = server
        .log_path()
        .parent()
        .context("log has a dir")?
        .to_owned();
    assert_eq!(
        server.store_url("users/alice"),
        format!("s3://{}/users/alice", server.bucket)
    );
    server.kill();
    // kill() waits for the process, so the port is closed right away.
    assert!(!accepts_connections(addr), "{addr} still open after kill()");
    assert!(!dir.exists(), "{} left behind by kill()", dir.display());
    server.kill();
    Ok(())
}

#[tokio::test]
async fn drop_stops_each_kind() -> anyhow::Result<()> {
    for kind in S3Kind::ALL {
        let server = S3Server::start(kind).await?;
        let addr = socket_addr(&server.endpoint)?;
        let dir = server
            .log_path()
            .parent()
            .context("log has a dir")?
            .to_owned();
        assert!(accepts_connections(addr), "[{kind}] not listening");
        drop(server);
        assert!(
            !accepts_connections(addr),
            "[{kind}] {addr} still open after drop"
        );
        assert!(!dir.exists(), "[{kind}] {} left behind", dir.display());
    }
    Ok(())
}

/// Two servers of the same kind at once get different ports and buckets.
#[tokio::test]
async fn servers_are_independent() -> anyhow::Result<()> {
    let (a, b) = tokio::try_join!(S3Server::moto(), S3Server::moto())?;
    assert_ne!(a.endpoint, b.endpoint);
    assert_ne!(a.bucket, b.bucket);
    Ok(())
}

/// A test process killed without running destructors (here: `abort()`)
/// must not leave servers or their directories behind: the watchdog notices
/// and SIGKILLs them.
#[test]
fn servers_die_with_the_test_process() -> anyhow::Result<()> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--exact", "helper_start_servers_then_abort", "--nocapture"])
        .env(HELPER_ENV, "abort")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut endpoints = Vec::new();
    let mut dirs = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(endpoint) = line.strip_prefix(ENDPOINT_LINE) {
            endpoints.push(endpoint.to_string());
        } else if let Some(dir) = line.strip_prefix(DIR_LINE) {
            dirs.push(std::path::PathBuf::from(dir));
        }
    }
    let status = child.wait()?;
    assert!(
        !status.success(),
        "helper should have aborted, got {status}"
    );
    assert_eq!(endpoints.len(), 2, "helper printed {endpoints:?}");
    for endpoint in endpoints {
        wait_until_closed(socket_addr(&endpoint)?)
            .with_context(|| format!("server at {endpoint} outlived its test process"))?;
    }
    assert_eq!(dirs.len(), 2, "helper printed {dirs:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while dirs.iter().any(|d| d.exists()) {
        if Instant::now() > deadline {
            bail!("temporary directories left behind: {dirs:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Helper for `servers_die_with_the_test_process`; does nothing in a normal run.
#[tokio::test]
async fn helper_start_servers_then_abort() -> anyhow::Result<()> {
    if std::env::var(HELPER_ENV).as_deref() != Ok("abort") {
        return Ok(());
    }
    let (seaweedfs, moto) = tokio::try_join!(S3Server::seaweedfs(), S3Server::moto())?;
    for server in [&seaweedfs, &moto] {
        assert!(accepts_connections(socket_addr(&server.endpoint)?));
        println!("{ENDPOINT_LINE}{}", server.endpoint);
        let dir = server.log_path().parent().context("log has a dir")?;
        println!("{DIR_LINE}{}", dir.display());
    }
    std::process::abort();
}

#[test]
fn missing_binaries_say_to_run_the_test_script() -> anyhow::Result<()> {
    let empty_venv = tempfile::tempdir()?;
    let output = Command::new(std::env::current_exe()?)
        .args(["--exact", "helper_start_without_venv", "--nocapture"])
        .env(HELPER_ENV, "no-venv")
        .env("CELLAR_VENV", empty_venv.path())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "helper failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.matches("checked: ").count(), 2, "{stdout}");
    Ok(())
}

/// Helper for `missing_binaries_say_to_run_the_test_script`.
#[tokio::test]
async fn helper_start_without_venv() -> anyhow::Result<()> {
    if std::env::var(HELPER_ENV).as_deref() != Ok("no-venv") {
        return Ok(());
    }
    for kind in S3Kind::ALL {
        let error = match S3Server::start(kind).await {
            Ok(_) => bail!("[{kind}] started without binaries"),
            Err(e) => format!("{e:#}"),
        };
        assert!(error.contains("scripts/test.sh"), "{error}");
        assert!(error.contains("CELLAR_VENV"), "{error}");
        println!("checked: {error}");
    }
    Ok(())
}
