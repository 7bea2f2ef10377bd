//! Cellar's HTTP server: the v1 API of DESIGN §5 over a [`cellar_engine::Engine`], built
//! from tower layers that a Rust developer can also put on their own axum app.
//!
//! The v1 API ([`router`], served by [`serve()`]); `POST /v1/query` goes:
//!
//! ```text
//! client ─► UserContextLayer ─► parse ──────────► handler ─► Engine::transact ──────────► response
//!           (who is calling?)   (body read and    (its SQL)  (version check,              (Cellar-Version)
//!                                checked against              download if newer;
//!                                the limits)                  group commit: requests
//!                                                             that arrive during an
//!                                                             upload share the next
//!                                                             ONE upload)
//! ```
//!
//! `GET /v1/db`, `GET /v1/db/file` and `GET /v1/events` run behind `UserContextLayer` too,
//! each with its own version check, and so do the caller's history, `GET /v1/db/versions`,
//! `GET /v1/db/diff` and `POST /v1/db/restore`; `/healthz` and `/metrics` need no identity.
//!
//! [`DatabaseSyncLayer`] is not on that path: it is exported for handlers of your own (see
//! below), which get the caller's database through the [`Db`] extractor:
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
//! From the leaves up; a module uses only modules above it in this list.
//!
//! - [`options`](ServerOptions): [`AuthMode`], [`Limits`], [`ServerOptions`], [`AdminToken`].
//! - `error`: [`ApiError`] and [`ErrorCode`], the one place where failures become HTTP
//!   statuses and the `{"error": {"code", "message"}}` body.
//! - `assets`: static pages built into the binary, served as plain routes.
//! - `state`: what the v1 API's handlers share (the engine, the limits, the request counts)
//!   and the shutdown signal that WebSockets watch.
//! - `auth`: the user-context layer, [`UserContextLayer`] (header or JWT identity; sets the
//!   caller's [`cellar_engine::UserId`] as a request extension).
//! - `metrics`: request counting and `GET /metrics` (Prometheus text).
//! - `relay`: events relayed to a WebSocket client until it leaves or shutdown.
//! - `sync`: the database-sync layer, [`DatabaseSyncLayer`], and the [`Db`] extractor, for
//!   handlers of your own (seed rules `version-compare-on-start`, `write-batched`,
//!   `sync-on-mutation` as seen from HTTP; rebase by running the handler again); also
//!   [`CELLAR_VERSION`], the header that the routes set as well.
//! - `admin`: with [`ServerOptions::admin_token`] only, the operator's dashboard (`/ui`)
//!   and the admin API it uses (`/v1/admin/…`, behind the admin token): the bucket's
//!   users listed into memory and paged there, recent events, samples of the server's
//!   counters every second.
//! - `routes`: the v1 API — `query` (`POST /v1/query` through
//!   [`Engine::transact`](cellar_engine::Engine::transact), with `values` for JSON ↔
//!   SQLite), `db` (`GET /v1/db`, `GET /v1/db/file`, `?version=N` for an earlier one),
//!   `history` (`GET /v1/db/versions`, `GET /v1/db/diff`, `POST /v1/db/restore`), `events`
//!   (`GET /v1/events`, WebSocket), `demo` (the end-user app at `/demo`, with
//!   `server.demo`); [`router`] builds it.
//! - `serve`: [`serve()`], an HTTP/1.1 accept loop with at most `max_connections` open, a
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

mod admin;
mod assets;
mod auth;
mod error;
mod metrics;
mod options;
mod relay;
mod routes;
mod serve;
mod state;
mod sync;

pub use auth::{USER_ID_HEADER, UserContext, UserContextLayer};
pub use error::{ApiError, ErrorCode};
pub use options::{AdminToken, AuthMode, InvalidAdminToken, Limits, ServerOptions};
pub use serve::{check_listen_address, serve};
pub use sync::{CELLAR_VERSION, DatabaseSync, DatabaseSyncLayer, Db};

/// The v1 API as an axum router, for serving it yourself (see [`serve()`] for the usual way).
pub fn router(engine: cellar_engine::Engine, options: ServerOptions) -> axum::Router {
    routes::build(
        engine,
        options,
        Default::default(),
        state::Shutdown::never(),
    )
}
