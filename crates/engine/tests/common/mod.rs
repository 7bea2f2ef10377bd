//! Helpers shared by the engine's integration tests.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report
#![allow(dead_code)]

pub mod watched;

use std::path::Path;
use std::sync::Arc;

use cellar_engine::store::FaultyStore;
use cellar_engine::{
    Committed, ConflictPolicy, Engine, EngineConfig, MemoryStore, Result, Store, UserId,
};

pub fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

pub fn config(dir: &Path, policy: ConflictPolicy, writer: &str) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.conflict = policy;
    config.writer_id = writer.to_owned();
    config
}

pub async fn engine(
    store: Arc<dyn Store>,
    dir: &Path,
    policy: ConflictPolicy,
    writer: &str,
) -> Engine {
    Engine::open(config(dir, policy, writer), store)
        .await
        .unwrap()
}

/// Two instances, "a" and "b", on one (fault-injectable) memory store.
pub struct Pair {
    pub store: Arc<FaultyStore<MemoryStore>>,
    pub a: Engine,
    pub b: Engine,
    pub dirs: [tempfile::TempDir; 2],
}

pub async fn pair(policy: ConflictPolicy) -> Pair {
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = engine(store.clone(), dirs[0].path(), policy, "a").await;
    let b = engine(store.clone(), dirs[1].path(), policy, "b").await;
    Pair { store, a, b, dirs }
}

/// Creates the `t` table (if needed) and appends `value`, as one request.
pub async fn append(engine: &Engine, user: &UserId, value: i64) -> Result<Committed<()>> {
    engine
        .transact(user, move |conn| {
            conn.execute("CREATE TABLE IF NOT EXISTS t(v INTEGER)", [])?;
            conn.execute("INSERT INTO t VALUES (?1)", [value])?;
            Ok(())
        })
        .await
}

/// The values in `t`, in order (empty if the table does not exist).
pub async fn values(engine: &Engine, user: &UserId) -> Vec<i64> {
    engine
        .transact(user, |conn| {
            let exists: i64 = conn.query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 't'",
                [],
                |r| r.get(0),
            )?;
            if exists == 0 {
                return Ok(Vec::new());
            }
            conn.query_map("SELECT v FROM t ORDER BY rowid", [], |r| r.get(0))
        })
        .await
        .unwrap()
        .value
}

/// The version in the bucket's metadata for `user`.
pub async fn remote_version(engine: &Engine, user: &UserId) -> u64 {
    engine
        .bucket_reader()
        .remote_status(user)
        .await
        .unwrap()
        .map_or(0, |remote| remote.version.get())
}

/// The values in `t` of a database image (a file's bytes), in order.
pub fn values_in_image(image: &[u8]) -> Vec<i64> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.sqlite");
    std::fs::write(&path, image).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut stmt = conn.prepare("SELECT v FROM t ORDER BY rowid").unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}
