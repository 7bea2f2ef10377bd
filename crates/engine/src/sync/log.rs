//! Following the log (`docs/delta-sync.md`): the changes after the local version, fetched
//! one `GET` each, applied to the local copy through SQLite's page table, each in one
//! SQLite transaction (onto a download not installed yet, those fetched together in one),
//! checked against the rolling checksum before and after.

use std::collections::VecDeque;
use std::path::Path;

use bytes::Bytes;
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

/// What the caller already knows of the changes after the state it follows the log from.
pub(crate) enum Next {
    /// Nothing: the change after it is asked for.
    Unknown,
    /// Every change after it, asked for to the log's end (empty: none); see [`all_after`].
    Known(Vec<Change>),
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
    // Changes known to be the log's last need no `GET` after them.
    let (mut run, at_end) = match next {
        Next::Known(changes) => (changes, true),
        Next::Unknown => (
            Vec::from_iter(shared.remote.next_change(user, state.version).await?),
            false,
        ),
    };
    while let Some(last) = run.last() {
        let after = last.metadata.version;
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
        run.extend(ahead.fetched_after(after));
        let told = run.last().map(|change| {
            (
                change.metadata.writer.clone(),
                change.metadata.restored_from,
            )
        });
        match apply_run(shared, user, slot, &state, run).await? {
            Some(applied) => state = applied,
            None => return Ok(Followed::Diverged),
        }
        newest = told;
        run = match at_end {
            true => Vec::new(),
            false => Vec::from_iter(ahead.next(shared, user, state.version).await?),
        };
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

/// Every change after version `after`, to the log's end, asked for [`MAX_AHEAD`] side by
/// side at a time: for a download, alongside it. They are held in memory until applied,
/// which compaction bounds (`sync.compact_after_versions` changes, or a quarter of the
/// database in bytes).
pub(crate) async fn all_after(
    shared: &Context,
    user: &UserId,
    mut after: Version,
) -> Result<Vec<Change>> {
    let mut ahead = Ahead {
        window: MAX_AHEAD,
        ..Ahead::default()
    };
    let mut changes = Vec::new();
    loop {
        ahead.ask(shared, user, after).await?;
        let more = ahead.fetched_after(after);
        match more.last() {
            Some(last) => after = last.metadata.version,
            None => return Ok(changes),
        }
        changes.extend(more);
    }
}

/// Changes asked for at most at once by a copy behind.
const MAX_AHEAD: u64 = 8;

/// Changes asked for ahead of the one being applied: a copy many changes behind asks for up
/// to [`MAX_AHEAD`] side by side (the window doubles from one, so a copy one change behind
/// still costs two `GET`s; [`all_after`], alongside a download, starts at the most), each
/// assuming the change before it makes the next version. It does, unless an `async` upload
/// skipped versions: then the rest is asked for again.
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
        self.ask(shared, user, after).await?;
        let change = self.fetched.pop_front().and_then(|(_, change)| change);
        if change.is_none() {
            self.fetched.clear();
        }
        Ok(change)
    }

    /// Asks for the changes from version `after` on, unless they were asked for already.
    async fn ask(&mut self, shared: &Context, user: &UserId, after: Version) -> Result<()> {
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
        Ok(())
    }

    /// The changes already fetched that follow version `after` one after another, taken
    /// out: they can be applied as one run with the change that makes `after`.
    fn fetched_after(&mut self, mut after: Version) -> Vec<Change> {
        let mut taken = 0;
        for (base, change) in &self.fetched {
            match change {
                Some(change) if *base == after => after = change.metadata.version,
                _ => break,
            }
            taken += 1;
        }
        self.fetched
            .drain(..taken)
            .filter_map(|(_, change)| change)
            .collect()
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

/// Applies `run`, changes that follow one another after `state`: the new state, saved, or
/// `None` when a change does not fit the copy. On a download they are applied in one
/// SQLite transaction; if that fails, or on the local copy, one at a time, which finds a
/// change at fault and does with it what it would alone (skip it if the copy holds it).
pub(crate) async fn apply_run(
    shared: &Context,
    user: &UserId,
    slot: &mut SlotState,
    state: &SyncState,
    run: Vec<Change>,
) -> Result<Option<SyncState>> {
    // A download's state is saved once, at its install: a crash anywhere in a run leaves
    // the old copy and state. The local copy saves its state after each change, so that
    // one already in the file (a crash before its state was saved) is known, one at a time.
    if let [.., last] = run.as_slice()
        && run.len() > 1
        && slot.staged.is_some()
        && let Ok(Applied::Now(checksum)) = apply(shared, user, slot, state, &run).await
    {
        return advance(shared, user, slot, state, last, checksum)
            .await
            .map(Some);
    }
    let mut state = state.clone();
    for change in &run {
        let checksum = match apply(shared, user, slot, &state, std::slice::from_ref(change)).await?
        {
            Applied::Now(checksum) => checksum,
            Applied::Already => change.metadata.checksum,
            Applied::DoesNotFit => {
                warn!(user = %user, version = state.version.get(), next = change.metadata.version.get(),
                    "the local copy does not match its recorded version; downloading it again");
                return Ok(None);
            }
        };
        state = advance(shared, user, slot, &state, change, checksum).await?;
    }
    Ok(Some(state))
}

/// Applies `changes` in one SQLite transaction, on the local copy at `state`.
async fn apply(
    shared: &Context,
    user: &UserId,
    slot: &mut SlotState,
    state: &SyncState,
    changes: &[Change],
) -> Result<Applied> {
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
    let bodies: Vec<Bytes> = changes.iter().map(|change| change.bytes.clone()).collect();
    let (conn, applied) = blocking(move || {
        let synchronous = if on_download { "OFF" } else { "FULL" };
        conn.control(&format!("PRAGMA synchronous = {synchronous}"))?;
        let deltas = bodies.iter().map(|bytes| Delta::decode(bytes));
        let applied = apply_in_transaction(&conn, deltas, checksum, &owned, &path);
        conn.control("PRAGMA synchronous = FULL")?;
        Ok((conn, applied))
    })
    .await?;
    slot.conn = Some(conn);
    applied
}

/// The state once `change` is applied, the copy's checksum then being `checksum`: saved,
/// or on a download kept with it until its install.
async fn advance(
    shared: &Context,
    user: &UserId,
    slot: &mut SlotState,
    state: &SyncState,
    change: &Change,
    checksum: u64,
) -> Result<SyncState> {
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
        return Ok(next);
    }
    let saved = next.clone();
    let (layout, owned) = (shared.layout.clone(), user.clone());
    blocking(move || saved.save_for(&layout, &owned)).await?;
    slot.sync = Some(next.clone());
    Ok(next)
}

/// What applying changes found.
enum Applied {
    /// Applied; the new checksum.
    Now(u64),
    /// The copy already held them (a crash between the local commit and the saved state).
    Already,
    /// The copy is neither their base nor their result.
    DoesNotFit,
}

fn apply_in_transaction(
    conn: &TrackedConnection,
    deltas: impl IntoIterator<Item = std::result::Result<Delta, DeltaError>>,
    checksum: u64,
    user: &UserId,
    path: &Path,
) -> Result<Applied> {
    // The result of the last delta read: the one that failed, if one did.
    let mut checksum_after = None;
    let deltas = deltas.into_iter().inspect(|delta| {
        checksum_after = delta.as_ref().ok().map(|delta| delta.checksum_after);
    });
    conn.control("BEGIN IMMEDIATE")?;
    let applied = conn.engine(|raw| delta::apply(raw, deltas, checksum));
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
            Ok(if Some(actual) == checksum_after {
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
        let source =
            Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut copy = Connection::open_in_memory()?;
        {
            let backup = rusqlite::backup::Backup::new(&source, &mut copy)?;
            backup.run_to_completion(256, std::time::Duration::ZERO, None)?;
        }
        delta::apply_committed(&copy, [Delta::decode(&bytes)], checksum)
            .map_err(|err| delta_error(&owned, &path, err))?;
        Ok(Snapshot::take(&copy)?)
    })
    .await
}

/// The user's warm connection, opened on the local file if there is none.
pub(crate) async fn connection(
    shared: &Context,
    user: &UserId,
    slot: &mut SlotState,
) -> Result<TrackedConnection> {
    match slot.conn.take() {
        Some(conn) => Ok(conn),
        None => shared.open_connection(user, slot.staged.is_some()).await,
    }
}
