//! One slot per user: the lock that serializes a user's requests on this instance, and the
//! warm state behind it (open connection, sync state).
//!
//! Warm slots are kept in an LRU of bounded size, so 100 000 users do not mean 100 000
//! open files. A slot evicted while a request still holds it stays alive through that
//! request's `Arc`, and `live` keeps finding it by a weak reference: two requests for one
//! user always share one lock, even across an eviction.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, Weak};

use lru::LruCache;

use crate::UserId;
use crate::local::SyncState;
use crate::tracked::TrackedConnection;

/// The warm state of one user's database on this instance.
#[derive(Debug, Default)]
pub(crate) struct SlotState {
    /// The open connection, outside any transaction; `None` until needed or after a download.
    pub conn: Option<TrackedConnection>,
    /// What the local file was synced to; `None` until read from disk.
    pub sync: Option<SyncState>,
}

/// A user's slot: the async mutex is the per-user request lock.
pub(crate) type Slot = Arc<tokio::sync::Mutex<SlotState>>;

/// All slots, warm and in use.
#[derive(Debug)]
pub(crate) struct Slots {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    live: HashMap<UserId, Weak<tokio::sync::Mutex<SlotState>>>,
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
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).warm.len()
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
