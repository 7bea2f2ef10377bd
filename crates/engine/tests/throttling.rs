//! Throttling: the S3 store retries 429 and 503 answers with backoff, so a throttled upload
//! still lands; a store that keeps refusing ends in a clear error within the retry bound.
//!
//! A small reverse proxy on 127.0.0.1 stands between [`S3Store::new`] and a real SeaweedFS.
//! It forwards every request as it came (method, path and query, headers with `Host` and
//! the SigV4 `Authorization`, body), so signatures stay valid, and answers a scripted
//! number of requests of one method itself, with S3's `SlowDown` error. It can also enforce
//! Cloudflare R2's rule of about one write per second per key, which is what the delta log
//! (`docs/delta-sync.md`, "Why a new key per version") is measured against.
//!
//! `S3Store::new` takes its keys from the environment, and setting a variable in a
//! threaded test process needs `unsafe`. So each test starts SeaweedFS, then runs its body
//! in a child process (this test binary again, with `--exact`) whose environment carries
//! the keys and where SeaweedFS is.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, IF_MATCH, IF_NONE_MATCH};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cellar_engine::store::StoreError;
use cellar_engine::{
    ConflictPolicy, Engine, EngineConfig, Error, ErrorKind, S3Settings, S3Store, Store, UserId,
    Version,
};
use cellar_testkit::S3Server;
use common::{append, remote_version, user, values};

/// Set in the child process: where SeaweedFS answers, and its bucket and region.
const UPSTREAM_ENV: &str = "CELLAR_THROTTLING_UPSTREAM";
const BUCKET_ENV: &str = "CELLAR_THROTTLING_BUCKET";
const REGION_ENV: &str = "CELLAR_THROTTLING_REGION";

/// `object_store`'s first backoff (`BackoffConfig::default().init_backoff`); later ones
/// are drawn between it and twice the previous one. No retry can come sooner.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The `RetryConfig` of [`S3Store::new`].
const MAX_RETRIES: usize = 4;
const RETRY_TIMEOUT: Duration = Duration::from_secs(20);
/// Cloudflare R2 takes about one write per second per key.
const R2_WRITE_INTERVAL: Duration = Duration::from_secs(1);
/// The hot user's workload: this many concurrent writers, each appending one row per
/// request, start requests for this long.
const HOT_WRITERS: i64 = 8;
const HOT_WRITING_TIME: Duration = Duration::from_secs(4);
/// Compaction every 16 versions rather than the default 64: a hot user then makes its
/// compactions rewrite the snapshot more often than R2 allows, whatever the engine's
/// speed, so the run shows those refusals never reaching a write.
const HOT_COMPACT_AFTER_VERSIONS: u64 = 16;
/// The bound of each test's body, and of the child process that runs it.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
const CHILD_TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn an_upload_answered_429_twice_is_retried_with_backoff_and_lands() {
    let test = "an_upload_answered_429_twice_is_retried_with_backoff_and_lands";
    if let Some(upstream) = upstream_for(test).await {
        // The user's first upload: `If-None-Match: *`.
        bounded(upload_lands_after_two_refusals(
            upstream,
            StatusCode::TOO_MANY_REQUESTS,
            0,
        ))
        .await;
    }
}

#[tokio::test]
async fn an_upload_answered_503_twice_is_retried_with_backoff_and_lands() {
    let test = "an_upload_answered_503_twice_is_retried_with_backoff_and_lands";
    if let Some(upstream) = upstream_for(test).await {
        // A later version: the log object of the change, `If-None-Match: *`.
        bounded(upload_lands_after_two_refusals(
            upstream,
            StatusCode::SERVICE_UNAVAILABLE,
            1,
        ))
        .await;
    }
}

#[tokio::test]
async fn a_version_check_answered_429_once_is_retried_and_the_request_succeeds() {
    let test = "a_version_check_answered_429_once_is_retried_and_the_request_succeeds";
    let Some(upstream) = upstream_for(test).await else {
        return;
    };
    bounded(async {
        let (fixture, alice) = Fixture::with_writes(upstream, 1).await;
        fixture
            .proxy
            .throttle(Method::GET, StatusCode::TOO_MANY_REQUESTS, Some(1));

        assert_eq!(values(&fixture.engine, &alice).await, [1]);

        let gets = fixture.proxy.seen(&Method::GET);
        assert_eq!(throttled(&gets), [true, false], "{gets:#?}");
        let check = fixture.change_path(&alice, Version::new(1));
        assert!(
            gets.iter().all(|get| get.path == check),
            "both tries are the version check, a read of the change after version 1: {gets:#?}"
        );
        assert_spaced_by_backoff(&gets);
        assert!(
            fixture.proxy.seen(&Method::PUT).is_empty(),
            "a read uploads nothing"
        );
        println!("GET 429 once: retried after {:?}", gaps(&gets));
    })
    .await;
}

#[tokio::test]
async fn an_upload_answered_503_every_time_is_pending_after_the_bounded_retries() {
    let test = "an_upload_answered_503_every_time_is_pending_after_the_bounded_retries";
    let Some(upstream) = upstream_for(test).await else {
        return;
    };
    bounded(async {
        let (fixture, alice, err, elapsed) = write_while_refused(upstream, Method::PUT).await;

        match &err {
            Error::SyncPending {
                version,
                source:
                    StoreError::Unavailable {
                        operation, message, ..
                    },
                ..
            } => {
                assert_eq!(*version, Version::new(2));
                assert_eq!(*operation, "put");
                assert!(
                    message.contains("503") && message.contains("(SlowDown)"),
                    "{message}"
                );
                // What reaches a client names the failure, not the endpoint or bucket.
                assert!(
                    !message.contains("127.0.0.1") && !message.contains(&fixture.bucket),
                    "{message}"
                );
            }
            other => panic!("expected sync_pending after a failed upload, got {other:?}"),
        }
        assert_eq!(err.kind(), ErrorKind::SyncPending);
        assert!(
            err.to_string().contains("object store unavailable (put "),
            "{err}"
        );
        let puts = fixture.proxy.seen(&Method::PUT);
        assert_eq!(puts.len(), 1 + MAX_RETRIES, "{puts:#?}");
        assert!(puts.iter().all(|put| put.throttled));
        assert_spaced_by_backoff(&puts);
        assert!(elapsed < RETRY_TIMEOUT, "gave up after {elapsed:?}");
        println!(
            "PUT 503 always: {} tries {:?} apart, error after {elapsed:?}: {err}",
            puts.len(),
            gaps(&puts)
        );

        // The bucket still holds version 1; the write waits in the pending-upload record
        // and is uploaded before this user is served again, once the store answers.
        assert_eq!(remote_version(&fixture.reader, &alice).await, 1);
        assert!(fixture.pending_record(&alice).exists());
        fixture.proxy.stop_throttling();
        assert_eq!(values(&fixture.engine, &alice).await, [1, 2]);
        assert_eq!(remote_version(&fixture.reader, &alice).await, 2);
        assert_eq!(values(&fixture.reader, &alice).await, [1, 2]);
    })
    .await;
}

#[tokio::test]
async fn a_version_check_answered_503_every_time_fails_as_unavailable_and_changes_nothing() {
    let test = "a_version_check_answered_503_every_time_fails_as_unavailable_and_changes_nothing";
    let Some(upstream) = upstream_for(test).await else {
        return;
    };
    bounded(async {
        let (fixture, alice, err, elapsed) = write_while_refused(upstream, Method::GET).await;

        assert!(
            matches!(
                &err,
                Error::Store(StoreError::Unavailable { operation: "get", message, .. })
                    if message.contains("503")
            ),
            "{err:?}"
        );
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(
            err.to_string().contains("object store unavailable (get "),
            "{err}"
        );
        let gets = fixture.proxy.seen(&Method::GET);
        assert_eq!(gets.len(), 1 + MAX_RETRIES, "{gets:#?}");
        assert_spaced_by_backoff(&gets);
        assert!(elapsed < RETRY_TIMEOUT, "gave up after {elapsed:?}");
        assert!(fixture.proxy.seen(&Method::PUT).is_empty());
        println!(
            "GET 503 always: {} tries {:?} apart, error after {elapsed:?}: {err}",
            gets.len(),
            gaps(&gets)
        );

        // The request did not run: nothing pending, nothing new here or in the bucket.
        assert!(!fixture.pending_record(&alice).exists());
        fixture.proxy.stop_throttling();
        assert_eq!(values(&fixture.engine, &alice).await, [1]);
        assert_eq!(remote_version(&fixture.reader, &alice).await, 1);
    })
    .await;
}

/// The point of the delta log: on a store that takes one write per second per key, one
/// user's writes are no longer bound to one upload per second, since every version after
/// the first creates its own key. The whole-file design wrote `database.sqlite` every time,
/// so it could never pass one upload a second; pacing (`min_upload_interval`) was how it
/// stayed under the limit, and the second run measures that for comparison.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_user_is_not_bound_by_one_write_per_second_per_key() {
    let test = "a_hot_user_is_not_bound_by_one_write_per_second_per_key";
    let Some(upstream) = upstream_for(test).await else {
        return;
    };
    show_engine_log();
    bounded(async {
        let unpaced = hot_user_run(upstream.clone(), "hot", Duration::ZERO).await;
        unpaced.print("no pacing");
        assert!(
            unpaced.writes_per_second() > 3.0,
            "one write per second per key still binds the user"
        );
        assert!(
            unpaced.uploads_per_write() < 1.0,
            "concurrent writes did not share uploads (group commit)"
        );
        // Group commit alone gives writers × 1 writes a second at one upload a second;
        // more than one upload a second is what one key per version buys.
        assert!(
            unpaced.uploads_per_second() > 1.0,
            "uploads are still bound to one a second"
        );
        assert_eq!(unpaced.refused_log_puts, 0, "each log key is written once");

        let paced = hot_user_run(upstream, "paced", R2_WRITE_INTERVAL).await;
        paced.print("pacing 1 s");
    })
    .await;
}

/// Tests 1 and 2: after `earlier_writes` writes, the next upload is answered `status` twice,
/// then lands on the third try, as one upload for the engine.
async fn upload_lands_after_two_refusals(
    upstream: Upstream,
    status: StatusCode,
    earlier_writes: i64,
) {
    let (fixture, alice) = Fixture::with_writes(upstream, earlier_writes).await;
    let uploads_before = fixture.engine.metrics().uploads.load(Ordering::Relaxed);
    fixture.proxy.throttle(Method::PUT, status, Some(2));

    let started = Instant::now();
    let committed = append(&fixture.engine, &alice, 100).await.unwrap();
    let elapsed = started.elapsed();

    let version = earlier_writes.unsigned_abs() + 1;
    assert_eq!(committed.version, Version::new(version));
    assert!(committed.wrote && committed.in_bucket);
    let puts = fixture.proxy.seen(&Method::PUT);
    assert_eq!(throttled(&puts), [true, true, false], "{puts:#?}");
    // Every commit point creates its key: the snapshot of a new user, else the log object
    // of the change after the version before (`docs/delta-sync.md`).
    let key = if earlier_writes == 0 {
        fixture.snapshot_path(&alice)
    } else {
        fixture.change_path(&alice, Version::new(earlier_writes.unsigned_abs()))
    };
    assert!(puts.iter().all(|put| put.path == key), "{puts:#?}");
    assert!(
        puts[0].if_match.is_none() && puts[0].if_none_match.as_deref() == Some("*"),
        "{puts:#?}"
    );
    assert!(
        puts.iter().all(|put| (&put.if_match, &put.if_none_match)
            == (&puts[0].if_match, &puts[0].if_none_match)),
        "every try carries the same condition: {puts:#?}"
    );
    assert_spaced_by_backoff(&puts);
    assert_eq!(
        fixture.engine.metrics().uploads.load(Ordering::Relaxed),
        uploads_before + 1,
        "the retries are the store client's: the engine made one upload"
    );
    assert_eq!(
        fixture.engine.metrics().conflicts.load(Ordering::Relaxed),
        0
    );
    println!(
        "PUT {status} twice: tries {:?} apart, write took {elapsed:?}",
        gaps(&puts)
    );

    let mut expected: Vec<i64> = (1..=earlier_writes).collect();
    expected.push(100);
    assert_eq!(remote_version(&fixture.reader, &alice).await, version);
    assert_eq!(values(&fixture.reader, &alice).await, expected);
}

/// What one run of the hot user's workload measured.
struct HotRun {
    acknowledged: usize,
    /// From the first request to the last acknowledgement.
    elapsed: Duration,
    /// The engine's `uploads` in that time (commits of requests; compaction is not one).
    uploads: u64,
    /// `PUT`s the proxy answered 429 under R2's rule, to log keys and to the snapshot.
    refused_log_puts: usize,
    refused_snapshot_puts: usize,
    /// Compaction's `PUT`s of the snapshot (`If-Match`), tries included, and how many landed.
    snapshot_puts: usize,
    snapshots_landed: usize,
    /// The bucket afterwards: the snapshot's version, and the changes logged after it.
    snapshot_version: u64,
    changes_after_snapshot: u64,
}

impl HotRun {
    fn writes_per_second(&self) -> f64 {
        self.acknowledged as f64 / self.elapsed.as_secs_f64()
    }

    fn uploads_per_write(&self) -> f64 {
        self.uploads as f64 / self.acknowledged as f64
    }

    fn uploads_per_second(&self) -> f64 {
        self.uploads as f64 / self.elapsed.as_secs_f64()
    }

    /// One line per figure, so a reviewer can quote them.
    fn print(&self, label: &str) {
        eprintln!(
            "[{label}] acknowledged writes per second: {:.1} ({} writes by {HOT_WRITERS} writers in {:.2?})",
            self.writes_per_second(),
            self.acknowledged,
            self.elapsed
        );
        eprintln!(
            "[{label}] uploads per acknowledged write: {:.3} ({} uploads, {:.1} per second)",
            self.uploads_per_write(),
            self.uploads,
            self.uploads_per_second()
        );
        eprintln!(
            "[{label}] PUTs refused 429: log/ keys {}, database.sqlite {}",
            self.refused_log_puts, self.refused_snapshot_puts
        );
        eprintln!(
            "[{label}] compaction snapshot PUTs landed: {} ({} tries); bucket: snapshot at version {}, {} changes after it",
            self.snapshots_landed,
            self.snapshot_puts,
            self.snapshot_version,
            self.changes_after_snapshot
        );
    }
}

/// A fresh fixture under R2's rule whose proxied engine paces uploads by `pacing`: runs
/// the hot workload on user `name`, lets background work (compaction) finish, checks that
/// every acknowledged write is there, and answers what the proxy and the engine saw.
async fn hot_user_run(upstream: Upstream, name: &str, pacing: Duration) -> HotRun {
    let fixture = Fixture::open_with(upstream, |config| {
        config.min_upload_interval = pacing;
        config.compact_after_versions = HOT_COMPACT_AFTER_VERSIONS;
    })
    .await;
    fixture.proxy.limit_writes_per_key(R2_WRITE_INTERVAL);
    let hot = user(name);
    let uploads = || fixture.engine.metrics().uploads.load(Ordering::Relaxed);
    let uploads_before = uploads();
    let started = Instant::now();
    let acknowledged = write_concurrently(&fixture.engine, &hot).await;
    let elapsed = started.elapsed();
    let uploads = uploads() - uploads_before;
    fixture.engine.settle().await;
    assert_all_present(&fixture, &hot, &acknowledged).await;

    let snapshot = fixture.snapshot_path(&hot);
    let puts = fixture.proxy.seen(&Method::PUT);
    let refused = |is_kind: &dyn Fn(&str) -> bool| {
        puts.iter()
            .filter(|put| put.throttled && is_kind(&put.path))
            .count()
    };
    let remote = fixture.reader.bucket_reader().remote_status(&hot).await;
    let remote = remote.unwrap().unwrap();
    HotRun {
        acknowledged: acknowledged.len(),
        elapsed,
        uploads,
        refused_log_puts: refused(&|path| path.contains("/log/")),
        refused_snapshot_puts: refused(&|path| path == snapshot),
        snapshot_puts: puts
            .iter()
            .filter(|put| put.path == snapshot && put.if_match.is_some())
            .count(),
        // The first write to the snapshot created the user.
        snapshots_landed: fixture.proxy.writes_to(&snapshot) - 1,
        snapshot_version: remote.snapshot.version.get(),
        changes_after_snapshot: remote.changes,
    }
}

/// [`HOT_WRITERS`] writers append to `user`, one row per request, each starting requests
/// for [`HOT_WRITING_TIME`]. Every request must succeed: nothing on a store that throttles
/// only rewrites of a key may fail one. Answers the values acknowledged.
async fn write_concurrently(engine: &Engine, user: &UserId) -> Vec<i64> {
    let started = Instant::now();
    let writers = (0..HOT_WRITERS).map(|writer| {
        let (engine, user) = (engine.clone(), user.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut value = writer * 1_000_000;
            while started.elapsed() < HOT_WRITING_TIME {
                append(&engine, &user, value)
                    .await
                    .unwrap_or_else(|err| panic!("writing {value} failed: {err}"));
                acknowledged.push(value);
                value += 1;
            }
            acknowledged
        })
    });
    let joined = futures::future::join_all(writers).await;
    joined.into_iter().flat_map(Result::unwrap).collect()
}

/// Asserts that `user`'s rows are exactly the `acknowledged` values, both on the engine
/// that wrote them and on a cold start: the reader has never opened `user`, so it reads
/// the snapshot and the log after it.
async fn assert_all_present(fixture: &Fixture, user: &UserId, acknowledged: &[i64]) {
    let mut expected = acknowledged.to_vec();
    expected.sort_unstable();
    for (engine, which) in [
        (&fixture.engine, "the writer"),
        (&fixture.reader, "a cold start"),
    ] {
        let mut rows = values(engine, user).await;
        rows.sort_unstable();
        assert_eq!(
            rows.len(),
            expected.len(),
            "{which}: rows against acknowledged writes"
        );
        assert_eq!(rows, expected, "{which}: rows against acknowledged writes");
    }
}

/// Shows the engine's warnings and its compactions in the test's output, where a reviewer
/// looks for anything odd.
fn show_engine_log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,cellar_engine::sync::compact=info")
        .with_writer(std::io::stderr)
        .try_init();
}

/// Where the child process finds SeaweedFS.
#[derive(Clone)]
struct Upstream {
    endpoint: String,
    bucket: String,
    region: String,
}

/// In the test process: starts SeaweedFS, runs `test` again in a child process whose
/// environment holds the keys and where SeaweedFS is, checks that it passed, and returns
/// `None`. In that child: returns where SeaweedFS is.
async fn upstream_for(test: &str) -> Option<Upstream> {
    if let (Ok(endpoint), Ok(bucket), Ok(region)) = (
        std::env::var(UPSTREAM_ENV),
        std::env::var(BUCKET_ENV),
        std::env::var(REGION_ENV),
    ) {
        return Some(Upstream {
            endpoint,
            bucket,
            region,
        });
    }
    let server = S3Server::seaweedfs().await.unwrap();
    let child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(UPSTREAM_ENV, &server.endpoint)
        .env(BUCKET_ENV, &server.bucket)
        .env(REGION_ENV, &server.region)
        .env("AWS_ACCESS_KEY_ID", &server.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &server.secret_access_key)
        .env_remove("AWS_SESSION_TOKEN")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(CHILD_TIMEOUT, child)
        .await
        .unwrap_or_else(|_| panic!("{test}: the child process ran past {CHILD_TIMEOUT:?}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{test} failed in its child process ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // Its `println!`s, then its `eprintln!`s and the engine's log.
    eprintln!("{stdout}{stderr}");
    None
}

/// Runs a test's body, failing it if it takes longer than [`TEST_TIMEOUT`].
async fn bounded(body: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .unwrap_or_else(|_| panic!("the test ran past {TEST_TIMEOUT:?}"));
}

/// An engine whose [`S3Store`] goes through the throttling proxy, and a reader engine
/// that reaches SeaweedFS directly (to see what the bucket holds).
struct Fixture {
    proxy: Proxy,
    engine: Engine,
    reader: Engine,
    bucket: String,
    _dirs: [tempfile::TempDir; 2],
}

/// Alice at version 1, then every `method` answered 503 while she appends 2: the error
/// and how long it took to come.
async fn write_while_refused(
    upstream: Upstream,
    method: Method,
) -> (Fixture, UserId, Error, Duration) {
    let (fixture, alice) = Fixture::with_writes(upstream, 1).await;
    fixture
        .proxy
        .throttle(method, StatusCode::SERVICE_UNAVAILABLE, None);
    let started = Instant::now();
    let err = append(&fixture.engine, &alice, 2).await.unwrap_err();
    (fixture, alice, err, started.elapsed())
}

impl Fixture {
    /// Opens both engines, then appends 1 to `writes` to alice's database, unthrottled.
    async fn with_writes(upstream: Upstream, writes: i64) -> (Fixture, UserId) {
        let fixture = Fixture::open(upstream).await;
        let alice = user("alice");
        for value in 1..=writes {
            append(&fixture.engine, &alice, value).await.unwrap();
        }
        (fixture, alice)
    }

    /// Opens both engines with the default settings.
    async fn open(upstream: Upstream) -> Fixture {
        Fixture::open_with(upstream, |_| {}).await
    }

    /// Opens both engines, the proxied one with `configure` applied to its settings; the
    /// start-up probe goes through the proxy unthrottled.
    async fn open_with(upstream: Upstream, configure: impl FnOnce(&mut EngineConfig)) -> Fixture {
        let proxy = Proxy::start(&upstream.endpoint).await;
        let store = |endpoint: &str| -> Arc<dyn Store> {
            Arc::new(
                S3Store::new(&S3Settings {
                    bucket: upstream.bucket.clone(),
                    endpoint: Some(endpoint.to_owned()),
                    region: Some(upstream.region.clone()),
                    allow_http: true,
                })
                .unwrap(),
            )
        };
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let policy = ConflictPolicy::Strict;
        let mut config = common::config(dirs[0].path(), policy, "a");
        configure(&mut config);
        let engine = Engine::open(config, store(&proxy.endpoint)).await.unwrap();
        let reader =
            common::engine(store(&upstream.endpoint), dirs[1].path(), policy, "reader").await;
        Fixture {
            proxy,
            engine,
            reader,
            bucket: upstream.bucket,
            _dirs: dirs,
        }
    }

    /// The path of `user`'s snapshot in a path-style request.
    fn snapshot_path(&self, user: &UserId) -> String {
        self.object_path(&self.engine.layout().database_key(user))
    }

    /// The path of the log object of `user`'s change after version `after`.
    fn change_path(&self, user: &UserId, after: Version) -> String {
        self.object_path(&self.engine.layout().change_key(user, after))
    }

    fn object_path(&self, key: &str) -> String {
        format!("/{}/{key}", self.bucket)
    }

    /// `user`'s pending-upload record in the proxied engine's folder.
    fn pending_record(&self, user: &UserId) -> std::path::PathBuf {
        self.engine.layout().pending_record_path(user)
    }
}

/// Asserts that each try came at least [`FIRST_BACKOFF`] after the one before.
fn assert_spaced_by_backoff(tries: &[Seen]) {
    let gaps = gaps(tries);
    assert!(
        gaps.iter().all(|gap| *gap >= FIRST_BACKOFF),
        "retries closer than {FIRST_BACKOFF:?}: {gaps:?}"
    );
}

/// The time between consecutive requests.
fn gaps(tries: &[Seen]) -> Vec<Duration> {
    tries.windows(2).map(|w| w[1].at - w[0].at).collect()
}

/// Which of the requests the proxy answered itself.
fn throttled(tries: &[Seen]) -> Vec<bool> {
    tries.iter().map(|seen| seen.throttled).collect()
}

/// A reverse proxy on 127.0.0.1 in front of SeaweedFS that throttles on request.
struct Proxy {
    /// `http://127.0.0.1:PORT`.
    endpoint: String,
    state: Arc<ProxyState>,
}

/// What the proxy's handler shares with the test.
struct ProxyState {
    /// SeaweedFS's endpoint.
    upstream: String,
    client: reqwest::Client,
    throttle: Mutex<Option<Throttle>>,
    /// R2's rule, once set: a `PUT` to a key written less than this long ago is answered
    /// 429 `SlowDown` without reaching SeaweedFS.
    write_interval: Mutex<Option<Duration>>,
    /// The `PUT`s SeaweedFS accepted, by path: what R2's rule checks, and what tests count.
    written: Mutex<HashMap<String, Written>>,
    seen: Mutex<Vec<Seen>>,
}

/// The writes SeaweedFS accepted to one key.
struct Written {
    /// When the last one was answered.
    last: Instant,
    count: usize,
}

/// Which requests the proxy answers itself, and how.
struct Throttle {
    method: Method,
    status: StatusCode,
    /// How many more to answer; `None`: every one.
    remaining: Option<usize>,
}

/// One request the proxy received.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    /// Path and query.
    path: String,
    if_match: Option<String>,
    if_none_match: Option<String>,
    at: Instant,
    /// Answered by the proxy instead of SeaweedFS.
    throttled: bool,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(ProxyState {
            upstream: upstream.to_owned(),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            throttle: Mutex::new(None),
            write_interval: Mutex::new(None),
            written: Mutex::new(HashMap::new()),
            seen: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(forward).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Proxy { endpoint, state }
    }

    /// Answers the next `times` requests of `method` (`None`: all of them) with `status`,
    /// and forgets the requests seen so far.
    fn throttle(&self, method: Method, status: StatusCode, times: Option<usize>) {
        *self.state.throttle.lock().unwrap() = Some(Throttle {
            method,
            status,
            remaining: times,
        });
        self.state.seen.lock().unwrap().clear();
    }

    fn stop_throttling(&self) {
        *self.state.throttle.lock().unwrap() = None;
    }

    /// From now on, enforces R2's rule: a `PUT` to a key whose last write SeaweedFS
    /// accepted less than `interval` ago is answered 429 `SlowDown`. `GET`s and `HEAD`s
    /// pass as they came.
    fn limit_writes_per_key(&self, interval: Duration) {
        *self.state.write_interval.lock().unwrap() = Some(interval);
    }

    /// How many `PUT`s to `path` SeaweedFS accepted since the proxy started.
    fn writes_to(&self, path: &str) -> usize {
        let written = self.state.written.lock().unwrap();
        written.get(path).map_or(0, |written| written.count)
    }

    /// The requests of `method` seen since [`Proxy::throttle`].
    fn seen(&self, method: &Method) -> Vec<Seen> {
        let seen = self.state.seen.lock().unwrap();
        seen.iter()
            .filter(|seen| seen.method == method)
            .cloned()
            .collect()
    }
}

impl ProxyState {
    /// Records a request; returns the status to answer it with if it is throttled.
    fn admit(&self, parts: &Parts) -> Option<StatusCode> {
        let status = self
            .scripted(&parts.method)
            .or_else(|| self.over_write_limit(parts));
        let header = |name| {
            parts
                .headers
                .get(name)
                .map(|value: &axum::http::HeaderValue| {
                    String::from_utf8_lossy(value.as_bytes()).into_owned()
                })
        };
        self.seen.lock().unwrap().push(Seen {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            if_match: header(IF_MATCH),
            if_none_match: header(IF_NONE_MATCH),
            at: Instant::now(),
            throttled: status.is_some(),
        });
        status
    }

    /// The scripted answer ([`Proxy::throttle`]) to a request of `method`, if one is due.
    fn scripted(&self, method: &Method) -> Option<StatusCode> {
        let mut throttle = self.throttle.lock().unwrap();
        match throttle.as_mut() {
            Some(throttle) if throttle.method == method && throttle.remaining != Some(0) => {
                if let Some(remaining) = &mut throttle.remaining {
                    *remaining -= 1;
                }
                Some(throttle.status)
            }
            _ => None,
        }
    }

    /// R2's answer to a `PUT` that comes too soon after the last write of its key
    /// ([`Proxy::limit_writes_per_key`]).
    fn over_write_limit(&self, parts: &Parts) -> Option<StatusCode> {
        let interval = (*self.write_interval.lock().unwrap())?;
        let written = self.written.lock().unwrap();
        let last = written.get(parts.uri.path())?.last;
        (parts.method == Method::PUT && last.elapsed() < interval)
            .then_some(StatusCode::TOO_MANY_REQUESTS)
    }

    /// Notes a `PUT` to `path` that SeaweedFS accepted.
    fn wrote(&self, path: &str) {
        let now = Instant::now();
        let mut written = self.written.lock().unwrap();
        let entry = written.entry(path.to_owned()).or_insert(Written {
            last: now,
            count: 0,
        });
        entry.last = now;
        entry.count += 1;
    }
}

/// The proxy's one handler: throttles, or forwards to SeaweedFS and relays its answer.
async fn forward(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    if let Some(status) = state.admit(&parts) {
        return slow_down(status, parts.uri.path());
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let answer = state
        .client
        .request(
            parts.method.clone(),
            format!("{}{path_and_query}", state.upstream),
        )
        .headers(parts.headers)
        .body(body)
        .send()
        .await;
    match answer {
        Ok(answer) => {
            if parts.method == Method::PUT && answer.status().is_success() {
                state.wrote(parts.uri.path());
            }
            relay(answer, &parts.method).await
        }
        Err(err) => (StatusCode::BAD_GATEWAY, err.to_string()).into_response(),
    }
}

/// SeaweedFS's answer, as it came, minus hop-by-hop headers.
async fn relay(answer: reqwest::Response, method: &Method) -> Response {
    let status = answer.status();
    let mut headers = answer.headers().clone();
    let body = answer.bytes().await.unwrap();
    headers.remove(CONNECTION);
    headers.remove("transfer-encoding");
    if method != Method::HEAD {
        // The server writes it from the body; a HEAD answer keeps the object's length.
        headers.remove(CONTENT_LENGTH);
    }
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// S3's throttling answer.
fn slow_down(status: StatusCode, resource: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
         <Message>Please reduce your request rate.</Message><Resource>{resource}</Resource>\
         <RequestId>cellar-throttling-proxy</RequestId></Error>"
    );
    (status, [(CONTENT_TYPE, "application/xml")], body).into_response()
}
