//! The database-sync layer (the seed's `DatabaseSyncMiddleware`): a request's path through
//! the engine, as a tower layer.
//!
//! ```text
//! request ─► engine.begin(user)       version-compare-on-start: download if the bucket is newer
//!         ─► handler, with a [`Db`]   the request's SQL, through the TrackedConnection
//!         ─► success?  commit          write-batched: ONE upload if it wrote, version + 1
//!            failure?  drop            rolled back, nothing uploaded
//!         ─► `Cellar-Version: N` on the response
//! ```
//!
//! The layer commits through the same [`cellar_engine::Session`] as `POST /v1/query`
//! ([`cellar_engine::Engine::transact`]): the same pacing, durability and conflict policies.
//! A request whose body the layer keeps (always under `sync.conflict = "rebase"`, at most
//! `max_body_bytes`; otherwise when its length is known and within that bound) can run
//! again, and so takes part in group commit: `/v1/query` work queued for the user while
//! the handler ran joins its transaction and rides on its one upload
//! ([`cellar_engine::Session::commit_in_group`]). The handler runs again on a lost conflict
//! under `rebase` ([`cellar_engine::Engine::may_rebase`] bounds the tries), and when a
//! queued piece that joined made SQLite roll back the whole transaction. A request whose
//! body streams past the bound commits alone. Uploads run as tasks of their own, so a
//! client that hangs up cannot cut one in half.
//!
//! The v1 API does not use this layer; it is for handlers of your own (see the crate docs
//! and `examples/projects.rs`).

mod db;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use cellar_engine::{ConflictPolicy, Engine, UserId, Version};
use futures::future::BoxFuture;
use http::request::Parts;
use http::{HeaderName, HeaderValue};
use tower::{Layer, Service, ServiceExt};

pub use db::Db;

use crate::error::{ApiError, ErrorCode};
use crate::options::Limits;

/// The header carrying the version of the caller's database a response reflects.
pub const CELLAR_VERSION: HeaderName = HeaderName::from_static("cellar-version");

/// Sets `Cellar-Version` on a response.
pub(crate) fn set_version(response: &mut Response, version: Version) {
    response
        .headers_mut()
        .insert(CELLAR_VERSION, HeaderValue::from(version.get()));
}

/// A tower layer that syncs the caller's database in before the handler and out after it.
///
/// It needs the caller's [`UserId`] as a request extension: put
/// [`crate::UserContextLayer`] outside it (with axum, `.layer(sync).layer(user_context)`).
#[derive(Clone)]
pub struct DatabaseSyncLayer {
    shared: Arc<SyncShared>,
}

/// What every request through one layer shares.
pub(crate) struct SyncShared {
    engine: Engine,
    limits: Limits,
}

impl DatabaseSyncLayer {
    /// Syncs through `engine`; `limits` gives the SQL run time, and the largest body kept
    /// to run a request again and the time it may take to arrive.
    pub fn new(engine: Engine, limits: &Limits) -> Self {
        Self {
            shared: Arc::new(SyncShared {
                engine,
                limits: limits.clone(),
            }),
        }
    }
}

impl<S> Layer<S> for DatabaseSyncLayer {
    type Service = DatabaseSync<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DatabaseSync {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service [`DatabaseSyncLayer`] wraps around a route.
#[derive(Clone)]
pub struct DatabaseSync<S> {
    inner: S,
    shared: Arc<SyncShared>,
}

impl<S> Service<Request> for DatabaseSync<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    /// Always ready: each request drives its own clone of the inner service to readiness.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let inner = self.inner.clone();
        let shared = Arc::clone(&self.shared);
        Box::pin(async move { Ok(shared.handle(inner, request).await) })
    }
}

impl SyncShared {
    async fn handle<S>(self: Arc<Self>, inner: S, request: Request) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send,
    {
        let Some(user) = request.extensions().get::<UserId>().cloned() else {
            return ApiError::internal("DatabaseSyncLayer needs UserContextLayer in front of it")
                .into_response();
        };
        let rebases = self.engine.config().conflict == ConflictPolicy::Rebase;
        let mut replays = match Replays::new(request, rebases, &self.limits).await {
            Ok(replays) => replays,
            Err(err) => return err.into_response(),
        };
        let in_group = replays.again();
        let mut tries = 0;
        while let Some(request) = replays.next() {
            tries += 1;
            let attempt = self.attempt(inner.clone(), request, &user, tries, in_group);
            if let Some(response) = attempt.await {
                return response;
            }
        }
        ApiError::internal("a request whose body was not kept was asked to run again")
            .into_response()
    }

    /// One run of the handler in one session (`in_group`: it may run again, so it takes
    /// queued work in). `None`: it must run again.
    async fn attempt<S>(
        self: &Arc<Self>,
        inner: S,
        mut request: Request,
        user: &UserId,
        tries: u32,
        in_group: bool,
    ) -> Option<Response>
    where
        S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
        S::Future: Send,
    {
        let session = match self.engine.begin(user).await {
            Ok(session) => session,
            Err(err) => return Some(ApiError::from(err).into_response()),
        };
        let db = Db::open(
            session,
            self.engine.may_rebase(tries),
            in_group,
            Arc::clone(self),
        );
        request.extensions_mut().insert(db.clone());
        let response = match inner.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        db.finish(response).await
    }
}

/// The request, once or as many times as a rebase needs it.
enum Replays {
    Once(Option<Request>),
    Buffered { parts: Parts, body: Bytes },
}

impl Replays {
    /// Keeps the body when `rebases` (refusing one past `max_body_bytes`) or when its
    /// length is known and within that bound.
    async fn new(request: Request, rebases: bool, limits: &Limits) -> Result<Self, ApiError> {
        let known = axum::body::HttpBody::size_hint(request.body()).exact();
        let fits = known.is_some_and(|len| len <= limits.max_body_bytes as u64);
        if !rebases && !fits {
            return Ok(Self::Once(Some(request)));
        }
        let (parts, body) = request.into_parts();
        let body = read_body(body, limits).await?;
        Ok(Self::Buffered { parts, body })
    }

    /// True when the request can run more than once.
    fn again(&self) -> bool {
        matches!(self, Self::Buffered { .. })
    }

    fn next(&mut self) -> Option<Request> {
        match self {
            Self::Once(request) => request.take(),
            Self::Buffered { parts, body } => {
                Some(Request::from_parts(parts.clone(), Body::from(body.clone())))
            }
        }
    }
}

/// Reads a whole request body, at most `limits.max_body_bytes` (413 beyond) within
/// `limits.body_read_timeout` (408 `request_timeout` after); a body cut off by the client
/// answers 400.
pub(crate) async fn read_body(body: Body, limits: &Limits) -> Result<Bytes, ApiError> {
    let limit = limits.max_body_bytes;
    let deadline = limits.body_read_timeout;
    let read = tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await;
    let Ok(read) = read else {
        return Err(ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "the request body did not arrive whole within {} s",
                deadline.as_secs_f64()
            ),
        ));
    };
    read.map_err(|err| {
        let too_large = std::error::Error::source(&err)
            .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::payload_too_large(format!("the request body is larger than {limit} bytes"))
        } else {
            ApiError::bad_request(format!("could not read the request body: {err}"))
        }
    })
}
