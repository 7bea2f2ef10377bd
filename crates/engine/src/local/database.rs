//! Opening the local database and replacing it with a downloaded image.

use std::fs;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::crash::crash_point;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::layout::Layout;
use crate::local::SyncState;
use crate::user::UserId;

/// Opens (creating if needed) the user's local database with durable settings.
pub fn open_database(layout: &Layout, user: &UserId) -> Result<Connection> {
    let dir = layout.user_dir(user);
    fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    open_file(&layout.database_path(user))
}

/// Opens the user's download that is not installed yet. Its pages are never spilled into
/// the file before a commit, so until then the file holds exactly the downloaded bytes
/// (what its SHA-256 check reads, see `sync::staged`).
pub fn open_download(layout: &Layout, user: &UserId) -> Result<Connection> {
    let conn = open_file(&layout.download_temp_path(user))?;
    conn.execute_batch("PRAGMA cache_spill = OFF;")?;
    Ok(conn)
}

fn open_file(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // `secure_delete`: a page freed by a transaction is written (zeroed) at its commit, so
    // the file holds exactly the pages a change of the log carries; no `cache_spill`: the
    // journal then holds the old content of every page a transaction changed until its
    // commit (see `delta::capture`).
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON; \
         PRAGMA cache_spill = OFF;",
    )?;
    Ok(conn)
}

/// Replaces the user's local database with `image` (already checked against its checksum),
/// never leaving the old file's `-journal`, `-wal` or `-shm` beside the new one.
///
/// Every connection to the old file must be closed first. Order, each step durable:
/// 1. the image goes to a temp file, fsynced;
/// 2. the old file is renamed aside, so no companion can pair with `database.sqlite`;
/// 3. the old companions are removed (a hot journal replayed onto a different file
///    corrupts it);
/// 4. the temp file is renamed into place; 5. the old file is removed;
/// 6. the caller saves the new [`SyncState`].
///
/// A crash after 2 and before 4 leaves no database file: [`reset_if_missing`] then clears
/// the companions and the sync state, and the next request downloads again.
pub fn install_image(layout: &Layout, user: &UserId, image: &[u8]) -> Result<()> {
    fsutil::remove_if_exists(&layout.download_journal_path(user))?;
    fsutil::write_synced(&layout.download_temp_path(user), image)?;
    install_download(layout, user)
}

/// Steps 2 to 5 of [`install_image`], for a download file already written and fsynced.
pub fn install_download(layout: &Layout, user: &UserId) -> Result<()> {
    let target = layout.database_path(user);
    let temp = layout.download_temp_path(user);
    let retired = layout.retired_path(user);
    if target.exists() {
        fsutil::rename_synced(&target, &retired)?;
        crash_point("install-old-file-retired");
    }
    remove_companions(layout, user)?;
    fsutil::rename_synced(&temp, &target)?;
    crash_point("install-before-state");
    fsutil::remove_if_exists(&retired)
}

/// Recovers from a crash in the middle of [`install_image`]: with no database file, no
/// companion and no sync state may survive. Returns the state to use.
pub fn reset_if_missing(layout: &Layout, user: &UserId, state: SyncState) -> Result<SyncState> {
    if layout.database_path(user).exists() {
        return Ok(state);
    }
    remove_companions(layout, user)?;
    fsutil::remove_if_exists(&layout.retired_path(user))?;
    fsutil::remove_if_exists(&layout.sync_state_path(user))?;
    Ok(SyncState::default())
}

fn remove_companions(layout: &Layout, user: &UserId) -> Result<()> {
    for companion in layout.companion_paths(user) {
        fsutil::remove_if_exists(&companion)?;
    }
    Ok(())
}

/// Removes the user's database file if it is empty (a user with nothing in the bucket who
/// only read), and the user's folder if nothing else is in it: reads by ids never seen
/// must not leave a folder and an empty file each. The connection must be closed first.
pub fn forget_if_empty(layout: &Layout, user: &UserId) -> Result<()> {
    let database = layout.database_path(user);
    match fs::metadata(&database) {
        Ok(meta) if meta.len() == 0 => {
            fs::remove_file(&database).map_err(Error::io(&database))?;
        }
        _ => return Ok(()),
    }
    let dir = layout.user_dir(user);
    match fs::remove_dir(&dir) {
        Err(err) if err.kind() != std::io::ErrorKind::DirectoryNotEmpty => {
            Err(Error::io(&dir)(err))
        }
        _ => Ok(()),
    }
}

/// Copies the database `conn` reads into an unnamed file (SQLite's online backup): a
/// consistent copy to stream from, without holding it in memory or holding the user's
/// lock while a slow client reads it.
pub fn export(conn: &Connection, layout: &Layout, user: &UserId) -> Result<fs::File> {
    let path = layout.export_temp_path(user);
    fsutil::remove_if_exists(&path)?;
    conn.backup(rusqlite::MAIN_DB, &path, None)?;
    let file = fs::File::open(&path).map_err(Error::io(&path))?;
    fsutil::remove_if_exists(&path)?; // the open file stays readable
    Ok(file)
}

/// True when `path` holds a SQLite database that passes `PRAGMA integrity_check`.
pub fn is_intact(path: &Path) -> bool {
    let Ok(conn) = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return false;
    };
    crate::snapshot::integrity_verdict(&conn) == "ok"
}
