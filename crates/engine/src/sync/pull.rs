//! Seed rule `version-compare-on-start`: before a request touches a user's database,
//! compare the local version with the bucket's and download when the bucket is newer.
//!
//! One round trip: a `GET` with `If-None-Match: <etag of the local copy>` answers
//! "not modified" or brings the newer object. Cellar then checks what it got instead of
//! trusting it: the body must hash to `cellar-sha256`, and the version must not be older
//! than one already seen here (some stores were seen serving a stale object).

use std::time::Instant;

use tracing::{error, warn};

use crate::cache::SlotState;
use crate::engine::{Shared, blocking};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::local::{self, SyncState};
use crate::metadata::SnapshotMetadata;
use crate::metrics::EngineMetrics;
use crate::snapshot::sha256_hex;
use crate::store::Fetched;
use crate::sync::pending;
use crate::{Durability, UserId, Version};

/// Brings the local copy of `user` up to the bucket's version; returns the state it is at,
/// and whether the bucket has that version (false only while an `async` write is pending:
/// then the local copy is ahead and the background uploader takes it to the bucket).
pub(crate) async fn version_compare_on_start(
    shared: &Shared,
    user: &UserId,
    slot: &mut SlotState,
) -> Result<(SyncState, bool)> {
    load_state(shared, user, slot).await?;
    if shared.config.durability == Durability::Async {
        if let Some(local) = pending::pending_version(shared, user).await? {
            let state = slot.sync.clone().unwrap_or_default();
            return Ok((
                SyncState {
                    version: local,
                    ..state
                },
                false,
            ));
        }
    }
    pending::finish_pending(shared, user, slot).await?;
    compare(shared, user, slot).await.map(|state| (state, true))
}

/// The version check proper: one conditional `GET`, and a download if the bucket is newer.
async fn compare(shared: &Shared, user: &UserId, slot: &mut SlotState) -> Result<SyncState> {
    let started = Instant::now();
    let state = slot.sync.clone().unwrap_or_default();
    if !shared.config.version_check {
        return Ok(state);
    }
    let key = shared.layout.database_key(user);
    let fetched = shared.store.get(&key, state.etag.as_ref()).await?;
    let outcome = match fetched {
        Fetched::NotModified => Ok(state),
        Fetched::NotFound if state.version == Version::ZERO => Ok(state),
        Fetched::NotFound => Err(inconsistent(
            user,
            format!(
                "{key} is missing from the bucket, but version {} was synced here; \
                 refusing to start over from an empty database",
                state.version
            ),
        )),
        Fetched::Found { info, body } => {
            let remote = SnapshotMetadata::from_raw(&info.metadata)
                .map_err(|detail| inconsistent(user, format!("{key}: {detail}")))?;
            check_download(user, &key, &state, &remote, &body)?;
            let new_state = SyncState {
                version: remote.version,
                etag: Some(info.etag),
                updated_at: Some(remote.updated_at),
            };
            install(shared, user, slot, body.clone(), new_state.clone()).await?;
            EngineMetrics::add(&shared.metrics.downloads, 1);
            EngineMetrics::add(&shared.metrics.bytes_downloaded, body.len() as u64);
            shared.publish(Event::Version {
                user_id: user.to_string(),
                version: remote.version,
                writer: remote.writer,
            });
            Ok(new_state)
        }
    };
    shared.metrics.sync_in_latency.observe(started.elapsed());
    outcome
}

/// Refuses a download whose body does not match its checksum or whose version is older
/// than the local one. Both are logged with their evidence, never retried away.
fn check_download(
    user: &UserId,
    key: &str,
    local: &SyncState,
    remote: &SnapshotMetadata,
    body: &[u8],
) -> Result<()> {
    let actual = sha256_hex(body);
    if actual != remote.sha256 {
        error!(user = %user, key, expected = %remote.sha256, actual = %actual, size = body.len(),
            "downloaded body does not match its cellar-sha256");
        return Err(inconsistent(
            user,
            format!(
                "{key}: cellar-sha256 says {} but the {} bytes received hash to {actual}",
                remote.sha256,
                body.len()
            ),
        ));
    }
    if remote.version < local.version {
        error!(user = %user, key, remote_version = remote.version.get(), local_version = local.version.get(),
            remote_writer = %remote.writer, remote_updated_at = %remote.updated_at,
            "stale read: the store returned an older version than one already seen");
        return Err(inconsistent(
            user,
            format!(
                "{key}: the store returned version {} (written by {} at {}) but version {} was \
                 already seen here; refusing to go back",
                remote.version, remote.writer, remote.updated_at, local.version
            ),
        ));
    }
    if remote.version == local.version && local.version != Version::ZERO {
        warn!(user = %user, key, version = local.version.get(),
            "the bucket holds different bytes under the same version; adopting the bucket's");
    }
    Ok(())
}

/// Reads the sync state from disk on first use, recovering from an interrupted install.
async fn load_state(shared: &Shared, user: &UserId, slot: &mut SlotState) -> Result<()> {
    if slot.sync.is_none() {
        let layout = shared.layout.clone();
        let owned = user.clone();
        let state = blocking(move || {
            let state = SyncState::load(&layout.sync_state_path(&owned))?;
            local::reset_if_missing(&layout, &owned, state)
        })
        .await?;
        slot.sync = Some(state);
    }
    Ok(())
}

/// Replaces the local database with `image` and records `state`; connections to the old
/// file are closed first. The image is taken as it is (a download's `Bytes`, a `Vec`):
/// copying a large database once more costs as much as hashing it.
pub(crate) async fn install(
    shared: &Shared,
    user: &UserId,
    slot: &mut SlotState,
    image: impl AsRef<[u8]> + Send + 'static,
    state: SyncState,
) -> Result<()> {
    slot.conn = None;
    slot.sync = None;
    let layout = shared.layout.clone();
    let owned = user.clone();
    let saved = state.clone();
    blocking(move || {
        local::install_image(&layout, &owned, image.as_ref())?;
        saved.save(&layout.sync_state_path(&owned))
    })
    .await?;
    slot.sync = Some(state);
    Ok(())
}

fn inconsistent(user: &UserId, detail: String) -> Error {
    Error::Inconsistent {
        user: user.clone(),
        detail,
    }
}
