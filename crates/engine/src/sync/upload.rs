//! Seed rules `sync-on-mutation` and `version-increment-on-write`: one create-only upload
//! per writing request, carrying version + 1 (a user's first version as the snapshot, every
//! later one as the change after its base, see `docs/delta-sync.md`); and
//! `conflict-last-write-wins` / `conflict-log-warning` when another writer came first.

use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use crate::checksum::sha256_hex;
use crate::config::SizeThresholds;
use crate::context::Context;
use crate::delta::{self, Delta};
use crate::error::Error;
use crate::events::{Event, Resolution};
use crate::local::SyncState;
use crate::metadata::{ChangeMetadata, SnapshotMetadata};
use crate::metrics::EngineMetrics;
use crate::remote::{RemoteHead, commit_condition};
use crate::snapshot::Snapshot;
use crate::store::{ETag, StoreError};
use crate::user::UserId;
use crate::version::Version;

/// What a write sends to the bucket.
#[derive(Clone, Debug)]
pub(crate) enum Outgoing {
    /// The user's first version: the whole database, created as the snapshot.
    First(Snapshot),
    /// A later version: the encoded change after the plan's base, and the rolling checksum
    /// of the database it makes.
    Change {
        bytes: Bytes,
        checksum: u64,
        /// The size of the database it makes (for the size thresholds).
        database_bytes: u64,
    },
}

impl Outgoing {
    /// The change `delta` (versions set from `plan`), encoded.
    pub fn change(mut delta: Delta, plan: &UploadPlan) -> Result<Self, Error> {
        delta.base_version = plan.base_version;
        delta.version = plan.version;
        let bytes = delta
            .encode()
            .map_err(|err| Error::internal(format!("a change could not be encoded: {err}")))?;
        debug!(
            version = plan.version.get(),
            pages = delta.changed_pages(),
            bytes = bytes.len(),
            "a change of the log"
        );
        Ok(Self::Change {
            checksum: delta.checksum_after,
            database_bytes: u64::from(delta.pages_after) * u64::from(delta.page_size),
            bytes: Bytes::from(bytes),
        })
    }

    /// `image`, a whole database, as the upload of `plan`: the snapshot for a first
    /// version, else a change that replaces every page.
    pub fn image(mut image: Snapshot, plan: &UploadPlan) -> Result<Self, Error> {
        Self::image_over(&mut image, None, plan).map(|(outgoing, _)| outgoing)
    }

    /// [`Outgoing::image`], as the pages that differ from `base` (the database at the
    /// plan's base, read page by page) when it is given, matches its recorded checksum and
    /// compares page by page: a restore or a push ships what it changes, not the database.
    /// True when it did (the change can be applied to the base like any other). `image` is
    /// stamped in place (not copied when nothing else holds it).
    pub fn image_over(
        image: &mut Snapshot,
        base: Option<Base>,
        plan: &UploadPlan,
    ) -> Result<(Self, bool), Error> {
        image.stamp(plan.version);
        if plan.base_version == Version::ZERO {
            return Ok((Self::First(image.clone()), false));
        }
        let between = base.map(|base| {
            let pages = std::io::BufReader::with_capacity(1 << 20, base.file);
            (
                Delta::between(pages, base.len, image.bytes()),
                base.checksum,
            )
        });
        match between {
            Some((Ok(delta), checksum)) if delta.checksum_before == checksum => {
                Ok((Self::change(delta, plan)?, true))
            }
            _ => {
                let whole = Delta::from_image(image.bytes()).map_err(|err| {
                    Error::internal(format!("a database image could not be encoded: {err}"))
                })?;
                Ok((Self::change(whole, plan)?, false))
            }
        }
    }

    /// Hex SHA-256 of the bytes sent: how a landed try is recognised.
    pub fn sha256(&self) -> String {
        match self {
            Self::First(image) => image.sha256(),
            Self::Change { bytes, .. } => sha256_hex(bytes),
        }
    }

    /// The size of the database this upload makes.
    fn database_bytes(&self) -> u64 {
        match self {
            Self::First(image) => image.len(),
            Self::Change { database_bytes, .. } => *database_bytes,
        }
    }
}

/// The database at an upload's base, for [`Outgoing::image_over`].
pub(crate) struct Base {
    /// The file, read from its start.
    pub file: std::fs::File,
    /// Its length.
    pub len: u64,
    /// Its recorded rolling checksum: a file that does not match is not a base.
    pub checksum: u64,
}

/// What an upload is to carry and on what it is based.
#[derive(Clone, Debug)]
pub(crate) struct UploadPlan {
    /// The version the request started from.
    pub base_version: Version,
    /// The snapshot's ETag as seen at request start (`None`: none yet).
    pub base_etag: Option<ETag>,
    /// The version to upload as.
    pub version: Version,
    /// The version whose content this upload brings back, when it is a restore.
    pub restored_from: Option<Version>,
}

impl UploadPlan {
    /// The plan of a write on top of `base_version` / `base_etag`.
    pub fn on_top_of(base_version: Version, base_etag: Option<ETag>) -> Self {
        Self {
            base_version,
            base_etag,
            version: base_version.next(),
            restored_from: None,
        }
    }
}

/// An upload that landed.
#[derive(Clone, Debug)]
pub(crate) struct Uploaded {
    pub version: Version,
    /// The snapshot's ETag: the new one after a first version, else the base's.
    pub etag: Option<ETag>,
    pub updated_at: DateTime<Utc>,
    /// The rolling checksum of the database at `version`.
    pub checksum: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// It was a first version, sent as the snapshot.
    pub snapshot: bool,
}

impl Uploaded {
    /// The local copy's sync state once it holds this version.
    pub fn state(&self) -> SyncState {
        SyncState {
            version: self.version,
            etag: self.etag.clone(),
            updated_at: Some(self.updated_at),
            checksum: Some(self.checksum),
            file_counter: None,
        }
    }
}

/// Why an upload did not land.
#[derive(Debug)]
pub(crate) enum UploadFailure {
    /// Another writer came first; the caller's policy decides what follows.
    Refused { remote: RemoteHead },
    /// The upload itself failed: it may or may not have landed.
    Unavailable {
        /// Why.
        source: StoreError,
        /// What was being uploaded when it failed, and as what.
        attempted: UploadPlan,
        sent: Outgoing,
    },
    /// Something else failed; the upload did not land.
    Failed(Error),
}

/// Sends `outgoing` as `plan` says: ONE create-only `PUT` (the snapshot of a first version,
/// else the change after the base). A refused `PUT` whose object holds our bytes is our own
/// earlier try that landed (the client retried); any other is another writer's.
pub(crate) async fn sync_on_mutation(
    shared: &Context,
    user: &UserId,
    outgoing: &Outgoing,
    plan: &UploadPlan,
) -> Result<Uploaded, UploadFailure> {
    send(shared, user, outgoing, plan, None).await
}

/// A last-write-wins overwrite: the version the losing write started from, and the winner.
type Overwriting<'a> = Option<(Version, &'a RemoteHead)>;

async fn send(
    shared: &Context,
    user: &UserId,
    outgoing: &Outgoing,
    plan: &UploadPlan,
    overwriting: Overwriting<'_>,
) -> Result<Uploaded, UploadFailure> {
    let updated_at = shared.clock.now();
    let writer = shared.config.writer_id.clone();
    let sha256 = outgoing.sha256();
    let started = Instant::now();
    let (outcome, size, checksum) = match outgoing {
        Outgoing::First(image) => {
            let checksum = image_checksum(image).map_err(UploadFailure::Failed)?;
            let metadata = SnapshotMetadata {
                version: plan.version,
                sha256: sha256.clone(),
                crc64nvme: Some(image.crc64nvme()),
                size: image.len(),
                writer,
                updated_at,
                checksum: Some(checksum),
                log_floor: None,
            };
            let put = shared
                .remote
                .put(user, image, &metadata, commit_condition(None))
                .await
                .map(Some);
            (put, image.len(), checksum)
        }
        Outgoing::Change {
            bytes, checksum, ..
        } => {
            let metadata = ChangeMetadata {
                version: plan.version,
                base_version: plan.base_version,
                sha256: sha256.clone(),
                size: bytes.len() as u64,
                writer,
                updated_at,
                checksum: *checksum,
                restored_from: plan.restored_from,
            };
            let put = shared
                .remote
                .create_change(user, bytes.clone(), &metadata)
                .await
                .map(|()| plan.base_etag.clone());
            (put, metadata.size, *checksum)
        }
    };
    shared.metrics.upload_latency.observe(started.elapsed());
    let uploaded = |etag| Uploaded {
        version: plan.version,
        etag,
        updated_at,
        checksum,
        bytes: size,
        snapshot: matches!(outgoing, Outgoing::First(_)),
    };
    match outcome {
        Ok(etag) => {
            EngineMetrics::add(&shared.metrics.uploads, 1);
            EngineMetrics::add(&shared.metrics.bytes_uploaded, size);
            Ok(landed(
                shared,
                user,
                uploaded(etag),
                outgoing,
                plan,
                overwriting,
            ))
        }
        Err(StoreError::PreconditionFailed { .. }) => {
            let (remote, etag) = winner(shared, user, outgoing, plan).await?;
            if remote.sha256.as_deref() == Some(sha256.as_str()) {
                // An earlier try landed: adopted, not counted as an upload again.
                let uploaded = uploaded(etag);
                return Ok(landed(shared, user, uploaded, outgoing, plan, overwriting));
            }
            EngineMetrics::add(&shared.metrics.conflicts, 1);
            Err(UploadFailure::Refused { remote })
        }
        Err(source) => Err(UploadFailure::Unavailable {
            source,
            attempted: plan.clone(),
            sent: outgoing.clone(),
        }),
    }
}

/// The rolling checksum of a whole image.
pub(crate) fn image_checksum(image: &Snapshot) -> Result<u64, Error> {
    let page_size = delta::image_page_size(image.bytes())
        .map_err(|err| Error::internal(format!("an image to upload: {err}")))?;
    Ok(delta::image_checksum(image.bytes(), page_size as usize))
}

/// Who holds the place `outgoing` was refused at, and the snapshot's ETag to keep.
async fn winner(
    shared: &Context,
    user: &UserId,
    outgoing: &Outgoing,
    plan: &UploadPlan,
) -> Result<(RemoteHead, Option<ETag>), UploadFailure> {
    match outgoing {
        Outgoing::First(_) => {
            let remote = shared
                .remote
                .head(user)
                .await
                .map_err(UploadFailure::Failed)?;
            let etag = remote.etag.clone();
            Ok((remote, etag))
        }
        Outgoing::Change { .. } => {
            let change = shared
                .remote
                .change_head(user, plan.base_version)
                .await
                .map_err(UploadFailure::Failed)?;
            let remote = change.map_or_else(
                || RemoteHead {
                    version: plan.version,
                    writer: String::new(),
                    etag: None,
                    sha256: None,
                },
                |change| RemoteHead {
                    version: change.version,
                    writer: change.writer,
                    etag: None,
                    sha256: Some(change.sha256),
                },
            );
            Ok((remote, plan.base_etag.clone()))
        }
    }
}

/// Seed rule `conflict-last-write-wins`: `image`, the whole database of a write that lost
/// to `remote`, becomes the newest version: the log is followed to its end (`HEAD`s of its
/// changes, no bodies) and the change after it replaces every page. Bounded by
/// `sync.max_conflict_retries`; the overwrite that lands logs the one conflict warning.
pub(crate) async fn overwrite(
    shared: &Context,
    user: &UserId,
    image: &Snapshot,
    local_version: Version,
    mut remote: RemoteHead,
    base_etag: Option<ETag>,
) -> Result<Uploaded, UploadFailure> {
    for _ in 0..=shared.config.max_conflict_retries {
        let end = end_of_log(shared, user, &remote).await?;
        let plan = UploadPlan::on_top_of(end.version, base_etag.clone());
        let outgoing = Outgoing::image(image.clone(), &plan).map_err(UploadFailure::Failed)?;
        match send(shared, user, &outgoing, &plan, Some((local_version, &end))).await {
            Ok(uploaded) => return Ok(uploaded),
            Err(UploadFailure::Refused { remote: newer }) => remote = newer,
            Err(failure) => return Err(failure),
        }
    }
    Err(UploadFailure::Refused { remote })
}

/// The newest version at or after `from` (its writer too), by the `HEAD`s of the log.
async fn end_of_log(
    shared: &Context,
    user: &UserId,
    from: &RemoteHead,
) -> Result<RemoteHead, UploadFailure> {
    let (last, _) = shared
        .remote
        .last_change(user, from.version)
        .await
        .map_err(UploadFailure::Failed)?;
    let mut end = from.clone();
    if let Some(change) = last {
        end.version = change.version;
        end.writer = change.writer;
    }
    Ok(end)
}

/// Records an upload that landed: the overwrite warning if it was one, the size
/// thresholds, and the `version` event.
fn landed(
    shared: &Context,
    user: &UserId,
    uploaded: Uploaded,
    outgoing: &Outgoing,
    plan: &UploadPlan,
    overwriting: Overwriting<'_>,
) -> Uploaded {
    if let Some((local_version, remote)) = overwriting {
        conflict_log_warning(shared, user, local_version, remote, uploaded.version);
    }
    log_size_thresholds(
        user,
        outgoing.database_bytes(),
        shared.config.size_thresholds,
    );
    shared.publish(Event::Version {
        user_id: user.to_string(),
        version: uploaded.version,
        writer: shared.config.writer_id.clone(),
        restored_from: plan.restored_from,
    });
    uploaded
}

/// Seed rule `conflict-log-warning`: one structured warning per overwrite, with both
/// versions and both writers; and the matching event for subscribers.
fn conflict_log_warning(
    shared: &Context,
    user: &UserId,
    local_version: Version,
    remote: &RemoteHead,
    uploaded_version: Version,
) {
    warn!(
        target: "cellar::conflict",
        user = %user,
        local_version = local_version.get(),
        remote_version = remote.version.get(),
        local_writer = %shared.config.writer_id,
        remote_writer = %remote.writer,
        uploaded_version = uploaded_version.get(),
        "conflict: last write wins, overwrote a version this request had not seen"
    );
    publish_conflict(shared, user, local_version, remote, Resolution::Overwritten);
}

/// Seed "Size Thresholds": info above the first, warning above the second.
fn log_size_thresholds(user: &UserId, size: u64, thresholds: SizeThresholds) {
    if size > thresholds.warn_bytes {
        warn!(target: "cellar::size", user = %user, size_bytes = size, threshold = thresholds.warn_bytes,
            "database is above the warning size; consider moving archived data out");
    } else if size > thresholds.info_bytes {
        info!(target: "cellar::size", user = %user, size_bytes = size, threshold = thresholds.info_bytes,
            "database is above the info size");
    }
}

/// Publishes a conflict event to the user's subscribers.
pub(crate) fn publish_conflict(
    shared: &Context,
    user: &UserId,
    local_version: Version,
    remote: &RemoteHead,
    resolution: Resolution,
) {
    shared.publish(Event::Conflict {
        user_id: user.to_string(),
        policy: shared.config.conflict,
        local_version,
        remote_version: remote.version,
        local_writer: shared.config.writer_id.clone(),
        remote_writer: remote.writer.clone(),
        resolution,
    });
}
