//! `GET /v1/db` and `GET /v1/db/file`: the caller's database, described or whole.
//!
//! Both run their own engine session, with the version check at its start.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use cellar_engine::{DbStatus, UserId, Version};
use chrono::SecondsFormat;
use http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use serde::Serialize;
use tokio_util::io::ReaderStream;
use utoipa::ToSchema;

use super::openapi::DatabaseFile;
use crate::error::{ApiError, ErrorBody, ErrorCode, UserErrors};
use crate::state::AppState;
use crate::sync::set_version;

/// The media type of a SQLite database file.
const SQLITE_MEDIA_TYPE: &str = "application/vnd.sqlite3";

/// The caller's database, described.
#[derive(Serialize, ToSchema)]
pub(crate) struct DbStatusBody {
    /// Whose database.
    user_id: String,
    /// Its current version (0: never written).
    version: u64,
    /// Size of the local copy in bytes.
    size_bytes: u64,
    /// When the current version was uploaded (RFC 3339); `null` before the first write.
    #[schema(format = DateTime)]
    updated_at: Option<String>,
}

impl From<DbStatus> for DbStatusBody {
    fn from(status: DbStatus) -> Self {
        Self {
            user_id: status.user_id,
            version: status.version.get(),
            size_bytes: status.size_bytes,
            updated_at: status
                .updated_at
                .map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true)),
        }
    }
}

/// `{"user_id", "version", "size_bytes", "updated_at"}`, after the version check.
#[utoipa::path(
    get,
    path = "/v1/db",
    tag = "database",
    security(("identity" = [])),
    responses(
        (status = 200, description = "The caller's database, at the bucket's version",
            body = DbStatusBody, headers(("Cellar-Version" = u64))),
        UserErrors,
    )
)]
pub(crate) async fn status(
    State(state): State<Arc<AppState>>,
    Extension(user): Extension<UserId>,
) -> Result<Response, ApiError> {
    let status = state.engine.status(&user).await?;
    let version = status.version;
    let mut response = Json(DbStatusBody::from(status)).into_response();
    set_version(&mut response, version);
    Ok(response)
}

/// A consistent snapshot of the database file, as of the bucket's current version,
/// streamed from a copy on disk (a database may be far larger than an answer held in
/// memory should be); 404 `not_found` for a user who has no database yet.
#[utoipa::path(
    get,
    path = "/v1/db/file",
    tag = "database",
    security(("identity" = [])),
    responses(
        (status = 200, description = "The caller's database file, at the bucket's version",
            content_type = "application/vnd.sqlite3", body = DatabaseFile,
            headers(("Cellar-Version" = u64))),
        (status = 404, description = "`not_found`: the caller has no database yet",
            body = ErrorBody),
        UserErrors,
    )
)]
pub(crate) async fn file(
    State(state): State<Arc<AppState>>,
    Extension(user): Extension<UserId>,
) -> Result<Response, ApiError> {
    let Some(export) = state.engine.export(&user).await? else {
        let mut response = ApiError::new(
            ErrorCode::NotFound,
            format!("user {user} has no database yet: nothing was ever written"),
        )
        .into_response();
        set_version(&mut response, Version::ZERO);
        return Ok(response);
    };
    let disposition = format!("attachment; filename=\"{user}.sqlite\"");
    let body = Body::from_stream(ReaderStream::new(tokio::fs::File::from_std(export.file)));
    let mut response = (
        [
            (CONTENT_TYPE, SQLITE_MEDIA_TYPE.to_owned()),
            (CONTENT_DISPOSITION, disposition),
            (CONTENT_LENGTH, export.size_bytes.to_string()),
        ],
        body,
    )
        .into_response();
    set_version(&mut response, export.version);
    Ok(response)
}
