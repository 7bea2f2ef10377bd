//! `cellar status USER`: a user's database as the store has it (one metadata read).

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
}

impl Report for Status {
    fn to_text(&self) -> String {
        format!(
            "user       {}\nversion    {}\nsize       {}\nupdated at {}\nwriter     {}\nsha256     {}",
            self.user_id,
            self.version,
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
    let metadata = remote.metadata;
    output.report(&Status {
        user_id: user.to_string(),
        version: metadata.version,
        size_bytes: metadata.size,
        updated_at: metadata.updated_at.to_rfc3339(),
        writer: metadata.writer,
        sha256: metadata.sha256,
        etag: remote.etag.to_string(),
    })?;
    Ok(Exit::Success)
}
