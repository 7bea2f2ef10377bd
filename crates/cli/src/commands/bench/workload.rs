//! What `cellar bench` asks of the server: each user's tables, the preload, the preload's
//! writes, and the measured reads and writes.
//!
//! Every user has `bench_rows` (ROWS rows to read and write) and `bench_blobs` (random
//! blobs that give the database its preloaded size). A preload write is a one-row `UPDATE`
//! of `bench_rows`, one request each (one change in the log each). A read is a 10-row range `SELECT` on
//! `bench_rows`; a write is a one-row upsert (`INSERT … ON CONFLICT DO UPDATE`) into it,
//! over twice as many ids as were seeded, so writes both insert and update.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use cellar_engine::UserId;
use serde_json::{Value, json};

use super::api::{Acknowledged, Answer, Api, Failure};

/// Rows seeded into `bench_rows`.
const ROWS: u64 = 100;
/// Size of one preload blob: 16 overflow pages of 4 KiB.
const BLOB_BYTES: u64 = 64 * 1024;
/// The most one preload request adds (each request uploads the whole database once, and
/// must finish within the server's query time limit).
const CHUNK_BYTES: u64 = 64 * 1024 * 1024;

/// Brings `user`'s database to the benchmark's shape and at least `preload_bytes`.
/// Returns the latency of the user's first request (a cold start when the server has
/// not served this user yet).
pub async fn prepare(api: &Api, user: &UserId, preload_bytes: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut shape = probe(api, user).await?;
    let first = started.elapsed();
    loop {
        let grow = match shape {
            Shape::Empty => create(),
            Shape::Ready { size } if size < preload_bytes => {
                grow((preload_bytes - size).min(CHUNK_BYTES))
            }
            Shape::Ready { .. } => return Ok(first),
        };
        api.query::<Value>(user, &grow)
            .await
            .map_err(|failure| setup_error(user, failure))?;
        shape = probe(api, user).await?;
    }
}

/// Sends `writes` one-row `UPDATE`s to `user`, one request after the other (after
/// [`prepare`]: the rows exist). Each must write, so that each is one version.
pub async fn preload_writes(api: &Api, user: &UserId, writes: u64) -> anyhow::Result<()> {
    for i in 0..writes {
        let answer: Acknowledged = api
            .query(user, &update(i))
            .await
            .map_err(|failure| setup_error(user, failure))?;
        if !answer.wrote {
            return Err(anyhow!(
                "setting up {user}: preload write {i} changed nothing"
            ));
        }
    }
    Ok(())
}

/// Preload write number `i`: one seeded row updated.
fn update(i: u64) -> Value {
    json!({ "statements": [{
        "sql": "UPDATE bench_rows SET n = n + 1, note = ?2 WHERE id = ?1",
        "params": [i % ROWS + 1, format!("preload write {i}")],
    }]})
}

/// What a user's database holds so far.
enum Shape {
    /// No benchmark tables yet.
    Empty,
    /// The tables exist; the database has this many bytes.
    Ready { size: u64 },
}

async fn probe(api: &Api, user: &UserId) -> anyhow::Result<Shape> {
    let body = json!({ "statements": [
        "SELECT (SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'bench_blobs'), \
         page_count * page_size FROM pragma_page_count(), pragma_page_size()"
    ]});
    let answer: Answer = api
        .query(user, &body)
        .await
        .map_err(|failure| setup_error(user, failure))?;
    let row = answer
        .results
        .first()
        .and_then(|result| result.rows.first());
    match row.map(|row| {
        (
            row.first().and_then(Value::as_u64),
            row.get(1).and_then(Value::as_u64),
        )
    }) {
        Some((Some(0), _)) => Ok(Shape::Empty),
        Some((Some(_), Some(size))) => Ok(Shape::Ready { size }),
        _ => Err(anyhow!(
            "setting up {user}: unexpected answer to the size query: {row:?}"
        )),
    }
}

fn create() -> Value {
    json!({ "statements": [
        "CREATE TABLE bench_rows(id INTEGER PRIMARY KEY, n INTEGER NOT NULL, note TEXT NOT NULL)",
        "CREATE TABLE bench_blobs(id INTEGER PRIMARY KEY, b BLOB NOT NULL)",
        { "sql": "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < ?1) \
                  INSERT INTO bench_rows(id, n, note) SELECT n, 0, 'row ' || n FROM c",
          "params": [ROWS] },
    ]})
}

/// Adds about `bytes` of random blobs in one request.
fn grow(bytes: u64) -> Value {
    let blobs = bytes.div_ceil(BLOB_BYTES);
    json!({ "statements": [{
        "sql": "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < ?1) \
                INSERT INTO bench_blobs(b) SELECT randomblob(?2) FROM c",
        "params": [blobs, BLOB_BYTES],
    }]})
}

fn setup_error(user: &UserId, failure: Failure) -> anyhow::Error {
    anyhow!("setting up {user}: {} ({})", failure.message, failure.code)
}

/// True when request `k` of the measured phase writes: exactly `ratio` of any run of
/// requests, evenly spread (for 0.05, every twentieth).
pub fn is_write(k: u64, ratio: f64) -> bool {
    ((k + 1) as f64 * ratio).floor() > (k as f64 * ratio).floor()
}

/// Measured read number `k`: ten rows of `bench_rows`.
pub fn read(k: u64) -> Value {
    json!({ "statements": [{
        "sql": "SELECT id, n, note FROM bench_rows WHERE id >= ?1 ORDER BY id LIMIT 10",
        "params": [k % ROWS + 1],
    }]})
}

/// Measured write number `k`: one row inserted or updated.
pub fn write(k: u64) -> Value {
    json!({ "statements": [{
        "sql": "INSERT INTO bench_rows(id, n, note) VALUES (?1, 1, ?2) \
                ON CONFLICT(id) DO UPDATE SET n = n + 1, note = excluded.note",
        "params": [k % (2 * ROWS) + 1, format!("write {k}")],
    }]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_the_given_share_evenly_spread() {
        let count = |ratio| (0..1000).filter(|&k| is_write(k, ratio)).count();
        assert_eq!(
            (count(0.0), count(0.05), count(0.5), count(1.0)),
            (0, 50, 500, 1000)
        );
        let first: Vec<u64> = (0..60).filter(|&k| is_write(k, 0.05)).collect();
        assert_eq!(first, [19, 39, 59]);
    }

    #[test]
    fn preload_writes_update_seeded_rows() {
        let ids: Vec<Value> = [0, 1, ROWS - 1, ROWS]
            .map(|i| update(i)["statements"][0]["params"][0].clone())
            .into();
        assert_eq!(ids, [json!(1), json!(2), json!(ROWS), json!(1)]);
        assert!(
            update(0)["statements"][0]["sql"]
                .as_str()
                .is_some_and(|sql| sql.starts_with("UPDATE bench_rows"))
        );
    }

    #[test]
    fn a_preload_request_adds_whole_blobs() {
        let body = grow(BLOB_BYTES + 1);
        assert_eq!(body["statements"][0]["params"], json!([2, BLOB_BYTES]));
    }
}
