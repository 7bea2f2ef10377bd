//! Any version of a user's database, rebuilt from the bucket: the newest snapshot at or
//! before it (`database.sqlite` or one kept for history), with the log's changes after it
//! applied up to that version, every one checked.

use bytes::Bytes;

use crate::checksum::check_body;
use crate::context::blocking;
use crate::delta::{self, Delta};
use crate::error::{Error, Result, delta_error};
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
    let mut changes = Vec::new();
    while at < version {
        let Some(change) = remote.next_change(user, at).await? else {
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
    let image = blocking(move || apply_changes(&owned, &base, &body, &changes)).await?;
    Ok(Bytes::from(image))
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

fn checked(
    user: &UserId,
    metadata: SnapshotMetadata,
    body: Bytes,
) -> Result<(SnapshotMetadata, Bytes)> {
    match check_body(&metadata, &body) {
        Ok(()) => Ok((metadata, body)),
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

pub(crate) fn not_kept(user: &UserId, version: Version, reason: String) -> Error {
    Error::NoSuchVersion {
        user: user.clone(),
        version,
        reason,
    }
}

/// The snapshot `body` with `changes` applied in order, each checked against the rolling
/// checksum, in a temp file.
pub(crate) fn apply_changes(
    user: &UserId,
    snapshot: &SnapshotMetadata,
    body: &[u8],
    changes: &[Change],
) -> Result<Vec<u8>> {
    let dir = tempfile::tempdir().map_err(Error::io(std::env::temp_dir()))?;
    let path = dir.path().join("database.sqlite");
    std::fs::write(&path, body).map_err(Error::io(&path))?;
    let conn = rusqlite::Connection::open(&path)?;
    let mut checksum = match snapshot.checksum {
        Some(checksum) => checksum,
        None => delta::database_checksum(&conn)?,
    };
    for change in changes {
        checksum = Delta::decode(&change.bytes)
            .and_then(|delta| delta::apply_committed(&conn, &delta, checksum))
            .map_err(|err| delta_error(user, &path, err))?;
    }
    drop(conn);
    std::fs::read(&path).map_err(Error::io(&path))
}
