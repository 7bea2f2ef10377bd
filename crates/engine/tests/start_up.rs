//! The start-up probe and the size thresholds.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use cellar_engine::store::{ETag, Fetched, Listed, ObjectInfo, PutCondition, StoreError};
use cellar_engine::{
    BucketReader, ConflictPolicy, Engine, EngineConfig, Error, MemoryStore, RawMetadata,
    SizeThresholds, Store, Version,
};
use common::*;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// How [`Quirky`] departs from a well-behaved store.
#[derive(Clone, Copy, Debug)]
enum Quirk {
    /// Accepts every write, ignoring its precondition (as some S3 clones do).
    IgnoresConditions,
    /// Refuses every write, as a bucket does to read-only keys.
    ReadOnly,
}

/// A memory store with a quirk.
#[derive(Debug)]
struct Quirky(Arc<MemoryStore>, Quirk);

#[async_trait::async_trait]
impl Store for Quirky {
    async fn get(&self, key: &str, inm: Option<&ETag>) -> Result<Fetched, StoreError> {
        self.0.get(key, inm).await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        self.0.head(key).await
    }
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        meta: RawMetadata,
        _: PutCondition,
    ) -> Result<ETag, StoreError> {
        let condition = match (self.1, self.0.head(key).await?) {
            (Quirk::ReadOnly, _) => return Err(access_denied("put", key)),
            (Quirk::IgnoresConditions, Some(info)) => PutCondition::Match(info.etag),
            (Quirk::IgnoresConditions, None) => PutCondition::Create,
        };
        self.0.put(key, body, meta, condition).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        self.0.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.1 {
            Quirk::ReadOnly => Err(access_denied("delete", key)),
            Quirk::IgnoresConditions => self.0.delete(key).await,
        }
    }
}

fn access_denied(operation: &'static str, key: &str) -> StoreError {
    StoreError::unavailable(operation, key, "403 Forbidden (AccessDenied)")
}

fn ignores_conditions() -> Arc<Quirky> {
    Arc::new(Quirky(Arc::default(), Quirk::IgnoresConditions))
}

/// Read-only keys cannot open an engine (its start-up probe writes), but they are enough
/// for everything an operator reads: users, status, download, verify.
#[tokio::test]
async fn read_only_keys_read_the_bucket_without_an_engine() {
    let objects = Arc::new(MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    let writer = engine(objects.clone(), dir.path(), ConflictPolicy::Strict, "w").await;
    let alice = user("alice");
    append(&writer, &alice, 1).await.unwrap();
    append(&writer, &alice, 2).await.unwrap();

    let read_only: Arc<dyn Store> = Arc::new(Quirky(objects, Quirk::ReadOnly));
    let cache = tempfile::tempdir().unwrap();
    let err = Engine::open(
        config(cache.path(), ConflictPolicy::Strict, "r"),
        read_only.clone(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("AccessDenied"), "{err}");

    let reader = BucketReader::new(read_only, writer.layout().clone());
    assert_eq!(reader.list_users().await.unwrap().len(), 1);
    let status = reader.remote_status(&alice).await.unwrap().unwrap();
    assert_eq!(status.version, Version::new(2));
    let (version, body) = reader.download(&alice).await.unwrap().unwrap();
    assert_eq!(version, Version::new(2));
    assert!(cellar_engine::snapshot::looks_like_sqlite(&body));
    assert!(reader.verify(&alice).await.unwrap().unwrap().ok());
}

#[tokio::test]
async fn strict_and_rebase_are_refused_on_a_store_that_ignores_conditions() {
    let dir = tempfile::tempdir().unwrap();
    for policy in [ConflictPolicy::Strict, ConflictPolicy::Rebase] {
        let err = Engine::open(config(dir.path(), policy, "a"), ignores_conditions())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
        assert!(err.to_string().contains("conditional writes"), "{err}");
    }
    let engine = Engine::open(
        config(dir.path(), ConflictPolicy::LastWriteWins, "a"),
        ignores_conditions(),
    )
    .await
    .unwrap();
    assert!(!engine.capabilities().detects_conflicts());
}

/// Size log lines seen: (level, user, size).
fn size_logs() -> &'static Mutex<Vec<(tracing::Level, String, u64)>> {
    static LOGS: OnceLock<Mutex<Vec<(tracing::Level, String, u64)>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(SizeLogs))
            .unwrap();
        Mutex::new(Vec::new())
    })
}

struct SizeLogs;

#[derive(Default)]
struct SizeFields(String, u64);

impl tracing::field::Visit for SizeFields {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "size_bytes" {
            self.1 = value;
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "user" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SizeLogs {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "cellar::size" {
            let mut fields = SizeFields::default();
            event.record(&mut fields);
            size_logs()
                .lock()
                .unwrap()
                .push((*event.metadata().level(), fields.0, fields.1));
        }
    }
}

#[tokio::test]
async fn uploads_log_info_above_the_first_threshold_and_warn_above_the_second() {
    size_logs();
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(dir.path());
    config.size_thresholds = SizeThresholds {
        info_bytes: 64 * 1024,
        warn_bytes: 256 * 1024,
    };
    let engine = Engine::open(config, Arc::new(MemoryStore::new()))
        .await
        .unwrap();
    let grow = |kib: i64| {
        move |conn: &cellar_engine::TrackedConnection| {
            conn.execute("CREATE TABLE IF NOT EXISTS b(x)", [])?;
            conn.execute("INSERT INTO b VALUES (zeroblob(?1 * 1024))", [kib])?;
            Ok(())
        }
    };
    let small = user("small");
    engine.transact(&small, grow(8)).await.unwrap();
    let medium = user("medium");
    engine.transact(&medium, grow(100)).await.unwrap();
    let large = user("large");
    engine.transact(&large, grow(400)).await.unwrap();
    let logs = size_logs().lock().unwrap().clone();
    let level_of = |name: &str| {
        logs.iter()
            .filter(|(_, user, _)| user == name)
            .map(|(level, _, size)| (*level, *size))
            .collect::<Vec<_>>()
    };
    assert!(level_of("small").is_empty(), "{logs:?}");
    let medium_logs = level_of("medium");
    assert_eq!(medium_logs.len(), 1);
    assert_eq!(medium_logs[0].0, tracing::Level::INFO);
    assert!(medium_logs[0].1 > 100 * 1024);
    assert_eq!(level_of("large")[0].0, tracing::Level::WARN);
}
