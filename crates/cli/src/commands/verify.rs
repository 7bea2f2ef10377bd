//! `cellar verify [USER | --all]`: each object's body against its `cellar-sha256`, and
//! `PRAGMA integrity_check` on it. Any failure makes the exit status 1; an unreachable
//! store stops the run (exit 3).

use anyhow::Context;
use cellar_engine::{BucketReader, UserId, Verification};
use serde::Serialize;

use super::Bucket;
use crate::exit::Exit;
use crate::output::{Output, Report};

/// The verdicts, and their sum.
#[derive(Serialize)]
struct Verified {
    ok: bool,
    checked: usize,
    failed: usize,
    users: Vec<UserCheck>,
}

/// One user's verdict; `problems` says what is wrong either way.
#[derive(Serialize)]
struct UserCheck {
    ok: bool,
    #[serde(flatten)]
    outcome: Outcome,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Outcome {
    /// The object was read and checked.
    Checked(Verification),
    /// The object is missing or could not be checked at all (unreadable metadata, ...).
    Unchecked {
        user_id: String,
        problems: Vec<String>,
    },
}

impl Outcome {
    fn user_id(&self) -> &str {
        match self {
            Outcome::Checked(verification) => &verification.user_id,
            Outcome::Unchecked { user_id, .. } => user_id,
        }
    }

    fn problems(&self) -> &[String] {
        match self {
            Outcome::Checked(verification) => &verification.problems,
            Outcome::Unchecked { problems, .. } => problems,
        }
    }
}

impl Report for Verified {
    fn to_text(&self) -> String {
        let mut lines: Vec<String> = self
            .users
            .iter()
            .map(|check| match (&check.outcome, check.ok) {
                (Outcome::Checked(v), true) => {
                    format!("ok      {} version {}", v.user_id, v.version)
                }
                (outcome, _) => format!(
                    "FAILED  {}: {}",
                    outcome.user_id(),
                    outcome.problems().join("; ")
                ),
            })
            .collect();
        lines.push(format!("{} checked, {} failed", self.checked, self.failed));
        lines.join("\n")
    }
}

/// Verifies `user`'s database, or every user's when `user` is `None` (`--all`).
pub async fn run(
    bucket: &Bucket<'_>,
    user: Option<UserId>,
    output: Output,
) -> anyhow::Result<Exit> {
    let reader = bucket.reader()?;
    let users = match user {
        Some(user) => vec![user],
        None => {
            let listed = reader
                .list_users()
                .await
                .with_context(|| format!("cannot list the users in the store {}", bucket.url()))?;
            listed.into_iter().map(|(user, _)| user).collect()
        }
    };
    let bar = output.bar(users.len() as u64);
    let mut checks = Vec::with_capacity(users.len());
    for user in users {
        bar.set_message(user.to_string());
        checks.push(check(&reader, user).await?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let failed = checks.iter().filter(|check| !check.ok).count();
    let report = Verified {
        ok: failed == 0,
        checked: checks.len(),
        failed,
        users: checks,
    };
    output.report(&report)?;
    Ok(if report.ok {
        Exit::Success
    } else {
        Exit::Failed
    })
}

/// Checks one user; only an unreachable store is an error.
async fn check(reader: &BucketReader, user: UserId) -> anyhow::Result<UserCheck> {
    let outcome = match reader.verify(&user).await {
        Ok(Some(verification)) => Outcome::Checked(verification),
        Ok(None) => Outcome::Unchecked {
            user_id: user.to_string(),
            problems: vec!["no database in the store".into()],
        },
        Err(err) if Exit::of_engine(&err) == Exit::Unavailable => {
            return Err(err).with_context(|| format!("cannot verify user {user}"));
        }
        Err(err) => Outcome::Unchecked {
            user_id: user.to_string(),
            problems: vec![err.to_string()],
        },
    };
    let ok = matches!(&outcome, Outcome::Checked(verification) if verification.ok());
    Ok(UserCheck { ok, outcome })
}
