//! Racing writers: 16 tasks on two engine instances writing one user, on the memory and
//! folder stores and on real S3-compatible servers (SeaweedFS and moto on 127.0.0.1).
//!
//! - strict: every acknowledged write is in the final database;
//! - rebase: every write is acknowledged and in the final database;
//! - last-write-wins: one warning per overwrite, and every lost write is explained by one.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cellar_engine::{ConflictPolicy, Engine, Error, LocalStore, MemoryStore, S3Store, Store};
use cellar_testkit::{S3Kind, S3Server};
use common::*;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

const TASKS: i64 = 16;
const WRITES_PER_TASK: i64 = 4;

/// Conflict warnings by `local_writer`: the (local, remote) versions of each.
type Warnings = Mutex<HashMap<String, Vec<(u64, u64)>>>;

/// Conflict warnings seen, by `local_writer`, and the versions each one skipped over.
fn warnings() -> &'static Warnings {
    static WARNINGS: OnceLock<Warnings> = OnceLock::new();
    WARNINGS.get_or_init(|| {
        let layer = WarningCounter;
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        Mutex::new(HashMap::new())
    })
}

/// Records every `cellar::conflict` warning's writer and versions.
struct WarningCounter;

#[derive(Default)]
struct Fields {
    writer: String,
    local: u64,
    remote: u64,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "local_version" => self.local = value,
            "remote_version" => self.remote = value,
            _ => {}
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "local_writer" {
            self.writer = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for WarningCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        if meta.target() == "cellar::conflict" && *meta.level() == tracing::Level::WARN {
            let mut fields = Fields::default();
            event.record(&mut fields);
            let mut seen = warnings().lock().unwrap();
            seen.entry(fields.writer)
                .or_default()
                .push((fields.local, fields.remote));
        }
    }
}

struct Outcome {
    acknowledged: Vec<i64>,
    /// The version each acknowledged write landed in.
    versions: HashMap<i64, u64>,
    refused: usize,
    stale_reads: Vec<String>,
    final_values: Vec<i64>,
}

async fn race(store: Arc<dyn Store>, policy: ConflictPolicy, tag: &str) -> Outcome {
    let _ = warnings();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let engines = [
        engine(store.clone(), dirs[0].path(), policy, &format!("{tag}-a")).await,
        engine(store.clone(), dirs[1].path(), policy, &format!("{tag}-b")).await,
    ];
    let hot = user("hot");
    let tasks = (0..TASKS).map(|task| {
        let engine: Engine = engines[(task % 2) as usize].clone();
        let hot = hot.clone();
        tokio::spawn(async move {
            let mut results = Vec::new();
            for i in 0..WRITES_PER_TASK {
                let value = task * 100 + i;
                results.push((value, append(&engine, &hot, value).await));
            }
            results
        })
    });
    let mut outcome = Outcome {
        acknowledged: vec![],
        versions: HashMap::new(),
        refused: 0,
        stale_reads: vec![],
        final_values: vec![],
    };
    for task in futures::future::join_all(tasks).await {
        for (value, result) in task.unwrap() {
            match result {
                Ok(committed) => {
                    outcome.acknowledged.push(value);
                    outcome.versions.insert(value, committed.version.get());
                }
                Err(Error::Conflict { .. }) => outcome.refused += 1,
                Err(err @ Error::Inconsistent { .. }) => outcome.stale_reads.push(err.to_string()),
                Err(other) => panic!("{tag}: unexpected error {other}"),
            }
        }
    }
    let reader_dir = tempfile::tempdir().unwrap();
    let reader = engine(store, reader_dir.path(), policy, &format!("{tag}-reader")).await;
    outcome.final_values = values(&reader, &hot).await;
    if !outcome.stale_reads.is_empty() {
        eprintln!(
            "{tag}: Cellar's checks caught {} stale reads: {:#?}",
            outcome.stale_reads.len(),
            outcome.stale_reads
        );
    }
    outcome
}

fn assert_strict(outcome: &Outcome, tag: &str) {
    for value in &outcome.acknowledged {
        assert!(
            outcome.final_values.contains(value),
            "{tag}: acknowledged write {value} is missing"
        );
    }
    let total = (TASKS * WRITES_PER_TASK) as usize;
    assert_eq!(
        outcome.acknowledged.len() + outcome.refused + outcome.stale_reads.len(),
        total
    );
}

fn assert_rebase(outcome: &Outcome, tag: &str) {
    assert_eq!(
        outcome.acknowledged.len(),
        (TASKS * WRITES_PER_TASK) as usize,
        "{tag}: every write acknowledged"
    );
    assert_strict(outcome, tag);
}

fn assert_last_write_wins(outcome: &Outcome, tag: &str) {
    let seen = warnings().lock().unwrap();
    let mine: Vec<(u64, u64)> = ["a", "b"]
        .iter()
        .flat_map(|side| {
            seen.get(&format!("{tag}-{side}"))
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    let lost: Vec<&i64> = outcome
        .acknowledged
        .iter()
        .filter(|v| !outcome.final_values.contains(v))
        .collect();
    // No loss goes unexplained: every lost write landed in a version that some logged
    // overwrite skipped over (local_version < version <= remote_version).
    for value in &lost {
        let version = outcome.versions[value];
        assert!(
            mine.iter()
                .any(|(local, remote)| *local < version && version <= *remote),
            "{tag}: write {value} (version {version}) was lost without a warning covering it; warnings: {mine:?}"
        );
    }
    let lost = lost.len();
    assert_eq!(outcome.refused, 0, "{tag}: last-write-wins refuses nothing");
    eprintln!(
        "{tag}: {} acknowledged, {lost} overwritten, {} conflict warnings",
        outcome.acknowledged.len(),
        mine.len()
    );
}

async fn each_policy(store: impl Fn() -> Arc<dyn Store>, tag: &str) {
    let strict = race(store(), ConflictPolicy::Strict, &format!("{tag}-strict")).await;
    assert_strict(&strict, tag);
    let rebase = race(store(), ConflictPolicy::Rebase, &format!("{tag}-rebase")).await;
    assert_rebase(&rebase, tag);
    let lww_tag = format!("{tag}-lww");
    let lww = race(store(), ConflictPolicy::LastWriteWins, &lww_tag).await;
    assert_last_write_wins(&lww, &lww_tag);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_on_the_memory_store() {
    each_policy(|| Arc::new(MemoryStore::new()), "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_on_the_folder_store() {
    let root = tempfile::tempdir().unwrap();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    each_policy(
        || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Arc::new(LocalStore::new(root.path().join(n.to_string())))
        },
        "folder",
    )
    .await;
}

async fn on_s3(kind: S3Kind) {
    let server = S3Server::start(kind).await.unwrap();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let client = server.object_store();
    let tag = kind.name();
    // Each policy gets its own prefix in the one bucket.
    each_policy(
        || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Arc::new(Prefixed {
                prefix: format!("run{n}"),
                inner: S3Store::from_object_store(client.clone()),
            })
        },
        tag,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_on_seaweedfs() {
    on_s3(S3Kind::SeaweedFs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_on_moto() {
    on_s3(S3Kind::Moto).await;
}

/// Puts every key of a store under a prefix, so runs share one bucket without sharing keys.
#[derive(Debug)]
struct Prefixed {
    prefix: String,
    inner: S3Store,
}

#[async_trait::async_trait]
impl Store for Prefixed {
    async fn get(
        &self,
        key: &str,
        inm: Option<&cellar_engine::store::ETag>,
    ) -> Result<cellar_engine::store::Fetched, cellar_engine::store::StoreError> {
        self.inner.get(&format!("{}/{key}", self.prefix), inm).await
    }
    async fn head(
        &self,
        key: &str,
    ) -> Result<Option<cellar_engine::store::ObjectInfo>, cellar_engine::store::StoreError> {
        self.inner.head(&format!("{}/{key}", self.prefix)).await
    }
    async fn put(
        &self,
        key: &str,
        body: bytes::Bytes,
        meta: cellar_engine::RawMetadata,
        cond: cellar_engine::store::PutCondition,
    ) -> Result<cellar_engine::store::ETag, cellar_engine::store::StoreError> {
        self.inner
            .put(&format!("{}/{key}", self.prefix), body, meta, cond)
            .await
    }
    async fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<cellar_engine::store::Listed>, cellar_engine::store::StoreError> {
        self.inner.list(&format!("{}/{prefix}", self.prefix)).await
    }
    async fn delete(&self, key: &str) -> Result<(), cellar_engine::store::StoreError> {
        self.inner.delete(&format!("{}/{key}", self.prefix)).await
    }
}
