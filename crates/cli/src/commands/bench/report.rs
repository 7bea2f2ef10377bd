//! Counting while measuring, and what `cellar bench` prints.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::api::{Acknowledged, Counters, Failure};
use crate::cli::BenchArgs;
use crate::output::Report as Printable;

/// Latencies are recorded in microseconds, up to this (10 minutes), 3 significant digits.
const LONGEST_MICROS: u64 = 600_000_000;

/// An empty latency histogram in microseconds; the others are clones of it.
pub fn empty_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, LONGEST_MICROS, 3)?)
}

fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.clamp(1, LONGEST_MICROS));
}

/// What one worker saw.
pub struct Tally {
    /// Latency of successful requests.
    latency: Histogram<u64>,
    reads: u64,
    writes: u64,
    /// Successful writes whose answer said `wrote: true` (and so uploaded).
    acknowledged_writes: u64,
    errors: BTreeMap<String, u64>,
    /// The first error message of each code, to say what went wrong.
    examples: BTreeMap<String, String>,
}

impl Tally {
    /// Nothing counted yet; `empty` from [`empty_histogram`].
    pub fn new(empty: &Histogram<u64>) -> Self {
        Self {
            latency: empty.clone(),
            reads: 0,
            writes: 0,
            acknowledged_writes: 0,
            errors: BTreeMap::new(),
            examples: BTreeMap::new(),
        }
    }

    /// Counts one request.
    pub fn record(
        &mut self,
        write: bool,
        latency: Duration,
        outcome: Result<Acknowledged, Failure>,
    ) {
        match outcome {
            Ok(answer) => {
                record(&mut self.latency, latency);
                if write {
                    self.writes += 1;
                    self.acknowledged_writes += u64::from(answer.wrote);
                } else {
                    self.reads += 1;
                }
            }
            Err(Failure { code, message }) => {
                *self.errors.entry(code.clone()).or_default() += 1;
                self.examples.entry(code).or_insert(message);
            }
        }
    }

    /// Both tallies in one.
    pub fn merge(mut self, other: Tally) -> Tally {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.reads += other.reads;
        self.writes += other.writes;
        self.acknowledged_writes += other.acknowledged_writes;
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
        for (code, message) in other.examples {
            self.examples.entry(code).or_insert(message);
        }
        self
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

impl Latency {
    /// `None` when nothing was recorded.
    fn of(histogram: &Histogram<u64>) -> Option<Self> {
        let ms = |micros: u64| micros as f64 / 1000.0;
        (!histogram.is_empty()).then(|| Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p95: ms(histogram.value_at_quantile(0.95)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1000.0,
        })
    }
}

/// How the users were set up.
#[derive(Debug, Serialize)]
pub struct Setup {
    seconds: f64,
    /// Each user's first request: a cold start for users the server had not served yet.
    first_request_ms: Option<Latency>,
}

impl Setup {
    /// From the setup's wall time and each user's first-request latency.
    pub fn new(elapsed: Duration, first_requests: &[Duration], empty: &Histogram<u64>) -> Self {
        let mut latency = empty.clone();
        for first in first_requests {
            record(&mut latency, *first);
        }
        Self {
            seconds: elapsed.as_secs_f64(),
            first_request_ms: Latency::of(&latency),
        }
    }
}

/// What the server's sync did during the measured phase, from `/metrics`.
#[derive(Debug, Serialize)]
struct Store {
    uploads: u64,
    upload_bytes: u64,
    downloads: u64,
    download_bytes: u64,
    conflicts: u64,
    /// Uploads per acknowledged write (group commit makes this < 1).
    uploads_per_write: Option<f64>,
    /// Bytes uploaded per acknowledged write.
    upload_bytes_per_write: Option<f64>,
}

/// Requests of the measured phase.
#[derive(Debug, Serialize)]
struct Requests {
    /// Answered, successfully or not.
    total: u64,
    ok: u64,
    reads: u64,
    writes: u64,
    /// Failed requests by error code.
    errors: BTreeMap<String, u64>,
    /// One message per error code.
    error_examples: BTreeMap<String, String>,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    url: String,
    users: u64,
    concurrency: u64,
    write_ratio: f64,
    preload_bytes: u64,
    /// One-row updates per user after the preload, before measuring.
    preload_writes: u64,
    setup: Setup,
    requests: Requests,
    /// Wall time of the measured phase.
    seconds: f64,
    /// Successful requests per second.
    throughput: f64,
    /// Of successful requests.
    latency_ms: Option<Latency>,
    store: Store,
}

impl Report {
    /// Puts the pieces together.
    pub fn new(
        args: &BenchArgs,
        setup: Setup,
        tally: Tally,
        elapsed: Duration,
        counters: Counters,
    ) -> Self {
        let ok = tally.reads + tally.writes;
        let failed: u64 = tally.errors.values().sum();
        let per_write = |n: u64| {
            (tally.acknowledged_writes > 0).then(|| n as f64 / tally.acknowledged_writes as f64)
        };
        let seconds = elapsed.as_secs_f64();
        Self {
            url: args.url.clone(),
            users: args.users,
            concurrency: args.concurrency,
            write_ratio: args.write_ratio,
            preload_bytes: args.preload_bytes,
            preload_writes: args.preload_writes,
            setup,
            requests: Requests {
                total: ok + failed,
                ok,
                reads: tally.reads,
                writes: tally.writes,
                errors: tally.errors,
                error_examples: tally.examples,
            },
            seconds,
            throughput: if seconds > 0.0 {
                ok as f64 / seconds
            } else {
                0.0
            },
            latency_ms: Latency::of(&tally.latency),
            store: Store {
                uploads_per_write: per_write(counters.uploads),
                upload_bytes_per_write: per_write(counters.upload_bytes),
                uploads: counters.uploads,
                upload_bytes: counters.upload_bytes,
                downloads: counters.downloads,
                download_bytes: counters.download_bytes,
                conflicts: counters.conflicts,
            },
        }
    }
}

impl Printable for Report {
    fn to_text(&self) -> String {
        let r = &self.requests;
        let latency = |latency: &Option<Latency>| match latency {
            Some(l) => format!(
                "p50 {:.2}  p95 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}",
                l.p50, l.p95, l.p99, l.max, l.mean
            ),
            None => "no successful request".into(),
        };
        let errors = if r.errors.is_empty() {
            "none".to_owned()
        } else {
            r.errors
                .iter()
                .map(|(code, n)| {
                    format!(
                        "{code} {n} (e.g. {})",
                        r.error_examples.get(code).map_or("", String::as_str)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let s = &self.store;
        let per_write = |value: Option<f64>, unit: &str| {
            value.map_or(String::new(), |v| format!(" ({v:.3}{unit} per write)"))
        };
        [
            format!(
                "cellar bench {}: {} users, {} in flight, write ratio {}, preload {}{}",
                self.url,
                self.users,
                self.concurrency,
                self.write_ratio,
                bytes(self.preload_bytes),
                if self.preload_writes > 0 {
                    format!(" and {} writes", self.preload_writes)
                } else {
                    String::new()
                }
            ),
            format!(
                "setup       {:.2} s; first request per user (ms): {}",
                self.setup.seconds,
                latency(&self.setup.first_request_ms)
            ),
            format!(
                "requests    {} in {:.2} s: {} ok ({} reads, {} writes), {} failed",
                r.total,
                self.seconds,
                r.ok,
                r.reads,
                r.writes,
                r.total - r.ok
            ),
            format!("throughput  {:.1} requests/s", self.throughput),
            format!("latency ms  {}", latency(&self.latency_ms)),
            format!("errors      {errors}"),
            format!(
                "uploads     {}{}, {} uploaded{}",
                s.uploads,
                per_write(s.uploads_per_write, ""),
                bytes(s.upload_bytes),
                per_write(s.upload_bytes_per_write.map(|b| b / 1024.0), " KiB"),
            ),
            format!(
                "downloads   {}, {} downloaded; conflicts {}",
                s.downloads,
                bytes(s.download_bytes),
                s.conflicts
            ),
        ]
        .join("\n")
    }
}

/// `1.5 MiB`, `312 B`.
fn bytes(n: u64) -> String {
    let units = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    units.iter().find(|(_, size)| n >= *size).map_or_else(
        || format!("{n} B"),
        |(unit, size)| format!("{:.1} {unit}", n as f64 / *size as f64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_merge_counts_errors_by_code_and_latency() {
        let empty = empty_histogram().unwrap();
        let mut a = Tally::new(&empty);
        a.record(
            false,
            Duration::from_millis(1),
            Ok(Acknowledged { wrote: false }),
        );
        a.record(
            true,
            Duration::from_millis(3),
            Ok(Acknowledged { wrote: true }),
        );
        let mut b = Tally::new(&empty);
        let failure = || {
            Err(Failure {
                code: "sync_pending".into(),
                message: "kept".into(),
            })
        };
        b.record(true, Duration::from_millis(9), failure());
        b.record(true, Duration::from_millis(9), failure());
        let merged = a.merge(b);
        assert_eq!(
            (merged.reads, merged.writes, merged.acknowledged_writes),
            (1, 1, 1)
        );
        assert_eq!(merged.errors.get("sync_pending"), Some(&2));
        let latency = Latency::of(&merged.latency).unwrap();
        assert!(latency.p50 >= 0.99 && latency.max <= 3.01, "{latency:?}");
    }

    #[test]
    fn sizes_are_printed_in_binary_units() {
        assert_eq!(bytes(312), "312 B");
        assert_eq!(bytes(3 << 19), "1.5 MiB");
    }
}
