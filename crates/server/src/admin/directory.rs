//! Who has a database in the bucket, for the operator's users table. With 100 000 users a
//! LIST takes a hundred store round trips, so the bucket is listed once into memory and
//! searched and paged there; the copy is listed again once it is older than
//! [`FRESH_FOR`], and users whose first upload this instance sees are added at once.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cellar_engine::{BucketReader, Error, UserId};

/// How long a listing is served before the bucket is listed again: users that other
/// instances create appear within this time.
pub(super) const FRESH_FOR: Duration = Duration::from_secs(10);

/// The users in the bucket, as last listed.
pub(super) struct Directory {
    reader: BucketReader,
    known: Mutex<Known>,
    /// Held for the whole of a LIST: one at a time, and the next caller finds it done.
    listing: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Known {
    users: BTreeSet<UserId>,
    listed_at: Option<Instant>,
    /// Users seen to arrive while a LIST runs: it may have passed their key already.
    arrived: Option<Vec<UserId>>,
}

/// One page of users, in id order.
pub(super) struct Page {
    /// The page's users.
    pub users: Vec<UserId>,
    /// The last user of the page, when more match after it.
    pub next: Option<UserId>,
    /// How many users match, on every page.
    pub total: usize,
}

impl Directory {
    pub(super) fn new(reader: BucketReader) -> Self {
        Self {
            reader,
            known: Mutex::default(),
            listing: tokio::sync::Mutex::new(()),
        }
    }

    /// How old the listing is; `None` before the first.
    pub(super) fn age(&self) -> Option<Duration> {
        self.known().listed_at.map(|at| at.elapsed())
    }

    /// A LIST is running now.
    pub(super) fn is_listing(&self) -> bool {
        self.listing.try_lock().is_err()
    }

    /// Lists the bucket, unless another caller just did.
    pub(super) async fn refresh(&self) -> Result<(), Error> {
        let _only = self.listing.lock().await;
        if self.age().is_some_and(|age| age < FRESH_FOR) {
            return Ok(());
        }
        self.known().arrived = Some(Vec::new());
        let listed = self.reader.list_users().await;
        let mut known = self.known();
        let arrived = known.arrived.take().unwrap_or_default();
        known.users = listed?
            .into_iter()
            .map(|(user, _)| user)
            .chain(arrived)
            .collect();
        known.listed_at = Some(Instant::now());
        Ok(())
    }

    /// `user` has a database now (this instance saw a version of it).
    pub(super) fn saw(&self, user: &UserId) {
        let mut known = self.known();
        if let Some(arrived) = &mut known.arrived {
            arrived.push(user.clone());
        }
        known.users.insert(user.clone());
    }

    /// Up to `limit` users after `after` whose id contains `search` (ignoring ASCII case).
    pub(super) fn page(&self, search: &str, after: Option<&UserId>, limit: usize) -> Page {
        let known = self.known();
        let matches = |user: &&UserId| contains_ignoring_case(user.as_str(), search);
        let total = known.users.iter().filter(matches).count();
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut found = known.users.range((start, Bound::Unbounded)).filter(matches);
        let users: Vec<UserId> = found.by_ref().take(limit).cloned().collect();
        let next = found.next().and(users.last().cloned());
        Page { users, next, total }
    }

    fn known(&self) -> MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn contains_ignoring_case(text: &str, search: &str) -> bool {
    let (text, search) = (text.as_bytes(), search.as_bytes());
    search.is_empty()
        || text
            .windows(search.len())
            .any(|window| window.eq_ignore_ascii_case(search))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_ignores_case_and_matches_anywhere() {
        assert!(contains_ignoring_case("Alice_01", "ice_0"));
        assert!(contains_ignoring_case("Alice_01", "ALI"));
        assert!(contains_ignoring_case("bob", ""));
        assert!(!contains_ignoring_case("bob", "bobby"));
        assert!(!contains_ignoring_case("bob", "é"));
    }
}
