//! A download answers its first request before it is installed.
//!
//! A newer object is written to `database.sqlite.download` as it arrives and checked on the
//! way against `cellar-crc64nvme` (objects without one: `cellar-sha256`), so the file is
//! complete and checked when the body's last byte is in. The request that asked for it runs
//! on that file right away.
//!
//! What takes time on a large database, SHA-256 of the file and its fsync, starts then on
//! the blocking pool, off the user's lock: requests that come meanwhile run on the download
//! too (their version check asks with the download's ETag). Once those checks are done,
//! whoever holds the lock next installs it (a task is started for it when a request ends):
//! rename into place with the old companions removed (invariant 5: the local file is only
//! ever replaced by a checked, fsynced file), and only then the sync state on disk. A crash
//! before that leaves the old file and the old state, so the next request downloads again.
//!
//! A request that writes on a staged download waits for the SHA-256 check before it
//! uploads anything built on it. Connections do not spill pages into the file before their
//! commit, so the check reads the bytes as downloaded.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use futures::{FutureExt, StreamExt, TryStreamExt};
use tokio::sync::mpsc::Sender;
use tracing::error;

use crate::cache::SlotState;
use crate::checksum::BodyCheck;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::layout::Layout;
use crate::local::{StagedDownload, SyncState};
use crate::metrics::EngineMetrics;
use crate::remote::{Incoming, Remote};
use crate::store::{ByteStream, ETag, StoreError};
use crate::sync::install;
use crate::user::UserId;

/// Pieces of a download in flight between the network and the file.
const PIECES_IN_FLIGHT: usize = 32;

/// A newer object on its way in.
pub(crate) struct Download {
    /// What the store said of it, and its first bytes arriving.
    pub incoming: Incoming,
    /// The state the local copy will be at.
    pub state: SyncState,
    /// The bytes the first `GET` asked for (the whole object, or its first part).
    pub first: Range<u64>,
    /// Changes of the log follow the snapshot: they are applied to the download before its
    /// install, so it is not hashed again after its last byte (CRC-64/NVME checked every
    /// byte on arrival; an object without one is hashed on arrival anyway).
    pub log_follows: bool,
}

/// One piece of a download: where it goes in the file, and the part it came in.
struct Piece {
    part: u64,
    offset: u64,
    bytes: Bytes,
}

/// Writes a download to the user's download file as it arrives, checking it on the way
/// (the fast check of [`BodyCheck::arriving`]; every checksum for an object whose SHA-256
/// failed here before). The rest of a large object comes in parts side by side, each
/// written where it belongs (see [`parts_after`]). On success the download is staged in
/// `slot`. [`StoreError::PreconditionFailed`] means the object changed between its parts.
pub(crate) async fn stage(
    shared: &Context,
    user: &UserId,
    slot: &mut SlotState,
    download: Download,
) -> Result<()> {
    slot.conn = None;
    slot.staged = None;
    let distrusted = matches!((&slot.distrusted, &download.state.etag),
        (Some(bad), Some(etag)) if bad == etag);
    let check = if distrusted {
        BodyCheck::full(&download.incoming.metadata)
    } else {
        BodyCheck::arriving(&download.incoming.metadata)
    };
    let parallelism = if check.in_order() {
        1
    } else {
        shared.config.download_parallelism.max(1)
    };
    let (pieces, arriving) = tokio::sync::mpsc::channel::<Piece>(PIECES_IN_FLIGHT);
    let writer = write_pieces(shared.layout.clone(), user.clone(), check, arriving);
    let Download {
        incoming:
            Incoming {
                etag,
                size,
                metadata,
                body,
            },
        state,
        first,
        log_follows,
    } = download;
    let rest = parts_after(
        first.end,
        size,
        shared.config.download_part_bytes,
        parallelism,
    );
    let received = fetch_parts(
        shared,
        user,
        &etag,
        (first, body),
        rest,
        parallelism,
        pieces,
    )
    .await;
    let written = writer
        .await
        .map_err(|join| Error::internal(format_args!("writing a download failed: {join}")));
    let checked = match (received, written) {
        (Err(store), _) => Err(Error::Store(store)),
        (Ok(_), Err(err) | Ok(Err(err))) => Err(err),
        (Ok(total), Ok(Ok(check))) => {
            EngineMetrics::add(&shared.metrics.bytes_downloaded, total);
            check.finish().map_err(|mismatch| {
                error!(user = %user, version = metadata.version.get(), %mismatch,
                    "downloaded body does not match its metadata");
                Error::Inconsistent {
                    user: user.clone(),
                    detail: mismatch.to_string(),
                }
            })
        }
    };
    let checked = match checked {
        Ok(checked) => checked,
        Err(err) => {
            install::discard(shared, user).await;
            return Err(err);
        }
    };
    let sha256 = (!checked.sha256 && !log_follows).then(|| metadata.sha256.clone());
    let path = shared.layout.download_temp_path(user);
    slot.staged = Some(StagedDownload::start(state, etag, path, sha256));
    Ok(())
}

/// The ranges still to fetch after the first `GET` brought `0..fetched` of `size` bytes:
/// parts of `part_bytes` when they can come side by side, else one range. Stores such as
/// R2 and S3 limit what one connection carries, so parts side by side are what makes a
/// large download as fast as the link.
fn parts_after(fetched: u64, size: u64, part_bytes: u64, parallelism: usize) -> Vec<Range<u64>> {
    if fetched >= size {
        return Vec::new();
    }
    if parallelism <= 1 {
        return std::iter::once(fetched..size).collect();
    }
    let step = part_bytes.max(1);
    (fetched..size)
        .step_by(usize::try_from(step).unwrap_or(usize::MAX))
        .map(|start| start..(start + step).min(size))
        .collect()
}

/// The blocking writer of a download: each piece where it belongs in the download file,
/// checked on the way. Returns the check, to be finished once every piece is in.
fn write_pieces(
    layout: Layout,
    user: UserId,
    mut check: BodyCheck,
    mut arriving: tokio::sync::mpsc::Receiver<Piece>,
) -> tokio::task::JoinHandle<Result<BodyCheck>> {
    tokio::task::spawn_blocking(move || {
        fsutil::remove_if_exists(&layout.download_journal_path(&user))?;
        let path = layout.download_temp_path(&user);
        std::fs::create_dir_all(layout.user_dir(&user)).map_err(Error::io(&path))?;
        let file = File::create(&path).map_err(Error::io(&path))?;
        while let Some(Piece {
            part,
            offset,
            bytes,
        }) = arriving.blocking_recv()
        {
            check.update(part, offset, &bytes);
            file.write_all_at(&bytes, offset)
                .map_err(Error::io(&path))?;
        }
        Ok(check)
    })
}

/// Brings in the first part's body and the `rest`, `parallelism` parts at a time, each
/// read only while the object keeps `etag`. Returns the bytes received. The pieces go to
/// the writer; if it fails, sending stops and its error is the answer.
async fn fetch_parts(
    shared: &Context,
    user: &UserId,
    etag: &ETag,
    (first, body): (Range<u64>, ByteStream),
    rest: Vec<Range<u64>>,
    parallelism: usize,
    pieces: Sender<Piece>,
) -> std::result::Result<u64, StoreError> {
    let mut parts = vec![pump(first.start, body, pieces.clone()).boxed()];
    for range in rest {
        let part = fetch_part(
            shared.remote.clone(),
            user.clone(),
            etag.clone(),
            range,
            pieces.clone(),
        );
        parts.push(part.boxed());
    }
    drop(pieces); // the parts hold the senders: the writer ends when the last part does
    futures::stream::iter(parts)
        .buffer_unordered(parallelism)
        .try_fold(0, |total, part| std::future::ready(Ok(total + part)))
        .await
}

/// One part after the first: a ranged `GET` that holds only while the object keeps `etag`.
async fn fetch_part(
    remote: Remote,
    user: UserId,
    etag: ETag,
    range: Range<u64>,
    pieces: Sender<Piece>,
) -> std::result::Result<u64, StoreError> {
    let body = remote.part(&user, &etag, range.clone()).await?;
    pump(range.start, body, pieces).await
}

/// Sends a part's pieces to the writer, each with its place in the file; returns how many
/// bytes came.
async fn pump(
    part: u64,
    mut body: ByteStream,
    pieces: Sender<Piece>,
) -> std::result::Result<u64, StoreError> {
    let mut offset = part;
    while let Some(piece) = body.next().await {
        let bytes = piece?;
        let len = bytes.len() as u64;
        if pieces
            .send(Piece {
                part,
                offset,
                bytes,
            })
            .await
            .is_err()
        {
            break; // the writer failed: its error is the answer
        }
        offset += len;
    }
    Ok(offset - part)
}
