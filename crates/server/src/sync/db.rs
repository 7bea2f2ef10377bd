//! [`Db`]: the handler's hold on the caller's database for one request.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use cellar_engine::{Committed, Session, TrackedConnection, UserId, Version};
use http::request::Parts;
use tokio::task::JoinHandle;

use super::{SyncShared, set_version};
use crate::error::{ApiError, ErrorCode};

/// An extractor for handlers behind [`crate::DatabaseSyncLayer`]: the caller's database,
/// already brought up to the bucket's version, inside the request's one transaction.
///
/// Run SQL with [`Db::run`]. There is nothing to commit by hand: when the handler answers
/// with a success status the layer uploads (once, if anything was written); when it answers
/// with an error everything is rolled back. A handler that needs the new version in its
/// body calls [`Db::commit`] itself.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DbInner>,
}

struct DbInner {
    user: UserId,
    base: Version,
    /// Whether a lost conflict runs the request again (policy `rebase`, tries left).
    rebase: bool,
    /// Whether the request can run again, and so commits in a group.
    in_group: bool,
    stage: Mutex<Stage>,
    sync: Arc<SyncShared>,
}

/// Where the request's session is.
#[expect(
    clippy::large_enum_variant,
    reason = "one per request, never moved once in its Mutex"
)]
enum Stage {
    /// Open, between two pieces of work.
    Open(Session),
    /// Taken by [`Db::run`] or [`Db::commit`]; if their future is dropped the session is
    /// dropped with it (rolled back).
    Busy,
    /// Committed at this version.
    Landed(Version),
    /// Undone (a lost conflict, or a group broken by queued work): the request runs again.
    Rebase,
    /// The commit failed; its error is the answer.
    Failed,
}

impl Db {
    pub(super) fn open(
        session: Session,
        rebase: bool,
        in_group: bool,
        sync: Arc<SyncShared>,
    ) -> Self {
        Self {
            inner: Arc::new(DbInner {
                user: session.user().clone(),
                base: session.base().version,
                rebase,
                in_group,
                stage: Mutex::new(Stage::Open(session)),
                sync,
            }),
        }
    }

    /// Whose database this is.
    pub fn user(&self) -> &UserId {
        &self.inner.user
    }

    /// The version the request started from (at least the bucket's at its start).
    pub fn base_version(&self) -> Version {
        self.inner.base
    }

    /// Runs `work` on the tracked connection, off the async threads, interrupting it after
    /// the query timeout (408 `query_timeout`). One piece of work at a time.
    pub async fn run<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        F: FnOnce(&TrackedConnection) -> cellar_engine::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let mut session = self.take_open()?;
        let outcome = run_bounded(&mut session, self.inner.sync.limits.query_timeout, work).await;
        *self.stage() = Stage::Open(session);
        outcome.map_err(ApiError::from)
    }

    /// Ends the request now rather than after the handler: ONE upload if it wrote. Returns
    /// the version the database is at and whether it wrote. When the request must run
    /// again (a lost conflict under `rebase`, or a group broken by queued work) this answers
    /// an error that the layer never sends: it runs the handler again.
    pub async fn commit(&self) -> Result<Committed<()>, ApiError> {
        let session = self.take_open()?;
        let (stage, outcome) = match self.upload(session).await {
            Ok(Some(committed)) => (Stage::Landed(committed.version), Ok(committed)),
            Ok(None) => (
                Stage::Rebase,
                Err(ApiError::new(
                    ErrorCode::Conflict,
                    "the request's transaction was undone (another writer uploaded first, \
                     or work committed with it failed); the request runs again",
                )),
            ),
            Err(err) => (Stage::Failed, Err(err)),
        };
        *self.stage() = stage;
        outcome
    }

    /// After the handler: commit on success, roll back on failure, set `Cellar-Version`.
    /// `None`: the request must run again (rebase).
    pub(super) async fn finish(&self, mut response: Response) -> Option<Response> {
        let stage = std::mem::replace(&mut *self.stage(), Stage::Failed);
        let version = match stage {
            Stage::Open(session) if response.status().is_success() => {
                match self.upload(session).await {
                    Ok(Some(committed)) => committed.version,
                    Ok(None) => return None,
                    Err(err) => {
                        response = err.into_response();
                        self.inner.base
                    }
                }
            }
            Stage::Landed(version) => version,
            Stage::Rebase => return None,
            // Dropping an open session rolls it back: a failed request changes nothing.
            Stage::Open(_) | Stage::Busy | Stage::Failed => self.inner.base,
        };
        set_version(&mut response, version);
        Some(response)
    }

    /// Commits `session` in a task of its own, so that the upload completes even if the
    /// client goes away.
    async fn upload(&self, session: Session) -> Result<Option<Committed<()>>, ApiError> {
        let rebase = self.inner.rebase;
        let upload = match self.inner.in_group {
            true => tokio::spawn(session.commit_in_group(rebase)),
            false => tokio::spawn(session.commit_or_rebase(rebase)),
        };
        upload
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::from)
    }

    fn take_open(&self) -> Result<Session, ApiError> {
        let mut stage = self.stage();
        match std::mem::replace(&mut *stage, Stage::Busy) {
            Stage::Open(session) => Ok(session),
            other => {
                *stage = other;
                Err(ApiError::internal(
                    "the request's database was used while busy or after its commit",
                ))
            }
        }
    }

    fn stage(&self) -> MutexGuard<'_, Stage> {
        self.inner
            .stage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Db {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Db>().cloned().ok_or_else(|| {
            ApiError::internal("the Db extractor needs DatabaseSyncLayer on its route")
        })
    }
}

/// Runs `work` in `session`, interrupting SQLite after `limit`. An interrupt that arrives
/// after the work ended is harmless: SQLite clears it when the next statement starts.
async fn run_bounded<T, F>(
    session: &mut Session,
    limit: Duration,
    work: F,
) -> cellar_engine::Result<T>
where
    F: FnOnce(&TrackedConnection) -> cellar_engine::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let _watchdog = session.interrupt_handle().map(|handle| {
        Watchdog(tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            handle.interrupt();
        }))
    });
    session.run(work).await
}

/// Stops the timer when the work ends, however it ends.
struct Watchdog(JoinHandle<()>);

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.abort();
    }
}
