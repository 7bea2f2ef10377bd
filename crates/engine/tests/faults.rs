//! Durability under store failures (invariants 1 and 2): a failure at every step of the
//! upload path either changes nothing or is answered `sync_pending` and finished later.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cellar_engine::store::{DeadlineStore, Fault, FaultyStore, Operation, StoreError};
use cellar_engine::{ConflictPolicy, Engine, Error, MemoryStore, Version};
use common::*;

async fn faulty_engine(dir: &std::path::Path) -> (Arc<FaultyStore<MemoryStore>>, Engine) {
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let engine = engine(store.clone(), dir, ConflictPolicy::Strict, "a").await;
    (store, engine)
}

/// The deadline of [`silenceable_engine`]'s store calls.
const DEADLINE: Duration = Duration::from_millis(200);

/// An engine whose store can be told to stop answering, behind the store deadline.
async fn silenceable_engine(dir: &std::path::Path) -> (Arc<FaultyStore<MemoryStore>>, Engine) {
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let bounded = Arc::new(DeadlineStore::new(store.clone(), DEADLINE));
    let engine = engine(bounded, dir, ConflictPolicy::Strict, "a").await;
    (store, engine)
}

/// `work`, which must answer within seconds: without a deadline, a store that never
/// answers would hold it for ever.
async fn answered<T>(work: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .expect("no answer: nothing bounded the wait for the store")
}

/// A store failure that is the deadline's, reached in about the deadline.
fn assert_ran_out_of_time(store_error: &StoreError, operation: &str, took: Duration) {
    assert!(
        matches!(store_error, StoreError::Unavailable { operation: op, message, .. }
            if *op == operation && message == "the object store did not answer within 200 ms"),
        "{store_error:?}"
    );
    assert!(
        took >= DEADLINE && took < DEADLINE + Duration::from_secs(1),
        "failed after {took:?}"
    );
}

#[tokio::test]
async fn a_version_check_the_store_never_answers_fails_as_unavailable_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (store, engine) = silenceable_engine(dir.path()).await;
    let alice = user("alice");
    append(&engine, &alice, 1).await.unwrap();
    store.inject(Operation::Get, Fault::Latency(Duration::from_secs(3600)));
    let started = Instant::now();
    let err = answered(append(&engine, &alice, 2)).await.unwrap_err();
    let Error::Store(store_error) = &err else {
        panic!("expected the store's failure, got {err}");
    };
    assert_ran_out_of_time(store_error, "get", started.elapsed());
    assert!(!dir.path().join("alice/pending.json").exists());
    assert_eq!(values(&engine, &alice).await, [1], "it changed nothing");
}

/// A write that the store applied without ever answering is ambiguous, as one whose answer
/// was lost: it goes down the same path, pending, then adopted, never uploaded twice.
#[tokio::test]
async fn an_upload_whose_answer_never_comes_is_pending_then_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let (store, engine) = silenceable_engine(dir.path()).await;
    let alice = user("alice");
    append(&engine, &alice, 1).await.unwrap();
    store.inject(Operation::Put, Fault::SilentAfterApplying);
    let started = Instant::now();
    let err = answered(append(&engine, &alice, 2)).await.unwrap_err();
    let Error::SyncPending {
        version, source, ..
    } = &err
    else {
        panic!("expected sync_pending, got {err}");
    };
    assert_eq!(*version, Version::new(2));
    assert_ran_out_of_time(source, "put", started.elapsed());
    assert_eq!(remote_version(&engine, &alice).await, 2, "it did land");
    let uploads_before = engine.metrics().uploads.load(Ordering::Relaxed);
    assert_eq!(values(&engine, &alice).await, [1, 2]);
    assert_eq!(
        engine.metrics().uploads.load(Ordering::Relaxed),
        uploads_before
    );
    assert!(!dir.path().join("alice/pending.json").exists());
}

#[tokio::test]
async fn a_failed_version_check_changes_nothing_and_says_the_store_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let (store, engine) = faulty_engine(dir.path()).await;
    let alice = user("alice");
    append(&engine, &alice, 1).await.unwrap();
    store.inject(Operation::Get, Fault::Error);
    let err = append(&engine, &alice, 2).await.unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err}");
    assert!(err.to_string().contains("injected fault"), "{err}");
    assert_eq!(values(&engine, &alice).await, [1]);
}

#[tokio::test]
async fn an_upload_that_never_arrived_is_pending_then_uploaded_before_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let (store, engine) = faulty_engine(dir.path()).await;
    let alice = user("alice");
    append(&engine, &alice, 1).await.unwrap();
    store.inject(Operation::Put, Fault::Error);
    let err = append(&engine, &alice, 2).await.unwrap_err();
    assert!(
        matches!(err, Error::SyncPending { version, .. } if version == Version::new(2)),
        "{err}"
    );
    assert!(err.to_string().contains("pending upload"), "{err}");
    assert_eq!(
        remote_version(&engine, &alice).await,
        1,
        "not in the bucket yet"
    );
    // The next request finishes the pending upload first, then sees the write.
    assert_eq!(values(&engine, &alice).await, [1, 2]);
    assert_eq!(remote_version(&engine, &alice).await, 2);
    assert!(!dir.path().join("alice/pending.json").exists());
}

#[tokio::test]
async fn an_upload_whose_answer_was_lost_is_adopted_not_uploaded_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (store, engine) = faulty_engine(dir.path()).await;
    let alice = user("alice");
    append(&engine, &alice, 1).await.unwrap();
    store.inject(Operation::Put, Fault::DropAfterApplying);
    let err = append(&engine, &alice, 2).await.unwrap_err();
    assert!(matches!(err, Error::SyncPending { .. }), "{err}");
    assert_eq!(remote_version(&engine, &alice).await, 2, "it did land");
    let uploads_before = engine.metrics().uploads.load(Ordering::Relaxed);
    assert_eq!(values(&engine, &alice).await, [1, 2]);
    assert_eq!(
        engine.metrics().uploads.load(Ordering::Relaxed),
        uploads_before
    );
    assert_eq!(remote_version(&engine, &alice).await, 2);
}

#[tokio::test]
async fn while_the_store_stays_down_the_user_gets_sync_pending_not_stale_data() {
    let dir = tempfile::tempdir().unwrap();
    let (store, engine) = faulty_engine(dir.path()).await;
    let alice = user("alice");
    append(&engine, &alice, 1).await.unwrap();
    store.inject(Operation::Put, Fault::Error);
    append(&engine, &alice, 2).await.unwrap_err();
    store.inject(Operation::Head, Fault::Error);
    let err = engine.status(&alice).await.unwrap_err();
    assert!(matches!(err, Error::EarlierWritePending { .. }), "{err}");
    assert!(
        err.to_string().contains("this request was not run"),
        "{err}"
    );
    assert_eq!(values(&engine, &alice).await, [1, 2]);
}

#[tokio::test]
async fn a_pending_upload_left_by_a_crash_is_finished_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let alice = user("alice");
    {
        let engine = engine(store.clone(), dir.path(), ConflictPolicy::Strict, "a").await;
        append(&engine, &alice, 1).await.unwrap();
        store.inject(Operation::Put, Fault::Error);
        append(&engine, &alice, 2).await.unwrap_err();
    }
    let restarted = engine(store.clone(), dir.path(), ConflictPolicy::Strict, "a").await;
    assert!(
        !dir.path().join("alice/pending.json").exists(),
        "finished at open"
    );
    assert_eq!(remote_version(&restarted, &alice).await, 2);
    assert_eq!(values(&restarted, &alice).await, [1, 2]);
}

#[tokio::test]
async fn a_pending_write_that_lost_a_conflict_in_strict_mode_is_kept_aside() {
    let Pair { store, a, b, dirs } = pair(ConflictPolicy::Strict).await;
    let alice = user("alice");
    append(&a, &alice, 1).await.unwrap();
    store.inject(Operation::Put, Fault::Error);
    append(&a, &alice, 2).await.unwrap_err();
    append(&b, &alice, 3).await.unwrap(); // b wins version 2
    assert_eq!(values(&a, &alice).await, [1, 3]);
    let kept: Vec<_> = std::fs::read_dir(dirs[0].path().join("alice/conflicts"))
        .unwrap()
        .collect();
    assert_eq!(kept.len(), 1);
}

#[tokio::test]
async fn under_random_faults_every_acknowledged_write_is_in_the_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let (store, engine) = faulty_engine(dir.path()).await;
    let alice = user("alice");
    store.set_rates(
        Some(cellar_engine::store::FaultRates {
            error_rate: 0.1,
            drop_rate: 0.1,
            ..Default::default()
        }),
        7,
    );
    let mut acknowledged = Vec::new();
    for i in 0..200 {
        match append(&engine, &alice, i).await {
            Ok(_) => acknowledged.push(i),
            Err(
                Error::Store(_) | Error::SyncPending { .. } | Error::EarlierWritePending { .. },
            ) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert!(
        store.injected() > 20,
        "faults were injected: {}",
        store.injected()
    );
    store.set_rates(None, 0);
    let fresh = tempfile::tempdir().unwrap();
    let reader = common::engine(
        store.clone(),
        fresh.path(),
        ConflictPolicy::Strict,
        "reader",
    )
    .await;
    values(&engine, &alice).await; // finishes anything pending
    let final_values = values(&reader, &alice).await;
    for i in &acknowledged {
        assert!(
            final_values.contains(i),
            "acknowledged write {i} is missing"
        );
    }
    assert!(
        acknowledged.len() > 100,
        "{} acknowledged",
        acknowledged.len()
    );
}

#[tokio::test]
async fn an_upload_whose_retry_was_refused_after_it_landed_is_a_success_not_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let (store, engine) = faulty_engine(dir.path()).await;
    let alice = user("alice");
    append(&engine, &alice, 1).await.unwrap();
    store.inject(Operation::Put, Fault::RetriedAfterLanding);
    let committed = append(&engine, &alice, 2).await.unwrap();
    assert_eq!(committed.version, Version::new(2));
    assert_eq!(engine.metrics().conflicts.load(Ordering::Relaxed), 0);
    assert_eq!(values(&engine, &alice).await, [1, 2]);
    assert!(!dir.path().join("alice/conflicts").exists());
}
