//! Retention (`docs/history.md`): what of a user's history the window keeps, and the
//! removal of the rest. It reads two listings, so it runs off the request path only:
//! after a compaction, and from `cellar gc`.
//!
//! Removal never breaks a kept version: the oldest kept version is rebuilt from the newest
//! snapshot at or before it (its *base*), so only snapshots older than the base and changes
//! folded into it go. A change goes only once a snapshot past it has been in the bucket
//! for longer than the log's grace: an instance that last read the snapshot before it
//! would otherwise take the missing key for the end of the log (the ETag ABA hazard).

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::config::{EngineConfig, HistoryConfig};
use crate::error::Result;
use crate::history::catalog::Catalog;
use crate::remote::Remote;
use crate::user::UserId;
use crate::version::Version;

/// Objects deleted per run at most: deletes never pile up behind one user.
const MAX_DELETES: usize = 1000;
/// Deletes in flight at once.
const DELETES_IN_FLIGHT: usize = 8;

/// What one collection of a user's history did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Collected {
    /// The oldest version still restorable afterwards (`None`: the user has no database).
    pub oldest_kept: Option<Version>,
    /// Changes of the log deleted.
    pub deleted_changes: u64,
    /// Kept snapshots deleted.
    pub deleted_snapshots: u64,
    /// True when more could go than one run deletes (the next run goes on).
    pub more: bool,
}

/// The window's rules, at one moment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub history: HistoryConfig,
    pub log_grace: std::time::Duration,
    pub now: DateTime<Utc>,
}

/// What [`Window::plan`] decided for one catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Plan {
    oldest_kept: Version,
    /// Changes applying after these versions go.
    changes: Vec<Version>,
    /// Kept snapshots at these versions go.
    snapshots: Vec<Version>,
}

impl Window {
    /// The window `config` sets, at `now`.
    pub fn of(config: &EngineConfig, now: DateTime<Utc>) -> Self {
        Self {
            history: config.history,
            log_grace: config.log_grace,
            now,
        }
    }

    /// The oldest version the window keeps: the version current when the window opened
    /// (or the oldest there is), but no older than the newest `keep_versions`; with
    /// history off, the snapshot's version.
    fn oldest_kept(&self, catalog: &Catalog) -> Version {
        let entries = &catalog.entries;
        if !self.history.enabled() || entries.is_empty() {
            return catalog.snapshot.0;
        }
        let opened = self.now - chrono::Duration::days(i64::from(self.history.keep_days));
        let by_days = catalog.current_at(opened).unwrap_or(entries[0].version);
        let count = usize::try_from(self.history.keep_versions).unwrap_or(usize::MAX);
        let by_count = entries[entries.len().saturating_sub(count)].version;
        by_days.max(by_count)
    }

    fn plan(&self, catalog: &Catalog) -> Plan {
        let oldest_kept = self.oldest_kept(catalog);
        let snapshots = catalog
            .kept
            .iter()
            .map(|kept| (kept.version, kept.modified))
            .chain(std::iter::once(catalog.snapshot));
        let grace = chrono::Duration::from_std(self.log_grace).unwrap_or(chrono::Duration::MAX);
        let (mut base, mut settled) = (None::<Version>, Version::ZERO);
        for (version, written) in snapshots {
            if version <= oldest_kept {
                base = base.max(Some(version));
            }
            if self.now - written > grace {
                settled = settled.max(version);
            }
        }
        let Some(base) = base else {
            return Plan {
                oldest_kept,
                changes: Vec::new(),
                snapshots: Vec::new(),
            };
        };
        let bound = base.min(settled);
        Plan {
            oldest_kept,
            // The change applying after `v` makes a version above `v`, at most `base`
            // when `v` < `bound`: such a change is folded into the base.
            changes: catalog
                .changes
                .iter()
                .map(|change| change.version)
                .filter(|&after| after < bound)
                .collect(),
            snapshots: catalog
                .kept
                .iter()
                .map(|kept| kept.version)
                .filter(|&version| version < base)
                .collect(),
        }
    }
}

/// Removes what `window` no longer keeps of `user`'s history, at most [`MAX_DELETES`]
/// objects, eight at a time: changes first, asked oldest first, then snapshots (a snapshot goes only once
/// nothing older than it is needed).
pub(crate) async fn collect(remote: &Remote, user: &UserId, window: Window) -> Result<Collected> {
    let Some(catalog) = Catalog::read(remote, user).await? else {
        return Ok(Collected::default());
    };
    let plan = window.plan(&catalog);
    let more = plan.changes.len() + plan.snapshots.len() > MAX_DELETES;
    let changes: Vec<_> = plan.changes.into_iter().take(MAX_DELETES).collect();
    let room = MAX_DELETES - changes.len();
    let snapshots: Vec<_> = plan.snapshots.into_iter().take(room).collect();
    let deleted_changes = changes.len() as u64;
    futures::stream::iter(changes)
        .map(|after| remote.delete_change(user, after))
        .buffer_unordered(DELETES_IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    if deleted_changes > 0 || !snapshots.is_empty() {
        crate::crash::crash_point("history-changes-collected");
    }
    let deleted_snapshots = snapshots.len() as u64;
    futures::stream::iter(snapshots)
        .map(|version| remote.delete_kept_snapshot(user, version))
        .buffer_unordered(DELETES_IN_FLIGHT)
        .try_collect::<()>()
        .await?;
    Ok(Collected {
        oldest_kept: Some(plan.oldest_kept),
        deleted_changes,
        deleted_snapshots,
        more,
    })
}
