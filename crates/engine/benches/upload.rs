//! The write path against database size, on the folder store ([`LocalStore`]):
//!
//! - `transact-1-row-update/SIZE`: [`Engine::transact`] of a one-row update on a database
//!   preloaded to SIZE: version check, the update, `sqlite3_serialize`, stamp and SHA-256,
//!   the store's durable put, the local commit. Throughput is in database bytes.
//! - `snapshot-take/SIZE`: [`Snapshot::take`] alone (the serialize and its copy).
//! - `checksum/ALGORITHM`: the two checksums of the metadata over 64 MiB: SHA-256 (checked
//!   before a download is installed) and CRC-64/NVME (checked while it arrives).
//!
//! `cargo bench -p cellar-engine --bench upload`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use cellar_engine::checksum;
use cellar_engine::rusqlite::Connection;
use cellar_engine::snapshot::Snapshot;
use cellar_engine::{Engine, EngineConfig, LocalStore, UserId};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use tokio::runtime::Runtime;

const SIZES_MIB: [u64; 3] = [1, 16, 64];

/// An engine on a folder store in `dir`, with `user`'s database grown to about `mib` MiB
/// of random blobs and one small row to update.
fn preloaded(runtime: &Runtime, dir: &std::path::Path, user: &UserId, mib: u64) -> Engine {
    let store = Arc::new(LocalStore::new(dir.join("bucket")));
    let engine = runtime
        .block_on(Engine::open(EngineConfig::new(dir.join("local")), store))
        .expect("open the engine");
    let blobs = mib * 16; // 64 KiB each
    runtime
        .block_on(engine.transact(user, move |conn| {
            conn.execute_batch(
                "CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
                 INSERT INTO t VALUES (1, 0);
                 CREATE TABLE blobs(b BLOB NOT NULL);",
            )?;
            conn.execute(
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?1)
                 INSERT INTO blobs SELECT randomblob(65536) FROM c",
                [blobs],
            )?;
            Ok(())
        }))
        .expect("preload");
    engine
}

fn write_path(c: &mut Criterion) {
    let runtime = Runtime::new().expect("a tokio runtime");
    let user = UserId::new("bench").expect("a valid user id");
    let mut transact = c.benchmark_group("transact-1-row-update");
    transact
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(5));
    let mut snapshot_dbs = Vec::new();
    for mib in SIZES_MIB {
        let dir = tempfile::tempdir().expect("a temp folder");
        let engine = preloaded(&runtime, dir.path(), &user, mib);
        transact.throughput(Throughput::Bytes(mib << 20));
        transact.bench_function(BenchmarkId::from_parameter(format!("{mib}MiB")), |b| {
            b.iter(|| {
                runtime
                    .block_on(
                        engine.transact(&user, |conn| conn.execute("UPDATE t SET n = n + 1", [])),
                    )
                    .expect("transact")
            })
        });
        snapshot_dbs.push((mib, engine.layout().database_path(&user), dir));
    }
    transact.finish();

    let mut take = c.benchmark_group("snapshot-take");
    take.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(3));
    for (mib, path, _dir) in &snapshot_dbs {
        let conn = Connection::open(path).expect("open the local copy");
        take.throughput(Throughput::Bytes(mib << 20));
        take.bench_function(BenchmarkId::from_parameter(format!("{mib}MiB")), |b| {
            b.iter(|| black_box(Snapshot::take(&conn).expect("serialize")))
        });
    }
    take.finish();
}

fn checksums(c: &mut Criterion) {
    let body: Vec<u8> = (0..64usize << 20).map(|i| (i * 31 % 251) as u8).collect();
    let mut group = c.benchmark_group("checksum");
    group
        .sample_size(10)
        .throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("sha256/64MiB", |b| {
        b.iter(|| black_box(checksum::sha256_hex(&body)))
    });
    group.bench_function("crc64nvme/64MiB", |b| {
        b.iter(|| black_box(checksum::crc64nvme_hex(&body)))
    });
    group.finish();
}

criterion_group!(benches, write_path, checksums);
criterion_main!(benches);
