//! `cellar versions USER [--writers] [--limit N]`: the versions of a user's database that
//! the history can still bring back (`restore`, `fork`, `pull --version`), newest first.

use anyhow::Context;
use cellar_engine::{Holder, UserId, VersionEntry};
use chrono::SecondsFormat;
use indicatif::HumanBytes;
use serde::Serialize;

use super::Bucket;
use crate::exit::Exit;
use crate::output::{Output, Report, table};

/// The newest versions, and how many the history holds in all.
#[derive(Serialize)]
struct Versions {
    user_id: String,
    /// Every restorable version, listed or not.
    total: usize,
    /// Newest first.
    versions: Vec<VersionEntry>,
}

impl Report for Versions {
    fn to_text(&self) -> String {
        let header = ["VERSION", "TIME", "HELD BY", "SHIPPED", "SIZE", "WRITER"];
        let rows = std::iter::once(header.map(String::from).to_vec())
            .chain(self.versions.iter().map(|entry| {
                vec![
                    entry.version.to_string(),
                    // Every digit the store gave: the time pasted into `--at` names this version.
                    entry
                        .created_at
                        .to_rfc3339_opts(SecondsFormat::AutoSi, true),
                    held_by(&entry.held_by),
                    HumanBytes(entry.shipped_bytes).to_string(),
                    entry
                        .size_bytes
                        .map_or("-".into(), |size| HumanBytes(size).to_string()),
                    entry.writer.clone().unwrap_or_else(|| "-".into()),
                ]
            }))
            .collect::<Vec<_>>();
        let mut text = table(&rows);
        if self.versions.len() < self.total {
            text.push_str(&format!(
                "\nthe newest {} of {} versions; --limit 0 lists them all",
                self.versions.len(),
                self.total
            ));
        }
        text
    }
}

/// The objects holding a version, in words.
fn held_by(holders: &[Holder]) -> String {
    let names: Vec<&str> = holders
        .iter()
        .map(|holder| match holder {
            Holder::Change => "change",
            Holder::Snapshot => "snapshot",
            Holder::KeptSnapshot => "kept snapshot",
        })
        .collect();
    names.join(", ")
}

/// Lists `user`'s newest `limit` versions (all when 0); a user without a database is not
/// found (exit 1).
pub async fn run(
    bucket: &Bucket<'_>,
    user: &UserId,
    writers: bool,
    limit: usize,
    output: Output,
) -> anyhow::Result<Exit> {
    let reader = bucket.reader()?;
    let spinner = output.spinner(format!("reading the history of {user}"));
    let shown = if limit == 0 { usize::MAX } else { limit };
    let listed = reader.versions(user, if writers { shown } else { 0 }).await;
    spinner.finish_and_clear();
    let mut versions = listed
        .with_context(|| format!("cannot list the versions of user {user}"))?
        .ok_or_else(|| bucket.missing(user))?;
    let total = versions.len();
    versions.reverse();
    if limit > 0 {
        versions.truncate(limit);
    }
    output.report(&Versions {
        user_id: user.to_string(),
        total,
        versions,
    })?;
    Ok(Exit::Success)
}
