//! [`Context`]: what one Cellar instance's engine, sessions and sync steps share (settings,
//! the store, the per-user slots, events, metrics), and [`blocking`], the way off the async
//! threads. It sits below every module that uses it.

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::task::TaskTracker;

use crate::cache::Slots;
use crate::clock::Clock;
use crate::config::{ConflictPolicy, EngineConfig};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::layout::Layout;
use crate::metrics::EngineMetrics;
use crate::remote::Remote;
use crate::sandbox::SqlLimits;
use crate::store::StoreCapabilities;
use crate::tracked::{SqlPolicy, TrackedConnection};
use crate::user::UserId;

/// The state every clone of an [`crate::Engine`] shares.
#[derive(Debug)]
pub(crate) struct Context {
    pub config: EngineConfig,
    pub layout: Layout,
    pub remote: Remote,
    pub clock: Arc<dyn Clock>,
    pub sql_policy: Option<SqlPolicyHolder>,
    pub sql_limits: Option<SqlLimits>,
    pub slots: Slots,
    pub events: broadcast::Sender<Event>,
    pub metrics: EngineMetrics,
    pub capabilities: StoreCapabilities,
    /// Work that outlives the request that started it: a group commit whose callers went
    /// away, the install of a download that answered before it was installed.
    /// [`crate::Engine::settle`] waits for it (background `async` uploads are not here:
    /// with the store down they would hold a shutdown for minutes, and their pending
    /// records are finished at the next start anyway).
    pub tasks: TaskTracker,
}

/// A [`SqlPolicy`] with a `Debug` that does not try to print a closure.
#[derive(Clone)]
pub(crate) struct SqlPolicyHolder(pub SqlPolicy);

impl std::fmt::Debug for SqlPolicyHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqlPolicy")
    }
}

impl Context {
    /// Sends an event to subscribers; having none is fine.
    pub fn publish(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// True when a request that lost a conflict on its `tries`-th run should run again
    /// (policy `rebase`, within its bounded number of tries).
    pub fn may_rebase(&self, tries: u32) -> bool {
        self.config.conflict == ConflictPolicy::Rebase && tries <= self.config.max_conflict_retries
    }

    /// Opens a tracked connection to `user`'s local database, or to the download that is
    /// about to replace it when one is staged (see `sync::staged`).
    pub async fn open_connection(&self, user: &UserId, staged: bool) -> Result<TrackedConnection> {
        let layout = self.layout.clone();
        let owned = user.clone();
        let policy = self.sql_policy.clone().map(|holder| holder.0);
        let limits = self.sql_limits;
        blocking(move || {
            let conn = if staged {
                crate::local::open_download(&layout, &owned)?
            } else {
                crate::local::open_database(&layout, &owned)?
            };
            if let Some(limits) = limits {
                limits.apply(&conn)?;
            }
            Ok(TrackedConnection::new(conn, policy))
        })
        .await
    }
}

/// Runs blocking work (SQLite, file system) off the async threads.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|join| Error::internal(format_args!("a blocking task failed: {join}")))?
}
