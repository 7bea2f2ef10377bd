//! Seed rule `version-compare-on-start`: before a request touches a user's database,
//! compare the local version with the bucket's and download when the bucket is newer.
//!
//! One round trip: a `GET` with `If-None-Match: <etag of the local copy>` answers
//! "not modified" or brings the newer object. Cellar then checks what it got instead of
//! trusting it: the version must not be older than one already seen here (some stores
//! were seen serving a stale object), and the body must match its checksums. A newer
//! object is staged as it arrives and answers the request at once ([`super::staged`]).

use std::time::Instant;

use tracing::{error, warn};

use crate::cache::SlotState;
use crate::config::Durability;
use crate::context::{Context, blocking};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::local::{self, SyncState};
use crate::metadata::SnapshotMetadata;
use crate::metrics::EngineMetrics;
use crate::remote::Fetch;
use crate::store::StoreError;
use crate::sync::install;
use crate::sync::pending;
use crate::sync::staged::{self, Download};
use crate::user::UserId;
use crate::version::Version;

/// Brings the local copy of `user` up to the bucket's version; returns the state it is at,
/// and whether the bucket has that version (false only while an `async` write is pending:
/// then the local copy is ahead and the background uploader takes it to the bucket).
pub(crate) async fn version_compare_on_start(
    shared: &Context,
    user: &UserId,
    slot: &mut SlotState,
) -> Result<(SyncState, bool)> {
    install::finish_settled(shared, user, slot).await;
    load_state(shared, user, slot).await?;
    if shared.config.durability == Durability::Async
        && let Some(local) = pending::pending_version(shared, user).await?
    {
        let state = slot.sync.clone().unwrap_or_default();
        return Ok((
            SyncState {
                version: local,
                ..state
            },
            false,
        ));
    }
    pending::finish_pending(shared, user, slot).await?;
    compare(shared, user, slot).await.map(|state| (state, true))
}

/// The version check proper: one conditional `GET`, and a download if the bucket is newer.
/// A download whose object changed between its parts (a later part refused with 412) is
/// thrown away and made again as ONE whole `GET`: one answer is always one version of the
/// object, so a user written faster than its parts arrive still gets in.
async fn compare(shared: &Context, user: &UserId, slot: &mut SlotState) -> Result<SyncState> {
    let started = Instant::now();
    let outcome = match compare_once(shared, user, slot, Parts::SideBySide).await {
        Err(Error::Store(StoreError::PreconditionFailed { key })) => {
            warn!(user = %user, key, "the object changed while it was downloaded; downloading it whole");
            compare_once(shared, user, slot, Parts::Whole).await
        }
        outcome => outcome,
    };
    if shared.config.version_check {
        shared.metrics.sync_in_latency.observe(started.elapsed());
    }
    outcome
}

/// How a download comes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Parts {
    /// In parts side by side, as configured (`sync.download_parallelism`).
    SideBySide,
    /// In one `GET`.
    Whole,
}

/// One conditional `GET`: the whole object, or its first part when parts come side by side.
async fn compare_once(
    shared: &Context,
    user: &UserId,
    slot: &mut SlotState,
    parts: Parts,
) -> Result<SyncState> {
    // A download still being checked is what the request would run on: its version is the base.
    let state = match &slot.staged {
        Some(staged) => staged.state.clone(),
        None => slot.sync.clone().unwrap_or_default(),
    };
    if !shared.config.version_check {
        return Ok(state);
    }
    let etag = state.etag.as_ref();
    // In parts side by side, the first `GET` asks for the first part only.
    let first_part = (parts == Parts::SideBySide && shared.config.download_parallelism > 1)
        .then_some(shared.config.download_part_bytes);
    match shared.remote.fetch(user, etag, first_part).await? {
        Fetch::NotModified => Ok(state),
        Fetch::Missing if state.version == Version::ZERO => Ok(state),
        Fetch::Missing => Err(inconsistent(
            user,
            format!(
                "the database is missing from the bucket, but version {} was synced here; \
                 refusing to start over from an empty database",
                state.version
            ),
        )),
        Fetch::Found(incoming) => {
            check_version(user, &state, &incoming.metadata)?;
            let new_state = SyncState {
                version: incoming.metadata.version,
                etag: Some(incoming.etag.clone()),
                updated_at: Some(incoming.metadata.updated_at),
            };
            let writer = incoming.metadata.writer.clone();
            let first = 0..first_part.map_or(incoming.size, |part| part.min(incoming.size));
            let download = Download {
                incoming,
                state: new_state.clone(),
                first,
            };
            staged::stage(shared, user, slot, download).await?;
            EngineMetrics::add(&shared.metrics.downloads, 1);
            shared.publish(Event::Version {
                user_id: user.to_string(),
                version: new_state.version,
                writer,
            });
            Ok(new_state)
        }
    }
}

/// Refuses a download whose version is older than the local one (a stale read), logged
/// with its evidence, never retried away; checked before the body is read.
fn check_version(user: &UserId, local: &SyncState, remote: &SnapshotMetadata) -> Result<()> {
    if remote.version < local.version {
        error!(user = %user, remote_version = remote.version.get(), local_version = local.version.get(),
            remote_writer = %remote.writer, remote_updated_at = %remote.updated_at,
            "stale read: the store returned an older version than one already seen");
        return Err(inconsistent(
            user,
            format!(
                "the store returned version {} (written by {} at {}) but version {} was \
                 already seen here; refusing to go back",
                remote.version, remote.writer, remote.updated_at, local.version
            ),
        ));
    }
    if remote.version == local.version && local.version != Version::ZERO {
        warn!(user = %user, version = local.version.get(),
            "the bucket holds different bytes under the same version; adopting the bucket's");
    }
    Ok(())
}

/// Reads the sync state from disk on first use, recovering from an interrupted install.
async fn load_state(shared: &Context, user: &UserId, slot: &mut SlotState) -> Result<()> {
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

fn inconsistent(user: &UserId, detail: String) -> Error {
    Error::Inconsistent {
        user: user.clone(),
        detail,
    }
}
