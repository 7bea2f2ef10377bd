//! `GET /v1/db` and `GET /v1/db/file`: the caller's database, described or whole.
//!
//! Both run their own engine session, with the version check at its start; an earlier
//! version's file (`?version=N`) is rebuilt from the bucket instead (`history`).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::response::{IntoResponse, Response};
use cellar_engine::{DbStatus, UserId, Version};
use chrono::{DateTime, SecondsFormat, Utc};
use http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use tokio_util::io::ReaderStream;
use utoipa::{IntoParams, ToSchema};

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
            updated_at: status.updated_at.map(timestamp),
        }
    }
}

/// A moment as the API's bodies spell it: RFC 3339, UTC, to the millisecond.
pub(super) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
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

/// `GET /v1/db/file`'s query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FileQuery {
    /// An earlier version to download instead of the current one (see `GET /v1/db/versions`).
    #[param(minimum = 1)]
    version: Option<u64>,
}

/// A consistent snapshot of the database file, as of the bucket's current version,
/// streamed from a copy on disk (a database may be far larger than an answer held in
/// memory should be); 404 `not_found` for a user who has no database yet. With
/// `?version=N`, that version instead, rebuilt from the bucket's history.
#[utoipa::path(
    get,
    path = "/v1/db/file",
    tag = "database",
    security(("identity" = [])),
    params(FileQuery),
    responses(
        (status = 200, description = "The caller's database file, at the bucket's version \
            (or the version asked for, which `Cellar-Version` names)",
            content_type = "application/vnd.sqlite3", body = DatabaseFile,
            headers(("Cellar-Version" = u64))),
        (status = 404, description = "`not_found`: the caller has no database yet, or no such \
            version in its history (never written, or past the retention window)",
            body = ErrorBody),
        UserErrors,
    )
)]
pub(crate) async fn file(
    State(state): State<Arc<AppState>>,
    Extension(user): Extension<UserId>,
    query: Result<Query<FileQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    if let Some(version) = query.version.map(Version::new) {
        let export = state
            .engine
            .bucket_reader()
            .export_version(&user, version)
            .await?;
        let name = format!("{user}-v{version}");
        let body = Body::from_stream(ReaderStream::new(tokio::fs::File::from_std(export.file)));
        return Ok(sqlite_file(&name, export.size_bytes, body, version));
    }
    let Some(export) = state.engine.export(&user).await? else {
        let mut response = ApiError::new(
            ErrorCode::NotFound,
            format!("user {user} has no database yet: nothing was ever written"),
        )
        .into_response();
        set_version(&mut response, Version::ZERO);
        return Ok(response);
    };
    let body = Body::from_stream(ReaderStream::new(tokio::fs::File::from_std(export.file)));
    Ok(sqlite_file(
        user.as_str(),
        export.size_bytes,
        body,
        export.version,
    ))
}

/// A database file as an attachment named `{name}.sqlite`, of `version`.
fn sqlite_file(name: &str, size_bytes: u64, body: Body, version: Version) -> Response {
    let disposition = format!("attachment; filename=\"{name}.sqlite\"");
    let mut response = (
        [
            (CONTENT_TYPE, SQLITE_MEDIA_TYPE.to_owned()),
            (CONTENT_DISPOSITION, disposition),
            (CONTENT_LENGTH, size_bytes.to_string()),
        ],
        body,
    )
        .into_response();
    set_version(&mut response, version);
    response
}
