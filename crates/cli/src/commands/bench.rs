//! `cellar bench`: a load generator for a running server's HTTP API (docs/benchmarks.md).
//!
//! Three phases: set every user up (its tables, its database grown to `--preload-bytes`,
//! then `--preload-writes` one-row updates);
//! read the server's `/metrics`; run the measured requests from `--concurrency` workers;
//! read `/metrics` again. The report gives throughput, the latency of successful requests,
//! errors by code, and what syncing cost in between (uploads, bytes moved, conflicts).
//!
//! - `api`: the HTTP client (`POST /v1/query` as a user, `GET /metrics`).
//! - `workload`: the SQL of each phase and which requests write.
//! - `report`: counting while measuring, and the report in text or JSON.

mod api;
mod report;
mod workload;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cellar_engine::UserId;
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::cli::BenchArgs;
use crate::exit::Exit;
use crate::output::Output;
use api::{Acknowledged, Api};
use hdrhistogram::Histogram;
use report::{Report, Setup, Tally, empty_histogram};

/// How long to measure when neither `--duration` nor `--requests` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Sets the users up, measures, and reports.
pub async fn run(args: BenchArgs, output: Output) -> anyhow::Result<Exit> {
    let users = user_ids(&args)?;
    let api = Api::new(&args.url, args.concurrency)?;
    let empty = empty_histogram()?;
    let setup = set_up(&api, &users, &args, &empty).await?;
    let before = api.counters().await?;
    let (tally, elapsed) = measure(&api, &users, &args, &empty).await;
    let store = api.counters().await?.since(&before);
    output.report(&Report::new(&args, setup, tally, elapsed, store))?;
    Ok(Exit::Success)
}

/// `PREFIX-0` .. `PREFIX-(N-1)`.
fn user_ids(args: &BenchArgs) -> anyhow::Result<Vec<UserId>> {
    (0..args.users)
        .map(|i| Ok(UserId::new(format!("{}-{i}", args.user_prefix))?))
        .collect()
}

/// Prepares every user, `--concurrency` at a time; fails on the first user that cannot be.
async fn set_up(
    api: &Api,
    users: &[UserId],
    args: &BenchArgs,
    empty: &Histogram<u64>,
) -> anyhow::Result<Setup> {
    let started = Instant::now();
    let first_requests = stream::iter(users)
        .map(|user| async move {
            let first = workload::prepare(api, user, args.preload_bytes).await?;
            workload::preload_writes(api, user, args.preload_writes).await?;
            anyhow::Ok(first)
        })
        .buffer_unordered(in_flight(args))
        .try_collect::<Vec<_>>()
        .await?;
    Ok(Setup::new(started.elapsed(), &first_requests, empty))
}

/// When the measured phase stops.
enum Bound {
    /// After this many requests.
    Requests(u64),
    /// At this instant (requests in flight then still finish and count).
    Until(Instant),
}

impl Bound {
    fn of(args: &BenchArgs) -> Self {
        match (args.requests, args.duration) {
            (Some(n), _) => Bound::Requests(n),
            (None, secs) => {
                Bound::Until(Instant::now() + secs.map_or(DEFAULT_DURATION, Duration::from_secs))
            }
        }
    }

    /// True when request number `k` (from 0) is still to be sent.
    fn allows(&self, k: u64) -> bool {
        match self {
            Bound::Requests(n) => k < *n,
            Bound::Until(end) => Instant::now() < *end,
        }
    }
}

/// Runs the measured requests: request `k` goes to user `k mod N`, and writes when
/// [`workload::is_write`] says so. Returns the merged tally and the wall time.
async fn measure(
    api: &Api,
    users: &[UserId],
    args: &BenchArgs,
    empty: &Histogram<u64>,
) -> (Tally, Duration) {
    let bound = Bound::of(args);
    let next = AtomicU64::new(0);
    let started = Instant::now();
    let worker = || async {
        let mut tally = Tally::new(empty);
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            if !bound.allows(k) {
                return tally;
            }
            let user = &users[(k % users.len() as u64) as usize];
            let write = workload::is_write(k, args.write_ratio);
            let body = if write {
                workload::write(k)
            } else {
                workload::read(k)
            };
            let sent = Instant::now();
            let outcome = api.query::<Acknowledged>(user, &body).await;
            tally.record(write, sent.elapsed(), outcome);
        }
    };
    let tallies = futures::future::join_all((0..in_flight(args)).map(|_| worker())).await;
    let elapsed = started.elapsed();
    (
        tallies.into_iter().fold(Tally::new(empty), Tally::merge),
        elapsed,
    )
}

fn in_flight(args: &BenchArgs) -> usize {
    usize::try_from(args.concurrency).unwrap_or(usize::MAX)
}
