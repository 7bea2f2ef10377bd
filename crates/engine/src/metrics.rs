//! Counters and latency histograms the engine keeps; the server renders them for Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; LATENCY_BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket (as Prometheus wants them), the sum in seconds, the count.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let mut running = 0;
        let buckets = LATENCY_BUCKETS
            .iter()
            .zip(&self.counts)
            .map(|(bound, count)| {
                running += count.load(Ordering::Relaxed);
                (*bound, running)
            })
            .collect();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (buckets, sum, self.count.load(Ordering::Relaxed))
    }
}

/// What the engine has done since it started.
#[derive(Debug, Default)]
pub struct EngineMetrics {
    /// Snapshots uploaded.
    pub uploads: AtomicU64,
    /// Bytes uploaded.
    pub bytes_uploaded: AtomicU64,
    /// Snapshots downloaded.
    pub downloads: AtomicU64,
    /// Bytes downloaded.
    pub bytes_downloaded: AtomicU64,
    /// Conflicts detected (any policy).
    pub conflicts: AtomicU64,
    /// Uploads that failed and were kept pending.
    pub pending_uploads: AtomicU64,
    /// Time spent on the version check at request start.
    pub sync_in_latency: Histogram,
    /// Time spent uploading.
    pub upload_latency: Histogram,
}

impl EngineMetrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
