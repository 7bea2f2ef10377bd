//! The start-up probe: does this store really do what Cellar relies on?
//!
//! Some S3-compatible stores silently ignore `If-Match` or `If-None-Match`. Without them
//! conflicts are invisible, so the engine asks once, on a scratch key, and says so loudly.
//! It also asks for a range of the object: downloads come in ranged parts where the store
//! serves them, and whole where it does not.

use bytes::Bytes;
use futures::TryStreamExt;

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
    /// A ranged `GET` with `If-Match` brings exactly the bytes asked for.
    pub reads_ranges: bool,
}

impl StoreCapabilities {
    /// Conflicts are detected reliably on this store.
    pub fn detects_conflicts(&self) -> bool {
        self.refuses_stale_match && self.refuses_create_over_existing
    }

    /// Everything Cellar relies on works, and ranged reads too.
    pub fn all(&self) -> bool {
        self.metadata_round_trips && self.detects_conflicts() && self.reads_ranges
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
    let third = store
        .put(
            key,
            Bytes::from_static(b"probe three"),
            metadata.clone(),
            PutCondition::Match(current),
        )
        .await?;
    let reads_ranges = reads_ranges(store, key, &third).await;
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
        reads_ranges,
    })
}

/// Bytes 6..9 of the object written as `etag` ("thr" of "probe three") by a ranged `GET`
/// with `If-Match`. Any failure counts as "no": the store was answering a moment ago, and a
/// store that cannot serve ranges still serves whole objects.
async fn reads_ranges(store: &dyn Store, key: &str, etag: &ETag) -> bool {
    let read = async {
        match store.get_range(key, None, Some(etag), 6..9).await? {
            Fetched::Found { info, body } => {
                let pieces: Vec<Bytes> = body.try_collect().await?;
                Ok(info.size == 11 && pieces.concat() == b"thr")
            }
            _ => Ok(false),
        }
    };
    read.await.unwrap_or_else(|err: StoreError| {
        tracing::warn!(error = %err, "the object store does not serve ranged reads: downloads come whole");
        false
    })
}

fn refused(outcome: Result<ETag, StoreError>) -> Result<bool, StoreError> {
    match outcome {
        Ok(_) => Ok(false),
        Err(StoreError::PreconditionFailed { .. }) => Ok(true),
        Err(other) => Err(other),
    }
}
