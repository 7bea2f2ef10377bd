//! Operator actions on the bucket (the CLI's `users`, `status`, `pull`, `push`, `verify`).
//!
//! The reading ones need nothing but the store: [`BucketReader`] opens no engine, so it
//! works with read-only keys (an engine's start-up probe writes). `push` writes, and goes
//! through the engine: the same user lock and the same checks as requests.

use std::sync::Arc;

use bytes::Bytes;

use chrono::{DateTime, Utc};

use crate::checksum::check_body;
use crate::context::blocking;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::history::apply_changes;
use crate::layout::Layout;
use crate::metadata::SnapshotMetadata;
use crate::remote::Remote;
use crate::snapshot::looks_like_sqlite;
use crate::store::{ETag, Store};
use crate::user::UserId;
use crate::version::Version;

/// A user's database in the bucket: the snapshot and the log after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteDatabase {
    /// Whose database.
    pub user: UserId,
    /// The snapshot's ETag.
    pub etag: ETag,
    /// What the snapshot says about itself.
    pub snapshot: SnapshotMetadata,
    /// The newest version: the snapshot's, or that of the last change after it.
    pub version: Version,
    /// Who wrote the newest version.
    pub writer: String,
    /// When the newest version was written.
    pub updated_at: DateTime<Utc>,
    /// How many changes the log holds after the snapshot.
    pub changes: u64,
}

/// What [`BucketReader::verify`] found about one user's object.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Verification {
    /// Whose database.
    pub user_id: String,
    /// The version checked.
    pub version: Version,
    /// Size in bytes.
    pub size_bytes: u64,
    /// The body hashes to its `cellar-sha256`.
    pub checksum_ok: bool,
    /// `PRAGMA integrity_check` answered `ok`.
    pub integrity_ok: bool,
    /// What was wrong, if anything.
    pub problems: Vec<String>,
}

impl Verification {
    /// True when every check passed.
    pub fn ok(&self) -> bool {
        self.checksum_ok && self.integrity_ok
    }
}

/// The bucket as an operator reads it: its users, their objects, checked.
#[derive(Clone, Debug)]
pub struct BucketReader {
    remote: Remote,
}

impl BucketReader {
    /// Reads `store`, with the keys of `layout` (only its prefix matters).
    pub fn new(store: Arc<dyn Store>, layout: Layout) -> Self {
        Self {
            remote: Remote::new(store, layout),
        }
    }

    /// The bucket, typed (for history's reads).
    pub(crate) fn remote(&self) -> &Remote {
        &self.remote
    }

    /// Every user with a database in the bucket, with its object size.
    pub async fn list_users(&self) -> Result<Vec<(UserId, u64)>> {
        self.remote.users().await
    }

    /// The bucket's view of `user`, or `None` if the user has no object: the snapshot's
    /// metadata, then the log after it, by the `HEAD`s of its changes.
    pub async fn remote_status(&self, user: &UserId) -> Result<Option<RemoteDatabase>> {
        let Some((etag, _, snapshot)) = self.remote.describe(user).await? else {
            return Ok(None);
        };
        let (last, changes) = self.remote.last_change(user, snapshot.version).await?;
        let (version, writer, updated_at) = match last {
            Some(change) => (change.version, change.writer, change.updated_at),
            None => (
                snapshot.version,
                snapshot.writer.clone(),
                snapshot.updated_at,
            ),
        };
        Ok(Some(RemoteDatabase {
            user: user.clone(),
            etag,
            snapshot,
            version,
            writer,
            updated_at,
            changes,
        }))
    }

    /// Downloads `user`'s newest database: the snapshot, checked against its checksum,
    /// with every change of the log after it applied. Answers its version and bytes.
    pub async fn download(&self, user: &UserId) -> Result<Option<(Version, Bytes)>> {
        let Some((_, metadata, body)) = self.remote.read(user).await? else {
            return Ok(None);
        };
        if let Err(mismatch) = check_body(&metadata, &body) {
            return Err(Error::Inconsistent {
                user: user.clone(),
                detail: mismatch.to_string(),
            });
        }
        let mut version = metadata.version;
        let mut changes = Vec::new();
        while let Some(change) = self.remote.next_change(user, version).await? {
            version = change.metadata.version;
            changes.push(change);
        }
        if changes.is_empty() {
            return Ok(Some((version, body)));
        }
        let owned = user.clone();
        let image =
            blocking(move || apply_changes(&owned, &metadata, Vec::from(body), &changes)).await?;
        Ok(Some((version, Bytes::from(image))))
    }

    /// Checks `user`'s newest database: the snapshot's and every change's checksums, and
    /// `PRAGMA integrity_check` of the result.
    pub async fn verify(&self, user: &UserId) -> Result<Option<Verification>> {
        let downloaded = match self.download(user).await {
            Ok(None) => return Ok(None),
            Ok(Some(downloaded)) => Ok(downloaded),
            Err(Error::Inconsistent { detail, .. }) => Err(detail),
            Err(err) => return Err(err),
        };
        let (version, body) = match downloaded {
            Ok(downloaded) => downloaded,
            Err(mismatch) => {
                let version = self
                    .remote_status(user)
                    .await?
                    .map_or(Version::ZERO, |s| s.version);
                return Ok(Some(Verification {
                    user_id: user.to_string(),
                    version,
                    size_bytes: 0,
                    checksum_ok: false,
                    integrity_ok: false,
                    problems: vec![format!("checksum mismatch: {mismatch}")],
                }));
            }
        };
        let size_bytes = body.len() as u64;
        let verdict = blocking(move || integrity_check(&body)).await?;
        let integrity_ok = verdict == "ok";
        let problems = match integrity_ok {
            true => Vec::new(),
            false => vec![format!("integrity_check: {verdict}")],
        };
        Ok(Some(Verification {
            user_id: user.to_string(),
            version,
            size_bytes,
            checksum_ok: true,
            integrity_ok,
            problems,
        }))
    }
}

impl Engine {
    /// The bucket this engine syncs with, for the operator's reads.
    pub fn bucket_reader(&self) -> BucketReader {
        BucketReader::new(Arc::clone(self.store()), self.layout().clone())
    }

    /// Uploads `image` (a SQLite database file) as `user`'s new version: one more than the
    /// bucket's, conditional on the bucket not changing meanwhile, then installs it locally.
    pub async fn push(&self, user: &UserId, image: Vec<u8>) -> Result<Version> {
        if !looks_like_sqlite(&image) {
            return Err(Error::work_message(
                "the file is not a SQLite database (bad header)",
            ));
        }
        let checked = image.clone();
        let verdict = blocking(move || integrity_check(&checked)).await?;
        if verdict != "ok" {
            return Err(Error::work_message(format!(
                "the file fails PRAGMA integrity_check: {verdict}"
            )));
        }
        let session = self.begin(user).await?;
        Ok(session.commit_image(image).await?.version)
    }
}

/// Runs `PRAGMA integrity_check` on an image through a temp file; returns SQLite's verdict.
fn integrity_check(image: &[u8]) -> Result<String> {
    let dir = tempfile::tempdir().map_err(Error::io(std::env::temp_dir()))?;
    let path = dir.path().join("check.sqlite");
    std::fs::write(&path, image).map_err(Error::io(&path))?;
    let conn =
        rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok(crate::snapshot::integrity_verdict(&conn))
}
