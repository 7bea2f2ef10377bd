//! What a hostile client tries, and what it gets: a failed request never commits, an
//! answer never outgrows its bound, TEMP objects and unknown users leave nothing behind,
//! and error messages name causes, not paths or keys.

use std::time::Duration;

use cellar_engine::{ConflictPolicy, Engine, EngineConfig, UserId};
use cellar_server::{Limits, ServerOptions};
use serde_json::{Value, json};

use crate::common::*;

/// Runs `statements` as one request.
fn request(statements: &[&str]) -> Value {
    json!({ "statements": statements })
}

/// The values of `SELECT x FROM t` for `user`, as a fresh instance reads them from the bucket.
async fn in_bucket(dirs: &Dirs, user: &str) -> Vec<String> {
    let reader = engine(
        dirs.data(&format!("reader-{}", uuid_like())),
        dirs.bucket(),
        ConflictPolicy::Strict,
    )
    .await;
    let user = UserId::new(user).expect("valid id");
    reader
        .transact(&user, |conn| {
            conn.query_map("SELECT x FROM t ORDER BY x", [], |row| row.get(0))
        })
        .await
        .expect("read from the bucket")
        .value
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A server whose uploads of one user are paced `interval` apart, so that requests sent
/// while one waits are committed with it (group commit), with small limits to hit.
async fn paced_server(interval: Duration) -> (TestServer, Engine, Dirs) {
    let dirs = Dirs::new();
    let mut config = EngineConfig::new(dirs.data("a"));
    config.min_upload_interval = interval;
    let engine = Engine::open(config, dirs.bucket())
        .await
        .expect("engine opens");
    let options = ServerOptions {
        limits: Limits {
            max_result_rows: 5,
            query_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
        ..ServerOptions::default()
    };
    let server = TestServer::start(engine.clone(), options).await;
    (server, engine, dirs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_request_committed_with_others_changes_nothing_whatever_its_sql_names() {
    let (server, _engine, dirs) = paced_server(Duration::from_millis(1500)).await;
    let first = server
        .query("sp", request(&["CREATE TABLE t(x TEXT)"]))
        .await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let insert = "INSERT INTO t VALUES ('A-should-not-exist')";
    let endless = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c)";
    let interrupted_write = format!("INSERT INTO t {endless} SELECT 'A-loop' FROM c");
    let interrupted_read = format!("{endless} SELECT count(*) FROM c");
    let failures: [(&str, Vec<&str>, &str); 9] = [
        (
            "the issue's reproduction",
            vec![
                insert,
                "SAVEPOINT cellar_group",
                "SELECT * FROM nonexistent",
            ],
            "forbidden",
        ),
        (
            "releasing the engine's savepoint",
            vec![insert, "RELEASE \"CELLAR_GROUP\""],
            "forbidden",
        ),
        (
            "a savepoint of its own left open",
            vec![
                insert,
                "SAVEPOINT mine",
                insert,
                "SELECT * FROM nonexistent",
            ],
            "sql_error",
        ),
        (
            "a SQL error",
            vec![insert, "INSERT INTO nowhere VALUES (1)"],
            "sql_error",
        ),
        (
            "a sandbox refusal",
            vec![insert, "ATTACH 'x.db' AS x"],
            "forbidden",
        ),
        (
            "too many rows",
            vec![insert, "SELECT value FROM json_each('[1,2,3,4,5,6,7]')"],
            "bad_request",
        ),
        (
            "a read past the time limit",
            vec![insert, &interrupted_read],
            "query_timeout",
        ),
        (
            "a write past the time limit",
            vec![insert, &interrupted_write],
            "query_timeout",
        ),
        (
            "a value too big",
            vec![insert, "SELECT zeroblob(20000000)"],
            "payload_too_large",
        ),
    ];
    for (round, (what, failing, code)) in failures.iter().enumerate() {
        let (w, b) = (format!("W-{round}"), format!("B-{round}"));
        let (server, w_sql, b_sql) = (
            &server,
            format!("INSERT INTO t VALUES ('{w}')"),
            format!("INSERT INTO t VALUES ('{b}')"),
        );
        // W waits for its upload slot; A and B arrive meanwhile and join its group.
        let leader = server.query("sp", request(&[&w_sql]));
        let failed = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            server.query("sp", request(failing)).await
        };
        let after = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            server.query("sp", request(&[&b_sql])).await
        };
        let (leader, failed, after) = tokio::join!(leader, failed, after);
        assert_eq!(failed.code(), *code, "{what}: {:?}", failed.body);
        assert_eq!(leader.status, 200, "{what}: {:?}", leader.body);
        assert_eq!(after.status, 200, "{what}: {:?}", after.body);
        assert_eq!(
            leader.version, after.version,
            "{what}: W and B were not committed together, so the group was not tested"
        );
    }
    let local = server
        .query("sp", request(&["SELECT x FROM t WHERE x LIKE 'A%'"]))
        .await;
    let rows: Vec<&str> = local
        .rows(0)
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|row| row[0].as_str())
        .collect();
    let bucket = in_bucket(&dirs, "sp").await;
    for (round, _) in failures.iter().enumerate() {
        for expected in [format!("W-{round}"), format!("B-{round}")] {
            assert!(bucket.contains(&expected), "{expected} missing: {bucket:?}");
        }
    }
    assert!(
        !rows.iter().any(|x| x.starts_with('A')) && !bucket.iter().any(|x| x.starts_with('A')),
        "a failed request's writes were committed: here {rows:?}, in the bucket {bucket:?}"
    );
}

#[tokio::test]
async fn an_answer_larger_than_the_response_limit_is_refused_before_it_is_built() {
    let options = ServerOptions {
        limits: Limits {
            max_response_bytes: 4 * 1024 * 1024,
            max_result_rows: 1000,
            ..Limits::default()
        },
        ..ServerOptions::default()
    };
    let (server, _engine, _dirs) = local_server(options).await;
    // The request: 200 rows of 16 MB each (3.2 GB), and the 1.28 GB one.
    for rows in [200, 60] {
        let sql = format!(
            "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < {rows}) \
             SELECT zeroblob(16000000) FROM c"
        );
        let answer = server.query("big", request(&[&sql])).await;
        assert_eq!(
            (answer.status, answer.code()),
            (413, "payload_too_large"),
            "{:?}",
            answer.body
        );
        assert!(
            answer.message().contains("4194304 bytes"),
            "{}",
            answer.message()
        );
    }
    // Spread over statements, the bound is the answer's, not a statement's.
    let quarter = "SELECT zeroblob(800000)"; // about 1.07 MB of base64 each
    let answer = server.query("big", request(&[quarter; 5])).await;
    assert_eq!(answer.code(), "payload_too_large", "{:?}", answer.body);
    let fits = server.query("big", request(&[quarter; 3])).await;
    assert_eq!(fits.status, 200, "{:?}", fits.body);
    assert_eq!(server.get("", "/healthz").await.status, 200);
}

#[tokio::test]
async fn temp_objects_are_refused_and_upload_nothing() {
    let (server, engine, _dirs) = local_server(ServerOptions::default()).await;
    server
        .query("tmp", request(&["CREATE TABLE kept(x)"]))
        .await;
    let uploads = engine
        .metrics()
        .uploads
        .load(std::sync::atomic::Ordering::Relaxed);
    for sql in [
        "CREATE TEMP TABLE big(x)",
        "CREATE TABLE temp.big(x)",
        "CREATE TEMP TRIGGER tr AFTER INSERT ON kept BEGIN SELECT 1; END",
        "CREATE TEMP VIEW v AS SELECT 1",
    ] {
        let answer = server.query("tmp", request(&[sql])).await;
        assert_eq!(answer.code(), "forbidden", "{sql}: {:?}", answer.body);
        assert!(answer.message().contains("TEMP"), "{}", answer.message());
    }
    assert_eq!(
        engine
            .metrics()
            .uploads
            .load(std::sync::atomic::Ordering::Relaxed),
        uploads,
        "a refused request uploaded"
    );
}

#[tokio::test]
async fn reads_by_unknown_users_leave_nothing_behind() {
    let (server, _engine, dirs) = local_server(ServerOptions::default()).await;
    for n in 0..20 {
        let user = format!("stranger-{n}");
        let read = server.query(&user, request(&["SELECT 1"])).await;
        assert_eq!(
            (read.status, read.version),
            (200, Some(0)),
            "{:?}",
            read.body
        );
        let status = server.get(&user, "/v1/db").await;
        assert_eq!(status.status, 200, "{:?}", status.body);
        let failed = server.query(&user, request(&["SELECT * FROM t"])).await;
        assert_eq!(failed.code(), "sql_error");
        let file = server.get(&user, "/v1/db/file").await;
        assert_eq!(
            (file.status, file.code()),
            (404, "not_found"),
            "{:?}",
            file.body
        );
    }
    let left: Vec<_> = std::fs::read_dir(dirs.data("a"))
        .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !left
            .iter()
            .any(|name| name.to_string_lossy().starts_with("stranger")),
        "left behind: {left:?}"
    );
    // A user who then writes gets a database as usual.
    let write = server
        .query("stranger-0", request(&["CREATE TABLE t(x)"]))
        .await;
    assert_eq!((write.status, write.version), (200, Some(1)));
    let file = server.get("stranger-0", "/v1/db/file").await;
    assert_eq!(file.status, 200);
}

#[tokio::test]
async fn a_large_database_file_streams_whole_and_consistent() {
    let (server, _engine, dirs) = local_server(ServerOptions::default()).await;
    let fill = "INSERT INTO t WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c \
                WHERE n < 400) SELECT n, randomblob(20000) FROM c";
    let write = server
        .query("large", request(&["CREATE TABLE t(n, b)", fill]))
        .await;
    assert_eq!(write.status, 200, "{:?}", write.body);
    let file = server.get("large", "/v1/db/file").await;
    assert_eq!((file.status, file.version), (200, Some(1)));
    assert!(file.bytes.len() > 8_000_000, "{} bytes", file.bytes.len());
    assert_eq!(
        file.headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(file.bytes.len().to_string().as_str())
    );
    let copy = dirs.data("copy.sqlite");
    std::fs::write(&copy, &file.bytes).expect("write copy");
    let conn = cellar_engine::rusqlite::Connection::open(&copy).expect("a database");
    let (rows, check): (i64, String) = conn
        .query_row(
            "SELECT count(*), (SELECT integrity_check FROM pragma_integrity_check) FROM t",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("counted");
    assert_eq!((rows, check.as_str()), (400, "ok"));
}
