//! `sync.durability = "async"` under SIGKILL: the server acknowledges a write after its
//! local commit and uploads it in the background (`sync.min_upload_interval_ms = 100`
//! here, so that several acknowledged writes wait for their upload at any moment). It is
//! SIGKILLed at a random moment under write load, then restarted on the same data dir
//! and folder store; it finishes the pending uploads at start-up. Each round checks:
//!
//! - the local databases as the kill left them pass `integrity_check`;
//! - how many acknowledged writes were not in the bucket yet at the kill (over the run
//!   there must be some, or the test proved nothing);
//! - within a bounded time of the restart no pending upload is left, and every write
//!   acknowledged so far is in the bucket (`cellar pull`), once, at a version at least
//!   every acknowledged one; the bucket's list only grew since the last round (one
//!   writer); the restarted server serves the bucket's list; `cellar verify --all` passes.
//!
//! 6 rounds by default, 40 with `CELLAR_RELIABILITY_FULL=1`.

#![cfg(unix)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::api::{Api, Reply};
use support::checks::{self, SharedLedger, duplicates, missing};
use support::load::{Limit, Load};
use support::server::Server;
use support::{Cellar, full_run, run_seed};

const USERS: [&str; 3] = ["ada", "bo", "cy"];
const WRITERS: usize = 4;
/// The load runs this long (ms, at random) before the kill.
const KILL_AFTER_MS: std::ops::Range<u64> = 100..600;
/// How long the restarted server may take to have no pending upload left.
const UPLOADS_LIMIT: Duration = Duration::from_secs(10);
const ASYNC: [(&str, &str); 2] = [
    ("CELLAR_SYNC_DURABILITY", "async"),
    ("CELLAR_SYNC_MIN_UPLOAD_INTERVAL_MS", "100"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_durability_keeps_every_acknowledged_write_across_sigkill() {
    let started = Instant::now();
    let seed = run_seed("async_crash");
    let mut rng = StdRng::seed_from_u64(seed);
    let rounds = if full_run() { 40 } else { 6 };
    let cellar = Cellar::new();
    let ledger = SharedLedger::default();
    let values = Arc::new(AtomicI64::new(1));
    let mut bucket_before: HashMap<&str, Vec<i64>> = HashMap::new();
    let (mut pending_at_kill, mut acked_not_uploaded_at_kill) = (0, 0);
    let (mut hot_journals, mut verified, mut slowest_finish) = (0, 0, Duration::ZERO);

    for round in 0..rounds {
        let mut server = Server::start(&cellar, &[], &ASYNC);
        if round == 0 {
            assert_acknowledged_async(&server.address).await;
        }
        let load = Load {
            clients: WRITERS,
            users: USERS.map(String::from).to_vec(),
            read_share: 0.1,
            limit: Limit::None,
            seed: rng.random(),
        };
        let clients = load.start(&[Api::new(&server.address)], &ledger, &values);
        tokio::time::sleep(Duration::from_millis(rng.random_range(KILL_AFTER_MS))).await;
        server.kill();
        clients.stop().await;

        let left = checks::check_local_databases(&cellar.data_dir());
        assert!(
            left.problems.is_empty(),
            "round {round}: the kill left torn databases: {:?}",
            left.problems
        );
        hot_journals += left.hot_journals;
        pending_at_kill += checks::pending_uploads(&cellar.data_dir()).len();
        for user in USERS {
            let in_bucket = checks::bucket(&cellar, user).map_or(Vec::new(), |r| r.values);
            acked_not_uploaded_at_kill +=
                missing(&ledger.lock().acked_values(user), &in_bucket).len();
        }

        // The restart finishes the pending uploads (at start-up).
        let restarted = Server::start(&cellar, &[], &ASYNC);
        let restarted_at = Instant::now();
        while !checks::pending_uploads(&cellar.data_dir()).is_empty() {
            assert!(
                restarted_at.elapsed() < UPLOADS_LIMIT,
                "round {round}: uploads still pending {UPLOADS_LIMIT:?} after the restart: {:?}\n{}",
                checks::pending_uploads(&cellar.data_dir()),
                restarted.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        slowest_finish = slowest_finish.max(restarted_at.elapsed());

        let api = Api::new(&restarted.address);
        for user in USERS {
            let (acked, acked_version) = {
                let ledger = ledger.lock();
                (
                    ledger.acked_values(user),
                    ledger.highest_acked_version(user),
                )
            };
            let remote = checks::bucket(&cellar, user);
            let remote = match remote {
                Some(remote) => remote,
                None if acked.is_empty() => continue,
                None => panic!("round {round}: {user} has acknowledged writes but no object"),
            };
            let lost = missing(&acked, &remote.values);
            if !lost.is_empty() {
                let served = api.values(user).await;
                panic!(
                    "round {round}: {} acknowledged writes of {user} (of {}, highest version \
                     {acked_version}) are missing from the bucket at version {} ({} values): \
                     {lost:?}\nthe restarted server serves: {served:?}\n\
                     --- restarted server log ---\n{}",
                    lost.len(),
                    acked.len(),
                    remote.version,
                    remote.values.len(),
                    restarted.log()
                );
            }
            assert!(
                duplicates(&remote.values).is_empty(),
                "round {round}: {user} has values twice"
            );
            assert!(
                remote.version >= acked_version,
                "round {round}: the bucket has {user} at {}, below acknowledged {acked_version}",
                remote.version
            );
            let before = bucket_before.get(user).map_or(&[][..], Vec::as_slice);
            assert!(
                remote.values.starts_with(before),
                "round {round}: {user}'s list in the bucket lost values since last round"
            );
            match api.values(user).await {
                Reply::Ok { version, value } => assert_eq!(
                    (version, &value),
                    (remote.version, &remote.values),
                    "round {round}: the restarted server serves the bucket's {user}"
                ),
                other => panic!("round {round}: reading {user} after the restart: {other:?}"),
            }
            bucket_before.insert(user, remote.values);
        }
        verified += checks::verify_all(&cellar);
    }

    let ledger = ledger.into_inner();
    assert!(
        ledger.failed.is_empty(),
        "requests failed: {:#?}",
        ledger.failed
    );
    let stale = ledger.stale_answers();
    assert!(stale.is_empty(), "{stale:#?}");
    assert!(
        acked_not_uploaded_at_kill > 0,
        "no kill caught an acknowledged write before its upload: the test proved nothing"
    );
    let figures = json!({
        "suite": "async_crash",
        "store": "folder",
        "rounds": rounds,
        "kills": rounds,
        "writes_acknowledged": ledger.acked.len(),
        "writes_unanswered": ledger.unanswered.len(),
        "acknowledged_not_uploaded_at_kill": acked_not_uploaded_at_kill,
        "pending_uploads_at_kill": pending_at_kill,
        "writes_lost": 0,
        "slowest_finish_after_restart_seconds": slowest_finish.as_secs_f64(),
        "hot_journals_rolled_back": hot_journals,
        "reads_checked": ledger.reads.len(),
        "objects_verified": verified,
        "seconds": started.elapsed().as_secs_f64().round(),
    });
    eprintln!("RELIABILITY {figures}");
}

/// The setting took: a write is answered with `"durability": "async"`.
async fn assert_acknowledged_async(address: &str) {
    let answer: Value = reqwest::Client::new()
        .post(format!("http://{address}/v1/query"))
        .header("X-User-Id", "probe")
        .json(&json!({ "statements": ["CREATE TABLE IF NOT EXISTS probe(x)"] }))
        .send()
        .await
        .expect("the server answers")
        .json()
        .await
        .expect("a JSON answer");
    assert_eq!(answer["durability"], "async", "{answer}");
}
