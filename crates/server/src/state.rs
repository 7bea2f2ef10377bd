//! What the v1 API's handlers and middleware share: [`AppState`], with the request counts
//! that `GET /metrics` reports ([`HttpMetrics`]) and the [`Shutdown`] signal that
//! long-lived work watches. A leaf: it uses no other module of the server but `options`.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use cellar_engine::{Engine, Histogram};
use http::StatusCode;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::options::Limits;

/// What the handlers share.
pub(crate) struct AppState {
    pub engine: Engine,
    pub limits: Limits,
    /// Shared with the accept loop, which counts the connections it refuses.
    pub http: Arc<HttpMetrics>,
    pub shutdown: Shutdown,
}

/// Requests answered, by route and status, and how long they took.
#[derive(Debug, Default)]
pub(crate) struct HttpMetrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Time from a request's arrival to its answer's head (a WebSocket: to the handshake).
    pub latency: Histogram,
    /// Connections closed as soon as they were accepted: every slot was taken
    /// (`server.max_connections`).
    pub refused_connections: AtomicU64,
}

impl HttpMetrics {
    pub(crate) fn record(&self, route: &str, status: StatusCode) {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        *requests
            .entry((route.to_owned(), status.as_u16()))
            .or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> Vec<((String, u16), u64)> {
        let requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        requests
            .iter()
            .map(|(key, count)| (key.clone(), *count))
            .collect()
    }
}

/// What long-lived work (WebSockets) watches for shutdown.
#[derive(Clone, Debug)]
pub(crate) struct Shutdown {
    closing: watch::Receiver<bool>,
    tasks: TaskTracker,
}

impl Shutdown {
    /// A signal and the sender that raises it.
    pub(crate) fn new() -> (watch::Sender<bool>, Self) {
        let (sender, closing) = watch::channel(false);
        let tasks = TaskTracker::new();
        (sender, Self { closing, tasks })
    }

    /// A signal that never comes (a router served by someone else).
    pub(crate) fn never() -> Self {
        Self::new().1
    }

    /// Resolves once shutdown has begun; never, if nobody can begin it.
    pub(crate) async fn closing(&self) {
        let mut closing = self.closing.clone();
        if closing.wait_for(|closing| *closing).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Work that shutdown waits for.
    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_and_status() {
        let http = HttpMetrics::default();
        http.record("/v1/query", StatusCode::OK);
        http.record("/v1/query", StatusCode::OK);
        http.record("/v1/query", StatusCode::BAD_REQUEST);
        let counts = http.snapshot();
        assert_eq!(counts[0], (("/v1/query".to_owned(), 200), 2));
        assert_eq!(counts[1], (("/v1/query".to_owned(), 400), 1));
    }
}
