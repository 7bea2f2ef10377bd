//! The v1 API (DESIGN §5) assembled from the layers, top to bottom:
//!
//! ```text
//! trace ─► count requests ─► catch panics ─► route
//!   /healthz, /metrics, /v1/openapi.json      (no identity)
//!   /demo, /demo/*                            (no identity; only with server.demo)
//!   /ui, /ui/*                                (no identity; only with auth.admin_token)
//!   /v1/admin/*                               admin token ─► handler (only with auth.admin_token)
//!   /v1/db, /v1/db/file, /v1/events           user context ─► handler
//!   /v1/db/versions, /v1/db/diff,             user context ─► handler (history, read from the
//!   /v1/db/restore                            bucket; a restore reads its body within the
//!                                             limits, then Engine::restore)
//!   /v1/query                                 user context ─► parse ─► handler (Engine::transact:
//!                                             version check, group commit, one upload)
//! ```

mod db;
mod demo;
mod events;
pub(crate) mod history;
mod openapi;
mod query;
mod values;

use std::any::Any;
use std::sync::Arc;

use axum::extract::{Extension, Request};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use cellar_engine::Engine;
use http::{Method, Uri};
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::admin;
use crate::auth::UserContextLayer;
use crate::error::{ApiError, ErrorCode};
use crate::metrics;
use crate::options::ServerOptions;
use crate::state::{AppState, HttpMetrics, Shutdown};

/// The whole application.
pub(crate) fn build(
    engine: Engine,
    options: ServerOptions,
    http: Arc<HttpMetrics>,
    shutdown: Shutdown,
) -> Router {
    let state = Arc::new(AppState {
        engine,
        limits: options.limits,
        http,
        shutdown,
    });
    // /v1/query syncs through `Engine::transact` (group commit, rebase) rather than the
    // sync layer, which serves handlers written against the `Db` extractor.
    let query = OpenApiRouter::new()
        .routes(routes!(query::run))
        .route_layer(from_fn_with_state(Arc::clone(&state), query::parse));
    let per_user = OpenApiRouter::new()
        .routes(routes!(db::status))
        .routes(routes!(db::file))
        .routes(routes!(history::versions))
        .routes(routes!(history::diff))
        .routes(routes!(history::restore))
        .routes(routes!(events::subscribe))
        .merge(query)
        .route_layer(UserContextLayer::new(&options.auth));
    let api = OpenApiRouter::with_openapi(openapi::base(&options.auth))
        .routes(routes!(healthz))
        .routes(routes!(metrics::render))
        .routes(routes!(openapi::describe))
        .merge(per_user);
    // Without the operator's token, the dashboard and the admin API are unknown routes.
    let api = match options.admin_token {
        Some(token) => api.merge(admin::routes(token, &state)),
        None => api,
    };
    let (router, document) = api.split_for_parts();
    // Static pages: served as plain routes, outside the API's description.
    let router = if options.demo {
        router.merge(demo::routes())
    } else {
        router
    };
    router
        .layer(Extension(openapi::Described::new(&document)))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(from_fn_with_state(Arc::clone(&state), metrics::count))
        .layer(
            TraceLayer::new_for_http()
                // The path only: a query string may carry a token.
                .make_span_with(|request: &Request| {
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .with_state(state)
}

/// The server answers.
#[derive(Serialize, ToSchema)]
struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process answers", body = Health))
)]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// A panicking handler answers 500 in the JSON shape; the panic goes to the log only.
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".to_owned());
    ApiError::internal(format!("a handler panicked: {detail}")).into_response()
}
