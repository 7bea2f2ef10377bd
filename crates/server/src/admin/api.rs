//! The admin API's routes (`/v1/admin/…`), as the dashboard calls them; each needs the
//! operator's token (see `gate`). A user's history (versions, diff, restore) is served by
//! the code of the user's own history routes (`routes::history`), for any user.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use cellar_engine::{Error, RemoteDatabase, UserId};
use chrono::SecondsFormat;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use utoipa::{IntoParams, ToSchema};

use super::feed::Seen;
use super::state::Admin;
use super::stats::{EVERY, Sample};
use crate::error::{ApiError, ErrorBody, ErrorCode};
use crate::relay::{relay, send};
use crate::routes::history::{
    self, DiffBody, DiffQuery, RestoreRequest, RestoredBody, VersionsBody, VersionsQuery,
};
use crate::state::Shutdown;

/// Users on a page unless the caller says otherwise.
const DEFAULT_PAGE: usize = 50;
/// The most users on a page: each costs a metadata read of the store.
const MAX_PAGE: usize = 500;
/// Metadata reads of one page in flight at once.
const PARALLEL_READS: usize = 16;

/// What any admin API route may answer besides its own answers.
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "a description of answers; never built")]
enum AdminErrors {
    /// `unauthorized`: no admin token, or not the one in `auth.admin_token`.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// `internal`: a fault of this server; the details are in its log.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// `store_unavailable`: the object store failed or did not answer in time.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The user a route is about.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct UserPath {
    /// The user id.
    #[param(pattern = "^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")]
    user: String,
}

impl UserPath {
    /// The user the path names, checked to be a user id.
    fn parse(path: Result<Path<Self>, PathRejection>) -> Result<UserId, ApiError> {
        let Path(Self { user }) =
            path.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        Ok(UserId::new(user)?)
    }
}

/// The users table's query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct UsersQuery {
    /// Only users whose id contains this text (ASCII case ignored).
    q: Option<String>,
    /// The `next` of the previous page: the users after this id.
    #[param(pattern = "^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")]
    after: Option<String>,
    /// Users per page, 1–500; 50 when absent.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

/// One user's database as the bucket describes it.
#[derive(Serialize, ToSchema)]
pub(super) struct UserSummary {
    /// Whose database.
    user_id: String,
    /// The version in the bucket; `null` when its metadata cannot be read (see `problem`).
    version: Option<u64>,
    /// Size of that version in bytes.
    size_bytes: Option<u64>,
    /// When that version was uploaded (RFC 3339).
    #[schema(format = DateTime)]
    updated_at: Option<String>,
    /// The instance that uploaded it.
    writer: Option<String>,
    /// Conflicts this instance saw on the user's uploads since it started.
    conflicts: u64,
    /// Why the object's metadata cannot be read; `null` when it can.
    problem: Option<String>,
}

/// A page of the users table.
#[derive(Serialize, ToSchema)]
pub(super) struct UsersPage {
    /// The users, in id order.
    users: Vec<UserSummary>,
    /// The `after` of the next page; `null` on the last.
    next: Option<String>,
    /// How many users match, on all pages.
    total: usize,
}

/// One user, with what this instance saw happen to their database.
#[derive(Serialize, ToSchema)]
pub(super) struct UserDetail {
    /// The database as the bucket describes it.
    user: UserSummary,
    /// The user's recent events on this instance, newest first: the events `/v1/events`
    /// sends (`{"type": "version" | "conflict", "user_id", …}`) with `at`, when this
    /// instance saw them (RFC 3339).
    #[schema(value_type = Vec<Object>)]
    events: Vec<Seen>,
}

/// The samples of the last minutes.
#[derive(Serialize, ToSchema)]
pub(super) struct StatsBody {
    /// Milliseconds between two samples.
    interval_ms: u64,
    /// Oldest first; at most five minutes of them.
    samples: Vec<Sample>,
}

/// Users in the bucket, searched and paged.
#[utoipa::path(
    get,
    path = "/v1/admin/users",
    tag = "admin",
    security(("admin" = [])),
    description = "The users with a database in the bucket, in id order, with their version, \
        size, last write, writer and the conflicts this instance saw. The bucket is listed \
        into memory when the server starts and again, in the background, when that listing \
        is older than 10 s; users whose first upload lands on this instance appear at once. \
        Only the page's users are read from the store.",
    params(UsersQuery),
    responses(
        (status = 200, description = "A page of users", body = UsersPage),
        (status = 400, description = "`bad_request`: `limit` out of 1–500, `after` not a \
            user id, or a malformed query string", body = ErrorBody),
        AdminErrors,
    )
)]
pub(super) async fn users(
    State(admin): State<Arc<Admin>>,
    query: Result<Query<UsersQuery>, QueryRejection>,
) -> Result<Json<UsersPage>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be from 1 to {MAX_PAGE}, not {limit}"
        )));
    }
    let after = query
        .after
        .map(UserId::new)
        .transpose()
        .map_err(|invalid| ApiError::from(invalid).context("after"))?;
    let search = query.q.unwrap_or_default();
    let page = admin.page(&search, after.as_ref(), limit).await?;
    let read = futures::stream::iter(page.users)
        .map(|user| describe(&admin, user))
        .buffered(PARALLEL_READS)
        .collect::<Vec<_>>()
        .await;
    Ok(Json(UsersPage {
        // A user whose object went since the listing is left out.
        users: read
            .into_iter()
            .filter_map(Result::transpose)
            .collect::<Result<_, _>>()?,
        next: page.next.map(|user| user.as_str().to_owned()),
        total: page.total,
    }))
}

/// One user's metadata and recent events.
#[utoipa::path(
    get,
    path = "/v1/admin/users/{user}",
    tag = "admin",
    security(("admin" = [])),
    params(UserPath),
    responses(
        (status = 200, description = "The user's database and recent events", body = UserDetail),
        (status = 400, description = "`bad_request`: not a user id", body = ErrorBody),
        (status = 404, description = "`not_found`: the user has no database in the bucket",
            body = ErrorBody),
        AdminErrors,
    )
)]
pub(super) async fn user(
    State(admin): State<Arc<Admin>>,
    path: Result<Path<UserPath>, PathRejection>,
) -> Result<Json<UserDetail>, ApiError> {
    let user = UserPath::parse(path)?;
    let Some(summary) = describe(&admin, user.clone()).await? else {
        return Err(no_database(&user));
    };
    Ok(Json(UserDetail {
        user: summary,
        events: admin.feed.of_user(user.as_str()),
    }))
}

/// One user's versions, newest first.
#[utoipa::path(
    get,
    path = "/v1/admin/users/{user}/versions",
    tag = "admin",
    security(("admin" = [])),
    description = "The user's versions inside the retention window, newest first, as the \
        user's own `GET /v1/db/versions` lists them (same query, same answer). \
        `Cellar-Version` is the newest.",
    params(UserPath, VersionsQuery),
    responses(
        (status = 200, description = "The user's versions, newest first", body = VersionsBody,
            headers(("Cellar-Version" = u64))),
        (status = 400, description = "`bad_request`: not a user id, `limit` out of \
            1–10 000, or a malformed query string", body = ErrorBody),
        (status = 404, description = "`not_found`: the user has no database in the bucket",
            body = ErrorBody),
        AdminErrors,
    )
)]
pub(super) async fn versions(
    State(admin): State<Arc<Admin>>,
    path: Result<Path<UserPath>, PathRejection>,
    query: Result<Query<VersionsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let user = UserPath::parse(path)?;
    match history::list_versions(&admin.app.engine, &user, query).await? {
        Some(versions) => Ok(history::versions_answer(&user, versions)),
        None => Err(no_database(&user)),
    }
}

/// Two of one user's versions compared row by row.
#[utoipa::path(
    get,
    path = "/v1/admin/users/{user}/diff",
    tag = "admin",
    security(("admin" = [])),
    description = "The rows each table of the user's database gained, lost or changed from \
        version `from` to version `to`, and the schema objects added, removed or rewritten, \
        as the user's own `GET /v1/db/diff` tells them (same query, same answer).",
    params(UserPath, DiffQuery),
    responses(
        (status = 200, description = "The differences", body = DiffBody),
        (status = 400, description = "`bad_request`: not a user id, `from` or `to` missing \
            or not a number, `max_rows` out of 1–1 000", body = ErrorBody),
        (status = 404, description = "`not_found`: no such version in the user's history \
            (never written, or past the retention window), or no database", body = ErrorBody),
        (status = 507, description = "`insufficient_storage`: the server's own disk is full",
            body = ErrorBody),
        AdminErrors,
    )
)]
pub(super) async fn diff(
    State(admin): State<Arc<Admin>>,
    path: Result<Path<UserPath>, PathRejection>,
    query: Result<Query<DiffQuery>, QueryRejection>,
) -> Result<Json<DiffBody>, ApiError> {
    let user = UserPath::parse(path)?;
    history::compare_versions(&admin.app.engine, &user, query).await
}

/// Brings back an earlier version of one user's database as a new, newest version.
#[utoipa::path(
    post,
    path = "/v1/admin/users/{user}/restore",
    tag = "admin",
    security(("admin" = [])),
    description = "Restores as the user's own `POST /v1/db/restore` does (same body, same \
        answer: restoring `undo` undoes it), also when `history.user_restore` is off: that \
        setting governs users only. The user's subscribers get a `version` event with \
        `restored_from`.",
    params(UserPath),
    request_body = RestoreRequest,
    responses(
        (status = 200, description = "The restore, committed", body = RestoredBody,
            headers(("Cellar-Version" = u64))),
        (status = 400, description = "`bad_request`: not a user id, or a body that is not \
            exactly one of `version` and `at`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such version in the user's history \
            (never written, or past the retention window), or no database", body = ErrorBody),
        (status = 408, description = "`request_timeout`: the body did not arrive in time",
            body = ErrorBody),
        (status = 409, description = "`conflict`: another writer uploaded first \
            (`sync.conflict = \"strict\"`); nothing was restored", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is larger than the limit",
            body = ErrorBody),
        (status = 507, description = "`insufficient_storage`: the server's own disk is full",
            body = ErrorBody),
        AdminErrors,
    )
)]
pub(super) async fn restore(
    State(admin): State<Arc<Admin>>,
    path: Result<Path<UserPath>, PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let user = UserPath::parse(path)?;
    history::restore_as_asked(&admin.app, &user, body).await
}

/// Samples of the server's own vital signs.
#[utoipa::path(
    get,
    path = "/v1/admin/stats",
    tag = "admin",
    security(("admin" = [])),
    description = "What this server did in each of the last five minutes' seconds, sampled by \
        the server itself: requests per second by status class, uploads, bytes up and down, \
        request latency (p50, p99), conflicts, and the databases warm in its cache.",
    responses(
        (status = 200, description = "The samples, oldest first", body = StatsBody),
        (status = 401, description = "`unauthorized`: no admin token, or not the one in \
            `auth.admin_token`", body = ErrorBody),
    )
)]
pub(super) async fn stats(State(admin): State<Arc<Admin>>) -> Json<StatsBody> {
    Json(StatsBody {
        interval_ms: EVERY.as_millis() as u64,
        samples: admin.stats.samples(),
    })
}

/// Every user's events, live.
#[utoipa::path(
    get,
    path = "/v1/admin/events",
    tag = "admin",
    security(("admin" = [])),
    description = "A WebSocket of all users' events on this instance, as JSON text messages: \
        first the most recent (up to 100), then each as it happens. A message is what \
        `/v1/events` sends (`{\"type\": \"version\" | \"conflict\", \"user_id\", …}`) with \
        `at`, when this instance saw it. A request that is not a WebSocket handshake answers \
        400.",
    params(("token" = Option<String>, Query, description = "The admin token, for browsers, \
        which cannot set headers on a WebSocket; accepted on this route only")),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "`bad_request`: not a WebSocket handshake", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no admin token, or not the one in \
            `auth.admin_token`", body = ErrorBody),
    )
)]
pub(super) async fn events(
    State(admin): State<Arc<Admin>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade
        .map_err(|rejection| ApiError::rejected(rejection.status(), rejection.body_text()))?;
    let (recent, live) = admin.feed.follow();
    let shutdown = admin.app.shutdown.clone();
    Ok(upgrade.on_upgrade(move |socket| {
        let relaying = replay_then_relay(socket, recent, live, shutdown.clone());
        shutdown.tasks().track_future(relaying)
    }))
}

async fn replay_then_relay(
    mut socket: WebSocket,
    recent: Vec<Seen>,
    live: broadcast::Receiver<Seen>,
    shutdown: Shutdown,
) {
    for seen in &recent {
        if send(&mut socket, seen).await.is_err() {
            return;
        }
    }
    relay(socket, live, |_| true, shutdown).await;
}

/// The answer about a user who has no database.
fn no_database(user: &UserId) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("user {user} has no database in the bucket"),
    )
}

/// `user`'s row, read from the store; `None` if the user has no object.
async fn describe(admin: &Admin, user: UserId) -> Result<Option<UserSummary>, ApiError> {
    let conflicts = admin.feed.conflicts(user.as_str());
    let summary = match admin.reader.remote_status(&user).await {
        Ok(None) => return Ok(None),
        Ok(Some(RemoteDatabase {
            version,
            snapshot,
            updated_at,
            writer,
            ..
        })) => UserSummary {
            user_id: user.as_str().to_owned(),
            version: Some(version.get()),
            size_bytes: Some(snapshot.size),
            updated_at: Some(updated_at.to_rfc3339_opts(SecondsFormat::Millis, true)),
            writer: Some(writer),
            conflicts,
            problem: None,
        },
        // One object that is not Cellar's must not hide the others.
        Err(unreadable @ Error::Inconsistent { .. }) => UserSummary {
            user_id: user.as_str().to_owned(),
            version: None,
            size_bytes: None,
            updated_at: None,
            writer: None,
            conflicts,
            problem: Some(unreadable.to_string()),
        },
        Err(err) => return Err(err.into()),
    };
    Ok(Some(summary))
}
