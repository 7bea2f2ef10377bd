//! A store that stops answering while its connections stay open (a stopped process, a
//! silent network), on real S3-compatible servers (SeaweedFS and moto on 127.0.0.1).
//!
//! Testkit's `LimitedLink`, a loopback proxy, stands between the engine and the server;
//! paused, it accepts connections and holds every byte either way. Behind the store
//! deadline, a cached user's read then fails as unavailable in about the deadline instead
//! of waiting for ever; a write caught by the silence is kept pending; and once the store
//! answers again the same user is served, with nothing lost.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cellar_engine::store::{DeadlineStore, StoreError};
use cellar_engine::{ConflictPolicy, Engine, Error, ErrorKind, S3Store, Store, UserId, Version};
use cellar_testkit::{LimitedLink, S3Kind, S3Server};
use common::{append, remote_version, user, values};
use object_store::aws::AmazonS3Builder;

/// The store deadline under test.
const DEADLINE: Duration = Duration::from_secs(1);
/// What a request may take beyond the deadline: the engine's own work around the call.
const SLACK: Duration = Duration::from_millis(500);
/// The bound of each step that talks to the store: without a deadline, a step waits on
/// the silent store far longer, and fails here rather than hang the test run.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// The link's rate: no limit worth the name, only the pause matters here.
const UNLIMITED: u64 = 1 << 30;

#[tokio::test]
async fn a_store_that_stops_answering_fails_requests_in_time_and_loses_nothing_on_seaweedfs() {
    store_stops_answering(S3Kind::SeaweedFs).await;
}

#[tokio::test]
async fn a_store_that_stops_answering_fails_requests_in_time_and_loses_nothing_on_moto() {
    store_stops_answering(S3Kind::Moto).await;
}

async fn store_stops_answering(kind: S3Kind) {
    let server = S3Server::start(kind).await.unwrap();
    let upstream: SocketAddr = server
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let link = Arc::new(LimitedLink::start(upstream, UNLIMITED).await.unwrap());
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let engine = engine_on(&server, &format!("http://{}", link.addr()), &dirs[0], "a").await;
    let alice = user("alice");
    append(&engine, &alice, 1).await.unwrap();
    append(&engine, &alice, 2).await.unwrap();
    assert_eq!(values(&engine, &alice).await, [1, 2], "alice is cached");

    // A cached user's read: refused as unavailable, in about the deadline.
    link.pause();
    let started = Instant::now();
    let err = step(count(&engine, &alice)).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&err, Error::Store(StoreError::Unavailable { operation: "get", message, .. })
            if message == "the object store did not answer within 1 s"),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_in_time(took);
    println!("{kind}: a cached read with the store paused failed after {took:?}: {err}");

    // It answers again: the same user is served, as before.
    link.resume();
    assert_eq!(step(values(&engine, &alice)).await, [1, 2]);

    // Silent from the moment the request runs, so its upload goes out into the silence:
    // kept locally as pending, then in the bucket once the store answers.
    let silenced = Arc::clone(&link);
    let started = Instant::now();
    let write = engine.transact(&alice, move |conn| {
        silenced.pause();
        conn.execute("INSERT INTO t VALUES (3)", [])?;
        Ok(())
    });
    let err = step(write).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&err, Error::SyncPending { version, source: StoreError::Unavailable { operation: "put", .. }, .. }
            if *version == Version::new(3)),
        "{err:?}"
    );
    assert_in_time(took);
    println!("{kind}: an upload into the silence failed after {took:?}: {err}");
    assert!(dirs[0].path().join("alice/pending.json").exists());

    link.resume();
    assert_eq!(step(values(&engine, &alice)).await, [1, 2, 3]);
    let reader = engine_on(&server, &server.endpoint, &dirs[1], "reader").await;
    assert_eq!(remote_version(&reader, &alice).await, 3);
    assert_eq!(values(&reader, &alice).await, [1, 2, 3]);
}

/// An engine on `server`'s bucket reached at `endpoint`, behind the store deadline.
async fn engine_on(
    server: &S3Server,
    endpoint: &str,
    dir: &tempfile::TempDir,
    writer: &str,
) -> Engine {
    let client = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_region(&server.region)
        .with_access_key_id(&server.access_key_id)
        .with_secret_access_key(&server.secret_access_key)
        .with_bucket_name(&server.bucket)
        .with_allow_http(true)
        .build()
        .unwrap();
    let s3 = S3Store::from_object_store(Arc::new(client));
    let store: Arc<dyn Store> = Arc::new(DeadlineStore::new(s3, DEADLINE));
    common::engine(store, dir.path(), ConflictPolicy::Strict, writer).await
}

/// How many rows `t` holds, as one request (a read).
async fn count(engine: &Engine, user: &UserId) -> cellar_engine::Result<i64> {
    let read = engine.transact(user, |conn| {
        conn.query_row("SELECT count(*) FROM t", [], |row| row.get(0))
    });
    Ok(read.await?.value)
}

/// `work`, which must end within [`STEP_TIMEOUT`].
async fn step<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| panic!("no answer within {STEP_TIMEOUT:?}: the silence held it"))
}

fn assert_in_time(took: Duration) {
    assert!(
        took >= DEADLINE && took < DEADLINE + SLACK,
        "took {took:?} with a deadline of {DEADLINE:?}"
    );
}
