//! Request-path scenarios run on every kind of store: the memory and folder stores in
//! `sync.rs`, SeaweedFS and moto in `s3.rs`.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::Ordering;

use cellar_engine::store::{Fetched, PutCondition, Store};
use cellar_engine::{ConflictPolicy, Version};

use crate::common::*;

/// Two engines with their own folders on `store`, both strict.
async fn two(
    store: &Arc<dyn Store>,
) -> (
    cellar_engine::Engine,
    cellar_engine::Engine,
    [tempfile::TempDir; 2],
) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = engine(store.clone(), dirs[0].path(), ConflictPolicy::Strict, "a").await;
    let b = engine(store.clone(), dirs[1].path(), ConflictPolicy::Strict, "b").await;
    (a, b, dirs)
}

pub async fn second_instance_reads_first_ones_write(store: Arc<dyn Store>, name: &str) {
    let (a, b, _dirs) = two(&store).await;
    let alice = user(name);
    append(&a, &alice, 1).await.unwrap();
    assert_eq!(values(&b, &alice).await, [1]);
    append(&b, &alice, 2).await.unwrap();
    assert_eq!(values(&a, &alice).await, [1, 2]);
    assert_eq!(b.metrics().downloads.load(Ordering::Relaxed), 1);
    assert_eq!(a.metrics().downloads.load(Ordering::Relaxed), 1);
}

/// ABA: S3 ETags are content hashes. If v3 had v1's exact bytes, an instance still at v1
/// would get "not modified", pass If-Match, and upload v2 over v3.
pub async fn restored_content_never_moves_the_version_back(store: Arc<dyn Store>, name: &str) {
    let (a, b, _dirs) = two(&store).await;
    let alice = user(name);
    append(&a, &alice, 1).await.unwrap();
    assert_eq!(values(&b, &alice).await, [1]); // b is at v1 now
    let key = a.layout().database_key(&alice);
    let Fetched::Found {
        info: v1_info,
        body: v1_bytes,
    } = store.get(&key, None).await.unwrap()
    else {
        panic!("v1 missing");
    };
    append(&a, &alice, 2).await.unwrap(); // v2
    let restored = a.push(&alice, v1_bytes.to_vec()).await.unwrap(); // v3, v1's content
    assert_eq!(restored, Version::new(3));
    let v3 = store.head(&key).await.unwrap().unwrap();
    assert_ne!(
        v3.etag, v1_info.etag,
        "the same content uploaded as another version must get another ETag"
    );
    // b, still at v1's ETag, must see v3 and build v4 on it.
    let committed = append(&b, &alice, 4).await.unwrap();
    assert_eq!(committed.version, Version::new(4));
    assert_eq!(values(&a, &alice).await, [1, 4]);
}

pub async fn corrupted_download_is_refused(store: Arc<dyn Store>, name: &str) {
    let (a, b, dirs) = two(&store).await;
    let alice = user(name);
    append(&a, &alice, 1).await.unwrap();
    assert_eq!(values(&b, &alice).await, [1]);
    append(&a, &alice, 2).await.unwrap();
    let key = a.layout().database_key(&alice);
    let Fetched::Found { info, body } = store.get(&key, None).await.unwrap() else {
        panic!("v2 missing");
    };
    let mut flipped = body.to_vec();
    let last = flipped.len() - 10;
    flipped[last] ^= 0xff;
    let mut etag = info.etag.clone();
    let mut replace = async |body: Vec<u8>, metadata| {
        etag = store
            .put(
                &key,
                body.into(),
                metadata,
                PutCondition::Match(etag.clone()),
            )
            .await
            .unwrap();
    };
    let b_local = dirs[1].path().join(alice.as_str()).join("database.sqlite");
    let only_v1_installed = || {
        let conn = rusqlite::Connection::open(&b_local).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1, "only v1 was installed");
    };

    // A flipped byte, metadata kept: the CRC checked on arrival refuses it.
    replace(flipped.clone(), info.metadata.clone()).await;
    let err = b.status(&alice).await.unwrap_err();
    assert!(err.to_string().contains("cellar-crc64nvme"), "{err}");
    only_v1_installed();

    // An object from before the CRC: SHA-256 is checked on arrival instead.
    let mut without_crc = info.metadata.clone();
    without_crc.remove("cellar-crc64nvme");
    replace(flipped, without_crc).await;
    let err = b.status(&alice).await.unwrap_err();
    assert!(err.to_string().contains("cellar-sha256"), "{err}");
    only_v1_installed();

    // The right bytes and CRC, a wrong SHA-256: the download answers requests (checked by
    // CRC) while SHA-256 runs, but is never installed; downloaded again, it is checked in
    // full before it answers anything.
    let mut wrong_sha = info.metadata.clone();
    wrong_sha.insert("cellar-sha256".into(), "00".repeat(32));
    replace(body.to_vec(), wrong_sha).await;
    assert_eq!(b.status(&alice).await.unwrap().version, Version::new(2));
    b.settle().await;
    let err = b.status(&alice).await.unwrap_err();
    assert!(err.to_string().contains("cellar-sha256"), "{err}");
    only_v1_installed();
}

/// Something other than Cellar left an empty object at a user's key: the request is
/// refused naming the metadata it lacks (S3 answers 416 to a range of an empty object;
/// the version check's ranged `GET` must not report that as the store being down), and
/// the object is left alone.
pub async fn foreign_empty_object_is_refused_by_name(store: Arc<dyn Store>, name: &str) {
    let (a, _b, _dirs) = two(&store).await;
    let alice = user(name);
    let key = a.layout().database_key(&alice);
    store
        .put(
            &key,
            bytes::Bytes::new(),
            Default::default(),
            PutCondition::Create,
        )
        .await
        .unwrap();
    let err = append(&a, &alice, 1).await.unwrap_err();
    assert!(
        matches!(err, cellar_engine::Error::Inconsistent { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("metadata key cellar-version is missing"),
        "{err}"
    );
    assert_eq!(store.head(&key).await.unwrap().unwrap().size, 0);
}
