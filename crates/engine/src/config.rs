//! Engine settings: plain values, serde-friendly. Injected components (the store, the
//! clock, the SQL policy) are passed to [`crate::EngineBuilder`] instead.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::layout::DEFAULT_PREFIX;

/// What to do when an upload finds that someone else uploaded first (DESIGN §4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// Seed rule `conflict-last-write-wins`: log a warning, upload over the winner as
    /// `max(local, remote) + 1`.
    #[default]
    LastWriteWins,
    /// Refuse with a conflict; keep the losing database aside.
    Strict,
    /// Run the request's work again on the winner; after bounded tries, answer as strict.
    Rebase,
}

impl std::fmt::Display for ConflictPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConflictPolicy::LastWriteWins => "last-write-wins",
            ConflictPolicy::Strict => "strict",
            ConflictPolicy::Rebase => "rebase",
        })
    }
}

impl std::str::FromStr for ConflictPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "last-write-wins" => Ok(Self::LastWriteWins),
            "strict" => Ok(Self::Strict),
            "rebase" => Ok(Self::Rebase),
            other => Err(format!(
                "unknown conflict policy {other:?}; expected last-write-wins, strict or rebase"
            )),
        }
    }
}

/// When a write is acknowledged (`sync.durability`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// After the upload has landed (invariant 1): the default.
    #[default]
    Sync,
    /// After the local commit; the upload follows in the background through the
    /// pending-upload record. Faster, but a lost disk before the upload loses the write,
    /// and another instance does not see it until the upload lands.
    Async,
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Sync => "sync",
            Durability::Async => "async",
        })
    }
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sync" => Ok(Self::Sync),
            "async" => Ok(Self::Async),
            other => Err(format!(
                "unknown durability {other:?}; expected sync or async"
            )),
        }
    }
}

/// Database sizes worth telling an operator about (seed: "Size Thresholds").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeThresholds {
    /// Above this an upload logs at info level (default 512 KiB).
    pub info_bytes: u64,
    /// Above this an upload logs a warning (default 1 MiB).
    pub warn_bytes: u64,
}

impl Default for SizeThresholds {
    fn default() -> Self {
        Self {
            info_bytes: 512 * 1024,
            warn_bytes: 1024 * 1024,
        }
    }
}

/// Engine settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Local databases live at `{data_dir}/{user_id}/database.sqlite`.
    pub data_dir: PathBuf,
    /// Objects live at `{prefix}/{user_id}/database.sqlite`.
    pub prefix: String,
    /// The conflict policy.
    pub conflict: ConflictPolicy,
    /// When writes are acknowledged.
    pub durability: Durability,
    /// Size thresholds for logging.
    pub size_thresholds: SizeThresholds,
    /// This instance's id, recorded as `cellar-writer` on every upload.
    pub writer_id: String,
    /// How many users' databases stay open and warm at most.
    pub cache_capacity: usize,
    /// How many times `rebase` runs a request's work before answering as `strict`,
    /// and how many overwrites `last-write-wins` tries in a row.
    pub max_conflict_retries: u32,
    /// Pacing: the least time between two uploads of one user's database by this
    /// instance (R2 accepts about one write per second per key). Writes arriving meanwhile
    /// are committed together. Zero: no pacing.
    pub min_upload_interval: std::time::Duration,
    /// Check the bucket's version at the start of every request (seed rule
    /// `version-compare-on-start`). Only benchmarks turn this off, to measure what the
    /// check costs: without it another instance's writes are not seen.
    pub version_check: bool,
    /// How many parts of one download come side by side. A download of more than
    /// `download_part_bytes` comes in parts of that size: stores such as R2 and S3 limit
    /// what one connection carries. 1: one `GET` for the whole object.
    pub download_parallelism: usize,
    /// The size of one part of a download.
    pub download_part_bytes: u64,
    /// A change of the log is deleted only when it is older than this and folded into a
    /// snapshot; an instance reads the snapshot again after half of it (the ETag ABA
    /// hazard, `docs/delta-sync.md`).
    pub log_grace: std::time::Duration,
    /// Fold the log into a new snapshot once it holds this many changes since the snapshot…
    pub compact_after_versions: u64,
    /// …or this many bytes of changes (`None`: a quarter of the database, at least 1 MiB).
    pub compact_after_bytes: Option<u64>,
    /// Which versions stay restorable (`docs/history.md`).
    pub history: HistoryConfig,
}

/// History's retention window: a version stays restorable while it is younger than
/// `keep_days` and among the newest `keep_versions` (the version current when the window
/// opens is kept too, so that any moment inside it can be restored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Days a version stays restorable; 0 turns history off.
    pub keep_days: u32,
    /// Versions kept at most; 0 turns history off.
    pub keep_versions: u64,
    /// Whether users may restore their own database over HTTP (`POST /v1/db/restore`).
    pub user_restore: bool,
    /// How many changes a restore or a diff undoes at most to walk back from the local copy;
    /// farther, the version is rebuilt from a snapshot. 0: always from a snapshot (each
    /// change is one request: on a store far away a snapshot may come sooner).
    pub walk_back_changes: usize,
}

impl HistoryConfig {
    /// True when versions are kept beyond what syncing needs.
    pub fn enabled(&self) -> bool {
        self.keep_days > 0 && self.keep_versions > 0
    }
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            keep_days: 7,
            keep_versions: 100_000,
            user_restore: true,
            walk_back_changes: 1000,
        }
    }
}

impl EngineConfig {
    /// Defaults for everything but the local folder.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            conflict: ConflictPolicy::default(),
            durability: Durability::default(),
            size_thresholds: SizeThresholds::default(),
            writer_id: format!(
                "cellar-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ),
            cache_capacity: 1024,
            max_conflict_retries: 16,
            min_upload_interval: std::time::Duration::ZERO,
            version_check: true,
            download_parallelism: 8,
            download_part_bytes: 8 << 20,
            log_grace: std::time::Duration::from_secs(3600),
            compact_after_versions: 64,
            compact_after_bytes: None,
            history: HistoryConfig::default(),
        }
    }
}
