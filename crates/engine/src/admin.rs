//! Operator actions on the bucket (the CLI's `users`, `status`, `pull`, `push`, `verify`).
//!
//! The reading ones need nothing but the store: [`BucketReader`] opens no engine, so it
//! works with read-only keys (an engine's start-up probe writes). `push` writes, and goes
//! through the engine: the same user lock and the same checks as requests.

use std::sync::Arc;

use bytes::Bytes;

use crate::checksum::check_body;
use crate::context::blocking;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::metadata::SnapshotMetadata;
use crate::remote::Remote;
use crate::snapshot::looks_like_sqlite;
use crate::store::{ETag, Store};
use crate::user::UserId;
use crate::version::Version;

/// A user's object in the bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteDatabase {
    /// Whose database.
    pub user: UserId,
    /// Its ETag.
    pub etag: ETag,
    /// What it says about itself.
    pub metadata: SnapshotMetadata,
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

    /// Every user with a database in the bucket, with its object size.
    pub async fn list_users(&self) -> Result<Vec<(UserId, u64)>> {
        self.remote.users().await
    }

    /// The bucket's view of `user`, or `None` if the user has no object.
    pub async fn remote_status(&self, user: &UserId) -> Result<Option<RemoteDatabase>> {
        Ok(self
            .remote
            .describe(user)
            .await?
            .map(|(etag, _, metadata)| RemoteDatabase {
                user: user.clone(),
                etag,
                metadata,
            }))
    }

    /// Downloads `user`'s object, checked against its checksum.
    pub async fn download(&self, user: &UserId) -> Result<Option<(SnapshotMetadata, Bytes)>> {
        let Some((_, metadata, body)) = self.remote.read(user).await? else {
            return Ok(None);
        };
        if let Err(mismatch) = check_body(&metadata, &body) {
            return Err(Error::Inconsistent {
                user: user.clone(),
                detail: mismatch.to_string(),
            });
        }
        Ok(Some((metadata, body)))
    }

    /// Checks `user`'s object: checksum against metadata, and `PRAGMA integrity_check`.
    pub async fn verify(&self, user: &UserId) -> Result<Option<Verification>> {
        let Some((size_bytes, metadata, body)) = self.remote.read(user).await? else {
            return Ok(None);
        };
        let mut problems = Vec::new();
        let checksum = check_body(&metadata, &body);
        let checksum_ok = checksum.is_ok();
        if let Err(mismatch) = checksum {
            problems.push(format!("checksum mismatch: {mismatch}"));
        }
        let verdict = blocking(move || integrity_check(&body)).await?;
        let integrity_ok = verdict == "ok";
        if !integrity_ok {
            problems.push(format!("integrity_check: {verdict}"));
        }
        Ok(Some(Verification {
            user_id: user.to_string(),
            version: metadata.version,
            size_bytes,
            checksum_ok,
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
