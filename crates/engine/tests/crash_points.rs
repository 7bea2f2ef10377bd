//! Crash at every named point of the write path, in a child process, then recover.
//!
//! The child (this test binary, re-run with `CELLAR_CRASH_CHILD`) writes through one engine
//! while a second engine moves the bucket on, so the child also downloads, and its last
//! upload fails so it also records a pending upload. It prints `ACK value version` for every
//! acknowledged write and aborts at the point named by `CELLAR_CRASH_AT`. The parent then
//! restarts an engine on the same folders and checks: the database is intact, every
//! acknowledged write is there, and the bucket's version never went below an acknowledged one.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use cellar_engine::crash::CRASH_POINTS;
use cellar_engine::store::{Fault, FaultyStore, Operation};
use cellar_engine::{ConflictPolicy, LocalStore};
use common::*;

const CHILD: &str = "CELLAR_CRASH_CHILD";

/// The child's script; aborts at the crash point, or finishes and exits normally.
#[tokio::test]
async fn crash_child() {
    let Ok(root) = std::env::var(CHILD) else {
        return;
    };
    let root = Path::new(&root);
    let store = Arc::new(FaultyStore::new(LocalStore::new(root.join("bucket"))));
    let alice = user("alice");
    let a = engine(store.clone(), &root.join("a"), ConflictPolicy::Strict, "a").await;
    let b = engine(store.clone(), &root.join("b"), ConflictPolicy::Strict, "b").await;
    let ack = |value: i64, version| println!("ACK {value} {version}");
    for value in [1, 2] {
        ack(value, append(&a, &alice, value).await.unwrap().version);
    }
    ack(100, append(&b, &alice, 100).await.unwrap().version);
    ack(3, append(&a, &alice, 3).await.unwrap().version); // downloads 100 first
    store.inject(Operation::Put, Fault::Error);
    append(&a, &alice, 4).await.unwrap_err(); // pending
    println!("FINISHED");
}

#[tokio::test]
async fn every_crash_point_recovers_with_every_acknowledged_write() {
    if std::env::var(CHILD).is_ok() {
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
        eprintln!(
            "{point}: {} acknowledged, recovered at version {remote} with {found:?}",
            acked.len()
        );
    }
}
