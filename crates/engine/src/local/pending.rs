//! A write whose upload failed: what it was to send and on what it was based, kept until
//! uploaded. The body is either a change of the log, exactly the bytes tried
//! (`pending-v{N}.delta`, a `sync` write whose `PUT` failed), or a whole image
//! (`pending-v{N}.sqlite`: an `async` write, a user's first version).
//!
//! Written body first, record second (the record is the commit point); removed record
//! first, body second. A record without its body cannot exist. Each version's body is
//! a file of its own: under `async` durability a newer write is
//! recorded while an older one is still pending, and writing its image over the older one
//! in place would leave, after a crash mid-write, a record naming a torn image (a run of
//! the async SIGKILL test uploaded an empty database that way). The image is checked
//! against the record's SHA-256 when it is loaded.

use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

use crate::checksum::sha256_hex;
use crate::crash::crash_point;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::layout::Layout;
use crate::store::ETag;
use crate::user::UserId;
use crate::version::Version;

/// The record of a pending upload (`pending.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUpload {
    /// The version the upload carries.
    pub version: Version,
    /// The ETag it was based on (`None`: the user's first upload).
    pub base_etag: Option<ETag>,
    /// The version it was based on.
    pub base_version: Version,
    /// Hex SHA-256 of the body.
    pub sha256: String,
    /// Set when the body is a change of the log: the rolling checksum of the database it
    /// makes. Absent: the body is a whole image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_checksum: Option<u64>,
}

impl PendingUpload {
    /// Durably records `body` as pending, then removes the bodies of earlier records.
    pub fn save(&self, layout: &Layout, user: &UserId, body: &[u8]) -> Result<()> {
        fsutil::write_synced(&self.body_path(layout, user), body)?;
        crash_point("pending-image-written");
        let record = serde_json::to_vec_pretty(self).map_err(|err| Error::Io {
            path: layout.pending_record_path(user),
            source: std::sync::Arc::new(io::Error::other(err)),
        })?;
        fsutil::replace_atomically(&layout.pending_record_path(user), &record)?;
        remove_bodies_except(layout, user, Some(self.body_path(layout, user)))
    }

    /// The pending upload of `user` and its body, if there is one. A body that does not
    /// match its record is refused ([`Error::Inconsistent`]): it is never uploaded.
    pub fn load(layout: &Layout, user: &UserId) -> Result<Option<(Self, Vec<u8>)>> {
        let path = layout.pending_record_path(user);
        let record: Self = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| Error::Io {
                path: path.clone(),
                source: std::sync::Arc::new(io::Error::other(err)),
            })?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(Error::io(&path)(err)),
        };
        let mut body_path = record.body_path(layout, user);
        if !body_path.exists() && layout.legacy_pending_image_path(user).exists() {
            body_path = layout.legacy_pending_image_path(user);
        }
        let body = fs::read(&body_path).map_err(Error::io(&body_path))?;
        if sha256_hex(&body) != record.sha256 {
            return Err(Error::Inconsistent {
                user: user.clone(),
                detail: format!(
                    "what the write pending as version {} was to send does not match its record",
                    record.version
                ),
            });
        }
        Ok(Some((record, body)))
    }

    fn body_path(&self, layout: &Layout, user: &UserId) -> std::path::PathBuf {
        match self.change_checksum {
            Some(_) => layout.pending_change_path(user, self.version),
            None => layout.pending_image_path(user, self.version),
        }
    }

    /// Forgets the pending upload (after it landed or was kept aside).
    pub fn clear(layout: &Layout, user: &UserId) -> Result<()> {
        fsutil::remove_if_exists(&layout.pending_record_path(user))?;
        remove_bodies_except(layout, user, None)
    }
}

/// Removes `user`'s pending bodies other than `keep` (and the legacy image).
fn remove_bodies_except(
    layout: &Layout,
    user: &UserId,
    keep: Option<std::path::PathBuf>,
) -> Result<()> {
    fsutil::remove_if_exists(&layout.legacy_pending_image_path(user))?;
    let dir = layout.user_dir(user);
    let kept = keep;
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(Error::io(&dir)(err)),
    };
    for entry in entries {
        let path = entry.map_err(Error::io(&dir))?.path();
        let is_body = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| {
                name.starts_with("pending-v")
                    && (name.ends_with(".sqlite") || name.ends_with(".delta"))
            });
        if is_body && Some(&path) != kept.as_ref() {
            fsutil::remove_if_exists(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Snapshot;

    fn record(version: u64, image: &Snapshot) -> PendingUpload {
        PendingUpload {
            version: Version::new(version),
            base_etag: None,
            base_version: Version::new(version - 1),
            sha256: image.sha256(),
            change_checksum: None,
        }
    }

    #[test]
    fn a_newer_image_torn_by_a_crash_leaves_the_recorded_one_whole() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), "users");
        let user = UserId::new("alice").unwrap();
        let first = Snapshot::from_bytes(vec![1; 8192]);
        record(5, &first)
            .save(&layout, &user, first.bytes())
            .unwrap();
        // The next write's image, cut off before its record was written.
        fs::write(layout.pending_image_path(&user, Version::new(6)), [2; 100]).unwrap();
        let (loaded, image) = PendingUpload::load(&layout, &user).unwrap().unwrap();
        assert_eq!(loaded.version, Version::new(5));
        assert_eq!(image, first.bytes());

        let second = Snapshot::from_bytes(vec![3; 8192]);
        record(6, &second)
            .save(&layout, &user, second.bytes())
            .unwrap();
        let (loaded, image) = PendingUpload::load(&layout, &user).unwrap().unwrap();
        assert_eq!(
            (loaded.version, &image[..]),
            (Version::new(6), second.bytes())
        );
        assert!(!layout.pending_image_path(&user, Version::new(5)).exists());

        PendingUpload::clear(&layout, &user).unwrap();
        assert!(PendingUpload::load(&layout, &user).unwrap().is_none());
        assert!(!layout.pending_image_path(&user, Version::new(6)).exists());
    }

    #[test]
    fn an_image_that_does_not_match_its_record_is_never_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), "users");
        let user = UserId::new("alice").unwrap();
        let image = Snapshot::from_bytes(vec![1; 8192]);
        record(5, &image)
            .save(&layout, &user, image.bytes())
            .unwrap();
        // A release before per-version images rewrote `pending.sqlite` in place.
        fs::rename(
            layout.pending_image_path(&user, Version::new(5)),
            layout.legacy_pending_image_path(&user),
        )
        .unwrap();
        assert!(
            PendingUpload::load(&layout, &user).unwrap().is_some(),
            "legacy image read"
        );
        fs::write(layout.legacy_pending_image_path(&user), []).unwrap();
        let err = PendingUpload::load(&layout, &user).unwrap_err();
        assert!(matches!(err, Error::Inconsistent { .. }), "{err}");
    }
}
