//! Compaction (`docs/delta-sync.md`): the log folded into a new snapshot, in the
//! background, never under a request. The caller reads the committed local database
//! under the user's lock ([`copy_committed`]); [`fold`] then runs without it: the copy
//! becomes `database.sqlite` under `If-Match` on the snapshot it replaces (another
//! instance that folded first wins, and nothing is lost: any snapshot at a version equals
//! the log folded to it). With history off, changes folded into the previous snapshot are
//! deleted once that snapshot is older than the log's grace; with history on, the snapshot
//! replaced is kept under `snapshots/` first, and retention decides what goes
//! (`docs/history.md`).

use tracing::{info, warn};

use crate::cache::SlotState;
use crate::checksum::check_body;
use crate::context::{Context, blocking};
use crate::crash::crash_point;
use crate::error::{Error, Result};
use crate::history;
use crate::local::SyncState;
use crate::metadata::SnapshotMetadata;
use crate::snapshot::Snapshot;
use crate::store::StoreError;
use crate::user::UserId;
use crate::version::Version;

/// Changes deleted per compaction at most: deletes never pile up behind one user.
const MAX_DELETES: u64 = 1000;
/// The least time between two compactions of one user here: the snapshot is one key, and
/// stores like R2 take about one write per second per key.
const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// True when the log since the snapshot passed a bound (`sync.compact_after_versions`,
/// `sync.compact_after_bytes`).
pub(crate) fn due(shared: &Context, user: &UserId, slot: &SlotState) -> bool {
    let (Some(snapshot), Some(state)) = (slot.snapshot_version, &slot.sync) else {
        return false;
    };
    if slot
        .last_compaction
        .is_some_and(|last| last.elapsed() < MIN_INTERVAL)
    {
        return false;
    }
    let versions = state.version.get().saturating_sub(snapshot.get());
    let bytes_bound = shared.config.compact_after_bytes.unwrap_or_else(|| {
        let database = std::fs::metadata(shared.layout.database_path(user)).map_or(0, |m| m.len());
        (database / 4).max(1 << 20)
    });
    versions >= shared.config.compact_after_versions || slot.log_bytes >= bytes_bound
}

/// Reads the committed local database for [`fold`], with `state`, the state it is at
/// (the caller holds the user's lock, so no transaction is open on it: the file is the
/// committed database, byte for byte; SQLite's backup API would bump the copy's schema
/// cookie); `None` when there is nothing to fold now (a download `staged`, a write
/// pending, no checksum).
pub(crate) async fn copy_committed(
    shared: &Context,
    user: &UserId,
    state: Option<SyncState>,
    staged: bool,
) -> Result<Option<(Snapshot, SyncState)>> {
    let Some(state) = state else {
        return Ok(None);
    };
    if staged || state.checksum.is_none() || shared.layout.pending_record_path(user).exists() {
        return Ok(None);
    }
    let path = shared.layout.database_path(user);
    let image = blocking(move || {
        std::fs::read(&path)
            .map(Snapshot::from_bytes)
            .map_err(Error::io(&path))
    })
    .await?;
    Ok(Some((image, state)))
}

/// Uploads `image` (the database at `state`) as the snapshot, then deletes what the grace
/// allows. Answers the snapshot's version in the bucket afterwards, `None` if unknown.
pub(crate) async fn fold(
    shared: &Context,
    user: &UserId,
    mut image: Snapshot,
    state: SyncState,
) -> Result<Option<Version>> {
    let Some((etag, _, current)) = shared.remote.describe(user).await? else {
        return Ok(None);
    };
    if current.version >= state.version {
        return Ok(Some(current.version));
    }
    image.stamp(state.version);
    let checksum = crate::sync::upload::image_checksum(&image)?;
    if Some(checksum) != state.checksum {
        warn!(user = %user, version = state.version.get(),
            "compaction skipped: the local copy does not match its recorded checksum");
        return Ok(None);
    }
    let history = shared.config.history.enabled();
    if history {
        keep_replaced(shared, user, &current).await?;
        crash_point("compaction-kept-before-snapshot");
    }
    let floor = current.log_floor.unwrap_or(Version::ZERO);
    let folded_long_ago = shared.clock.now() - current.updated_at
        > chrono::Duration::from_std(shared.config.log_grace).unwrap_or(chrono::Duration::MAX);
    let floor = if folded_long_ago && !history {
        delete_changes(shared, user, floor, current.version).await?
    } else {
        floor
    };
    crash_point("compaction-deleted-before-snapshot");
    let metadata = SnapshotMetadata {
        version: state.version,
        sha256: image.sha256(),
        crc64nvme: Some(image.crc64nvme()),
        size: image.len(),
        writer: shared.config.writer_id.clone(),
        updated_at: shared.clock.now(),
        checksum: Some(checksum),
        log_floor: (floor != Version::ZERO).then_some(floor),
    };
    match shared
        .remote
        .replace_snapshot(user, &image, &metadata, etag)
        .await
    {
        Ok(_) => {
            crash_point("compaction-after-snapshot");
            info!(user = %user, version = state.version.get(), previous = current.version.get(),
                log_floor = floor.get(), "compacted: the log folded into a new snapshot");
            if history {
                match history::collect(
                    &shared.remote,
                    user,
                    history::Window::of(&shared.config, shared.clock.now()),
                )
                .await
                {
                    Ok(collected)
                        if collected.deleted_changes + collected.deleted_snapshots > 0 =>
                    {
                        info!(user = %user, changes = collected.deleted_changes,
                            snapshots = collected.deleted_snapshots,
                            "history past the retention window removed");
                    }
                    Ok(_) => {}
                    Err(err) => warn!(user = %user, error = %err,
                        "history retention failed; the next compaction tries again"),
                }
            }
            Ok(Some(state.version))
        }
        Err(StoreError::PreconditionFailed { .. }) => Ok(None), // another instance folded first
        Err(err) => Err(err.into()),
    }
}

/// Keeps the snapshot compaction is about to replace (`current`) under `snapshots/`,
/// compressed: history rebuilds the versions before the next snapshot from it. A snapshot
/// replaced meanwhile by another instance is left to it (our replace will be refused).
async fn keep_replaced(shared: &Context, user: &UserId, current: &SnapshotMetadata) -> Result<()> {
    let Some((_, metadata, body)) = shared.remote.read(user).await? else {
        return Ok(());
    };
    if metadata.version != current.version {
        return Ok(());
    }
    if let Err(mismatch) = check_body(&metadata, &body) {
        return Err(Error::Inconsistent {
            user: user.clone(),
            detail: format!("the snapshot to keep for history: {mismatch}"),
        });
    }
    let compressed = blocking(move || history::compress(&body)).await?;
    shared
        .remote
        .keep_snapshot(user, &metadata, compressed)
        .await?;
    Ok(())
}

/// Deletes the changes after `floor` up to `folded` (all older than the grace: they were
/// written before the snapshot that folded them); answers the new floor.
async fn delete_changes(
    shared: &Context,
    user: &UserId,
    floor: Version,
    folded: Version,
) -> Result<Version> {
    let last = folded.get().min(floor.get() + MAX_DELETES);
    for version in floor.get()..last {
        shared
            .remote
            .delete_change(user, Version::new(version))
            .await?;
    }
    Ok(Version::new(last))
}
