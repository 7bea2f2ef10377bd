//! `durability = async`: acknowledged after the local commit, uploaded in the background.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cellar_engine::store::{Fault, FaultRates, FaultyStore, Operation};
use cellar_engine::{ConflictPolicy, Durability, Engine, MemoryStore, Store, UserId, Version};
use common::*;

async fn async_engine(store: Arc<dyn Store>, dir: &std::path::Path) -> Engine {
    let mut config = config(dir, ConflictPolicy::Strict, "a");
    config.durability = Durability::Async;
    Engine::open(config, store).await.unwrap()
}

/// Waits (bounded) until the bucket has `version` of `user`.
async fn until_in_bucket(engine: &Engine, user: &UserId, version: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while remote_version(engine, user).await < version {
        assert!(
            Instant::now() < deadline,
            "version {version} never reached the bucket"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_write_is_acknowledged_before_its_upload_and_lands_soon_after() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let engine = async_engine(store.clone(), dir.path()).await;
    let alice = user("alice");
    store.set_rates(
        Some(FaultRates {
            max_latency: Duration::from_millis(300),
            ..Default::default()
        }),
        3,
    );
    let committed = append(&engine, &alice, 1).await.unwrap();
    assert_eq!(
        (committed.version, committed.wrote, committed.in_bucket),
        (Version::new(1), true, false)
    );
    assert_eq!(
        values(&engine, &alice).await,
        [1],
        "reads see the local write at once"
    );
    store.set_rates(None, 0);
    until_in_bucket(&engine, &alice, 1).await;
    let reader_dir = tempfile::tempdir().unwrap();
    let reader = engine_for_reading(store.clone(), reader_dir.path()).await;
    assert_eq!(values(&reader, &alice).await, [1]);
}

async fn engine_for_reading(store: Arc<dyn Store>, dir: &std::path::Path) -> Engine {
    engine(store, dir, ConflictPolicy::Strict, "reader").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_uploads_fail_async_writes_keep_being_acknowledged_and_land_later() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let engine = async_engine(store.clone(), dir.path()).await;
    let alice = user("alice");
    append(&engine, &alice, 0).await.unwrap(); // the first request checks the bucket
    until_in_bucket(&engine, &alice, 1).await;
    for _ in 0..3 {
        store.inject(Operation::Put, Fault::Error); // uploads fail; version checks still answer
    }
    for value in 1..=5 {
        let committed = append(&engine, &alice, value).await.unwrap();
        assert!(!committed.in_bucket);
    }
    assert_eq!(values(&engine, &alice).await, [0, 1, 2, 3, 4, 5]);
    until_in_bucket(&engine, &alice, 6).await;
    let uploads = engine.metrics().uploads.load(Ordering::Relaxed);
    assert!(
        uploads < 6,
        "the pending writes were coalesced: {uploads} uploads"
    );
}

#[test]
fn an_async_write_not_yet_uploaded_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let alice = user("alice");
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    // The first process: its background uploader dies with its runtime, like a crash.
    runtime().block_on(async {
        let engine = async_engine(store.clone(), dir.path()).await;
        append(&engine, &alice, 1).await.unwrap();
        until_in_bucket(&engine, &alice, 1).await;
        for _ in 0..10 {
            store.inject(Operation::Put, Fault::Error);
        }
        append(&engine, &alice, 2).await.unwrap();
    });
    store.clear_script();
    runtime().block_on(async {
        let restarted = async_engine(store.clone(), dir.path()).await;
        assert_eq!(
            remote_version(&restarted, &alice).await,
            2,
            "finished at start-up"
        );
        assert_eq!(values(&restarted, &alice).await, [1, 2]);
    });
}

/// The first request after a download writes (`async`): its pending upload is built on
/// the downloaded version, so it lands as the next version without a conflict, and the
/// local copy is installed with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_write_on_a_fresh_download_lands_on_the_downloaded_version() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (writer_dir, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let writer = engine(
        store.clone(),
        writer_dir.path(),
        ConflictPolicy::Strict,
        "w",
    )
    .await;
    let alice = user("alice");
    append(&writer, &alice, 1).await.unwrap();
    append(&writer, &alice, 2).await.unwrap();
    let engine = async_engine(store.clone(), dir.path()).await;
    let committed = append(&engine, &alice, 3).await.unwrap();
    assert_eq!(
        (committed.version, committed.in_bucket),
        (Version::new(3), false)
    );
    until_in_bucket(&engine, &alice, 3).await;
    assert_eq!(values(&writer, &alice).await, [1, 2, 3]);
    assert_eq!(engine.metrics().conflicts.load(Ordering::Relaxed), 0);
    assert_eq!(values(&engine, &alice).await, [1, 2, 3]);
}
