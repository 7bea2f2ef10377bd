//! One statement through the [`TrackedConnection`] (sandbox on, as the server runs it)
//! against the same statement on plain rusqlite, on the same kind of in-memory database:
//! what write tracking, the authorizer and the sandbox cost per statement.
//!
//! `cargo bench -p cellar-engine --bench statement`

use std::hint::black_box;

use cellar_engine::rusqlite::types::Value;
use cellar_engine::rusqlite::{Connection, params_from_iter};
use cellar_engine::{OutputBudget, SqlLimits, TrackedConnection, sandbox_policy};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

/// Rows in the table the statements run on.
const ROWS: i64 = 1000;

/// An in-memory database with table `t` of [`ROWS`] rows.
fn database() -> Connection {
    let conn = Connection::open_in_memory().expect("open an in-memory database");
    conn.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER NOT NULL, note TEXT NOT NULL);
         WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 1000)
         INSERT INTO t SELECT i, 0, 'row ' || i FROM c;",
    )
    .expect("fill the table");
    conn
}

/// What [`TrackedConnection::run`] does, without tracking: prepare, bind, collect every
/// column of every row as a value.
fn plain_run(conn: &Connection, sql: &str, params: &[Value]) -> Vec<Vec<Value>> {
    let mut stmt = conn.prepare(sql).expect("prepare");
    let columns = stmt.column_count();
    let mut rows = stmt.query(params_from_iter(params)).expect("query");
    let mut collected = Vec::new();
    while let Some(row) = rows.next().expect("step") {
        collected.push(
            (0..columns)
                .map(|i| row.get::<_, Value>(i).expect("column"))
                .collect(),
        );
    }
    collected
}

fn statements(c: &mut Criterion) {
    let cases = [
        ("point-select", "SELECT id, n, note FROM t WHERE id = ?1"),
        (
            "range-select-10",
            "SELECT id, n, note FROM t WHERE id >= ?1 ORDER BY id LIMIT 10",
        ),
        ("update-1-row", "UPDATE t SET n = n + 1 WHERE id = ?1"),
    ];
    let params = [Value::Integer(ROWS / 2)];
    let mut group = c.benchmark_group("statement");
    for (name, sql) in cases {
        let plain = database();
        group.bench_function(BenchmarkId::new("rusqlite", name), |b| {
            b.iter(|| black_box(plain_run(&plain, sql, &params)))
        });
        let sandboxed = database();
        SqlLimits::default()
            .apply(&sandboxed)
            .expect("apply the sandbox's limits");
        let tracked = TrackedConnection::new(sandboxed, Some(sandbox_policy()));
        group.bench_function(BenchmarkId::new("tracked", name), |b| {
            b.iter(|| {
                black_box(
                    tracked
                        .run(sql, &params, &mut OutputBudget::rows(10_000))
                        .expect("run"),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, statements);
criterion_main!(benches);
