//! History (`docs/history.md`): every version inside the retention window restorable,
//! on the layout of the log (`docs/delta-sync.md`) without copying a database per
//! version. A version is the newest snapshot at or before it plus the log's changes up to
//! it; compaction keeps the snapshot it replaces under `snapshots/` (compressed) while the
//! window needs it, and [`retention`] removes what the window no longer keeps.
//!
//! What the engine and the operator do with it (versions, restore, fork) is in
//! `restore`, above; this module reads and keeps the bucket's side.

mod catalog;
mod rebuild;
mod retention;

pub(crate) use catalog::Catalog;
pub use catalog::{Holder, VersionEntry};
pub(crate) use rebuild::{
    apply_changes, apply_to_copy, change_to, changes_back, compress, not_kept, rebuild_into,
};
pub use retention::Collected;
pub(crate) use retention::{Window, collect};
