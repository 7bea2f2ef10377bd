//! What the reliability suites record (a [`Ledger`] of every answer) and what must hold
//! afterwards: intact local files, acknowledged writes in the bucket, versions that never
//! go back.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use cellar_engine::rusqlite::{Connection, OpenFlags};

use super::Cellar;
use super::api::{Api, Reply, is_stale_read_message};

/// An append answered 200.
#[derive(Clone, Debug)]
pub struct Ack {
    /// Whose list.
    pub user: String,
    /// The unique value appended.
    pub value: i64,
    /// The version the answer carried.
    pub version: u64,
    /// When it was answered, in the ledger's order of events.
    pub seq: u64,
}

/// A request answered with an error.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Whose database.
    pub user: String,
    /// The value an append tried to add; `None` for a read.
    pub value: Option<i64>,
    /// HTTP status.
    pub status: u16,
    /// `error.code`.
    pub code: String,
    /// `error.message`.
    pub message: String,
}

impl Failure {
    /// True for the version check refusing an older object than one already seen.
    pub fn is_stale_read(&self) -> bool {
        self.code == "store_unavailable" && is_stale_read_message(&self.message)
    }
}

/// A read answered 200.
#[derive(Clone, Debug)]
pub struct Read {
    /// Whose list.
    pub user: String,
    /// The version it was read at.
    pub version: u64,
    /// The list.
    pub values: Vec<i64>,
    /// The ledger's event count when the read was sent: every append acknowledged
    /// before (`seq < started`) must be in it.
    pub started: u64,
}

/// Every answer of a run, in the order they arrived.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Appends answered 200.
    pub acked: Vec<Ack>,
    /// Requests answered with an error.
    pub failed: Vec<Failure>,
    /// Appends without an answer (the server died): they may or may not have landed.
    pub unanswered: Vec<(String, i64)>,
    /// Reads answered 200.
    pub reads: Vec<Read>,
    events: u64,
}

impl Ledger {
    /// The ledger's event count: pass it to [`Ledger::read`] for a read sent now.
    pub fn now(&self) -> u64 {
        self.events
    }

    /// Records the answer to `append(user, value)`.
    pub fn append(&mut self, user: &str, value: i64, reply: Reply<()>) {
        self.events += 1;
        match reply {
            Reply::Ok { version, .. } => {
                self.acked.push(Ack {
                    user: user.to_owned(),
                    value,
                    version,
                    seq: self.events,
                });
            }
            Reply::Refused {
                status,
                code,
                message,
                ..
            } => {
                self.failed.push(Failure {
                    user: user.to_owned(),
                    value: Some(value),
                    status,
                    code,
                    message,
                });
            }
            Reply::NoAnswer(_) => self.unanswered.push((user.to_owned(), value)),
        }
    }

    /// Records the answer to a read of `user` sent at event count `started`.
    pub fn read(&mut self, user: &str, started: u64, reply: Reply<Vec<i64>>) {
        self.events += 1;
        match reply {
            Reply::Ok { version, value } => {
                self.reads.push(Read {
                    user: user.to_owned(),
                    version,
                    values: value,
                    started,
                });
            }
            Reply::Refused {
                status,
                code,
                message,
                ..
            } => {
                self.failed.push(Failure {
                    user: user.to_owned(),
                    value: None,
                    status,
                    code,
                    message,
                });
            }
            Reply::NoAnswer(_) => {}
        }
    }

    /// The values acknowledged for `user`.
    pub fn acked_values(&self, user: &str) -> Vec<i64> {
        self.acked
            .iter()
            .filter(|ack| ack.user == user)
            .map(|ack| ack.value)
            .collect()
    }

    /// The highest version acknowledged to an append of `user` (0 if none).
    pub fn highest_acked_version(&self, user: &str) -> u64 {
        self.acked
            .iter()
            .filter(|ack| ack.user == user)
            .map(|ack| ack.version)
            .max()
            .unwrap_or(0)
    }

    /// Appends refused with `code`, as (user, value).
    pub fn appends_refused_with(&self, code: &str) -> Vec<(String, i64)> {
        self.failed
            .iter()
            .filter(|failure| failure.code == code)
            .filter_map(|failure| Some((failure.user.clone(), failure.value?)))
            .collect()
    }

    /// The evidence of every stale read Cellar refused.
    pub fn stale_reads(&self) -> Vec<String> {
        self.failed
            .iter()
            .filter(|failure| failure.is_stale_read())
            .map(|failure| failure.message.clone())
            .collect()
    }

    /// The `sync_pending` answers that said "kept locally as version N" for which no
    /// append so answered is in `final_values` of its user: a pending write that was
    /// dropped (invariant 2). Each such version was announced first to the appends whose
    /// own upload failed, so at least one of them must be kept; later requests that merely
    /// waited for it got the same words (see `docs/reliability.md`, findings).
    pub fn dropped_pending_writes(&self, final_values: impl Fn(&str) -> Vec<i64>) -> Vec<String> {
        let mut announced: HashMap<(String, u64), Vec<i64>> = HashMap::new();
        for failure in self
            .failed
            .iter()
            .filter(|failure| failure.code == "sync_pending")
        {
            if let (Some(value), Some(version)) = (failure.value, pending_version(&failure.message))
            {
                announced
                    .entry((failure.user.clone(), version))
                    .or_default()
                    .push(value);
            }
        }
        announced
            .into_iter()
            .filter(|((user, _), values)| {
                let kept = final_values(user);
                !values.iter().any(|value| kept.contains(value))
            })
            .map(|((user, version), values)| {
                format!("{user} version {version}: none of {values:?} was kept")
            })
            .collect()
    }

    /// Failed requests by error code.
    pub fn failures_by_code(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for failure in &self.failed {
            *counts.entry(failure.code.clone()).or_default() += 1;
        }
        counts
    }

    /// Every read that misses an append acknowledged before it was sent (invariant 6,
    /// fresh reads), as text.
    pub fn stale_answers(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for read in &self.reads {
            let seen: HashSet<i64> = read.values.iter().copied().collect();
            let missed: Vec<i64> = self
                .acked
                .iter()
                .filter(|ack| {
                    ack.user == read.user && ack.seq < read.started && !seen.contains(&ack.value)
                })
                .map(|ack| ack.value)
                .collect();
            if !missed.is_empty() {
                problems.push(format!(
                    "a read of {} at version {} misses earlier acknowledged appends {missed:?}",
                    read.user, read.version
                ));
            }
        }
        problems
    }
}

/// N in a `sync_pending` message "... is kept locally as version N and is pending upload".
fn pending_version(message: &str) -> Option<u64> {
    let rest = message.split("kept locally as version ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// A ledger shared by concurrent clients.
#[derive(Clone, Debug, Default)]
pub struct SharedLedger(Arc<Mutex<Ledger>>);

impl SharedLedger {
    /// Locks the ledger.
    pub fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The ledger, once every client is done.
    pub fn into_inner(self) -> Ledger {
        match Arc::try_unwrap(self.0) {
            Ok(mutex) => mutex
                .into_inner()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            Err(_) => panic!("a client still holds the ledger"),
        }
    }
}

/// A user's database as the bucket has it.
#[derive(Clone, Debug)]
pub struct Remote {
    /// Its `cellar-version`.
    pub version: u64,
    /// Its list, in append order.
    pub values: Vec<i64>,
}

/// `user`'s database in the bucket, downloaded with `cellar pull` (checked against its
/// checksum by the command); `None` if the bucket has none.
pub fn bucket(cellar: &Cellar, user: &str) -> Option<Remote> {
    let file = cellar.path().join(format!("pulled-{user}.sqlite"));
    let file_arg = file.to_str().expect("a UTF-8 temp path");
    let output = cellar.run(&["pull", user, "-o", file_arg, "--force", "--json"], &[]);
    if output.status.code() == Some(1) {
        return None;
    }
    super::assert_exit(&output, 0);
    let pulled: serde_json::Value = serde_json::from_slice(&output.stdout).expect("pull --json");
    let version = pulled["version"].as_u64().expect("pulled version");
    Some(Remote {
        version,
        values: values_in(&file),
    })
}

/// `cellar verify --all`: every object matches its checksum and passes
/// `PRAGMA integrity_check`. Returns how many were checked.
pub fn verify_all(cellar: &Cellar) -> u64 {
    let verified = cellar.json(&["verify", "--all"], &[], 0);
    assert_eq!(verified["ok"], true, "{verified}");
    verified["checked"].as_u64().expect("checked count")
}

/// The list in table `t` of the SQLite file at `path` (empty without the table).
pub fn values_in(path: &Path) -> Vec<i64> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open a database");
    let exists: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 't'",
            [],
            |row| row.get(0),
        )
        .expect("read the schema");
    if exists == 0 {
        return Vec::new();
    }
    let mut statement = conn
        .prepare("SELECT v FROM t ORDER BY rowid")
        .expect("prepare");
    statement
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("read the values")
}

/// The users with a local folder under `data_dir`.
/// Waits (10 s at most) until no user's download waits to be installed. A server answers
/// requests from a download and installs it in the background once its SHA-256 and fsync
/// are done; only then are a user's files at rest. False if they never came to rest.
pub async fn downloads_installed(data_dir: &Path) -> bool {
    for _ in 0..200 {
        let waiting = local_users(data_dir).iter().any(|user| {
            data_dir
                .join(user)
                .join("database.sqlite.download")
                .exists()
        });
        if !waiting {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

pub fn local_users(data_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return Vec::new();
    };
    let mut users: Vec<String> = entries
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    users.sort();
    users
}

/// The users under `data_dir` with a pending upload recorded.
pub fn pending_uploads(data_dir: &Path) -> Vec<String> {
    local_users(data_dir)
        .into_iter()
        .filter(|user| data_dir.join(user).join("pending.json").exists())
        .collect()
}

/// What a crash left under `data_dir`, checked as SQLite will find it: each local
/// database is copied with its companions (a hot journal is rolled back when the copy is
/// opened, as it will be when the server next opens the file), then
/// `PRAGMA integrity_check` runs on the copy. Never touches the originals.
#[derive(Debug, Default)]
pub struct LocalCheck {
    /// Databases checked.
    pub databases: usize,
    /// Of which had a hot journal (a transaction cut short).
    pub hot_journals: usize,
    /// What is wrong, by file.
    pub problems: Vec<String>,
}

/// Checks every local database under `data_dir`; see [`LocalCheck`].
pub fn check_local_databases(data_dir: &Path) -> LocalCheck {
    let mut check = LocalCheck::default();
    for user in local_users(data_dir) {
        let original = data_dir.join(&user).join("database.sqlite");
        if !original.exists() {
            continue; // an install cut short: the next request downloads again
        }
        check.databases += 1;
        let scratch = tempfile::tempdir().expect("temp dir");
        let copy = scratch.path().join("database.sqlite");
        std::fs::copy(&original, &copy).expect("copy the database");
        for suffix in ["-journal", "-wal", "-shm"] {
            let companion = data_dir
                .join(&user)
                .join(format!("database.sqlite{suffix}"));
            if companion.exists() {
                check.hot_journals += usize::from(suffix == "-journal");
                std::fs::copy(
                    &companion,
                    scratch.path().join(format!("database.sqlite{suffix}")),
                )
                .expect("copy a companion");
            }
        }
        let verdict = Connection::open(&copy).and_then(|conn| {
            conn.query_row("PRAGMA integrity_check", [], |row| row.get::<_, String>(0))
        });
        match verdict {
            Ok(verdict) if verdict == "ok" => {}
            Ok(verdict) => check.problems.push(format!(
                "{}: integrity_check says {verdict}",
                original.display()
            )),
            Err(err) => check
                .problems
                .push(format!("{}: cannot be opened: {err}", original.display())),
        }
    }
    check
}

/// The values of `wanted` that are not in `found`.
pub fn missing(wanted: &[i64], found: &[i64]) -> Vec<i64> {
    let found: HashSet<i64> = found.iter().copied().collect();
    wanted
        .iter()
        .copied()
        .filter(|value| !found.contains(value))
        .collect()
}

/// The values that occur more than once in `found` (each append adds a unique value).
pub fn duplicates(found: &[i64]) -> Vec<i64> {
    let mut seen = HashSet::new();
    found
        .iter()
        .copied()
        .filter(|value| !seen.insert(*value))
        .collect()
}

/// After a fault ended: the bucket (`cellar pull`) and the server hold every acknowledged
/// write, no value twice, at a version at least every acknowledged one, and none of the
/// appends answered `store_unavailable` (they changed nothing). Returns the bucket's
/// databases.
pub async fn check_recovered(
    name: &str,
    cellar: &Cellar,
    api: &Api,
    ledger: &Ledger,
    users: &[&str],
) -> HashMap<String, Remote> {
    let unavailable: HashSet<i64> = ledger
        .appends_refused_with("store_unavailable")
        .into_iter()
        .map(|(_, value)| value)
        .collect();
    let mut held = HashMap::new();
    for &user in users {
        let acked = ledger.acked_values(user);
        let remote =
            bucket(cellar, user).unwrap_or_else(|| panic!("{name}: {user} is not in the bucket"));
        let lost = missing(&acked, &remote.values);
        assert!(
            lost.is_empty(),
            "{name}: acknowledged writes {lost:?} of {user} are missing from the bucket"
        );
        assert!(
            duplicates(&remote.values).is_empty(),
            "{name}: {user} has values twice: {:?}",
            duplicates(&remote.values)
        );
        let changed: Vec<i64> = remote
            .values
            .iter()
            .copied()
            .filter(|value| unavailable.contains(value))
            .collect();
        assert!(
            changed.is_empty(),
            "{name}: appends {changed:?} answered store_unavailable (nothing changed) are in the bucket"
        );
        assert!(
            remote.version >= ledger.highest_acked_version(user),
            "{name}: {user} went back"
        );
        match api.values(user).await {
            Reply::Ok { version, value } => {
                assert_eq!(
                    (version, &value),
                    (remote.version, &remote.values),
                    "{name}: the server serves the bucket's {user}"
                );
            }
            other => panic!("{name}: reading {user} at the end failed: {other:?}"),
        }
        held.insert(user.to_owned(), remote);
    }
    held
}
