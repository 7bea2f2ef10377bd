//! `GET /v1/db` and `GET /v1/db/file`: the caller's database, described or whole.
//!
//! Both run their own engine session, with the version check at its start.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use cellar_engine::{UserId, Version};
use http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use tokio_util::io::ReaderStream;

use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;
use crate::sync::set_version;

/// The media type of a SQLite database file.
const SQLITE_MEDIA_TYPE: &str = "application/vnd.sqlite3";

/// `{"user_id", "version", "size_bytes", "updated_at"}`.
pub(crate) async fn status(
    State(state): State<Arc<AppState>>,
    Extension(user): Extension<UserId>,
) -> Result<Response, ApiError> {
    let status = state.engine.status(&user).await?;
    let mut response = Json(&status).into_response();
    set_version(&mut response, status.version);
    Ok(response)
}

/// A consistent snapshot of the database file, as of the bucket's current version,
/// streamed from a copy on disk (a database may be far larger than an answer held in
/// memory should be); 404 `not_found` for a user who has no database yet.
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
