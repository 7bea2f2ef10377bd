//! `diff/64MiB-100-rows`: [`diff::diff_databases`] of two versions of a 64 MiB database
//! (400 000 rows with an index) that differ by 100 rows: 40 updated, 30 deleted, 30
//! inserted. Target (`docs/history.md`): under a second.
//!
//! `cargo bench -p cellar-engine --bench diff`
#![allow(clippy::unwrap_used)] // a bench: a panic is the failure report

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use cellar_engine::diff::{DiffOptions, diff_databases};
use cellar_engine::rusqlite::{Connection, params};
use criterion::{Criterion, criterion_group, criterion_main};

const ROWS: i64 = 400_000;
const PAYLOAD: usize = 104;

/// A deterministic lower-case payload.
fn payloads() -> impl FnMut() -> String {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    move || {
        (0..PAYLOAD)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from(b'a' + (seed % 26) as u8)
            })
            .collect()
    }
}

fn build(from: &Path, to: &Path) -> cellar_engine::rusqlite::Result<()> {
    let mut payload = payloads();
    let mut db = Connection::open(from)?;
    db.execute_batch(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
         CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, payload TEXT NOT NULL,
                            n INTEGER, score REAL);
         CREATE INDEX items_name ON items(name);",
    )?;
    let tx = db.transaction()?;
    {
        let mut insert = tx.prepare("INSERT INTO items VALUES (?1, ?2, ?3, ?4, ?5)")?;
        for i in 0..ROWS {
            insert.execute(params![
                i,
                format!("item-{i:08}"),
                payload(),
                i,
                i as f64 * 0.5
            ])?;
        }
    }
    tx.commit()?;
    drop(db);
    std::fs::copy(from, to).map_err(|_| cellar_engine::rusqlite::Error::InvalidQuery)?;
    let mut db = Connection::open(to)?;
    let tx = db.transaction()?;
    for k in 0..40 {
        tx.execute(
            "UPDATE items SET payload = ?2, score = -1 WHERE id = ?1",
            params![k * 9_973 + 11, payload()],
        )?;
    }
    for k in 0..30 {
        tx.execute("DELETE FROM items WHERE id = ?1", params![k * 13_001 + 5])?;
    }
    for k in 0..30 {
        tx.execute(
            "INSERT INTO items VALUES (?1, ?2, ?3, ?4, NULL)",
            params![ROWS + k, format!("new-{k}"), payload(), ROWS + k],
        )?;
    }
    tx.commit()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (from, to) = (dir.path().join("from.db"), dir.path().join("to.db"));
    build(&from, &to).unwrap();
    let options = DiffOptions::default();
    let diff = diff_databases(&from, &to, &options).unwrap();
    let table = &diff.tables[0];
    assert_eq!((table.added, table.removed, table.changed), (30, 30, 40));
    let mut group = c.benchmark_group("diff");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("64MiB-100-rows", |b| {
        b.iter(|| black_box(diff_databases(&from, &to, &options).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
