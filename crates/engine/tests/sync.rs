//! The request path on the folder and memory stores: version check, one upload per
//! writing request, downloads that never pair a file with a stale journal, ABA.

mod common;
mod scenarios;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use cellar_engine::{ConflictPolicy, Error, LocalStore, MemoryStore, Version};
use common::*;

#[tokio::test]
async fn a_new_user_starts_empty_at_version_zero_and_uploads_nothing_until_it_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let engine = engine(store.clone(), dir.path(), ConflictPolicy::Strict, "a").await;
    let alice = user("alice");
    let status = engine.status(&alice).await.unwrap();
    assert_eq!(status.version, Version::ZERO);
    let read = engine
        .transact(&alice, |conn| {
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .await
        .unwrap();
    assert_eq!(
        (read.value, read.wrote, read.version),
        (0, false, Version::ZERO)
    );
    assert_eq!(engine.metrics().uploads.load(Ordering::Relaxed), 0);
    assert!(
        engine
            .bucket_reader()
            .remote_status(&alice)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn many_writes_in_one_request_make_one_upload_with_version_plus_one() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(
        Arc::new(MemoryStore::new()),
        dir.path(),
        ConflictPolicy::Strict,
        "a",
    )
    .await;
    let alice = user("alice");
    let committed = engine
        .transact(&alice, |conn| {
            conn.execute_batch("CREATE TABLE t(v); CREATE INDEX iv ON t(v);")?;
            for i in 0..50 {
                conn.execute("INSERT INTO t VALUES (?1)", [i])?;
            }
            conn.execute("UPDATE t SET v = v + 1", [])?;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(
        (committed.version, committed.wrote),
        (Version::new(1), true)
    );
    assert_eq!(engine.metrics().uploads.load(Ordering::Relaxed), 1);
    append(&engine, &alice, 7).await.unwrap();
    assert_eq!(remote_version(&engine, &alice).await, 2);
    assert_eq!(engine.metrics().uploads.load(Ordering::Relaxed), 2);
    let remote = engine
        .bucket_reader()
        .remote_status(&alice)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(remote.writer, "a");
}

#[tokio::test]
async fn a_failed_request_changes_nothing_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(
        Arc::new(MemoryStore::new()),
        dir.path(),
        ConflictPolicy::Strict,
        "a",
    )
    .await;
    let alice = user("alice");
    append(&engine, &alice, 1).await.unwrap();
    let failed = engine
        .transact(&alice, |conn| {
            conn.execute("INSERT INTO t VALUES (2)", [])?;
            conn.execute("INSERT INTO nowhere VALUES (3)", [])?;
            Ok(())
        })
        .await;
    assert!(matches!(failed, Err(Error::Sql(_))), "{failed:?}");
    assert_eq!(values(&engine, &alice).await, [1]);
    assert_eq!(remote_version(&engine, &alice).await, 1);
}

#[tokio::test]
async fn a_download_never_pairs_the_new_file_with_the_old_hot_journal() {
    // Build a "killed in the middle of a commit" local copy: the database file already
    // has some of the new pages and its hot rollback journal is beside it.
    let store = Arc::new(MemoryStore::new());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = engine(store.clone(), dir_a.path(), ConflictPolicy::Strict, "a").await;
    let alice = user("alice");
    a.transact(&alice, |conn| {
        conn.execute_batch(
            "CREATE TABLE t(v); CREATE TABLE filler(b BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
             INSERT INTO filler SELECT randomblob(1000) FROM n;",
        )?;
        Ok(())
    })
    .await
    .unwrap();
    drop(a);
    let local_db = dir_a.path().join("alice/database.sqlite");
    let crashed = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(&local_db).unwrap();
        conn.execute_batch("PRAGMA cache_size = 2; BEGIN; UPDATE filler SET b = randomblob(1000);")
            .unwrap();
        // The small cache forced pages out to the file, so a hot journal exists now.
        std::fs::copy(&local_db, crashed.path().join("database.sqlite")).unwrap();
        std::fs::copy(
            dir_a.path().join("alice/database.sqlite-journal"),
            crashed.path().join("database.sqlite-journal"),
        )
        .unwrap();
        conn.execute_batch("ROLLBACK").unwrap();
    }
    // Meanwhile another instance moved the bucket on.
    let b = engine(store.clone(), dir_b.path(), ConflictPolicy::Strict, "b").await;
    b.transact(&alice, |conn| {
        conn.execute_batch("DELETE FROM filler; INSERT INTO t VALUES (42);")
    })
    .await
    .unwrap();
    // Put the crashed copy in place of a's local database and restart a.
    for name in ["database.sqlite", "database.sqlite-journal"] {
        std::fs::copy(
            crashed.path().join(name),
            dir_a.path().join("alice").join(name),
        )
        .unwrap();
    }
    let a = engine(store.clone(), dir_a.path(), ConflictPolicy::Strict, "a").await;
    assert_eq!(values(&a, &alice).await, [42]);
    let filler = a
        .transact(&alice, |conn| {
            conn.query_row("SELECT count(*) FROM filler", [], |r| r.get::<_, i64>(0))
        })
        .await
        .unwrap();
    assert_eq!(filler.value, 0);
    a.settle().await; // the install, once the download's checks are done
    assert!(!dir_a.path().join("alice/database.sqlite-journal").exists());
    assert!(cellar_engine::is_intact(&local_db));
}

#[tokio::test]
async fn a_second_instance_reads_the_first_ones_write_on_its_next_request() {
    let root = tempfile::tempdir().unwrap();
    scenarios::second_instance_reads_first_ones_write(
        Arc::new(LocalStore::new(root.path())),
        "alice",
    )
    .await;
}

#[tokio::test]
async fn restoring_identical_content_never_lets_a_stale_writer_move_the_version_back() {
    let root = tempfile::tempdir().unwrap();
    scenarios::restored_content_never_moves_the_version_back(
        Arc::new(LocalStore::new(root.path())),
        "alice",
    )
    .await;
}

#[tokio::test]
async fn a_corrupted_download_is_refused_and_nothing_is_installed() {
    scenarios::corrupted_download_is_refused(Arc::new(MemoryStore::new()), "alice").await;
}

#[tokio::test]
async fn a_foreign_empty_object_is_refused_by_name_on_the_folder_store() {
    let root = tempfile::tempdir().unwrap();
    scenarios::foreign_empty_object_is_refused_by_name(
        Arc::new(LocalStore::new(root.path())),
        "alice",
    )
    .await;
}

/// Issue 5, item 7 and issue 11: a read asks the store one thing, the version check (the
/// change after the local version), and a write one more, its upload; nothing else (no
/// `HEAD`, no listing) on the request path. A new instance reads the snapshot first.
#[tokio::test]
async fn a_read_asks_the_store_once_and_a_write_once_more() {
    use common::watched::Watched;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let store = Arc::new(MemoryStore::new());
    let a = engine(store.clone(), dirs[0].path(), ConflictPolicy::Strict, "a").await;
    let watched = Watched::new(store, false);
    let b = engine(watched.clone(), dirs[1].path(), ConflictPolicy::Strict, "b").await;
    watched.forget();
    let alice = user("alice");
    append(&a, &alice, 1).await.unwrap();

    assert_eq!(values(&b, &alice).await, [1], "a download");
    let cold = BTreeMap::from([("get_range", 1), ("get", 1)]);
    assert_eq!(watched.calls(), cold, "the snapshot, then the log's end");
    watched.forget();
    for _ in 0..10 {
        assert_eq!(values(&b, &alice).await, [1]);
    }
    let reads = BTreeMap::from([("get", 10)]);
    assert_eq!(watched.calls(), reads, "one GET per read");

    for value in 2..5 {
        watched.forget();
        append(&b, &alice, value).await.unwrap();
        let write = BTreeMap::from([("get", 1), ("put", 1)]);
        assert_eq!(watched.calls(), write, "the version check and one upload");
    }
    watched.forget();
    append(&a, &alice, 5).await.unwrap();
    assert_eq!(values(&b, &alice).await, [1, 2, 3, 4, 5]);
    let behind = BTreeMap::from([("get", 2)]);
    assert_eq!(
        watched.calls(),
        behind,
        "the change it lacked, then the log's end"
    );

    // Twenty changes behind: asked for side by side, a few asked for past the end.
    for value in 6..26 {
        append(&a, &alice, value).await.unwrap();
    }
    watched.forget();
    assert_eq!(values(&b, &alice).await, (1..26).collect::<Vec<i64>>());
    let gets = watched.calls().get("get").copied().unwrap_or(0);
    assert!((21..=21 + 8).contains(&gets), "{:?}", watched.calls());

    // A new instance behind the 24 changes after the snapshot: the log is asked for while
    // the snapshot downloads, eight at a time to its end, and nothing after it.
    let dir = tempfile::tempdir().unwrap();
    let c = engine(watched.clone(), dir.path(), ConflictPolicy::Strict, "c").await;
    watched.forget();
    assert_eq!(values(&c, &alice).await, (1..26).collect::<Vec<i64>>());
    let cold = BTreeMap::from([("get_range", 1), ("get", 1 + 24)]);
    assert_eq!(
        watched.calls(),
        cold,
        "the snapshot, the first change, three windows"
    );
}
