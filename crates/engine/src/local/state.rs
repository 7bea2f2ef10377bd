//! What the local copy was last synced to, kept beside it in `sync-state.json`.

use std::fs;
use std::io;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::store::ETag;
use crate::version::Version;

/// The version and ETag of the bucket object the local file corresponds to.
///
/// Written only after the local file it describes is in place, so it may lag the file
/// (costing a redundant download) but never run ahead of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// The version of the local copy; 0 before the first upload.
    pub version: Version,
    /// The ETag the bucket gave that version; `None` while the user has no object.
    pub etag: Option<ETag>,
    /// When that version was uploaded.
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
    /// The rolling checksum of the local file's pages at `version` (see `delta`); `None`
    /// until known (state written by releases before the log, a format-1 snapshot): then
    /// it is computed from the file when first needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<u64>,
}

impl SyncState {
    /// Reads the state at `path`; a missing file means a user never synced here.
    pub fn load(path: &Path) -> Result<Self> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| Error::Io {
                path: path.to_owned(),
                source: std::sync::Arc::new(io::Error::other(err)),
            }),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(err) => Err(Error::io(path)(err)),
        }
    }

    /// Replaces the state at `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|err| Error::Io {
            path: path.to_owned(),
            source: std::sync::Arc::new(io::Error::other(err)),
        })?;
        fsutil::replace_atomically(path, &bytes)
    }
}
