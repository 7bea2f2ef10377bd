//! A write whose upload failed: its image and what it was to carry, kept until uploaded.
//!
//! Written image first, record second (the record is the commit point); removed record
//! first, image second. A record without its image cannot exist.

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
    /// Durably records `image` as pending.
    pub fn save(&self, layout: &Layout, user: &UserId, image: &Snapshot) -> Result<()> {
        fsutil::write_synced(&layout.pending_image_path(user), image.bytes())?;
        crash_point("pending-image-written");
        let record = serde_json::to_vec_pretty(self).map_err(|err| Error::Io {
            path: layout.pending_record_path(user),
            source: std::sync::Arc::new(io::Error::other(err)),
        })?;
        fsutil::replace_atomically(&layout.pending_record_path(user), &record)
    }

    /// The pending upload of `user` and its image, if there is one.
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
        let image_path = layout.pending_image_path(user);
        let image = fs::read(&image_path).map_err(Error::io(&image_path))?;
        Ok(Some((record, Snapshot::from_bytes(image))))
    }

    /// Forgets the pending upload (after it landed or was kept aside).
    pub fn clear(layout: &Layout, user: &UserId) -> Result<()> {
        fsutil::remove_if_exists(&layout.pending_record_path(user))?;
        fsutil::remove_if_exists(&layout.pending_image_path(user))
    }
}
