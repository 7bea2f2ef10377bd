//! History's actions (`docs/history.md`): a user's versions, any version's content, a
//! restore, a fork, and the removal of what the retention window no longer keeps.
//!
//! A restore never rewrites history: the content of the old version is committed as a new
//! version on top of the newest, like any write (the conflict policy applies to a writer
//! that had not seen it), so the restore itself can be undone.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::admin::BucketReader;
use crate::context::blocking;
use crate::diff::{DatabaseDiff, DiffOptions, diff_databases};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::history::{Catalog, VersionEntry, not_kept, rebuild};
use crate::user::UserId;
use crate::version::Version;

/// Which version a restore brings back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreTarget {
    /// This version.
    Version(Version),
    /// The version that was current at this moment.
    At(DateTime<Utc>),
}

/// What a restore did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Restored {
    /// The new version, holding the restored content.
    pub version: Version,
    /// The version whose content it holds.
    pub restored: Version,
    /// The version to restore to undo this restore (the newest before it).
    pub undo: Version,
}

impl BucketReader {
    /// `user`'s restorable versions, oldest first (`None`: no such user): two listings
    /// and two `HEAD`s however many versions; `writers` adds a `HEAD` per change to tell
    /// who wrote each.
    pub async fn versions(
        &self,
        user: &UserId,
        writers: bool,
    ) -> Result<Option<Vec<VersionEntry>>> {
        let Some(catalog) = Catalog::read(self.remote(), user).await? else {
            return Ok(None);
        };
        let catalog = match writers {
            true => catalog.with_writers(self.remote(), user).await?,
            false => catalog,
        };
        Ok(Some(catalog.entries))
    }

    /// The version `target` names, checked to be in `user`'s history.
    pub async fn resolve(&self, user: &UserId, target: RestoreTarget) -> Result<Version> {
        let Some(catalog) = Catalog::read(self.remote(), user).await? else {
            let version = match target {
                RestoreTarget::Version(version) => version,
                RestoreTarget::At(_) => Version::ZERO,
            };
            return Err(not_kept(user, version, "the user has no database".into()));
        };
        let (first, newest) = (
            catalog.entries.first().map_or(Version::ZERO, |e| e.version),
            catalog.newest(),
        );
        let range = format!("the history holds versions {first} to {newest}");
        match target {
            RestoreTarget::Version(version) => {
                match catalog
                    .entries
                    .binary_search_by_key(&version, |e| e.version)
                {
                    Ok(_) => Ok(version),
                    Err(_) => Err(not_kept(user, version, range)),
                }
            }
            RestoreTarget::At(at) => catalog.current_at(at).ok_or_else(|| {
                not_kept(
                    user,
                    Version::ZERO,
                    format!("nothing was written at or before {at}; {range}"),
                )
            }),
        }
    }

    /// How `user`'s database changed from version `from` to version `to`, row by row:
    /// both rebuilt from the bucket, then compared.
    pub async fn diff(
        &self,
        user: &UserId,
        from: Version,
        to: Version,
        options: DiffOptions,
    ) -> Result<DatabaseDiff> {
        let (before, after) = futures::try_join!(
            self.download_version(user, from),
            self.download_version(user, to)
        )?;
        compare(user, Side::Image(before), Side::Image(after), options).await
    }

    /// `user`'s database at `version`, rebuilt from the newest snapshot at or before it
    /// and the log after it, every piece checked.
    pub async fn download_version(&self, user: &UserId, version: Version) -> Result<Bytes> {
        if version == Version::ZERO {
            return Err(not_kept(user, version, "versions start at 1".into()));
        }
        rebuild(self.remote(), user, version).await
    }
}

impl Engine {
    /// Brings back the content of the version `target` names as a new, newest version of
    /// `user`'s database (`docs/history.md`). Subscribers get a `version` event saying
    /// which version it restored; other instances see it at their next request.
    pub async fn restore(&self, user: &UserId, target: RestoreTarget) -> Result<Restored> {
        let reader = self.bucket_reader();
        let restored = reader.resolve(user, target).await?;
        let image = reader.download_version(user, restored).await?;
        let session = self.begin(user).await?;
        let undo = session.base().version;
        let committed = session.commit_whole(image.to_vec(), Some(restored)).await?;
        Ok(Restored {
            version: committed.version,
            restored,
            undo,
        })
    }

    /// [`BucketReader::diff`], with the version this instance holds read from its local
    /// copy (after the version check) instead of the bucket.
    pub async fn diff(
        &self,
        user: &UserId,
        from: Version,
        to: Version,
        options: DiffOptions,
    ) -> Result<DatabaseDiff> {
        let mut local = self.export(user).await?;
        let reader = self.bucket_reader();
        let mut side = async |version: Version| -> Result<Side> {
            match local.take_if(|export| export.version == version) {
                Some(export) => Ok(Side::File(export.file)),
                None => reader
                    .download_version(user, version)
                    .await
                    .map(Side::Image),
            }
        };
        let before = side(from).await?;
        let after = match (from == to, &before) {
            (true, Side::Image(image)) => Side::Image(image.clone()),
            _ => side(to).await?,
        };
        compare(user, before, after, options).await
    }

    /// Starts `new_user`'s database from `user`'s at `version` (its newest when `None`).
    /// Refused when `new_user` already has a database.
    pub async fn fork(
        &self,
        user: &UserId,
        new_user: &UserId,
        version: Option<Version>,
    ) -> Result<Version> {
        let reader = self.bucket_reader();
        if reader.remote_status(new_user).await?.is_some() {
            return Err(Error::work_message(format!(
                "user {new_user} already has a database; fork into a new user"
            )));
        }
        let image = match version {
            Some(version) => reader.download_version(user, version).await?,
            None => match reader.download(user).await? {
                Some((_, image)) => image,
                None => {
                    return Err(not_kept(
                        user,
                        Version::ZERO,
                        "the user has no database".into(),
                    ));
                }
            },
        };
        self.push(new_user, image.to_vec()).await
    }
}

/// One side of a diff: a rebuilt image, or this instance's exported copy.
enum Side {
    Image(Bytes),
    File(std::fs::File),
}

/// Compares two databases row by row, through temp files (SQLite reads files).
async fn compare(
    user: &UserId,
    before: Side,
    after: Side,
    options: DiffOptions,
) -> Result<DatabaseDiff> {
    let owned = user.clone();
    blocking(move || {
        let dir = tempfile::tempdir().map_err(Error::io(std::env::temp_dir()))?;
        let write = |side: Side, name: &str| -> Result<std::path::PathBuf> {
            let path = dir.path().join(name);
            match side {
                Side::Image(image) => std::fs::write(&path, image),
                Side::File(mut file) => std::fs::File::create(&path)
                    .and_then(|mut copy| std::io::copy(&mut file, &mut copy).map(drop)),
            }
            .map_err(Error::io(&path))?;
            Ok(path)
        };
        let (before, after) = (
            write(before, "before.sqlite")?,
            write(after, "after.sqlite")?,
        );
        diff_databases(&before, &after, &options).map_err(|err| Error::Inconsistent {
            user: owned,
            detail: format!("the versions could not be compared: {err}"),
        })
    })
    .await
}
