//! [`Remote`]: the bucket as the engine sees it, in domain terms. The only module that
//! names a user's objects in requests, encodes and decodes their metadata, and calls the
//! [`Store`]. It also owns the commit point (`docs/delta-sync.md`): a user's first version
//! is in the bucket once `database.sqlite` was created ([`Remote::put`] under
//! [`commit_condition`]); every later one once the log object of the change after its
//! base was created ([`Remote::create_change`]). Nothing is ever overwritten but the
//! snapshot, by compaction, under `If-Match`.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::checksum::sha256_hex;
use crate::error::{Error, Result, StoreError};
use crate::layout::Layout;
use crate::metadata::{ChangeMetadata, ENCODING, SnapshotMetadata, ZSTD};
use crate::snapshot::Snapshot;
use crate::store::{ByteStream, ETag, Fetched, Listed, PutCondition, Store};
use crate::user::UserId;
use crate::version::Version;

/// A user's database in the bucket, as it stands.
#[derive(Clone, Debug)]
pub(crate) struct RemoteHead {
    /// Its version (zero when the user has none).
    pub version: Version,
    /// The instance that uploaded it.
    pub writer: String,
    /// Its ETag, `None` when there is no object.
    pub etag: Option<ETag>,
    /// Its `cellar-sha256`, `None` when there is no object.
    pub sha256: Option<String>,
}

impl RemoteHead {
    /// The head of a user with nothing in the bucket.
    fn missing() -> Self {
        Self {
            version: Version::ZERO,
            writer: String::new(),
            etag: None,
            sha256: None,
        }
    }
}

/// A newer database on its way in: what the store said of it, and its first bytes.
pub(crate) struct Incoming {
    /// Its ETag: later parts are read only while the object keeps it.
    pub etag: ETag,
    /// Its size, as the store gave it.
    pub size: u64,
    /// Its metadata, decoded.
    pub metadata: SnapshotMetadata,
    /// The bytes asked for, arriving.
    pub body: ByteStream,
}

/// The answer to the version check's read.
pub(crate) enum Fetch {
    /// The object still has the ETag the caller named.
    NotModified,
    /// The user has no object.
    Missing,
    /// The object, current.
    Found(Incoming),
}

/// A change read from the log, its bytes checked against its `cellar-sha256`.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    /// What it says about itself.
    pub metadata: ChangeMetadata,
    /// The encoded change (a zstd frame, see `delta`).
    pub bytes: Bytes,
}

/// An object of a user's history as a listing tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Listing {
    /// A change: the version it applies after; a kept snapshot: its version.
    pub version: Version,
    /// Its size in the bucket.
    pub size: u64,
    /// When it was written.
    pub modified: DateTime<Utc>,
}

impl Listing {
    fn of(version: Version, listed: Listed) -> Self {
        Self {
            version,
            size: listed.size,
            modified: listed.modified,
        }
    }
}

/// The precondition of a commit on top of the object with `base` (none: the first).
pub(crate) fn commit_condition(base: Option<ETag>) -> PutCondition {
    base.map_or(PutCondition::Create, PutCondition::Match)
}

/// The bucket, typed: see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct Remote {
    store: Arc<dyn Store>,
    layout: Layout,
}

impl Remote {
    /// The bucket behind `store`, with the keys of `layout`.
    pub fn new(store: Arc<dyn Store>, layout: Layout) -> Self {
        Self { store, layout }
    }

    /// The store itself (for the start-up probe and the operator's tools).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The head of `user`'s database; a user with none has version zero.
    pub async fn head(&self, user: &UserId) -> Result<RemoteHead> {
        let Some((etag, _, metadata)) = self.describe(user).await? else {
            return Ok(RemoteHead::missing());
        };
        Ok(RemoteHead {
            version: metadata.version,
            writer: metadata.writer,
            etag: Some(etag),
            sha256: Some(metadata.sha256),
        })
    }

    /// `user`'s object's ETag, size and metadata, without its body; `None` if none.
    pub async fn describe(&self, user: &UserId) -> Result<Option<(ETag, u64, SnapshotMetadata)>> {
        let Some(info) = self.store.head(&self.layout.database_key(user)).await? else {
            return Ok(None);
        };
        let metadata = decode(user, &info.metadata)?;
        Ok(Some((info.etag, info.size, metadata)))
    }

    /// The version check's read: only if the object no longer has `if_none_match`; with
    /// `first_part`, only that many bytes of it (the rest comes in [`Remote::part`]s).
    pub async fn fetch(
        &self,
        user: &UserId,
        if_none_match: Option<&ETag>,
        first_part: Option<u64>,
    ) -> Result<Fetch> {
        let key = self.layout.database_key(user);
        let fetched = match first_part {
            Some(part) => {
                self.store
                    .get_range(&key, if_none_match, None, 0..part)
                    .await?
            }
            None => self.store.get_stream(&key, if_none_match).await?,
        };
        Ok(match fetched {
            Fetched::NotModified => Fetch::NotModified,
            Fetched::NotFound => Fetch::Missing,
            Fetched::Found { info, body } => Fetch::Found(Incoming {
                metadata: decode(user, &info.metadata)?,
                etag: info.etag,
                size: info.size,
                body,
            }),
        })
    }

    /// Bytes `range` of `user`'s object, only while it keeps `etag`:
    /// [`StoreError::PreconditionFailed`] once it changed (or went).
    pub async fn part(
        &self,
        user: &UserId,
        etag: &ETag,
        range: Range<u64>,
    ) -> std::result::Result<ByteStream, StoreError> {
        let key = self.layout.database_key(user);
        match self.store.get_range(&key, None, Some(etag), range).await? {
            Fetched::Found { body, .. } => Ok(body),
            Fetched::NotFound | Fetched::NotModified => Err(StoreError::PreconditionFailed { key }),
        }
    }

    /// `user`'s object whole, with its size and decoded metadata; `None` if none.
    pub async fn read(&self, user: &UserId) -> Result<Option<(u64, SnapshotMetadata, Bytes)>> {
        let key = self.layout.database_key(user);
        let Fetched::Found { info, body } = self.store.get(&key, None).await? else {
            return Ok(None);
        };
        let metadata = decode(user, &info.metadata)?;
        Ok(Some((info.size, metadata, body)))
    }

    /// Commits `image` as `user`'s database with `metadata`, only under `condition`: the
    /// commit point. Answers the new ETag.
    pub async fn put(
        &self,
        user: &UserId,
        image: &Snapshot,
        metadata: &SnapshotMetadata,
        condition: PutCondition,
    ) -> std::result::Result<ETag, StoreError> {
        let key = self.layout.database_key(user);
        self.store
            .put(&key, image.body(), metadata.to_raw(), condition)
            .await
    }

    /// The change after version `after` of `user`'s database, if one was committed: the
    /// version check's one round trip (`None`: `after` is the newest version).
    pub async fn next_change(&self, user: &UserId, after: Version) -> Result<Option<Change>> {
        let key = self.layout.change_key(user, after);
        let Fetched::Found { info, body } = self.store.get(&key, None).await? else {
            return Ok(None);
        };
        let metadata =
            ChangeMetadata::from_raw(&info.metadata).map_err(|detail| Error::Inconsistent {
                user: user.clone(),
                detail: format!("the change after version {after}: its metadata: {detail}"),
            })?;
        if sha256_hex(&body) != metadata.sha256 || metadata.base_version != after {
            return Err(Error::Inconsistent {
                user: user.clone(),
                detail: format!(
                    "the change after version {after} does not match its metadata \
                     (checksum or base version)"
                ),
            });
        }
        Ok(Some(Change {
            metadata,
            bytes: body,
        }))
    }

    /// What the change after `after` says about itself, without its bytes, if one was
    /// committed: how a writer whose `PUT` failed tells its own landed try from another's,
    /// and how a last-write-wins overwrite finds the end of the log.
    pub async fn change_head(
        &self,
        user: &UserId,
        after: Version,
    ) -> Result<Option<ChangeMetadata>> {
        let key = self.layout.change_key(user, after);
        let Some(info) = self.store.head(&key).await? else {
            return Ok(None);
        };
        ChangeMetadata::from_raw(&info.metadata)
            .map(Some)
            .map_err(|detail| Error::Inconsistent {
                user: user.clone(),
                detail: format!("the change after version {after}: its metadata: {detail}"),
            })
    }

    /// The last change of the log after version `from` and how many there are, by the
    /// `HEAD`s of its changes (no bodies): where the log ends, for an overwrite and for
    /// an operator's status.
    pub async fn last_change(
        &self,
        user: &UserId,
        from: Version,
    ) -> Result<(Option<ChangeMetadata>, u64)> {
        let (mut last, mut count) = (None::<ChangeMetadata>, 0);
        let mut after = from;
        while let Some(change) = self.change_head(user, after).await? {
            after = change.version;
            count += 1;
            last = Some(change);
        }
        Ok((last, count))
    }

    /// Creates the change after `metadata.base_version`: the commit point of every version
    /// after the first. [`StoreError::PreconditionFailed`]: another writer's came first.
    pub async fn create_change(
        &self,
        user: &UserId,
        bytes: Bytes,
        metadata: &ChangeMetadata,
    ) -> std::result::Result<(), StoreError> {
        let key = self.layout.change_key(user, metadata.base_version);
        self.store
            .put(&key, bytes, metadata.to_raw(), PutCondition::Create)
            .await
            .map(drop)
    }

    /// Replaces `user`'s snapshot with `image` (compaction), only while it still has
    /// `etag`: [`StoreError::PreconditionFailed`] when another instance replaced it first.
    pub async fn replace_snapshot(
        &self,
        user: &UserId,
        image: &Snapshot,
        metadata: &SnapshotMetadata,
        etag: ETag,
    ) -> std::result::Result<ETag, StoreError> {
        self.put(user, image, metadata, PutCondition::Match(etag))
            .await
    }

    /// Deletes the change after `after` (folded into a snapshot, past the grace); deleting
    /// one that is gone is not an error.
    pub async fn delete_change(
        &self,
        user: &UserId,
        after: Version,
    ) -> std::result::Result<(), StoreError> {
        self.store
            .delete(&self.layout.change_key(user, after))
            .await
    }

    /// The changes of `user`'s log as a listing tells them (no bodies, no metadata): the
    /// version each applies after, its size and when it was written; oldest first.
    pub async fn list_changes(&self, user: &UserId) -> Result<Vec<Listing>> {
        let listed = self.store.list(&self.layout.log_prefix(user)).await?;
        let mut changes: Vec<_> = listed
            .into_iter()
            .filter_map(|entry| {
                let base = self.layout.change_base_of_key(user, &entry.key)?;
                Some(Listing::of(base, entry))
            })
            .collect();
        changes.sort_by_key(|listing| listing.version);
        Ok(changes)
    }

    /// The snapshots kept for history (`snapshots/`), by version, oldest first.
    pub async fn list_kept_snapshots(&self, user: &UserId) -> Result<Vec<Listing>> {
        let listed = self
            .store
            .list(&self.layout.kept_snapshots_prefix(user))
            .await?;
        let mut kept: Vec<_> = listed
            .into_iter()
            .filter_map(|entry| {
                let version = self.layout.version_of_kept_snapshot(user, &entry.key)?;
                Some(Listing::of(version, entry))
            })
            .collect();
        kept.sort_by_key(|listing| listing.version);
        Ok(kept)
    }

    /// Keeps `image` (the snapshot at `metadata.version`) for history, compressed; a
    /// snapshot already kept at that version is left as it is (the same version is the
    /// same database).
    pub async fn keep_snapshot(
        &self,
        user: &UserId,
        metadata: &SnapshotMetadata,
        compressed: Bytes,
    ) -> std::result::Result<(), StoreError> {
        let key = self.layout.kept_snapshot_key(user, metadata.version);
        let mut raw = metadata.to_raw();
        raw.insert(ENCODING.to_owned(), ZSTD.to_owned());
        match self
            .store
            .put(&key, compressed, raw, PutCondition::Create)
            .await
        {
            Ok(_) | Err(StoreError::PreconditionFailed { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// The snapshot kept for history at `version`: its metadata (that of the SQLite file)
    /// and its compressed bytes as they arrive; `None` if it is not kept.
    pub async fn open_kept_snapshot(
        &self,
        user: &UserId,
        version: Version,
    ) -> Result<Option<(SnapshotMetadata, ByteStream)>> {
        let key = self.layout.kept_snapshot_key(user, version);
        let Fetched::Found { info, body } = self.store.get_stream(&key, None).await? else {
            return Ok(None);
        };
        Ok(Some((decode(user, &info.metadata)?, body)))
    }

    /// What the snapshot kept at `version` says about itself; `None` if it is not kept.
    pub async fn kept_snapshot_head(
        &self,
        user: &UserId,
        version: Version,
    ) -> Result<Option<SnapshotMetadata>> {
        let key = self.layout.kept_snapshot_key(user, version);
        match self.store.head(&key).await? {
            Some(info) => decode(user, &info.metadata).map(Some),
            None => Ok(None),
        }
    }

    /// Deletes the snapshot kept at `version` (past the retention window).
    pub async fn delete_kept_snapshot(
        &self,
        user: &UserId,
        version: Version,
    ) -> std::result::Result<(), StoreError> {
        self.store
            .delete(&self.layout.kept_snapshot_key(user, version))
            .await
    }

    /// Every user with a database in the bucket, with its object's size.
    pub async fn users(&self) -> Result<Vec<(UserId, u64)>> {
        let listed = self.store.list(&self.layout.users_prefix()).await?;
        Ok(listed
            .into_iter()
            .filter_map(|Listed { key, size, .. }| {
                self.layout.user_of_key(&key).map(|user| (user, size))
            })
            .collect())
    }
}

/// The metadata of `user`'s object, or why it is not Cellar's.
fn decode(user: &UserId, raw: &crate::metadata::RawMetadata) -> Result<SnapshotMetadata> {
    SnapshotMetadata::from_raw(raw).map_err(|detail| Error::Inconsistent {
        user: user.clone(),
        detail: format!("its metadata: {detail}"),
    })
}
