//! SeaweedFS as the tests use it: one server holds several buckets that all take
//! writes, and a server SIGKILLed with its data kept comes back on the same port with
//! that data.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use cellar_testkit::{S3Kind, S3Server};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Objects written into each bucket: small ones, and one above SeaweedFS's 4 MB chunk
/// size, which is spread over several volumes.
fn objects() -> Vec<(Path, Vec<u8>)> {
    let mut objects: Vec<(Path, Vec<u8>)> = (0..6)
        .map(|i| {
            (
                Path::from(format!("users/u{i}/database.sqlite")),
                format!("body {i}").into_bytes(),
            )
        })
        .collect();
    let large: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    objects.push((Path::from("users/large/database.sqlite"), large));
    objects
}

async fn put_all(store: &dyn ObjectStore, what: &str) -> anyhow::Result<()> {
    for (path, body) in objects() {
        store
            .put(&path, PutPayload::from(body))
            .await
            .with_context(|| format!("PUT {path} into {what}"))?;
    }
    Ok(())
}

async fn check_all(store: &dyn ObjectStore, what: &str) -> anyhow::Result<()> {
    for (path, body) in objects() {
        let got = store
            .get(&path)
            .await
            .with_context(|| format!("GET {path} from {what}"))?
            .bytes()
            .await?;
        ensure!(got.as_ref() == body.as_slice(), "{what}: {path} differs");
    }
    Ok(())
}

fn socket_addr(endpoint: &str) -> anyhow::Result<SocketAddr> {
    endpoint
        .strip_prefix("http://")
        .context("endpoint is not http://")?
        .parse()
        .context("endpoint is not host:port")
}

/// With `-volume.max=0` SeaweedFS sized its volume count from free disk (one volume per
/// 30 GB): on a machine with 69 GB free the first bucket took both volumes and every PUT
/// into a second bucket answered 500 "No writable volumes and no free volumes left".
#[tokio::test]
async fn two_buckets_on_one_seaweedfs_server_both_take_writes() -> anyhow::Result<()> {
    let server = S3Server::seaweedfs().await?;
    let second = server.add_bucket().await?;
    assert_ne!(second, server.bucket);
    let buckets = [server.bucket.clone(), second];
    for bucket in &buckets {
        let store = server.object_store_for(bucket);
        put_all(store.as_ref(), bucket)
            .await
            .with_context(|| format!("--- SeaweedFS log ---\n{}", server.log_tail(20)))?;
    }
    for bucket in &buckets {
        check_all(server.object_store_for(bucket).as_ref(), bucket).await?;
    }
    // Each bucket sees its own objects only.
    let listed = server
        .object_store_for(&buckets[1])
        .list_with_delimiter(Some(&Path::from("users")))
        .await?;
    assert_eq!(listed.common_prefixes.len(), objects().len());
    Ok(())
}

/// `crash()` SIGKILLs the server and keeps its data; `restart()` brings it back on the
/// same port with every object of every bucket, and it takes writes again.
#[tokio::test]
async fn a_crashed_seaweedfs_restarts_on_the_same_port_with_its_data() -> anyhow::Result<()> {
    let mut server = S3Server::seaweedfs().await?;
    let second = server.add_bucket().await?;
    let buckets = [server.bucket.clone(), second];
    for bucket in &buckets {
        put_all(server.object_store_for(bucket).as_ref(), bucket).await?;
    }
    let endpoint = server.endpoint.clone();
    let addr = socket_addr(&endpoint)?;
    let dir = server.log_path().parent().context("log dir")?.to_owned();

    server.crash();
    assert!(!server.is_running());
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "{addr} still accepts connections after crash()"
    );
    assert!(dir.join("data").is_dir(), "crash() kept the data");
    server.crash(); // idempotent

    let restarted_in = server.restart().await?;
    eprintln!("seaweedfs restarted and stored an object in {restarted_in:?}");
    assert!(server.is_running());
    assert_eq!(server.endpoint, endpoint, "the same port");
    for bucket in &buckets {
        check_all(server.object_store_for(bucket).as_ref(), bucket)
            .await
            .with_context(|| format!("after the restart: {bucket}"))?;
    }
    let after = Path::from("users/after-restart/database.sqlite");
    server.object_store().put(&after, "new".into()).await?;
    assert_eq!(
        server
            .object_store()
            .get(&after)
            .await?
            .bytes()
            .await?
            .as_ref(),
        b"new"
    );
    if server.restart().await.is_ok() {
        bail!("restart() of a running server must be refused");
    }

    // Crashed twice: the second restart finds the first restart's writes too.
    server.crash();
    server.restart().await?;
    check_all(server.object_store().as_ref(), "the first bucket").await?;
    server.object_store().head(&after).await?;

    drop(server);
    let deadline = Instant::now() + Duration::from_secs(10);
    while dir.exists() {
        ensure!(Instant::now() < deadline, "{} left behind", dir.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// moto keeps its buckets in memory: a restart would come back empty, so it is refused.
#[tokio::test]
async fn moto_is_not_restarted() -> anyhow::Result<()> {
    let mut server = S3Server::start(S3Kind::Moto).await?;
    server.crash();
    let refused = server
        .restart()
        .await
        .err()
        .context("moto must not restart")?;
    assert!(format!("{refused}").contains("memory"), "{refused}");
    Ok(())
}
