//! `cellar users`: who has a database in the store.

use anyhow::Context;
use indicatif::HumanBytes;
use serde::Serialize;

use super::Bucket;
use crate::exit::Exit;
use crate::output::{Output, Report};

/// The users found, with the size of their object.
#[derive(Serialize)]
struct Users {
    users: Vec<User>,
}

#[derive(Serialize)]
struct User {
    user_id: String,
    size_bytes: u64,
}

impl Report for Users {
    fn to_text(&self) -> String {
        if self.users.is_empty() {
            return "no users in the store".into();
        }
        let lines: Vec<String> = self
            .users
            .iter()
            .map(|user| format!("{}\t{}", user.user_id, HumanBytes(user.size_bytes)))
            .collect();
        lines.join("\n")
    }
}

/// Lists the users in the store.
pub async fn run(bucket: &Bucket<'_>, output: Output) -> anyhow::Result<Exit> {
    let listed = bucket
        .reader()?
        .list_users()
        .await
        .with_context(|| format!("cannot list the users in the store {}", bucket.url()))?;
    let users = listed
        .into_iter()
        .map(|(user, size_bytes)| User {
            user_id: user.to_string(),
            size_bytes,
        })
        .collect();
    output.report(&Users { users })?;
    Ok(Exit::Success)
}
