//! A download answers its first request before it is installed.
//!
//! A newer object is written to `database.sqlite.download` as it arrives and checked on the
//! way against `cellar-crc64nvme` (objects without one: `cellar-sha256`), so the file is
//! complete and checked when the body's last byte is in. The request that asked for it runs
//! on that file right away. Installing it is what takes time on a large database and is
//! done after that request, by whoever holds the user's lock next (a task is started for
//! it when the request ends): SHA-256 of the file, fsync, rename into place with the old
//! companions removed (invariant 5: the local file is only ever replaced by a checked,
//! fsynced file), and only then the sync state on disk. A crash before that leaves the old
//! file and the old state, so the next request downloads again.
//!
//! A request that writes on a staged download waits for the SHA-256 check before it
//! uploads anything built on it. Its connection does not spill pages into the file before
//! its commit, so the check reads the bytes as downloaded.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tracing::{error, warn};

use crate::UserId;
use crate::cache::SlotState;
use crate::checksum::{BodyCheck, sha256_of_file};
use crate::engine::{Shared, blocking};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::layout::Layout;
use crate::local::{self, SyncState};
use crate::metadata::SnapshotMetadata;
use crate::metrics::EngineMetrics;
use crate::store::{ByteStream, ETag};

/// Pieces of a download in flight between the network and the file.
const PIECES_IN_FLIGHT: usize = 32;

/// A checked download in `database.sqlite.download`, not installed yet.
#[derive(Debug)]
pub(crate) struct StagedDownload {
    /// The state the local copy is at once this is installed: the download's, or the
    /// version a request committed on top of it.
    pub state: SyncState,
    /// The object's ETag, remembered if its SHA-256 fails.
    etag: ETag,
    sha256: Sha256Check,
}

/// SHA-256 of the download file, checked when it is needed (before the install, or
/// before an upload built on it) rather than while the first request runs.
#[derive(Debug)]
enum Sha256Check {
    Passed,
    Due { path: PathBuf, expected: String },
    Failed(String),
}

/// Writes a download to the user's download file as it arrives, checking it on the way
/// (the fast check of [`BodyCheck::arriving`]; every checksum for an object whose SHA-256
/// failed here before). On success the download is staged in `slot`.
pub(crate) async fn stage(
    shared: &Shared,
    user: &UserId,
    slot: &mut SlotState,
    download: Download,
) -> Result<()> {
    let Download {
        key,
        metadata,
        state,
        mut body,
    } = download;
    slot.conn = None;
    slot.staged = None;
    let distrusted =
        matches!((&slot.distrusted, &state.etag), (Some(bad), Some(etag)) if bad == etag);
    let mut check = if distrusted {
        BodyCheck::full(&metadata)
    } else {
        BodyCheck::arriving(&metadata)
    };
    let layout = shared.layout.clone();
    let owned = user.clone();
    let (pieces, mut arriving) = tokio::sync::mpsc::channel::<Bytes>(PIECES_IN_FLIGHT);
    let writer = tokio::task::spawn_blocking(move || -> Result<BodyCheck> {
        fsutil::remove_if_exists(&layout.download_journal_path(&owned))?;
        let path = layout.download_temp_path(&owned);
        std::fs::create_dir_all(layout.user_dir(&owned)).map_err(Error::io(&path))?;
        let mut file = File::create(&path).map_err(Error::io(&path))?;
        while let Some(piece) = arriving.blocking_recv() {
            check.update(&piece);
            file.write_all(&piece).map_err(Error::io(&path))?;
        }
        Ok(check)
    });
    let mut received = Ok(0u64);
    while let Some(piece) = body.next().await {
        match piece {
            Ok(piece) => {
                let len = piece.len() as u64;
                if pieces.send(piece).await.is_err() {
                    break; // the writer failed: its error is the answer
                }
                received = received.map(|total| total + len);
            }
            Err(err) => {
                received = Err(err);
                break;
            }
        }
    }
    drop(pieces);
    let written = writer
        .await
        .map_err(|join| Error::Work(format!("writing a download failed: {join}").into()));
    let checked = match (received, written) {
        (Err(store), _) => Err(Error::Store(store)),
        (Ok(_), Err(err) | Ok(Err(err))) => Err(err),
        (Ok(total), Ok(Ok(check))) => {
            EngineMetrics::add(&shared.metrics.bytes_downloaded, total);
            check.finish().map_err(|mismatch| {
                error!(user = %user, key, version = metadata.version.get(), %mismatch,
                    "downloaded body does not match its metadata");
                Error::Inconsistent {
                    user: user.clone(),
                    detail: format!("{key}: {mismatch}"),
                }
            })
        }
    };
    let checked = match checked {
        Ok(checked) => checked,
        Err(err) => {
            discard(shared, user).await;
            return Err(err);
        }
    };
    let sha256 = if checked.sha256 {
        Sha256Check::Passed
    } else {
        Sha256Check::Due {
            path: shared.layout.download_temp_path(user),
            expected: metadata.sha256.clone(),
        }
    };
    slot.staged = Some(StagedDownload {
        etag: state.etag.clone().unwrap_or_else(|| ETag(String::new())),
        state,
        sha256,
    });
    Ok(())
}

/// A newer object on its way in.
pub(crate) struct Download {
    /// Its key.
    pub key: String,
    /// Its metadata (already checked to be newer than what was seen).
    pub metadata: SnapshotMetadata,
    /// The state the local copy will be at.
    pub state: SyncState,
    /// Its body.
    pub body: ByteStream,
}

impl StagedDownload {
    /// Checks SHA-256 of the download unless done; an error if it does not match.
    pub async fn verified(&mut self, user: &UserId) -> Result<()> {
        if let Sha256Check::Due { path, expected } = &self.sha256 {
            let (path, expected) = (path.clone(), expected.clone());
            self.sha256 = match blocking(move || Ok(check_sha256(&path, &expected))).await? {
                Ok(()) => Sha256Check::Passed,
                Err(mismatch) => Sha256Check::Failed(mismatch),
            };
        }
        match &self.sha256 {
            Sha256Check::Failed(mismatch) => Err(Error::Inconsistent {
                user: user.clone(),
                detail: mismatch.clone(),
            }),
            _ => Ok(()),
        }
    }
}

/// Installs the staged download of `user`, if any: SHA-256, fsync, rename into place,
/// sync state. If it fails the download is thrown away and the old file stays, with its
/// state; the next request downloads again (and checks SHA-256 before serving if that
/// was what failed).
pub(crate) async fn finish_staged(shared: &Shared, user: &UserId, slot: &mut SlotState) {
    let Some(mut staged) = slot.staged.take() else {
        return;
    };
    slot.conn = None; // the connection to the download file
    let installed = match staged.verified(user).await {
        Ok(()) => {
            let layout = shared.layout.clone();
            let owned = user.clone();
            let state = staged.state.clone();
            blocking(move || install(&layout, &owned, &state)).await
        }
        Err(err) => {
            slot.distrusted = Some(staged.etag.clone());
            Err(err)
        }
    };
    match installed {
        Ok(()) => slot.sync = Some(staged.state),
        Err(err) => {
            error!(user = %user, version = staged.state.version.get(), error = %err,
                "a download was not installed; the next request downloads again");
            slot.sync = None;
            discard(shared, user).await;
        }
    }
}

/// Starts a task that installs `user`'s staged download as soon as the lock is free.
pub(crate) fn finish_soon(shared: Arc<Shared>, user: UserId) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return; // no runtime: the next holder of the lock installs it
    };
    let tasks = shared.after_answer.clone();
    tasks.spawn_on(
        async move {
            let slot = shared.slots.get(&user);
            let mut guard = slot.state.lock().await;
            finish_staged(&shared, &user, &mut guard).await;
        },
        &runtime,
    );
}

fn install(layout: &Layout, user: &UserId, state: &SyncState) -> Result<()> {
    let path = layout.download_temp_path(user);
    File::open(&path)
        .and_then(|file| file.sync_all())
        .map_err(Error::io(&path))?;
    local::install_download(layout, user)?;
    state.save(&layout.sync_state_path(user))
}

/// Removes a download that will not be installed.
async fn discard(shared: &Shared, user: &UserId) {
    let layout = shared.layout.clone();
    let owned = user.clone();
    let removed = blocking(move || {
        fsutil::remove_if_exists(&layout.download_temp_path(&owned))?;
        fsutil::remove_if_exists(&layout.download_journal_path(&owned))
    })
    .await;
    if let Err(err) = removed {
        warn!(user = %user, error = %err, "could not remove a download that was not installed");
    }
}

/// Hashes the file at `path` and compares with `expected`.
fn check_sha256(path: &Path, expected: &str) -> std::result::Result<(), String> {
    let actual = sha256_of_file(path).map_err(|err| format!("{}: {err}", path.display()))?;
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(format!(
            "cellar-sha256 says {expected} but the downloaded file hashes to {actual}"
        ))
    }
}
