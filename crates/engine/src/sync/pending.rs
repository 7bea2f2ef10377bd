//! Finishing writes whose upload failed (invariant 2): before a user is served again, and
//! at start-up, a pending upload is uploaded or, if it had landed after all, adopted.
//!
//! What is retried is exactly what was sent (the change's bytes, or the image), so a try
//! that had landed is recognised by its SHA-256 (see `upload::sync_on_mutation`).

use bytes::Bytes;
use tracing::warn;

use crate::cache::SlotState;
use crate::config::ConflictPolicy;
use crate::context::{Context, blocking};
use crate::error::{Error, Result};
use crate::events::Resolution;
use crate::local::PendingUpload;
use crate::remote::RemoteHead;
use crate::snapshot::Snapshot;
use crate::sync::upload::{self, Outgoing, UploadFailure, UploadPlan, Uploaded};
use crate::sync::{aside, install, log};
use crate::user::UserId;
use crate::version::Version;

/// Uploads `user`'s pending write, if any. Errors with `EarlierWritePending` while the
/// store still fails, so nothing newer is served before the pending write is in the bucket.
pub(crate) async fn finish_pending(
    shared: &Context,
    user: &UserId,
    slot: &mut SlotState,
) -> Result<()> {
    let layout = shared.layout.clone();
    let owned = user.clone();
    let Some((record, body)) = blocking(move || PendingUpload::load(&layout, &owned)).await? else {
        return Ok(());
    };
    // A download staged by the previous holder of the lock is installed first: the
    // pending write may have been committed on it.
    install::finish_staged(shared, user, slot).await;
    let still_pending = |source| Error::EarlierWritePending {
        user: user.clone(),
        version: record.version,
        source,
    };
    let plan = UploadPlan {
        base_version: record.base_version,
        base_etag: record.base_etag.clone(),
        version: record.version,
        restored_from: None,
    };
    // However it ends, the log may have moved past the base: read the snapshot again.
    slot.snapshot_read_at = None;
    // A whole image is installed once it landed; a change is applied by the version check
    // (the local copy was rolled back to its base).
    let (outgoing, image) = match record.change_checksum {
        Some(checksum) => {
            let change = Outgoing::Change {
                bytes: Bytes::from(body),
                checksum,
                database_bytes: 0,
            };
            (change, None)
        }
        None => {
            let image = Snapshot::from_bytes(body);
            (Outgoing::image(image.clone(), &plan)?, Some(image))
        }
    };
    let outcome = match settled_by_snapshot(shared, user, &outgoing, &plan).await {
        Ok(Some(settled)) => settled,
        Ok(None) => upload::sync_on_mutation(shared, user, &outgoing, &plan).await,
        Err(Error::Store(source)) => return Err(still_pending(source)),
        Err(err) => return Err(err),
    };
    match outcome {
        Ok(uploaded) => {
            if let Some(image) = image {
                install::install(shared, user, slot, image.body(), uploaded.state()).await?;
            }
            clear(shared, user).await
        }
        Err(UploadFailure::Refused { remote }) => {
            let image = match image {
                Some(image) => image,
                None => log::image_after(shared, user, slot, &outgoing).await?,
            };
            lost(shared, user, slot, &record, image, remote).await
        }
        Err(UploadFailure::Unavailable { source, .. }) => Err(still_pending(source)),
        Err(UploadFailure::Failed(err)) => Err(err),
    }
}

/// A pending change whose base the snapshot has passed is settled by what the log still
/// holds, never by creating it: its key may have been folded and deleted, and creating it
/// again would fork the log (`docs/delta-sync.md`, the ABA hazard). `None`: the snapshot
/// has not passed it, upload as usual.
async fn settled_by_snapshot(
    shared: &Context,
    user: &UserId,
    outgoing: &Outgoing,
    plan: &UploadPlan,
) -> Result<Option<Result<Uploaded, UploadFailure>>> {
    let Outgoing::Change { checksum, .. } = outgoing else {
        return Ok(None);
    };
    let Some((_, _, snapshot)) = shared.remote.describe(user).await? else {
        return Ok(None);
    };
    if snapshot.version <= plan.base_version {
        return Ok(None);
    }
    let change = shared.remote.change_head(user, plan.base_version).await?;
    if change.is_some_and(|change| change.sha256 == outgoing.sha256()) {
        return Ok(Some(Ok(Uploaded {
            version: plan.version,
            etag: plan.base_etag.clone(),
            updated_at: shared.clock.now(),
            checksum: *checksum,
            bytes: 0,
            snapshot: false,
        })));
    }
    let remote = RemoteHead {
        version: snapshot.version,
        writer: snapshot.writer,
        etag: None,
        sha256: None,
    };
    Ok(Some(Err(UploadFailure::Refused { remote })))
}

/// The pending write lost to `remote`. Under last-write-wins its database becomes the
/// newest version; under the other policies it is kept aside.
async fn lost(
    shared: &Context,
    user: &UserId,
    slot: &mut SlotState,
    record: &PendingUpload,
    image: Snapshot,
    remote: RemoteHead,
) -> Result<()> {
    if shared.config.conflict == ConflictPolicy::LastWriteWins {
        let base_etag = record.base_etag.clone();
        return match upload::overwrite(shared, user, &image, record.base_version, remote, base_etag)
            .await
        {
            Ok(uploaded) => {
                install::install(shared, user, slot, image.body(), uploaded.state()).await?;
                clear(shared, user).await
            }
            Err(UploadFailure::Unavailable { source, .. }) => Err(Error::EarlierWritePending {
                user: user.clone(),
                version: record.version,
                source,
            }),
            Err(UploadFailure::Failed(err)) => Err(err),
            Err(UploadFailure::Refused { remote }) => {
                keep_aside(shared, user, record, &image, remote).await
            }
        };
    }
    keep_aside(shared, user, record, &image, remote).await
}

async fn keep_aside(
    shared: &Context,
    user: &UserId,
    record: &PendingUpload,
    image: &Snapshot,
    remote: RemoteHead,
) -> Result<()> {
    let path = aside::keep_aside(shared, user, image, record.version).await?;
    warn!(user = %user, pending_version = record.version.get(), remote_version = remote.version.get(),
        kept_at = %path.display(), "a pending write lost a conflict and was kept aside");
    upload::publish_conflict(
        shared,
        user,
        record.base_version,
        &remote,
        Resolution::Refused,
    );
    clear(shared, user).await
}

/// The version of `user`'s pending upload, if one is recorded.
pub(crate) async fn pending_version(shared: &Context, user: &UserId) -> Result<Option<Version>> {
    let path = shared.layout.pending_record_path(user);
    if !path.exists() {
        return Ok(None);
    }
    let layout = shared.layout.clone();
    let owned = user.clone();
    let loaded = blocking(move || PendingUpload::load(&layout, &owned)).await?;
    Ok(loaded.map(|(record, _)| record.version))
}

async fn clear(shared: &Context, user: &UserId) -> Result<()> {
    let layout = shared.layout.clone();
    let owned = user.clone();
    blocking(move || PendingUpload::clear(&layout, &owned)).await
}
