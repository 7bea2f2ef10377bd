//! Contract tests every store must pass; run here on the memory and folder stores and in
//! `tests/s3_store.rs` on real S3-compatible servers.

use bytes::Bytes;

use super::*;

/// Runs the store contract against `store`, using keys under `prefix`.
pub(crate) async fn contract(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}/u/database.sqlite");
    let meta = RawMetadata::from([("cellar-version".to_owned(), "1".to_owned())]);
    assert!(matches!(
        store.get(&key, None).await.unwrap(),
        Fetched::NotFound
    ));
    assert_eq!(store.head(&key).await.unwrap(), None);

    let first = store
        .put(
            &key,
            Bytes::from_static(b"v1"),
            meta.clone(),
            PutCondition::Create,
        )
        .await
        .unwrap();
    let refused = store
        .put(
            &key,
            Bytes::from_static(b"v1b"),
            meta.clone(),
            PutCondition::Create,
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::PreconditionFailed { .. })),
        "{refused:?}"
    );

    let Fetched::Found { info, body } = store.get(&key, None).await.unwrap() else {
        panic!("object should exist");
    };
    assert_eq!((&body[..], &info.etag, info.size), (&b"v1"[..], &first, 2));
    assert_eq!(
        info.metadata.get("cellar-version").map(String::as_str),
        Some("1")
    );
    assert!(matches!(
        store.get(&key, Some(&first)).await.unwrap(),
        Fetched::NotModified
    ));

    let second = store
        .put(
            &key,
            Bytes::from_static(b"v2"),
            meta.clone(),
            PutCondition::Match(first.clone()),
        )
        .await
        .unwrap();
    assert_ne!(first, second);
    let stale = store
        .put(
            &key,
            Bytes::from_static(b"v3"),
            meta,
            PutCondition::Match(first),
        )
        .await;
    assert!(
        matches!(stale, Err(StoreError::PreconditionFailed { .. })),
        "{stale:?}"
    );
    assert_eq!(store.head(&key).await.unwrap().unwrap().etag, second);

    let listed = store.list(&format!("{prefix}/")).await.unwrap();
    let keys: Vec<_> = listed.iter().map(|l| (l.key.as_str(), l.size)).collect();
    assert_eq!(keys, vec![(key.as_str(), 2)]);
    let age = chrono::Utc::now() - listed[0].modified;
    assert!(
        age >= chrono::Duration::seconds(-5) && age < chrono::Duration::minutes(5),
        "an object written now was listed as written {age} ago"
    );
    store.delete(&key).await.unwrap();
    store.delete(&key).await.unwrap();
    assert_eq!(store.head(&key).await.unwrap(), None);
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    contract(&MemoryStore::new(), "p").await;
}

#[tokio::test]
async fn local_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(&LocalStore::new(dir.path()), "cellar-users").await;
}

#[tokio::test]
async fn probe_finds_memory_and_local_stores_fully_capable() {
    let dir = tempfile::tempdir().unwrap();
    for store in [
        &MemoryStore::new() as &dyn Store,
        &LocalStore::new(dir.path()),
    ] {
        let found = probe(store, "p/.cellar-probe/x").await.unwrap();
        assert!(found.all(), "{found:?}");
        assert_eq!(store.head("p/.cellar-probe/x").await.unwrap(), None);
    }
}

#[tokio::test]
async fn local_store_compare_and_swap_has_one_winner_across_racing_writers() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(LocalStore::new(dir.path()));
    let base = store
        .put(
            "k",
            Bytes::from_static(b"base"),
            RawMetadata::new(),
            PutCondition::Create,
        )
        .await
        .unwrap();
    let racers = (0..16).map(|i| {
        let store = store.clone();
        let base = base.clone();
        tokio::spawn(async move {
            store
                .put(
                    "k",
                    Bytes::from(format!("writer {i}")),
                    RawMetadata::new(),
                    PutCondition::Match(base),
                )
                .await
        })
    });
    let outcomes = futures::future::join_all(racers).await;
    let winners = outcomes
        .into_iter()
        .filter(|o| matches!(o, Ok(Ok(_))))
        .count();
    assert_eq!(winners, 1);
}
