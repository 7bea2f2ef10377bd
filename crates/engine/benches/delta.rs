//! Deltas on a 64 MiB table of short rows (`docs/delta-sync.md`, targets):
//!
//! - `delta/capture-1-row-update`: [`delta::capture`] alone, inside a transaction that
//!   updated one random row (the journal parsed, the changed pages read through
//!   `sqlite_dbpage`, XORed, the checksum rolled);
//! - `delta/apply-1-row-update`: [`delta::apply`] of such a delta on a copy, alone;
//! - `delta/apply-and-commit-1-row-update`: the same and its COMMIT (fsync included);
//! - `delta/capture-1-row-insert-from-the-free-list`: capture of a row whose overflow
//!   pages come off a free list of 4 000 pages (every leaf of the changed trunk page is
//!   compared with the file).
//!
//! The apply iterations apply the delta and its inverse in turn.
//!
//! The encoded size of the delta is printed once.
//!
//! `delta` is internal to the engine, so its file is compiled into this bench as well.
//!
//! `cargo bench -p cellar-engine --bench delta`

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cellar_engine::rusqlite::Connection;
use criterion::{Criterion, criterion_group, criterion_main};

#[path = "../src/delta.rs"]
#[allow(
    dead_code,
    reason = "the bench takes capture and apply, not the whole module"
)]
mod delta;

/// What `delta` takes from the engine's crate.
mod version {
    pub(crate) use cellar_engine::Version;
}

/// Rows of about 40 bytes: 64 MiB of them, as in the design's measurement.
const ROWS: u64 = 1_570_000;

/// Opens `path` with the engine's settings.
fn open(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open the database");
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA cache_spill = OFF;")
        .expect("set the engine's pragmas");
    conn
}

fn journal_of(path: &Path) -> PathBuf {
    let mut journal = path.as_os_str().to_owned();
    journal.push("-journal");
    journal.into()
}

/// xorshift64: which row each iteration updates.
struct Rows(u64);

impl Rows {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        1 + self.0 % ROWS
    }
}

/// The 64 MiB table at `path`, built once.
fn build(path: &Path) -> Connection {
    let started = Instant::now();
    let conn = open(path);
    conn.execute_batch(&format!(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {ROWS})
         INSERT INTO t SELECT i, printf('row %08d of the table, short', i) FROM c;"
    ))
    .expect("fill the table");
    let size = std::fs::metadata(path).expect("the database file").len();
    eprintln!(
        "delta bench: {ROWS} rows, {:.1} MiB, built in {:.1?}",
        size as f64 / f64::from(1 << 20),
        started.elapsed()
    );
    conn
}

/// The write each delta carries: one row updated, in the open transaction.
fn update_one_row(conn: &Connection, row: u64) {
    conn.execute(
        "UPDATE t SET v = 'changed by the bench' WHERE id = ?1",
        [row],
    )
    .expect("update one row");
}

/// Runs `write` in a transaction `iters` times and times the capture of each (the
/// transaction is rolled back after it).
fn time_captures(
    origin: &Connection,
    path: &Path,
    checksum: u64,
    iters: u64,
    mut write: impl FnMut(&Connection),
) -> Duration {
    let mut spent = Duration::ZERO;
    for _ in 0..iters {
        origin.execute_batch("BEGIN").expect("begin");
        write(origin);
        let started = Instant::now();
        black_box(delta::capture(origin, &journal_of(path), checksum)).expect("capture");
        spent += started.elapsed();
        origin.execute_batch("ROLLBACK").expect("roll back");
    }
    spent
}

fn deltas(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let origin_path = dir.path().join("origin.sqlite");
    let origin = build(&origin_path);
    let checksum = delta::database_checksum(&origin).expect("the checksum");
    let mut rows = Rows(0x9e37_79b9_7f4a_7c15);
    let mut group = c.benchmark_group("delta");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(5));

    group.bench_function("capture-1-row-update", |b| {
        b.iter_custom(|iters| {
            time_captures(&origin, &origin_path, checksum, iters, |conn| {
                update_one_row(conn, rows.next());
            })
        })
    });

    let replica_path = dir.path().join("replica.sqlite");
    std::fs::copy(&origin_path, &replica_path).expect("copy the database");
    let replica = open(&replica_path);
    origin.execute_batch("BEGIN").expect("begin");
    update_one_row(&origin, rows.next());
    let forward = delta::capture(&origin, &journal_of(&origin_path), checksum).expect("capture");
    origin.execute_batch("ROLLBACK").expect("roll back");
    eprintln!(
        "delta bench: a one-row update changes {} pages, {} bytes encoded",
        forward.changed_pages(),
        forward.encode().expect("encode").len()
    );
    // XOR records run both ways: the same records undo the update.
    let backward = delta::Delta {
        checksum_before: forward.checksum_after,
        checksum_after: forward.checksum_before,
        ..forward.clone()
    };
    let mut current = checksum;
    let mut apply_next = |replica: &Connection| {
        let next = if current == forward.checksum_before {
            [Ok(forward.clone())]
        } else {
            [Ok(backward.clone())]
        };
        replica.execute_batch("BEGIN IMMEDIATE").expect("begin");
        let started = Instant::now();
        current = delta::apply(replica, next, current).expect("apply");
        started.elapsed()
    };
    let commit = |replica: &Connection| {
        replica.execute_batch("COMMIT").expect("commit");
        delta::forget_cached_pages(replica).expect("forget the cached pages");
    };
    group.bench_function("apply-1-row-update", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                spent += apply_next(&replica);
                commit(&replica);
            }
            spent
        })
    });
    group.bench_function("apply-and-commit-1-row-update", |b| {
        b.iter(|| {
            apply_next(&replica);
            commit(&replica);
        })
    });

    // A free list of 4 000 pages: a page taken from it makes capture compare every leaf of
    // the trunk page it came from (about 1 000) with the file.
    origin
        .execute_batch(
            "CREATE TABLE spare(b BLOB);
             WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 4000)
             INSERT INTO spare SELECT randomblob(3000) FROM c;
             DELETE FROM spare;",
        )
        .expect("make free pages");
    let checksum = delta::database_checksum(&origin).expect("the checksum");
    group.bench_function("capture-1-row-insert-from-the-free-list", |b| {
        b.iter_custom(|iters| {
            time_captures(&origin, &origin_path, checksum, iters, |conn| {
                conn.execute("INSERT INTO spare VALUES (randomblob(10000))", [])
                    .expect("insert one row");
            })
        })
    });
    group.finish();
}

criterion_group!(benches, deltas);
criterion_main!(benches);
