//! The public layers on an app of our own: the handler's outcome decides commit or
//! rollback, and conflicts with another instance are answered by the policy in force.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use cellar_engine::{ConflictPolicy, Engine, UserId};
use cellar_server::{ApiError, AuthMode, DatabaseSyncLayer, Db, Limits, UserContextLayer};
use serde_json::{Value, json};
use tokio::sync::{Mutex, oneshot};

use crate::common::{Dirs, STEP, TestServer, answer, engine};

/// Holds the first run of a handler between its SQL and its answer, until released.
#[derive(Default)]
pub struct Gate {
    runs: AtomicUsize,
    first: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

/// The test's side of a [`Gate`].
pub struct GateControl {
    reached: oneshot::Receiver<()>,
    release: oneshot::Sender<()>,
}

impl Gate {
    /// A gate that never holds.
    pub fn open() -> Arc<Self> {
        Arc::default()
    }

    /// A gate that holds the first run until [`GateControl::hold_while`] releases it.
    pub fn new() -> (Arc<Self>, GateControl) {
        let (reached_tx, reached) = oneshot::channel();
        let (release, release_rx) = oneshot::channel();
        let gate = Self {
            runs: AtomicUsize::new(0),
            first: Mutex::new(Some((reached_tx, release_rx))),
        };
        (Arc::new(gate), GateControl { reached, release })
    }

    async fn pass(&self) {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let first = self.first.lock().await.take();
        if let Some((reached, release)) = first {
            let _ = reached.send(());
            let _ = release.await;
        }
    }

    pub fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

impl GateControl {
    /// Waits until the first run is held, runs `meanwhile`, then lets it finish.
    pub async fn hold_while<F: Future>(self, meanwhile: F) -> F::Output {
        tokio::time::timeout(STEP, self.reached)
            .await
            .expect("the handler is reached")
            .expect("gate");
        let output = meanwhile.await;
        let _ = self.release.send(());
        output
    }
}

/// Appends the body to `log`, waits at the gate, answers success.
async fn append(
    State(gate): State<Arc<Gate>>,
    db: Db,
    entry: String,
) -> Result<Json<Value>, ApiError> {
    db.run(move |conn| {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS log(entry TEXT)")?;
        conn.execute("INSERT INTO log VALUES (?1)", [entry])?;
        Ok(())
    })
    .await?;
    gate.pass().await;
    Ok(Json(
        json!({ "user": db.user().as_str(), "from": db.base_version().get() }),
    ))
}

/// Writes, then fails: nothing may be kept.
async fn append_then_fail(db: Db) -> Result<Json<Value>, ApiError> {
    db.run(|conn| {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS log(entry TEXT); INSERT INTO log VALUES ('lost')",
        )
    })
    .await?;
    Err(ApiError::bad_request("the handler changed its mind"))
}

/// Reads the log, committing by hand to report the version in the body.
async fn read_log(db: Db) -> Result<Json<Value>, ApiError> {
    let entries = db
        .run(|conn| {
            let exists: i64 = conn.query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'log'",
                [],
                |row| row.get(0),
            )?;
            if exists == 0 {
                return Ok(Vec::new());
            }
            conn.query_map("SELECT entry FROM log ORDER BY rowid", [], |row| {
                row.get::<_, String>(0)
            })
        })
        .await?;
    let landed = db.commit().await?;
    Ok(Json(
        json!({ "entries": entries, "version": landed.version.get(), "wrote": landed.wrote }),
    ))
}

pub fn app(engine: Engine, gate: Arc<Gate>) -> Router {
    Router::new()
        .route("/append", post(append))
        .route("/fail", post(append_then_fail))
        .route("/log", post(read_log))
        .with_state(gate)
        .layer(DatabaseSyncLayer::new(engine, &Limits::default()))
        .layer(UserContextLayer::new(&AuthMode::Header {
            trusted_proxy: false,
        }))
}

async fn call(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    path: &str,
    body: &str,
) -> crate::common::Answer {
    answer(
        client
            .post(format!("http://{addr}{path}"))
            .header("x-user-id", "carol")
            .body(body.to_owned()),
    )
    .await
}

#[tokio::test]
async fn success_commits_once_and_failure_rolls_back() {
    let dirs = Dirs::new();
    let engine = engine(dirs.data("a"), dirs.bucket(), ConflictPolicy::LastWriteWins).await;
    let (addr, client) = TestServer::start_app(app(engine.clone(), Gate::open())).await;

    let first = call(&client, addr, "/append", "kept").await;
    assert_eq!(
        (first.status, first.version),
        (200, Some(1)),
        "{:?}",
        first.body
    );
    assert_eq!(first.body, json!({ "user": "carol", "from": 0 }));

    let failed = call(&client, addr, "/fail", "").await;
    assert_eq!(
        (failed.status, failed.code(), failed.version),
        (400, "bad_request", Some(1))
    );
    let log = call(&client, addr, "/log", "").await;
    assert_eq!(
        log.body,
        json!({ "entries": ["kept"], "version": 1, "wrote": false })
    );
    assert_eq!(log.version, Some(1));
    assert_eq!(
        engine.metrics().uploads.load(Ordering::Relaxed),
        1,
        "one upload, for the success"
    );
}

/// Instance A's `/append` is held after its SQL while instance B (same bucket) writes and
/// uploads first; then A's answer, the conflict event on A, and A's view afterwards.
async fn race(policy: ConflictPolicy) -> (crate::common::Answer, usize, Value, Value) {
    let dirs = Dirs::new();
    let a = engine(dirs.data("a"), dirs.bucket(), policy).await;
    let b = engine(dirs.data("b"), dirs.bucket(), policy).await;
    let (gate, control) = Gate::new();
    let (addr, client) = TestServer::start_app(app(a.clone(), Arc::clone(&gate))).await;
    let mut events = a.subscribe();
    let carol = UserId::new("carol").expect("valid id");

    let racing = call(&client, addr, "/append", "from a");
    let winner = control.hold_while(b.transact(&carol, |conn| {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS log(entry TEXT); INSERT INTO log VALUES ('from b')",
        )
    }));
    let (answer, landed) = tokio::join!(racing, winner);
    assert_eq!(landed.expect("B uploads").version.get(), 1);

    let conflict = loop {
        let event = tokio::time::timeout(STEP, events.recv())
            .await
            .expect("an event")
            .expect("open");
        let event = serde_json::to_value(&event).expect("JSON");
        if event["type"] == "conflict" {
            break event;
        }
    };
    let log = call(&client, addr, "/log", "").await;
    (answer, gate.runs(), conflict, log.body)
}

#[tokio::test]
async fn strict_mode_refuses_the_loser_with_conflict_and_keeps_the_winner() {
    let (answer, runs, conflict, log) = race(ConflictPolicy::Strict).await;
    assert_eq!(
        (answer.status, answer.code()),
        (409, "conflict"),
        "{:?}",
        answer.body
    );
    assert_eq!(
        answer.version,
        Some(0),
        "the version the refused request had seen"
    );
    assert_eq!(runs, 1);
    assert_eq!(conflict["resolution"], "refused");
    assert_eq!(
        log,
        json!({ "entries": ["from b"], "version": 1, "wrote": false })
    );
}

#[tokio::test]
async fn rebase_mode_runs_the_handler_again_on_the_winner() {
    let (answer, runs, conflict, log) = race(ConflictPolicy::Rebase).await;
    assert_eq!(
        (answer.status, answer.version),
        (200, Some(2)),
        "{:?}",
        answer.body
    );
    assert_eq!(
        answer.body["from"], 1,
        "the second run started from the winner"
    );
    assert_eq!(runs, 2);
    assert_eq!(conflict["resolution"], "rebased");
    assert_eq!(
        log,
        json!({ "entries": ["from b", "from a"], "version": 2, "wrote": false })
    );
}

#[tokio::test]
async fn last_write_wins_mode_overwrites_and_says_so() {
    let (answer, runs, conflict, log) = race(ConflictPolicy::LastWriteWins).await;
    assert_eq!(
        (answer.status, answer.version),
        (200, Some(2)),
        "{:?}",
        answer.body
    );
    assert_eq!(runs, 1);
    assert_eq!(conflict["resolution"], "overwritten");
    assert_eq!(
        log,
        json!({ "entries": ["from a"], "version": 2, "wrote": false })
    );
}

#[tokio::test]
async fn handlers_behind_the_layer_are_paced_like_the_v1_api() {
    let dirs = Dirs::new();
    let mut config = cellar_engine::EngineConfig::new(dirs.data("a"));
    config.min_upload_interval = std::time::Duration::from_millis(600);
    let engine = Engine::open(config, dirs.bucket()).await.expect("engine");
    let (addr, client) = TestServer::start_app(app(engine, Gate::open())).await;
    let first = call(&client, addr, "/append", "one").await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let started = std::time::Instant::now();
    let second = call(&client, addr, "/append", "two").await;
    assert_eq!(second.status, 200, "{:?}", second.body);
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(450),
        "the second upload went {waited:?} after the first, inside the 600 ms interval"
    );
}

#[tokio::test]
async fn v1_work_queued_behind_a_handler_rides_on_its_upload() {
    let dirs = Dirs::new();
    let engine = engine(dirs.data("a"), dirs.bucket(), ConflictPolicy::Strict).await;
    let (gate, control) = Gate::new();
    let (addr, client) = TestServer::start_app(app(engine.clone(), gate)).await;
    let carol = UserId::new("carol").unwrap();
    let uploads_before = engine.metrics().uploads.load(Ordering::Relaxed);
    let handler = tokio::spawn({
        let client = client.clone();
        async move { call(&client, addr, "/append", "from the handler").await }
    });
    // While the handler holds carol (its table made, its row written), work through `Engine::transact` (what
    // `/v1/query` uses) queues behind it.
    let mut queued = None;
    control
        .hold_while(async {
            let engine = engine.clone();
            queued = Some(tokio::spawn(async move {
                engine
                    .transact(&carol, |conn| {
                        conn.execute("INSERT INTO log VALUES ('queued')", [])?;
                        Ok(())
                    })
                    .await
            }));
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        })
        .await;
    let answered = handler.await.unwrap();
    assert_eq!(answered.status, 200, "{:?}", answered.body);
    let queued = queued
        .expect("spawned")
        .await
        .unwrap()
        .expect("the queued work is committed");
    assert_eq!(
        answered.version,
        Some(queued.version.get()),
        "one version for both"
    );
    assert_eq!(
        engine.metrics().uploads.load(Ordering::Relaxed) - uploads_before,
        1,
        "one upload for both"
    );
    let log = call(&client, addr, "/log", "").await;
    assert_eq!(log.body["entries"], json!(["from the handler", "queued"]));
}
