//! Crash at every named point of the write path, in a child process, then recover.
//!
//! The child (this test binary, re-run with `CELLAR_CRASH_CHILD`) writes through one engine
//! while a second engine moves the bucket on, so the child also downloads and applies
//! changes of the log, folds the log (compaction, with deletes), and its last upload fails
//! so it also records a pending upload. It prints `ACK value version` for every
//! acknowledged write and aborts at the point named by `CELLAR_CRASH_AT`. The parent then
//! restarts an engine on the same folders and checks: the database is intact, every
//! acknowledged write is there, and the bucket's version never went below an acknowledged one.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use cellar_engine::crash::CRASH_POINTS;
use cellar_engine::store::{Fault, FaultyStore, Operation};
use cellar_engine::{ConflictPolicy, LocalStore, RestoreTarget, Version};
use common::*;

const CHILD: &str = "CELLAR_CRASH_CHILD";
const RESTORE_CHILD: &str = "CELLAR_CRASH_RESTORE_CHILD";
/// Set for a restore child that rebuilds from a snapshot instead of walking back.
const FROM_SNAPSHOT: &str = "CELLAR_CRASH_RESTORE_FROM_SNAPSHOT";

/// The child's script; aborts at the crash point, or finishes and exits normally.
#[tokio::test]
async fn crash_child() {
    let Ok(root) = std::env::var(CHILD) else {
        return;
    };
    let root = Path::new(&root);
    let store = Arc::new(FaultyStore::new(LocalStore::new(root.join("bucket"))));
    let alice = user("alice");
    // The log is folded every two changes, and folded changes are deleted at once.
    let open = async |dir: &str| {
        let mut config = config(&root.join(dir), ConflictPolicy::Strict, dir);
        config.compact_after_versions = 2;
        config.log_grace = std::time::Duration::ZERO;
        cellar_engine::Engine::open(config, store.clone())
            .await
            .unwrap()
    };
    let a = open("a").await;
    let b = open("b").await;
    let ack = |value: i64, version| println!("ACK {value} {version}");
    for value in [1, 2, 5, 6] {
        ack(value, append(&a, &alice, value).await.unwrap().version);
        a.settle().await; // compactions
    }
    ack(100, append(&b, &alice, 100).await.unwrap().version); // downloads, applies the log
    b.settle().await; // installs its download
    ack(3, append(&a, &alice, 3).await.unwrap().version); // applies 100 first
    a.settle().await;
    // b, behind a snapshot folded past its copy, downloads it over its old file.
    a.compact(&alice).await.unwrap();
    assert_eq!(values(&b, &alice).await, [1, 2, 5, 6, 100, 3]);
    b.settle().await; // installs it
    // A restore (of the newest content: no acknowledged row goes), then retention keeping
    // the newest three versions, by a third instance.
    let newest = remote_version(&a, &alice).await;
    let restored = a
        .restore(&alice, RestoreTarget::Version(Version::new(newest)))
        .await
        .unwrap();
    ack(3, restored.version);
    a.settle().await;
    let mut narrow = config(&root.join("c"), ConflictPolicy::Strict, "c");
    narrow.log_grace = std::time::Duration::ZERO;
    narrow.history.keep_versions = 3;
    let c = cellar_engine::Engine::open(narrow, store.clone())
        .await
        .unwrap();
    c.collect_history(&alice).await.unwrap();
    store.inject(Operation::Put, Fault::Error);
    append(&a, &alice, 4).await.unwrap_err(); // pending
    println!("FINISHED");
}

#[tokio::test]
async fn every_crash_point_recovers_with_every_acknowledged_write() {
    if std::env::var(CHILD).is_ok() || std::env::var(RESTORE_CHILD).is_ok() {
        return;
    }
    for point in CRASH_POINTS {
        let root = tempfile::tempdir().unwrap();
        let output = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD, root.path())
            .env("CELLAR_CRASH_AT", point)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            !output.status.success() && !stdout.contains("FINISHED"),
            "{point}: the child did not crash\n{stdout}"
        );
        let acked: Vec<(i64, u64)> = stdout
            .lines()
            .filter_map(|line| line.split_once("ACK ").map(|(_, rest)| rest))
            .map(|rest| {
                let (value, version) = rest.split_once(' ').unwrap();
                (value.parse().unwrap(), version.parse().unwrap())
            })
            .collect();

        let store = Arc::new(LocalStore::new(root.path().join("bucket")));
        let a = engine(store, &root.path().join("a"), ConflictPolicy::Strict, "a").await;
        let alice = user("alice");
        let found = values(&a, &alice).await;
        // A download answers requests before it is installed, which follows its checks
        // in the background: wait for it before looking at the file.
        a.settle().await;
        for (value, _) in &acked {
            assert!(
                found.contains(value),
                "{point}: acknowledged {value} missing from {found:?}"
            );
        }
        let remote = remote_version(&a, &alice).await;
        let highest = acked.iter().map(|(_, version)| *version).max().unwrap_or(0);
        assert!(
            remote >= highest,
            "{point}: bucket at {remote} below acknowledged {highest}"
        );
        assert!(
            cellar_engine::is_intact(&root.path().join("a/alice/database.sqlite")),
            "{point}: torn database"
        );
        // A cold start reads the same from the bucket (the snapshot and the log after it).
        let fresh = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::new(root.path().join("bucket")));
        let cold = engine(store, fresh.path(), ConflictPolicy::Strict, "cold").await;
        assert_eq!(
            values(&cold, &alice).await,
            values(&a, &alice).await,
            "{point}"
        );
        // Every acknowledged version the window keeps is restorable with its rows.
        let reader = a.bucket_reader();
        let kept = reader
            .versions(&alice, 0)
            .await
            .unwrap()
            .unwrap_or_default();
        let listed = |version: u64| kept.iter().any(|entry| entry.version.get() == version);
        assert!(
            remote == 0 || listed(remote),
            "{point}: newest not listed: {kept:?}"
        );
        for (value, version) in acked.iter().filter(|(_, version)| listed(*version)) {
            let image = reader
                .download_version(&alice, Version::new(*version))
                .await
                .unwrap_or_else(|err| panic!("{point}: version {version}: {err}"));
            let rows = values_in_image(&image);
            assert!(
                rows.contains(value),
                "{point}: version {version} rebuilt without {value}: {rows:?}"
            );
        }
        eprintln!(
            "{point}: {} acknowledged, recovered at version {remote} with {found:?}",
            acked.len()
        );
    }
}

/// The engine of the restore suite: the log folded every two changes, deletes at once;
/// with `from_snapshot`, a restore never walks back from the copy.
async fn restore_engine(root: &Path, dir: &str, from_snapshot: bool) -> cellar_engine::Engine {
    let store = Arc::new(LocalStore::new(root.join("bucket")));
    let mut config = config(&root.join(dir), ConflictPolicy::Strict, dir);
    config.compact_after_versions = 2;
    config.log_grace = std::time::Duration::ZERO;
    if from_snapshot {
        config.history.walk_back_changes = 0;
    }
    cellar_engine::Engine::open(config, store).await.unwrap()
}

/// The restore suite's child: a new instance reads the user (a cold start), restores
/// version 2's content (walking back, or from a snapshot), and lets the compaction that
/// follows finish.
#[tokio::test]
async fn restore_child() {
    let Ok(root) = std::env::var(RESTORE_CHILD) else {
        return;
    };
    let from_snapshot = std::env::var(FROM_SNAPSHOT).is_ok();
    let engine = restore_engine(Path::new(&root), "r", from_snapshot).await;
    let alice = user("alice");
    assert_eq!(values(&engine, &alice).await, [1, 2, 3, 4, 5]);
    engine.settle().await;
    let restored = engine
        .restore(&alice, RestoreTarget::Version(Version::new(2)))
        .await
        .unwrap();
    println!("RESTORED {}", restored.version);
    engine.settle().await;
    println!("FINISHED");
}

/// A crash at any point of a restore (and of the cold start and compaction around it)
/// leaves the bucket at the version before it or at the restore, the local copy whole,
/// and every version still rebuilt from the bucket as it was.
#[tokio::test]
async fn a_crash_anywhere_in_a_restore_recovers() {
    if std::env::var(CHILD).is_ok() || std::env::var(RESTORE_CHILD).is_ok() {
        return;
    }
    let alice = user("alice");
    let mut crashed = Vec::new();
    // Every point with a restore that walks back; the restore's own points also with one
    // that rebuilds from a snapshot.
    let own = ["before-upload", "after-upload-before-commit"];
    let cases = CRASH_POINTS
        .iter()
        .map(|point| (*point, false))
        .chain(own.iter().map(|point| (*point, true)));
    for (point, from_snapshot) in cases {
        let root = tempfile::tempdir().unwrap();
        let writer = restore_engine(root.path(), "w", false).await;
        for value in 1..=5 {
            append(&writer, &alice, value).await.unwrap();
            writer.settle().await;
        }
        drop(writer);
        let mut child = Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "restore_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(RESTORE_CHILD, root.path())
            .env("CELLAR_CRASH_AT", point);
        if from_snapshot {
            child.env(FROM_SNAPSHOT, "1");
        }
        let output = child.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !stdout.contains("FINISHED") {
            crashed.push((point, from_snapshot));
        }
        let restored: Option<u64> = stdout
            .lines()
            .find_map(|line| line.split_once("RESTORED ").map(|(_, rest)| rest))
            .map(|version| version.trim().parse().unwrap());

        let reader = restore_engine(root.path(), "r", false).await;
        let found = values(&reader, &alice).await;
        reader.settle().await;
        let remote = remote_version(&reader, &alice).await;
        match restored {
            Some(version) => {
                assert_eq!(found, [1, 2], "{point}: acknowledged restore missing");
                assert!(
                    remote >= version,
                    "{point}: bucket at {remote} below {version}"
                );
            }
            None => assert!(
                found == [1, 2] || found == [1, 2, 3, 4, 5],
                "{point}: neither before nor after the restore: {found:?}"
            ),
        }
        assert!(
            cellar_engine::is_intact(&root.path().join("r/alice/database.sqlite")),
            "{point}: torn database"
        );
        let cold = restore_engine(root.path(), &format!("cold-{point}"), false).await;
        assert_eq!(values(&cold, &alice).await, found, "{point}: cold start");
        let bucket = reader.bucket_reader();
        for (version, rows) in [(2, vec![1, 2]), (5, vec![1, 2, 3, 4, 5])] {
            let image = bucket
                .download_version(&alice, Version::new(version))
                .await
                .unwrap();
            assert_eq!(values_in_image(&image), rows, "{point}: version {version}");
        }
        eprintln!("{point}: restored {restored:?}, bucket at {remote}, rows {found:?}");
    }
    // The restore's own points (the cold start before it passes the install points, the
    // compaction after it the compaction points).
    for point in own {
        for from_snapshot in [false, true] {
            assert!(
                crashed.contains(&(point, from_snapshot)),
                "{point} (from a snapshot: {from_snapshot}) not passed: {crashed:?}"
            );
        }
    }
}
