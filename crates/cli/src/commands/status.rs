//! `cellar status USER`: a user's database as the store has it: the snapshot's metadata
//! and the log after it (one metadata read each).

use anyhow::Context;
use cellar_engine::{UserId, Version};
use indicatif::HumanBytes;
use serde::Serialize;

use super::Bucket;
use crate::exit::Exit;
use crate::output::{Output, Report};

/// What the object says about itself (DESIGN §3 metadata).
#[derive(Serialize)]
struct Status {
    user_id: String,
    version: Version,
    size_bytes: u64,
    updated_at: String,
    writer: String,
    sha256: String,
    etag: String,
    /// The version the snapshot holds; the log holds the rest.
    snapshot_version: Version,
    /// Changes in the log after the snapshot.
    changes: u64,
}

impl Report for Status {
    fn to_text(&self) -> String {
        format!(
            "user       {}\nversion    {}\nsnapshot   version {} + {} change(s) in the log\nsize       {} (snapshot)\nupdated at {}\nwriter     {}\nsha256     {} (snapshot)",
            self.user_id,
            self.version,
            self.snapshot_version,
            self.changes,
            HumanBytes(self.size_bytes),
            self.updated_at,
            self.writer,
            self.sha256
        )
    }
}

/// Shows `user`'s object; a user without one is a failure (exit 1).
pub async fn run(bucket: &Bucket<'_>, user: &UserId, output: Output) -> anyhow::Result<Exit> {
    let remote = bucket
        .reader()?
        .remote_status(user)
        .await
        .with_context(|| format!("cannot read the status of user {user}"))?
        .ok_or_else(|| bucket.missing(user))?;
    output.report(&Status {
        user_id: user.to_string(),
        version: remote.version,
        size_bytes: remote.snapshot.size,
        updated_at: remote.updated_at.to_rfc3339(),
        writer: remote.writer,
        sha256: remote.snapshot.sha256,
        etag: remote.etag.to_string(),
        snapshot_version: remote.snapshot.version,
        changes: remote.changes,
    })?;
    Ok(Exit::Success)
}
