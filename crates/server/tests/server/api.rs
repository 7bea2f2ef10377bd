//! The v1 API on a folder store, header auth: every route, every error it can give.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cellar_server::{Limits, ServerOptions};
use serde_json::json;

use crate::common::{answer, local_server};

fn create_and_insert() -> serde_json::Value {
    json!({ "statements": [
        "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL)",
        { "sql": "INSERT INTO t(name, score) VALUES (?, ?)", "params": ["a", 1.5] },
        "SELECT id, name, score FROM t",
    ]})
}

#[tokio::test]
async fn query_runs_statements_in_one_transaction_and_answers_the_new_version() {
    let (server, engine, _dirs) = local_server(ServerOptions::default()).await;

    let wrote = server.query("alice", create_and_insert()).await;
    assert_eq!(wrote.status, 200, "{:?}", wrote.body);
    assert_eq!(wrote.body["version"], 1);
    assert_eq!(wrote.body["wrote"], true);
    assert_eq!(wrote.version, Some(1));
    assert_eq!(wrote.body["results"][1]["rows_affected"], 1);
    assert_eq!(wrote.body["results"][1]["last_insert_rowid"], 1);
    assert_eq!(
        wrote.body["results"][2]["columns"],
        json!(["id", "name", "score"])
    );
    assert_eq!(*wrote.rows(2), json!([[1, "a", 1.5]]));

    let read = server
        .query("alice", json!({ "statements": ["SELECT count(*) FROM t"] }))
        .await;
    assert_eq!((read.status, read.version), (200, Some(1)));
    assert_eq!(read.body["wrote"], false);
    assert_eq!(
        read.body["results"][0]["last_insert_rowid"],
        serde_json::Value::Null
    );
    assert_eq!(
        engine.metrics().uploads.load(Ordering::Relaxed),
        1,
        "a read uploads nothing"
    );
}

#[tokio::test]
async fn a_failing_statement_rolls_back_the_whole_request() {
    let (server, engine, _dirs) = local_server(ServerOptions::default()).await;
    server
        .query("alice", json!({ "statements": ["CREATE TABLE t(x)"] }))
        .await;

    let failed = server
        .query(
            "alice",
            json!({ "statements": ["INSERT INTO t VALUES (1)", "SELECT * FROM missing"] }),
        )
        .await;
    assert_eq!(
        (failed.status, failed.code()),
        (400, "sql_error"),
        "{:?}",
        failed.body
    );
    assert!(
        failed.message().contains("statement 2"),
        "{}",
        failed.message()
    );
    assert!(failed.message().contains("missing"), "{}", failed.message());
    assert_eq!(
        failed.version,
        Some(1),
        "a known user's error still carries Cellar-Version"
    );

    let after = server
        .query("alice", json!({ "statements": ["SELECT count(*) FROM t"] }))
        .await;
    assert_eq!(*after.rows(0), json!([[0]]));
    assert_eq!(after.body["version"], 1);
    assert_eq!(engine.metrics().uploads.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn blobs_nulls_and_numbers_travel_as_json_both_ways() {
    let (server, _engine, _dirs) = local_server(ServerOptions::default()).await;
    let answer = server
        .query(
            "alice",
            json!({ "statements": [
                "CREATE TABLE b(data BLOB, note TEXT, n INTEGER, flag INTEGER)",
                { "sql": "INSERT INTO b VALUES (?, ?, ?, ?)",
                  "params": [{ "base64": "AAEC/w==" }, null, -9007199254740993i64, true] },
                "SELECT data, note, n, flag, length(data) FROM b",
            ]}),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(
        *answer.rows(2),
        json!([[{ "base64": "AAEC/w==" }, null, -9007199254740993i64, 1, 4]])
    );
}

#[tokio::test]
async fn malformed_requests_get_bad_request_before_anything_is_touched() {
    let (server, _engine, dirs) = local_server(ServerOptions::default()).await;
    let raw = |body: &'static str| {
        server
            .client
            .post(server.url("/v1/query"))
            .header("x-user-id", "nobody")
            .body(body)
    };
    let cases = [
        ("{not json", "invalid request body"),
        (
            r#"{"statements": ["SELECT 1"], "extra": true}"#,
            "unknown field `extra`",
        ),
        (
            r#"{"statements": [{"sql": "SELECT ?", "parms": [1]}]}"#,
            "unknown field `parms`",
        ),
        (r#"{"statements": [7]}"#, "a SQL string"),
        (
            r#"{"statements": [{"sql": "SELECT ?", "params": [[1]]}]}"#,
            "statement 1, parameter 1",
        ),
        (
            r#"{"statements": [{"sql": "SELECT ?", "params": [{"base64": "%%"}]}]}"#,
            "base64",
        ),
    ];
    for (body, expected) in cases {
        let got = answer(raw(body)).await;
        assert_eq!(
            (got.status, got.code()),
            (400, "bad_request"),
            "{body}: {:?}",
            got.body
        );
        assert!(
            got.message().contains(expected),
            "{body}: {}",
            got.message()
        );
    }
    assert!(
        !dirs.data("a").join("nobody").exists(),
        "no local file was created"
    );
}

#[tokio::test]
async fn sql_outside_the_sandbox_is_forbidden_and_named() {
    let (server, _engine, _dirs) = local_server(ServerOptions::default()).await;
    for (sql, named) in [
        ("ATTACH DATABASE '/tmp/cellar-escape.db' AS other", "ATTACH"),
        ("PRAGMA writable_schema = ON", "writable_schema"),
        ("COMMIT", "transaction"),
    ] {
        let answer = server.query("alice", json!({ "statements": [sql] })).await;
        assert_eq!(
            (answer.status, answer.code()),
            (403, "forbidden"),
            "{sql}: {:?}",
            answer.body
        );
        let message = answer.message().to_lowercase();
        assert!(message.contains(&named.to_lowercase()), "{sql}: {message}");
        assert_eq!(answer.version, Some(0));
    }
}

#[tokio::test]
async fn request_limits_answer_payload_too_large_and_bad_request() {
    let limits = Limits {
        max_body_bytes: 2048,
        max_statements: 3,
        max_sql_bytes: 100,
        max_result_rows: 5,
        ..Limits::default()
    };
    let (server, _engine, _dirs) = local_server(ServerOptions {
        limits,
        ..ServerOptions::default()
    })
    .await;

    let big_body = json!({ "statements": [{ "sql": "SELECT ?", "params": ["x".repeat(4096)] }] });
    let too_many = json!({ "statements": ["SELECT 1", "SELECT 2", "SELECT 3", "SELECT 4"] });
    let too_long = json!({ "statements": [format!("SELECT 1 {}", " ".repeat(200))] });
    for (body, expected) in [
        (big_body, "2048 bytes"),
        (too_many, "4 statements"),
        (too_long, "bytes of SQL"),
    ] {
        let answer = server.query("alice", body).await;
        assert_eq!(
            (answer.status, answer.code()),
            (413, "payload_too_large"),
            "{:?}",
            answer.body
        );
        assert!(answer.message().contains(expected), "{}", answer.message());
    }

    let rows = server
        .query("alice", json!({ "statements": ["WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 6) SELECT x FROM c"] }))
        .await;
    assert_eq!(
        (rows.status, rows.code()),
        (400, "bad_request"),
        "{:?}",
        rows.body
    );
    assert!(rows.message().contains("result rows"), "{}", rows.message());
}

/// Counts forever; only the time limit stops it.
const ENDLESS: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_query_is_interrupted_while_other_users_are_served() {
    let limits = Limits {
        query_timeout: Duration::from_millis(700),
        ..Limits::default()
    };
    let (server, engine, _dirs) = local_server(ServerOptions {
        limits,
        ..ServerOptions::default()
    })
    .await;
    server
        .query("slow", json!({ "statements": ["CREATE TABLE t(x)"] }))
        .await;

    let started = Instant::now();
    let runaway = async {
        let statements = json!({ "statements": ["INSERT INTO t VALUES (1)", ENDLESS] });
        (server.query("slow", statements).await, started.elapsed())
    };
    let other = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = server
            .query("fast", json!({ "statements": ["SELECT 1"] }))
            .await;
        (answer, started.elapsed())
    };
    let ((runaway, runaway_done), (other, other_done)) = tokio::join!(runaway, other);

    assert_eq!(
        (runaway.status, runaway.code()),
        (408, "query_timeout"),
        "{:?}",
        runaway.body
    );
    assert!(
        runaway_done >= Duration::from_millis(700),
        "interrupted after {runaway_done:?}"
    );
    assert!(
        runaway_done < Duration::from_secs(10),
        "interrupted after {runaway_done:?}"
    );
    assert_eq!(other.status, 200);
    assert!(
        other_done < runaway_done,
        "the other user was served meanwhile ({other_done:?})"
    );

    let after = server
        .query("slow", json!({ "statements": ["SELECT count(*) FROM t"] }))
        .await;
    assert_eq!(
        (after.status, after.version),
        (200, Some(1)),
        "{:?}",
        after.body
    );
    assert_eq!(
        *after.rows(0),
        json!([[0]]),
        "the interrupted request's insert was rolled back"
    );
    assert_eq!(engine.metrics().uploads.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn db_status_and_file_describe_the_callers_database() {
    let (server, _engine, dirs) = local_server(ServerOptions::default()).await;
    server.query("alice", create_and_insert()).await;

    let status = server.get("alice", "/v1/db").await;
    assert_eq!((status.status, status.version), (200, Some(1)));
    assert_eq!(status.body["user_id"], "alice");
    assert_eq!(status.body["version"], 1);
    assert!(
        status.body["size_bytes"].as_u64().unwrap_or(0) > 0,
        "{:?}",
        status.body
    );
    assert!(
        status.body["updated_at"]
            .as_str()
            .is_some_and(|t| t.contains('T')),
        "{:?}",
        status.body
    );

    let file = server.get("alice", "/v1/db/file").await;
    assert_eq!((file.status, file.version), (200, Some(1)));
    assert_eq!(file.headers["content-type"], "application/vnd.sqlite3");
    assert!(file.bytes.starts_with(b"SQLite format 3\0"));
    let copy = dirs.data("download.sqlite");
    std::fs::write(&copy, &file.bytes).expect("write copy");
    let conn = cellar_engine::rusqlite::Connection::open(&copy).expect("a database");
    let name: String = conn
        .query_row("SELECT name FROM t", [], |row| row.get(0))
        .expect("row");
    assert_eq!(name, "a");

    let fresh = server.get("nobody-yet", "/v1/db").await;
    assert_eq!((fresh.status, fresh.version), (200, Some(0)));
    assert_eq!(fresh.body["updated_at"], serde_json::Value::Null);
}

#[tokio::test]
async fn healthz_and_metrics_answer_without_identity() {
    let (server, engine, _dirs) = local_server(ServerOptions::default()).await;
    server.query("alice", create_and_insert()).await;
    server
        .query("alice", json!({ "statements": ["SELECT nope"] }))
        .await;

    let health = answer(server.client.get(server.url("/healthz"))).await;
    assert_eq!(
        (health.status, &health.body),
        (200, &json!({ "status": "ok" }))
    );

    let metrics = answer(server.client.get(server.url("/metrics"))).await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8(metrics.bytes).expect("text");
    for line in [
        "cellar_http_requests_total{route=\"/v1/query\",status=\"200\"} 1",
        "cellar_http_requests_total{route=\"/v1/query\",status=\"400\"} 1",
        "cellar_http_requests_total{route=\"/healthz\",status=\"200\"} 1",
        "cellar_uploads_total 1",
        "cellar_conflicts_total 0",
        "cellar_upload_seconds_count 1",
        "cellar_sync_in_seconds_count 2",
        "cellar_cached_databases 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in\n{text}"
        );
    }
    let uploaded = engine.metrics().bytes_uploaded.load(Ordering::Relaxed);
    assert!(
        text.contains(&format!("cellar_upload_bytes_total {uploaded}\n")),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_json_shape() {
    let (server, _engine, _dirs) = local_server(ServerOptions::default()).await;
    let missing = answer(server.client.get(server.url("/v2/nothing"))).await;
    assert_eq!((missing.status, missing.code()), (404, "not_found"));
    let wrong = answer(server.client.delete(server.url("/healthz"))).await;
    assert_eq!(
        (wrong.status, wrong.code()),
        (405, "method_not_allowed"),
        "{:?}",
        wrong.body
    );
    let wrong_on_query = server.get("alice", "/v1/query").await;
    assert_eq!(
        (wrong_on_query.status, wrong_on_query.code()),
        (405, "method_not_allowed")
    );
}

#[tokio::test]
async fn callers_must_say_who_they_are_with_a_valid_user_id() {
    let (server, _engine, dirs) = local_server(ServerOptions::default()).await;
    let anonymous = answer(
        server
            .client
            .post(server.url("/v1/query"))
            .json(&json!({ "statements": ["SELECT 1"] })),
    )
    .await;
    assert_eq!((anonymous.status, anonymous.code()), (401, "unauthorized"));
    assert_eq!(anonymous.version, None);

    let long = "x".repeat(300);
    for bad in ["..", "a/b", "-dash", "", long.as_str(), "tab\tchar"] {
        let answer = server
            .query(bad, json!({ "statements": ["SELECT 1"] }))
            .await;
        assert_eq!(
            (answer.status, answer.code()),
            (400, "bad_request"),
            "{bad:?}: {:?}",
            answer.body
        );
        assert!(answer.message().contains("user id"), "{}", answer.message());
        let db = server.get(bad, "/v1/db").await;
        assert_eq!(db.status, 400, "{bad:?}");
    }
    let entries: Vec<_> = std::fs::read_dir(dirs.data("a"))
        .expect("data dir")
        .flatten()
        .collect();
    assert!(entries.is_empty(), "nothing was created: {entries:?}");
}

#[tokio::test]
async fn two_users_never_see_each_others_data() {
    let (server, _engine, _dirs) = local_server(ServerOptions::default()).await;
    let secret = json!({ "statements": ["CREATE TABLE notes(text)", "INSERT INTO notes VALUES ('alice only')"] });
    assert_eq!(server.query("alice", secret).await.status, 200);

    let peek = server
        .query("bob", json!({ "statements": ["SELECT * FROM notes"] }))
        .await;
    assert_eq!((peek.status, peek.code()), (400, "sql_error"));
    assert!(
        peek.message().contains("no such table"),
        "{}",
        peek.message()
    );

    let own = json!({ "statements": ["CREATE TABLE notes(text)", "INSERT INTO notes VALUES ('bob only')"] });
    let bob = server.query("bob", own).await;
    assert_eq!(bob.body["version"], 1, "versions are per user");
    let alice = server
        .query("alice", json!({ "statements": ["SELECT text FROM notes"] }))
        .await;
    let bob = server
        .query("bob", json!({ "statements": ["SELECT text FROM notes"] }))
        .await;
    assert_eq!(*alice.rows(0), json!([["alice only"]]));
    assert_eq!(*bob.rows(0), json!([["bob only"]]));
    let bob_file = server.get("bob", "/v1/db/file").await;
    assert!(!bob_file.bytes.windows(10).any(|w| w == b"alice only"));
}

#[tokio::test]
async fn the_answer_says_whether_the_write_was_in_the_bucket_or_only_local() {
    use crate::common::{Dirs, TestServer, engine};
    let dirs = Dirs::new();
    let sync = TestServer::start(
        engine(
            dirs.data("sync"),
            dirs.bucket(),
            cellar_engine::ConflictPolicy::Strict,
        )
        .await,
        ServerOptions::default(),
    )
    .await;
    let wrote = sync.query("alice", create_and_insert()).await;
    assert_eq!(wrote.body["durability"], "sync", "{:?}", wrote.body);

    let mut config = cellar_engine::EngineConfig::new(dirs.data("async"));
    config.durability = cellar_engine::Durability::Async;
    let async_engine = cellar_engine::Engine::open(config, dirs.bucket())
        .await
        .expect("engine opens");
    let lazy = TestServer::start(async_engine, ServerOptions::default()).await;
    let wrote = lazy.query("bob", create_and_insert()).await;
    assert_eq!(wrote.status, 200, "{:?}", wrote.body);
    assert_eq!(wrote.body["durability"], "async", "{:?}", wrote.body);
    assert_eq!(wrote.version, Some(1));
}
