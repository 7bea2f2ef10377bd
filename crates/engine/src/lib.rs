//! Cellar's engine: one SQLite database per user on local disk, with an object store
//! (R2, S3, MinIO, SeaweedFS, or a local folder) as the single source of truth.
//!
//! # Layout
//!
//! - Value types: [`UserId`] (validated once), [`Version`], [`SnapshotMetadata`]
//!   (seed rule `version-metadata`), [`Event`].
//! - [`layout`]: the one module that knows local paths and object keys.
//! - [`store`]: the remote side, one narrow [`Store`] trait: [`S3Store`] over
//!   `object_store`, [`LocalStore`] (the embedded default), [`MemoryStore`] (unit tests),
//!   wrappers that put a deadline on every call ([`DeadlineStore`](store::DeadlineStore))
//!   or inject faults, and the start-up [`probe`](store::probe).
//! - The local side: `local` (the database file, its sync state, pending uploads) and
//!   [`TrackedConnection`] (seed rules `write-tracked-connection`,
//!   `write-detect-operations`; what a request may return, [`OutputBudget`]), and the SQL
//!   [`sandbox`].
//! - The sync steps, one file each under `sync`: `pull` (`version-compare-on-start`),
//!   `upload` (`sync-on-mutation`, `version-increment-on-write`,
//!   `conflict-last-write-wins`, `conflict-log-warning`), `pending`, `aside`.
//! - [`Engine`] and [`Session`]: a request's path from version check to upload
//!   (`write-batched`: one upload per request, however many writes).
//!
//! The protocol and its invariants are described in `docs/sync-protocol.md`.

mod admin;
mod cache;
pub mod checksum;
mod clock;
mod config;
pub mod crash;
mod engine;
mod error;
mod events;
mod fsutil;
mod group;
pub mod layout;
mod local;
mod metadata;
mod metrics;
pub mod sandbox;
mod session;
pub mod snapshot;
pub mod store;
mod sync;
mod tracked;
mod user;
mod version;

pub use admin::{BucketReader, RemoteDatabase, Verification};
pub use clock::{Clock, SystemClock};
pub use config::{ConflictPolicy, Durability, EngineConfig, SizeThresholds};
pub use engine::{DbStatus, Engine, EngineBuilder, Export};
pub use error::{Error, ErrorKind, Result};
pub use events::{Event, Resolution};
pub use layout::Layout;
pub use local::{SyncState, is_intact};
pub use metadata::{RawMetadata, SnapshotMetadata};
pub use metrics::{EngineMetrics, Histogram};
pub use sandbox::{SqlLimits, sandbox_policy};
pub use session::{Committed, Session};
pub use store::{LocalStore, MemoryStore, S3Settings, S3Store, Store};
pub use tracked::{OutputBudget, SqlPolicy, StatementOutput, TrackedConnection};
pub use user::UserId;
pub use version::Version;

pub use rusqlite;
