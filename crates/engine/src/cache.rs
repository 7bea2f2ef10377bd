//! One slot per user: the lock that serializes a user's requests on this instance, and the
//! warm state behind it (open connection, sync state).
//!
//! Warm slots are kept in an LRU of bounded size, so 100 000 users do not mean 100 000
//! open files. A slot evicted while a request still holds it stays alive through that
//! request's `Arc`, and `live` keeps finding it by a weak reference: two requests for one
//! user always share one lock, even across an eviction.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use lru::LruCache;
use tokio::sync::OwnedMutexGuard;

use crate::committed::Committed;
use crate::error::{Error, Result};
use crate::local::{StagedDownload, SyncState};
use crate::store::ETag;
use crate::tracked::TrackedConnection;
use crate::user::UserId;
use crate::version::Version;

/// One request's work waiting in a user's queue.
pub(crate) trait QueuedWork: Send + Sync + std::fmt::Debug {
    /// Runs the work; keeps its value inside; true when it succeeded.
    fn run(&self, conn: &TrackedConnection) -> bool;
    /// Delivers the group's outcome: where it landed, or why it failed.
    fn complete(&self, group: Result<&Committed<()>, &Error>);
    /// The transaction it ran in was undone through no fault of its own (the session that
    /// carried it runs its own work again): its caller queues it anew.
    fn again(&self);
}

/// Delivers one outcome to every piece of a group.
pub(crate) fn complete_all(group: &[Arc<dyn QueuedWork>], outcome: Result<&Committed<()>, &Error>) {
    for work in group {
        work.complete(outcome);
    }
}

/// The warm state of one user's database on this instance.
#[derive(Debug, Default)]
pub(crate) struct SlotState {
    /// The open connection, outside any transaction; `None` until needed or after a download.
    pub conn: Option<TrackedConnection>,
    /// What the local file was synced to; `None` until read from disk.
    pub sync: Option<SyncState>,
    /// When this instance last uploaded the user's database (for pacing).
    pub last_upload: Option<std::time::Instant>,
    /// A download answering requests before it is installed; installed by the next
    /// holder of the lock (`conn`, if any, is open on it).
    pub staged: Option<StagedDownload>,
    /// An object whose download failed its SHA-256 check after it was staged: downloaded
    /// again, it is checked in full before it answers anything.
    pub distrusted: Option<ETag>,
    /// When this instance last read the user's snapshot: past half the log's grace the
    /// version check reads it again, so a change folded and deleted meanwhile is never
    /// mistaken for the newest (`docs/delta-sync.md`, the ABA hazard).
    pub snapshot_read_at: Option<std::time::Instant>,
    /// The version the bucket's snapshot holds, as last seen here; `None` until read.
    pub snapshot_version: Option<crate::version::Version>,
    /// Bytes of changes this instance saw committed since that snapshot.
    pub log_bytes: u64,
    /// When this instance last folded the user's log (compaction is paced, see
    /// `sync::compact`).
    pub last_compaction: Option<std::time::Instant>,
}

/// A user's slot: the per-user request lock over the warm state, and the queue of work
/// waiting to be committed together (group commit).
#[derive(Debug, Default)]
pub(crate) struct UserSlot {
    /// Held for the whole of a request (or a group of them); taken only by [`UserSlot::lock`].
    state: Arc<tokio::sync::Mutex<SlotState>>,
    /// Work submitted through [`crate::Engine::transact`] and not yet taken by a leader.
    pub queue: Mutex<Vec<Arc<dyn QueuedWork>>>,
    /// The version last seen for this user on this instance, plus one (0: none yet); read
    /// without the lock, e.g. to label an error response.
    seen_version: AtomicU64,
    /// A background upload task is scheduled for this user (`async` durability).
    pub upload_scheduled: AtomicBool,
    /// A compaction of this user's log is scheduled or running.
    pub compaction_scheduled: AtomicBool,
}

impl UserSlot {
    /// Takes the user's lock: the one way in to the warm state. Requests, group leaders and
    /// the runtime's background tasks all wait here, so one user's work never overlaps.
    pub async fn lock(&self) -> OwnedMutexGuard<SlotState> {
        Arc::clone(&self.state).lock_owned().await
    }

    /// Adds work to the queue.
    pub fn enqueue(&self, work: Arc<dyn QueuedWork>) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(work);
    }

    /// Records the version the user's database is at.
    pub fn remember_version(&self, version: Version) {
        self.seen_version
            .store(version.get().saturating_add(1), Ordering::Relaxed);
    }

    /// The version last recorded, if any.
    pub fn seen_version(&self) -> Option<Version> {
        match self.seen_version.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Version::new(n - 1)),
        }
    }

    /// Takes everything queued.
    pub fn drain(&self) -> Vec<Arc<dyn QueuedWork>> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A shared handle on a user's slot.
pub(crate) type Slot = Arc<UserSlot>;

/// All slots, warm and in use.
#[derive(Debug)]
pub(crate) struct Slots {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    live: HashMap<UserId, Weak<UserSlot>>,
    warm: LruCache<UserId, Slot>,
}

impl Slots {
    /// Keeps at most `capacity` idle users warm.
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            inner: Mutex::new(Inner {
                live: HashMap::new(),
                warm: LruCache::new(capacity),
            }),
        }
    }

    /// The slot of `user`, the same one for every caller while any of them holds it.
    pub fn get(&self, user: &UserId) -> Slot {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = inner.warm.get(user) {
            return Arc::clone(slot);
        }
        let slot = inner
            .live
            .get(user)
            .and_then(Weak::upgrade)
            .unwrap_or_default();
        inner.warm.put(user.clone(), Arc::clone(&slot));
        inner.live.insert(user.clone(), Arc::downgrade(&slot));
        if inner.live.len() > 2 * inner.warm.cap().get() + 64 {
            inner.live.retain(|_, weak| weak.strong_count() > 0);
        }
        slot
    }

    /// How many users are warm (open connection or cached state).
    pub fn warm_count(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .warm
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(i: usize) -> UserId {
        UserId::new(format!("u{i}")).unwrap()
    }

    #[test]
    fn warm_slots_are_bounded() {
        let slots = Slots::new(3);
        for i in 0..100 {
            slots.get(&user(i));
        }
        assert_eq!(slots.warm_count(), 3);
    }

    #[test]
    fn a_slot_in_use_is_shared_even_after_eviction() {
        let slots = Slots::new(1);
        let held = slots.get(&user(0));
        slots.get(&user(1));
        assert!(Arc::ptr_eq(&held, &slots.get(&user(0))));
    }
}
