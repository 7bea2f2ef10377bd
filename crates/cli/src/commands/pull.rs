//! `cellar pull USER [--version N] [-o FILE]`: download a user's database, its newest
//! version or one from the history, checked against its checksums.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use cellar_engine::{UserId, Version};
use indicatif::HumanBytes;
use serde::Serialize;

use super::Bucket;
use crate::exit::Exit;
use crate::output::{Output, Report};

/// What was written where.
#[derive(Serialize)]
struct Pulled {
    user_id: String,
    version: Version,
    size_bytes: u64,
    path: PathBuf,
}

impl Report for Pulled {
    fn to_text(&self) -> String {
        format!(
            "pulled {} version {} ({}) into {}",
            self.user_id,
            self.version,
            HumanBytes(self.size_bytes),
            self.path.display()
        )
    }
}

/// Downloads `user`'s database at `version` (the newest when `None`) into `path`; refuses
/// to replace a file unless `force`.
pub async fn run(
    bucket: &Bucket<'_>,
    user: &UserId,
    version: Option<Version>,
    path: &Path,
    force: bool,
    output: Output,
) -> anyhow::Result<Exit> {
    if !force && path.exists() {
        bail!(
            "{} already exists; pass --force to replace it",
            path.display()
        );
    }
    let reader = bucket.reader()?;
    let spinner = output.spinner(match version {
        Some(version) => format!("rebuilding {user} version {version}"),
        None => format!("downloading {user}"),
    });
    let downloaded = match version {
        Some(version) => reader
            .download_version(user, version)
            .await
            .map(|bytes| Some((version, bytes))),
        None => reader.download(user).await,
    };
    spinner.finish_and_clear();
    let (version, bytes) = downloaded
        .with_context(|| format!("cannot download the database of user {user}"))?
        .ok_or_else(|| bucket.missing(user))?;
    write_atomically(path, &bytes, force)
        .with_context(|| format!("cannot write {}", path.display()))?;
    output.report(&Pulled {
        user_id: user.to_string(),
        version,
        size_bytes: bytes.len() as u64,
        path: path.to_owned(),
    })?;
    Ok(Exit::Success)
}

/// Writes `bytes` to a temp file beside `path`, syncs it, then renames it into place, so
/// `path` is either absent or complete. Without `replace`, an existing file is kept.
fn write_atomically(path: &Path, bytes: &[u8], replace: bool) -> anyhow::Result<()> {
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut temp = temp_file_in(folder)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    if replace {
        temp.persist(path)?;
    } else {
        temp.persist_noclobber(path)?;
    }
    Ok(())
}

/// A hidden temp file in `folder`, created with the permissions of any new file (the
/// umask applies), not the private ones temp files get by default.
fn temp_file_in(folder: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".cellar-pull-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(folder)
}
