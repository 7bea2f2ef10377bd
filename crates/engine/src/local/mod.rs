//! The local side: the cached SQLite file, what it was synced to, and pending uploads.

mod database;
mod pending;
mod staged;
mod state;

pub use database::{
    export, forget_if_empty, install_download, install_image, is_intact, open_database,
    open_download, reset_if_missing,
};
pub use pending::PendingUpload;
pub use staged::{Fsynced, StagedDownload, install_staged};
pub use state::SyncState;
