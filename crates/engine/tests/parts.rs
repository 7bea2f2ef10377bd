//! Large downloads come in parts side by side (`sync/staged.rs`): the first `GET` asks for
//! the first part, the rest come as ranged `GET`s with `If-Match`, each written where it
//! belongs and checked by CRC parts combined in order. Stores such as R2 and S3 limit what
//! one connection carries; parts side by side are what makes a large cold start as fast
//! as the link (measured in `docs/benchmarks.md`).
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use cellar_engine::store::{
    ETag, Fault, FaultyStore, Fetched, Operation, PutCondition, StoreError,
};
use cellar_engine::{
    ConflictPolicy, Engine, EngineConfig, Error, LocalStore, MemoryStore, RawMetadata, S3Store,
    Store, UserId,
};
use cellar_testkit::{S3Kind, S3Server};
use common::watched::{Hook, Watched};
use common::*;
use futures::StreamExt;

/// Parts this small make a 1 MiB database come in 16 of them.
const PART: u64 = 64 << 10;

fn parts_config(dir: &std::path::Path, writer: &str, parallelism: usize) -> EngineConfig {
    let mut config = config(dir, ConflictPolicy::Strict, writer);
    config.download_parallelism = parallelism;
    config.download_part_bytes = PART;
    // Every change is folded into a new snapshot at once: the snapshot is what a download
    // reads, so a write changes it under a download.
    config.compact_after_versions = 1;
    config
}

/// `a` writes through `store`; `b` reads through a [`Watched`] view of it.
struct Setup {
    a: Engine,
    b: Engine,
    watched: Arc<Watched>,
    _dirs: [tempfile::TempDir; 2],
}

async fn setup(store: Arc<dyn Store>, parallelism: usize) -> Setup {
    setup_on(Watched::new(store, false), parallelism).await
}

async fn setup_on(watched: Arc<Watched>, parallelism: usize) -> Setup {
    let store = watched.inner.clone();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = Engine::open(parts_config(dirs[0].path(), "a", parallelism), store)
        .await
        .unwrap();
    let b = Engine::open(
        parts_config(dirs[1].path(), "b", parallelism),
        watched.clone(),
    )
    .await
    .unwrap();
    watched.forget();
    Setup {
        a,
        b,
        watched,
        _dirs: dirs,
    }
}

/// Makes `user`'s database about 1 MiB: 30 rows of 32 KiB; returns its size.
async fn a_megabyte(engine: &Engine, user: &UserId) -> u64 {
    engine
        .transact(user, |conn| {
            conn.execute("CREATE TABLE IF NOT EXISTS t(v INTEGER, pad BLOB)", [])?;
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30) \
                 INSERT INTO t SELECT i, randomblob(32768) FROM n",
                [],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    engine.status(user).await.unwrap().size_bytes
}

async fn rows(engine: &Engine, user: &UserId) -> i64 {
    engine
        .transact(user, |conn| {
            conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        })
        .await
        .unwrap()
        .value
}

/// The parts asked for after the first `GET`: every byte once, in parts of [`PART`].
fn assert_parts_cover(ranges: &[Range<u64>], size: u64) {
    let mut sorted = ranges.to_vec();
    sorted.sort_by_key(|range| range.start);
    assert_eq!(sorted[0], 0..PART, "the first GET asks for the first part");
    let mut next = 0;
    for range in &sorted {
        assert_eq!(range.start, next, "{sorted:?}");
        next = range.end.min(size);
    }
    assert_eq!(next, size);
    assert_eq!(sorted.len() as u64, size.div_ceil(PART));
}

/// A database of 16 parts downloads through `store` 4 parts at a time, whole and checked.
async fn downloads_in_parts(store: Arc<dyn Store>) {
    let Setup { a, b, watched, .. } = setup(store, 4).await;
    let alice = user("alice");
    let size = a_megabyte(&a, &alice).await;
    assert!(size > 12 * PART, "{size}");
    assert_eq!(rows(&b, &alice).await, 30);
    assert_eq!(b.metrics().bytes_downloaded.load(Ordering::Relaxed), size);
    assert_parts_cover(&watched.ranges(), size);
    assert_eq!(watched.most_at_once.load(Ordering::SeqCst), 4);
    b.settle().await;
    assert!(cellar_engine::is_intact(&b.layout().database_path(&alice)));
    // Both copies hold the same rows, row for row.
    let digest = |engine: &Engine| {
        let engine = engine.clone();
        let alice = alice.clone();
        async move {
            engine
                .transact(&alice, |conn| {
                    conn.query_row("SELECT sum(v), sum(length(pad)), group_concat(hex(substr(pad, 1, 8))) FROM t", [], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
                    })
                })
                .await
                .unwrap()
                .value
        }
    };
    assert_eq!(digest(&a).await, digest(&b).await);
}

#[tokio::test]
async fn a_download_comes_in_parts_from_the_memory_store() {
    downloads_in_parts(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn a_download_comes_in_parts_from_the_folder_store() {
    let bucket = tempfile::tempdir().unwrap();
    downloads_in_parts(Arc::new(LocalStore::new(bucket.path()))).await;
}

#[tokio::test]
async fn a_download_comes_in_parts_from_seaweedfs() {
    let server = S3Server::start(S3Kind::SeaweedFs).await.unwrap();
    downloads_in_parts(Arc::new(S3Store::from_object_store(server.object_store()))).await;
}

#[tokio::test]
async fn a_download_comes_in_parts_from_moto() {
    let server = S3Server::start(S3Kind::Moto).await.unwrap();
    downloads_in_parts(Arc::new(S3Store::from_object_store(server.object_store()))).await;
}

/// `b` downloads what `a` wrote with no ranged read at all.
async fn downloads_whole(Setup { a, b, watched, .. }: Setup) {
    let alice = user("alice");
    let size = a_megabyte(&a, &alice).await;
    assert_eq!(rows(&b, &alice).await, 30);
    assert_eq!(b.metrics().bytes_downloaded.load(Ordering::Relaxed), size);
    assert!(watched.ranges().is_empty(), "{:?}", watched.ranges());
}

#[tokio::test]
async fn with_parallelism_one_a_download_is_one_get() {
    downloads_whole(setup(Arc::new(MemoryStore::new()), 1).await).await;
}

/// A store that does not serve ranges (the start-up probe finds out) gets whole downloads.
#[tokio::test]
async fn a_store_without_ranges_gets_one_get_per_download() {
    let watched = Watched::new(Arc::new(MemoryStore::new()), true);
    let setup = setup_on(watched, 4).await;
    assert!(setup.a.capabilities().reads_ranges);
    assert!(!setup.b.capabilities().reads_ranges);
    assert!(setup.b.capabilities().detects_conflicts());
    downloads_whole(setup).await;
}

/// Another instance writes (and folds its log into a new snapshot) before EVERY later
/// part: each is refused (`If-Match`), and the download is made again as one whole `GET`,
/// which is always of one version. Before, the
/// download started over in parts until it gave up (a race run in CI hit that).
#[tokio::test]
async fn an_object_that_changes_between_parts_is_downloaded_again_whole() {
    let Setup { a, b, watched, .. } = setup(Arc::new(MemoryStore::new()), 4).await;
    let alice = user("alice");
    a_megabyte(&a, &alice).await;
    let writer = a.clone();
    let writes_for = alice.clone();
    *watched.before_later_parts.lock().unwrap() = Some(Hook(Box::new(move || {
        let (writer, user) = (writer.clone(), writes_for.clone());
        Box::pin(async move {
            writer
                .transact(&user, |conn| {
                    conn.execute("INSERT INTO t VALUES (31, zeroblob(10))", [])
                })
                .await
                .unwrap();
            writer.settle().await; // the compaction
        })
    })));
    let read = rows(&b, &alice).await;
    *watched.before_later_parts.lock().unwrap() = None;
    assert!(
        read > 30,
        "the first part's version was installed: {read} rows"
    );
    assert_eq!(read, rows(&a, &alice).await);
    assert_eq!(
        b.status(&alice).await.unwrap().version,
        a.status(&alice).await.unwrap().version
    );
    assert_eq!(
        watched.calls().get("get_stream"),
        Some(&1),
        "{:?}",
        watched.calls()
    );
    b.settle().await;
    assert!(cellar_engine::is_intact(&b.layout().database_path(&alice)));
}

#[tokio::test]
async fn a_part_cut_off_half_way_is_refused_and_the_next_request_downloads_again() {
    let faulty = Arc::new(FaultyStore::new(MemoryStore::new()));
    let Setup { a, b, .. } = setup(faulty.clone(), 4).await;
    let alice = user("alice");
    a_megabyte(&a, &alice).await;
    // The first GET and the log's probe go through; the first ranged part after them breaks.
    faulty.inject(Operation::Get, Fault::Latency(Duration::ZERO));
    faulty.inject(Operation::Get, Fault::Latency(Duration::ZERO));
    faulty.inject(Operation::Get, Fault::CutOffBody);
    let err = b.status(&alice).await.unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err:?}");
    assert!(err.to_string().contains("middle of the body"), "{err}");
    assert!(!b.layout().download_temp_path(&alice).exists());
    assert!(!b.layout().database_path(&alice).exists());
    assert_eq!(rows(&b, &alice).await, 30);
}

/// Every store reads ranges the same way: clamped to the object, `info.size` the whole
/// object's, `If-None-Match` answered as by `get`, `If-Match` refused when it changed.
async fn range_contract(store: &dyn Store) {
    let key = "p/ranges/database.sqlite";
    assert!(matches!(
        store.get_range(key, None, None, 0..4).await.unwrap(),
        Fetched::NotFound
    ));
    let etag = store
        .put(
            key,
            Bytes::from_static(b"0123456789"),
            RawMetadata::new(),
            PutCondition::Create,
        )
        .await
        .unwrap();
    let read = |if_none_match: Option<ETag>, if_match: Option<ETag>, range: Range<u64>| async move {
        match store
            .get_range(key, if_none_match.as_ref(), if_match.as_ref(), range)
            .await?
        {
            Fetched::Found { info, body } => {
                let pieces: Vec<Bytes> = body.map(Result::unwrap).collect().await;
                Ok(Some((info.size, pieces.concat())))
            }
            Fetched::NotModified => Ok(None),
            Fetched::NotFound => panic!("the object exists"),
        }
    };
    assert_eq!(
        read(None, None, 2..5).await.unwrap(),
        Some((10, b"234".to_vec()))
    );
    assert_eq!(
        read(None, None, 8..100).await.unwrap(),
        Some((10, b"89".to_vec()))
    );
    assert_eq!(read(Some(etag.clone()), None, 0..4).await.unwrap(), None);
    assert_eq!(
        read(None, Some(etag.clone()), 0..4).await.unwrap(),
        Some((10, b"0123".to_vec()))
    );
    let other = ETag("\"0123456789abcdef0123456789abcdef\"".to_owned());
    let refused = read(None, Some(other), 0..4).await;
    assert!(
        matches!(refused, Err(StoreError::PreconditionFailed { .. })),
        "{refused:?}"
    );
    store.delete(key).await.unwrap();
    // S3 answers 416 to any range of an empty object; the store reads it whole instead.
    store
        .put(key, Bytes::new(), RawMetadata::new(), PutCondition::Create)
        .await
        .unwrap();
    assert_eq!(read(None, None, 0..4).await.unwrap(), Some((0, Vec::new())));
    store.delete(key).await.unwrap();
}

#[tokio::test]
async fn every_store_reads_ranges_alike() {
    range_contract(&MemoryStore::new()).await;
    let bucket = tempfile::tempdir().unwrap();
    range_contract(&LocalStore::new(bucket.path())).await;
    for kind in [S3Kind::SeaweedFs, S3Kind::Moto] {
        let server = S3Server::start(kind).await.unwrap();
        range_contract(&S3Store::from_object_store(server.object_store())).await;
    }
}
