//! The server's own vital signs for the dashboard's plots, sampled once a second and kept
//! for the last minutes: each sample is what changed since the one before, so nothing needs
//! Prometheus to read it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// How often a sample is taken.
pub(super) const EVERY: Duration = Duration::from_secs(1);
/// Samples kept: five minutes.
const KEPT: usize = 300;

/// What the server did in one interval, per second.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(super) struct Sample {
    /// When it was taken (Unix time, milliseconds).
    at_ms: i64,
    /// Requests answered per second, by status class.
    requests: ByClass,
    /// Database snapshots uploaded per second.
    uploads: f64,
    /// Bytes uploaded per second.
    bytes_up: f64,
    /// Bytes downloaded per second.
    bytes_down: f64,
    /// Median request latency in milliseconds (interpolated in the latency histogram's
    /// bucket); `null` when no request was answered.
    p50_ms: Option<f64>,
    /// 99th-percentile request latency in milliseconds; `null` when no request was answered.
    p99_ms: Option<f64>,
    /// Uploads per second that found another writer first.
    conflicts: f64,
    /// Users' databases warm in the cache when the sample was taken.
    cached_databases: u64,
}

/// Requests per second by the first digit of their status.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub(super) struct ByClass {
    /// 1xx: WebSocket handshakes.
    #[serde(rename = "1xx")]
    informational: f64,
    /// 2xx.
    #[serde(rename = "2xx")]
    success: f64,
    /// 3xx.
    #[serde(rename = "3xx")]
    redirection: f64,
    /// 4xx.
    #[serde(rename = "4xx")]
    client_error: f64,
    /// 5xx.
    #[serde(rename = "5xx")]
    server_error: f64,
}

/// The samples of the last minutes, oldest first.
#[derive(Default)]
pub(super) struct Stats {
    samples: Mutex<VecDeque<Sample>>,
}

impl Stats {
    /// The samples kept, oldest first.
    pub(super) fn samples(&self) -> Vec<Sample> {
        self.kept().iter().cloned().collect()
    }

    /// Takes a sample every [`EVERY`] until `stop` resolves.
    pub(super) async fn sample_until(&self, app: &AppState, stop: impl Future<Output = ()>) {
        let mut ticks = tokio::time::interval(EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut stop = std::pin::pin!(stop);
        let mut before = Reading::of(app);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = &mut stop => return,
            }
            let now = Reading::of(app);
            let sample = now.since(&before, app.engine.cached_databases() as u64);
            before = now;
            let mut samples = self.kept();
            if samples.len() == KEPT {
                samples.pop_front();
            }
            samples.push_back(sample);
        }
    }

    fn kept(&self) -> MutexGuard<'_, VecDeque<Sample>> {
        self.samples.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The counters at one instant.
struct Reading {
    at: Instant,
    /// Requests answered by status class (index: first digit − 1).
    requests: [u64; 5],
    uploads: u64,
    bytes_up: u64,
    bytes_down: u64,
    conflicts: u64,
    /// The latency histogram's cumulative buckets and its count.
    latency: (Vec<(f64, u64)>, u64),
}

impl Reading {
    fn of(app: &AppState) -> Self {
        let mut requests = [0; 5];
        for ((_, status), count) in app.http.snapshot() {
            if let Some(class) = requests.get_mut(usize::from(status / 100).wrapping_sub(1)) {
                *class += count;
            }
        }
        let engine = app.engine.metrics();
        let (buckets, _, count) = app.http.latency.snapshot();
        Self {
            at: Instant::now(),
            requests,
            uploads: engine.uploads.load(Ordering::Relaxed),
            bytes_up: engine.bytes_uploaded.load(Ordering::Relaxed),
            bytes_down: engine.bytes_downloaded.load(Ordering::Relaxed),
            conflicts: engine.conflicts.load(Ordering::Relaxed),
            latency: (buckets, count),
        }
    }

    /// The rates from `before` to this reading.
    fn since(&self, before: &Reading, cached_databases: u64) -> Sample {
        let seconds = self.at.duration_since(before.at).as_secs_f64().max(1e-3);
        let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / seconds;
        let class = |i: usize| rate(self.requests[i], before.requests[i]);
        let answered = self.latency.1.saturating_sub(before.latency.1);
        let quantile = |q| quantile(&before.latency.0, &self.latency.0, answered, q);
        Sample {
            at_ms: Utc::now().timestamp_millis(),
            requests: ByClass {
                informational: class(0),
                success: class(1),
                redirection: class(2),
                client_error: class(3),
                server_error: class(4),
            },
            uploads: rate(self.uploads, before.uploads),
            bytes_up: rate(self.bytes_up, before.bytes_up),
            bytes_down: rate(self.bytes_down, before.bytes_down),
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            conflicts: rate(self.conflicts, before.conflicts),
            cached_databases,
        }
    }
}

/// The `q` quantile, in milliseconds, of the `count` observations made between two
/// snapshots of a cumulative histogram, interpolated linearly inside its bucket (as
/// Prometheus' `histogram_quantile` does); observations beyond the last bucket count as its
/// bound.
fn quantile(before: &[(f64, u64)], after: &[(f64, u64)], count: u64, q: f64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let rank = q * count as f64;
    let (mut lower, mut below) = (0.0, 0);
    for ((bound, now), (_, then)) in after.iter().zip(before) {
        let cumulative = now.saturating_sub(*then);
        if cumulative as f64 >= rank {
            let inside = (cumulative - below).max(1) as f64;
            let fraction = (rank - below as f64) / inside;
            return Some((lower + (bound - lower) * fraction) * 1000.0);
        }
        (lower, below) = (*bound, cumulative);
    }
    Some(lower * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket_of_this_interval_only() {
        // Earlier intervals left 10 observations at ≤ 1 ms; this one adds 4 in (1, 2] ms.
        let before = [(0.001, 10), (0.002, 10), (0.004, 10)];
        let after = [(0.001, 10), (0.002, 14), (0.004, 14)];
        let p50 = quantile(&before, &after, 4, 0.5).expect("observed");
        assert!((p50 - 1.5).abs() < 1e-9, "{p50}");
        let p99 = quantile(&before, &after, 4, 0.99).expect("observed");
        assert!(p99 > 1.9 && p99 <= 2.0, "{p99}");
        assert_eq!(quantile(&before, &after, 0, 0.5), None);
    }

    #[test]
    fn observations_beyond_the_last_bucket_count_as_its_bound() {
        let before = [(0.001, 0), (0.002, 0)];
        let after = [(0.001, 0), (0.002, 0)];
        assert_eq!(quantile(&before, &after, 3, 0.5), Some(2.0));
    }
}
