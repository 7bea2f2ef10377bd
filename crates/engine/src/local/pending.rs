//! A write whose upload failed: its image and what it was to carry, kept until uploaded.
//!
//! Written image first, record second (the record is the commit point); removed record
//! first, image second. A record without its image cannot exist. Each version's image is
//! a file of its own (`pending-v{N}.sqlite`): under `async` durability a newer write is
//! recorded while an older one is still pending, and writing its image over the older one
//! in place would leave, after a crash mid-write, a record naming a torn image (a run of
//! the async SIGKILL test uploaded an empty database that way). The image is checked
//! against the record's SHA-256 when it is loaded.

use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

use crate::crash::crash_point;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::layout::Layout;
use crate::snapshot::Snapshot;
use crate::store::ETag;
use crate::user::UserId;
use crate::version::Version;

/// The record of a pending upload (`pending.json`; the image is `pending.sqlite`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUpload {
    /// The version the upload carries.
    pub version: Version,
    /// The ETag it was based on (`None`: the user's first upload).
    pub base_etag: Option<ETag>,
    /// The version it was based on.
    pub base_version: Version,
    /// Hex SHA-256 of the stamped image.
    pub sha256: String,
}

impl PendingUpload {
    /// Durably records `image` as pending, then removes the images of earlier records.
    pub fn save(&self, layout: &Layout, user: &UserId, image: &Snapshot) -> Result<()> {
        fsutil::write_synced(
            &layout.pending_image_path(user, self.version),
            image.bytes(),
        )?;
        crash_point("pending-image-written");
        let record = serde_json::to_vec_pretty(self).map_err(|err| Error::Io {
            path: layout.pending_record_path(user),
            source: std::sync::Arc::new(io::Error::other(err)),
        })?;
        fsutil::replace_atomically(&layout.pending_record_path(user), &record)?;
        remove_images_except(layout, user, Some(self.version))
    }

    /// The pending upload of `user` and its image, if there is one. An image that does not
    /// match its record is refused ([`Error::Inconsistent`]): it is never uploaded.
    pub fn load(layout: &Layout, user: &UserId) -> Result<Option<(Self, Snapshot)>> {
        let path = layout.pending_record_path(user);
        let record: Self = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| Error::Io {
                path: path.clone(),
                source: std::sync::Arc::new(io::Error::other(err)),
            })?,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(Error::io(&path)(err)),
        };
        let mut image_path = layout.pending_image_path(user, record.version);
        if !image_path.exists() && layout.legacy_pending_image_path(user).exists() {
            image_path = layout.legacy_pending_image_path(user);
        }
        let image = Snapshot::from_bytes(fs::read(&image_path).map_err(Error::io(&image_path))?);
        if image.sha256() != record.sha256 {
            return Err(Error::Inconsistent {
                user: user.clone(),
                detail: format!(
                    "the image of the write pending as version {} does not match its record",
                    record.version
                ),
            });
        }
        Ok(Some((record, image)))
    }

    /// Forgets the pending upload (after it landed or was kept aside).
    pub fn clear(layout: &Layout, user: &UserId) -> Result<()> {
        fsutil::remove_if_exists(&layout.pending_record_path(user))?;
        remove_images_except(layout, user, None)
    }
}

/// Removes `user`'s pending images other than `keep`'s (and the legacy one).
fn remove_images_except(layout: &Layout, user: &UserId, keep: Option<Version>) -> Result<()> {
    fsutil::remove_if_exists(&layout.legacy_pending_image_path(user))?;
    let dir = layout.user_dir(user);
    let kept = keep.map(|version| layout.pending_image_path(user, version));
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(Error::io(&dir)(err)),
    };
    for entry in entries {
        let path = entry.map_err(Error::io(&dir))?.path();
        let is_image = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with("pending-v") && name.ends_with(".sqlite"));
        if is_image && Some(&path) != kept.as_ref() {
            fsutil::remove_if_exists(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: u64, image: &Snapshot) -> PendingUpload {
        PendingUpload {
            version: Version::new(version),
            base_etag: None,
            base_version: Version::new(version - 1),
            sha256: image.sha256(),
        }
    }

    #[test]
    fn a_newer_image_torn_by_a_crash_leaves_the_recorded_one_whole() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path(), "users");
        let user = UserId::new("alice").unwrap();
        let first = Snapshot::from_bytes(vec![1; 8192]);
        record(5, &first).save(&layout, &user, &first).unwrap();
        // The next write's image, cut off before its record was written.
        fs::write(layout.pending_image_path(&user, Version::new(6)), [2; 100]).unwrap();
        let (loaded, image) = PendingUpload::load(&layout, &user).unwrap().unwrap();
        assert_eq!(loaded.version, Version::new(5));
        assert_eq!(image.bytes(), first.bytes());

        let second = Snapshot::from_bytes(vec![3; 8192]);
        record(6, &second).save(&layout, &user, &second).unwrap();
        let (loaded, image) = PendingUpload::load(&layout, &user).unwrap().unwrap();
        assert_eq!(
            (loaded.version, image.bytes()),
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
        record(5, &image).save(&layout, &user, &image).unwrap();
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
