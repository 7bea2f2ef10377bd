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
    // b read the snapshot once; a follows the log (b's change) without downloading.
    assert_eq!(b.metrics().downloads.load(Ordering::Relaxed), 1);
    assert_eq!(a.metrics().downloads.load(Ordering::Relaxed), 0);
}

/// ABA: S3 ETags are content hashes. If v3 had v1's exact bytes, an instance still at v1
/// must not take it for v1. Every version after the first is a key of its own, created
/// once (`docs/delta-sync.md`), so the same content again is still a new key.
pub async fn restored_content_never_moves_the_version_back(store: Arc<dyn Store>, name: &str) {
    let (a, b, _dirs) = two(&store).await;
    let alice = user(name);
    append(&a, &alice, 1).await.unwrap();
    assert_eq!(values(&b, &alice).await, [1]); // b is at v1 now
    let key = a.layout().database_key(&alice);
    let Fetched::Found { body: v1_bytes, .. } = store.get(&key, None).await.unwrap() else {
        panic!("v1 missing");
    };
    append(&a, &alice, 2).await.unwrap(); // v2
    let restored = a.push(&alice, v1_bytes.to_vec()).await.unwrap(); // v3, v1's content
    assert_eq!(restored, Version::new(3));
    for version in [1, 2] {
        let change = a.layout().change_key(&alice, Version::new(version));
        assert!(store.head(&change).await.unwrap().is_some(), "{change}");
    }
    // b, still at v1, must see v2 and v3 and build v4 on them.
    let committed = append(&b, &alice, 4).await.unwrap();
    assert_eq!(committed.version, Version::new(4));
    assert_eq!(values(&a, &alice).await, [1, 4]);
}

/// A snapshot whose bytes do not match its checksums is never installed, and a change of
/// the log whose bytes do not match its `cellar-sha256` is never applied.
pub async fn corrupted_download_is_refused(store: Arc<dyn Store>, name: &str) {
    let (a, b, dirs) = two(&store).await;
    let alice = user(name);
    append(&a, &alice, 1).await.unwrap();
    append(&a, &alice, 2).await.unwrap();
    let change = a.layout().change_key(&alice, Version::new(1));
    let Fetched::Found {
        info: change_info,
        body: change_body,
    } = store.get(&change, None).await.unwrap()
    else {
        panic!("the change to v2 missing");
    };
    store.delete(&change).await.unwrap();
    let mut flipped_change = change_body.to_vec();
    flipped_change[5] ^= 0xff;
    store
        .put(
            &change,
            flipped_change.into(),
            change_info.metadata.clone(),
            PutCondition::Create,
        )
        .await
        .unwrap();
    let err = b.status(&alice).await.unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    store.delete(&change).await.unwrap();
    store
        .put(
            &change,
            change_body,
            change_info.metadata,
            PutCondition::Create,
        )
        .await
        .unwrap();
    assert_eq!(values(&b, &alice).await, [1, 2]);

    // The snapshot, on a cold start: a user with one version, corrupted in the bucket.
    let bob = user(&format!("{name}-snapshot"));
    append(&a, &bob, 1).await.unwrap();
    let key = a.layout().database_key(&bob);
    let Fetched::Found { info, body } = store.get(&key, None).await.unwrap() else {
        panic!("v1 missing");
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
    let b_local = dirs[1].path().join(bob.as_str()).join("database.sqlite");
    let nothing_installed = || assert!(!b_local.exists(), "nothing was installed");

    // A flipped byte, metadata kept: the CRC checked on arrival refuses it.
    replace(flipped.clone(), info.metadata.clone()).await;
    let err = b.status(&bob).await.unwrap_err();
    assert!(err.to_string().contains("cellar-crc64nvme"), "{err}");
    nothing_installed();

    // An object from before the CRC: SHA-256 is checked on arrival instead.
    let mut without_crc = info.metadata.clone();
    without_crc.remove("cellar-crc64nvme");
    replace(flipped, without_crc).await;
    let err = b.status(&bob).await.unwrap_err();
    assert!(err.to_string().contains("cellar-sha256"), "{err}");
    nothing_installed();

    // The right bytes and CRC, a wrong SHA-256: the download answers requests (checked by
    // CRC) while SHA-256 runs, but is never installed; downloaded again, it is checked in
    // full before it answers anything.
    let mut wrong_sha = info.metadata.clone();
    wrong_sha.insert("cellar-sha256".into(), "00".repeat(32));
    replace(body.to_vec(), wrong_sha).await;
    assert_eq!(b.status(&bob).await.unwrap().version, Version::new(1));
    b.settle().await;
    let err = b.status(&bob).await.unwrap_err();
    assert!(err.to_string().contains("cellar-sha256"), "{err}");
    nothing_installed();
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
