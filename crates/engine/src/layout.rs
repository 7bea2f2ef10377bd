//! The one place that knows where things live, locally and in the bucket.
//!
//! No other module formats a path or an object key. Later additions (version history,
//! page deltas) get their own keys here, beside the snapshot, so the seed's layout
//! `{prefix}/{user_id}/database.sqlite` keeps working.

use std::path::{Path, PathBuf};

use crate::user::UserId;
use crate::version::Version;

/// The default object-key prefix (DESIGN §3).
pub const DEFAULT_PREFIX: &str = "cellar-users";

const DATABASE_FILE: &str = "database.sqlite";

/// Local paths under `data_dir` and object keys under `prefix`.
#[derive(Clone, Debug)]
pub struct Layout {
    data_dir: PathBuf,
    prefix: String,
}

impl Layout {
    /// A layout rooted at `data_dir` locally and `prefix` in the bucket.
    /// Slashes around `prefix` are trimmed; an empty prefix puts users at the bucket root.
    pub fn new(data_dir: impl Into<PathBuf>, prefix: &str) -> Self {
        Self {
            data_dir: data_dir.into(),
            prefix: prefix.trim_matches('/').to_owned(),
        }
    }

    /// The local root.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `{data_dir}/{user_id}`: the user's folder, holding the database and its sync state.
    pub fn user_dir(&self, user: &UserId) -> PathBuf {
        self.data_dir.join(user.as_str())
    }

    /// `{data_dir}/{user_id}/database.sqlite`.
    pub fn database_path(&self, user: &UserId) -> PathBuf {
        self.user_dir(user).join(DATABASE_FILE)
    }

    /// What the local copy was last synced to (version, ETag).
    pub fn sync_state_path(&self, user: &UserId) -> PathBuf {
        self.user_dir(user).join("sync-state.json")
    }

    /// The database image of a write at `version` whose upload has not been confirmed.
    /// Each version has its own file: a newer image never overwrites the one the record
    /// still names, so a crash while it is written leaves the record's image whole.
    pub fn pending_image_path(&self, user: &UserId, version: Version) -> PathBuf {
        self.user_dir(user)
            .join(format!("pending-v{}.sqlite", version.get()))
    }

    /// Where releases before per-version pending images kept the one pending image.
    pub fn legacy_pending_image_path(&self, user: &UserId) -> PathBuf {
        self.user_dir(user).join("pending.sqlite")
    }

    /// The change of a write whose upload has not been confirmed: exactly the bytes of the
    /// log object it tried to create (retried as they are, so a landed try is recognised).
    pub fn pending_change_path(&self, user: &UserId, version: Version) -> PathBuf {
        self.user_dir(user)
            .join(format!("pending-v{}.delta", version.get()))
    }

    /// The record describing the pending image (written after it, removed before it).
    pub fn pending_record_path(&self, user: &UserId) -> PathBuf {
        self.user_dir(user).join("pending.json")
    }

    /// A copy of the database made for `GET /v1/db/file`; unlinked once opened.
    pub fn export_temp_path(&self, user: &UserId) -> PathBuf {
        self.user_dir(user).join("database.sqlite.export")
    }

    /// Where a download is written before it is renamed into place.
    pub fn download_temp_path(&self, user: &UserId) -> PathBuf {
        self.user_dir(user).join("database.sqlite.download")
    }

    /// SQLite's rollback journal of the download file, made while a request writes on a
    /// download not yet installed (see `sync::staged`).
    pub fn download_journal_path(&self, user: &UserId) -> PathBuf {
        self.user_dir(user).join("database.sqlite.download-journal")
    }

    /// Where the previous local file waits while a download replaces it.
    pub fn retired_path(&self, user: &UserId) -> PathBuf {
        self.user_dir(user).join("database.sqlite.retired")
    }

    /// SQLite's companion files of the local database: they belong to one file only and
    /// must never be left beside another (a hot journal replayed onto a new file corrupts it).
    pub fn companion_paths(&self, user: &UserId) -> [PathBuf; 3] {
        let db = self.database_path(user).into_os_string();
        ["-journal", "-wal", "-shm"].map(|suffix| {
            let mut path = db.clone();
            path.push(suffix);
            PathBuf::from(path)
        })
    }

    /// `{data_dir}/{user_id}/conflicts/`: losing databases, kept aside, never thrown away.
    pub fn conflicts_dir(&self, user: &UserId) -> PathBuf {
        self.user_dir(user).join("conflicts")
    }

    /// A losing database of `version`, kept aside at `stamp` (a sortable timestamp).
    pub fn conflict_path(&self, user: &UserId, version: Version, stamp: &str) -> PathBuf {
        self.conflicts_dir(user)
            .join(format!("v{version}-{stamp}.sqlite"))
    }

    /// `{prefix}/{user_id}/database.sqlite`: the user's snapshot in the bucket.
    pub fn database_key(&self, user: &UserId) -> String {
        self.key(&format!("{user}/{DATABASE_FILE}"))
    }

    /// `{prefix}/{user_id}/log/{N:020}`: the change that takes the user's database from
    /// version `after` to the next one (version N = `after` + 1 or later; see
    /// `docs/delta-sync.md`). Created once, never overwritten: creating it commits.
    pub fn change_key(&self, user: &UserId, after: Version) -> String {
        self.key(&format!("{user}/log/{:020}", after.get() + 1))
    }

    /// `{prefix}/{user_id}/log/`: where the user's changes live, listed by history.
    pub fn log_prefix(&self, user: &UserId) -> String {
        self.key(&format!("{user}/log/"))
    }

    /// The version after which the change at `key` (one of [`Layout::log_prefix`]'s) applies.
    pub fn change_base_of_key(&self, user: &UserId, key: &str) -> Option<Version> {
        let number = key
            .strip_prefix(&self.log_prefix(user))?
            .parse::<u64>()
            .ok()?;
        number.checked_sub(1).map(Version::new)
    }

    /// `{prefix}/{user_id}/snapshots/{V:020}`: the database at version V, kept for history
    /// when compaction replaced it at `database.sqlite` (a zstd frame of the SQLite file).
    pub fn kept_snapshot_key(&self, user: &UserId, version: Version) -> String {
        self.key(&format!("{user}/snapshots/{:020}", version.get()))
    }

    /// `{prefix}/{user_id}/snapshots/`.
    pub fn kept_snapshots_prefix(&self, user: &UserId) -> String {
        self.key(&format!("{user}/snapshots/"))
    }

    /// The version of the kept snapshot at `key` (one of [`Layout::kept_snapshots_prefix`]'s).
    pub fn version_of_kept_snapshot(&self, user: &UserId, key: &str) -> Option<Version> {
        let rest = key.strip_prefix(&self.kept_snapshots_prefix(user))?;
        rest.parse::<u64>().ok().map(Version::new)
    }

    /// The prefix under which all users' objects live (ends with `/` unless empty).
    pub fn users_prefix(&self) -> String {
        self.key("")
    }

    /// The user a snapshot key belongs to, or `None` for any other key.
    pub fn user_of_key(&self, key: &str) -> Option<UserId> {
        let rest = key.strip_prefix(&self.users_prefix())?;
        let user = rest.strip_suffix(DATABASE_FILE)?.strip_suffix('/')?;
        UserId::new(user).ok()
    }

    /// A scratch key for the start-up store probe; outside every user's folder.
    pub fn probe_key(&self, nonce: &str) -> String {
        self.key(&format!(".cellar-probe/{nonce}"))
    }

    fn key(&self, rest: &str) -> String {
        if self.prefix.is_empty() {
            rest.to_owned()
        } else {
            format!("{}/{rest}", self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> UserId {
        UserId::new("alice").unwrap()
    }

    #[test]
    fn local_and_remote_places_follow_the_seed_layout() {
        let layout = Layout::new("/data", "/cellar-users/");
        assert_eq!(
            layout.database_path(&alice()),
            Path::new("/data/alice/database.sqlite")
        );
        assert_eq!(
            layout.database_key(&alice()),
            "cellar-users/alice/database.sqlite"
        );
        assert_eq!(
            layout.change_key(&alice(), Version::new(41)),
            "cellar-users/alice/log/00000000000000000042"
        );
        let change = layout.change_key(&alice(), Version::new(41));
        assert_eq!(
            layout.change_base_of_key(&alice(), &change),
            Some(Version::new(41))
        );
        let kept = layout.kept_snapshot_key(&alice(), Version::new(7));
        assert_eq!(kept, "cellar-users/alice/snapshots/00000000000000000007");
        assert_eq!(
            layout.version_of_kept_snapshot(&alice(), &kept),
            Some(Version::new(7))
        );
        assert_eq!(layout.version_of_kept_snapshot(&alice(), &change), None);
        assert_eq!(layout.change_base_of_key(&alice(), &kept), None);
        assert_eq!(
            layout.companion_paths(&alice())[0],
            Path::new("/data/alice/database.sqlite-journal")
        );
    }

    #[test]
    fn user_of_key_inverts_database_key_only() {
        for prefix in ["cellar-users", "a/b", ""] {
            let layout = Layout::new("/d", prefix);
            let key = layout.database_key(&alice());
            assert_eq!(layout.user_of_key(&key), Some(alice()));
            assert_eq!(layout.user_of_key(&layout.probe_key("x")), None);
            let change = layout.change_key(&alice(), Version::new(1));
            assert_eq!(layout.user_of_key(&change), None);
            assert_eq!(layout.user_of_key("elsewhere/alice/database.sqlite"), None);
        }
    }
}
