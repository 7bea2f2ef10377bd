//! What this instance saw happen, kept in memory for the operator: the last events of all
//! users (replayed to a dashboard that connects, then followed live), the last events of
//! each recently active user, and how many conflicts each user had. Bounded: a busy server
//! keeps the most recent, never everything.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use cellar_engine::Event;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tokio::sync::broadcast;

/// Events of all users kept for a dashboard that connects.
const RECENT: usize = 100;
/// Events kept per user.
const PER_USER: usize = 50;
/// Users whose events are kept: the most recently active.
const USERS_KEPT: usize = 1_000;
/// Live events a slow dashboard may fall behind by before it skips some.
const LIVE_BACKLOG: usize = 1_024;

/// An event as the engine published it, with when this instance saw it.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Seen {
    /// When (RFC 3339).
    at: String,
    #[serde(flatten)]
    event: Event,
}

/// The events and the conflict counts.
pub(super) struct Feed {
    kept: Mutex<Kept>,
    live: broadcast::Sender<Seen>,
}

#[derive(Default)]
struct Kept {
    recent: VecDeque<Seen>,
    users: HashMap<String, UserEvents>,
    /// Users by when their last event came ([`Kept::tick`]): the first is evicted first.
    by_activity: BTreeMap<u64, String>,
    tick: u64,
    conflicts: HashMap<String, u64>,
}

struct UserEvents {
    last_tick: u64,
    events: VecDeque<Seen>,
}

impl Feed {
    pub(super) fn new() -> Self {
        Self {
            kept: Mutex::default(),
            live: broadcast::channel(LIVE_BACKLOG).0,
        }
    }

    /// Keeps `event`, seen `at`, and passes it on to the live followers.
    pub(super) fn record(&self, event: Event, at: DateTime<Utc>) {
        let seen = Seen {
            at: at.to_rfc3339_opts(SecondsFormat::Millis, true),
            event,
        };
        let mut kept = self.kept();
        kept.keep(&seen);
        // Under the lock: a follower gets every event exactly once, from its backlog or live.
        let _ = self.live.send(seen);
    }

    /// The recent events of all users, oldest first, and the live ones that follow them.
    pub(super) fn follow(&self) -> (Vec<Seen>, broadcast::Receiver<Seen>) {
        let kept = self.kept();
        (kept.recent.iter().cloned().collect(), self.live.subscribe())
    }

    /// `user`'s recent events, newest first.
    pub(super) fn of_user(&self, user: &str) -> Vec<Seen> {
        self.kept()
            .users
            .get(user)
            .map(|user| user.events.iter().rev().cloned().collect())
            .unwrap_or_default()
    }

    /// The conflicts `user`'s uploads met since this instance started.
    pub(super) fn conflicts(&self, user: &str) -> u64 {
        self.kept().conflicts.get(user).copied().unwrap_or(0)
    }

    fn kept(&self) -> MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Kept {
    fn keep(&mut self, seen: &Seen) {
        let user = seen.event.user_id().to_owned();
        if matches!(seen.event, Event::Conflict { .. }) {
            *self.conflicts.entry(user.clone()).or_default() += 1;
        }
        push_bounded(&mut self.recent, seen.clone(), RECENT);
        self.tick += 1;
        let tick = self.tick;
        let events = self
            .users
            .entry(user.clone())
            .or_insert_with(|| UserEvents {
                last_tick: tick,
                events: VecDeque::new(),
            });
        self.by_activity.remove(&events.last_tick);
        events.last_tick = tick;
        push_bounded(&mut events.events, seen.clone(), PER_USER);
        self.by_activity.insert(tick, user);
        while self.users.len() > USERS_KEPT {
            let Some((_, quietest)) = self.by_activity.pop_first() else {
                break;
            };
            self.users.remove(&quietest);
        }
    }
}

fn push_bounded(events: &mut VecDeque<Seen>, seen: Seen, bound: usize) {
    if events.len() == bound {
        events.pop_front();
    }
    events.push_back(seen);
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellar_engine::{ConflictPolicy, Resolution, Version};

    fn version(user: &str, version: u64) -> Event {
        Event::Version {
            user_id: user.into(),
            version: Version::new(version),
            writer: "w".into(),
            restored_from: None,
        }
    }

    #[test]
    fn per_user_events_are_bounded_and_newest_first() {
        let feed = Feed::new();
        for n in 1..=(PER_USER as u64 + 5) {
            feed.record(version("alice", n), Utc::now());
        }
        let events = feed.of_user("alice");
        assert_eq!(events.len(), PER_USER);
        assert_eq!(events[0].event, version("alice", PER_USER as u64 + 5));
        assert_eq!(feed.follow().0.len(), RECENT.min(PER_USER + 5));
    }

    #[test]
    fn the_quietest_users_are_forgotten_first() {
        let feed = Feed::new();
        feed.record(version("first", 1), Utc::now());
        feed.record(version("kept", 1), Utc::now());
        for n in 0..USERS_KEPT {
            feed.record(version(&format!("u{n}"), 1), Utc::now());
            if n == USERS_KEPT / 2 {
                feed.record(version("kept", 2), Utc::now());
            }
        }
        assert!(feed.of_user("first").is_empty());
        assert_eq!(feed.of_user("kept").len(), 2);
        assert_eq!(feed.kept().users.len(), USERS_KEPT);
        assert_eq!(feed.kept().by_activity.len(), USERS_KEPT);
    }

    #[test]
    fn conflicts_are_counted_per_user() {
        let feed = Feed::new();
        let conflict = Event::Conflict {
            user_id: "bob".into(),
            policy: ConflictPolicy::Strict,
            local_version: Version::new(1),
            remote_version: Version::new(2),
            local_writer: "a".into(),
            remote_writer: "b".into(),
            resolution: Resolution::Refused,
        };
        feed.record(conflict.clone(), Utc::now());
        feed.record(conflict, Utc::now());
        assert_eq!(feed.conflicts("bob"), 2);
        assert_eq!(feed.conflicts("alice"), 0);
    }

    #[test]
    fn a_follower_gets_the_backlog_then_live_events() {
        let feed = Feed::new();
        feed.record(version("alice", 1), Utc::now());
        let (backlog, mut live) = feed.follow();
        feed.record(version("alice", 2), Utc::now());
        assert_eq!(backlog.len(), 1);
        assert_eq!(live.try_recv().expect("live").event, version("alice", 2));
        let text = serde_json::to_value(&backlog[0]).expect("JSON");
        assert_eq!(text["type"], "version");
        assert!(text["at"].is_string(), "{text}");
    }
}
