//! Racing instances (issue 4): two `cellar serve` processes on one bucket, each with its
//! own data dir, and concurrent clients of both appending unique values to ONE user's list
//! (and reading it back now and then).
//!
//! - `sync.conflict = strict`, checked as a list-append history (Jepsen style): every
//!   acknowledged append is in the final list, every refused one (409) is not, none twice;
//!   appends acknowledged at lower versions come first; every read is a prefix of the final
//!   list and holds exactly the appends acknowledged at its version or below.
//! - `last-write-wins`: nothing is refused, and every acknowledged append missing from the
//!   final list lies in the versions (local_version, remote_version] of a logged
//!   `cellar::conflict` warning: no overwrite went unlogged.
//!
//! Every download comes in parts of 4 KiB (`sync.download_part_bytes`), so under the race
//! objects change between the parts of a download: the later parts are refused
//! (`If-Match`) and the download is made again whole.
//!
//! Quick by default (200 writes per run); the full run (1 000 writes per run) is
//! `CELLAR_RELIABILITY_FULL=1 cargo test -p cellar-cli --test race -- --nocapture`.

#![cfg(unix)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::{Duration, Instant};

use cellar_testkit::{S3Kind, S3Server};
use serde_json::json;
use support::api::Api;
use support::checks::{self, Ack, Ledger, Remote, SharedLedger, duplicates, missing};
use support::load::{Limit, Load};
use support::server::Server;
use support::{Cellar, full_run, run_seed};

/// Concurrent clients, half on each server.
const CLIENTS: usize = 8;
const READ_SHARE: f64 = 0.2;

fn writes() -> usize {
    if full_run() { 1_000 } else { 200 }
}

/// A race's history and outcome.
struct Race {
    name: String,
    ledger: Ledger,
    remote: Remote,
    /// Both servers' logs.
    logs: String,
    elapsed: Duration,
}

/// Two servers with `policy` on `cellar`'s bucket; `writes` appends to `user` from both.
async fn race(name: &str, cellar: &Cellar, policy: &str, user: &str) -> Race {
    let started = Instant::now();
    let name = format!("{name}-{policy}");
    let seed = run_seed(&format!("race[{name}]"));
    let env = [
        ("CELLAR_SYNC_CONFLICT", policy),
        ("CELLAR_SYNC_DOWNLOAD_PART_BYTES", "4096"),
    ];
    let mut servers = [
        Server::start(cellar, &["--data-dir", &format!("local-{policy}-a")], &env),
        Server::start(cellar, &["--data-dir", &format!("local-{policy}-b")], &env),
    ];
    let apis = servers.each_ref().map(|server| Api::new(&server.address));
    let load = Load {
        clients: CLIENTS,
        users: vec![user.to_owned()],
        read_share: READ_SHARE,
        limit: Limit::Appends(writes()),
        seed,
    };
    let ledger = SharedLedger::default();
    load.start(&apis, &ledger, &Arc::new(AtomicI64::new(1)))
        .finish()
        .await;
    let mut logs = String::new();
    for server in &mut servers {
        let status = server.terminate();
        assert!(
            status.success(),
            "{name}: a server stopped with {status}:\n{}",
            server.log()
        );
        logs.push_str(&server.log());
    }
    let remote = checks::bucket(cellar, user)
        .unwrap_or_else(|| panic!("{name}: {user} is not in the bucket"));
    checks::verify_all(cellar);
    let ledger = ledger.into_inner();
    assert!(
        ledger.unanswered.is_empty(),
        "{name}: requests without an answer: {:?}",
        ledger.unanswered
    );
    assert!(
        duplicates(&remote.values).is_empty(),
        "{name}: values twice: {:?}",
        duplicates(&remote.values)
    );
    Race {
        name,
        ledger,
        remote,
        logs,
        elapsed: started.elapsed(),
    }
}

impl Race {
    /// Fails on any error answer but the ones `allowed` and the stale reads Cellar refused.
    fn only_failures(&self, allowed: &[&str]) {
        let unexpected: Vec<_> = self
            .ledger
            .failed
            .iter()
            .filter(|failure| !allowed.contains(&failure.code.as_str()) && !failure.is_stale_read())
            .collect();
        assert!(
            unexpected.is_empty(),
            "{}: unexpected failures: {unexpected:#?}",
            self.name
        );
    }

    /// Prints the figures as one JSON line.
    fn report(&self, extra: serde_json::Value) {
        let mut figures = json!({
            "suite": "race",
            "run": self.name,
            "writes": self.ledger.acked.len() + self.ledger.appends_refused_with("conflict").len(),
            "writes_acknowledged": self.ledger.acked.len(),
            "writes_refused": self.ledger.appends_refused_with("conflict").len(),
            "reads_checked": self.ledger.reads.len(),
            "final_version": self.remote.version,
            "stale_reads_caught": self.ledger.stale_reads(),
            "downloads_started_over": self.logs.matches("the object changed while it was downloaded").count(),
            "seconds": self.elapsed.as_secs_f64().round(),
        });
        if let (Some(figures), Some(extra)) = (figures.as_object_mut(), extra.as_object()) {
            figures.extend(extra.clone());
        }
        eprintln!("RELIABILITY {figures}");
    }
}

/// Strict: the list-append history checks of the module's doc.
fn check_strict(race: &Race) {
    let name = &race.name;
    race.only_failures(&["conflict"]);
    let final_list = &race.remote.values;
    let acked: Vec<i64> = race.ledger.acked.iter().map(|ack| ack.value).collect();
    let lost = missing(&acked, final_list);
    assert!(
        lost.is_empty(),
        "{name}: acknowledged appends {lost:?} are missing from the final list"
    );
    let refused: HashSet<i64> = race
        .ledger
        .appends_refused_with("conflict")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let kept: Vec<&i64> = final_list
        .iter()
        .filter(|value| refused.contains(value))
        .collect();
    assert!(
        kept.is_empty(),
        "{name}: appends {kept:?} were refused with 409 but are in the final list"
    );
    let stale = race.ledger.stale_answers();
    assert!(stale.is_empty(), "{name}: {stale:#?}");
    let phantom = missing(final_list, &acked);
    assert!(
        phantom.is_empty(),
        "{name}: {phantom:?} are in the final list but were never acknowledged"
    );

    // Appends acknowledged at a lower version come before those at a higher one.
    let position: HashMap<i64, usize> = final_list
        .iter()
        .enumerate()
        .map(|(at, value)| (*value, at))
        .collect();
    let mut by_version: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for ack in &race.ledger.acked {
        by_version
            .entry(ack.version)
            .or_default()
            .push(position[&ack.value]);
    }
    let mut previous: Option<(u64, usize)> = None;
    for (version, positions) in &by_version {
        let first = positions.iter().min().copied().unwrap_or_default();
        let last = positions.iter().max().copied().unwrap_or_default();
        if let Some((earlier, end)) = previous {
            assert!(
                first > end,
                "{name}: an append of version {version} sits before one of version {earlier}"
            );
        }
        previous = Some((*version, last));
    }

    // Every read is a prefix of the final list that holds every append acknowledged below
    // its version and none above. Of those acknowledged AT its version it may miss some: a
    // read that joins a group commit (group.rs) is answered with the group's upload
    // version, but sees only the group's appends that ran before it.
    let mut inside_a_group = 0;
    for read in &race.ledger.reads {
        let version = read.version;
        assert!(
            final_list.starts_with(&read.values),
            "{name}: a read at version {version} is not a prefix of the final list"
        );
        let got: HashSet<i64> = read.values.iter().copied().collect();
        let acked_at = |wanted: fn(u64, u64) -> bool| -> HashSet<i64> {
            race.ledger
                .acked
                .iter()
                .filter(|ack| wanted(ack.version, version))
                .map(|ack| ack.value)
                .collect()
        };
        let below = acked_at(|acked, read| acked < read);
        let up_to = acked_at(|acked, read| acked <= read);
        assert!(
            got.is_superset(&below),
            "{name}: a read at version {version} misses {:?}",
            below.difference(&got)
        );
        assert!(
            got.is_subset(&up_to),
            "{name}: a read at version {version} holds later appends {:?}",
            got.difference(&up_to)
        );
        inside_a_group += usize::from(got != up_to);
    }
    race.report(json!({
        "policy": "strict",
        "writes_lost": lost.len(),
        "reads_inside_a_group_commit": inside_a_group,
    }));
}

/// One `cellar::conflict` warning: the versions an overwrite skipped over.
#[derive(Debug)]
struct Overwrite {
    local_version: u64,
    remote_version: u64,
}

/// The `cellar::conflict` warnings in `logs`.
fn overwrites(logs: &str) -> Vec<Overwrite> {
    logs.lines()
        .filter(|line| line.contains("WARN") && line.contains("cellar::conflict"))
        .map(|line| Overwrite {
            local_version: field(line, "local_version")
                .unwrap_or_else(|| panic!("no local_version in {line:?}")),
            remote_version: field(line, "remote_version")
                .unwrap_or_else(|| panic!("no remote_version in {line:?}")),
        })
        .collect()
}

/// The number in `name=N` of a log line.
fn field(line: &str, name: &str) -> Option<u64> {
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|part| part.strip_prefix(&prefix)?.parse().ok())
}

/// Last-write-wins: nothing refused; every lost append explained by a logged overwrite.
fn check_last_write_wins(race: &Race) {
    let name = &race.name;
    race.only_failures(&[]);
    let warnings = overwrites(&race.logs);
    let overwritten = |ack: &Ack| {
        warnings.iter().any(|warning| {
            warning.local_version < ack.version && ack.version <= warning.remote_version
        })
    };
    let mut lost = 0;
    for ack in race
        .ledger
        .acked
        .iter()
        .filter(|ack| !race.remote.values.contains(&ack.value))
    {
        lost += 1;
        assert!(
            overwritten(ack),
            "{name}: append {} (version {}) was lost without a warning covering it; warnings: {warnings:?}",
            ack.value,
            ack.version
        );
    }
    // A read may miss an append acknowledged before it only if an overwrite dropped it.
    for read in &race.ledger.reads {
        let seen: HashSet<i64> = read.values.iter().copied().collect();
        let unexplained: Vec<i64> = race
            .ledger
            .acked
            .iter()
            .filter(|ack| ack.seq < read.started && !seen.contains(&ack.value) && !overwritten(ack))
            .map(|ack| ack.value)
            .collect();
        assert!(
            unexplained.is_empty(),
            "{name}: a read at version {} misses {unexplained:?}, and no warning covers them",
            read.version
        );
    }
    race.report(json!({
        "policy": "last-write-wins",
        "overwrite_warnings": warnings.len(),
        "writes_lost_explained_by_warnings": lost,
        "writes_lost_unexplained": 0,
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_servers_on_the_folder_store_lose_nothing_in_strict_mode_and_log_every_overwrite() {
    let cellar = Cellar::new();
    check_strict(&race("folder", &cellar, "strict", "hot-strict").await);
    check_last_write_wins(&race("folder", &cellar, "last-write-wins", "hot-lww").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_servers_on_seaweedfs_lose_nothing_in_strict_mode_and_log_every_overwrite() {
    let s3 = S3Server::start(S3Kind::SeaweedFs)
        .await
        .expect("SeaweedFS starts");
    let cellar = Cellar::on_s3(&s3);
    check_strict(&race("seaweedfs", &cellar, "strict", "hot-strict").await);
    check_last_write_wins(&race("seaweedfs", &cellar, "last-write-wins", "hot-lww").await);
}
