//! Putting a newer database in place of the local copy: a whole image (a pending upload
//! that landed, a pushed file), or a staged download once its checks pass (at once, or in
//! the background after the request it answered).

use tracing::{error, warn};

use crate::cache::SlotState;
use crate::context::{Context, blocking};
use crate::error::Result;
use crate::fsutil;
use crate::local::{self, StagedDownload, SyncState};
use crate::user::UserId;

/// Replaces the local database with `image` and records `state`; connections to the old
/// file are closed first. The image is taken as it is (a download's `Bytes`, a `Vec`):
/// copying a large database once more costs as much as hashing it.
pub(crate) async fn install(
    shared: &Context,
    user: &UserId,
    slot: &mut SlotState,
    image: impl AsRef<[u8]> + Send + 'static,
    state: SyncState,
) -> Result<()> {
    slot.conn = None;
    slot.sync = None;
    slot.staged = None; // replaced by `image`
    let layout = shared.layout.clone();
    let owned = user.clone();
    let saved = state.clone();
    blocking(move || {
        local::install_image(&layout, &owned, image.as_ref())?;
        saved.save_for(&layout, &owned)
    })
    .await?;
    slot.sync = Some(state);
    Ok(())
}

/// Installs the staged download of `user` if its checks are done; a download still being
/// checked stays staged, and the request runs on it.
pub(crate) async fn finish_settled(shared: &Context, user: &UserId, slot: &mut SlotState) {
    if slot.staged.as_ref().is_some_and(StagedDownload::settled) {
        finish_staged(shared, user, slot).await;
    }
}

/// Installs the staged download of `user`, if any: waits for its checks (SHA-256, fsync),
/// then renames it into place and saves the sync state. If it fails the download is thrown away and the old
/// file stays, with its state; the next request downloads again (and checks SHA-256
/// before serving if that was what failed).
pub(crate) async fn finish_staged(shared: &Context, user: &UserId, slot: &mut SlotState) {
    let Some(staged) = slot.staged.take() else {
        return;
    };
    slot.conn = None; // the connection to the download file
    let installed = match staged.checked(user).await {
        Ok(fsynced) => {
            let fsynced = match staged.unsynced_writes {
                true => local::Fsynced::No,
                false => fsynced,
            };
            let layout = shared.layout.clone();
            let owned = user.clone();
            let state = staged.state.clone();
            blocking(move || local::install_staged(&layout, &owned, &state, fsynced)).await
        }
        Err(err) => {
            slot.distrusted = Some(staged.etag().clone());
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

/// Removes a download that will not be installed.
pub(crate) async fn discard(shared: &Context, user: &UserId) {
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
