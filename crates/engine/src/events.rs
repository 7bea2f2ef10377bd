//! Events for subscribers (the server relays them over WebSocket): seed rule
//! `conflict-future-websocket`, made present.

use serde::Serialize;

use crate::config::ConflictPolicy;
use crate::version::Version;

/// How a conflict ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolution {
    /// Last write wins: this instance's upload replaced the other.
    Overwritten,
    /// Strict: this instance's write was refused and kept aside.
    Refused,
    /// Rebase: the work is being run again on the winner.
    Rebased,
}

/// Something that happened to a user's database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A new version became current on this instance (its own upload, or a download).
    Version {
        /// Whose database.
        user_id: String,
        /// The new version.
        version: Version,
        /// The instance that uploaded it.
        writer: String,
        /// The version whose content it brought back, when it is a restore.
        #[serde(skip_serializing_if = "Option::is_none")]
        restored_from: Option<Version>,
    },
    /// An upload found another writer's version in the bucket.
    Conflict {
        /// Whose database.
        user_id: String,
        /// The policy in force.
        policy: ConflictPolicy,
        /// The version this instance had started from.
        local_version: Version,
        /// The version found in the bucket.
        remote_version: Version,
        /// This instance.
        local_writer: String,
        /// The instance that uploaded the remote version.
        remote_writer: String,
        /// What happened next.
        resolution: Resolution,
    },
}

impl Event {
    /// The user the event concerns.
    pub fn user_id(&self) -> &str {
        match self {
            Event::Version { user_id, .. } | Event::Conflict { user_id, .. } => user_id,
        }
    }
}
