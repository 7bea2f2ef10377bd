//! History's actions (`docs/history.md`): a user's versions, any version's content, a
//! restore, a fork, and the removal of what the retention window no longer keeps.
//!
//! A restore never rewrites history: the content of the old version is committed as a new
//! version on top of the newest, like any write (the conflict policy applies to a writer
//! that had not seen it), so the restore itself can be undone.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::warn;

use crate::admin::BucketReader;
use crate::config::ConflictPolicy;
use crate::context::blocking;
use crate::diff::{DatabaseDiff, DiffOptions, diff_databases};
use crate::engine::{Engine, Export};
use crate::error::{Error, Result};
use crate::history::{
    Catalog, VersionEntry, apply_to_copy, change_to, changes_back, not_kept, rebuild_into,
};
use crate::session::Session;
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
    /// and two `HEAD`s however many versions; `writers_of_newest` adds a `HEAD` for each
    /// of that many newest versions, to tell who wrote it.
    pub async fn versions(
        &self,
        user: &UserId,
        writers_of_newest: usize,
    ) -> Result<Option<Vec<VersionEntry>>> {
        let Some(catalog) = Catalog::read(self.remote(), user).await? else {
            return Ok(None);
        };
        let catalog = match writers_of_newest {
            0 => catalog,
            newest => catalog.with_writers(self.remote(), user, newest).await?,
        };
        Ok(Some(catalog.entries))
    }

    /// The version `target` names, checked to be in `user`'s history.
    pub async fn resolve(&self, user: &UserId, target: RestoreTarget) -> Result<Version> {
        let (version, _) = self.resolve_in_catalog(user, target).await?;
        Ok(version)
    }

    /// [`BucketReader::resolve`], with the catalog it read.
    async fn resolve_in_catalog(
        &self,
        user: &UserId,
        target: RestoreTarget,
    ) -> Result<(Version, Catalog)> {
        let wanted = match target {
            RestoreTarget::Version(version) => format!("version {version}"),
            RestoreTarget::At(at) => format!(
                "version at {}",
                at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            ),
        };
        let Some(catalog) = Catalog::read(self.remote(), user).await? else {
            return Err(Error::NoSuchVersion {
                user: user.clone(),
                wanted,
                reason: "the user has no database".into(),
            });
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
                    Ok(_) => Ok((version, catalog)),
                    Err(_) => Err(not_kept(user, version, range)),
                }
            }
            RestoreTarget::At(at) => match catalog.current_at(at) {
                Some(version) => Ok((version, catalog)),
                None => Err(Error::NoSuchVersion {
                    user: user.clone(),
                    wanted,
                    reason: format!("nothing was written at or before then; {range}"),
                }),
            },
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
        let (_scratch, before, after) = scratch_pair()?;
        futures::try_join!(
            self.rebuild_into(user, from, before.clone()),
            self.rebuild_into(user, to, after.clone())
        )?;
        compare(user, before, after, options).await
    }

    /// `user`'s database at `version`, rebuilt from the bucket in a file of its own that has
    /// no name on disk (it goes when closed): how a version is served without holding it
    /// in memory.
    pub async fn export_version(&self, user: &UserId, version: Version) -> Result<Export> {
        let scratch = scratch_dir()?;
        let path = scratch.path().join("version.sqlite");
        self.rebuild_into(user, version, path.clone()).await?;
        let file = std::fs::File::open(&path).map_err(Error::io("a scratch file"))?;
        let size_bytes = file.metadata().map_err(Error::io("a scratch file"))?.len();
        drop(scratch);
        Ok(Export {
            version,
            size_bytes,
            file,
        })
    }

    /// `user`'s database at `version`, rebuilt from the bucket in the file `into`.
    async fn rebuild_into(&self, user: &UserId, version: Version, into: PathBuf) -> Result<()> {
        if version == Version::ZERO {
            return Err(not_kept(user, version, "versions start at 1".into()));
        }
        rebuild_into(self.remote(), user, version, into).await
    }

    /// `user`'s database at `version`, rebuilt from the newest snapshot at or before it
    /// and the log after it, every piece checked.
    pub async fn download_version(&self, user: &UserId, version: Version) -> Result<Bytes> {
        let Export { mut file, .. } = self.export_version(user, version).await?;
        let image = blocking(move || {
            let mut image = Vec::new();
            std::io::Read::read_to_end(&mut file, &mut image)
                .map_err(Error::io("a scratch file"))?;
            Ok(image)
        });
        Ok(Bytes::from(image.await?))
    }
}

impl Engine {
    /// Brings back the content of the version `target` names as a new, newest version of
    /// `user`'s database (`docs/history.md`). Subscribers get a `version` event saying
    /// which version it restored; other instances see it at their next request.
    ///
    /// When this instance's copy is the newest version and the changes after the restored
    /// one can be undone, the restore is those changes undone, shipped and applied as one
    /// change (no snapshot read, no database rewritten); else the version is rebuilt from
    /// the bucket as it streams past the copy, and the pages that differ are shipped.
    ///
    /// A restore that loses a race to another writer is made again on top of it under
    /// `last-write-wins` and `rebase` (its content does not depend on what it lands on; the
    /// other write stays in history, and `undo` names it), within `max_conflict_retries`;
    /// under `strict` it is refused.
    pub async fn restore(&self, user: &UserId, target: RestoreTarget) -> Result<Restored> {
        let mut tries = 0;
        loop {
            match self.restore_once(user, target).await {
                Err(Error::Conflict { found, .. })
                    if self.config().conflict != ConflictPolicy::Strict
                        && tries < self.config().max_conflict_retries =>
                {
                    tries += 1;
                    warn!(user = %user, winner = found.get(),
                        "a restore lost a race to another writer: made again on top of it");
                }
                done => return done,
            }
        }
    }

    /// One try of [`Engine::restore`].
    async fn restore_once(&self, user: &UserId, target: RestoreTarget) -> Result<Restored> {
        let reader = self.bucket_reader();
        let (restored, catalog) = reader.resolve_in_catalog(user, target).await?;
        let session = self.begin(user).await?;
        let local = LocalCopy::of(&session);
        let undo = local.version;
        let back = match local.checksum.is_some() && catalog.newest() == undo {
            true => {
                let most = self.config().history.walk_back_changes;
                changes_back(reader.remote(), user, &catalog, restored, most).await?
            }
            false => None,
        };
        let change = match (&back, local.checksum) {
            (None, Some(checksum)) => {
                change_to(
                    reader.remote(),
                    user,
                    &catalog,
                    restored,
                    local.path,
                    checksum,
                )
                .await?
            }
            _ => None,
        };
        let committed = match (back, change) {
            (Some(inverses), _) => session.commit_changes(inverses, restored).await?,
            (None, Some(change)) => session.commit_change(change, restored).await?,
            (None, None) => {
                let image = reader.download_version(user, restored).await?;
                session
                    .commit_whole(Vec::from(image), Some(restored))
                    .await?
            }
        };
        Ok(Restored {
            version: committed.version,
            restored,
            undo,
        })
    }

    /// [`BucketReader::diff`], with the versions read from this instance's copy where it
    /// can: the version it holds copied, an older one rebuilt backwards from it (both
    /// older ones from one walk back, each change fetched once).
    pub async fn diff(
        &self,
        user: &UserId,
        from: Version,
        to: Version,
        options: DiffOptions,
    ) -> Result<DatabaseDiff> {
        let reader = self.bucket_reader();
        let Some(catalog) = Catalog::read(reader.remote(), user).await? else {
            return Err(not_kept(user, from, "the user has no database".into()));
        };
        let (_scratch, before, after) = scratch_pair()?;
        let session = self.begin(user).await?;
        let local = LocalCopy::of(&session);
        let walked = self
            .walk_back_both(user, &local, &catalog, (from, &before), (to, &after))
            .await?;
        if !walked {
            self.version_into(user, &local, &catalog, from, &before)
                .await?;
            self.version_into(user, &local, &catalog, to, &after)
                .await?;
        }
        drop(session);
        compare(user, before, after, options).await
    }

    /// Both versions of a diff (each with the file it goes into) walked back from the
    /// `local` copy in one walk: the changes back to the older fetched once, the newer
    /// version taken on the way. `false` when the walk cannot be made (the caller takes
    /// each version its own way).
    async fn walk_back_both(
        &self,
        user: &UserId,
        local: &LocalCopy,
        catalog: &Catalog,
        one: (Version, &Path),
        other: (Version, &Path),
    ) -> Result<bool> {
        let (older, newer) = match one.0 <= other.0 {
            true => (one, other),
            false => (other, one),
        };
        let listed = |version| catalog.entries.iter().any(|entry| entry.version == version);
        let Some(checksum) = local.checksum else {
            return Ok(false);
        };
        if catalog.newest() != local.version || !listed(newer.0) || newer.0 == local.version {
            return Ok(false);
        }
        let most = self.config().history.walk_back_changes;
        let reader = self.bucket_reader();
        let Some(mut inverses) =
            changes_back(reader.remote(), user, catalog, older.0, most).await?
        else {
            return Ok(false);
        };
        // Newest first, one per version: those past the newer version lead to it.
        let to_newer = catalog
            .entries
            .iter()
            .filter(|entry| entry.version > newer.0)
            .count();
        let to_older = inverses.split_off(to_newer);
        let at_newer = inverses.last().map_or(checksum, |last| last.checksum_after);
        apply_to_copy(user, &local.path, checksum, inverses, newer.1).await?;
        apply_to_copy(user, newer.1, at_newer, to_older, older.1).await?;
        Ok(true)
    }

    /// `user`'s database at `version` in the file `into`: the `local` copy when it is at
    /// that version; else rebuilt backwards from it when the changes after `version` can
    /// be undone; else rebuilt from the bucket. The caller's session keeps the copy from
    /// changing meanwhile.
    async fn version_into(
        &self,
        user: &UserId,
        local: &LocalCopy,
        catalog: &Catalog,
        version: Version,
        into: &Path,
    ) -> Result<()> {
        if local.version == version {
            let (path, into) = (local.path.clone(), into.to_path_buf());
            return blocking(move || {
                std::fs::copy(&path, &into)
                    .map(drop)
                    .map_err(Error::io(&into))
            })
            .await;
        }
        let reader = self.bucket_reader();
        if let Some(checksum) = local.checksum
            && catalog.newest() == local.version
            && let Some(inverses) = changes_back(
                reader.remote(),
                user,
                catalog,
                version,
                self.config().history.walk_back_changes,
            )
            .await?
        {
            return apply_to_copy(user, &local.path, checksum, inverses, into).await;
        }
        reader.rebuild_into(user, version, into.to_path_buf()).await
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

/// What a session tells of this instance's copy, taken out so that no future holds a
/// reference to the session across an await.
struct LocalCopy {
    version: Version,
    checksum: Option<u64>,
    path: PathBuf,
}

impl LocalCopy {
    fn of(session: &Session) -> Self {
        Self {
            version: session.base().version,
            checksum: session.base().checksum,
            path: session.file_path(),
        }
    }
}

/// A scratch folder with the paths of a diff's two versions in it (removed when dropped:
/// keep it while they are read).
fn scratch_pair() -> Result<(tempfile::TempDir, PathBuf, PathBuf)> {
    let scratch = scratch_dir()?;
    let (before, after) = (
        scratch.path().join("before.sqlite"),
        scratch.path().join("after.sqlite"),
    );
    Ok((scratch, before, after))
}

/// A scratch folder for the versions a restore or a diff rebuilds (removed when dropped).
fn scratch_dir() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(Error::io(std::env::temp_dir()))
}

/// Compares the databases at `before` and `after` row by row.
async fn compare(
    user: &UserId,
    before: PathBuf,
    after: PathBuf,
    options: DiffOptions,
) -> Result<DatabaseDiff> {
    let owned = user.clone();
    blocking(move || {
        diff_databases(&before, &after, &options).map_err(|err| Error::Inconsistent {
            user: owned,
            detail: format!("the versions could not be compared: {err}"),
        })
    })
    .await
}
