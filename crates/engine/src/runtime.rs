//! The runtime: the work that outlives a request and takes a user's lock on its own, in
//! one place. The sync steps below never lock and never spawn; sessions ask this module for
//! background work, and it runs on the engine's task tracker (`Context::tasks`) where
//! [`crate::Engine::settle`] can wait for it, or, for `async` uploads, on their own.

use std::fs;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{info, warn};

use crate::config::Durability;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::sync::{compact, install, pending};
use crate::user::UserId;
use crate::version::Version;

/// How often a failing background upload is tried before waiting for the next write.
const MAX_ATTEMPTS: u32 = 12;
/// The longest pause between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The background uploader of `durability = async`: makes sure an upload of `user`'s
/// pending write (the image of its latest locally committed write) is on its way, after
/// the pacing interval, retrying with backoff while the store fails.
pub(crate) fn schedule_upload(shared: Arc<Context>, user: UserId) {
    let slot = shared.slots.get(&user);
    if slot.upload_scheduled.swap(true, Ordering::SeqCst) {
        return;
    }
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        for _ in 0..MAX_ATTEMPTS {
            // Writes arriving during the pause ride on this upload (pacing, coalescing).
            tokio::time::sleep(shared.config.min_upload_interval).await;
            // From here on, a new write schedules a new upload rather than relying on
            // this one, which may already have read the pending record.
            slot.upload_scheduled.store(false, Ordering::SeqCst);
            let mut guard = slot.lock().await;
            match pending::finish_pending(&shared, &user, &mut guard).await {
                Ok(()) => return,
                Err(Error::EarlierWritePending { .. }) => {
                    drop(guard);
                    slot.upload_scheduled.store(true, Ordering::SeqCst);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(err) => {
                    warn!(user = %user, error = %err, "background upload failed; the next write or start-up tries again");
                    return;
                }
            }
        }
        slot.upload_scheduled.store(false, Ordering::SeqCst);
        warn!(user = %user, "background upload still failing; the next write or start-up tries again");
    });
}

/// Starts a task that installs `user`'s staged download once its checks are done and the
/// lock is free. It waits for the checks without the lock, so requests go on meanwhile.
pub(crate) fn install_soon(shared: Arc<Context>, user: UserId) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return; // no runtime: the next holder of the lock installs it
    };
    let tasks = shared.tasks.clone();
    tasks.spawn_on(
        async move {
            let slot = shared.slots.get(&user);
            loop {
                let mut guard = slot.lock().await;
                let settling = match &guard.staged {
                    None => return,
                    Some(staged) if staged.settled() => {
                        return install::finish_staged(&shared, &user, &mut guard).await;
                    }
                    Some(staged) => staged.settling(),
                };
                drop(guard);
                // Its outcome is the install's to act on; a newer download may be staged by then.
                settling.await;
            }
        },
        &runtime,
    );
}

/// Folds `user`'s log into a new snapshot in the background (`sync::compact`): the copy is
/// made under the user's lock, the upload and the deletes run without it.
pub(crate) fn compact_soon(shared: Arc<Context>, user: UserId) {
    let slot = shared.slots.get(&user);
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if slot.compaction_scheduled.swap(true, Ordering::SeqCst) {
        return;
    }
    let tasks = shared.tasks.clone();
    tasks.spawn_on(
        async move {
            if let Err(err) = compact_now(&shared, &user).await {
                warn!(user = %user, error = %err, "compaction failed; the next write tries again");
            }
            slot.compaction_scheduled.store(false, Ordering::SeqCst);
        },
        &runtime,
    );
}

/// Folds `user`'s log into a new snapshot now; the snapshot's version in the bucket
/// afterwards (`None`: nothing to fold here, or another instance folded first).
pub(crate) async fn compact_now(shared: &Context, user: &UserId) -> Result<Option<Version>> {
    let slot = shared.slots.get(user);
    let copied = {
        let mut guard = slot.lock().await;
        guard.last_compaction = Some(std::time::Instant::now());
        let (state, staged) = (guard.sync.clone(), guard.staged.is_some());
        compact::copy_committed(shared, user, state, staged).await?
    };
    let Some((image, state)) = copied else {
        return Ok(None);
    };
    let folded = compact::fold(shared, user, image, state).await?;
    if let Some(version) = folded {
        let mut guard = slot.lock().await;
        guard.snapshot_version = Some(version);
        guard.log_bytes = 0;
    }
    Ok(folded)
}

/// Finishes every pending upload found on disk (start-up). Failures are logged; the
/// user's next request tries again before it is served.
pub(crate) async fn finish_pending_uploads(shared: &Arc<Context>) {
    let Ok(entries) = fs::read_dir(shared.layout.data_dir()) else {
        return;
    };
    let users = entries
        .flatten()
        .filter_map(|entry| UserId::new(entry.file_name().to_string_lossy().into_owned()).ok())
        .filter(|user| shared.layout.pending_record_path(user).exists());
    for user in users {
        let slot = shared.slots.get(&user);
        let mut guard = slot.lock().await;
        match pending::finish_pending(shared, &user, &mut guard).await {
            Ok(()) => info!(user = %user, "finished a pending upload left by an earlier run"),
            Err(err) => {
                warn!(user = %user, error = %err, "a pending upload is still pending");
                if shared.config.durability == Durability::Async {
                    schedule_upload(Arc::clone(shared), user.clone());
                }
            }
        }
    }
}
