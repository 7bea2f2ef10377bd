//! What a server is told at start: how callers prove who they are, and how much one request
//! may ask for.

use std::time::Duration;

/// How the user-context layer learns who is calling (DESIGN §5, "Identity").
#[derive(Clone, PartialEq, Eq)]
pub enum AuthMode {
    /// Trust the `X-User-Id` header. Anyone who can reach the server can claim any user, so
    /// this is only for loopback, or behind a proxy that sets the header itself.
    Header {
        /// The operator says a trusted proxy sets `X-User-Id`: allows a non-loopback address
        /// (see [`crate::check_listen_address`]).
        trusted_proxy: bool,
    },
    /// Verify `Authorization: Bearer <token>`: an HS256 JWT whose `sub` is the user id and
    /// whose `exp` has not passed.
    Jwt {
        /// The shared HMAC secret tokens are signed with.
        secret: String,
    },
}

impl std::fmt::Debug for AuthMode {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthMode::Header { trusted_proxy } => f
                .debug_struct("Header")
                .field("trusted_proxy", trusted_proxy)
                .finish(),
            AuthMode::Jwt { .. } => f.debug_struct("Jwt").finish_non_exhaustive(),
        }
    }
}

/// Bounds on one request, so that no caller can take the server down (DESIGN §6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body accepted (413 `payload_too_large` beyond). Default 1 MiB.
    pub max_body_bytes: usize,
    /// Most statements in one `POST /v1/query` (413 beyond). Default 100.
    pub max_statements: usize,
    /// Longest SQL text of one statement, in bytes (413 beyond). Default 100 KiB.
    pub max_sql_bytes: usize,
    /// Most rows one statement may return (400 beyond). Default 10 000.
    pub max_result_rows: usize,
    /// Most bytes the results of one `POST /v1/query` may take in its answer, counted while
    /// the rows are produced (413 `payload_too_large` beyond). Rows times the largest value
    /// would otherwise allow answers of gigabytes. Default 32 MiB.
    pub max_response_bytes: usize,
    /// How long a request's SQL may run before it is interrupted (408 `query_timeout`).
    /// Default 5 s.
    pub query_timeout: Duration,
    /// How long a request body may take to arrive whole once its head is in (408
    /// `request_timeout`): a client that trickles its body must not hold a connection and
    /// a buffer for ever. Default 30 s.
    pub body_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_statements: 100,
            max_sql_bytes: 100 * 1024,
            max_result_rows: 10_000,
            max_response_bytes: 32 * 1024 * 1024,
            query_timeout: Duration::from_secs(5),
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Everything [`crate::router`] and [`crate::serve()`] need besides the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerOptions {
    /// How callers are identified.
    pub auth: AuthMode,
    /// Per-request bounds.
    pub limits: Limits,
    /// How long a connection may take to send a complete request head, the first one or
    /// the next on a keep-alive connection; then it is closed, so idle sockets cannot hold
    /// the server's open files and connection slots. Default 10 s.
    pub header_read_timeout: Duration,
    /// Most connections open at once, WebSockets included; one more is closed as soon as it
    /// is accepted, so the server never runs out of open files. Default 1 024.
    pub max_connections: usize,
    /// How long a write to a client may stay blocked (the client reads nothing while an
    /// answer waits to be sent); then the connection is closed, so a client that never
    /// reads cannot hold its slot, its answer and the file behind it. Default 30 s.
    pub write_stall_timeout: Duration,
    /// Serve the end-user demo app at `/demo` (`server.demo`). Off by default: it is a
    /// showcase, and with it off `/demo` is an unknown route like any other.
    pub demo: bool,
    /// The operator's token (`auth.admin_token`): with it, the dashboard at `/ui` and the
    /// admin API under `/v1/admin/` are served; without it (the default) they are unknown
    /// routes. With it, building the router starts the dashboard's background work (its
    /// event feed, a sample every second), so it must be built inside a Tokio runtime.
    pub admin_token: Option<AdminToken>,
}

impl Default for ServerOptions {
    /// Header auth (loopback only) and the default limits: the embedded default of DESIGN §7.
    fn default() -> Self {
        Self {
            auth: AuthMode::Header {
                trusted_proxy: false,
            },
            limits: Limits::default(),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            write_stall_timeout: Duration::from_secs(30),
            demo: false,
            admin_token: None,
        }
    }
}

/// The operator's bearer token for the dashboard and the admin API: an identity apart from
/// every user's, so that no user token, however it was issued, can read other users' data.
/// `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

/// Why a text cannot be the admin token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAdminToken {
    /// Short enough to be guessed.
    #[error("an admin token needs at least {} bytes", AdminToken::MIN_BYTES)]
    TooShort,
    /// It could not travel in an `Authorization` header.
    #[error("an admin token is visible ASCII only (no spaces or control characters)")]
    NotVisibleAscii,
}

impl AdminToken {
    /// Fewer bytes than a SHA-256 output would make the token the weakest secret around.
    pub const MIN_BYTES: usize = 32;

    /// Checks `token`: at least [`Self::MIN_BYTES`] of visible ASCII.
    pub fn new(token: impl Into<String>) -> Result<Self, InvalidAdminToken> {
        let token = token.into();
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidAdminToken::NotVisibleAscii);
        }
        if token.len() < Self::MIN_BYTES {
            return Err(InvalidAdminToken::TooShort);
        }
        Ok(Self(token))
    }

    /// The token's bytes, for the constant-time comparison.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}
