//! `cellar gc [USER]`: deletes the changes and kept snapshots that the retention window
//! (`history.keep_days`, `history.keep_versions`) no longer needs, for one user or every
//! user. A server does this after each compaction; `gc` catches up on users nobody
//! writes to, and applies a window just narrowed.
//!
//! It deletes, so it opens an engine on the store (write access needed).

use anyhow::Context;
use cellar_engine::{Collected, UserId};
use serde::Serialize;

use super::Bucket;
use crate::exit::Exit;
use crate::output::{Output, Report};

/// Every user's collection, and their sum.
#[derive(Serialize)]
struct Collection {
    users: Vec<UserCollected>,
    deleted_changes: u64,
    deleted_snapshots: u64,
    /// True when some user has more to delete than one run does: run `gc` again.
    more: bool,
}

/// One user's collection.
#[derive(Serialize)]
struct UserCollected {
    user_id: String,
    #[serde(flatten)]
    collected: Collected,
}

impl Report for Collection {
    fn to_text(&self) -> String {
        // Only the users something happened to: `gc` of a whole bucket stays readable.
        let mut lines: Vec<String> = self
            .users
            .iter()
            .filter(|user| {
                let c = &user.collected;
                c.deleted_changes + c.deleted_snapshots > 0 || c.more
            })
            .map(|user| {
                let c = &user.collected;
                let oldest = c
                    .oldest_kept
                    .map_or(String::new(), |v| format!(", oldest kept version {v}"));
                let more = if c.more { ", more to delete" } else { "" };
                format!(
                    "{}: deleted {} change(s) and {} kept snapshot(s){oldest}{more}",
                    user.user_id, c.deleted_changes, c.deleted_snapshots
                )
            })
            .collect();
        lines.push(format!(
            "{} user(s): deleted {} change(s) and {} kept snapshot(s)",
            self.users.len(),
            self.deleted_changes,
            self.deleted_snapshots
        ));
        if self.more {
            lines.push("more is left to delete; run cellar gc again".into());
        }
        lines.join("\n")
    }
}

/// Collects `user`'s history, or every user's when `None`; a named user without a
/// database is not found (exit 1).
pub async fn run(
    bucket: &Bucket<'_>,
    user: Option<UserId>,
    output: Output,
) -> anyhow::Result<Exit> {
    let engine = bucket.open().await?;
    let named = user.is_some();
    let users = match user {
        Some(user) => vec![user],
        None => {
            let listed =
                bucket.reader()?.list_users().await.with_context(|| {
                    format!("cannot list the users in the store {}", bucket.url())
                })?;
            listed.into_iter().map(|(user, _)| user).collect()
        }
    };
    let bar = output.bar(users.len() as u64);
    let mut collected = Vec::with_capacity(users.len());
    for user in users {
        bar.set_message(user.to_string());
        let done = engine
            .collect_history(&user)
            .await
            .with_context(|| format!("cannot collect the history of user {user}"))?;
        if named && done.oldest_kept.is_none() {
            return Err(bucket.missing(&user));
        }
        collected.push(UserCollected {
            user_id: user.to_string(),
            collected: done,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    output.report(&Collection {
        deleted_changes: collected.iter().map(|u| u.collected.deleted_changes).sum(),
        deleted_snapshots: collected
            .iter()
            .map(|u| u.collected.deleted_snapshots)
            .sum(),
        more: collected.iter().any(|u| u.collected.more),
        users: collected,
    })?;
    Ok(Exit::Success)
}
