//! The one place where failures become HTTP answers: `{"error": {"code", "message"}}` with
//! the codes and statuses of DESIGN §5.

use std::fmt;

use axum::Json;
use axum::response::{IntoResponse, Response};
use cellar_engine::rusqlite::{self, ErrorCode as SqliteCode};
use cellar_engine::{Error, ErrorKind, InvalidUserId};
use http::StatusCode;
use tracing::{error, warn};

/// The `code` of an error answer; each has one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: malformed input (JSON, user id, parameters, a limit on results).
    BadRequest,
    /// 400: SQLite refused the SQL (syntax, constraint, parameter count...).
    SqlError,
    /// 401: no identity, or one that does not verify.
    Unauthorized,
    /// 403: SQL outside the sandbox.
    Forbidden,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 408: the request's SQL ran past its time limit and was interrupted.
    QueryTimeout,
    /// 408: the request body did not arrive whole in time.
    RequestTimeout,
    /// 409: another writer uploaded first; this request changed nothing.
    Conflict,
    /// 413: the request is larger than a limit allows.
    PayloadTooLarge,
    /// 500: a fault of this server; details are in its log, not in the answer.
    Internal,
    /// 503: the object store failed; nothing was changed.
    StoreUnavailable,
    /// 507: the server's own disk is full; the request was not completed.
    InsufficientStorage,
    /// 503: the write is kept locally and will be uploaded before anything newer is served.
    SyncPending,
}

impl ErrorCode {
    /// The code as it appears in the JSON body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::SqlError => "sql_error",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::QueryTimeout => "query_timeout",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Internal => "internal",
            ErrorCode::InsufficientStorage => "insufficient_storage",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::SyncPending => "sync_pending",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest | ErrorCode::SqlError => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::QueryTimeout | ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::StoreUnavailable | ErrorCode::SyncPending => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer. The v1 handlers return it, and so can handlers of your own behind
/// [`crate::DatabaseSyncLayer`]; any [`cellar_engine::Error`] converts into it with `?`.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    code: ErrorCode,
    message: String,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    /// 413 `payload_too_large`.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PayloadTooLarge, message)
    }

    /// 500 `internal`: logs `detail` and answers without it.
    pub fn internal(detail: impl fmt::Display) -> Self {
        error!(detail = %detail, "internal error");
        Self::new(
            ErrorCode::Internal,
            "internal error; the details are in the server log",
        )
    }

    /// The error's code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefixes the message with what was being done (`statement 2 (…)`).
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// Turns an axum extractor rejection into the JSON shape, keeping 413 apart.
    pub(crate) fn rejected(status: StatusCode, text: String) -> Self {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Self::payload_too_large(text),
            _ => Self::bad_request(text),
        }
    }
}

impl ApiError {
    /// Like `From<Error>`, but an [`Error::Work`] that carries an `ApiError` (a handler's
    /// own error, passed through the engine) comes back as that error.
    pub(crate) fn from_work(err: Error) -> Self {
        match &err {
            Error::Work(inner) => match inner.downcast_ref::<ApiError>() {
                Some(api) => api.clone(),
                None => Self::from(err),
            },
            _ => Self::from(err),
        }
    }
}

impl From<InvalidUserId> for ApiError {
    /// 400 `bad_request`, naming the rule the id broke.
    fn from(err: InvalidUserId) -> Self {
        Self::bad_request(err.to_string())
    }
}

impl From<Error> for ApiError {
    /// Engine errors by what the caller should do ([`ErrorKind`]), refined by variant.
    fn from(err: Error) -> Self {
        let code = match (&err, err.kind()) {
            (_, ErrorKind::DiskFull) => ErrorCode::InsufficientStorage,
            (Error::Sql(sql), _) => sql_code(sql),
            (Error::ResponseTooLarge { .. }, _) => ErrorCode::PayloadTooLarge,
            (_, ErrorKind::InvalidInput) => ErrorCode::BadRequest,
            (_, ErrorKind::Forbidden) => ErrorCode::Forbidden,
            (_, ErrorKind::NotFound) => ErrorCode::NotFound,
            (_, ErrorKind::Conflict) => ErrorCode::Conflict,
            // Data that fails Cellar's checks was not used: retrying later may find it
            // whole (a stale read passes), and the message says what was wrong.
            (_, ErrorKind::Unavailable | ErrorKind::Data) => ErrorCode::StoreUnavailable,
            (_, ErrorKind::SyncPending) => ErrorCode::SyncPending,
            (_, ErrorKind::Internal) => return Self::internal(err),
        };
        let message = match (&err, code) {
            (Error::Sql(_), ErrorCode::Forbidden) => format!("refused by the SQL sandbox ({err})"),
            // The file system's message names local paths.
            (_, ErrorCode::InsufficientStorage) => {
                warn!(error = %err, "answering insufficient_storage");
                "the server's disk is full, so the request was not completed; try again later"
                    .into()
            }
            (_, ErrorCode::QueryTimeout) => {
                "the SQL ran past the time limit and was interrupted; nothing was changed".into()
            }
            _ => match in_words(&err) {
                Some(words) => {
                    // Keys, endpoints and the store client's settings are for operators.
                    warn!(code = %code, error = %err, "answering without the error's details");
                    words
                }
                None => err.to_string(),
            },
        };
        Self::new(code, message)
    }
}

/// The cause of a store failure in words: the store's own message names object keys and
/// carries its client's internals (endpoints, retry settings).
fn in_words(err: &Error) -> Option<String> {
    const STORE_DOWN: &str = "object store unavailable (it failed or did not answer in time)";
    match err {
        Error::Store(_) => Some(format!(
            "{STORE_DOWN}; nothing was changed, try again later"
        )),
        Error::SyncPending { user, version, .. } => Some(format!(
            "{STORE_DOWN}: the write for user {user} is kept locally as version {version} and \
             is pending upload; it is uploaded before the user is served again"
        )),
        Error::EarlierWritePending { user, version, .. } => Some(format!(
            "{STORE_DOWN}: an earlier write (version {version} of user {user}'s database) is \
             still pending upload, so this request was not run and changed nothing; try again \
             later"
        )),
        _ => None,
    }
}

/// SQLite's own verdict on the SQL: sandbox refusal, interruption, oversize, or plain error.
fn sql_code(err: &rusqlite::Error) -> ErrorCode {
    match err.sqlite_error_code() {
        Some(SqliteCode::AuthorizationForStatementDenied) => ErrorCode::Forbidden,
        Some(SqliteCode::OperationInterrupted) => ErrorCode::QueryTimeout,
        Some(SqliteCode::TooBig) => ErrorCode::PayloadTooLarge,
        Some(
            SqliteCode::SystemIoFailure
            | SqliteCode::DatabaseCorrupt
            | SqliteCode::CannotOpen
            | SqliteCode::NotADatabase,
        ) => ErrorCode::Internal,
        _ => ErrorCode::SqlError,
    }
}

/// The body of every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong: a stable code, and the cause in words.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    code: ErrorCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        if status.is_server_error() {
            warn!(code = %self.code, message = %self.message, "answering with an error");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        (status, Json(body)).into_response()
    }
}

/// What any route that serves a user's database may answer besides its success.
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "a description of answers; never built")]
pub(crate) enum UserErrors {
    /// `bad_request`: a malformed request, an identity that is not a valid user id or is
    /// given twice; `sql_error` on `/v1/query`.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// `unauthorized`: no identity, or one that does not verify.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// `internal`: a fault of this server; the details are in its log.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// `store_unavailable` (the object store failed; nothing was changed) or `sync_pending`
    /// (a write is kept locally and uploaded before the user is served again).
    #[response(status = 503)]
    Unavailable(ErrorBody),
    /// `insufficient_storage`: the server's own disk is full.
    #[response(status = 507)]
    InsufficientStorage(ErrorBody),
}

/// What running SQL may answer besides [`UserErrors`].
#[derive(utoipa::IntoResponses)]
#[expect(dead_code, reason = "a description of answers; never built")]
pub(crate) enum SqlErrors {
    /// `forbidden`: SQL outside the sandbox (ATTACH, transaction control, TEMP objects…).
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// `query_timeout`: the SQL ran past its time limit; nothing was changed.
    #[response(status = 408)]
    QueryTimeout(ErrorBody),
    /// `conflict`: another writer uploaded first (`sync.conflict = "strict"`).
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// `payload_too_large`: the request, a value or the answer is larger than a limit.
    #[response(status = 413)]
    PayloadTooLarge(ErrorBody),
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellar_engine::rusqlite::ffi;
    use cellar_engine::{UserId, Version};

    fn sqlite(code: std::os::raw::c_int) -> Error {
        Error::from(rusqlite::Error::SqliteFailure(ffi::Error::new(code), None))
    }

    #[test]
    fn codes_are_spelled_the_same_in_bodies_and_in_the_description() {
        use ErrorCode::*;
        for code in [
            BadRequest,
            SqlError,
            Unauthorized,
            Forbidden,
            NotFound,
            MethodNotAllowed,
            QueryTimeout,
            RequestTimeout,
            Conflict,
            PayloadTooLarge,
            Internal,
            StoreUnavailable,
            SyncPending,
            InsufficientStorage,
        ] {
            assert_eq!(
                serde_json::to_value(code).expect("serializes"),
                serde_json::Value::from(code.as_str())
            );
        }
    }

    #[test]
    fn engine_errors_map_to_the_codes_of_the_design() {
        let user = UserId::new("alice").expect("valid id");
        let cases = [
            (sqlite(ffi::SQLITE_AUTH), ErrorCode::Forbidden, 403),
            (
                Error::Forbidden {
                    what: "ATTACH".into(),
                },
                ErrorCode::Forbidden,
                403,
            ),
            (sqlite(ffi::SQLITE_INTERRUPT), ErrorCode::QueryTimeout, 408),
            (sqlite(ffi::SQLITE_CONSTRAINT), ErrorCode::SqlError, 400),
            (sqlite(ffi::SQLITE_TOOBIG), ErrorCode::PayloadTooLarge, 413),
            (
                sqlite(ffi::SQLITE_FULL),
                ErrorCode::InsufficientStorage,
                507,
            ),
            (sqlite(ffi::SQLITE_IOERR), ErrorCode::Internal, 500),
            (
                Error::Io {
                    path: "/srv/cellar/alice/database.sqlite".into(),
                    source: std::sync::Arc::new(std::io::Error::from_raw_os_error(28)),
                },
                ErrorCode::InsufficientStorage,
                507,
            ),
            (
                Error::Conflict {
                    user: user.clone(),
                    expected: Version::new(1),
                    found: Version::new(2),
                },
                ErrorCode::Conflict,
                409,
            ),
            (
                Error::Inconsistent {
                    user: user.clone(),
                    detail: "bad checksum".into(),
                },
                ErrorCode::StoreUnavailable,
                503,
            ),
            (
                Error::LimitExceeded {
                    what: "result rows",
                    limit: 3,
                },
                ErrorCode::BadRequest,
                400,
            ),
            (Error::Config("nope".into()), ErrorCode::Internal, 500),
            (
                Error::Internal {
                    what: "a blocking task panicked".into(),
                },
                ErrorCode::Internal,
                500,
            ),
            (
                Error::work_message("the caller's own failure"),
                ErrorCode::BadRequest,
                400,
            ),
        ];
        for (err, code, status) in cases {
            let api = ApiError::from(err);
            assert_eq!(api.code(), code, "{api}");
            assert_eq!(api.code().status().as_u16(), status);
        }
    }

    #[test]
    fn store_failures_are_told_in_words_without_keys_or_client_settings() {
        let user = UserId::new("alice").expect("valid id");
        let store = cellar_engine::store::StoreError::unavailable(
            "get",
            "cellar-users/alice/database.sqlite",
            "Generic S3 error: max_retries: 4, retry_timeout: 20s, endpoint http://10.0.0.9",
        );
        let cases = [
            Error::Store(store.clone()),
            Error::SyncPending {
                user: user.clone(),
                version: Version::new(3),
                source: store.clone(),
            },
            Error::EarlierWritePending {
                user: user.clone(),
                version: Version::new(3),
                source: store,
            },
        ];
        for err in cases {
            let api = ApiError::from(err);
            for secret in ["cellar-users", "database.sqlite", "max_retries", "10.0.0.9"] {
                assert!(!api.message().contains(secret), "{}", api.message());
            }
        }
    }

    #[test]
    fn internal_errors_do_not_leak_details() {
        let api = ApiError::from(Error::Config("secret path /etc/x".into()));
        assert!(!api.message().contains("/etc/x"), "{}", api.message());
    }
}
