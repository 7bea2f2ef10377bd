//! Group commit (seed rule `write-batched`, across requests): work for one user that
//! arrives while that user's upload is in flight waits for the lock, and whoever takes the
//! lock next runs ALL waiting work in one transaction, each piece in its own savepoint,
//! and makes ONE upload for all of it. Each piece is acknowledged only when an upload
//! containing its writes has landed.
//!
//! With `sync.min_upload_interval` set (pacing, for stores like R2 that accept about one
//! write per second per key), a group that wrote waits out the interval before uploading,
//! and work arriving meanwhile joins it.

use std::sync::{Arc, Mutex};

use crate::cache::{QueuedWork, complete_all};
use crate::committed::Committed;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::session::{Ran, Session};
use crate::tracked::TrackedConnection;
use crate::user::UserId;

/// A typed piece of work and, once known, its outcome.
pub(crate) struct Job<T, F> {
    work: F,
    state: Mutex<JobState<T>>,
    done: tokio::sync::Notify,
}

struct JobState<T> {
    ran: Option<(Result<T>, bool)>,
    /// `Some(None)`: queue the work again ([`QueuedWork::again`]).
    outcome: Option<Option<Result<Committed<T>>>>,
}

impl<T, F> Job<T, F>
where
    F: Fn(&TrackedConnection) -> Result<T> + Send + Sync,
    T: Send,
{
    pub fn new(work: F) -> Self {
        Self {
            work,
            state: Mutex::new(JobState {
                ran: None,
                outcome: None,
            }),
            done: tokio::sync::Notify::new(),
        }
    }

    /// Waits until a group containing this job has finished, and takes the outcome;
    /// `None` when the job must be queued again.
    pub async fn outcome(&self) -> Option<Result<Committed<T>>> {
        loop {
            let finished = self.done.notified();
            if let Some(outcome) = self.state().outcome.take() {
                return outcome;
            }
            finished.await;
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, JobState<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T, F> std::fmt::Debug for Job<T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl<T, F> QueuedWork for Job<T, F>
where
    F: Fn(&TrackedConnection) -> Result<T> + Send + Sync,
    T: Send,
{
    fn run(&self, conn: &TrackedConnection) -> bool {
        conn.set_wrote(false);
        let result = (self.work)(conn);
        let ok = result.is_ok();
        self.state().ran = Some((result, conn.wrote()));
        ok
    }

    fn complete(&self, group: Result<&Committed<()>, &Error>) {
        let mut state = self.state();
        let outcome = match (state.ran.take(), group) {
            (Some((Err(own), _)), _) => Err(own),
            (Some((Ok(value), wrote)), Ok(landed)) => Ok(Committed {
                value,
                version: landed.version,
                wrote,
                in_bucket: landed.in_bucket,
            }),
            (_, Err(err)) => Err(err.clone()),
            (None, Ok(_)) => Err(Error::internal("the request's work never ran")),
        };
        state.outcome = Some(Some(outcome));
        drop(state);
        self.done.notify_waiters();
    }

    fn again(&self) {
        let mut state = self.state();
        state.ran = None;
        state.outcome = Some(None);
        drop(state);
        self.done.notify_waiters();
    }
}

/// Takes the user's lock and runs everything queued as one group (again, under rebase,
/// until it lands or is refused). Returns at once if an earlier leader took the queue.
pub(crate) async fn lead(shared: Arc<Context>, user: &UserId) {
    let slot = shared.slots.get(user);
    let mut tries = 0;
    let mut group = Vec::new();
    loop {
        tries += 1;
        let guard = slot.lock().await;
        group.extend(slot.drain());
        if group.is_empty() {
            return; // an earlier leader took this caller's work
        }
        let mut session = match Session::start(Arc::clone(&shared), user.clone(), guard).await {
            Ok(session) => session,
            Err(err) => return complete_all(&group, Err(&err)),
        };
        let ran = match session.run_pieces(&group).await {
            Ok(Ran::All) => pace(&slot, &mut session, &mut group).await,
            other => other,
        };
        match ran {
            Ok(Ran::All) => {}
            Ok(Ran::Broken(broken)) => {
                // The others run again in a new transaction, without the piece that broke it.
                drop(session);
                group.retain(|work| !Arc::ptr_eq(work, &broken));
                broken.complete(Err(&crate::tracked::transaction_lost_error()));
                tries -= 1;
                continue;
            }
            Err(err) => return complete_all(&group, Err(&err)),
        }
        match session.commit_or_rebase(shared.may_rebase(tries)).await {
            Ok(Some(committed)) => return complete_all(&group, Ok(&committed)),
            Ok(None) => {
                // Rebase: run the same group again on the winner, after a jittered pause
                // so that two instances racing for one user do not collide in lockstep.
                tokio::time::sleep(backoff(tries)).await;
            }
            Err(err) => return complete_all(&group, Err(&err)),
        }
    }
}

/// Pacing ([`Session::upload_slot`]): a group that wrote waits for its upload slot, and
/// work that arrived meanwhile joins it.
async fn pace(
    slot: &crate::cache::UserSlot,
    session: &mut Session,
    group: &mut Vec<Arc<dyn QueuedWork>>,
) -> Result<Ran> {
    let upload_slot = match session.upload_slot() {
        Some(upload_slot) if session.wrote() => upload_slot,
        _ => return Ok(Ran::All),
    };
    tokio::time::sleep_until(upload_slot).await;
    let joined = slot.drain();
    group.extend(joined.iter().cloned());
    if joined.is_empty() {
        return Ok(Ran::All);
    }
    session.run_pieces(&joined).await
}

/// A random pause, growing with the number of tries (up to about 64 ms).
fn backoff(tries: u32) -> std::time::Duration {
    use rand::Rng;
    let ceiling_ms = 1u64 << tries.min(6);
    std::time::Duration::from_micros(rand::rng().random_range(0..ceiling_ms * 1000))
}
