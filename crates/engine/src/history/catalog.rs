//! What versions a user's bucket holds, read from two listings (the log, the kept
//! snapshots) and the snapshot's metadata: a few store requests however many versions.

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::error::Result;
use crate::remote::{Listing, Remote};
use crate::user::UserId;
use crate::version::Version;

/// How many `HEAD`s [`Catalog::with_writers`] keeps in flight.
const HEADS_IN_FLIGHT: usize = 16;

/// The kind of object that holds a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Holder {
    /// A change of the log (`log/`).
    Change,
    /// The snapshot at `database.sqlite`.
    Snapshot,
    /// A snapshot kept for history (`snapshots/`).
    KeptSnapshot,
}

/// One restorable version of a user's database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionEntry {
    /// The version.
    pub version: Version,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// The objects that hold it.
    pub held_by: Vec<Holder>,
    /// What writing it shipped: its change's size, or the snapshot's for a first version.
    pub shipped_bytes: u64,
    /// The database's size at this version, where a snapshot tells it.
    pub size_bytes: Option<u64>,
    /// The instance that wrote it, where known (see [`Catalog::with_writers`]).
    pub writer: Option<String>,
}

/// A user's versions, oldest first, with what the listings said.
#[derive(Clone, Debug)]
pub(crate) struct Catalog {
    /// Every restorable version.
    pub entries: Vec<VersionEntry>,
    /// The snapshot at `database.sqlite`: its version and when it was written.
    pub snapshot: (Version, DateTime<Utc>),
    /// The kept snapshots as listed.
    pub kept: Vec<Listing>,
    /// The changes as listed.
    pub changes: Vec<Listing>,
}

impl Catalog {
    /// Reads `user`'s catalog: the snapshot's `HEAD`, one listing of the log and one of the
    /// kept snapshots (a listing answers up to 1 000 keys per request), and the `HEAD` of
    /// the last change (the version it makes is in its metadata alone). `None`: no user.
    pub async fn read(remote: &Remote, user: &UserId) -> Result<Option<Self>> {
        let Some((_, size, snapshot)) = remote.describe(user).await? else {
            return Ok(None);
        };
        let changes = remote.list_changes(user).await?;
        let kept = remote.list_kept_snapshots(user).await?;
        let last_made = match changes.last() {
            Some(last) => remote
                .change_head(user, last.version)
                .await?
                .map(|change| change.version),
            None => None,
        };
        let mut entries: Vec<VersionEntry> = Vec::new();
        for (i, change) in changes.iter().enumerate() {
            // A change makes the version the next one applies after.
            let made = match changes.get(i + 1) {
                Some(next) => next.version,
                None => last_made.unwrap_or(Version::new(change.version.get() + 1)),
            };
            entries.push(VersionEntry {
                version: made,
                created_at: change.modified,
                held_by: vec![Holder::Change],
                shipped_bytes: change.size,
                size_bytes: None,
                writer: None,
            });
        }
        let mut add_snapshot =
            |version: Version, at, size, holder, writer: Option<String>| match entries
                .iter_mut()
                .find(|entry| entry.version == version)
            {
                Some(entry) => {
                    entry.held_by.push(holder);
                    entry.size_bytes = Some(size);
                }
                None => entries.push(VersionEntry {
                    version,
                    created_at: at,
                    held_by: vec![holder],
                    shipped_bytes: size,
                    size_bytes: Some(size),
                    writer,
                }),
            };
        add_snapshot(
            snapshot.version,
            snapshot.updated_at,
            size,
            Holder::Snapshot,
            Some(snapshot.writer.clone()),
        );
        for listing in &kept {
            add_snapshot(
                listing.version,
                listing.modified,
                listing.size,
                Holder::KeptSnapshot,
                None,
            );
        }
        // A version only a kept snapshot holds (a first version, or the base left by
        // retention) is dated and signed by the snapshot's own metadata: one `HEAD` each.
        for entry in &mut entries {
            if entry.held_by == [Holder::KeptSnapshot]
                && let Some(kept) = remote.kept_snapshot_head(user, entry.version).await?
            {
                entry.created_at = kept.updated_at;
                entry.writer = Some(kept.writer);
            }
        }
        entries.sort_by_key(|entry| entry.version);
        for entry in &mut entries {
            entry.held_by.sort();
        }
        let entries = rebuildable(entries, &changes);
        Ok(Some(Self {
            entries,
            snapshot: (snapshot.version, snapshot.updated_at),
            kept,
            changes,
        }))
    }

    /// The newest version.
    pub fn newest(&self) -> Version {
        self.entries
            .last()
            .map_or(self.snapshot.0, |entry| entry.version)
    }

    /// The version current at `at`: the newest written at or before it.
    pub fn current_at(&self, at: DateTime<Utc>) -> Option<Version> {
        self.entries
            .iter()
            .take_while(|entry| entry.created_at <= at)
            .last()
            .map(|entry| entry.version)
    }

    /// Fills in the writer of the newest `newest` versions held by a change, by their
    /// changes' `HEAD`s (one request per version, a few side by side): only when asked for.
    pub async fn with_writers(
        mut self,
        remote: &Remote,
        user: &UserId,
        newest: usize,
    ) -> Result<Self> {
        // A change applies after the version before it in the chain.
        let bases: Vec<_> = self
            .entries
            .windows(2)
            .rev()
            .take(newest)
            .filter(|pair| pair[1].held_by.contains(&Holder::Change))
            .map(|pair| pair[0].version)
            .collect();
        let heads: Vec<_> = futures::stream::iter(bases)
            .map(|base| remote.change_head(user, base))
            .buffered(HEADS_IN_FLIGHT)
            .try_collect()
            .await?;
        for head in heads.into_iter().flatten() {
            if let Ok(at) = self
                .entries
                .binary_search_by_key(&head.version, |entry| entry.version)
            {
                self.entries[at].writer = Some(head.writer);
            }
        }
        Ok(self)
    }
}

/// The entries that can be rebuilt: a snapshot's version, or a change's whose base can
/// (retention removes the oldest changes first, but a run cut short may leave gaps).
fn rebuildable(entries: Vec<VersionEntry>, changes: &[Listing]) -> Vec<VersionEntry> {
    let mut reached = std::collections::BTreeSet::new();
    let mut bases = changes.iter().map(|change| change.version);
    let mut kept = Vec::with_capacity(entries.len());
    for entry in entries {
        let from_snapshot = entry.held_by.iter().any(|h| *h != Holder::Change);
        // Changes and their entries come in the same order: the nth change makes the
        // nth version held by a change.
        let base = match entry.held_by.contains(&Holder::Change) {
            true => bases.next(),
            false => None,
        };
        if from_snapshot || base.is_some_and(|base| reached.contains(&base)) {
            reached.insert(entry.version);
            kept.push(entry);
        }
    }
    kept
}
