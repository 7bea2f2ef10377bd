//! A download answers its first request before it is installed (`sync/staged.rs`): the
//! request runs on `database.sqlite.download`, and the file is checked, fsynced and
//! renamed into place after it, with the sync state saved last.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cellar_engine::store::{Fault, Operation};
use cellar_engine::{
    ConflictPolicy, Engine, Error, MemoryStore, S3Store, Store, SyncState, UserId,
};
use cellar_testkit::S3Server;
use common::*;

/// `b`'s sync state on disk: what a restart would believe the local file is.
fn saved_state(engine: &Engine, user: &UserId) -> Option<SyncState> {
    let path = engine.layout().sync_state_path(user);
    let text = std::fs::read_to_string(path).ok()?;
    Some(serde_json::from_str(&text).unwrap())
}

fn count_rows(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

/// `a` wrote 1 and 2; `b` has never seen the user.
async fn written_by_a() -> (Pair, UserId) {
    let pair = pair(ConflictPolicy::Strict).await;
    let alice = user("alice");
    append(&pair.a, &alice, 1).await.unwrap();
    append(&pair.a, &alice, 2).await.unwrap();
    // The snapshot at version 2: what a first request downloads, with nothing after it.
    let folded = pair.a.compact(&alice).await.unwrap();
    assert_eq!(folded, Some(cellar_engine::Version::new(2)));
    (pair, alice)
}

#[tokio::test]
async fn the_first_request_runs_on_the_download_which_is_installed_after_it() {
    let (Pair { b, .. }, alice) = written_by_a().await;
    let layout = b.layout().clone();
    let mut session = b.begin(&alice).await.unwrap();
    assert_eq!(session.file_path(), layout.download_temp_path(&alice));
    assert!(!layout.database_path(&alice).exists());
    let rows = session
        .run(|conn| conn.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)))
        .await
        .unwrap();
    assert_eq!(rows, 2);
    assert_eq!(saved_state(&b, &alice), None, "nothing installed yet");
    assert_eq!(session.commit().await.unwrap().version.get(), 2);

    b.settle().await;
    assert_eq!(count_rows(&layout.database_path(&alice)), 2);
    assert!(!layout.download_temp_path(&alice).exists());
    assert_eq!(saved_state(&b, &alice).unwrap().version.get(), 2);
    let session = b.begin(&alice).await.unwrap();
    assert_eq!(session.file_path(), layout.database_path(&alice));
    assert_eq!(b.metrics().downloads.load(Ordering::Relaxed), 1);
}

/// SHA-256 and fsync of a download run off the user's lock: while they are held back,
/// later reads run on the download without waiting and nothing is installed; a write
/// waits for them before its upload, and everything is installed once they are done.
#[tokio::test]
async fn requests_run_on_the_download_while_its_checks_run_and_a_write_waits_for_them() {
    let (
        Pair {
            a, b, dirs: _dirs, ..
        },
        alice,
    ) = written_by_a().await;
    let layout = b.layout().clone();
    let held = cellar_engine::crash::checks::hold(&layout.download_temp_path(&alice));
    assert_eq!(values(&b, &alice).await, [1, 2]);
    for _ in 0..3 {
        let session = tokio::time::timeout(Duration::from_secs(10), b.begin(&alice))
            .await
            .expect("a read waited for the download's checks")
            .unwrap();
        assert_eq!(session.file_path(), layout.download_temp_path(&alice));
        assert_eq!(session.base().version.get(), 2);
        drop(session);
    }
    assert_eq!(
        saved_state(&b, &alice),
        None,
        "nothing installed while checks run"
    );
    assert!(!layout.database_path(&alice).exists());
    let writer = b.clone();
    let writes_for = alice.clone();
    let write = tokio::spawn(async move { append(&writer, &writes_for, 3).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        values(&a, &alice).await,
        [1, 2],
        "uploaded before SHA-256 passed"
    );
    drop(held);
    assert_eq!(write.await.unwrap().unwrap().version.get(), 3);
    b.settle().await;
    assert_eq!(saved_state(&b, &alice).unwrap().version.get(), 3);
    assert_eq!(count_rows(&layout.database_path(&alice)), 3);
    assert!(!layout.download_temp_path(&alice).exists());
    assert_eq!(b.metrics().downloads.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_write_on_the_download_is_installed_with_its_version() {
    // `dirs` kept: `a` reads its own folder again at the end.
    let (
        Pair {
            a, b, dirs: _dirs, ..
        },
        alice,
    ) = written_by_a().await;
    let mut session = b.begin(&alice).await.unwrap();
    assert_eq!(session.file_path(), b.layout().download_temp_path(&alice));
    session
        .run(|conn| conn.execute("INSERT INTO t VALUES (3)", []))
        .await
        .unwrap();
    assert_eq!(session.commit().await.unwrap().version.get(), 3);
    b.settle().await;
    assert_eq!(saved_state(&b, &alice).unwrap().version.get(), 3);
    assert_eq!(count_rows(&b.layout().database_path(&alice)), 3);
    assert_eq!(values(&b, &alice).await, [1, 2, 3]);
    assert_eq!(values(&a, &alice).await, [1, 2, 3]);
    assert_eq!(b.metrics().downloads.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_failed_request_on_the_download_still_installs_it_unchanged() {
    let (Pair { b, .. }, alice) = written_by_a().await;
    let err = b
        .transact(&alice, |conn| {
            conn.execute("INSERT INTO t VALUES (3)", [])?;
            conn.execute("INSERT INTO no_such_table VALUES (4)", [])?;
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no_such_table"), "{err}");
    b.settle().await;
    // Installed: the rollback left the downloaded bytes as they were (SHA-256 passed).
    assert_eq!(saved_state(&b, &alice).unwrap().version.get(), 2);
    assert_eq!(count_rows(&b.layout().database_path(&alice)), 2);
    assert_eq!(values(&b, &alice).await, [1, 2]);
    assert_eq!(b.metrics().downloads.load(Ordering::Relaxed), 1);
}

/// The process dies after the first request answered and before the install: the old
/// state stays on disk, and the next start downloads again.
#[test]
fn a_crash_before_the_install_leaves_the_old_state_and_downloads_again() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let store = Arc::new(MemoryStore::new());
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let alice = user("alice");
    let first = runtime();
    first.block_on(async {
        let a = engine(store.clone(), dirs[0].path(), ConflictPolicy::Strict, "a").await;
        append(&a, &alice, 1).await.unwrap();
        let b = engine(store.clone(), dirs[1].path(), ConflictPolicy::Strict, "b").await;
        let session = b.begin(&alice).await.unwrap();
        session.commit().await.unwrap();
        // The install task is queued on this single-threaded runtime, not run yet.
    });
    drop(first); // the "crash": the install task never runs
    let b_dir = dirs[1].path().join("alice");
    assert!(b_dir.join("database.sqlite.download").exists());
    assert!(!b_dir.join("database.sqlite").exists());
    assert!(!b_dir.join("sync-state.json").exists());

    runtime().block_on(async {
        let b = engine(store.clone(), dirs[1].path(), ConflictPolicy::Strict, "b").await;
        assert_eq!(values(&b, &alice).await, [1]);
        assert_eq!(b.metrics().downloads.load(Ordering::Relaxed), 1);
        b.settle().await;
        assert_eq!(count_rows(&b_dir.join("database.sqlite")), 1);
        assert_eq!(saved_state(&b, &alice).unwrap().version.get(), 1);
    });
}

#[tokio::test]
async fn a_body_cut_off_half_way_is_refused_and_leaves_no_file() {
    let Pair { store, a, b, .. } = pair(ConflictPolicy::Strict).await;
    let alice = user("alice");
    append(&a, &alice, 1).await.unwrap();
    store.inject(Operation::Get, Fault::CutOffBody);
    let err = b.status(&alice).await.unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err:?}");
    assert!(err.to_string().contains("middle of the body"), "{err}");
    assert!(!b.layout().download_temp_path(&alice).exists());
    assert!(!b.layout().database_path(&alice).exists());
    assert_eq!(values(&b, &alice).await, [1]);
}

/// On a real S3 server the body arrives in many pieces; all of them are written, counted
/// and checked.
#[tokio::test]
async fn a_large_database_streams_from_seaweedfs() {
    let server = S3Server::seaweedfs().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(S3Store::from_object_store(server.object_store()));
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = engine(store.clone(), dirs[0].path(), ConflictPolicy::Strict, "a").await;
    let b = engine(store, dirs[1].path(), ConflictPolicy::Strict, "b").await;
    let alice = user("alice");
    a.transact(&alice, |conn| {
        conn.execute("CREATE TABLE t(v INTEGER, pad BLOB)", [])?;
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400) \
             INSERT INTO t SELECT i, randomblob(32768) FROM n",
            [],
        )?;
        Ok(())
    })
    .await
    .unwrap();
    let size = a.status(&alice).await.unwrap().size_bytes;
    assert!(size > 12 << 20, "{size}");
    assert_eq!(b.status(&alice).await.unwrap().size_bytes, size);
    assert_eq!(b.metrics().bytes_downloaded.load(Ordering::Relaxed), size);
    b.settle().await;
    assert_eq!(count_rows(&b.layout().database_path(&alice)), 400);
    assert!(cellar_engine::is_intact(&b.layout().database_path(&alice)));
}
