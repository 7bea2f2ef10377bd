//! The log of changes (`docs/delta-sync.md`), as a property: any sequence of writes (rows
//! that grow, shrink and rewrite the file, indexes made and dropped), conflicts, compactions,
//! cold starts, restores and retention (`docs/history.md`), on two engines, reads back the
//! same rows as a plain SQLite file given the acknowledged writes in version order, and
//! every version history still lists rebuilds to the rows it had. And the store calls of
//! the steady state: one `PUT` per write, one `GET` per read.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use cellar_engine::store::FaultyStore;
use cellar_engine::{
    ConflictPolicy, Engine, EngineConfig, MemoryStore, RestoreTarget, Store, UserId, Version,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::Connection;

use common::user;

/// One write, as SQL that runs the same on the engine and on the plain file.
fn random_write(rng: &mut StdRng) -> String {
    let key = rng.random_range(0..40);
    match rng.random_range(0..9) {
        0..=2 => format!(
            "INSERT OR REPLACE INTO t(k, v, pad) VALUES ({key}, {}, zeroblob({}))",
            rng.random_range(0..1000),
            rng.random_range(0..600)
        ),
        3 => format!("UPDATE t SET v = v + 1 WHERE k = {key}"),
        4 => format!("DELETE FROM t WHERE k >= {key} AND k < {}", key + 5),
        5 => format!(
            "INSERT INTO big(b) VALUES (randomblob(0)); UPDATE big SET b = zeroblob({}) \
             WHERE rowid = last_insert_rowid()",
            rng.random_range(1..6) * 9000
        ),
        6 => "DELETE FROM big WHERE rowid IN (SELECT rowid FROM big ORDER BY rowid LIMIT 2)"
            .to_owned(),
        7 => "CREATE INDEX IF NOT EXISTS t_v ON t(v)".to_owned(),
        _ => "DROP INDEX IF EXISTS t_v".to_owned(),
    }
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS t(k INTEGER PRIMARY KEY, v INTEGER, pad BLOB);
     CREATE TABLE IF NOT EXISTS big(b BLOB);";

/// The rows of both tables, as text.
const ROWS: [&str; 2] = [
    "SELECT k || ':' || v || ':' || length(pad) FROM t ORDER BY k",
    "SELECT rowid || ':' || length(b) FROM big ORDER BY rowid",
];

/// The rows a plain SQLite file holds.
fn rows(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut all = Vec::new();
    for sql in ROWS {
        let mut statement = conn.prepare(sql)?;
        let found: Vec<String> = statement
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        all.extend(found);
    }
    Ok(all)
}

/// Writer "b" never walks back from its copy: its restores are rebuilt from a snapshot
/// (streamed past the copy), writer "a"'s walk back.
fn engine_config(dir: &std::path::Path, writer: &str, policy: ConflictPolicy) -> EngineConfig {
    let mut config = common::config(dir, policy, writer);
    config.compact_after_versions = 4;
    if writer == "b" {
        config.history.walk_back_changes = 0;
    }
    config
}

async fn open(
    store: &Arc<FaultyStore<MemoryStore>>,
    dir: &std::path::Path,
    writer: &str,
    policy: ConflictPolicy,
) -> Engine {
    Engine::open(
        engine_config(dir, writer, policy),
        store.clone() as Arc<dyn Store>,
    )
    .await
    .unwrap()
}

async fn write(engine: &Engine, user: &UserId, sql: String) -> cellar_engine::Result<Version> {
    engine
        .transact(user, move |conn| {
            conn.execute_batch(SCHEMA)?;
            conn.execute_batch(&sql)?;
            Ok(())
        })
        .await
        .map(|committed| committed.version)
}

async fn read(engine: &Engine, user: &UserId) -> Vec<String> {
    engine
        .transact(user, |conn| {
            let mut all = Vec::new();
            for sql in ROWS {
                all.extend(conn.query_map(sql, [], |row| row.get::<_, String>(0))?);
            }
            Ok(all)
        })
        .await
        .unwrap()
        .value
}

/// What an acknowledged version did.
#[derive(Clone, Debug)]
enum Op {
    /// A write's SQL.
    Sql(String),
    /// A restore of the content of that version.
    Restore(Version),
}

/// The writes whose replay gives the content at `at` (the newest when `None`).
fn writes_up_to(acknowledged: &BTreeMap<Version, Op>, at: Option<Version>) -> Vec<String> {
    let mut writes = Vec::new();
    for (version, op) in acknowledged {
        if at.is_some_and(|at| *version > at) {
            break;
        }
        match op {
            Op::Sql(sql) => writes.push(sql.clone()),
            Op::Restore(from) => writes = writes_up_to(acknowledged, Some(*from)),
        }
    }
    writes
}

/// Replays the acknowledged writes up to `at` in version order on a plain SQLite file.
fn expected_at(acknowledged: &BTreeMap<Version, Op>, at: Option<Version>) -> Vec<String> {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    for sql in writes_up_to(acknowledged, at) {
        conn.execute_batch(&format!("BEGIN; {sql}; COMMIT;"))
            .unwrap();
    }
    rows(&conn).unwrap()
}

/// The rows at the newest acknowledged version.
fn expected(acknowledged: &BTreeMap<Version, Op>) -> Vec<String> {
    expected_at(acknowledged, None)
}

/// Every version history lists that the model knows rebuilds to the rows it had.
async fn check_history(
    engine: &Engine,
    user: &UserId,
    acknowledged: &BTreeMap<Version, Op>,
    seed: u64,
) {
    let reader = engine.bucket_reader();
    let listed = reader.versions(user, 0).await.unwrap().unwrap();
    for entry in listed
        .iter()
        .filter(|e| acknowledged.contains_key(&e.version))
    {
        let image = reader.download_version(user, entry.version).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("version.sqlite");
        std::fs::write(&path, &image).unwrap();
        let rebuilt = rows(&Connection::open(&path).unwrap()).unwrap();
        assert_eq!(
            rebuilt,
            expected_at(acknowledged, Some(entry.version)),
            "seed {seed}: version {}",
            entry.version
        );
    }
}

async fn run_case(seed: u64, policy: ConflictPolicy) {
    let mut rng = StdRng::seed_from_u64(seed);
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let mut dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let alice = user("alice");
    let mut engines = vec![
        open(&store, dirs[0].path(), "a", policy).await,
        open(&store, dirs[1].path(), "b", policy).await,
    ];
    let mut acknowledged: BTreeMap<Version, Op> = BTreeMap::new();
    let (mut races_met, mut restores) = (0, 0);
    let first = write(&engines[0], &alice, "SELECT 1".into()).await.unwrap();
    acknowledged.insert(first, Op::Sql("SELECT 1".into()));
    for step in 0..40 {
        match rng.random_range(0..12) {
            0..=5 => {
                let sql = random_write(&mut rng);
                let which = rng.random_range(0..2);
                let version = write(&engines[which], &alice, sql.clone()).await.unwrap();
                acknowledged.insert(version, Op::Sql(sql));
            }
            10 => {
                // A restore of a version history still lists, through either engine.
                let which = rng.random_range(0..2);
                let listed = engines[which]
                    .bucket_reader()
                    .versions(&alice, 0)
                    .await
                    .unwrap()
                    .unwrap();
                let known: Vec<Version> = listed
                    .iter()
                    .map(|entry| entry.version)
                    .filter(|version| acknowledged.contains_key(version))
                    .collect();
                let target = known[rng.random_range(0..known.len())];
                let restored = engines[which]
                    .restore(&alice, RestoreTarget::Version(target))
                    .await
                    .unwrap();
                acknowledged.insert(restored.version, Op::Restore(target));
                restores += 1;
            }
            11 => {
                // Retention keeping the newest five versions, by a third instance (with
                // no grace: both engines are current after every step).
                engines[0].settle().await;
                engines[1].settle().await;
                dirs.push(tempfile::tempdir().unwrap());
                let mut narrow = engine_config(dirs[dirs.len() - 1].path(), "gc", policy);
                narrow.history.keep_versions = 5;
                narrow.log_grace = std::time::Duration::ZERO;
                let collector = Engine::open(narrow, store.clone() as Arc<dyn Store>)
                    .await
                    .unwrap();
                collector.collect_history(&alice).await.unwrap();
                check_history(&engines[0], &alice, &acknowledged, seed).await;
            }
            6 | 7 => {
                // Two writers at once: one may lose the race (strict: refused; last
                // write wins: it overwrites, and the winner's write is gone).
                let (one, two) = (random_write(&mut rng), random_write(&mut rng));
                let conflicts_before = conflicts(&engines);
                let (first, second) = tokio::join!(
                    write(&engines[0], &alice, one.clone()),
                    write(&engines[1], &alice, two.clone())
                );
                let raced = conflicts(&engines) > conflicts_before;
                races_met += usize::from(raced);
                settle_race(
                    &mut acknowledged,
                    policy,
                    raced,
                    [(first, one), (second, two)],
                );
            }
            8 => {
                // A cold start: a new instance on an empty folder replaces one.
                let which = rng.random_range(0..2);
                engines[which].settle().await;
                dirs.push(tempfile::tempdir().unwrap());
                let fresh = open(&store, dirs[dirs.len() - 1].path(), "c", policy).await;
                engines[which] = fresh;
            }
            _ => {
                for engine in &engines {
                    engine.settle().await; // compactions finish
                }
            }
        }
        let want = expected(&acknowledged);
        for engine in &engines {
            assert_eq!(read(engine, &alice).await, want, "seed {seed}, step {step}");
        }
    }
    eprintln!("seed {seed} ({policy:?}): {races_met} races met a conflict, {restores} restores");
    // Compaction folds the log: the snapshot then holds the newest version, nothing after it
    // (both engines settled: one folding in the background would make this one's refused).
    for engine in &engines {
        engine.settle().await;
    }
    let folded = engines[0].compact(&alice).await.unwrap();
    let status = engines[0]
        .bucket_reader()
        .remote_status(&alice)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(folded, Some(status.version), "seed {seed}");
    assert_eq!(
        (status.snapshot.version, status.changes),
        (status.version, 0),
        "seed {seed}"
    );
    let (_, image) = engines[0]
        .bucket_reader()
        .download(&alice)
        .await
        .unwrap()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pulled.sqlite");
    std::fs::write(&path, &image).unwrap();
    let pulled = Connection::open(&path).unwrap();
    assert_eq!(
        rows(&pulled).unwrap(),
        expected(&acknowledged),
        "seed {seed}: pull"
    );
    check_history(&engines[0], &alice, &acknowledged, seed).await;
}

/// Records the outcome of two writes that raced.
/// Conflicts the engines met so far.
fn conflicts(engines: &[Engine]) -> u64 {
    engines
        .iter()
        .map(|engine| {
            engine
                .metrics()
                .conflicts
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum()
}

/// Records the outcome of two writes that raced (`raced`: one met the other's version).
/// Under last-write-wins the loser's database, its base and its own write, replaced the
/// winner's: the winner's write is gone.
fn settle_race(
    acknowledged: &mut BTreeMap<Version, Op>,
    policy: ConflictPolicy,
    raced: bool,
    outcomes: [(cellar_engine::Result<Version>, String); 2],
) {
    let landed: Vec<(Version, String)> = outcomes
        .into_iter()
        .filter_map(|(outcome, sql)| match outcome {
            Ok(version) => Some((version, sql)),
            Err(cellar_engine::Error::Conflict { .. }) if policy == ConflictPolicy::Strict => None,
            Err(err) => panic!("a racing write failed: {err}"),
        })
        .collect();
    let overwritten = (policy == ConflictPolicy::LastWriteWins && raced && landed.len() == 2)
        .then(|| landed.iter().map(|(version, _)| *version).min())
        .flatten();
    for (version, sql) in landed {
        if Some(version) != overwritten {
            acknowledged.insert(version, Op::Sql(sql));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_sequence_reads_back_like_a_plain_file_strict() {
    for seed in 0..6 {
        run_case(seed, ConflictPolicy::Strict).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_sequence_reads_back_like_a_plain_file_last_write_wins() {
    for seed in 200..206 {
        run_case(seed, ConflictPolicy::LastWriteWins).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_sequence_reads_back_like_a_plain_file_rebase() {
    for seed in 100..106 {
        run_case(seed, ConflictPolicy::Rebase).await;
    }
}

/// A bucket written by the whole-file format (a snapshot without `cellar-checksum` or
/// `cellar-format`) is read as it is, and its first write adds the log after it.
#[tokio::test]
async fn a_whole_file_bucket_is_read_as_is_and_its_first_write_starts_the_log() {
    use cellar_engine::store::PutCondition;
    use cellar_engine::{Layout, SnapshotMetadata};
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let alice = user("alice");
    let made = tempfile::tempdir().unwrap();
    let path = made.path().join("old.sqlite");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(&format!(
        "{SCHEMA} INSERT INTO t(k, v, pad) VALUES (1, 10, x'00');"
    ))
    .unwrap();
    drop(conn);
    let image = std::fs::read(&path).unwrap();
    let metadata = SnapshotMetadata {
        version: Version::new(7),
        sha256: cellar_engine::checksum::sha256_hex(&image),
        crc64nvme: None,
        size: image.len() as u64,
        writer: "an older release".into(),
        updated_at: chrono::Utc::now(),
        checksum: None,
        log_floor: None,
    };
    let key = Layout::new("unused", cellar_engine::layout::DEFAULT_PREFIX).database_key(&alice);
    store
        .put(&key, image.into(), metadata.to_raw(), PutCondition::Create)
        .await
        .unwrap();

    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let policy = ConflictPolicy::Strict;
    let writer = open(&store, dirs[0].path(), "new", policy).await;
    assert_eq!(read(&writer, &alice).await, ["1:10:1"]);
    let version = write(&writer, &alice, "UPDATE t SET v = 11 WHERE k = 1".into())
        .await
        .unwrap();
    assert_eq!(version, Version::new(8));
    let change = writer.layout().change_key(&alice, Version::new(7));
    assert!(store.head(&change).await.unwrap().is_some(), "{change}");
    let reader = open(&store, dirs[1].path(), "fresh", policy).await;
    assert_eq!(read(&reader, &alice).await, ["1:11:1"]);
}
