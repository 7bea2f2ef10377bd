//! Finishing writes whose upload failed (invariant 2): before a user is served again, and
//! at start-up, a pending upload is uploaded or, if it had landed after all, adopted.

use tracing::warn;

use crate::cache::SlotState;
use crate::context::{Context, blocking};
use crate::error::{Error, Result};
use crate::events::Resolution;
use crate::local::{PendingUpload, SyncState};
use crate::remote::{RemoteHead, commit_condition};
use crate::snapshot::Snapshot;
use crate::sync::upload::{self, UploadFailure, UploadPlan};
use crate::sync::{aside, install};
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
    let Some((record, mut image)) = blocking(move || PendingUpload::load(&layout, &owned)).await?
    else {
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
    let remote = match shared.remote.head(user).await {
        Ok(remote) => remote,
        Err(Error::Store(source)) => return Err(still_pending(source)),
        Err(other) => return Err(other),
    };
    if remote.sha256.as_deref() == Some(record.sha256.as_str()) {
        // The failed upload had landed after all.
        return adopt(shared, user, slot, image, record.version, remote).await;
    }
    let plan = UploadPlan {
        base_version: record.base_version,
        condition: commit_condition(record.base_etag.clone()),
        version: record.version,
    };
    match upload::sync_on_mutation(shared, user, &mut image, plan).await {
        Ok(uploaded) => {
            let remote = RemoteHead {
                version: uploaded.version,
                writer: shared.config.writer_id.clone(),
                etag: Some(uploaded.etag),
                sha256: None,
            };
            adopt(shared, user, slot, image, uploaded.version, remote).await
        }
        Err(UploadFailure::Refused { remote }) => {
            let path = aside::keep_aside(shared, user, &image, record.version).await?;
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
        Err(UploadFailure::Unavailable { source, .. }) => Err(still_pending(source)),
        Err(UploadFailure::Failed(err)) => Err(err),
    }
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

/// Installs the pending image as the local database at `version`, then forgets it.
async fn adopt(
    shared: &Context,
    user: &UserId,
    slot: &mut SlotState,
    image: Snapshot,
    version: Version,
    remote: RemoteHead,
) -> Result<()> {
    let state = SyncState {
        version,
        etag: remote.etag,
        updated_at: Some(shared.clock.now()),
    };
    install::install(shared, user, slot, image.bytes().to_vec(), state).await?;
    clear(shared, user).await
}

async fn clear(shared: &Context, user: &UserId) -> Result<()> {
    let layout = shared.layout.clone();
    let owned = user.clone();
    blocking(move || PendingUpload::clear(&layout, &owned)).await
}
