//! Disk full under `data_dir`: the built `cellar serve` keeps its local copies on a tmpfs
//! of 4 MiB mounted for the test, and its folder store outside it, so that only the local
//! disk fills up. Several users append values padded with random bytes until their
//! writes fail, then:
//!
//! - every failure is a clear error in the v1 JSON shape, 507 `insufficient_storage` (a
//!   full disk is not the caller's fault), without local paths in its message, and the
//!   server stays up;
//! - nothing acknowledged is lost: every append answered 200 is in the bucket
//!   (`cellar pull`), and no append answered with an error is (it changed nothing);
//! - when space returns (the tmpfs is grown to 64 MiB, its files kept), every user
//!   writes again within a bounded time, reads are fresh (each user's list as the bucket
//!   has it, at the bucket's version), the local databases pass `integrity_check`, and
//!   `cellar verify --all` passes.
//!
//! Mounting needs root (or CAP_SYS_ADMIN); without it the test says so and passes
//! without running (`SKIPPED` on stderr).

#![cfg(target_os = "linux")]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use support::api::{Api, Reply};
use support::checks::{self, SharedLedger, duplicates, missing};
use support::disk::SmallDisk;
use support::server::Server;
use support::{Cellar, full_run};

/// Size of the filesystem under `data_dir` while it fills.
const SMALL: &str = "4m";
/// Its size once space returns.
const LARGE: &str = "64m";
/// Random bytes added by each append.
const PAD_BYTES: usize = 48 * 1024;
/// A client stops filling after this many failed appends in a row...
const FAILURES_IN_A_ROW: usize = 4;
/// ...or after this many appends, or this long.
const MAX_APPENDS_PER_CLIENT: usize = 300;
const FILL_TIME_LIMIT: Duration = Duration::from_secs(20);
/// How long every user may take to write again once space returns.
const RECOVERY_LIMIT: Duration = Duration::from_secs(15);

/// One client per user: appends (and after each failure, one read) until the disk
/// refuses its writes [`FAILURES_IN_A_ROW`] times in a row.
async fn fill(api: Api, user: String, ledger: SharedLedger, values: Arc<AtomicI64>) {
    let deadline = Instant::now() + FILL_TIME_LIMIT;
    let mut in_a_row = 0;
    for _ in 0..MAX_APPENDS_PER_CLIENT {
        if in_a_row >= FAILURES_IN_A_ROW || Instant::now() > deadline {
            return;
        }
        let value = values.fetch_add(1, Ordering::Relaxed);
        let reply = api.append_padded(&user, value, PAD_BYTES).await;
        let failed = !matches!(reply, Reply::Ok { .. });
        ledger.lock().append(&user, value, reply);
        if failed {
            in_a_row += 1;
            let started = ledger.lock().now();
            let reply = api.values(&user).await;
            ledger.lock().read(&user, started, reply);
        } else {
            in_a_row = 0;
        }
    }
}

/// Appends until one is answered 200 (or [`RECOVERY_LIMIT`] passes); returns how long
/// that took and the answers before it.
async fn write_again(
    api: &Api,
    user: &str,
    ledger: &SharedLedger,
    values: &AtomicI64,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < RECOVERY_LIMIT {
        let value = values.fetch_add(1, Ordering::Relaxed);
        let reply = api.append_padded(user, value, PAD_BYTES).await;
        let ok = matches!(reply, Reply::Ok { .. });
        ledger.lock().append(user, value, reply);
        if ok {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_dir_fails_clearly_loses_no_acknowledged_write_and_recovers() {
    let started = Instant::now();
    let users: Vec<String> = (0..if full_run() { 8 } else { 4 })
        .map(|i| format!("user{i}"))
        .collect();
    let cellar = Cellar::new();
    let disk = match SmallDisk::mount(&cellar.data_dir(), SMALL) {
        Ok(disk) => disk,
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a tmpfs for the data dir (needs root): {why}");
            return;
        }
    };
    // Declared after the disk: killed before it is unmounted.
    let mut server = Server::start(&cellar, &[], &[]);
    let api = Api::new(&server.address);
    let ledger = SharedLedger::default();
    let values = Arc::new(AtomicI64::new(1));

    let clients: Vec<_> = users
        .iter()
        .map(|user| {
            tokio::spawn(fill(
                api.clone(),
                user.clone(),
                ledger.clone(),
                Arc::clone(&values),
            ))
        })
        .collect();
    for client in clients {
        client.await.expect("a client panicked");
    }
    let filled_in = started.elapsed();
    let free_when_full = disk.available();
    assert!(
        server.exited().is_none(),
        "the server died on a full disk:\n{}",
        server.log()
    );

    // Every failure: a 5xx in the v1 shape, in words, and nothing written.
    let full = ledger.lock().failed.clone();
    let unanswered = ledger.lock().unanswered.clone();
    assert!(
        unanswered.is_empty(),
        "requests without an answer (not the v1 JSON shape, or cut): {unanswered:?}"
    );
    assert!(
        full.iter()
            .filter(|failure| failure.value.is_some())
            .count()
            >= users.len(),
        "the disk never refused a write: {full:?}\nfree: {free_when_full} bytes"
    );
    let local_path = cellar.path().to_string_lossy().into_owned();
    for failure in &full {
        assert!(
            failure.status == 507 && failure.code == "insufficient_storage",
            "a full disk not answered as one (507 insufficient_storage): {failure:?}"
        );
        assert!(
            !failure.code.is_empty() && !failure.message.is_empty(),
            "not the v1 error shape: {failure:?}"
        );
        assert!(
            !failure.message.contains(&local_path) && !failure.message.contains("/tmp"),
            "a local path in the answer: {failure:?}"
        );
    }
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for failure in &full {
        *codes
            .entry(format!("{} {}", failure.status, failure.code))
            .or_default() += 1;
    }
    let messages: BTreeMap<String, usize> = full.iter().fold(BTreeMap::new(), |mut seen, f| {
        *seen.entry(f.message.clone()).or_default() += 1;
        seen
    });
    eprintln!("disk_full: answers while full: {codes:?}; messages: {messages:#?}");
    // What the server logged about it (figures only: the wording is the engine's).
    let log = server.log();
    let commits_failed_after_upload = log.matches("uploaded, but the local commit failed").count();
    let no_space_logged = log.matches("No space left on device").count();

    // Nothing acknowledged is lost; nothing refused was kept.
    let acked_while_full = ledger.lock().acked.len();
    check_bucket(&cellar, &users, &ledger, "while the disk is full");

    // Space returns.
    disk.resize(LARGE);
    let mut recovery = Duration::ZERO;
    for user in &users {
        let took = write_again(&api, user, &ledger, &values)
            .await
            .unwrap_or_else(|| {
                panic!(
                    "{user} could not write {RECOVERY_LIMIT:?} after space returned: {:?}\n{}",
                    ledger.lock().failed.last(),
                    server.log()
                )
            });
        recovery = recovery.max(took);
    }
    let bucket = check_bucket(&cellar, &users, &ledger, "after space returned");
    for user in &users {
        match api.values(user).await {
            Reply::Ok { version, value } => assert_eq!(
                (version, &value),
                (bucket[user].version, &bucket[user].values),
                "{user}: the server serves the bucket's list at its version"
            ),
            other => panic!("reading {user} after space returned: {other:?}"),
        }
    }
    assert!(
        checks::downloads_installed(&cellar.data_dir()).await,
        "downloads still not installed 10 s after the reads"
    );
    let local = checks::check_local_databases(&cellar.data_dir());
    assert!(local.problems.is_empty(), "{:?}", local.problems);
    let verified = checks::verify_all(&cellar);
    let status = server.terminate();
    assert!(status.success(), "stopped with {status}:\n{}", server.log());
    drop(server);
    drop(disk);

    let ledger = ledger.into_inner();
    let stale = ledger.stale_answers();
    assert!(stale.is_empty(), "{stale:#?}");
    let figures = json!({
        "suite": "disk_full",
        "users": users.len(),
        "data_dir_bytes": SMALL,
        "pad_bytes": PAD_BYTES,
        "writes_acknowledged_before_full": acked_while_full,
        "writes_acknowledged": ledger.acked.len(),
        "writes_lost": 0,
        "failures_while_full": codes,
        "failure_messages": messages,
        "local_commits_failed_after_upload": commits_failed_after_upload,
        "no_space_errors_logged": no_space_logged,
        "fill_seconds": filled_in.as_secs_f64(),
        "free_bytes_when_full": free_when_full,
        "recovery_seconds": recovery.as_secs_f64(),
        "reads_checked": ledger.reads.len(),
        "local_databases_checked": local.databases,
        "objects_verified": verified,
        "seconds": started.elapsed().as_secs_f64().round(),
    });
    eprintln!("RELIABILITY {figures}");
}

/// Every acknowledged append is in the bucket, once; no append answered with an error is.
fn check_bucket(
    cellar: &Cellar,
    users: &[String],
    ledger: &SharedLedger,
    when: &str,
) -> HashMap<String, checks::Remote> {
    let ledger = ledger.lock();
    let refused: Vec<i64> = ledger
        .failed
        .iter()
        .filter_map(|failure| failure.value)
        .collect();
    let mut bucket = HashMap::new();
    for user in users {
        let acked = ledger.acked_values(user);
        let Some(remote) = checks::bucket(cellar, user) else {
            assert!(acked.is_empty(), "{when}: {user} is not in the bucket");
            continue;
        };
        let lost = missing(&acked, &remote.values);
        assert!(
            lost.is_empty(),
            "{when}: acknowledged writes {lost:?} of {user} are missing from the bucket"
        );
        assert!(
            duplicates(&remote.values).is_empty(),
            "{when}: {user} has values twice"
        );
        let kept: Vec<i64> = remote
            .values
            .iter()
            .copied()
            .filter(|value| refused.contains(value))
            .collect();
        assert!(
            kept.is_empty(),
            "{when}: appends {kept:?} of {user} were answered with an error but are in the bucket"
        );
        assert!(
            remote.version >= ledger.highest_acked_version(user),
            "{when}: {user} went back"
        );
        bucket.insert(user.clone(), remote);
    }
    bucket
}
