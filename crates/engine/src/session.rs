//! [`Session`]: one request's hold on one user's database, from the version check to the
//! upload. The HTTP layers drive it step by step; [`crate::Engine::transact`] runs it whole.

use std::sync::Arc;

use rusqlite::InterruptHandle;
use tokio::sync::OwnedMutexGuard;
use tracing::{debug, error, info, warn};

use crate::cache::{QueuedWork, SlotState, complete_all};
use crate::committed::Committed;
use crate::config::{ConflictPolicy, Durability};
use crate::context::{Context, blocking};
use crate::crash::crash_point;
use crate::delta::{self, DeltaError};
use crate::error::{Error, Result, delta_error};
use crate::events::Resolution;
use crate::local::{PendingUpload, SyncState};
use crate::metadata::ChangeMetadata;
use crate::metrics::EngineMetrics;
use crate::remote::{Change, RemoteHead};
use crate::runtime;
use crate::snapshot::Snapshot;
use crate::sync::upload::{self, Base, Outgoing, UploadFailure, UploadPlan};
use crate::sync::{aside, compact, install, log, pull};
use crate::tracked::TrackedConnection;
use crate::user::UserId;
use crate::version::Version;

/// How [`Session::finish`] ended.
enum Finished {
    Landed(Committed<()>),
    Refused {
        remote: RemoteHead,
        image: Snapshot,
        version: Version,
    },
    /// A piece of queued work that joined the session made SQLite roll back the whole
    /// transaction: nothing was uploaded, and the session's own work must run again.
    Broken,
}

/// How a commit that runs no request SQL brings the local copy to what it uploaded.
enum Settle {
    /// Apply the uploaded change, like another writer's.
    Apply,
    /// Install this whole database (it was sent whole).
    Install(Snapshot),
}

/// How running pieces of queued work in one transaction ended.
pub(crate) enum Ran {
    /// Every piece ran; those that failed were rolled back alone.
    All,
    /// This piece failed in a way that made SQLite roll back the whole transaction (an
    /// interrupted write, for one): the work before it lost its writes too.
    Broken(Arc<dyn QueuedWork>),
}

/// One request on one user's database.
///
/// Holding a session holds the user's lock on this instance. The request's SQL runs in one
/// transaction that is committed locally only after the bucket has the upload; dropping a
/// session without [`Session::commit`] rolls everything back.
pub struct Session {
    shared: Arc<Context>,
    user: UserId,
    guard: OwnedMutexGuard<SlotState>,
    base: SyncState,
    /// False when `base` is a local version whose upload is pending (`async`).
    base_in_bucket: bool,
    /// This session made the user's folder: a user seen for the first time.
    created_folder: bool,
    conn: Option<TrackedConnection>,
    /// Work queued by [`crate::Engine::transact`] that rides on this session's upload
    /// ([`Session::commit_in_group`]) and waits for its outcome.
    joined: Vec<Arc<dyn QueuedWork>>,
}

impl Session {
    /// Takes the lock, runs `version-compare-on-start`, opens the transaction.
    pub(crate) async fn begin(shared: Arc<Context>, user: UserId) -> Result<Self> {
        let slot = shared.slots.get(&user);
        let guard = slot.lock().await;
        Self::start(shared, user, guard).await
    }

    /// Like [`Session::begin`], with the user's lock already held.
    pub(crate) async fn start(
        shared: Arc<Context>,
        user: UserId,
        mut guard: OwnedMutexGuard<SlotState>,
    ) -> Result<Self> {
        let (base, base_in_bucket) =
            pull::version_compare_on_start(&shared, &user, &mut guard).await?;
        shared.slots.get(&user).remember_version(base.version);
        let mut created_folder = false;
        let conn = match guard.conn.take() {
            Some(conn) => conn,
            None => {
                let staged = guard.staged.is_some();
                created_folder = !shared.layout.user_dir(&user).exists();
                shared.open_connection(&user, staged).await?
            }
        };
        conn.begin()?;
        Ok(Self {
            shared,
            user,
            guard,
            base,
            base_in_bucket,
            created_folder,
            conn: Some(conn),
            joined: Vec::new(),
        })
    }

    /// Whose database this is.
    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// The version the request started from (at least the bucket's at its start).
    pub fn base(&self) -> &SyncState {
        &self.base
    }

    /// The file the request runs on: the local database, or a download answering before
    /// it is installed.
    pub fn file_path(&self) -> std::path::PathBuf {
        match self.guard.staged {
            Some(_) => self.shared.layout.download_temp_path(&self.user),
            None => self.shared.layout.database_path(&self.user),
        }
    }

    /// Pacing (`sync.min_upload_interval_ms`, for stores like R2 that take about one write
    /// per second per key): a request that wrote waits until the interval since this
    /// user's last upload from this instance has passed. Every commit that uploads waits
    /// until this moment, whoever drives the session; group commit lets work that arrives
    /// meanwhile join. `None` when pacing is off.
    pub(crate) fn upload_slot(&self) -> Option<tokio::time::Instant> {
        let interval = self.shared.config.min_upload_interval;
        if interval.is_zero() {
            return None;
        }
        let ready = self.guard.last_upload.map(|last| last + interval);
        Some(ready.map_or_else(tokio::time::Instant::now, Into::into))
    }

    /// True once the request wrote.
    pub fn wrote(&self) -> bool {
        self.conn.as_ref().is_some_and(TrackedConnection::wrote)
    }

    /// Interrupts whatever statement is running (timeouts).
    pub fn interrupt_handle(&self) -> Option<InterruptHandle> {
        self.conn.as_ref().map(TrackedConnection::interrupt_handle)
    }

    /// Runs `work` on the tracked connection, off the async threads.
    pub async fn run<T, F>(&mut self, work: F) -> Result<T>
    where
        F: FnOnce(&TrackedConnection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let conn = self.take_conn()?;
        let (conn, outcome) = blocking(move || {
            let outcome = work(&conn);
            Ok((conn, outcome))
        })
        .await?;
        self.conn = Some(conn);
        outcome
    }

    /// Runs pieces of queued work in the session's transaction, each in the engine's
    /// savepoint: a piece that fails is rolled back alone.
    pub(crate) async fn run_pieces(&mut self, pieces: &[Arc<dyn QueuedWork>]) -> Result<Ran> {
        let pieces = pieces.to_vec();
        self.run(move |conn| {
            let mut wrote = conn.wrote();
            for work in &pieces {
                conn.begin_piece()?;
                if work.run(conn) {
                    wrote |= conn.wrote();
                    conn.keep_piece()?;
                } else if conn.transaction_lost() {
                    return Ok(Ran::Broken(Arc::clone(work)));
                } else {
                    conn.undo_piece()?;
                }
            }
            conn.set_wrote(wrote);
            Ok(Ran::All)
        })
        .await
    }

    /// Ends the request: with no write, nothing happens; with writes, one upload as
    /// version + 1, then the local commit. A lost conflict is refused and kept aside.
    pub async fn commit(mut self) -> Result<Committed<()>> {
        match self.finish(false).await? {
            Finished::Landed(committed) => Ok(committed),
            Finished::Refused {
                remote,
                image,
                version,
            } => Err(self.refuse(remote, image, version).await),
            Finished::Broken => Err(crate::tracked::transaction_lost_error()),
        }
    }

    /// Like [`Session::commit`], but when `rebase` is true a lost conflict answers `None`
    /// instead of an error: the caller runs its work again in a new session, which starts
    /// from the winner. Callers pass `rebase` from [`crate::Engine::may_rebase`].
    pub async fn commit_or_rebase(mut self, rebase: bool) -> Result<Option<Committed<()>>> {
        self.end(false, rebase).await
    }

    /// Like [`Session::commit_or_rebase`], and group commit: work that
    /// [`crate::Engine::transact`] queued for this user while the session held it joins
    /// the session's transaction (each piece in a savepoint, after the session's own work,
    /// once the upload slot of pacing has come) and rides on its ONE upload. For callers
    /// that can run their own work again: besides a rebase, `None` also answers a queued
    /// piece that made SQLite roll back the whole transaction (that piece fails alone; the
    /// other queued work is queued again).
    pub async fn commit_in_group(mut self, rebase: bool) -> Result<Option<Committed<()>>> {
        let outcome = self.end(true, rebase).await;
        let joined = std::mem::take(&mut self.joined);
        match &outcome {
            Ok(Some(committed)) => complete_all(&joined, Ok(committed)),
            Ok(None) => joined.iter().for_each(|work| work.again()),
            Err(err) => complete_all(&joined, Err(err)),
        }
        outcome
    }

    async fn end(&mut self, join: bool, rebase: bool) -> Result<Option<Committed<()>>> {
        match self.finish(join).await? {
            Finished::Landed(committed) => Ok(Some(committed)),
            Finished::Refused { remote, .. } if rebase => {
                info!(user = %self.user, local_version = self.base.version.get(),
                    remote_version = remote.version.get(), "conflict: rebasing the request on the winner");
                upload::publish_conflict(
                    &self.shared,
                    &self.user,
                    self.base.version,
                    &remote,
                    Resolution::Rebased,
                );
                Ok(None)
            }
            Finished::Refused {
                remote,
                image,
                version,
            } => Err(self.refuse(remote, image, version).await),
            Finished::Broken => Ok(None),
        }
    }

    /// Commits `image`, a whole database from outside (`cellar push`), as the next version
    /// in place of the request's SQL: paced and uploaded like any write, then installed as
    /// the local copy. A lost conflict is refused whatever the policy (there is no work to
    /// run again), and a failed upload keeps nothing here: the caller still has the file.
    pub async fn commit_image(self, image: Vec<u8>) -> Result<Committed<()>> {
        self.commit_whole(image, None).await
    }

    /// [`Session::commit_image`], told to subscribers and recorded in the log as the
    /// restore of `restored_from` when it is one.
    pub(crate) async fn commit_whole(
        mut self,
        image: Vec<u8>,
        restored_from: Option<Version>,
    ) -> Result<Committed<()>> {
        let plan = self.plan_outside_sql(restored_from).await;
        let image = Snapshot::from_bytes(image);
        // The file at the base, to ship only the pages that differ from it.
        let base = match (plan.base_version, self.base.checksum) {
            (Version::ZERO, _) | (_, None) => None,
            (_, Some(checksum)) => Some((self.file_path(), checksum)),
        };
        let planned = plan.clone();
        let (outgoing, page_by_page, image) = blocking(move || {
            let base = base
                .map(|(path, checksum)| {
                    let file = std::fs::File::open(&path)?;
                    let len = file.metadata()?.len();
                    Ok::<_, std::io::Error>(Base {
                        file,
                        len,
                        checksum,
                    })
                })
                .transpose()
                .map_err(Error::io("the local copy"))?;
            let mut image = image;
            let (outgoing, page_by_page) = Outgoing::image_over(&mut image, base, &planned)?;
            Ok((outgoing, page_by_page, image))
        })
        .await?;
        let local = match page_by_page {
            true => Settle::Apply,
            false => Settle::Install(image),
        };
        self.send_outside_sql(outgoing, &plan, local).await
    }

    /// Commits the change `deltas` make to the base, composed into one (a restore that
    /// undoes them), as the next version recorded as the restore of `restored_from`:
    /// shipped and applied here like any change.
    pub(crate) async fn commit_changes(
        mut self,
        deltas: Vec<delta::Delta>,
        restored_from: Version,
    ) -> Result<Committed<()>> {
        let plan = self.plan_outside_sql(Some(restored_from)).await;
        let Some(checksum) = self.base.checksum else {
            return Err(Error::internal("the base's checksum is unknown"));
        };
        let conn = log::connection(&self.shared, &self.user, &mut self.guard).await?;
        let (user, journal) = (self.user.clone(), self.journal_path());
        let planned = plan.clone();
        let (conn, outgoing) = blocking(move || {
            let composed = conn
                .engine(|raw| delta::compose(raw, deltas.into_iter().map(Ok), checksum))
                .map_err(|err| delta_error(&user, &journal, err))
                .and_then(|composed| Outgoing::change(composed, &planned));
            Ok((conn, composed))
        })
        .await?;
        self.guard.conn = Some(conn);
        self.send_outside_sql(outgoing?, &plan, Settle::Apply).await
    }

    /// Commits `change`, made against the base, as the next version recorded as the
    /// restore of `restored_from`: shipped and applied here like any change.
    pub(crate) async fn commit_change(
        mut self,
        change: delta::Delta,
        restored_from: Version,
    ) -> Result<Committed<()>> {
        let plan = self.plan_outside_sql(Some(restored_from)).await;
        if self.base.checksum != Some(change.checksum_before) {
            return Err(Error::internal("the change was not made against the base"));
        }
        let planned = plan.clone();
        let outgoing = blocking(move || Outgoing::change(change, &planned)).await?;
        self.send_outside_sql(outgoing, &plan, Settle::Apply).await
    }

    /// The plan of a commit that runs no request SQL ([`Session::commit_whole`],
    /// [`Session::commit_changes`], [`Session::commit_change`]): the session's transaction
    /// is given up, pacing waited.
    async fn plan_outside_sql(&mut self, restored_from: Option<Version>) -> UploadPlan {
        if let Some(conn) = self.conn.take() {
            conn.rollback();
            self.guard.conn = Some(conn);
        }
        if let Some(slot) = self.upload_slot() {
            tokio::time::sleep_until(slot).await;
        }
        UploadPlan {
            restored_from,
            ..UploadPlan::on_top_of(self.base.version, self.base.etag.clone())
        }
    }

    /// Uploads `outgoing` as `plan` says (a lost conflict refused whatever the policy: there
    /// is no work to run again), then brings the local copy to it as `local` says.
    async fn send_outside_sql(
        mut self,
        outgoing: Outgoing,
        plan: &UploadPlan,
        local: Settle,
    ) -> Result<Committed<()>> {
        crash_point("before-upload");
        let uploaded =
            match upload::sync_on_mutation(&self.shared, &self.user, &outgoing, plan).await {
                Ok(uploaded) => uploaded,
                Err(UploadFailure::Refused { remote }) => {
                    return Err(Error::Conflict {
                        user: self.user.clone(),
                        expected: self.base.version,
                        found: remote.version,
                    });
                }
                Err(UploadFailure::Unavailable { source, .. }) => return Err(Error::Store(source)),
                Err(UploadFailure::Failed(err)) => return Err(err),
            };
        crash_point("after-upload-before-commit");
        // A change of a few pages is applied here like anyone else's: no rewrite of the file.
        let image = match local {
            Settle::Install(image) => Some(image),
            Settle::Apply if self.guard.staged.is_some() => None,
            Settle::Apply => {
                let Outgoing::Change { bytes, .. } = &outgoing else {
                    return Err(Error::internal("a first version has no base to apply to"));
                };
                let change = Change {
                    metadata: ChangeMetadata {
                        version: uploaded.version,
                        base_version: plan.base_version,
                        sha256: outgoing.sha256(),
                        size: bytes.len() as u64,
                        writer: self.shared.config.writer_id.clone(),
                        updated_at: uploaded.updated_at,
                        checksum: uploaded.checksum,
                        restored_from: plan.restored_from,
                    },
                    bytes: bytes.clone(),
                };
                let base = self.base.clone();
                let applied = log::apply_run(
                    &self.shared,
                    &self.user,
                    &mut self.guard,
                    &base,
                    vec![change],
                );
                if let Err(err) = applied.await {
                    // The bucket has it: the next request follows the log to it.
                    warn!(user = %self.user, error = %err,
                        "the uploaded change was not applied here; the next request reads it");
                }
                None
            }
        };
        if let Some(image) = image {
            install::install(
                &self.shared,
                &self.user,
                &mut self.guard,
                image.body(),
                uploaded.state(),
            )
            .await?;
        }
        self.guard.last_upload = Some(std::time::Instant::now());
        self.shared
            .slots
            .get(&self.user)
            .remember_version(uploaded.version);
        Ok(Committed {
            value: (),
            version: uploaded.version,
            wrote: true,
            in_bucket: true,
        })
    }

    /// Uploads what the session wrote (with `join`, and the queued work it takes in).
    async fn finish(&mut self, join: bool) -> Result<Finished> {
        let lost = self
            .conn
            .as_ref()
            .is_some_and(TrackedConnection::transaction_lost);
        if !lost && self.wrote() {
            if let Some(slot) = self.upload_slot() {
                tokio::time::sleep_until(slot).await;
            }
            if join && self.join_queued().await? {
                let conn = self.take_conn()?;
                self.abandon(conn, crate::tracked::transaction_lost_error());
                return Ok(Finished::Broken);
            }
        }
        let conn = self.take_conn()?;
        if conn.transaction_lost() {
            // Work that went on after SQLite rolled its writes back must not answer success.
            return Err(self.abandon(conn, crate::tracked::transaction_lost_error()));
        }
        if !conn.wrote() {
            conn.rollback();
            self.guard.conn = Some(conn);
            self.forget_if_nothing_to_keep();
            return Ok(Finished::Landed(Committed {
                value: (),
                version: self.base.version,
                wrote: false,
                in_bucket: self.base_in_bucket,
            }));
        }
        if let Some(staged) = &mut self.guard.staged {
            // Nothing built on a download is uploaded before its SHA-256 check passed.
            if let Err(err) = staged.verified(&self.user).await {
                return Err(self.abandon(conn, err));
            }
        }
        if self.shared.config.durability == Durability::Async {
            let (conn, image) = take_image(conn).await?;
            return match image {
                Ok(image) => self.commit_locally_then_upload(conn, image).await,
                Err(err) => Err(self.abandon(conn, err)),
            };
        }
        let plan = UploadPlan::on_top_of(self.base.version, self.base.etag.clone());
        let (mut conn, outgoing) = self.outgoing(conn, &plan).await?;
        let outgoing = match outgoing {
            Ok(outgoing) => outgoing,
            Err(err) => return Err(self.abandon(conn, err)),
        };
        crash_point("before-upload");
        let mut outcome =
            upload::sync_on_mutation(&self.shared, &self.user, &outgoing, &plan).await;
        // A lost race needs the losing database whole: kept aside, or sent over the winner.
        let mut lost_image = None;
        if let Err(UploadFailure::Refused { remote }) = &outcome {
            let (back, image) = take_image(conn).await?;
            conn = back;
            let image = match image {
                Ok(image) => image,
                Err(err) => return Err(self.abandon(conn, err)),
            };
            if self.shared.config.conflict == ConflictPolicy::LastWriteWins {
                let base_etag = self.base.etag.clone();
                outcome = upload::overwrite(
                    &self.shared,
                    &self.user,
                    &image,
                    self.base.version,
                    remote.clone(),
                    base_etag,
                )
                .await;
            }
            lost_image = Some(image);
        }
        match outcome {
            Ok(uploaded) => self.commit_locally(conn, uploaded).await,
            Err(UploadFailure::Refused { remote }) => match lost_image {
                Some(image) => Ok(self.lost(conn, remote, image)),
                None => Err(self.abandon(conn, Error::internal("a lost race kept no database"))),
            },
            Err(UploadFailure::Unavailable {
                source,
                attempted,
                sent,
            }) => Err(self.keep_pending(conn, sent, attempted, source).await),
            Err(UploadFailure::Failed(err)) => Err(self.abandon(conn, err)),
        }
    }

    /// What the request's writes send: the whole database for a user's first version, else
    /// the pages the transaction changed (from its rollback journal, see `delta`).
    async fn outgoing(
        &mut self,
        conn: TrackedConnection,
        plan: &UploadPlan,
    ) -> Result<(TrackedConnection, Result<Outgoing>)> {
        if plan.base_version == Version::ZERO {
            let (conn, image) = take_image(conn).await?;
            let outgoing = image.and_then(|image| Outgoing::image(image, plan));
            return Ok((conn, outgoing));
        }
        let journal = self.journal_path();
        let Some(before) = self.base.checksum else {
            // The version check computes it before the transaction opens.
            return Ok((conn, Err(Error::internal("the base's checksum is unknown"))));
        };
        let plan = plan.clone();
        let user = self.user.clone();
        blocking(move || {
            let outgoing = match conn.engine(|raw| delta::capture(raw, &journal, before)) {
                Ok(delta) => Outgoing::change(delta, &plan),
                // What cannot be told page by page is sent whole.
                Err(DeltaError::Unsupported(why)) => {
                    debug!(user = %user, why, "the change is sent as the whole database");
                    Snapshot::take(conn.raw())
                        .map_err(Error::from)
                        .and_then(|image| Outgoing::image(image, &plan))
                }
                Err(err) => Err(delta_error(&user, &journal, err)),
            };
            Ok((conn, outgoing))
        })
        .await
    }

    /// SQLite's rollback journal of the file the request runs on.
    fn journal_path(&self) -> std::path::PathBuf {
        match self.guard.staged {
            Some(_) => self.shared.layout.download_journal_path(&self.user),
            None => self.shared.layout.companion_paths(&self.user)[0].clone(),
        }
    }

    /// A write that lost to `remote` and is not to overwrite it: rolled back, its database
    /// kept for [`Session::refuse`].
    fn lost(&mut self, conn: TrackedConnection, remote: RemoteHead, image: Snapshot) -> Finished {
        let version = self.base.version.next();
        self.guard.conn = Some(conn);
        self.rollback();
        Finished::Refused {
            remote,
            image,
            version,
        }
    }

    /// Runs the work queued for this user in the session's transaction; true when a piece
    /// made SQLite roll the transaction back (that piece is answered here).
    async fn join_queued(&mut self) -> Result<bool> {
        let queued = self.shared.slots.get(&self.user).drain();
        if queued.is_empty() {
            return Ok(false);
        }
        self.joined.extend(queued.iter().cloned());
        match self.run_pieces(&queued).await? {
            Ran::All => Ok(false),
            Ran::Broken(broken) => {
                broken.complete(Err(&crate::tracked::transaction_lost_error()));
                self.joined.retain(|work| !Arc::ptr_eq(work, &broken));
                Ok(true)
            }
        }
    }

    /// The bucket has the upload: commit the local transaction and record the new state
    /// (on a staged download, the state it is installed with). If the local commit fails,
    /// the local copy stays at the old version and the next request downloads the new
    /// one: the request still succeeded.
    async fn commit_locally(
        &mut self,
        conn: TrackedConnection,
        uploaded: upload::Uploaded,
    ) -> Result<Finished> {
        let state = uploaded.state();
        let layout = self.shared.layout.clone();
        let user = self.user.clone();
        let saved = state.clone();
        let staged = self.guard.staged.is_some();
        crash_point("after-upload-before-commit");
        let (conn, outcome) = blocking(move || {
            let outcome = conn.commit().and_then(|()| {
                crash_point("after-commit-before-state");
                match staged {
                    true => Ok(()), // saved when the download is installed
                    false => saved.save_for(&layout, &user),
                }
            });
            Ok((conn, outcome))
        })
        .await?;
        match outcome {
            Ok(()) => {
                self.guard.conn = Some(conn);
                match &mut self.guard.staged {
                    Some(download) => download.state = state,
                    None => self.guard.sync = Some(state),
                }
                self.guard.last_upload = Some(std::time::Instant::now());
                self.shared
                    .slots
                    .get(&self.user)
                    .remember_version(uploaded.version);
                self.count_log(&uploaded);
            }
            Err(err) => {
                warn!(user = %self.user, version = uploaded.version.get(), error = %err,
                    "uploaded, but the local commit failed; the next request downloads the upload");
                self.guard.sync = None;
                self.guard.staged = None; // its file is in doubt: never installed
            }
        }
        Ok(Finished::Landed(Committed {
            value: (),
            version: uploaded.version,
            wrote: true,
            in_bucket: true,
        }))
    }

    /// Keeps count of the log since the snapshot, and folds it in the background once it
    /// passed its bound.
    fn count_log(&mut self, uploaded: &upload::Uploaded) {
        if uploaded.snapshot {
            self.guard.snapshot_version = Some(uploaded.version);
            self.guard.log_bytes = 0;
            return;
        }
        self.guard.log_bytes += uploaded.bytes;
        if compact::due(&self.shared, &self.user, &self.guard) {
            runtime::compact_soon(Arc::clone(&self.shared), self.user.clone());
        }
    }

    /// `durability = async`: record the image as the pending upload, commit locally,
    /// acknowledge, and let the background uploader take it to the bucket.
    async fn commit_locally_then_upload(
        &mut self,
        conn: TrackedConnection,
        mut image: Snapshot,
    ) -> Result<Finished> {
        let version = self.base.version.next();
        image.stamp(version);
        // What the bucket holds: a download not installed yet is not in `sync`.
        let bucket = match &self.guard.staged {
            Some(download) => download.state.clone(),
            None => self.guard.sync.clone().unwrap_or_default(),
        };
        let record = PendingUpload {
            version,
            base_etag: bucket.etag,
            base_version: bucket.version,
            sha256: image.sha256(),
            change_checksum: None,
        };
        let layout = self.shared.layout.clone();
        let user = self.user.clone();
        let (conn, outcome) = blocking(move || {
            let outcome = record
                .save(&layout, &user, image.bytes())
                .and_then(|()| conn.commit());
            Ok((conn, outcome))
        })
        .await?;
        if let Err(err) = outcome {
            return Err(self.abandon(conn, err));
        }
        self.guard.conn = Some(conn);
        self.shared.slots.get(&self.user).remember_version(version);
        runtime::schedule_upload(Arc::clone(&self.shared), self.user.clone());
        Ok(Finished::Landed(Committed {
            value: (),
            version,
            wrote: true,
            in_bucket: false,
        }))
    }

    /// The upload failed and may or may not have landed: keep exactly what was sent as the
    /// pending upload, roll back locally, and say so (`sync_pending`).
    async fn keep_pending(
        &mut self,
        conn: TrackedConnection,
        sent: Outgoing,
        attempted: UploadPlan,
        source: crate::store::StoreError,
    ) -> Error {
        let (change_checksum, body) = match &sent {
            Outgoing::First(image) => (None, image.body()),
            Outgoing::Change {
                bytes, checksum, ..
            } => (Some(*checksum), bytes.clone()),
        };
        let record = PendingUpload {
            version: attempted.version,
            base_etag: attempted.base_etag.clone(),
            base_version: attempted.base_version,
            sha256: sent.sha256(),
            change_checksum,
        };
        let layout = self.shared.layout.clone();
        let user = self.user.clone();
        let saved = blocking(move || record.save(&layout, &user, &body)).await;
        self.guard.conn = Some(conn);
        self.rollback();
        EngineMetrics::add(&self.shared.metrics.pending_uploads, 1);
        match saved {
            Ok(()) => Error::SyncPending {
                user: self.user.clone(),
                version: attempted.version,
                source,
            },
            Err(err) => {
                error!(user = %self.user, error = %err, "could not record a pending upload");
                err
            }
        }
    }

    /// Strict answer to a lost conflict: keep the losing database aside, refuse.
    async fn refuse(&mut self, remote: RemoteHead, image: Snapshot, version: Version) -> Error {
        match aside::keep_aside(&self.shared, &self.user, &image, version).await {
            Ok(path) => warn!(user = %self.user, local_version = self.base.version.get(),
                remote_version = remote.version.get(), remote_writer = %remote.writer,
                kept_at = %path.display(), "conflict: write refused, losing database kept aside"),
            Err(err) => error!(user = %self.user, error = %err,
                "conflict: write refused and the losing database could not be kept aside"),
        }
        upload::publish_conflict(
            &self.shared,
            &self.user,
            self.base.version,
            &remote,
            Resolution::Refused,
        );
        Error::Conflict {
            user: self.user.clone(),
            expected: self.base.version,
            found: remote.version,
        }
    }

    /// A user seen for the first time, with nothing in the bucket, whose request did not
    /// write keeps nothing on this instance: reads by ids never seen must not fill the disk
    /// with folders. (What an earlier run left in a user's folder is recovery's to judge.)
    fn forget_if_nothing_to_keep(&mut self) {
        if !self.created_folder || self.base.version != Version::ZERO || self.guard.staged.is_some()
        {
            return;
        }
        self.guard.conn = None; // closes the file
        self.guard.sync = None;
        if let Err(err) = crate::local::forget_if_empty(&self.shared.layout, &self.user) {
            warn!(user = %self.user, error = %err, "could not remove an empty database");
        }
    }

    fn abandon(&mut self, conn: TrackedConnection, err: Error) -> Error {
        self.guard.conn = Some(conn);
        self.rollback();
        err
    }

    fn take_conn(&mut self) -> Result<TrackedConnection> {
        self.conn.take().ok_or_else(|| {
            Error::internal("the request's connection was lost after a panic in its work")
        })
    }

    fn rollback(&mut self) {
        if let Some(conn) = &self.guard.conn {
            conn.rollback();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Queued work never answered (the session was dropped mid-commit) runs again.
        for work in self.joined.drain(..) {
            work.again();
        }
        if let Some(conn) = self.conn.take() {
            conn.rollback();
            self.guard.conn = Some(conn);
            self.forget_if_nothing_to_keep();
        }
        if self.guard.staged.is_some() {
            runtime::install_soon(Arc::clone(&self.shared), self.user.clone());
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The database `conn` sees, whole, uncommitted writes included (off the async threads).
async fn take_image(conn: TrackedConnection) -> Result<(TrackedConnection, Result<Snapshot>)> {
    blocking(move || {
        let image = Snapshot::take(conn.raw()).map_err(Error::from);
        Ok((conn, image))
    })
    .await
}
