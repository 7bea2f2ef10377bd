//! Seed rules `sync-on-mutation` and `version-increment-on-write`: one conditional upload
//! per writing request, carrying version + 1; and `conflict-last-write-wins` /
//! `conflict-log-warning` when the condition fails.

use std::time::Instant;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::config::{ConflictPolicy, SizeThresholds};
use crate::context::Context;
use crate::error::Error;
use crate::events::{Event, Resolution};
use crate::metadata::SnapshotMetadata;
use crate::metrics::EngineMetrics;
use crate::remote::{RemoteHead, commit_condition};
use crate::snapshot::Snapshot;
use crate::store::{ETag, PutCondition, StoreError};
use crate::user::UserId;
use crate::version::Version;

/// What an upload is to carry and on what it is based.
#[derive(Clone, Debug)]
pub(crate) struct UploadPlan {
    /// The version the request started from.
    pub base_version: Version,
    /// The precondition: the ETag seen at request start, or `Create` for a first upload.
    pub condition: PutCondition,
    /// The version to upload as.
    pub version: Version,
}

impl UploadPlan {
    /// The plan of a write on top of `base_version` / `base_etag`.
    pub fn on_top_of(base_version: Version, base_etag: Option<ETag>) -> Self {
        Self {
            base_version,
            condition: commit_condition(base_etag),
            version: base_version.next(),
        }
    }
}

/// An upload that landed.
#[derive(Clone, Debug)]
pub(crate) struct Uploaded {
    pub version: Version,
    pub etag: ETag,
    pub updated_at: DateTime<Utc>,
}

/// Why an upload did not land.
#[derive(Debug)]
pub(crate) enum UploadFailure {
    /// Another writer won; under strict and rebase the caller decides what follows.
    Refused { remote: RemoteHead },
    /// The upload itself failed: it may or may not have landed.
    Unavailable {
        /// Why.
        source: StoreError,
        /// What was being uploaded when it failed (the image is stamped accordingly).
        attempted: UploadPlan,
    },
    /// Something else failed; the upload did not land.
    Failed(Error),
}

/// Uploads `image` as planned. Under last-write-wins a refused upload is retried over the
/// winner (bounded), and each overwrite that lands logs exactly one conflict warning.
pub(crate) async fn sync_on_mutation(
    shared: &Context,
    user: &UserId,
    image: &mut Snapshot,
    mut plan: UploadPlan,
) -> Result<Uploaded, UploadFailure> {
    let mut overwriting: Option<RemoteHead> = None;
    for _ in 0..=shared.config.max_conflict_retries {
        image.stamp(plan.version);
        let metadata = SnapshotMetadata {
            version: plan.version,
            sha256: image.sha256(),
            crc64nvme: Some(image.crc64nvme()),
            size: image.len(),
            writer: shared.config.writer_id.clone(),
            updated_at: shared.clock.now(),
        };
        let started = Instant::now();
        let outcome = shared
            .remote
            .put(user, image, &metadata, plan.condition.clone())
            .await;
        shared.metrics.upload_latency.observe(started.elapsed());
        match outcome {
            Ok(etag) => {
                return Ok(landed(
                    shared,
                    user,
                    &plan,
                    metadata,
                    etag,
                    overwriting.as_ref(),
                ));
            }
            Err(StoreError::PreconditionFailed { .. }) => {
                let remote = shared
                    .remote
                    .head(user)
                    .await
                    .map_err(UploadFailure::Failed)?;
                if remote.sha256.as_deref() == Some(metadata.sha256.as_str()) {
                    // Our own upload: the client retried a PUT whose first try had landed.
                    let etag = remote.etag.unwrap_or_else(|| ETag(String::new()));
                    return Ok(landed(
                        shared,
                        user,
                        &plan,
                        metadata,
                        etag,
                        overwriting.as_ref(),
                    ));
                }
                EngineMetrics::add(&shared.metrics.conflicts, 1);
                if shared.config.conflict != ConflictPolicy::LastWriteWins {
                    return Err(UploadFailure::Refused { remote });
                }
                plan.version = plan.base_version.after_both(remote.version);
                plan.condition = commit_condition(remote.etag.clone());
                overwriting = Some(remote);
            }
            Err(source) => {
                return Err(UploadFailure::Unavailable {
                    source,
                    attempted: plan,
                });
            }
        }
    }
    let remote = overwriting.unwrap_or(RemoteHead {
        version: plan.version,
        writer: String::new(),
        etag: None,
        sha256: None,
    });
    Err(UploadFailure::Refused { remote })
}

/// Records an upload that landed: metrics, the overwrite warning if it was one, the size
/// thresholds, and the `version` event.
fn landed(
    shared: &Context,
    user: &UserId,
    plan: &UploadPlan,
    metadata: SnapshotMetadata,
    etag: ETag,
    overwrote: Option<&RemoteHead>,
) -> Uploaded {
    EngineMetrics::add(&shared.metrics.uploads, 1);
    EngineMetrics::add(&shared.metrics.bytes_uploaded, metadata.size);
    if let Some(remote) = overwrote {
        conflict_log_warning(shared, user, plan.base_version, remote, plan.version);
    }
    log_size_thresholds(user, metadata.size, shared.config.size_thresholds);
    shared.publish(Event::Version {
        user_id: user.to_string(),
        version: plan.version,
        writer: metadata.writer,
    });
    Uploaded {
        version: plan.version,
        etag,
        updated_at: metadata.updated_at,
    }
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
