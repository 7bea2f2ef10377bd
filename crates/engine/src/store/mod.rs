//! The remote side: one narrow trait over object storage, and its implementations.
//!
//! The engine needs five things of a bucket: read an object with its metadata (optionally
//! only if it changed, optionally as it arrives), read just the metadata, write
//! conditionally, list, delete.
//! Conditional writes are what make conflicts visible (DESIGN §3): `If-None-Match: *`
//! for a user's first upload, `If-Match: <etag>` afterwards.
//!
//! Two wrappers go around any store: [`DeadlineStore`] gives every call a deadline (a
//! store that stops answering fails like one that refuses), [`FaultyStore`] injects
//! faults on purpose.

mod deadline;
mod faulty;
mod local;
mod memory;
mod probe;
mod s3;

use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;

pub use deadline::{DEFAULT_DEADLINE, DeadlineStore};
pub use faulty::{Fault, FaultRates, FaultyStore, Operation};
pub use local::LocalStore;
pub use memory::MemoryStore;
pub use probe::{StoreCapabilities, probe};
pub use s3::{S3Settings, S3Store};

pub use crate::error::StoreError;
use crate::metadata::RawMetadata;

/// An object's entity tag, as the store returned it (quotes included, if any).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ETag(pub String);

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the store knows about an object, without its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The object's current ETag.
    pub etag: ETag,
    /// Body size in bytes.
    pub size: u64,
    /// User metadata (`x-amz-meta-*` without the prefix).
    pub metadata: RawMetadata,
}

/// A body arriving piece by piece.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// The answer to a (conditional) read; the body whole (`Bytes`) or arriving ([`ByteStream`]).
#[derive(Clone, Debug)]
pub enum Fetched<B = Bytes> {
    /// No object at that key.
    NotFound,
    /// The object still has the ETag the caller named.
    NotModified,
    /// The object, current.
    Found {
        /// Its ETag and metadata.
        info: ObjectInfo,
        /// Its bytes.
        body: B,
    },
}

impl<B> Fetched<B> {
    /// The same answer with its body passed through `f`.
    pub fn map_body<C>(self, f: impl FnOnce(B) -> C) -> Fetched<C> {
        match self {
            Fetched::NotFound => Fetched::NotFound,
            Fetched::NotModified => Fetched::NotModified,
            Fetched::Found { info, body } => Fetched::Found {
                info,
                body: f(body),
            },
        }
    }
}

impl Fetched {
    /// The same answer with the body as a stream of one piece.
    pub fn into_stream(self) -> Fetched<ByteStream> {
        self.map_body(|body| futures::stream::once(async { Ok(body) }).boxed())
    }
}

/// The precondition of every write: Cellar never overwrites blindly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutCondition {
    /// Only if no object exists (`If-None-Match: *`).
    Create,
    /// Only if the object still has this ETag (`If-Match`).
    Match(ETag),
}

/// One object found by [`Store::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was written, as the store tells it (history's times come from here, so
    /// that listing versions needs no request per version).
    pub modified: DateTime<Utc>,
}

/// The narrow interface the engine needs of an object store.
///
/// Implementations must make [`Store::put`] atomic with its precondition: of two racing
/// writers naming the same ETag, at most one succeeds.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Reads an object and its metadata; with `if_none_match`, answers
    /// [`Fetched::NotModified`] when the object still has that ETag (one round trip).
    async fn get(&self, key: &str, if_none_match: Option<&ETag>) -> Result<Fetched, StoreError>;

    /// Like [`Store::get`], with the body as it arrives, so that a large download can be
    /// written to disk while it comes in instead of being held whole. Stores that read a
    /// body whole anyway keep this default.
    async fn get_stream(
        &self,
        key: &str,
        if_none_match: Option<&ETag>,
    ) -> Result<Fetched<ByteStream>, StoreError> {
        Ok(self.get(key, if_none_match).await?.into_stream())
    }

    /// Reads the bytes of `range` of an object (clamped to its size; `info.size` is still
    /// the whole object's), so that a large download can come in parts side by side. With
    /// `if_none_match` it answers like [`Store::get`]; with `if_match` it refuses with
    /// [`StoreError::PreconditionFailed`] if the object changed, so that parts fetched
    /// apart all belong to the same object. This default reads the whole object.
    async fn get_range(
        &self,
        key: &str,
        if_none_match: Option<&ETag>,
        if_match: Option<&ETag>,
        range: Range<u64>,
    ) -> Result<Fetched<ByteStream>, StoreError> {
        Ok(match self.get(key, if_none_match).await? {
            Fetched::Found { info, .. } if if_match.is_some_and(|etag| *etag != info.etag) => {
                return Err(StoreError::PreconditionFailed {
                    key: key.to_owned(),
                });
            }
            Fetched::Found { info, body } => {
                let end = range.end.min(body.len() as u64);
                let start = range.start.min(end);
                Fetched::Found {
                    info,
                    body: body.slice(start as usize..end as usize),
                }
                .into_stream()
            }
            other => other.into_stream(),
        })
    }

    /// Reads an object's ETag and metadata, or `None` if it does not exist.
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError>;

    /// Writes an object with metadata if `condition` holds; returns the new ETag.
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        metadata: RawMetadata,
        condition: PutCondition,
    ) -> Result<ETag, StoreError>;

    /// Lists the objects under `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError>;

    /// Deletes an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
}

/// A shared store is a store (tests keep a handle on the store they give the engine).
#[async_trait]
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    async fn get(&self, key: &str, if_none_match: Option<&ETag>) -> Result<Fetched, StoreError> {
        (**self).get(key, if_none_match).await
    }
    async fn get_stream(
        &self,
        key: &str,
        if_none_match: Option<&ETag>,
    ) -> Result<Fetched<ByteStream>, StoreError> {
        (**self).get_stream(key, if_none_match).await
    }
    async fn get_range(
        &self,
        key: &str,
        if_none_match: Option<&ETag>,
        if_match: Option<&ETag>,
        range: Range<u64>,
    ) -> Result<Fetched<ByteStream>, StoreError> {
        (**self)
            .get_range(key, if_none_match, if_match, range)
            .await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        (**self).head(key).await
    }
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        metadata: RawMetadata,
        condition: PutCondition,
    ) -> Result<ETag, StoreError> {
        (**self).put(key, body, metadata, condition).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        (**self).list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        (**self).delete(key).await
    }
}

/// Checks a write's precondition against the object's current ETag, for the stores
/// that implement compare-and-swap themselves (memory, local folder).
fn check_condition(
    key: &str,
    current: Option<&ETag>,
    condition: &PutCondition,
) -> Result<(), StoreError> {
    let holds = match (condition, current) {
        (PutCondition::Create, None) => true,
        (PutCondition::Match(expected), Some(current)) => expected == current,
        _ => false,
    };
    if holds {
        Ok(())
    } else {
        Err(StoreError::PreconditionFailed {
            key: key.to_owned(),
        })
    }
}

/// A content-derived ETag, as S3-compatible stores make them: identical bytes give an
/// identical ETag. The memory and folder stores use it so that they share S3's ABA
/// hazard and the engine's defence against it is exercised everywhere.
fn content_etag(body: &[u8]) -> ETag {
    use sha2::{Digest, Sha256};
    ETag(hex::encode(&Sha256::digest(body)[..16]))
}

#[cfg(test)]
mod tests;
