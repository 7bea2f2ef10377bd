//! `GET /metrics`: Prometheus text. HTTP requests by route and status, and their latency,
//! are counted here; everything about syncing comes from [`cellar_engine::EngineMetrics`].

use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cellar_engine::{Engine, Histogram};
use http::header::CONTENT_TYPE;

use crate::state::{AppState, HttpMetrics};

/// The route label of requests that matched no route.
const UNMATCHED: &str = "unmatched";

/// Middleware: counts every answer by its route pattern (never the raw path, whose user
/// ids or junk would make the label set unbounded).
pub(crate) async fn count(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    state.http.latency.observe(started.elapsed());
    state.http.record(&route, response.status());
    response
}

/// The handler.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Requests by route and status, and the engine's \
        sync counters and histograms", content_type = "text/plain",
        body = MetricsText))
)]
pub(crate) async fn render(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        exposition(&state.http, &state.engine),
    )
}

fn exposition(http: &HttpMetrics, engine: &Engine) -> String {
    let mut out = Exposition::default();
    out.family(
        "cellar_http_requests_total",
        "counter",
        "HTTP requests answered, by route and status.",
    );
    for ((route, status), count) in http.snapshot() {
        out.sample(
            "cellar_http_requests_total",
            &format!("route=\"{route}\",status=\"{status}\""),
            count,
        );
    }
    out.histogram(
        "cellar_http_request_seconds",
        "Time from a request's arrival to its answer's head.",
        &http.latency,
    );
    out.family(
        "cellar_http_connections_refused_total",
        "counter",
        "Connections closed at once because every slot was taken (server.max_connections).",
    );
    out.sample(
        "cellar_http_connections_refused_total",
        "",
        http.refused_connections.load(Ordering::Relaxed),
    );
    let m = engine.metrics();
    let counters: [(&str, &str, &AtomicU64); 6] = [
        (
            "cellar_uploads_total",
            "Database snapshots uploaded.",
            &m.uploads,
        ),
        (
            "cellar_upload_bytes_total",
            "Bytes uploaded.",
            &m.bytes_uploaded,
        ),
        (
            "cellar_downloads_total",
            "Database snapshots downloaded.",
            &m.downloads,
        ),
        (
            "cellar_download_bytes_total",
            "Bytes downloaded.",
            &m.bytes_downloaded,
        ),
        (
            "cellar_conflicts_total",
            "Uploads that found another writer first.",
            &m.conflicts,
        ),
        (
            "cellar_pending_uploads_total",
            "Uploads that failed and were kept pending.",
            &m.pending_uploads,
        ),
    ];
    for (name, help, counter) in counters {
        out.family(name, "counter", help);
        out.sample(name, "", counter.load(Ordering::Relaxed));
    }
    out.histogram(
        "cellar_sync_in_seconds",
        "Time spent on the version check at request start.",
        &m.sync_in_latency,
    );
    out.histogram(
        "cellar_upload_seconds",
        "Time spent uploading.",
        &m.upload_latency,
    );
    out.family(
        "cellar_cached_databases",
        "gauge",
        "Users' databases warm in the cache.",
    );
    out.sample("cellar_cached_databases", "", engine.cached_databases());
    out.0
}

/// The Prometheus text format, line by line.
#[derive(Default)]
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.0
            .push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl Display) {
        if labels.is_empty() {
            self.0.push_str(&format!("{name} {value}\n"));
        } else {
            self.0.push_str(&format!("{name}{{{labels}}} {value}\n"));
        }
    }

    fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        let (buckets, sum, count) = histogram.snapshot();
        self.family(name, "histogram", help);
        for (bound, cumulative) in buckets {
            self.sample(
                &format!("{name}_bucket"),
                &format!("le=\"{bound}\""),
                cumulative,
            );
        }
        self.sample(&format!("{name}_bucket"), "le=\"+Inf\"", count);
        self.sample(&format!("{name}_sum"), "", sum);
        self.sample(&format!("{name}_count"), "", count);
    }
}

/// Prometheus text exposition.
pub(crate) struct MetricsText;

impl utoipa::PartialSchema for MetricsText {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("Prometheus text format 0.0.4"))
            .into()
    }
}

impl utoipa::ToSchema for MetricsText {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histograms_end_with_inf_sum_and_count() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60));
        let mut out = Exposition::default();
        out.histogram("t_seconds", "test", &histogram);
        let text = out.0;
        assert!(
            text.contains("t_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("t_seconds_bucket{le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("t_seconds_count 2\n"), "{text}");
    }
}
