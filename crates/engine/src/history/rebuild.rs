//! Any version of a user's database, rebuilt from the bucket: the newest snapshot at or
//! before it (`database.sqlite` or one kept for history), with the log's changes after it
//! applied up to that version, every one checked; or, from a copy of a later version, the
//! changes after it undone.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::checksum::BodyCheck;
use crate::context::blocking;
use crate::delta::{self, Delta, DeltaError};
use crate::error::{Error, Result, StoreError, delta_error};
use crate::history::{Catalog, Holder};
use crate::metadata::SnapshotMetadata;
use crate::remote::{Change, Fetch, Listing, Remote};
use crate::store::ByteStream;
use crate::user::UserId;
use crate::version::Version;

/// `user`'s database at `version`, rebuilt in the file `into` (created): the newest
/// snapshot at or before it written as it arrives, checked as it is read, then the log's
/// changes up to `version` applied to it as one run, each checked against the rolling
/// checksum. The version is never whole in memory.
pub(crate) async fn rebuild_into(
    remote: &Remote,
    user: &UserId,
    version: Version,
    into: PathBuf,
) -> Result<()> {
    let base = open_base(remote, user, version, None).await?;
    let changes = changes_up_to(remote, user, base.metadata.version, version, None).await?;
    let owned = user.clone();
    blocking(move || {
        let (metadata, mut body) = base.into_reader(&owned);
        let mut file = std::fs::File::create(&into).map_err(Error::io("a scratch file"))?;
        let copied = std::io::copy(&mut body, &mut file);
        // A failure to read the snapshot is the one `finish` tells; else it was the write.
        body.finish()?;
        copied.map_err(Error::io("a scratch file"))?;
        drop(file);
        if changes.is_empty() {
            return Ok(());
        }
        let deltas = decoded(&owned, &changes)?;
        apply_in_order(&owned, &into, metadata.checksum, &deltas)
    })
    .await
}

/// The deltas `changes` carry.
fn decoded(user: &UserId, changes: &[Change]) -> Result<Vec<Delta>> {
    changes
        .iter()
        .map(|change| Delta::decode(&change.bytes))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|err| delta_error(user, Path::new("a change of the log"), err))
}

/// The change that takes this instance's copy (`copy`, at the rolling checksum `checksum`)
/// to `user`'s database at `version`, rebuilt from the bucket as it streams past (the
/// snapshot read once, never whole in memory, the copy read once beside it): what a
/// restore that cannot walk back ships. The `catalog` just read tells which snapshot to
/// read and which changes to fetch (no listing again). `None` when the two cannot be
/// compared page by page (their page sizes differ).
pub(crate) async fn change_to(
    remote: &Remote,
    user: &UserId,
    catalog: &Catalog,
    version: Version,
    copy: PathBuf,
    checksum: u64,
) -> Result<Option<Delta>> {
    let base = open_base(remote, user, version, Some(catalog)).await?;
    let from = base.metadata.version;
    let changes = changes_up_to(remote, user, from, version, Some(&catalog.changes)).await?;
    let owned = user.clone();
    blocking(move || {
        let deltas = decoded(&owned, &changes)?;
        let file = std::fs::File::open(&copy).map_err(Error::io("the local copy"))?;
        let len = file.metadata().map_err(Error::io("the local copy"))?.len();
        let old = std::io::BufReader::with_capacity(1 << 20, file);
        let (metadata, body) = base.into_reader(&owned);
        let mut snapshot = std::io::BufReader::with_capacity(1 << 20, body);
        let between =
            Delta::between_rebuilt(old, len, checksum, &mut snapshot, metadata.checksum, deltas);
        let body = snapshot.into_inner();
        match between {
            Ok(delta) => body.finish().map(|()| Some(delta)),
            Err(DeltaError::Unsupported(_)) => Ok(None),
            // A snapshot that fails its check explains any other failure.
            Err(err) => {
                body.finish()?;
                Err(match err {
                    DeltaError::Io(err) => Error::io("the local copy")(err),
                    other => delta_error(&owned, Path::new("a rebuilt version"), other),
                })
            }
        }
    })
    .await
}

/// The changes of the log after version `from` up to `to`, in order: those a listing
/// (`listed`, else one made here) shows asked for side by side, the chain followed through
/// them (and one at a time past them: a listing may be behind).
async fn changes_up_to(
    remote: &Remote,
    user: &UserId,
    from: Version,
    to: Version,
    listed: Option<&[Listing]>,
) -> Result<Vec<Change>> {
    let mut at = from;
    let listed: Vec<Version> = match (at < to, listed) {
        (false, _) => Vec::new(),
        (true, Some(listed)) => listed.to_vec(),
        (true, None) => remote.list_changes(user).await?,
    }
    .into_iter()
    .map(|change| change.version)
    .filter(|&after| after >= at && after < to)
    .collect();
    let mut fetched: std::collections::BTreeMap<Version, Change> = futures::stream::iter(listed)
        .map(|after| remote.next_change(user, after))
        .buffered(CHANGES_IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await?
        .into_iter()
        .flatten()
        .map(|change| (change.metadata.base_version, change))
        .collect();
    let mut changes = Vec::new();
    while at < to {
        let next = match fetched.remove(&at) {
            Some(change) => Some(change),
            None => remote.next_change(user, at).await?,
        };
        let Some(change) = next else {
            return Err(not_kept(user, to, format!("the log ends at version {at}")));
        };
        if change.metadata.version > to {
            return Err(not_kept(
                user,
                to,
                format!(
                    "it was never written (the log goes from {at} to {})",
                    change.metadata.version
                ),
            ));
        }
        at = change.metadata.version;
        changes.push(change);
    }
    Ok(changes)
}

/// Changes asked for side by side while walking back.
const CHANGES_IN_FLIGHT: usize = 8;

/// The changes that take `user`'s database from the catalog's newest version back to
/// `version`, newest first, each inverted (no snapshot needed). `None` when the walk cannot
/// be made (a change replaced the whole database, is gone, or there are more than `most`):
/// the caller rebuilds forwards.
pub(crate) async fn changes_back(
    remote: &Remote,
    user: &UserId,
    catalog: &Catalog,
    version: Version,
    most: usize,
) -> Result<Option<Vec<Delta>>> {
    let entries = &catalog.entries;
    let Ok(start) = entries.binary_search_by_key(&version, |entry| entry.version) else {
        return Ok(None);
    };
    // The change making each later version applies after the version before it.
    let steps: Vec<(Version, Version)> = entries[start..]
        .windows(2)
        .map(|pair| (pair[0].version, pair[1].version))
        .collect();
    let walkable = steps.len() <= most
        && entries[start + 1..]
            .iter()
            .all(|entry| entry.held_by.contains(&Holder::Change));
    if !walkable {
        return Ok(None);
    }
    let bases: Vec<Version> = steps.iter().rev().map(|&(base, _)| base).collect();
    let fetched: Vec<_> = futures::stream::iter(bases)
        .map(|base| remote.next_change(user, base))
        .buffered(CHANGES_IN_FLIGHT)
        .try_collect()
        .await?;
    let mut inverses = Vec::with_capacity(fetched.len());
    for (change, (_, made)) in fetched.into_iter().zip(steps.iter().rev()) {
        let Some(change) = change.filter(|change| change.metadata.version == *made) else {
            return Ok(None);
        };
        let delta = Delta::decode(&change.bytes).map_err(|err| Error::Inconsistent {
            user: user.clone(),
            detail: format!("the change making version {made}: {err}"),
        })?;
        match delta.inverse() {
            Some(inverse) => inverses.push(inverse),
            None => return Ok(None),
        }
    }
    Ok(Some(inverses))
}

/// A copy of the database at `from` (at `checksum`) with `deltas` applied, in `into`.
pub(crate) async fn apply_to_copy(
    user: &UserId,
    from: &Path,
    checksum: u64,
    deltas: Vec<Delta>,
    into: &Path,
) -> Result<()> {
    let (owned, from, into) = (user.clone(), from.to_path_buf(), into.to_path_buf());
    blocking(move || {
        std::fs::copy(&from, &into).map_err(Error::io(&into))?;
        apply_in_order(&owned, &into, Some(checksum), &deltas)
    })
    .await
}

/// Applies `deltas` in order to the scratch copy at `path` (at `checksum`, computed when
/// unknown) as one run, each checked against the rolling checksum. A scratch copy needs
/// no durability: no fsync.
fn apply_in_order(
    user: &UserId,
    path: &Path,
    checksum: Option<u64>,
    deltas: &[Delta],
) -> Result<()> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA journal_mode = MEMORY;")?;
    let checksum = match checksum {
        Some(checksum) => checksum,
        None => delta::database_checksum(&conn)?,
    };
    delta::apply_committed(&conn, deltas.iter().cloned().map(Ok), checksum)
        .map(drop)
        .map_err(|err| delta_error(user, Path::new("a rebuilt version"), err))
}

/// The newest snapshot at or before a version, opened: what it says of itself, and its
/// body as it arrives.
struct BaseSnapshot {
    metadata: SnapshotMetadata,
    body: ByteStream,
    /// A kept snapshot is a zstd frame.
    compressed: bool,
}

/// The newest snapshot at or before `version`: `database.sqlite` when it is not past it,
/// else the newest kept one. A `catalog` just read says which without asking: a kept one
/// is read without reading `database.sqlite` first, or listing.
async fn open_base(
    remote: &Remote,
    user: &UserId,
    version: Version,
    catalog: Option<&Catalog>,
) -> Result<BaseSnapshot> {
    if let Some(catalog) = catalog
        && catalog.snapshot.0 > version
        && let Some(kept) = catalog
            .kept
            .iter()
            .rev()
            .find(|kept| kept.version <= version)
        && let Some((metadata, body)) = remote.open_kept_snapshot(user, kept.version).await?
    {
        return Ok(BaseSnapshot {
            metadata,
            body,
            compressed: true,
        });
    }
    // Without a catalog, or one gone stale (a kept snapshot removed since): look.
    match remote.fetch(user, None, None).await? {
        Fetch::Found(live) if live.metadata.version <= version => {
            return Ok(BaseSnapshot {
                metadata: live.metadata,
                body: live.body,
                compressed: false,
            });
        }
        // Past it: compaction kept the one it replaced, if history is on.
        Fetch::Found(_) => {}
        Fetch::Missing | Fetch::NotModified => {
            return Err(not_kept(user, version, "the user has no database".into()));
        }
    }
    let kept = remote.list_kept_snapshots(user).await?;
    let Some(base) = kept.iter().rev().find(|kept| kept.version <= version) else {
        return Err(not_kept(
            user,
            version,
            "it is older than every snapshot kept (past the retention window, or history is \
             off)"
                .into(),
        ));
    };
    let Some((metadata, body)) = remote.open_kept_snapshot(user, base.version).await? else {
        return Err(not_kept(
            user,
            version,
            "its snapshot was just removed".into(),
        ));
    };
    Ok(BaseSnapshot {
        metadata,
        body,
        compressed: true,
    })
}

impl BaseSnapshot {
    /// The body as a blocking reader (in a blocking task), decompressed if kept, checked as
    /// a download is while it is read.
    fn into_reader(self, user: &UserId) -> (SnapshotMetadata, CheckedBody) {
        let stream = self.body.map_err(std::io::Error::other);
        let arriving = SyncIoBridge::new(StreamReader::new(stream));
        let plain: Box<dyn Read> = match self.compressed {
            true => match zstd::stream::read::Decoder::new(arriving) {
                Ok(decoder) => Box::new(decoder),
                Err(err) => Box::new(FailedReader(Some(err))),
            },
            false => Box::new(arriving),
        };
        let body = CheckedBody {
            // One byte more than it says it has is enough to tell it lied.
            plain: plain.take(self.metadata.size.saturating_add(1)),
            check: BodyCheck::arriving(&self.metadata),
            offset: 0,
            failed: None,
            user: user.clone(),
            version: self.metadata.version,
        };
        (self.metadata, body)
    }
}

/// A snapshot's body read through its check: its CRC-64/NVME when the metadata has one
/// (the changes applied after it are checked against the rolling checksum), else its
/// SHA-256. A failure to read it is kept, to be told apart from the reader's own.
struct CheckedBody {
    plain: std::io::Take<Box<dyn Read>>,
    check: BodyCheck,
    /// Where the next byte read is in the body.
    offset: u64,
    failed: Option<Error>,
    user: UserId,
    version: Version,
}

impl Read for CheckedBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.plain.read(buf) {
            Ok(read) => {
                self.check.update(0, self.offset, &buf[..read]);
                self.offset += read as u64;
                Ok(read)
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => Err(err),
            Err(err) => {
                let told = std::io::Error::new(err.kind(), "the snapshot could not be read");
                self.failed = Some(self.failure(err));
                Err(told)
            }
        }
    }
}

impl CheckedBody {
    /// Reads what is left and compares it all with what the metadata says; the failure
    /// met reading it, if one was.
    fn finish(mut self) -> Result<()> {
        if let Err(err) = std::io::copy(&mut self, &mut std::io::sink())
            && self.failed.is_none()
        {
            return Err(self.failure(err));
        }
        if let Some(failed) = self.failed {
            return Err(failed);
        }
        self.check
            .finish()
            .map(drop)
            .map_err(|mismatch| Error::Inconsistent {
                user: self.user,
                detail: format!("the snapshot of version {}: {mismatch}", self.version),
            })
    }

    /// What stopped the body: the store (it stopped arriving), or bytes that do not
    /// decompress.
    fn failure(&self, err: std::io::Error) -> Error {
        let kind = err.kind();
        let err = match err.into_inner().map(|inner| inner.downcast::<StoreError>()) {
            Some(Ok(store)) => return Error::Store(*store),
            Some(Err(other)) => other.to_string(),
            None => kind.to_string(),
        };
        Error::Inconsistent {
            user: self.user.clone(),
            detail: format!(
                "the snapshot of version {} could not be read: {err}",
                self.version
            ),
        }
    }
}

/// A reader that fails at once (a decoder that could not start).
struct FailedReader(Option<std::io::Error>);

impl Read for FailedReader {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(self
            .0
            .take()
            .unwrap_or_else(|| std::io::Error::other("failed")))
    }
}

/// Compresses a snapshot for keeping (zstd's default level).
pub(crate) fn compress(image: &[u8]) -> Result<Bytes> {
    zstd::bulk::compress(image, 0)
        .map(Bytes::from)
        .map_err(|err| Error::internal(format!("compressing a snapshot: {err}")))
}

/// [`Error::NoSuchVersion`] for `version`.
pub(crate) fn not_kept(user: &UserId, version: Version, reason: String) -> Error {
    Error::NoSuchVersion {
        user: user.clone(),
        wanted: format!("version {version}"),
        reason,
    }
}

/// The snapshot `body` with `changes` applied in order, in memory, each checked against
/// the rolling checksum (the snapshot's recorded one, else computed).
pub(crate) fn apply_changes(
    user: &UserId,
    snapshot: &SnapshotMetadata,
    body: Vec<u8>,
    changes: &[Change],
) -> Result<Vec<u8>> {
    let refused = |err| delta_error(user, Path::new("a rebuilt version"), err);
    let checksum = match snapshot.checksum {
        Some(checksum) => checksum,
        None => delta::image_checksum(
            &body,
            delta::image_page_size(&body).map_err(refused)? as usize,
        ),
    };
    let deltas = changes.iter().map(|change| Delta::decode(&change.bytes));
    delta::apply_to_image(body, deltas, checksum)
        .map(|(image, _)| image)
        .map_err(refused)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::EngineConfig;
    use crate::engine::Engine;
    use crate::store::{MemoryStore, Store};

    /// The values of `t` in the database at `path`.
    fn values_at(path: &Path) -> Vec<i64> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut select = conn.prepare("SELECT v FROM t ORDER BY rowid").unwrap();
        select
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// A body in `pieces`, read through the check of `metadata` in a blocking task.
    async fn read_checked(
        metadata: SnapshotMetadata,
        pieces: Vec<&'static [u8]>,
    ) -> Result<Vec<u8>> {
        let body = futures::stream::iter(pieces.into_iter().map(|piece| Ok(Bytes::from(piece))));
        let base = BaseSnapshot {
            metadata,
            body: body.boxed(),
            compressed: false,
        };
        blocking(move || {
            let (_, mut body) = base.into_reader(&UserId::new("alice").unwrap());
            let mut read = Vec::new();
            let _ = body.read_to_end(&mut read);
            body.finish().map(|()| read)
        })
        .await
    }

    #[tokio::test]
    async fn a_snapshot_is_checked_as_it_is_read_by_its_crc_or_else_its_sha256() {
        let body: &[u8] = b"a body that arrives in three pieces";
        let with_crc = SnapshotMetadata {
            version: Version::new(3),
            sha256: crate::checksum::sha256_hex(body),
            crc64nvme: Some(crate::checksum::crc64nvme_hex(body)),
            size: body.len() as u64,
            writer: "a".into(),
            updated_at: chrono::Utc::now(),
            checksum: None,
            log_floor: None,
        };
        let sha_only = SnapshotMetadata {
            crc64nvme: None,
            ..with_crc.clone()
        };
        for metadata in [with_crc, sha_only] {
            let pieces = vec![&body[..5], &body[5..20], &body[20..]];
            let read = read_checked(metadata.clone(), pieces).await.unwrap();
            assert_eq!(read, body);
            // A byte changed, one missing, one too many.
            for pieces in [
                vec![&b"A body"[..], &body[6..]],
                vec![&body[..body.len() - 1]],
                vec![body, &b"!"[..]],
            ] {
                let err = read_checked(metadata.clone(), pieces).await.unwrap_err();
                assert!(matches!(err, Error::Inconsistent { .. }), "{err:?}");
            }
        }
    }

    #[tokio::test]
    async fn the_change_to_any_version_takes_the_copy_there_through_either_snapshot() {
        let (dir, scratch) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let mut config = EngineConfig::new(dir.path());
        config.compact_after_versions = 1_000;
        let engine = Engine::open(config, store.clone()).await.unwrap();
        let user = UserId::new("alice").unwrap();
        for value in 1..=6_i64 {
            engine
                .transact(&user, move |conn| {
                    conn.execute("CREATE TABLE IF NOT EXISTS t(v INTEGER)", [])?;
                    conn.execute("INSERT INTO t VALUES (?1)", [value])?;
                    Ok(())
                })
                .await
                .unwrap();
            if value == 3 {
                // Version 1 kept under snapshots/, version 3 database.sqlite.
                engine.compact(&user).await.unwrap();
            }
        }
        let remote = engine.bucket_reader().remote().clone();
        let session = engine.begin(&user).await.unwrap();
        let (copy, checksum) = (session.file_path(), session.base().checksum.unwrap());
        let catalog = Catalog::read(&remote, &user).await.unwrap().unwrap();
        for version in 1..=6 {
            let change = change_to(
                &remote,
                &user,
                &catalog,
                Version::new(version),
                copy.clone(),
                checksum,
            )
            .await
            .unwrap()
            .unwrap();
            assert_eq!(change.checksum_before, checksum);
            let moved = scratch.path().join(format!("{version}.sqlite"));
            std::fs::copy(&copy, &moved).unwrap();
            let conn = rusqlite::Connection::open(&moved).unwrap();
            delta::apply_committed(&conn, [Ok(change)], checksum).unwrap();
            drop(conn);
            assert_eq!(values_at(&moved), (1..=version as i64).collect::<Vec<_>>());
        }
        // A version the history does not hold.
        let err = change_to(
            &remote,
            &user,
            &catalog,
            Version::new(7),
            copy.clone(),
            checksum,
        )
        .await;
        assert!(matches!(err, Err(Error::NoSuchVersion { .. })), "{err:?}");
        // A copy of another page size cannot be compared page by page.
        let other = scratch.path().join("other.sqlite");
        rusqlite::Connection::open(&other)
            .unwrap()
            .execute_batch("PRAGMA page_size = 1024; CREATE TABLE t(v INTEGER);")
            .unwrap();
        let other_checksum = delta::image_checksum(&std::fs::read(&other).unwrap(), 1024);
        let none = change_to(
            &remote,
            &user,
            &catalog,
            Version::new(2),
            other,
            other_checksum,
        )
        .await;
        assert!(matches!(none, Ok(None)), "{none:?}");
        drop(session);
    }
}
