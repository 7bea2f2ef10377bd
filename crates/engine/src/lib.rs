//! Cellar's engine: one SQLite database per user on local disk, with an object store
//! (R2, S3, MinIO, SeaweedFS, or a local folder) as the single source of truth.
//!
//! # Layout
//!
//! Imports go one way, from the values up to the public API (`docs/architecture.md`):
//!
//! - Values: [`UserId`] (validated once), [`Version`], [`Committed`], `config`, `error`
//!   ([`Error`], [`ErrorKind`], `StoreError`), `clock`, `metrics`, `crash`, [`checksum`],
//!   [`SnapshotMetadata`] (seed rule `version-metadata`).
//! - Formats: [`layout`] (the one module that knows local paths and object keys),
//!   [`snapshot`] (the uploaded image, its stamp, `integrity_verdict`), [`TrackedConnection`]
//!   (seed rules `write-tracked-connection`, `write-detect-operations`; what a request may
//!   return, [`OutputBudget`]), the SQL [`sandbox`], [`Event`], `delta` (the pages one
//!   transaction changed: captured from the rollback journal, applied through
//!   `sqlite_dbpage`, chained by a rolling checksum; `docs/delta-sync.md`).
//! - Adapters: [`store`], one narrow [`Store`] trait ([`S3Store`] over `object_store`,
//!   [`LocalStore`] the embedded default, [`MemoryStore`] for unit tests, wrappers that
//!   put a deadline on every call or inject faults, the start-up
//!   [`probe`](store::probe)); `remote`, the typed remote over it (the only module that
//!   names a user's objects in requests and decodes their metadata; the commit point);
//!   `local`, the local side (the database file, its sync state, pending uploads, a staged
//!   download and its checks).
//! - State: `cache` (one slot per user: the lock, the warm connection, the queue of group
//!   commit) and `context` (what the engine, sessions and steps share; `blocking`).
//! - Sync steps, one file each under `sync`: `pull` (`version-compare-on-start`), `staged`
//!   (a download written as it arrives), `install`, `upload` (`sync-on-mutation`,
//!   `version-increment-on-write`, `conflict-last-write-wins`, `conflict-log-warning`),
//!   `pending`, `aside`. A step never locks and never spawns.
//! - `runtime`: the work that takes a user's lock on its own (the `async` uploader, the
//!   install after an answer, finishing pending uploads at start).
//! - [`Session`] (a request's path from version check to upload, pacing included;
//!   `write-batched`: one upload per request, however many writes), then `group` (group
//!   commit), then [`Engine`] and `admin` (the operator's reads, push).
//!
//! The protocol and its invariants are described in `docs/sync-protocol.md`.

mod admin;
mod cache;
pub mod checksum;
mod clock;
mod committed;
mod config;
mod context;
pub mod crash;
mod delta;
pub mod diff;
mod engine;
mod error;
mod events;
mod fsutil;
mod group;
mod history;
pub mod layout;
mod local;
mod metadata;
mod metrics;
mod remote;
mod restore;
mod runtime;
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
pub use committed::Committed;
pub use config::{ConflictPolicy, Durability, EngineConfig, HistoryConfig, SizeThresholds};
pub use engine::{DbStatus, Engine, EngineBuilder, Export};
pub use error::{Error, ErrorKind, Result};
pub use events::{Event, Resolution};
pub use history::{Collected, Holder, VersionEntry};
pub use layout::Layout;
pub use local::{SyncState, is_intact};
pub use metadata::{RawMetadata, SnapshotMetadata};
pub use metrics::{EngineMetrics, Histogram};
pub use restore::{RestoreTarget, Restored};
pub use sandbox::{SqlLimits, sandbox_policy};
pub use session::Session;
pub use store::{LocalStore, MemoryStore, S3Settings, S3Store, Store};
pub use tracked::{OutputBudget, SqlPolicy, StatementOutput, TrackedConnection};
pub use user::{InvalidUserId, UserId};
pub use version::Version;

pub use rusqlite;
