//! Faults over HTTP (issue 4): mixed requests (appends and reads over several users) to the
//! built `cellar serve` with store faults injected by its `faults.*` settings: 10% of store
//! requests fail, and 10% of uploads land but lose their answer (20% of uploads in all).
//!
//! - every request answered success is in the bucket at the end;
//! - every failure is a 503 `store_unavailable` (nothing changed: the value must be absent
//!   at the end) or `sync_pending` (the write is kept: every version it announces as kept
//!   reaches the bucket), with a message that says which;
//! - every read sees every append acknowledged before it was sent;
//! - after the faults stop (the server restarted without them on the same data dir and
//!   bucket) it recovers by itself: no pending upload is left, every acknowledged write is
//!   there, `cellar verify --all` passes.
//!
//! 1 000 requests on the folder store, and a smaller run on SeaweedFS (200 requests; 500
//! in the full run: `CELLAR_RELIABILITY_FULL=1 cargo test -p cellar-cli --test faults -- --nocapture`).

#![cfg(unix)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use cellar_testkit::{S3Kind, S3Server};
use serde_json::json;
use support::api::{Api, Reply};
use support::checks::{self, Ledger, Remote, SharedLedger};
use support::load::{Limit, Load};
use support::server::Server;
use support::{Cellar, full_run, run_seed};

const USERS: [&str; 4] = ["ada", "bo", "cy", "dee"];
const CLIENTS: usize = 8;
const READ_SHARE: f64 = 0.4;
/// Appends per user, at most, to leave a pending upload behind.
const PENDING_TRIES: usize = 100;

/// What a faults run left: every answer, and each user's database in the bucket after
/// the recovery.
struct FaultsRun {
    ledger: Ledger,
    bucket: HashMap<String, Remote>,
}

impl FaultsRun {
    /// The appends answered `sync_pending` whose message says the opposite of what
    /// happened: it claims the write "is kept locally" but the write never landed, or
    /// does not claim so, yet it landed.
    fn misleading_pending_answers(&self) -> Vec<String> {
        self.ledger
            .failed
            .iter()
            .filter(|failure| failure.code == "sync_pending")
            .filter_map(|failure| {
                let value = failure.value?;
                let claims_kept = failure.message.contains("is kept locally");
                let kept = self.bucket[&failure.user].values.contains(&value);
                (claims_kept != kept).then(|| {
                    format!(
                        "{} {value} (kept: {kept}): {}",
                        failure.user, failure.message
                    )
                })
            })
            .collect()
    }

    /// How many appends answered `sync_pending` are in the bucket at the end.
    fn pending_appends_kept(&self) -> usize {
        self.ledger
            .appends_refused_with("sync_pending")
            .iter()
            .filter(|(user, value)| self.bucket[user].values.contains(value))
            .count()
    }
}

/// Runs `requests` mixed requests with faults on, restarts without them, checks, reports.
async fn faults_run(name: &str, cellar: Cellar, requests: usize) -> FaultsRun {
    let started = Instant::now();
    let seed = run_seed(&format!("faults[{name}]"));
    let seed_text = seed.to_string();
    let faults = [
        ("CELLAR_FAULTS_ERROR_RATE", "0.1"),
        ("CELLAR_FAULTS_DROP_RATE", "0.1"),
        ("CELLAR_FAULTS_SEED", seed_text.as_str()),
    ];
    let mut faulty = Server::start(&cellar, &[], &faults);
    assert!(
        faulty.log().contains("FAULT INJECTION IS ON"),
        "the server says so loudly:\n{}",
        faulty.log()
    );
    let ledger = SharedLedger::default();
    let load = Load {
        clients: CLIENTS,
        users: USERS.map(String::from).to_vec(),
        read_share: READ_SHARE,
        limit: Limit::Requests(requests),
        seed,
    };
    let values = Arc::new(AtomicI64::new(1));
    let api = Api::new(&faulty.address);
    load.start(std::slice::from_ref(&api), &ledger, &values)
        .finish()
        .await;
    leave_pending_uploads(&api, &ledger, &values).await;
    let status = faulty.terminate();
    assert!(
        status.success(),
        "{name}: the faulty server stopped with {status}:\n{}",
        faulty.log()
    );
    let injected = faults_injected(&faulty.log());
    let pending_at_stop = checks::pending_uploads(&cellar.data_dir());
    assert!(
        !pending_at_stop.is_empty(),
        "{name}: the faulty server left no pending upload to finish"
    );
    let ledger = ledger.into_inner();
    check_answers(name, &ledger);

    // The faults stop: the same data dir and bucket, served without them.
    let server = Server::start(&cellar, &[], &[]);
    let still_pending = checks::pending_uploads(&cellar.data_dir());
    assert!(
        still_pending.is_empty(),
        "{name}: pending uploads of {still_pending:?} were not finished at start-up"
    );
    let bucket =
        checks::check_recovered(name, &cellar, &Api::new(&server.address), &ledger, &USERS).await;
    let verified = checks::verify_all(&cellar);
    let dropped = ledger.dropped_pending_writes(|user| bucket[user].values.clone());
    assert!(
        dropped.is_empty(),
        "{name}: pending writes were dropped: {dropped:#?}"
    );

    let run = FaultsRun { ledger, bucket };
    let ledger = &run.ledger;
    let figures = json!({
        "suite": "faults",
        "store": name,
        "requests": ledger.now(),
        "answered_ok": ledger.acked.len() + ledger.reads.len(),
        "failures": ledger.failures_by_code(),
        "faults_injected": injected,
        "pending_uploads_at_stop": pending_at_stop.len(),
        "writes_acknowledged": ledger.acked.len(),
        "writes_lost": 0,
        "sync_pending_writes": ledger.appends_refused_with("sync_pending").len(),
        "sync_pending_writes_kept": run.pending_appends_kept(),
        "sync_pending_answers_misleading": run.misleading_pending_answers().len(),
        "reads_checked": ledger.reads.len(),
        "stale_reads_caught": ledger.stale_reads(),
        "objects_verified": verified,
        "seconds": started.elapsed().as_secs_f64().round(),
    });
    eprintln!("RELIABILITY {figures}");
    run
}

/// Still under faults, appends to each user until one is answered `sync_pending`, then
/// leaves that user alone: the restart then has pending uploads to finish by itself.
async fn leave_pending_uploads(api: &Api, ledger: &SharedLedger, values: &AtomicI64) {
    for user in USERS {
        for _ in 0..PENDING_TRIES {
            let value = values.fetch_add(1, Ordering::Relaxed);
            let reply = api.append(user, value).await;
            let pending = matches!(&reply, Reply::Refused { code, .. } if code == "sync_pending");
            ledger.lock().append(user, value, reply);
            if pending {
                break;
            }
        }
    }
}

/// Every failure is a clear 503; every read is fresh; no request went unanswered.
fn check_answers(name: &str, ledger: &Ledger) {
    assert!(
        ledger.unanswered.is_empty(),
        "{name}: requests without an answer: {:?}",
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
            "{name}: not a clear 503: {failure:?}"
        );
    }
    assert!(
        ledger.failed.len() > 10,
        "{name}: faults were injected: {} failures",
        ledger.failed.len()
    );
    let stale = ledger.stale_answers();
    assert!(stale.is_empty(), "{name}: {stale:#?}");
}

/// The count in the server's last words, "fault injection: N faults injected".
fn faults_injected(log: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|line| line.contains("faults injected"))
        .unwrap_or_else(|| panic!("the server reports the faults it injected:\n{log}"));
    let count = line.split("injected=").nth(1).expect("an injected= field");
    count
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("a count in {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_injected_faults_every_acknowledged_request_is_kept_and_failures_are_clear_503s() {
    faults_run("folder", Cellar::new(), 1_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_injected_faults_on_seaweedfs_every_acknowledged_request_is_kept() {
    let s3 = S3Server::start(S3Kind::SeaweedFs)
        .await
        .expect("SeaweedFS starts");
    faults_run(
        "seaweedfs",
        Cellar::on_s3(&s3),
        if full_run() { 500 } else { 200 },
    )
    .await;
}

/// Invariant 2: a failed request "says in its error that its writes are kept locally and
/// pending upload", or changed nothing. A request that finds an EARLIER write still
/// pending is not run at all; its answer must say so (and not "is kept locally"), so the
/// client knows to send it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_pending_answer_says_truly_whether_the_requests_own_write_was_kept() {
    let run = faults_run("folder-pending", Cellar::new(), 500).await;
    let misleading = run.misleading_pending_answers();
    assert!(
        misleading.is_empty(),
        "{} misleading sync_pending answers: {misleading:#?}",
        misleading.len()
    );
}
