//! `GET /v1/db` and `GET /v1/db/file`: the caller's database, described or whole.
//!
//! Both run their own engine session (with the version check at its start), so they sit
//! outside the database-sync layer.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use cellar_engine::UserId;
use http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};

use super::AppState;
use crate::error::ApiError;
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

/// A consistent snapshot of the database file, as of the bucket's current version.
pub(crate) async fn file(
    State(state): State<Arc<AppState>>,
    Extension(user): Extension<UserId>,
) -> Result<Response, ApiError> {
    let (version, bytes) = state.engine.snapshot(&user).await?;
    let disposition = format!("attachment; filename=\"{user}.sqlite\"");
    let mut response = (
        [
            (CONTENT_TYPE, SQLITE_MEDIA_TYPE.to_owned()),
            (CONTENT_DISPOSITION, disposition),
        ],
        bytes,
    )
        .into_response();
    set_version(&mut response, version);
    Ok(response)
}
