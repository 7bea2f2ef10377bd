//! The object store's own process killed and restarted under load: SeaweedFS behind the
//! built `cellar serve` (`store.timeout_ms = 1000`), concurrent clients appending to and
//! reading the lists of several users. SeaweedFS is SIGKILLed; the load goes on against
//! the dead store for a few seconds; SeaweedFS is started again on the same ports with
//! the same data dir ([`cellar_testkit::S3Server::crash`] and `restart`). SeaweedFS
//! because it keeps its data on disk; moto keeps it in memory and comes back empty.
//!
//! - while the store is down every failure is a clear 503, `store_unavailable` (nothing
//!   changed: the value is absent at the end) or `sync_pending` (kept: every version it
//!   announces as kept reaches the bucket), and the server itself stays up;
//! - once the store is back every user writes again within a bounded time;
//! - every acknowledged append is in the bucket at the end, once; every read saw every
//!   append acknowledged before it was sent; the server serves the bucket's lists; no
//!   pending upload is left; `cellar verify --all` passes.
//!
//! One outage by default; three with `CELLAR_RELIABILITY_FULL=1`.

#![cfg(unix)]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::{Duration, Instant};

use cellar_testkit::{S3Kind, S3Server};
use serde_json::json;
use support::api::{Api, Reply};
use support::checks::{self, Ledger, SharedLedger};
use support::load::{Limit, Load};
use support::server::Server;
use support::{Cellar, full_run, run_seed};

const USERS: [&str; 4] = ["ada", "bo", "cy", "dee"];
const CLIENTS: usize = 6;
const READ_SHARE: f64 = 0.2;
/// `store.timeout_ms` of the server: a store call against the dead store gives up then.
const STORE_TIMEOUT_MS: &str = "1000";
/// Load against the live store before each kill.
const LOAD_BEFORE_KILL: Duration = Duration::from_millis(1500);
/// How long the store stays dead under load.
const OUTAGE: Duration = Duration::from_secs(3);
/// Every user must write again within this long after the store serves again.
const RECOVERY_LIMIT: Duration = Duration::from_secs(20);
/// How long the reads after the load may take to find each user served.
const SETTLE_LIMIT: Duration = Duration::from_secs(20);

/// What one outage measured.
#[derive(Debug)]
struct Outage {
    /// From the restart to SeaweedFS storing an object again (the testkit's probe).
    store_back: Duration,
    /// From the store storing again to every user having a write acknowledged.
    recovered: Duration,
    /// Failures while the store was dead or starting, by code.
    failures: HashMap<String, usize>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_killed_and_restarted_under_load_loses_no_acknowledged_write() {
    let started = Instant::now();
    let seed = run_seed("store_restart");
    let mut s3 = S3Server::start(S3Kind::SeaweedFs)
        .await
        .expect("SeaweedFS starts");
    let cellar = Cellar::on_s3(&s3);
    let mut server = Server::start(
        &cellar,
        &[],
        &[("CELLAR_STORE_TIMEOUT_MS", STORE_TIMEOUT_MS)],
    );
    let api = Api::new(&server.address);
    let ledger = SharedLedger::default();
    let values = Arc::new(AtomicI64::new(1));
    let load = Load {
        clients: CLIENTS,
        users: USERS.map(String::from).to_vec(),
        read_share: READ_SHARE,
        limit: Limit::None,
        seed,
    };
    let clients = load.start(std::slice::from_ref(&api), &ledger, &values);

    let mut outages = Vec::new();
    for _ in 0..if full_run() { 3 } else { 1 } {
        tokio::time::sleep(LOAD_BEFORE_KILL).await;
        let failed_before = ledger.lock().failed.len();
        s3.crash();
        tokio::time::sleep(OUTAGE).await;
        let store_back = s3
            .restart()
            .await
            .unwrap_or_else(|err| panic!("SeaweedFS restarts: {err:#}"));
        let back_at = ledger.lock().now();
        let recovered = recovery(&ledger, back_at).await.unwrap_or_else(|| {
            panic!(
                "not every user wrote again within {RECOVERY_LIMIT:?} of the store's return; \
                 last failures: {:#?}\n{}",
                tail(&ledger.lock().failed, 5),
                server.log()
            )
        });
        let failures = ledger.lock().failed[failed_before..].iter().fold(
            HashMap::new(),
            |mut counts: HashMap<String, usize>, failure| {
                *counts.entry(failure.code.clone()).or_default() += 1;
                counts
            },
        );
        assert!(
            !failures.is_empty(),
            "no request failed while the store was dead: the outage was not seen"
        );
        outages.push(Outage {
            store_back,
            recovered,
            failures,
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    clients.stop().await;
    assert!(
        server.exited().is_none(),
        "the server died with its store:\n{}",
        server.log()
    );

    // Each user served once more: a pending upload is finished before that.
    for user in USERS {
        settle(&api, user, &ledger).await;
    }
    let pending = checks::pending_uploads(&cellar.data_dir());
    assert!(
        pending.is_empty(),
        "pending uploads left after every user was served: {pending:?}"
    );
    let ledger = ledger.into_inner();
    check_answers(&ledger);
    let bucket: HashMap<String, Vec<i64>> =
        checks::check_recovered("store_restart", &cellar, &api, &ledger, &USERS)
            .await
            .into_iter()
            .map(|(user, remote)| (user, remote.values))
            .collect();
    let dropped = ledger.dropped_pending_writes(|user| bucket[user].clone());
    assert!(
        dropped.is_empty(),
        "pending writes were dropped: {dropped:#?}"
    );
    // A `sync_pending` answer says truly whether the request's own write was kept.
    let misleading: Vec<String> = ledger
        .failed
        .iter()
        .filter(|failure| failure.code == "sync_pending")
        .filter_map(|failure| {
            let value = failure.value?;
            let claims_kept = failure.message.contains("is kept locally");
            let kept = bucket[&failure.user].contains(&value);
            (claims_kept != kept).then(|| {
                format!(
                    "{} {value} (kept: {kept}): {}",
                    failure.user, failure.message
                )
            })
        })
        .collect();
    assert!(
        misleading.is_empty(),
        "misleading sync_pending answers: {misleading:#?}"
    );
    let verified = checks::verify_all(&cellar);
    let status = server.terminate();
    assert!(status.success(), "stopped with {status}:\n{}", server.log());

    let sync_pending = ledger.appends_refused_with("sync_pending");
    let figures = json!({
        "suite": "store_restart",
        "store": "seaweedfs",
        "outages": outages.iter().map(|outage| json!({
            "store_down_seconds": OUTAGE.as_secs_f64(),
            "store_back_seconds": outage.store_back.as_secs_f64(),
            "recovery_seconds": outage.recovered.as_secs_f64(),
            "failures": outage.failures,
        })).collect::<Vec<_>>(),
        "requests": ledger.now(),
        "writes_acknowledged": ledger.acked.len(),
        "writes_lost": 0,
        "failures": ledger.failures_by_code(),
        "sync_pending_writes": sync_pending.len(),
        "sync_pending_writes_kept": sync_pending
            .iter()
            .filter(|(user, value)| bucket[user].contains(value))
            .count(),
        "sync_pending_answers_misleading": 0,
        "reads_checked": ledger.reads.len(),
        "stale_reads_caught": ledger.stale_reads(),
        "objects_verified": verified,
        "seconds": started.elapsed().as_secs_f64().round(),
    });
    eprintln!("RELIABILITY {figures}");
}

/// How long after event `back_at` every user had an append acknowledged; `None` if not
/// within [`RECOVERY_LIMIT`].
async fn recovery(ledger: &SharedLedger, back_at: u64) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < RECOVERY_LIMIT {
        let written: HashSet<String> = ledger
            .lock()
            .acked
            .iter()
            .filter(|ack| ack.seq > back_at)
            .map(|ack| ack.user.clone())
            .collect();
        if written.len() == USERS.len() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Reads `user` until the server answers 200 (a pending upload of theirs is finished
/// first), recording every answer.
async fn settle(api: &Api, user: &str, ledger: &SharedLedger) {
    let started = Instant::now();
    loop {
        let sent = ledger.lock().now();
        let reply = api.values(user).await;
        let ok = matches!(reply, Reply::Ok { .. });
        ledger.lock().read(user, sent, reply.clone());
        if ok {
            return;
        }
        assert!(
            started.elapsed() < SETTLE_LIMIT,
            "{user} is still not served {SETTLE_LIMIT:?} after the load: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every failure is a clear 503; every read is fresh; nothing went unanswered.
fn check_answers(ledger: &Ledger) {
    assert!(
        ledger.unanswered.is_empty(),
        "requests without an answer: {:?}",
        ledger.unanswered
    );
    for failure in &ledger.failed {
        let clear = match failure.code.as_str() {
            "store_unavailable" => {
                failure.message.contains("object store unavailable") || failure.is_stale_read()
            }
            "sync_pending" => failure.message.contains("pending upload"),
            _ => false,
        };
        assert!(
            failure.status == 503 && clear,
            "not a clear 503: {failure:?}"
        );
    }
    let stale = ledger.stale_answers();
    assert!(stale.is_empty(), "{stale:#?}");
}

fn tail<T: Clone>(items: &[T], count: usize) -> Vec<T> {
    items[items.len().saturating_sub(count)..].to_vec()
}
