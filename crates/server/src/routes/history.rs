//! `GET /v1/db/versions`, `GET /v1/db/diff` and `POST /v1/db/restore`: the caller's
//! history (`docs/history.md`), listed from the bucket, two versions compared row by row,
//! and a restore, which commits an earlier version's content as a new version, so that it
//! can be undone like any write. An earlier version's file is
//! `GET /v1/db/file?version=N` (`db`).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::response::{IntoResponse, Response};
use cellar_engine::diff::{DatabaseDiff, DiffOptions, SchemaChange, TableDiff};
use cellar_engine::{Engine, Holder, RestoreTarget, Restored, UserId, Version, VersionEntry};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::db::timestamp;
use crate::error::{ApiError, ErrorBody, ErrorCode, UserErrors};
use crate::state::AppState;
use crate::sync::{read_body, set_version};

/// Versions listed unless the caller says otherwise.
const DEFAULT_VERSIONS: usize = 100;
/// The most versions one answer lists.
const MAX_VERSIONS: usize = 10_000;
/// Rows of a table a diff lists unless the caller says otherwise.
const DEFAULT_DIFF_ROWS: usize = 100;
/// The most rows of a table one diff lists: each row is whole in the answer.
const MAX_DIFF_ROWS: usize = 1_000;

/// `GET /v1/db/versions`'s query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct VersionsQuery {
    /// The newest versions listed at most, 1–10 000; 100 when absent.
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
    /// Also tell who wrote each version listed; costs one more store request per version,
    /// so it is off unless asked for.
    writers: Option<bool>,
}

/// The caller's restorable versions.
#[derive(Serialize, ToSchema)]
pub(crate) struct VersionsBody {
    /// Whose database.
    user_id: String,
    /// Newest first; empty for a user who has no database yet.
    versions: Vec<VersionBody>,
}

/// One restorable version.
#[derive(Serialize, ToSchema)]
pub(crate) struct VersionBody {
    /// The version.
    version: u64,
    /// When it was written (RFC 3339).
    #[schema(format = DateTime)]
    created_at: String,
    /// What holds it in the bucket: `change` (a change of the log), `snapshot` (the current
    /// snapshot), `kept_snapshot` (a snapshot kept for history).
    #[schema(value_type = Vec<String>)]
    held_by: Vec<Holder>,
    /// Bytes uploaded to write it: its change, or the whole database for a first version.
    shipped_bytes: u64,
    /// The database's size at this version, where a snapshot of it tells; else `null`.
    size_bytes: Option<u64>,
    /// The instance that wrote it, where known (`?writers=true` tells it for every version
    /// listed).
    writer: Option<String>,
}

impl From<VersionEntry> for VersionBody {
    fn from(entry: VersionEntry) -> Self {
        Self {
            version: entry.version.get(),
            created_at: timestamp(entry.created_at),
            held_by: entry.held_by,
            shipped_bytes: entry.shipped_bytes,
            size_bytes: entry.size_bytes,
            writer: entry.writer,
        }
    }
}

/// The caller's versions that can still be downloaded or restored, read from the bucket.
#[utoipa::path(
    get,
    path = "/v1/db/versions",
    tag = "database",
    security(("identity" = [])),
    description = "The versions of the caller's database inside the retention window, newest \
        first, read from the bucket (a few store requests however many versions). \
        `Cellar-Version` is the newest.",
    params(VersionsQuery),
    responses(
        (status = 200, description = "The caller's versions, newest first", body = VersionsBody,
            headers(("Cellar-Version" = u64))),
        UserErrors,
    )
)]
pub(crate) async fn versions(
    State(state): State<Arc<AppState>>,
    Extension(user): Extension<UserId>,
    query: Result<Query<VersionsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let listed = list_versions(&state.engine, &user, query).await?;
    Ok(versions_answer(&user, listed.unwrap_or_default()))
}

/// `user`'s versions as `query` asks, newest first; `None` when the user has no database.
/// Shared with the operator's `GET /v1/admin/users/{user}/versions`.
pub(crate) async fn list_versions(
    engine: &Engine,
    user: &UserId,
    query: Result<Query<VersionsQuery>, QueryRejection>,
) -> Result<Option<Vec<VersionBody>>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_VERSIONS);
    if !(1..=MAX_VERSIONS).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be from 1 to {MAX_VERSIONS}, not {limit}"
        )));
    }
    let writers = if query.writers.unwrap_or(false) {
        limit
    } else {
        0
    };
    let Some(entries) = engine.bucket_reader().versions(user, writers).await? else {
        return Ok(None);
    };
    Ok(Some(
        entries
            .into_iter()
            .rev()
            .take(limit)
            .map(VersionBody::from)
            .collect(),
    ))
}

/// The answer listing `versions` (newest first), `Cellar-Version` the newest.
pub(crate) fn versions_answer(user: &UserId, versions: Vec<VersionBody>) -> Response {
    let newest = versions.first().map_or(0, |newest| newest.version);
    let mut response = Json(VersionsBody {
        user_id: user.as_str().to_owned(),
        versions,
    })
    .into_response();
    set_version(&mut response, Version::new(newest));
    response
}

/// `GET /v1/db/diff`'s query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DiffQuery {
    /// The version compared from (the older, usually).
    #[param(minimum = 1)]
    from: u64,
    /// The version compared to.
    #[param(minimum = 1)]
    to: u64,
    /// Rows listed per table, 1–1 000; 100 when absent. The counts stay exact beyond it.
    #[param(minimum = 1, maximum = 1000)]
    max_rows: Option<usize>,
}

/// How the caller's database changed from one version to another.
#[derive(Serialize, ToSchema)]
pub(crate) struct DiffBody {
    /// Whose database.
    user_id: String,
    /// The version compared from.
    from: u64,
    /// The version compared to.
    to: u64,
    /// Tables with rows added, removed or changed, by name: `{"table", "key", "added",
    /// "removed", "changed", "rows", "truncated"}`, each row `{"key", "change", "before",
    /// "after"}` (`change`: `added`, `removed` or `changed`; a changed row shows its key and
    /// the columns that differ).
    #[schema(value_type = Vec<Object>)]
    tables: Vec<TableDiff>,
    /// Schema objects added, removed or rewritten: `{"kind", "name", "change",
    /// "sql_before", "sql_after"}`.
    #[schema(value_type = Vec<Object>)]
    schema: Vec<SchemaChange>,
}

/// Two versions of the caller's database compared row by row.
#[utoipa::path(
    get,
    path = "/v1/db/diff",
    tag = "database",
    security(("identity" = [])),
    description = "The rows each table gained, lost or changed from version `from` to version \
        `to`, and the schema objects added, removed or rewritten; both lists are empty when \
        the versions hold the same rows. Versions are rebuilt from the bucket's history \
        (the current one is read from this instance's copy).",
    params(DiffQuery),
    responses(
        (status = 200, description = "The differences", body = DiffBody),
        (status = 404, description = "`not_found`: no such version in the caller's history \
            (never written, or past the retention window), or no database", body = ErrorBody),
        UserErrors,
    )
)]
pub(crate) async fn diff(
    State(state): State<Arc<AppState>>,
    Extension(user): Extension<UserId>,
    query: Result<Query<DiffQuery>, QueryRejection>,
) -> Result<Json<DiffBody>, ApiError> {
    compare_versions(&state.engine, &user, query).await
}

/// `user`'s two versions that `query` names, compared. Shared with the operator's
/// `GET /v1/admin/users/{user}/diff`.
pub(crate) async fn compare_versions(
    engine: &Engine,
    user: &UserId,
    query: Result<Query<DiffQuery>, QueryRejection>,
) -> Result<Json<DiffBody>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let max_rows = query.max_rows.unwrap_or(DEFAULT_DIFF_ROWS);
    if !(1..=MAX_DIFF_ROWS).contains(&max_rows) {
        return Err(ApiError::bad_request(format!(
            "max_rows must be from 1 to {MAX_DIFF_ROWS}, not {max_rows}"
        )));
    }
    let options = DiffOptions {
        max_rows_per_table: max_rows,
    };
    let DatabaseDiff { tables, schema } = engine
        .diff(
            user,
            Version::new(query.from),
            Version::new(query.to),
            options,
        )
        .await?;
    Ok(Json(DiffBody {
        user_id: user.as_str().to_owned(),
        from: query.from,
        to: query.to,
        tables,
        schema,
    }))
}

/// What to restore: exactly one of `version` and `at`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestoreRequest {
    /// The version whose content to bring back.
    #[schema(minimum = 1)]
    version: Option<u64>,
    /// A moment (RFC 3339): brings back the version that was current then.
    #[schema(format = DateTime)]
    at: Option<String>,
}

impl RestoreRequest {
    fn target(self) -> Result<RestoreTarget, ApiError> {
        match (self.version, self.at) {
            (Some(version), None) => Ok(RestoreTarget::Version(Version::new(version))),
            (None, Some(at)) => DateTime::parse_from_rfc3339(&at)
                .map(|at| RestoreTarget::At(at.with_timezone(&Utc)))
                .map_err(|err| {
                    ApiError::bad_request(format!(
                        "`at` must be an RFC 3339 time such as 2025-01-31T09:30:00Z, not \
                         {at:?} ({err})"
                    ))
                }),
            (Some(_), Some(_)) => Err(ApiError::bad_request(
                "give either `version` or `at`, not both",
            )),
            (None, None) => Err(ApiError::bad_request(
                "give the version to restore as `version`, or a moment as `at`",
            )),
        }
    }
}

/// What a restore did.
#[derive(Serialize, ToSchema)]
pub(crate) struct RestoredBody {
    /// The new version, holding the restored content.
    version: u64,
    /// The version whose content it holds.
    restored: u64,
    /// The version to restore to undo this restore (the newest before it).
    undo: u64,
}

impl From<Restored> for RestoredBody {
    fn from(restored: Restored) -> Self {
        Self {
            version: restored.version.get(),
            restored: restored.restored.get(),
            undo: restored.undo.get(),
        }
    }
}

/// Brings back an earlier version's content as a new, newest version.
#[utoipa::path(
    post,
    path = "/v1/db/restore",
    tag = "database",
    security(("identity" = [])),
    description = "Commits the content of an earlier version (`version`, or the one current \
        `at` a moment) as a new version on top of the newest, like any write: nothing is \
        rewritten, and restoring `undo` undoes it. Subscribers of `/v1/events` get a \
        `version` event with `restored_from`; other instances serve the restored content \
        from their next request. The body is read within the request limits.",
    request_body = RestoreRequest,
    responses(
        (status = 200, description = "The restore, committed", body = RestoredBody,
            headers(("Cellar-Version" = u64))),
        (status = 403, description = "`forbidden`: this server does not let users restore \
            (`history.user_restore = false`)", body = ErrorBody),
        (status = 404, description = "`not_found`: no such version in the caller's history \
            (never written, or past the retention window), or no database", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body did not arrive in time",
            body = ErrorBody),
        (status = 409, description = "`conflict`: another writer uploaded first \
            (`sync.conflict = \"strict\"`); nothing was restored", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is larger than the limit",
            body = ErrorBody),
        UserErrors,
    )
)]
pub(crate) async fn restore(
    State(state): State<Arc<AppState>>,
    Extension(user): Extension<UserId>,
    body: Body,
) -> Result<Response, ApiError> {
    if !state.engine.config().history.user_restore {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "this server does not let users restore their database (history.user_restore is \
             off)",
        ));
    }
    restore_as_asked(&state, &user, body).await
}

/// Restores what `body` (a [`RestoreRequest`], read within the request limits) names of
/// `user`'s history. Shared with the operator's `POST /v1/admin/users/{user}/restore`,
/// which `history.user_restore` does not govern.
pub(crate) async fn restore_as_asked(
    state: &AppState,
    user: &UserId,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(body, &state.limits).await?;
    let request: RestoreRequest = serde_json::from_slice(&bytes)
        .map_err(|err| ApiError::bad_request(format!("invalid request body: {err}")))?;
    let restored = state.engine.restore(user, request.target()?).await?;
    let mut response = Json(RestoredBody::from(restored)).into_response();
    set_version(&mut response, restored.version);
    Ok(response)
}
