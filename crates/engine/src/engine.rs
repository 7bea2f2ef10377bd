//! [`Engine`]: a cheap-to-clone handle over the shared state of one Cellar instance.

use std::fs;
use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::task::TaskTracker;
use tracing::error;

use crate::cache::Slots;
use crate::clock::{Clock, SystemClock};
use crate::committed::Committed;
use crate::config::{ConflictPolicy, EngineConfig};
use crate::context::{Context, SqlPolicyHolder};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::group::{self, Job};
use crate::history::{self, Collected};
use crate::layout::Layout;
use crate::local::SyncState;
use crate::metrics::EngineMetrics;
use crate::remote::Remote;
use crate::runtime;
use crate::sandbox::SqlLimits;
use crate::session::Session;
use crate::store::{Store, StoreCapabilities};
use crate::tracked::{SqlPolicy, TrackedConnection};
use crate::user::UserId;
use crate::version::Version;

/// One Cellar instance: per-user databases on local disk, the bucket as source of truth.
///
/// Cloning is cheap; every clone shares the same caches, locks and event channel.
#[derive(Clone, Debug)]
pub struct Engine {
    shared: Arc<Context>,
}

/// Builds an [`Engine`] from settings and injected components.
#[derive(Debug)]
pub struct EngineBuilder {
    config: EngineConfig,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    sql_policy: Option<SqlPolicyHolder>,
    sql_limits: Option<SqlLimits>,
}

impl EngineBuilder {
    /// Replaces the system clock (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Adds an authorization policy applied to every request statement, after the sandbox's.
    pub fn sql_policy(mut self, policy: SqlPolicy) -> Self {
        self.sql_policy = Some(SqlPolicyHolder(policy));
        self
    }

    /// Sets the sandbox's size limits (the sandbox is on by default).
    pub fn sql_limits(mut self, limits: SqlLimits) -> Self {
        self.sql_limits = Some(limits);
        self
    }

    /// Turns the SQL sandbox off: for applications whose SQL is their own, never an end
    /// user's. Transaction control stays with the engine either way.
    pub fn without_sandbox(mut self) -> Self {
        self.sql_limits = None;
        self
    }

    /// The sandbox's policy (when on) followed by the caller's.
    fn effective_policy(&self) -> Option<SqlPolicyHolder> {
        let sandbox = self.sql_limits.map(|_| crate::sandbox::sandbox_policy());
        let extra = self.sql_policy.clone().map(|holder| holder.0);
        match (sandbox, extra) {
            (None, None) => None,
            (Some(one), None) | (None, Some(one)) => Some(SqlPolicyHolder(one)),
            (Some(first), Some(then)) => Some(SqlPolicyHolder(Arc::new(move |ctx| {
                first(ctx).or_else(|| then(ctx))
            }))),
        }
    }

    /// Probes the store, refuses unsafe combinations, finishes pending uploads left by an
    /// earlier run, and returns the engine.
    pub async fn open(mut self) -> Result<Engine> {
        let layout = Layout::new(&self.config.data_dir, &self.config.prefix);
        fs::create_dir_all(layout.data_dir()).map_err(Error::io(layout.data_dir()))?;
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let capabilities =
            crate::store::probe(self.store.as_ref(), &layout.probe_key(&nonce)).await?;
        check_capabilities(&capabilities, self.config.conflict)?;
        if !capabilities.reads_ranges {
            self.config.download_parallelism = 1;
        }
        let (events, _) = broadcast::channel(1024);
        let sql_policy = self.effective_policy();
        let engine = Engine {
            shared: Arc::new(Context {
                slots: Slots::new(self.config.cache_capacity),
                config: self.config,
                remote: Remote::new(self.store, layout.clone()),
                layout,
                clock: self.clock,
                sql_policy,
                sql_limits: self.sql_limits,
                events,
                metrics: EngineMetrics::default(),
                capabilities,
                tasks: TaskTracker::new(),
            }),
        };
        runtime::finish_pending_uploads(&engine.shared).await;
        Ok(engine)
    }
}

/// Says loudly what an incapable store means, and refuses policies that need conditions.
fn check_capabilities(found: &StoreCapabilities, policy: ConflictPolicy) -> Result<()> {
    if !found.metadata_round_trips {
        return Err(Error::Config(
            "the object store does not return user metadata (x-amz-meta-*), so versions \
             cannot be tracked"
                .into(),
        ));
    }
    if found.detects_conflicts() {
        return Ok(());
    }
    error!(
        ?found,
        "the object store ignores conditional writes: conflicts between \
        instances will NOT be detected and concurrent writers may overwrite each other"
    );
    if policy == ConflictPolicy::LastWriteWins {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "sync.conflict = \"{policy}\" needs conditional writes (If-Match / If-None-Match), \
             which this object store ignores ({found:?})"
        )))
    }
}

/// A user's database as [`Engine::status`] reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DbStatus {
    /// Whose database.
    pub user_id: String,
    /// Its current version (0: never written).
    pub version: Version,
    /// Size of the local file in bytes.
    pub size_bytes: u64,
    /// When the current version was uploaded.
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A copy of a user's database made by [`Engine::export`].
#[derive(Debug)]
pub struct Export {
    /// The version it holds.
    pub version: Version,
    /// Its length in bytes.
    pub size_bytes: u64,
    /// The copy, read from the start; it has no name on disk and goes when closed.
    pub file: fs::File,
}

impl Engine {
    /// Starts building an engine over `store`.
    pub fn builder(config: EngineConfig, store: Arc<dyn Store>) -> EngineBuilder {
        EngineBuilder {
            config,
            store,
            clock: Arc::new(SystemClock),
            sql_policy: None,
            sql_limits: Some(SqlLimits::default()),
        }
    }

    /// Builds an engine with the system clock and no extra SQL policy.
    pub async fn open(config: EngineConfig, store: Arc<dyn Store>) -> Result<Engine> {
        Self::builder(config, store).open().await
    }

    /// Begins a request for `user`: takes the user's lock, brings the local copy up to the
    /// bucket's version, and opens a transaction. See [`Session`].
    pub async fn begin(&self, user: &UserId) -> Result<Session> {
        Session::begin(Arc::clone(&self.shared), user.clone()).await
    }

    /// Runs `work` as one request for `user`: in one transaction on a fresh copy, then ONE
    /// upload if it wrote (seed rule `write-batched`). Success means the bucket has it.
    ///
    /// Requests for one user that arrive while an upload is in flight are committed
    /// together and share the next upload (group commit, `group.rs`), each in its own
    /// savepoint: one failing does not fail the others.
    ///
    /// `work` may run more than once: under `rebase`, a conflict runs it again on the
    /// winner's database. It must therefore do all its effects through the connection.
    pub async fn transact<T, F>(&self, user: &UserId, work: F) -> Result<Committed<T>>
    where
        F: Fn(&TrackedConnection) -> Result<T> + Send + Sync + 'static,
        T: Send + 'static,
    {
        let job = Arc::new(Job::new(work));
        loop {
            self.shared.slots.get(user).enqueue(job.clone());
            // The group runs in its own task: a caller that goes away (a client hanging
            // up) must not cut off an upload that other callers' writes are riding on.
            let shared = Arc::clone(&self.shared);
            let leader = user.clone();
            let tasks = shared.tasks.clone();
            tasks.spawn(async move { group::lead(shared, &leader).await });
            // `None`: the session that carried the work was undone; it runs again.
            if let Some(outcome) = job.outcome().await {
                return outcome;
            }
        }
    }

    /// Folds `user`'s log of changes into a new snapshot now, as compaction does in the
    /// background (`docs/delta-sync.md`): a cold start then reads one object. Answers the
    /// snapshot's version in the bucket afterwards; `None` when there is nothing here to
    /// fold (the user was never synced here, a write is pending, a download is staged) or
    /// another instance folded first.
    pub async fn compact(&self, user: &UserId) -> Result<Option<Version>> {
        crate::runtime::compact_now(&self.shared, user).await
    }

    /// Removes what the retention window no longer keeps of `user`'s history
    /// (`docs/history.md`; `cellar gc`); compaction does it too when history is on.
    pub async fn collect_history(&self, user: &UserId) -> Result<Collected> {
        let window = history::Window::of(&self.shared.config, self.shared.clock.now());
        history::collect(&self.shared.remote, user, window).await
    }

    /// Waits for the work that outlives requests: group commits (and their uploads) whose
    /// callers went away, and the install of downloads that answered before they were
    /// installed. Call it before the process exits, or an upload may be cut off (it is
    /// then found pending or landed at the next start) and those downloads made again.
    pub async fn settle(&self) {
        let tasks = &self.shared.tasks;
        tasks.close();
        tasks.wait().await;
        tasks.reopen();
    }

    /// The version `user`'s database was last seen at on this instance, without any I/O
    /// or waiting (e.g. to label an error response); `None` if not seen recently.
    pub fn seen_version(&self, user: &UserId) -> Option<Version> {
        self.shared.slots.get(user).seen_version()
    }

    /// True when a request that lost a conflict on its `tries`-th run should run again
    /// (policy `rebase`, within its bounded number of tries).
    pub fn may_rebase(&self, tries: u32) -> bool {
        self.shared.may_rebase(tries)
    }

    /// The status of `user`'s database, after the version check.
    pub async fn status(&self, user: &UserId) -> Result<DbStatus> {
        let session = self.begin(user).await?;
        let state = session.base().clone();
        let size_bytes = fs::metadata(session.file_path()).map_or(0, |m| m.len());
        drop(session);
        Ok(status_of(user, &state, size_bytes))
    }

    /// A consistent copy of `user`'s database as of the bucket's current version, in an
    /// unnamed file to stream from; `None` when the user has no database yet.
    pub async fn export(&self, user: &UserId) -> Result<Option<Export>> {
        let mut session = self.begin(user).await?;
        let version = session.base().version;
        if version == Version::ZERO {
            return Ok(None);
        }
        let (layout, owned) = (self.shared.layout.clone(), user.clone());
        let file = session
            .run(move |conn| crate::local::export(conn.raw(), &layout, &owned))
            .await?;
        let size_bytes = file.metadata().map_err(Error::io("exported copy"))?.len();
        Ok(Some(Export {
            version,
            size_bytes,
            file,
        }))
    }

    /// Subscribes to version and conflict events of all users on this instance.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// What the start-up probe found about the store.
    pub fn capabilities(&self) -> StoreCapabilities {
        self.shared.capabilities
    }

    /// Counters and histograms since start.
    pub fn metrics(&self) -> &EngineMetrics {
        &self.shared.metrics
    }

    /// How many users' databases are warm in the cache.
    pub fn cached_databases(&self) -> usize {
        self.shared.slots.warm_count()
    }

    /// The settings in force.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// The store behind this engine.
    pub fn store(&self) -> &Arc<dyn Store> {
        self.shared.remote.store()
    }

    /// Where things live.
    pub fn layout(&self) -> &Layout {
        &self.shared.layout
    }
}

fn status_of(user: &UserId, state: &SyncState, size_bytes: u64) -> DbStatus {
    DbStatus {
        user_id: user.to_string(),
        version: state.version,
        size_bytes,
        updated_at: state.updated_at,
    }
}
