//! The start-up probe: does this store really do what Cellar relies on?
//!
//! Some S3-compatible stores silently ignore `If-Match` or `If-None-Match`. Without them
//! conflicts are invisible, so the engine asks once, on a scratch key, and says so loudly.

use bytes::Bytes;

use super::{ETag, Fetched, PutCondition, Store, StoreError};
use crate::metadata::RawMetadata;

/// What the probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StoreCapabilities {
    /// User metadata written with an object comes back when it is read.
    pub metadata_round_trips: bool,
    /// `If-Match` with a stale ETag is refused.
    pub refuses_stale_match: bool,
    /// `If-None-Match: *` on an existing key is refused.
    pub refuses_create_over_existing: bool,
}

impl StoreCapabilities {
    /// Conflicts are detected reliably on this store.
    pub fn detects_conflicts(&self) -> bool {
        self.refuses_stale_match && self.refuses_create_over_existing
    }

    /// Everything Cellar relies on works.
    pub fn all(&self) -> bool {
        self.metadata_round_trips && self.detects_conflicts()
    }
}

/// Probes `store` on `key`, which must belong to nobody; deletes it afterwards.
pub async fn probe(store: &dyn Store, key: &str) -> Result<StoreCapabilities, StoreError> {
    let result = run(store, key).await;
    let cleanup = store.delete(key).await;
    let capabilities = result?;
    cleanup?;
    Ok(capabilities)
}

async fn run(store: &dyn Store, key: &str) -> Result<StoreCapabilities, StoreError> {
    let metadata = RawMetadata::from([("cellar-probe".to_owned(), "1".to_owned())]);
    let first = store
        .put(
            key,
            Bytes::from_static(b"probe one"),
            metadata.clone(),
            PutCondition::Create,
        )
        .await?;
    let metadata_round_trips = match store.get(key, None).await? {
        Fetched::Found { info, .. } => {
            info.metadata.get("cellar-probe").map(String::as_str) == Some("1")
        }
        _ => false,
    };
    let refuses_create_over_existing = refused(
        store
            .put(
                key,
                Bytes::from_static(b"probe two"),
                metadata.clone(),
                PutCondition::Create,
            )
            .await,
    )?;
    let current = store
        .head(key)
        .await?
        .map(|info| info.etag)
        .unwrap_or_else(|| first.clone());
    store
        .put(
            key,
            Bytes::from_static(b"probe three"),
            metadata.clone(),
            PutCondition::Match(current),
        )
        .await?;
    // `first` is stale now: the object was replaced at least once since.
    let refuses_stale_match = refused(
        store
            .put(
                key,
                Bytes::from_static(b"probe four"),
                metadata,
                PutCondition::Match(first),
            )
            .await,
    )?;
    Ok(StoreCapabilities {
        metadata_round_trips,
        refuses_stale_match,
        refuses_create_over_existing,
    })
}

fn refused(outcome: Result<ETag, StoreError>) -> Result<bool, StoreError> {
    match outcome {
        Ok(_) => Ok(false),
        Err(StoreError::PreconditionFailed { .. }) => Ok(true),
        Err(other) => Err(other),
    }
}
