//! `GET /v1/openapi.json`: the API described from the code that serves it.
//!
//! Every route is registered through `utoipa_axum`'s router together with its
//! `#[utoipa::path]` description, and the bodies it answers are the types whose schemas are
//! described (`ErrorBody`, `QueryResponse`, …), so the description cannot drift from what
//! is served. The identity scheme follows the server's `auth.mode`.

use std::sync::Arc;

use axum::extract::Extension;
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, RefOr, Schema, schema};
use utoipa::{OpenApi, PartialSchema, ToSchema};

use crate::auth::USER_ID_HEADER;
use crate::options::AuthMode;

/// The name of the identity scheme every per-user route requires.
pub(crate) const IDENTITY: &str = "identity";

/// The fixed part of the description; the routes add themselves.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cellar",
        description = "Per-user SQLite databases whose source of truth is an S3-compatible \
                       bucket. Every request is one transaction on the caller's own database; \
                       a request that wrote is acknowledged once its version is in the bucket \
                       (or, with `sync.durability = \"async\"`, committed on this instance)."
    ),
    tags(
        (name = "database", description = "The caller's own database"),
        (name = "operations", description = "Liveness, metrics and this description")
    )
)]
struct Fixed;

/// The fixed part with the identity scheme of `auth`.
pub(crate) fn base(auth: &AuthMode) -> Document {
    let mut document = Fixed::openapi();
    let scheme = match auth {
        AuthMode::Header { .. } => {
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                USER_ID_HEADER,
                "The caller's user id (1–128 of A–Z a–z 0–9 `-` `_` `.`, not `.` or `..`), \
                 set by a trusted proxy or on loopback",
            )))
        }
        AuthMode::Jwt { .. } => SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "An HS256 JWT whose `sub` is the user id; `exp` and `nbf` are checked. \
                     On the `/v1/events` WebSocket handshake it may come as `?token=`.",
                ))
                .build(),
        ),
    };
    document
        .components
        .get_or_insert_with(Default::default)
        .add_security_scheme(IDENTITY, scheme);
    document
}

/// The finished description, served as it is.
#[derive(Clone)]
pub(crate) struct Described(pub Arc<String>);

impl Described {
    pub(crate) fn new(document: &Document) -> Self {
        let json = document
            .to_pretty_json()
            .unwrap_or_else(|err| format!("{{\"error\": \"{err}\"}}"));
        Self(Arc::new(json))
    }
}

/// This description, as JSON (OpenAPI 3.1).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 description of this server",
        content_type = "application/json", body = Object))
)]
pub(crate) async fn describe(Extension(described): Extension<Described>) -> Response {
    (
        [(CONTENT_TYPE, "application/json")],
        described.0.as_str().to_owned(),
    )
        .into_response()
}

/// A SQLite database file (`application/vnd.sqlite3`).
pub(crate) struct DatabaseFile;

impl PartialSchema for DatabaseFile {
    fn schema() -> RefOr<Schema> {
        schema::ObjectBuilder::new()
            .schema_type(schema::Type::String)
            .content_media_type("application/vnd.sqlite3")
            .description(Some("A SQLite database file"))
            .into()
    }
}

impl ToSchema for DatabaseFile {}
