//! Seed rule `version-compare-on-start`: before a request touches a user's database,
//! compare the local version with the bucket's and download when the bucket is newer.
//!
//! One round trip when the copy is current: a `GET` of the change after the local version
//! (`docs/delta-sync.md`); 404 means current, a body is applied and the next one asked
//! for ([`super::log`]). A new user, or one whose snapshot is due to be read again, starts
//! from the snapshot: a newer one is staged as it arrives and answers the request at once
//! ([`super::staged`]); its body must match its checksums, and each change its own.

use std::time::Instant;

use tracing::warn;

use crate::cache::SlotState;
use crate::config::Durability;
use crate::context::{Context, blocking};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::local::{self, SyncState};
use crate::metrics::EngineMetrics;
use crate::remote::Fetch;
use crate::store::StoreError;
use crate::sync::install;
use crate::sync::log::{self, Followed, Next};
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
                checksum: None,
                ..state
            },
            false,
        ));
    }
    pending::finish_pending(shared, user, slot).await?;
    let mut state = compare(shared, user, slot).await?;
    if state.version != Version::ZERO && state.checksum.is_none() {
        // A write's change is checked against it: computed once from the file.
        let checksum = log::known_checksum(shared, user, slot, &mut state).await?;
        match &mut slot.staged {
            Some(staged) => staged.state.checksum = Some(checksum),
            None => {
                if let Some(sync) = &mut slot.sync {
                    sync.checksum = Some(checksum);
                }
            }
        }
    }
    Ok((state, true))
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

/// The version check proper. The snapshot is read when nothing is here yet, and again
/// when this instance has not read it for half the log's grace (a `HEAD`, then the
/// download only if it is newer than the local copy); then the log is followed from the
/// local version: ONE `GET` when the copy is current. A copy that a change does not fit
/// is downloaded again, once.
async fn compare_once(
    shared: &Context,
    user: &UserId,
    slot: &mut SlotState,
    parts: Parts,
) -> Result<SyncState> {
    // A download still being checked is what the request would run on: its version is the base.
    let mut state = match &slot.staged {
        Some(staged) => staged.state.clone(),
        None => slot.sync.clone().unwrap_or_default(),
    };
    if !shared.config.version_check {
        return Ok(state);
    }
    for _ in 0..2 {
        let next;
        (state, next) = read_snapshot(shared, user, slot, state, parts).await?;
        if state.version == Version::ZERO {
            return Ok(state); // a user with nothing in the bucket
        }
        match log::follow(shared, user, slot, state, next).await? {
            Followed::Newest(state) => return Ok(state),
            Followed::Diverged => {
                if slot.staged.take().is_some() {
                    install::discard(shared, user).await;
                }
                slot.conn = None;
                slot.snapshot_read_at = None;
                state = SyncState::default();
                slot.sync = Some(state.clone());
            }
        }
    }
    Err(inconsistent(
        user,
        "the local copy could not be brought to the bucket's version".into(),
    ))
}

/// Reads the snapshot if it is due (see [`compare_once`]) and downloads it if it is newer
/// than the local copy; the state the log is then followed from, and what is known of the
/// change after it.
async fn read_snapshot(
    shared: &Context,
    user: &UserId,
    slot: &mut SlotState,
    state: SyncState,
    parts: Parts,
) -> Result<(SyncState, Next)> {
    let due = slot
        .snapshot_read_at
        .is_none_or(|read| read.elapsed() >= shared.config.log_grace / 2);
    if state.version != Version::ZERO && !due {
        return Ok((state, Next::Unknown));
    }
    if state.version != Version::ZERO {
        match shared.remote.describe(user).await? {
            None => return Err(missing(user, &state)),
            Some((_, _, snapshot)) if snapshot.version <= state.version => {
                slot.snapshot_read_at = Some(Instant::now());
                slot.snapshot_version = Some(snapshot.version);
                return Ok((state, Next::Unknown));
            }
            Some(_) => {}
        }
    }
    let etag = state.etag.as_ref();
    // In parts side by side, the first `GET` asks for the first part only.
    let first_part = (parts == Parts::SideBySide && shared.config.download_parallelism > 1)
        .then_some(shared.config.download_part_bytes);
    let fetched = shared.remote.fetch(user, etag, first_part).await?;
    slot.snapshot_read_at = Some(Instant::now());
    match fetched {
        Fetch::NotModified => Ok((state, Next::Unknown)),
        Fetch::Missing if state.version == Version::ZERO => Ok((state, Next::Unknown)),
        Fetch::Missing => Err(missing(user, &state)),
        Fetch::Found(incoming) if incoming.metadata.version <= state.version => {
            slot.snapshot_version = Some(incoming.metadata.version);
            Ok((state, Next::Unknown))
        }
        Fetch::Found(incoming) => {
            slot.snapshot_version = Some(incoming.metadata.version);
            slot.log_bytes = 0;
            // Asked before the download: a change after it is applied to the download.
            let next = shared
                .remote
                .next_change(user, incoming.metadata.version)
                .await?;
            // The rest of the log is asked for while the download comes.
            let rest = async {
                match &next {
                    Some(change) => log::all_after(shared, user, change.metadata.version).await,
                    None => Ok(Vec::new()),
                }
            };
            let new_state = SyncState {
                version: incoming.metadata.version,
                etag: Some(incoming.etag.clone()),
                updated_at: Some(incoming.metadata.updated_at),
                checksum: incoming.metadata.checksum,
                file_counter: None,
            };
            let writer = incoming.metadata.writer.clone();
            let first = 0..first_part.map_or(incoming.size, |part| part.min(incoming.size));
            let download = Download {
                incoming,
                state: new_state.clone(),
                first,
                log_follows: next.is_some(),
            };
            let (staged, rest) =
                futures::future::join(staged::stage(shared, user, slot, download), rest).await;
            staged?;
            let changes = next.into_iter().chain(rest?).collect();
            EngineMetrics::add(&shared.metrics.downloads, 1);
            shared.publish(Event::Version {
                user_id: user.to_string(),
                version: new_state.version,
                writer,
                restored_from: None,
            });
            Ok((new_state, Next::Known(changes)))
        }
    }
}

fn missing(user: &UserId, state: &SyncState) -> Error {
    inconsistent(
        user,
        format!(
            "the database is missing from the bucket, but version {} was synced here; \
             refusing to start over from an empty database",
            state.version
        ),
    )
}

/// Reads the sync state from disk on first use, recovering from an interrupted install.
async fn load_state(shared: &Context, user: &UserId, slot: &mut SlotState) -> Result<()> {
    if slot.sync.is_none() {
        let layout = shared.layout.clone();
        let owned = user.clone();
        let state = blocking(move || {
            let state = SyncState::load_for(&layout, &owned)?;
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
