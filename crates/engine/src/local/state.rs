//! What the local copy was last synced to, kept beside it in `sync-state.json`.

use std::fs;
use std::io;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::layout::Layout;
use crate::store::ETag;
use crate::user::UserId;
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
    /// SQLite's change counter in the local file's header when this state was saved.
    /// SQLite bumps it at every commit, so a file committed after its state was saved (a
    /// crash in between) is told by it: its checksum is then computed again, and a change
    /// already in the file is not applied twice (an XOR record applied twice undoes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_counter: Option<u32>,
}

impl SyncState {
    /// The state of `user`'s local copy, as saved; its checksum dropped when the file was
    /// committed since (see [`SyncState::file_counter`]).
    pub fn load_for(layout: &Layout, user: &UserId) -> Result<Self> {
        let mut state = Self::load(&layout.sync_state_path(user))?;
        let counter = change_counter(&layout.database_path(user))?;
        if state.file_counter.is_none() || state.file_counter != counter {
            state.checksum = None;
        }
        Ok(state)
    }

    /// Saves the state of `user`'s local copy, with the file's change counter as it is now
    /// (call it after the commit or install the state describes).
    pub fn save_for(&self, layout: &Layout, user: &UserId) -> Result<()> {
        let state = Self {
            file_counter: change_counter(&layout.database_path(user))?,
            ..self.clone()
        };
        state.save(&layout.sync_state_path(user))
    }

    /// Reads the state at `path`; a missing file means a user never synced here.
    fn load(path: &Path) -> Result<Self> {
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
    fn save(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|err| Error::Io {
            path: path.to_owned(),
            source: std::sync::Arc::new(io::Error::other(err)),
        })?;
        fsutil::replace_atomically(path, &bytes)
    }
}

/// SQLite's file change counter (header bytes 24..28) of the database at `path`; `None`
/// for a missing or empty file.
fn change_counter(path: &Path) -> Result<Option<u32>> {
    use std::io::Read;
    let mut header = [0u8; 28];
    match fs::File::open(path).and_then(|mut file| file.read_exact(&mut header)) {
        Ok(()) => Ok(Some(u32::from_be_bytes([
            header[24], header[25], header[26], header[27],
        ]))),
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::UnexpectedEof
            ) =>
        {
            Ok(None)
        }
        Err(err) => Err(Error::io(path)(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::Version;

    #[test]
    fn a_file_committed_after_its_state_was_saved_loses_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), "users");
        let user = UserId::new("alice").unwrap();
        fs::create_dir_all(layout.user_dir(&user)).unwrap();
        let conn = rusqlite::Connection::open(layout.database_path(&user)).unwrap();
        conn.execute_batch("CREATE TABLE t(v)").unwrap();
        let state = SyncState {
            version: Version::new(3),
            checksum: Some(42),
            ..SyncState::default()
        };
        state.save_for(&layout, &user).unwrap();
        assert_eq!(
            SyncState::load_for(&layout, &user).unwrap().checksum,
            Some(42)
        );
        // A commit the state does not know of (a crash before its state was saved).
        conn.execute_batch("INSERT INTO t VALUES (1)").unwrap();
        let loaded = SyncState::load_for(&layout, &user).unwrap();
        assert_eq!((loaded.version, loaded.checksum), (Version::new(3), None));
    }
}
