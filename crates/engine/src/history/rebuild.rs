//! Any version of a user's database, rebuilt from the bucket: the newest snapshot at or
//! before it (`database.sqlite` or one kept for history), with the log's changes after it
//! applied up to that version, every one checked; or, from a copy of a later version, the
//! changes after it undone.

use std::path::Path;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::checksum::BodyCheck;
use crate::context::blocking;
use crate::delta::{self, Delta};
use crate::error::{Error, Result, delta_error};
use crate::history::{Catalog, Holder};
use crate::metadata::SnapshotMetadata;
use crate::remote::{Change, Remote};
use crate::user::UserId;
use crate::version::Version;

/// The largest database a kept snapshot may expand to: a corrupt or hostile frame must
/// not exhaust memory.
const MAX_SNAPSHOT_BYTES: usize = 1 << 40;

/// `user`'s database at `version`, rebuilt.
pub(crate) async fn rebuild(remote: &Remote, user: &UserId, version: Version) -> Result<Bytes> {
    let (base, body) = base_snapshot(remote, user, version).await?;
    let mut at = base.version;
    // The changes a listing shows between the two, asked for side by side; the chain is
    // followed through them, and one at a time past them (a listing may be behind).
    let listed: Vec<Version> = match at < version {
        true => remote.list_changes(user).await?,
        false => Vec::new(),
    }
    .into_iter()
    .map(|change| change.version)
    .filter(|&after| after >= at && after < version)
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
    while at < version {
        let next = match fetched.remove(&at) {
            Some(change) => Some(change),
            None => remote.next_change(user, at).await?,
        };
        let Some(change) = next else {
            return Err(not_kept(
                user,
                version,
                format!("the log ends at version {at}"),
            ));
        };
        if change.metadata.version > version {
            return Err(not_kept(
                user,
                version,
                format!(
                    "it was never written (the log goes from {at} to {})",
                    change.metadata.version
                ),
            ));
        }
        at = change.metadata.version;
        changes.push(change);
    }
    if changes.is_empty() {
        return Ok(body);
    }
    let owned = user.clone();
    let image = blocking(move || apply_changes(&owned, &base, body, &changes)).await?;
    Ok(Bytes::from(image))
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
        apply_in_order(&owned, &into, checksum, &deltas)
    })
    .await
}

/// Applies `deltas` in order to the scratch copy at `path` (at `checksum`) as one run,
/// each checked against the rolling checksum. A scratch copy needs no durability: no fsync.
fn apply_in_order(user: &UserId, path: &Path, checksum: u64, deltas: &[Delta]) -> Result<()> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA journal_mode = MEMORY;")?;
    delta::apply_committed(&conn, deltas.iter().cloned().map(Ok), checksum)
        .map(drop)
        .map_err(|err| delta_error(user, path, err))
}

/// The newest snapshot at or before `version`, checked: `database.sqlite` when it is not
/// past it, else the newest kept one.
async fn base_snapshot(
    remote: &Remote,
    user: &UserId,
    version: Version,
) -> Result<(SnapshotMetadata, Bytes)> {
    if let Some((_, metadata, body)) = remote.read(user).await? {
        if metadata.version <= version {
            return checked(user, metadata, body);
        }
    } else {
        return Err(not_kept(user, version, "the user has no database".into()));
    }
    // The snapshot is past it (compaction kept the one it replaced, if history is on).
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
    let Some((metadata, compressed)) = remote.read_kept_snapshot(user, base.version).await? else {
        return Err(not_kept(
            user,
            version,
            "its snapshot was just removed".into(),
        ));
    };
    let owned = user.clone();
    let body = blocking(move || decompress(&owned, &compressed)).await?;
    checked(user, metadata, body)
}

/// `body` checked against `metadata` as a download is: its CRC-64/NVME when the metadata
/// has one (the changes applied after it are checked against the rolling checksum), else
/// its SHA-256.
fn checked(
    user: &UserId,
    metadata: SnapshotMetadata,
    body: Bytes,
) -> Result<(SnapshotMetadata, Bytes)> {
    let mut check = BodyCheck::arriving(&metadata);
    check.update(0, 0, &body);
    match check.finish() {
        Ok(_) => Ok((metadata, body)),
        Err(mismatch) => Err(Error::Inconsistent {
            user: user.clone(),
            detail: format!("the snapshot of version {}: {mismatch}", metadata.version),
        }),
    }
}

/// Compresses a snapshot for keeping (zstd's default level).
pub(crate) fn compress(image: &[u8]) -> Result<Bytes> {
    zstd::bulk::compress(image, 0)
        .map(Bytes::from)
        .map_err(|err| Error::internal(format!("compressing a snapshot: {err}")))
}

fn decompress(user: &UserId, compressed: &[u8]) -> Result<Bytes> {
    let capacity = zstd::zstd_safe::get_frame_content_size(compressed)
        .ok()
        .flatten()
        .filter(|&size| size <= MAX_SNAPSHOT_BYTES as u64);
    let Some(capacity) = capacity else {
        return Err(Error::Inconsistent {
            user: user.clone(),
            detail: "a kept snapshot is not a zstd frame of a known size".into(),
        });
    };
    zstd::bulk::decompress(compressed, capacity as usize)
        .map(Bytes::from)
        .map_err(|err| Error::Inconsistent {
            user: user.clone(),
            detail: format!("a kept snapshot does not decompress: {err}"),
        })
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
    body: Bytes,
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
    // The body read from the store is held nowhere else: no copy.
    delta::apply_to_image(Vec::from(body), deltas, checksum)
        .map(|(image, _)| image)
        .map_err(refused)
}
