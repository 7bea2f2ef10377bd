//! Against real S3-compatible servers (SeaweedFS, moto) on 127.0.0.1.

use cellar_engine::{ConflictPolicy, SnapshotMetadata};
use cellar_server::ServerOptions;
use cellar_testkit::S3Server;
use serde_json::json;

use crate::common::{Dirs, TestServer, answer, engine, s3_store};
use crate::events::{connect, next_event};
use crate::layers::{Gate, app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_bucket_read_each_others_writes() {
    let s3 = S3Server::seaweedfs().await.expect("SeaweedFS starts");
    let dirs = Dirs::new();
    let a = engine(dirs.data("a"), s3_store(&s3), ConflictPolicy::Strict).await;
    let b = engine(dirs.data("b"), s3_store(&s3), ConflictPolicy::Strict).await;
    let writer_a = a.config().writer_id.clone();
    let server_a = TestServer::start(a, ServerOptions::default()).await;
    let server_b = TestServer::start(b, ServerOptions::default()).await;
    let (mut events_on_b, _) = connect(&server_b, "dana").await;

    let wrote = server_a
        .query(
            "dana",
            json!({ "statements": ["CREATE TABLE t(x)", "INSERT INTO t VALUES ('from a')"] }),
        )
        .await;
    assert_eq!(
        (wrote.status, wrote.version),
        (200, Some(1)),
        "{:?}",
        wrote.body
    );

    let read = server_b
        .query("dana", json!({ "statements": ["SELECT x FROM t"] }))
        .await;
    assert_eq!(
        (read.status, read.version),
        (200, Some(1)),
        "{:?}",
        read.body
    );
    assert_eq!(*read.rows(0), json!([["from a"]]));
    let event = next_event(&mut events_on_b).await;
    assert_eq!(
        (event["type"].as_str(), event["version"].as_u64()),
        (Some("version"), Some(1))
    );
    assert_eq!(event["writer"], writer_a.as_str(), "B saw A's write land");

    let wrote = server_b
        .query(
            "dana",
            json!({ "statements": ["INSERT INTO t VALUES ('from b')"] }),
        )
        .await;
    assert_eq!(wrote.version, Some(2));
    let read = server_a
        .query(
            "dana",
            json!({ "statements": ["SELECT x FROM t ORDER BY rowid"] }),
        )
        .await;
    assert_eq!(
        (read.version, read.rows(0)),
        (Some(2), &json!([["from a"], ["from b"]]))
    );
}

#[tokio::test]
async fn a_query_round_trips_through_a_real_s3_server() {
    let s3 = S3Server::moto().await.expect("moto starts");
    let dirs = Dirs::new();
    let store = s3_store(&s3);
    let engine = engine(dirs.data("a"), store.clone(), ConflictPolicy::LastWriteWins).await;
    let key = engine
        .layout()
        .database_key(&"erin".parse().expect("valid id"));
    let server = TestServer::start(engine, ServerOptions::default()).await;

    let wrote = server
        .query("erin", json!({ "statements": [
            "CREATE TABLE files(name TEXT, data BLOB)",
            { "sql": "INSERT INTO files VALUES (?, ?)", "params": ["a.bin", { "base64": "3q2+7w==" }] },
        ]}))
        .await;
    assert_eq!(
        (wrote.status, wrote.version),
        (200, Some(1)),
        "{:?}",
        wrote.body
    );

    let object = store
        .head(&key)
        .await
        .expect("head")
        .expect("the object is in the bucket");
    let metadata = SnapshotMetadata::from_raw(&object.metadata).expect("Cellar metadata");
    assert_eq!(metadata.version.get(), 1);

    let file = server.get("erin", "/v1/db/file").await;
    assert_eq!((file.status, file.version), (200, Some(1)));
    assert_eq!(
        file.bytes.len() as u64,
        metadata.size,
        "the snapshot is the uploaded version"
    );
    let read = server
        .query(
            "erin",
            json!({ "statements": ["SELECT name, data FROM files"] }),
        )
        .await;
    assert_eq!(*read.rows(0), json!([["a.bin", { "base64": "3q2+7w==" }]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_answers_sync_pending_or_store_unavailable() {
    let mut s3 = S3Server::moto().await.expect("moto starts");
    let dirs = Dirs::new();
    let held = engine(dirs.data("a"), s3_store(&s3), ConflictPolicy::LastWriteWins).await;
    let plain = engine(dirs.data("b"), s3_store(&s3), ConflictPolicy::LastWriteWins).await;
    let (gate, control) = Gate::new();
    let (addr, client) = TestServer::start_app(app(held, gate)).await;
    let server = TestServer::start(plain, ServerOptions::default()).await;

    let writing = answer(
        client
            .post(format!("http://{addr}/append"))
            .header("x-user-id", "carol")
            .body("lost?"),
    );
    let (pending, ()) = tokio::join!(writing, control.hold_while(async { s3.kill() }));
    assert_eq!(
        (pending.status, pending.code()),
        (503, "sync_pending"),
        "{:?}",
        pending.body
    );
    assert!(
        pending.message().contains("pending upload"),
        "{}",
        pending.message()
    );

    let down = server
        .query("frank", json!({ "statements": ["SELECT 1"] }))
        .await;
    assert_eq!(
        (down.status, down.code()),
        (503, "store_unavailable"),
        "{:?}",
        down.body
    );
    assert_eq!(
        down.version, None,
        "the version cannot be known without the store"
    );
    // Causes in words: no object keys, endpoints or the S3 client's retry settings.
    for message in [pending.message(), down.message()] {
        for internal in ["cellar-users", "database.sqlite", "127.0.0.1", "retry", "/"] {
            assert!(!message.contains(internal), "{internal} in {message}");
        }
    }
}
