//! `cellar push USER FILE`: upload a SQLite file as a user's next version.
//!
//! The file is checked before the store is contacted: SQLite header, then
//! `PRAGMA integrity_check`. The uploaded image is read through SQLite itself, so a
//! database in WAL mode is pushed with its committed `-wal` content, not without it.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cellar_engine::rusqlite::{Connection, OpenFlags};
use cellar_engine::snapshot::{HEADER_LEN, Snapshot, integrity_verdict, looks_like_sqlite};
use cellar_engine::{UserId, Version};
use indicatif::HumanBytes;
use serde::Serialize;

use super::Bucket;
use crate::exit::Exit;
use crate::output::{Output, Report};

/// What was uploaded.
#[derive(Serialize)]
struct Pushed {
    user_id: String,
    version: Version,
    size_bytes: u64,
    file: PathBuf,
}

impl Report for Pushed {
    fn to_text(&self) -> String {
        format!(
            "pushed {} ({}) as version {} of {}",
            self.file.display(),
            HumanBytes(self.size_bytes),
            self.version,
            self.user_id
        )
    }
}

/// Checks `file`, then uploads it as `user`'s next version.
pub async fn run(
    bucket: &Bucket<'_>,
    user: &UserId,
    file: &Path,
    output: Output,
) -> anyhow::Result<Exit> {
    let image =
        read_database(file).with_context(|| format!("refusing to push {}", file.display()))?;
    let size_bytes = image.len() as u64;
    let engine = bucket.open().await?;
    let spinner = output.spinner(format!(
        "uploading {} for {user} ({})",
        file.display(),
        HumanBytes(size_bytes)
    ));
    let pushed = engine.push(user, image).await;
    spinner.finish_and_clear();
    let version =
        pushed.with_context(|| format!("cannot push {} for user {user}", file.display()))?;
    output.report(&Pushed {
        user_id: user.to_string(),
        version,
        size_bytes,
        file: file.to_owned(),
    })?;
    Ok(Exit::Success)
}

/// The database image of `path` as SQLite reads it, after checking it is a sound database.
fn read_database(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut header = Vec::with_capacity(HEADER_LEN);
    File::open(path)
        .context("cannot open it")?
        .take(HEADER_LEN as u64)
        .read_to_end(&mut header)
        .context("cannot read it")?;
    if !looks_like_sqlite(&header) {
        bail!("it is not a SQLite database (no SQLite header)");
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .context("SQLite cannot open it")?;
    let verdict = integrity_verdict(&conn);
    if verdict != "ok" {
        bail!("it fails PRAGMA integrity_check: {verdict}");
    }
    Ok(Snapshot::take(&conn)
        .context("cannot read its pages")?
        .bytes()
        .to_vec())
}
