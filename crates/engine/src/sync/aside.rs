//! Losing databases are kept aside, never thrown away (invariant 4).

use std::path::PathBuf;

use crate::context::Context;
use crate::error::Result;
use crate::fsutil;
use crate::snapshot::Snapshot;
use crate::user::UserId;
use crate::version::Version;

/// Writes `image`, the database that lost a conflict at `version`, into the user's
/// `conflicts/` folder and returns its path.
pub(crate) async fn keep_aside(
    shared: &Context,
    user: &UserId,
    image: &Snapshot,
    version: Version,
) -> Result<PathBuf> {
    let stamp = shared.clock.now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let path = shared.layout.conflict_path(user, version, &stamp);
    let bytes = image.bytes().to_vec();
    let target = path.clone();
    crate::context::blocking(move || fsutil::write_synced(&target, &bytes)).await?;
    Ok(path)
}
