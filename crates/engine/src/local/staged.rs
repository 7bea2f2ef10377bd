//! A download written in full to `database.sqlite.download` and not installed yet: it
//! answers requests while its last checks (SHA-256 unless checked on arrival, fsync) run
//! on the blocking pool, and is installed once they pass (see `sync::staged`).

use std::fs::File;
use std::path::{Path, PathBuf};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared as SharedFuture};
use tracing::warn;

use crate::checksum::sha256_of_file;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::local::{SyncState, install_download};
use crate::store::ETag;
use crate::user::UserId;

/// A checked download in `database.sqlite.download`, not installed yet.
pub struct StagedDownload {
    /// The state the local copy is at once this is installed: the download's, or the
    /// version a request committed on top of it.
    pub state: SyncState,
    /// The object's ETag, remembered if its SHA-256 fails.
    etag: ETag,
    /// Its SHA-256 is still to be checked (the body was checked on arrival otherwise).
    sha256_pending: bool,
    /// Changes of the log were written to it without fsync (it is not the local copy
    /// yet: a crash throws it away); its install fsyncs it.
    pub unsynced_writes: bool,
    settling: Settling,
}

/// The checks left once a download's last byte is in: SHA-256 (unless it was checked on
/// arrival) and the file's fsync, running on the blocking pool; `Err` says how SHA-256
/// failed. Shared, so that the install and a write's upload both wait for the one run.
type Settling = SharedFuture<BoxFuture<'static, std::result::Result<Fsynced, String>>>;

/// Whether the checks fsynced the download file. Nothing written to it after them needs
/// another: a request's commit on it is fsynced by SQLite (`synchronous = FULL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsynced {
    Yes,
    /// The fsync failed (and was logged): the install fsyncs and reports the failure.
    No,
}

impl std::fmt::Debug for StagedDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedDownload")
            .field("state", &self.state)
            .field("etag", &self.etag)
            .field("settled", &self.settling.peek())
            .finish()
    }
}

impl StagedDownload {
    /// Stages the download written at `path` (the object with `etag`, to be installed as
    /// `state`) and starts the checks left on it: SHA-256 against `sha256` if given, then
    /// fsync, so that the install under the lock has neither to wait for.
    pub fn start(state: SyncState, etag: ETag, path: PathBuf, sha256: Option<String>) -> Self {
        Self {
            state,
            etag,
            sha256_pending: sha256.is_some(),
            unsynced_writes: false,
            settling: settle(path, sha256),
        }
    }

    /// True when every byte was checked on arrival: the file may be written before its
    /// install (a change of the log applied to it), no check reads it again.
    pub fn checked_on_arrival(&self) -> bool {
        !self.sha256_pending
    }

    /// The object's ETag, remembered if its SHA-256 fails.
    pub fn etag(&self) -> &ETag {
        &self.etag
    }

    /// Resolves once the checks left on the download have ended, however they ended.
    pub fn settling(&self) -> impl Future<Output = ()> + use<> {
        self.settling.clone().map(|_| ())
    }

    /// Waits for the download's SHA-256 check; an error if it does not match.
    pub async fn verified(&self, user: &UserId) -> Result<()> {
        self.checked(user).await.map(|_| ())
    }

    /// Waits for the download's checks: whether they fsynced it, or how SHA-256 failed.
    pub async fn checked(&self, user: &UserId) -> Result<Fsynced> {
        self.settling
            .clone()
            .await
            .map_err(|mismatch| Error::Inconsistent {
                user: user.clone(),
                detail: mismatch,
            })
    }

    /// True once the checks left on the download are done (polled here: a shared future
    /// keeps its outcome only once somebody polled it after the blocking task ended).
    pub fn settled(&self) -> bool {
        self.settling.clone().now_or_never().is_some()
    }
}

/// The checks left on the download at `path`, running on the blocking pool.
fn settle(path: PathBuf, sha256: Option<String>) -> Settling {
    tokio::task::spawn_blocking(move || {
        #[cfg(feature = "crash-points")]
        crate::crash::checks::wait_while_held(&path);
        if let Some(expected) = sha256 {
            check_sha256(&path, &expected)?;
        }
        Ok(match File::open(&path).and_then(|file| file.sync_all()) {
            Ok(()) => Fsynced::Yes,
            Err(err) => {
                warn!(path = %path.display(), error = %err, "could not fsync a download; the install tries again");
                Fsynced::No
            }
        })
    })
    .map(|joined| joined.unwrap_or_else(|err| Err(format!("checking the download stopped: {err}"))))
    .boxed()
    .shared()
}

/// Renames a checked download into place (fsyncing it first if its checks could not) and
/// saves the state it is installed with.
pub fn install_staged(
    layout: &Layout,
    user: &UserId,
    state: &SyncState,
    fsynced: Fsynced,
) -> Result<()> {
    if fsynced == Fsynced::No {
        let path = layout.download_temp_path(user);
        File::open(&path)
            .and_then(|file| file.sync_all())
            .map_err(Error::io(&path))?;
    }
    install_download(layout, user)?;
    state.save_for(layout, user)
}

/// Hashes the file at `path` and compares with `expected`.
fn check_sha256(path: &Path, expected: &str) -> std::result::Result<(), String> {
    let actual = sha256_of_file(path)
        .map_err(|err| format!("the downloaded file could not be read again: {err}"))?;
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(format!(
            "cellar-sha256 says {expected} but the downloaded file hashes to {actual}"
        ))
    }
}
