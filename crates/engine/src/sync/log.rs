//! Following the log (`docs/delta-sync.md`): the changes after the local version, fetched
//! one `GET` each, applied to the local copy through SQLite's page table, each in one
//! SQLite transaction, checked against the rolling checksum before and after.

use std::collections::VecDeque;
use std::path::Path;

use rusqlite::Connection;
use tracing::warn;

use crate::cache::SlotState;
use crate::context::{Context, blocking};
use crate::crash::crash_point;
use crate::delta::{self, Delta, DeltaError};
use crate::error::{Error, Result, delta_error};
use crate::local::{StagedDownload, SyncState};
use crate::remote::Change;
use crate::snapshot::Snapshot;
use crate::sync::upload::Outgoing;
use crate::tracked::TrackedConnection;
use crate::user::UserId;
use crate::version::Version;

/// How following the log ended.
pub(crate) enum Followed {
    /// The local copy is at the newest version.
    Newest(SyncState),
    /// The local copy is not the version its state names (a change did not fit it): it
    /// must be downloaded again.
    Diverged,
}

/// What the caller already knows of the change after the state it follows the log from.
pub(crate) enum Next {
    /// Nothing: it is asked for.
    Unknown,
    /// It was asked for (`None`: there is none).
    Known(Option<Change>),
}

/// Applies every change after `state` to the local copy, until the bucket has no newer
/// one: one `GET` when the copy is current.
pub(crate) async fn follow(
    shared: &Context,
    user: &UserId,
    slot: &mut SlotState,
    mut state: SyncState,
    next: Next,
) -> Result<Followed> {
    let mut newest = None;
    let mut ahead = Ahead::default();
    let mut next = match next {
        Next::Known(change) => change,
        Next::Unknown => shared.remote.next_change(user, state.version).await?,
    };
    while let Some(change) = next {
        let writable = slot
            .staged
            .as_ref()
            .is_none_or(StagedDownload::checked_on_arrival);
        if !writable {
            // A change applies to a file no check reads again: this download is hashed
            // after its last byte, so it is installed first.
            crate::sync::install::finish_staged(shared, user, slot).await;
            let installed = slot.sync.clone().unwrap_or_default();
            if installed.version != state.version {
                return Err(Error::Inconsistent {
                    user: user.clone(),
                    detail: "the downloaded database failed its checks; try again".into(),
                });
            }
        }
        let told = (
            change.metadata.writer.clone(),
            change.metadata.restored_from,
        );
        match apply(shared, user, slot, &state, change).await? {
            Some(applied) => state = applied,
            None => return Ok(Followed::Diverged),
        }
        newest = Some(told);
        next = ahead.next(shared, user, state.version).await?;
    }
    if let Some((writer, restored_from)) = newest {
        shared.publish(crate::events::Event::Version {
            user_id: user.to_string(),
            version: state.version,
            writer,
            restored_from,
        });
    }
    Ok(Followed::Newest(state))
}

/// Changes asked for at most at once by a copy behind.
const MAX_AHEAD: u64 = 8;

/// Changes asked for ahead of the one being applied: a copy many changes behind asks for up
/// to [`MAX_AHEAD`] side by side (the window doubles from one, so a copy one change behind
/// still costs two `GET`s), each assuming the change before it makes the next version. It
/// does, unless an `async` upload skipped versions: then the rest is asked for again.
#[derive(Default)]
struct Ahead {
    /// Each change asked for, by the version it applies to, in order.
    fetched: VecDeque<(Version, Option<Change>)>,
    /// How many to ask for next time.
    window: u64,
}

impl Ahead {
    /// The change after version `after`, if the bucket has one.
    async fn next(
        &mut self,
        shared: &Context,
        user: &UserId,
        after: Version,
    ) -> Result<Option<Change>> {
        if self.fetched.front().is_some_and(|(base, _)| *base != after) {
            self.fetched.clear();
        }
        if self.fetched.is_empty() {
            let window = self.window.clamp(1, MAX_AHEAD);
            let bases: Vec<Version> = (0..window).map(|k| Version::new(after.get() + k)).collect();
            let asked = bases
                .iter()
                .map(|base| shared.remote.next_change(user, *base));
            let changes = futures::future::try_join_all(asked).await?;
            self.fetched = bases.into_iter().zip(changes).collect();
            self.window = window * 2;
        }
        let change = self.fetched.pop_front().and_then(|(_, change)| change);
        if change.is_none() {
            self.fetched.clear();
        }
        Ok(change)
    }
}

/// The local copy's checksum at `state`, computed from the file when not yet known (state
/// written by an earlier release, a snapshot of format 1): read through the page table.
pub(crate) async fn known_checksum(
    shared: &Context,
    user: &UserId,
    slot: &mut SlotState,
    state: &mut SyncState,
) -> Result<u64> {
    if let Some(checksum) = state.checksum {
        return Ok(checksum);
    }
    let conn = connection(shared, user, slot).await?;
    let (conn, checksum) = blocking(move || {
        let checksum = conn.engine(delta::database_checksum);
        Ok((conn, checksum))
    })
    .await?;
    slot.conn = Some(conn);
    let checksum = checksum?;
    state.checksum = Some(checksum);
    Ok(checksum)
}

/// Applies one change; the new state, saved, or `None` when it does not fit the copy.
pub(crate) async fn apply(
    shared: &Context,
    user: &UserId,
    slot: &mut SlotState,
    state: &SyncState,
    change: Change,
) -> Result<Option<SyncState>> {
    let mut state = state.clone();
    let checksum = known_checksum(shared, user, slot, &mut state).await?;
    let conn = connection(shared, user, slot).await?;
    let owned = user.clone();
    let path = shared.layout.database_path(user);
    // A download not installed yet is fsynced once, at its install, not at every change.
    let on_download = match slot.staged.as_mut() {
        Some(staged) => {
            staged.unsynced_writes = true;
            true
        }
        None => false,
    };
    let (conn, applied) = blocking(move || {
        let synchronous = if on_download { "OFF" } else { "FULL" };
        conn.control(&format!("PRAGMA synchronous = {synchronous}"))?;
        let applied = Delta::decode(&change.bytes)
            .map_err(|err| delta_error(&owned, &path, err))
            .and_then(|delta| apply_in_transaction(&conn, &delta, checksum, &owned, &path));
        conn.control("PRAGMA synchronous = FULL")?;
        Ok((conn, applied.map(|applied| (applied, change))))
    })
    .await?;
    slot.conn = Some(conn);
    let (applied, change) = applied?;
    let checksum = match applied {
        Applied::Now(checksum) => checksum,
        Applied::Already => change.metadata.checksum,
        Applied::DoesNotFit => {
            warn!(user = %user, version = state.version.get(), next = change.metadata.version.get(),
                "the local copy does not match its recorded version; downloading it again");
            return Ok(None);
        }
    };
    let next = SyncState {
        version: change.metadata.version,
        etag: state.etag.clone(),
        updated_at: Some(change.metadata.updated_at),
        checksum: Some(checksum),
        file_counter: None,
    };
    crash_point("after-apply-before-state");
    if let Some(download) = &mut slot.staged {
        download.state = next.clone(); // saved when the download is installed
        return Ok(Some(next));
    }
    let saved = next.clone();
    let (layout, owned) = (shared.layout.clone(), user.clone());
    blocking(move || saved.save_for(&layout, &owned)).await?;
    slot.sync = Some(next.clone());
    Ok(Some(next))
}

/// What applying a change found.
enum Applied {
    /// Applied; the new checksum.
    Now(u64),
    /// The copy already held it (a crash between the local commit and the saved state).
    Already,
    /// The copy is neither the change's base nor its result.
    DoesNotFit,
}

fn apply_in_transaction(
    conn: &TrackedConnection,
    delta: &Delta,
    checksum: u64,
    user: &UserId,
    path: &Path,
) -> Result<Applied> {
    conn.control("BEGIN IMMEDIATE")?;
    let applied = conn.engine(|raw| delta::apply(raw, delta, checksum));
    let committed = match &applied {
        Ok(_) => conn.control("COMMIT").map_err(Error::from),
        Err(_) => Ok(()),
    };
    // A failed COMMIT (a full disk) may leave the transaction open; a no-op otherwise.
    conn.rollback();
    // Pages were written under SQLite's b-tree layer: nothing it cached may answer again.
    conn.engine(delta::forget_cached_pages)?;
    committed?;
    match applied {
        Ok(checksum) => Ok(Applied::Now(checksum)),
        Err(DeltaError::Mismatch { .. }) => {
            let actual = conn.engine(delta::database_checksum)?;
            Ok(if actual == delta.checksum_after {
                Applied::Already
            } else {
                Applied::DoesNotFit
            })
        }
        Err(err) => Err(delta_error(user, path, err)),
    }
}

/// The database a pending change makes: the local copy (at the change's base) with the
/// change applied, in memory. For keeping a lost write aside, or overwriting with it.
pub(crate) async fn image_after(
    shared: &Context,
    user: &UserId,
    slot: &mut SlotState,
    outgoing: &Outgoing,
) -> Result<Snapshot> {
    let Outgoing::Change { bytes, .. } = outgoing else {
        return Err(Error::internal("a whole image has no base to apply to"));
    };
    let mut state = slot.sync.clone().unwrap_or_default();
    let checksum = known_checksum(shared, user, slot, &mut state).await?;
    slot.conn = None; // the copy is read by a connection of its own
    let path = shared.layout.database_path(user);
    let owned = user.clone();
    let bytes = bytes.clone();
    blocking(move || {
        let delta = Delta::decode(&bytes).map_err(|err| delta_error(&owned, &path, err))?;
        let source =
            Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut copy = Connection::open_in_memory()?;
        {
            let backup = rusqlite::backup::Backup::new(&source, &mut copy)?;
            backup.run_to_completion(256, std::time::Duration::ZERO, None)?;
        }
        delta::apply_committed(&copy, &delta, checksum)
            .map_err(|err| delta_error(&owned, &path, err))?;
        Ok(Snapshot::take(&copy)?)
    })
    .await
}

/// The user's warm connection, opened on the local file if there is none.
async fn connection(
    shared: &Context,
    user: &UserId,
    slot: &mut SlotState,
) -> Result<TrackedConnection> {
    match slot.conn.take() {
        Some(conn) => Ok(conn),
        None => shared.open_connection(user, slot.staged.is_some()).await,
    }
}
