//! The engine's error type: what happened, and (through [`ErrorKind`]) what a caller should do.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::user::{InvalidUserId, UserId};
use crate::version::Version;

/// Everything that can go wrong in the engine. Cheap to clone (sources are shared), so
/// that every request of a group that failed together gets the same error.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// A user id failed validation; nothing was touched.
    #[error("invalid user id \"{input}\": {reason}")]
    InvalidUserId {
        /// The offending input, escaped and shortened.
        input: String,
        /// Which rule it broke.
        reason: &'static str,
    },

    /// Another writer uploaded after this request's version check (strict mode, or
    /// rebase/last-write-wins after their bounded retries). The losing database is kept
    /// aside in the user's folder.
    #[error(
        "conflict for user {user}: this request started from version {expected}, \
         but version {found} was uploaded meanwhile"
    )]
    Conflict {
        /// Whose database.
        user: UserId,
        /// The version the request had seen.
        expected: Version,
        /// The version found in the bucket.
        found: Version,
    },

    /// The write is committed to a local pending-upload record, not yet to the bucket.
    /// It is uploaded before this user is served again.
    #[error(
        "the write for user {user} is kept locally as version {version} and is pending \
         upload; the store failed: {source}"
    )]
    SyncPending {
        /// Whose database.
        user: UserId,
        /// The version the pending upload will carry.
        version: Version,
        /// Why the upload failed.
        source: StoreError,
    },

    /// An earlier write of this user is still pending upload and the store still fails:
    /// this request was NOT run and changed nothing (send it again later).
    #[error(
        "an earlier write for user {user} (version {version}) is still pending upload, so \
         this request was not run and changed nothing; the store failed: {source}"
    )]
    EarlierWritePending {
        /// Whose database.
        user: UserId,
        /// The version of the earlier, pending write.
        version: Version,
        /// Why its upload failed again.
        source: StoreError,
    },

    /// The object store failed; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// SQL failed (syntax, constraint, refused by an authorizer, interrupted...).
    #[error("SQL error: {0}")]
    Sql(Arc<rusqlite::Error>),

    /// The SQL sandbox refused part of a statement.
    #[error("refused by the SQL sandbox: {what}")]
    Forbidden {
        /// What was refused, and why.
        what: String,
    },

    /// A request went past one of its limits.
    #[error("limit exceeded: more than {limit} {what}")]
    LimitExceeded {
        /// Which limit.
        what: &'static str,
        /// Its value.
        limit: u64,
    },

    /// The request's results would be larger than the answer may be.
    #[error(
        "the results are larger than {limit} bytes, the most one answer may hold; select \
         fewer rows or columns, or read them in pages"
    )]
    ResponseTooLarge {
        /// The limit, in bytes.
        limit: u64,
    },

    /// Local disk I/O failed.
    #[error("local storage error at {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: Arc<std::io::Error>,
    },

    /// The store returned something Cellar's own checks reject: a body that does not
    /// match its checksum, missing metadata, or a version older than one already seen.
    #[error("the store returned an inconsistent object for user {user}: {detail}")]
    Inconsistent {
        /// Whose database.
        user: UserId,
        /// What exactly was wrong, with the evidence.
        detail: String,
    },

    /// The version asked for is not in the user's history (never written, or past the
    /// retention window).
    #[error("user {user} has no {wanted} in its history: {reason}")]
    NoSuchVersion {
        /// Whose database.
        user: UserId,
        /// What was asked for ("version 9", "version at or before …").
        wanted: String,
        /// What the history holds instead.
        reason: String,
    },

    /// The configuration asks for something this store cannot do safely.
    #[error("unsafe configuration: {0}")]
    Config(String),

    /// The request's own work failed with an error of the caller's.
    #[error("{0}")]
    Work(Arc<dyn std::error::Error + Send + Sync>),

    /// A fault of the engine itself, not of the caller's input nor of the store: a task
    /// that panicked, a connection lost with it. Nothing was changed.
    #[error("internal error: {what}")]
    Internal {
        /// What failed.
        what: String,
    },
}

/// What a caller should do about an [`Error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Fix the input (bad user id, bad SQL).
    InvalidInput,
    /// Don't: the SQL sandbox refuses it.
    Forbidden,
    /// Ask for something that exists (a version outside the history).
    NotFound,
    /// Start again from the newer version.
    Conflict,
    /// Retry later: the store is down; nothing was changed.
    Unavailable,
    /// Retry later: the write is kept locally and will be uploaded.
    SyncPending,
    /// The store holds data that fails Cellar's checks (a checksum, missing metadata, a
    /// version older than one already seen); it was not used. Retry later, and tell the
    /// operator if it persists.
    Data,
    /// Retry later: the disk under the server's data dir is full; the request was not
    /// completed (nothing acknowledged is lost).
    DiskFull,
    /// Not the caller's fault and not retryable as is.
    Internal,
}

impl Error {
    /// Classifies the error for callers (the HTTP layer maps this to a status).
    pub fn kind(&self) -> ErrorKind {
        if self.is_disk_full() {
            return ErrorKind::DiskFull;
        }
        match self {
            Error::InvalidUserId { .. }
            | Error::Sql(_)
            | Error::Work(_)
            | Error::LimitExceeded { .. }
            | Error::ResponseTooLarge { .. } => ErrorKind::InvalidInput,
            Error::Forbidden { .. } => ErrorKind::Forbidden,
            Error::NoSuchVersion { .. } => ErrorKind::NotFound,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::SyncPending { .. } | Error::EarlierWritePending { .. } => ErrorKind::SyncPending,
            Error::Store(_) => ErrorKind::Unavailable,
            Error::Inconsistent { .. } => ErrorKind::Data,
            Error::Io { .. } | Error::Config(_) | Error::Internal { .. } => ErrorKind::Internal,
        }
    }

    /// No space left on the local disk: SQLite's `SQLITE_FULL`, or `ENOSPC`/`EDQUOT` from
    /// the file system.
    fn is_disk_full(&self) -> bool {
        match self {
            Error::Sql(sql) => sql.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull),
            Error::Io { source, .. } => {
                source.kind() == std::io::ErrorKind::StorageFull
                    || source.kind() == std::io::ErrorKind::QuotaExceeded
            }
            _ => false,
        }
    }

    /// The caller's own failure, carried through the engine (see [`Error::Work`]).
    pub fn work(err: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Work(Arc::new(err))
    }

    /// The caller's own failure, told in words.
    pub fn work_message(message: impl Into<String>) -> Error {
        let boxed: Box<dyn std::error::Error + Send + Sync> = message.into().into();
        Error::Work(Arc::from(boxed))
    }

    /// A fault of the engine itself ([`Error::Internal`]).
    pub(crate) fn internal(what: impl std::fmt::Display) -> Error {
        Error::Internal {
            what: what.to_string(),
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            path,
            source: Arc::new(source),
        }
    }
}

impl From<InvalidUserId> for Error {
    fn from(err: InvalidUserId) -> Self {
        Error::InvalidUserId {
            input: err.input,
            reason: err.reason,
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        Error::Sql(Arc::new(err))
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A store operation failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The write's precondition failed: someone else wrote the object first.
    #[error("conditional write refused for {key}: the object changed since it was read")]
    PreconditionFailed {
        /// The key written.
        key: String,
    },
    /// The store could not be reached or answered with an error.
    #[error("object store unavailable ({operation} {key}): {message}")]
    Unavailable {
        /// What was attempted (`get`, `put`, ...).
        operation: &'static str,
        /// The key concerned.
        key: String,
        /// The underlying error, rendered.
        message: String,
    },
}

impl StoreError {
    /// Builds an [`StoreError::Unavailable`].
    pub fn unavailable(operation: &'static str, key: &str, message: impl fmt::Display) -> Self {
        StoreError::Unavailable {
            operation,
            key: key.to_owned(),
            message: message.to_string(),
        }
    }
}

/// A delta failure as the engine's error: SQLite and disk errors as such, anything about
/// the change's bytes or checksums as data that failed Cellar's checks.
pub(crate) fn delta_error(
    user: &UserId,
    path: &std::path::Path,
    err: crate::delta::DeltaError,
) -> Error {
    match err {
        crate::delta::DeltaError::Sql(err) => Error::from(err),
        crate::delta::DeltaError::Io(err) => Error::io(path)(err),
        other => Error::Inconsistent {
            user: user.clone(),
            detail: format!("a change of the log: {other}"),
        },
    }
}
