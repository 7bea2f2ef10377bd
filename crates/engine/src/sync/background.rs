//! The background uploader of `durability = async`: takes a user's pending upload (the
//! image of its latest locally committed write) to the bucket, after the pacing interval,
//! retrying with backoff while the store fails.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::warn;

use crate::context::Context;
use crate::error::Error;
use crate::sync::pending;
use crate::user::UserId;

/// How often a failing background upload is tried before waiting for the next write.
const MAX_ATTEMPTS: u32 = 12;
/// The longest pause between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Makes sure a background upload of `user`'s pending write is on its way.
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
            let mut guard = slot.state.lock().await;
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
