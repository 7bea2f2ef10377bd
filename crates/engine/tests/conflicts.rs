//! Conflicts between two instances on one bucket, under each policy (DESIGN §4).
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cellar_engine::{ConflictPolicy, Error, Event, Resolution, Version};
use common::*;

/// Two engines on one store, both having seen version 1 of alice (values [1]).
async fn two_instances(
    policy: ConflictPolicy,
) -> (
    cellar_engine::Engine,
    cellar_engine::Engine,
    [tempfile::TempDir; 2],
) {
    let Pair { a, b, dirs, .. } = pair(policy).await;
    append(&a, &user("alice"), 1).await.unwrap();
    assert_eq!(values(&b, &user("alice")).await, [1]);
    (a, b, dirs)
}

/// Starts a request on `b`, lets `a` write meanwhile, then finishes `b`'s write.
async fn b_races_a(
    a: &cellar_engine::Engine,
    b: &cellar_engine::Engine,
) -> cellar_engine::Result<cellar_engine::Committed<()>> {
    let alice = user("alice");
    let mut session = b.begin(&alice).await.unwrap();
    append(a, &alice, 2).await.unwrap();
    session
        .run(|conn| conn.execute("INSERT INTO t VALUES (3)", []).map(drop))
        .await
        .unwrap();
    session.commit().await
}

#[tokio::test]
async fn second_writer_gets_conflict_in_strict_mode_and_its_database_is_kept_aside() {
    let (a, b, dirs) = two_instances(ConflictPolicy::Strict).await;
    let mut events = b.subscribe();
    let err = b_races_a(&a, &b).await.unwrap_err();
    match &err {
        Error::Conflict {
            expected, found, ..
        } => {
            assert_eq!((*expected, *found), (Version::new(1), Version::new(2)));
        }
        other => panic!("expected a conflict, got {other}"),
    }
    let kept: Vec<_> = std::fs::read_dir(dirs[1].path().join("alice/conflicts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1);
    let loser = rusqlite::Connection::open(&kept[0]).unwrap();
    let lost: Vec<i64> = loser
        .prepare("SELECT v FROM t ORDER BY rowid")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(lost, [1, 3], "the refused write is kept, not thrown away");
    assert_eq!(
        values(&b, &user("alice")).await,
        [1, 2],
        "the next request starts from the winner"
    );
    let event = events.try_recv().unwrap();
    assert!(
        matches!(
            event,
            Event::Conflict {
                resolution: Resolution::Refused,
                ..
            }
        ),
        "{event:?}"
    );
}

#[tokio::test]
async fn last_write_wins_overwrites_as_max_plus_one_and_says_so() {
    let (a, b, _dirs) = two_instances(ConflictPolicy::LastWriteWins).await;
    let mut events = b.subscribe();
    let committed = b_races_a(&a, &b).await.unwrap();
    assert_eq!(committed.version, Version::new(3));
    assert_eq!(
        values(&a, &user("alice")).await,
        [1, 3],
        "a's write was overwritten"
    );
    let event = events.try_recv().unwrap();
    match event {
        Event::Conflict {
            local_version,
            remote_version,
            remote_writer,
            resolution,
            ..
        } => {
            assert_eq!(
                (local_version, remote_version),
                (Version::new(1), Version::new(2))
            );
            assert_eq!(
                (remote_writer.as_str(), resolution),
                ("a", Resolution::Overwritten)
            );
        }
        other => panic!("expected a conflict event, got {other:?}"),
    }
}

#[tokio::test]
async fn rebase_runs_the_work_again_on_the_winner_and_loses_nothing() {
    let (a, b, _dirs) = two_instances(ConflictPolicy::Rebase).await;
    let alice = user("alice");
    let raced = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Handle::current();
    let (a2, flag) = (a.clone(), raced.clone());
    let committed = b
        .transact(&alice, move |conn| {
            if !flag.swap(true, Ordering::SeqCst) {
                // While b's first run is in flight, a uploads version 2.
                runtime.block_on(append(&a2, &user("alice"), 2)).unwrap();
            }
            conn.execute("INSERT INTO t VALUES (3)", [])?;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(committed.version, Version::new(3));
    assert_eq!(values(&a, &alice).await, [1, 2, 3]);
}
