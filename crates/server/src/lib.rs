//! Cellar's HTTP server: the v1 API of DESIGN §5 over a [`cellar_engine::Engine`], built
//! from tower layers that a Rust developer can also put on their own axum app.
//!
//! ```text
//! client ─► UserContextLayer ─► DatabaseSyncLayer ─► handler(Db) ─► DatabaseSyncLayer ─► response
//!           (who is calling?)   (version check,      (SQL through    (ONE upload if it
//!                                download if newer)   the tracked     wrote; Cellar-Version)
//!                                                     connection)
//! ```
//!
//! # Layout
//!
//! - [`options`](ServerOptions): [`AuthMode`], [`Limits`], [`ServerOptions`].
//! - `auth`: the user-context layer, [`UserContextLayer`] (header or JWT identity; sets the
//!   caller's [`cellar_engine::UserId`] as a request extension).
//! - `sync`: the database-sync layer, [`DatabaseSyncLayer`], and the [`Db`] extractor
//!   handlers use (seed rules `version-compare-on-start`, `write-batched`,
//!   `sync-on-mutation` as seen from HTTP; rebase by running the handler again).
//! - `error`: [`ApiError`] and [`ErrorCode`], the one place where failures become HTTP
//!   statuses and the `{"error": {"code", "message"}}` body.
//! - `routes`: the v1 API — `query` (`POST /v1/query`, with `values` for JSON ↔ SQLite),
//!   `db` (`GET /v1/db`, `GET /v1/db/file`), `events` (`GET /v1/events`, WebSocket).
//! - `metrics`: request counting and `GET /metrics` (Prometheus text).
//! - `serve`: [`serve`], an HTTP/1.1 accept loop with at most `max_connections` open, a
//!   deadline on request heads and graceful shutdown, and [`check_listen_address`].
//!
//! # Using the layers on your own app
//!
//! ```no_run
//! use axum::{Json, Router, routing::post};
//! use cellar_server::{ApiError, AuthMode, DatabaseSyncLayer, Db, Limits, UserContextLayer};
//!
//! async fn add_note(db: Db, Json(text): Json<String>) -> Result<Json<i64>, ApiError> {
//!     let id = db
//!         .run(move |conn| {
//!             conn.execute("INSERT INTO notes(text) VALUES (?1)", [text])?;
//!             Ok(conn.query_row("SELECT last_insert_rowid()", [], |row| row.get(0))?)
//!         })
//!         .await?;
//!     Ok(Json(id)) // success: the layer uploads once, after this handler
//! }
//!
//! # fn app(engine: cellar_engine::Engine) -> Router {
//! Router::new()
//!     .route("/notes", post(add_note))
//!     .layer(DatabaseSyncLayer::new(engine, &Limits::default()))
//!     .layer(UserContextLayer::new(&AuthMode::Header { trusted_proxy: false }))
//! # }
//! ```
//!
//! `examples/projects.rs` is a complete app built this way.

mod auth;
mod error;
mod metrics;
mod options;
mod routes;
mod serve;
mod sync;

pub use auth::{USER_ID_HEADER, UserContext, UserContextLayer};
pub use error::{ApiError, ErrorCode};
pub use options::{AuthMode, Limits, ServerOptions};
pub use serve::{check_listen_address, serve};
pub use sync::{CELLAR_VERSION, DatabaseSync, DatabaseSyncLayer, Db};

/// The v1 API as an axum router, for serving it yourself (see [`serve`] for the usual way).
pub fn router(engine: cellar_engine::Engine, options: ServerOptions) -> axum::Router {
    routes::build(engine, options, serve::Shutdown::never())
}
