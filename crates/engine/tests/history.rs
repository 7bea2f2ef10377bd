//! History on the log (`docs/history.md`): every version rebuilt exactly, restore and its
//! undo seen by another instance, fork, point-in-time resolution, and retention removing
//! only what the window no longer keeps; on the folder store, SeaweedFS and moto.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use cellar_engine::diff::DiffOptions;
use cellar_engine::store::{Fault, FaultyStore, Operation};
use cellar_engine::{
    ConflictPolicy, Engine, EngineConfig, Error, Event, Holder, LocalStore, RestoreTarget, S3Store,
    Store, Version,
};
use cellar_testkit::{S3Kind, S3Server};
use common::{append, user, values, values_in_image};

fn history_config(dir: &std::path::Path, writer: &str) -> EngineConfig {
    let mut config = common::config(dir, ConflictPolicy::Strict, writer);
    config.log_grace = std::time::Duration::ZERO;
    // Compaction is called by the test, at known versions.
    config.compact_after_versions = 1_000;
    config
}

async fn open(store: &Arc<dyn Store>, config: EngineConfig) -> Engine {
    Engine::open(config, store.clone()).await.unwrap()
}

async fn run(store: Arc<dyn Store>, name: &str) {
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = open(&store, history_config(dirs[0].path(), "a")).await;
    let alice = user("alice");
    let mut expected: BTreeMap<Version, Vec<i64>> = BTreeMap::new();
    let mut rows = Vec::new();
    for i in 1..=10 {
        let committed = append(&a, &alice, i).await.unwrap();
        rows.push(i);
        expected.insert(committed.version, rows.clone());
        if i % 3 == 0 {
            assert_eq!(a.compact(&alice).await.unwrap(), Some(committed.version));
        }
    }
    assert_eq!(expected.keys().last(), Some(&Version::new(10)), "{name}");

    // Every version is listed, by what holds it, and rebuilt exactly.
    let reader = a.bucket_reader();
    let listed = reader.versions(&alice, usize::MAX).await.unwrap().unwrap();
    let numbers: Vec<u64> = listed.iter().map(|e| e.version.get()).collect();
    assert_eq!(numbers, (1..=10).collect::<Vec<_>>(), "{name}: {listed:?}");
    assert!(
        listed.iter().all(|e| e.writer.as_deref() == Some("a")),
        "{name}"
    );
    assert_eq!(listed[0].held_by, vec![Holder::KeptSnapshot], "{name}");
    assert_eq!(
        listed[8].held_by,
        vec![Holder::Change, Holder::Snapshot],
        "{name}"
    );
    assert_eq!(listed[9].held_by, vec![Holder::Change], "{name}");
    for (version, rows) in &expected {
        let image = reader.download_version(&alice, *version).await.unwrap();
        assert_eq!(&values_in_image(&image), rows, "{name}: version {version}");
    }
    // A diff between two versions, by this instance (its copy is the newest) and by a
    // reader of the bucket alone.
    let diff = a
        .diff(
            &alice,
            Version::new(2),
            Version::new(10),
            DiffOptions::default(),
        )
        .await
        .unwrap();
    let table = diff.tables.iter().find(|t| t.table == "t").unwrap();
    assert_eq!(
        (table.added, table.removed, table.changed),
        (8, 0, 0),
        "{name}"
    );
    assert_eq!(table.rows.len(), 8, "{name}");
    let from_bucket = reader
        .diff(
            &alice,
            Version::new(2),
            Version::new(10),
            DiffOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(from_bucket, diff, "{name}");
    // Two versions older than the copy, both walked back from it (either order).
    for (older, newer) in [(2, 5), (5, 2)] {
        let (older, newer) = (Version::new(older), Version::new(newer));
        let walked = a
            .diff(&alice, older, newer, DiffOptions::default())
            .await
            .unwrap();
        let rebuilt = reader
            .diff(&alice, older, newer, DiffOptions::default())
            .await
            .unwrap();
        assert_eq!(walked, rebuilt, "{name}");
        let table = walked.tables.iter().find(|t| t.table == "t").unwrap();
        assert_eq!(table.added + table.removed, 3, "{name}");
    }
    let created = a
        .diff(
            &alice,
            Version::new(1),
            Version::new(1),
            DiffOptions::default(),
        )
        .await
        .unwrap();
    assert!(
        created.tables.is_empty() && created.schema.is_empty(),
        "{name}"
    );
    for missing in [0, 11] {
        let err = reader
            .download_version(&alice, Version::new(missing))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NoSuchVersion { .. }), "{name}: {err}");
    }

    // A restore is a new version holding the old content; another instance sees it, and
    // subscribers are told which version it brought back.
    let b = open(&store, history_config(dirs[1].path(), "b")).await;
    assert_eq!(
        values(&b, &alice).await,
        expected[&Version::new(10)],
        "{name}"
    );
    let mut events = a.subscribe();
    let restored = a
        .restore(&alice, RestoreTarget::Version(Version::new(4)))
        .await
        .unwrap();
    assert_eq!(
        (restored.version, restored.restored, restored.undo),
        (Version::new(11), Version::new(4), Version::new(10)),
        "{name}"
    );
    let told = events.recv().await.unwrap();
    assert!(
        matches!(told, Event::Version { version, restored_from: Some(from), .. }
            if version == Version::new(11) && from == Version::new(4)),
        "{name}: {told:?}"
    );
    assert_eq!(
        values(&a, &alice).await,
        expected[&Version::new(4)],
        "{name}"
    );
    // It shipped the pages that differ, not the database.
    let listed = reader.versions(&alice, 0).await.unwrap().unwrap();
    let shipped = listed.last().unwrap().shipped_bytes;
    assert!(
        shipped < 1024,
        "{name}: the restore shipped {shipped} bytes"
    );
    let mut b_events = b.subscribe();
    assert_eq!(
        values(&b, &alice).await,
        expected[&Version::new(4)],
        "{name}"
    );
    let seen = b_events.recv().await.unwrap();
    assert!(
        matches!(seen, Event::Version { restored_from: Some(from), .. } if from == Version::new(4)),
        "{name}: {seen:?}"
    );

    // A writer that had not seen the restore... has: b wrote on top of it.
    let on_top = append(&b, &alice, 100).await.unwrap();
    assert_eq!(on_top.version, Version::new(12), "{name}");
    let mut after_restore = expected[&Version::new(4)].clone();
    after_restore.push(100);

    // The restore is undone by restoring the version it names.
    let undone = b
        .restore(&alice, RestoreTarget::Version(restored.undo))
        .await
        .unwrap();
    assert_eq!(undone.version, Version::new(13), "{name}");
    assert_eq!(
        values(&a, &alice).await,
        expected[&Version::new(10)],
        "{name}"
    );

    // A moment resolves to the version current then.
    let now = chrono::Utc::now();
    assert_eq!(
        reader
            .resolve(&alice, RestoreTarget::At(now))
            .await
            .unwrap(),
        Version::new(13),
        "{name}"
    );
    let long_ago = now - chrono::Duration::days(365);
    let err = reader
        .resolve(&alice, RestoreTarget::At(long_ago))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchVersion { .. }), "{name}: {err}");

    // A fork starts a new user from any version; an existing user is refused.
    let forked = user("alice-fork");
    a.fork(&alice, &forked, Some(Version::new(12)))
        .await
        .unwrap();
    assert_eq!(values(&b, &forked).await, after_restore, "{name}");
    assert!(a.fork(&alice, &forked, None).await.is_err(), "{name}");

    // Retention: the newest three versions kept; what is older goes, what is kept still
    // rebuilds.
    a.compact(&alice).await.unwrap();
    let mut narrow = history_config(dirs[2].path(), "c");
    narrow.history.keep_versions = 3;
    let c = open(&store, narrow).await;
    let collected = c.collect_history(&alice).await.unwrap();
    assert_eq!(
        collected.oldest_kept,
        Some(Version::new(11)),
        "{name}: {collected:?}"
    );
    assert!(collected.deleted_changes >= 8, "{name}: {collected:?}");
    assert_eq!(collected.deleted_snapshots, 3, "{name}: {collected:?}");
    let listed = reader.versions(&alice, 0).await.unwrap().unwrap();
    assert!(
        listed.first().unwrap().version <= Version::new(11),
        "{name}: {listed:?}"
    );
    assert_eq!(listed.last().unwrap().version, Version::new(13), "{name}");
    for (version, rows) in [
        (11, expected[&Version::new(4)].clone()),
        (12, after_restore.clone()),
        (13, expected[&Version::new(10)].clone()),
    ] {
        let image = reader
            .download_version(&alice, Version::new(version))
            .await
            .unwrap();
        assert_eq!(
            values_in_image(&image),
            rows,
            "{name}: version {version} after retention"
        );
    }
    let err = reader
        .download_version(&alice, Version::new(2))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoSuchVersion { .. }), "{name}: {err}");
    // A second run has nothing left to remove.
    let again = c.collect_history(&alice).await.unwrap();
    assert_eq!(
        (again.deleted_changes, again.deleted_snapshots),
        (0, 0),
        "{name}"
    );

    // A restore that does not walk back from its copy rebuilds the version from a snapshot
    // and ships the pages that differ.
    let mut far = history_config(dirs[3].path(), "far");
    far.history.walk_back_changes = 0;
    let far = open(&store, far).await;
    let rebuilt = far
        .restore(&alice, RestoreTarget::Version(Version::new(12)))
        .await
        .unwrap();
    assert_eq!(rebuilt.version, Version::new(14), "{name}");
    assert_eq!(values(&a, &alice).await, after_restore, "{name}");
    let listed = reader.versions(&alice, 0).await.unwrap().unwrap();
    let shipped = listed.last().unwrap().shipped_bytes;
    assert!(
        shipped < 1024,
        "{name}: the restore shipped {shipped} bytes"
    );

    // With history off, compaction keeps nothing and older versions are not restorable.
    let mut off = history_config(dirs[4].path(), "d");
    off.history.keep_days = 0;
    let d = open(&store, off).await;
    let bob = user("bob");
    for i in 1..=4 {
        append(&d, &bob, i).await.unwrap();
    }
    d.compact(&bob).await.unwrap();
    let listed = reader.versions(&bob, 0).await.unwrap().unwrap();
    assert_eq!(
        listed.first().unwrap().version,
        Version::new(4),
        "{name}: {listed:?}"
    );
    assert!(
        reader
            .download_version(&bob, Version::new(2))
            .await
            .is_err(),
        "{name}"
    );
}

#[tokio::test]
async fn history_on_the_folder_store() {
    let dir = tempfile::tempdir().unwrap();
    run(Arc::new(LocalStore::new(dir.path())), "folder").await;
}

#[tokio::test]
async fn history_on_s3_servers() {
    for kind in S3Kind::ALL {
        let server = S3Server::start(kind).await.unwrap();
        let store: Arc<dyn Store> = Arc::new(S3Store::from_object_store(server.object_store()));
        run(store, kind.name()).await;
    }
}

/// Retention racing restores, writes and cold starts on one bucket removes nothing the
/// window keeps and nothing a reader needs: after every round both instances read the
/// model's rows and every version still listed rebuilds to the rows it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_racing_restores_and_cold_starts_loses_nothing() {
    let bucket = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(bucket.path()));
    let grace = std::time::Duration::from_millis(500);
    let configured = |dir: &std::path::Path, writer: &str, keep: u64| {
        let mut config = common::config(dir, ConflictPolicy::Strict, writer);
        config.log_grace = grace;
        config.compact_after_versions = 3;
        config.history.keep_versions = keep;
        config
    };
    let dirs: Vec<_> = (0..8).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = open(&store, configured(dirs[0].path(), "a", 100_000)).await;
    let collector = open(&store, configured(dirs[1].path(), "gc", 4)).await;
    let alice = user("alice");
    let mut rows: BTreeMap<Version, Vec<i64>> = BTreeMap::new();
    let mut current = Vec::new();
    for value in 1..=9 {
        current.push(value);
        rows.insert(
            append(&a, &alice, value).await.unwrap().version,
            current.clone(),
        );
    }
    for round in 0..5 {
        a.settle().await;
        tokio::time::sleep(grace + grace / 2).await; // what the last round folded may go
        let newest = *rows.keys().last().unwrap();
        let target = *rows.keys().rev().nth(1).unwrap();
        let fresh = open(&store, configured(dirs[round + 2].path(), "fresh", 100_000)).await;
        let (collected, restored, read) = tokio::join!(
            collector.collect_history(&alice),
            a.restore(&alice, RestoreTarget::Version(target)),
            values(&fresh, &alice),
        );
        collected.unwrap();
        let restored = restored.unwrap();
        assert_eq!(restored.undo, newest, "round {round}");
        assert!(
            read == rows[&newest] || read == rows[&target],
            "round {round}: a cold start read {read:?}"
        );
        current = rows[&target].clone();
        rows.insert(restored.version, current.clone());
        current.push(100 + round as i64);
        rows.insert(
            append(&a, &alice, 100 + round as i64)
                .await
                .unwrap()
                .version,
            current.clone(),
        );
        assert_eq!(values(&a, &alice).await, current, "round {round}");
        assert_eq!(values(&fresh, &alice).await, current, "round {round}");
        let reader = a.bucket_reader();
        let listed = reader.versions(&alice, 0).await.unwrap().unwrap();
        let newest_four: Vec<Version> = rows.keys().rev().take(4).copied().collect();
        for version in &newest_four {
            assert!(
                listed.iter().any(|entry| entry.version == *version),
                "round {round}: version {version} left the window early"
            );
        }
        for entry in &listed {
            let image = reader
                .download_version(&alice, entry.version)
                .await
                .unwrap();
            assert_eq!(
                values_in_image(&image),
                rows[&entry.version],
                "round {round}: version {}",
                entry.version
            );
        }
    }
    let gone = collector.collect_history(&alice).await.unwrap();
    let listed = a
        .bucket_reader()
        .versions(&alice, 0)
        .await
        .unwrap()
        .unwrap();
    assert!(
        listed.first().unwrap().version > Version::new(1),
        "retention removed nothing: {gone:?}"
    );
}

/// The file under `root` whose path ends with `suffix`.
fn file_ending(root: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                return path;
            }
        }
    }
    panic!("no file ends with {suffix}");
}

/// Flips one byte in the middle of the file at `path`.
fn flip_middle_byte(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

/// A restore that does not walk back streams its version's snapshot past the copy, from
/// `database.sqlite` or from a kept snapshot, and ships the pages that differ; a snapshot
/// that is cut off or does not match its metadata is refused, and nothing is committed.
#[tokio::test]
async fn a_restore_rebuilt_from_a_snapshot_is_exact_and_refuses_a_bad_snapshot() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let faulty = Arc::new(FaultyStore::new(LocalStore::new(dirs[0].path())));
    let store: Arc<dyn Store> = faulty.clone();
    let a = open(&store, history_config(dirs[1].path(), "a")).await;
    let alice = user("alice");
    let mut expected: BTreeMap<Version, Vec<i64>> = BTreeMap::new();
    let mut rows = Vec::new();
    for i in 1..=6 {
        let committed = append(&a, &alice, i).await.unwrap();
        rows.push(i);
        expected.insert(committed.version, rows.clone());
        if i == 3 {
            // Version 1 is kept under snapshots/, version 3 is database.sqlite.
            a.compact(&alice).await.unwrap();
        }
    }
    let mut far = history_config(dirs[2].path(), "far");
    far.history.walk_back_changes = 0;
    let far = open(&store, far).await;
    assert_eq!(values(&far, &alice).await, expected[&Version::new(6)]);
    let reader = far.bucket_reader();
    let newest = |listed: Vec<cellar_engine::VersionEntry>| listed.last().unwrap().version;

    // From database.sqlite and a change, then from the kept snapshot and a change.
    for (restored, version) in [(4, 7), (2, 8)] {
        let done = far
            .restore(&alice, RestoreTarget::Version(Version::new(restored)))
            .await
            .unwrap();
        assert_eq!(done.version, Version::new(version));
        assert_eq!(values(&a, &alice).await, expected[&Version::new(restored)]);
        let listed = reader.versions(&alice, 0).await.unwrap().unwrap();
        let shipped = listed.last().unwrap().shipped_bytes;
        assert!(shipped < 1024, "the restore shipped {shipped} bytes");
    }
    assert_eq!(values(&far, &alice).await, expected[&Version::new(2)]);

    // Either snapshot with a byte changed is refused, in words.
    for (restored, suffix) in [
        (5, "alice/database.sqlite"),
        (2, "alice/snapshots/00000000000000000001"),
    ] {
        let path = file_ending(dirs[0].path(), suffix);
        flip_middle_byte(&path);
        let err = far
            .restore(&alice, RestoreTarget::Version(Version::new(restored)))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Inconsistent { detail, .. } if detail.contains("snapshot")),
            "{err}"
        );
        flip_middle_byte(&path);
        let listed = reader.versions(&alice, 0).await.unwrap().unwrap();
        assert_eq!(newest(listed), Version::new(8));
    }

    // A body cut off half way (the version check's read first, then the snapshot's).
    faulty.inject(Operation::Get, Fault::Latency(std::time::Duration::ZERO));
    faulty.inject(Operation::Get, Fault::CutOffBody);
    let err = far
        .restore(&alice, RestoreTarget::Version(Version::new(5)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err}");
    faulty.clear_script();
    let listed = reader.versions(&alice, 0).await.unwrap().unwrap();
    assert_eq!(newest(listed), Version::new(8));
    assert_eq!(values(&a, &alice).await, expected[&Version::new(2)]);

    // And then it goes through.
    let done = far
        .restore(&alice, RestoreTarget::Version(Version::new(5)))
        .await
        .unwrap();
    assert_eq!(done.version, Version::new(9));
    assert_eq!(values(&a, &alice).await, expected[&Version::new(5)]);
}

/// A restore that loses a race to another writer is made again on top of it under
/// last-write-wins and rebase (the other write stays in history: `undo` names it), and
/// refused under strict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_that_loses_a_race_follows_the_policy() {
    for policy in [
        ConflictPolicy::LastWriteWins,
        ConflictPolicy::Rebase,
        ConflictPolicy::Strict,
    ] {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        // Two instances on one folder: the restoring one's reads can be slowed down alone.
        let faulty = Arc::new(FaultyStore::new(LocalStore::new(dirs[0].path())));
        let slowed: Arc<dyn Store> = faulty.clone();
        let plain: Arc<dyn Store> = Arc::new(LocalStore::new(dirs[0].path()));
        let configured = |dir: &std::path::Path, writer: &str| {
            let mut config = history_config(dir, writer);
            config.conflict = policy;
            config
        };
        let a = open(&slowed, configured(dirs[1].path(), "a")).await;
        let b = open(&plain, configured(dirs[2].path(), "b")).await;
        let alice = user("alice");
        for value in 1..=4 {
            append(&a, &alice, value).await.unwrap();
        }
        assert_eq!(values(&b, &alice).await, [1, 2, 3, 4]);
        // The restore's reads after its version check wait while b writes version 5.
        faulty.inject(Operation::Get, Fault::Latency(std::time::Duration::ZERO));
        faulty.inject(
            Operation::Get,
            Fault::Latency(std::time::Duration::from_millis(1500)),
        );
        let (restored, written) = tokio::join!(
            a.restore(&alice, RestoreTarget::Version(Version::new(2))),
            async {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                append(&b, &alice, 5).await.unwrap().version
            }
        );
        assert_eq!(written, Version::new(5), "{policy:?}");
        match policy {
            ConflictPolicy::Strict => {
                let err = restored.unwrap_err();
                assert!(matches!(err, Error::Conflict { .. }), "{policy:?}: {err}");
                assert_eq!(values(&a, &alice).await, [1, 2, 3, 4, 5], "{policy:?}");
            }
            _ => {
                let restored = restored.unwrap();
                assert_eq!(
                    (restored.version, restored.restored, restored.undo),
                    (Version::new(6), Version::new(2), Version::new(5)),
                    "{policy:?}"
                );
                assert_eq!(values(&b, &alice).await, [1, 2], "{policy:?}");
                // Undone, b's write is back.
                a.restore(&alice, RestoreTarget::Version(restored.undo))
                    .await
                    .unwrap();
                assert_eq!(values(&b, &alice).await, [1, 2, 3, 4, 5], "{policy:?}");
            }
        }
    }
}
