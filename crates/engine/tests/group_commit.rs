//! Group commit and pacing: concurrent writers of one user share uploads, and each is
//! acknowledged only once an upload containing its write has landed.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cellar_engine::store::{FaultRates, FaultyStore};
use cellar_engine::{ConflictPolicy, Engine, Error, MemoryStore};
use common::*;

/// A store whose every operation takes up to `latency`, like a bucket across a network.
fn slow_store(latency: Duration) -> Arc<FaultyStore<MemoryStore>> {
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    store.set_rates(
        Some(FaultRates {
            max_latency: latency,
            ..Default::default()
        }),
        1,
    );
    store
}

async fn concurrent_appends(engine: &Engine, writers: i64) -> Vec<(i64, u64)> {
    let alice = user("alice");
    let tasks = (0..writers).map(|value| {
        let (engine, alice) = (engine.clone(), alice.clone());
        tokio::spawn(async move { (value, append(&engine, &alice, value).await) })
    });
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|joined| {
            let (value, result) = joined.unwrap();
            (value, result.unwrap().version.get())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_writers_make_at_most_one_upload_per_four_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = slow_store(Duration::from_millis(20));
    let engine = engine(store.clone(), dir.path(), ConflictPolicy::Strict, "a").await;
    append(&engine, &user("alice"), -1).await.unwrap();
    let before = engine.metrics().uploads.load(Ordering::Relaxed);
    let acked = concurrent_appends(&engine, 32).await;
    let uploads = engine.metrics().uploads.load(Ordering::Relaxed) - before;
    assert!(uploads * 4 <= 32, "{uploads} uploads for 32 writes");
    // Every acknowledged write is in the bucket, in the version it was acknowledged with.
    let reader_dir = tempfile::tempdir().unwrap();
    let reader = common::engine(store, reader_dir.path(), ConflictPolicy::Strict, "r").await;
    let final_values = values(&reader, &user("alice")).await;
    for (value, _) in &acked {
        assert!(final_values.contains(value), "acknowledged {value} missing");
    }
    eprintln!("32 concurrent writers: {uploads} uploads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_request_in_a_group_does_not_fail_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(
        slow_store(Duration::from_millis(10)),
        dir.path(),
        ConflictPolicy::Strict,
        "a",
    )
    .await;
    let alice = user("alice");
    append(&engine, &alice, 0).await.unwrap();
    let tasks = (1..=8).map(|i| {
        let (engine, alice) = (engine.clone(), alice.clone());
        tokio::spawn(async move {
            engine
                .transact(&alice, move |conn| {
                    conn.execute("INSERT INTO t VALUES (?1)", [i])?;
                    if i % 2 == 0 {
                        conn.execute("INSERT INTO missing VALUES (1)", [])?;
                    }
                    Ok(())
                })
                .await
        })
    });
    let results: Vec<_> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    for (i, result) in (1..=8).zip(&results) {
        assert_eq!(result.is_ok(), i % 2 == 1, "request {i}: {result:?}");
        if let Err(err) = result {
            assert!(matches!(err, Error::Sql(_)), "{err}");
        }
    }
    let mut kept = values(&engine, &alice).await;
    kept.sort_unstable();
    assert_eq!(
        kept,
        [0, 1, 3, 5, 7],
        "the failed requests' inserts were rolled back alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pacing_spaces_uploads_and_coalesces_the_writes_behind_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), ConflictPolicy::Strict, "a");
    config.min_upload_interval = Duration::from_millis(200);
    let engine = Engine::open(config, Arc::new(MemoryStore::new()))
        .await
        .unwrap();
    let alice = user("alice");
    let started = Instant::now();
    let tasks = (0..20).map(|i| {
        let (engine, alice) = (engine.clone(), alice.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50 * i)).await; // spread over ~1 s
            append(&engine, &alice, i as i64).await
        })
    });
    for result in futures::future::join_all(tasks).await {
        result.unwrap().unwrap();
    }
    let elapsed = started.elapsed();
    let uploads = engine.metrics().uploads.load(Ordering::Relaxed);
    // Uploads are at least 200 ms apart, so there can be at most one per 200 ms (plus one).
    let allowed = (elapsed.as_millis() / 200) as u64 + 1;
    assert!(uploads <= allowed, "{uploads} uploads in {elapsed:?}");
    assert!(
        uploads < 20,
        "writes were coalesced: {uploads} uploads for 20 writes"
    );
    assert_eq!(values(&engine, &alice).await.len(), 20);
}

/// Spawns `append(value)` through `Engine::transact`; it queues behind whoever holds alice.
fn queued_append(
    engine: &Engine,
    value: i64,
) -> tokio::task::JoinHandle<cellar_engine::Result<cellar_engine::Committed<()>>> {
    let engine = engine.clone();
    tokio::spawn(async move { append(&engine, &user("alice"), value).await })
}

/// Work queued while it cannot have reached the queue yet is not a test of joining: give
/// the spawned callers time to queue behind the held lock.
async fn let_them_queue() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// An engine where alice has version 1 (`[0]`) and a session of hers holds her lock,
/// having inserted `value`.
async fn holding_alice(value: i64) -> (tempfile::TempDir, Engine, cellar_engine::Session) {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(
        slow_store(Duration::from_millis(5)),
        dir.path(),
        ConflictPolicy::Strict,
        "a",
    )
    .await;
    let alice = user("alice");
    append(&engine, &alice, 0).await.unwrap();
    let mut session = engine.begin(&alice).await.unwrap();
    session
        .run(move |conn| conn.execute("INSERT INTO t VALUES (?1)", [value]))
        .await
        .unwrap();
    (dir, engine, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn work_queued_behind_a_session_rides_on_its_one_upload() {
    let (_dir, engine, session) = holding_alice(100).await;
    let alice = user("alice");
    let queued = [queued_append(&engine, 101), queued_append(&engine, 102)];
    let_them_queue().await;
    let before = engine.metrics().uploads.load(Ordering::Relaxed);
    let committed = session.commit_in_group(false).await.unwrap().unwrap();
    assert_eq!(committed.version.get(), 2, "one version for all three");
    for joined in queued {
        let joined = joined.await.unwrap().unwrap();
        assert_eq!(
            joined.version, committed.version,
            "acknowledged with the upload"
        );
        assert!(joined.wrote && joined.in_bucket);
    }
    assert_eq!(engine.metrics().uploads.load(Ordering::Relaxed) - before, 1);
    // The two queued callers race each other to the queue: either order.
    let mut kept = values(&engine, &alice).await;
    kept[2..].sort_unstable();
    assert_eq!(kept, [0, 100, 101, 102]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_work_that_breaks_the_transaction_fails_alone_and_the_session_runs_again() {
    let (_dir, engine, session) = holding_alice(200).await;
    let alice = user("alice");
    let good = queued_append(&engine, 201);
    let breaker = {
        let engine = engine.clone();
        tokio::spawn(async move {
            engine
                .transact(&user("alice"), |conn| {
                    // An endless write cut off by the time limit: SQLite rolls back the
                    // whole transaction it runs in.
                    conn.set_time_limit(Some(Duration::from_millis(50)));
                    let endless = conn.execute(
                        "INSERT INTO t WITH RECURSIVE c(n) AS \
                         (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT n FROM c",
                        [],
                    );
                    conn.set_time_limit(None);
                    endless?;
                    Ok(())
                })
                .await
        })
    };
    let_them_queue().await;
    let outcome = session.commit_in_group(false).await.unwrap();
    assert!(outcome.is_none(), "the session must run again: {outcome:?}");
    let broke = breaker.await.unwrap().unwrap_err();
    assert!(broke.to_string().contains("interrupt"), "{broke}");
    let good = good.await.unwrap().unwrap();
    assert_eq!(
        good.version.get(),
        2,
        "queued again and committed on its own"
    );
    assert_eq!(
        values(&engine, &alice).await,
        [0, 201],
        "nothing of the undone session was kept"
    );
}
