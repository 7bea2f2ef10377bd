//! History over HTTP: `GET /v1/db/versions`, `GET /v1/db/file?version=N`,
//! `GET /v1/db/diff` and `POST /v1/db/restore`, on a folder store shared by one or two
//! real servers.

use std::time::Duration;

use cellar_engine::{ConflictPolicy, Engine, EngineConfig};
use cellar_server::{Limits, ServerOptions};
use serde_json::{Value, json};

use crate::common::{Answer, Dirs, TestServer, answer, engine, local_server};
use crate::events::{connect, next_event};

/// Versions 1 to 3 of `user`'s notes: `one`, then `two`, then `three` added, a little
/// apart so that each has a moment of its own.
pub(crate) async fn three_versions(server: &TestServer, user: &str) {
    let writes = [
        json!({ "statements": ["CREATE TABLE notes(text)", "INSERT INTO notes VALUES ('one')"] }),
        json!({ "statements": ["INSERT INTO notes VALUES ('two')"] }),
        json!({ "statements": ["INSERT INTO notes VALUES ('three')"] }),
    ];
    for (n, body) in writes.into_iter().enumerate() {
        let wrote = server.query(user, body).await;
        assert_eq!(wrote.body["version"], n + 1, "{:?}", wrote.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The notes as `server` serves them to `user` now.
pub(crate) async fn notes(server: &TestServer, user: &str) -> Value {
    let read = server
        .query(
            user,
            json!({ "statements": ["SELECT text FROM notes ORDER BY rowid"] }),
        )
        .await;
    assert_eq!(read.status, 200, "{:?}", read.body);
    read.rows(0).clone()
}

/// The notes of a downloaded database file.
fn notes_in_file(bytes: &[u8]) -> Vec<String> {
    assert!(bytes.starts_with(b"SQLite format 3\0"));
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), bytes).expect("write the download");
    let conn = cellar_engine::rusqlite::Connection::open(file.path()).expect("a database");
    let mut select = conn
        .prepare("SELECT text FROM notes ORDER BY rowid")
        .expect("notes");
    select
        .query_map([], |row| row.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("text")
}

async fn restore(server: &TestServer, user: &str, body: Value) -> Answer {
    answer(
        server
            .client
            .post(server.url("/v1/db/restore"))
            .header("x-user-id", user)
            .json(&body),
    )
    .await
}

pub(crate) fn listed(answer: &Answer) -> Vec<u64> {
    answer.body["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|entry| entry["version"].as_u64().expect("a version"))
        .collect()
}

#[tokio::test]
async fn versions_are_listed_newest_first_and_limited() {
    let (server, _engine, _dirs) = local_server(ServerOptions::default()).await;
    three_versions(&server, "alice").await;

    let all = server.get("alice", "/v1/db/versions").await;
    assert_eq!((all.status, all.version), (200, Some(3)), "{:?}", all.body);
    assert_eq!(all.body["user_id"], "alice");
    assert_eq!(listed(&all), [3, 2, 1]);
    let newest = &all.body["versions"][0];
    assert!(
        newest["created_at"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z')),
        "{newest}"
    );
    assert!(
        newest["shipped_bytes"].as_u64().unwrap_or(0) > 0,
        "{newest}"
    );
    assert!(newest["held_by"].is_array(), "{newest}");

    let two = server.get("alice", "/v1/db/versions?limit=2").await;
    assert_eq!(listed(&two), [3, 2]);
    let signed = server.get("alice", "/v1/db/versions?writers=true").await;
    assert!(
        signed.body["versions"]
            .as_array()
            .expect("versions")
            .iter()
            .all(|entry| entry["writer"].is_string()),
        "{:?}",
        signed.body
    );

    for bad in ["limit=0", "limit=10001", "limit=many", "writers=perhaps"] {
        let got = server.get("alice", &format!("/v1/db/versions?{bad}")).await;
        assert_eq!((got.status, got.code()), (400, "bad_request"), "{bad}");
    }
    let nobody = server.get("nobody", "/v1/db/versions").await;
    assert_eq!((nobody.status, nobody.version), (200, Some(0)));
    assert_eq!(nobody.body["versions"], json!([]));
}

#[tokio::test]
async fn an_earlier_version_downloads_as_the_file_it_was() {
    let (server, _engine, _dirs) = local_server(ServerOptions::default()).await;
    three_versions(&server, "alice").await;

    let first = server.get("alice", "/v1/db/file?version=1").await;
    assert_eq!((first.status, first.version), (200, Some(1)));
    assert_eq!(first.headers["content-type"], "application/vnd.sqlite3");
    assert_eq!(
        first.headers["content-disposition"],
        "attachment; filename=\"alice-v1.sqlite\""
    );
    assert_eq!(notes_in_file(&first.bytes), ["one"]);
    let second = server.get("alice", "/v1/db/file?version=2").await;
    assert_eq!(notes_in_file(&second.bytes), ["one", "two"]);
    let current = server.get("alice", "/v1/db/file").await;
    assert_eq!(current.version, Some(3));
    assert_eq!(notes_in_file(&current.bytes), ["one", "two", "three"]);

    for missing in [0, 4, 99] {
        let got = server
            .get("alice", &format!("/v1/db/file?version={missing}"))
            .await;
        assert_eq!((got.status, got.code()), (404, "not_found"), "{missing}");
        assert!(
            got.message().contains(&format!("no version {missing}")),
            "{}",
            got.message()
        );
        assert!(
            !got.message().contains('/') && !got.message().contains("database.sqlite"),
            "no keys or paths: {}",
            got.message()
        );
    }
    let bad = server.get("alice", "/v1/db/file?version=last").await;
    assert_eq!((bad.status, bad.code()), (400, "bad_request"));
}

#[tokio::test]
async fn a_restore_is_a_new_version_that_subscribers_see_and_that_can_be_undone() {
    let (server, _engine, _dirs) = local_server(ServerOptions::default()).await;
    three_versions(&server, "alice").await;
    let (mut events, _) = connect(&server, "alice").await;

    let restored = restore(&server, "alice", json!({ "version": 1 })).await;
    assert_eq!(
        (restored.status, restored.version),
        (200, Some(4)),
        "{:?}",
        restored.body
    );
    assert_eq!(
        restored.body,
        json!({ "version": 4, "restored": 1, "undo": 3 })
    );
    assert_eq!(notes(&server, "alice").await, json!([["one"]]));
    let event = next_event(&mut events).await;
    assert_eq!(
        (&event["type"], &event["version"], &event["restored_from"]),
        (&json!("version"), &json!(4), &json!(1)),
        "{event}"
    );

    let undone = restore(&server, "alice", json!({ "version": 3 })).await;
    assert_eq!(
        undone.body,
        json!({ "version": 5, "restored": 3, "undo": 4 })
    );
    assert_eq!(
        notes(&server, "alice").await,
        json!([["one"], ["two"], ["three"]])
    );
    let versions = server.get("alice", "/v1/db/versions").await;
    assert_eq!(listed(&versions), [5, 4, 3, 2, 1]);
}

#[tokio::test]
async fn a_restore_by_moment_brings_back_the_version_current_then() {
    let (server, _engine, _dirs) = local_server(ServerOptions::default()).await;
    three_versions(&server, "alice").await;
    let versions = server.get("alice", "/v1/db/versions").await;
    let second = versions.body["versions"][1]["created_at"]
        .as_str()
        .expect("a moment");
    // Between version 2 (rounded down to the millisecond) and version 3, 50 ms later.
    let at = chrono::DateTime::parse_from_rfc3339(second).expect("RFC 3339")
        + chrono::Duration::milliseconds(10);

    let restored = restore(&server, "alice", json!({ "at": at.to_rfc3339() })).await;
    assert_eq!(restored.status, 200, "{:?}", restored.body);
    assert_eq!(restored.body["restored"], 2);
    assert_eq!(notes(&server, "alice").await, json!([["one"], ["two"]]));

    let before = restore(&server, "alice", json!({ "at": "2000-01-01T00:00:00Z" })).await;
    assert_eq!(
        (before.status, before.code()),
        (404, "not_found"),
        "{:?}",
        before.body
    );
    assert!(
        before.message().contains("nothing was written"),
        "{}",
        before.message()
    );
}

#[tokio::test]
async fn malformed_or_oversized_restores_change_nothing() {
    let limits = Limits {
        max_body_bytes: 256,
        ..Limits::default()
    };
    let (server, _engine, _dirs) = local_server(ServerOptions {
        limits,
        ..ServerOptions::default()
    })
    .await;
    three_versions(&server, "alice").await;

    let cases = [
        ("{}", "`version`, or a moment as `at`"),
        (
            r#"{"version": 1, "at": "2025-01-01T00:00:00Z"}"#,
            "not both",
        ),
        (r#"{"at": "yesterday"}"#, "RFC 3339"),
        (r#"{"version": -1}"#, "invalid request body"),
        (r#"{"version": 1, "force": true}"#, "unknown field `force`"),
        ("{not json", "invalid request body"),
    ];
    for (body, expected) in cases {
        let got = answer(
            server
                .client
                .post(server.url("/v1/db/restore"))
                .header("x-user-id", "alice")
                .body(body),
        )
        .await;
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
    let padded = format!("{{\"version\": 1{}}}", " ".repeat(300));
    let large = answer(
        server
            .client
            .post(server.url("/v1/db/restore"))
            .header("x-user-id", "alice")
            .body(padded),
    )
    .await;
    assert_eq!((large.status, large.code()), (413, "payload_too_large"));

    let unknown = restore(&server, "alice", json!({ "version": 99 })).await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (404, "not_found"),
        "{:?}",
        unknown.body
    );
    assert!(
        unknown.message().contains("no version 99"),
        "{}",
        unknown.message()
    );
    let after = server.get("alice", "/v1/db").await;
    assert_eq!(after.body["version"], 3, "nothing was restored");
}

#[tokio::test]
async fn a_server_that_does_not_let_users_restore_answers_forbidden() {
    let dirs = Dirs::new();
    let mut config = EngineConfig::new(dirs.data("a"));
    config.history.user_restore = false;
    let engine = Engine::open(config, dirs.bucket())
        .await
        .expect("engine opens");
    let server = TestServer::start(engine, ServerOptions::default()).await;
    three_versions(&server, "alice").await;

    let refused = restore(&server, "alice", json!({ "version": 1 })).await;
    assert_eq!(
        (refused.status, refused.code()),
        (403, "forbidden"),
        "{:?}",
        refused.body
    );
    assert!(
        refused.message().contains("restore"),
        "{}",
        refused.message()
    );
    assert_eq!(
        notes(&server, "alice").await.as_array().map(Vec::len),
        Some(3)
    );
    let listed_anyway = server.get("alice", "/v1/db/versions").await;
    assert_eq!(listed(&listed_anyway), [3, 2, 1]);
}

#[tokio::test]
async fn a_user_reaches_only_their_own_history() {
    let (server, _engine, _dirs) = local_server(ServerOptions::default()).await;
    three_versions(&server, "alice").await;

    let peek = server.get("bob", "/v1/db/versions").await;
    assert_eq!(peek.body["versions"], json!([]));
    let file = server.get("bob", "/v1/db/file?version=1").await;
    assert_eq!((file.status, file.code()), (404, "not_found"));
    let taken = restore(&server, "bob", json!({ "version": 1 })).await;
    assert_eq!((taken.status, taken.code()), (404, "not_found"));

    let own =
        json!({ "statements": ["CREATE TABLE notes(text)", "INSERT INTO notes VALUES ('bob')"] });
    assert_eq!(server.query("bob", own).await.status, 200);
    let bobs = server.get("bob", "/v1/db/versions").await;
    assert_eq!(
        (bobs.body["user_id"].as_str(), listed(&bobs)),
        (Some("bob"), vec![1])
    );
    let file = server.get("bob", "/v1/db/file?version=1").await;
    assert_eq!(notes_in_file(&file.bytes), ["bob"]);
    let restored = restore(&server, "bob", json!({ "version": 1 })).await;
    assert_eq!(restored.body["version"], 2, "{:?}", restored.body);
    assert_eq!(
        notes(&server, "alice").await,
        json!([["one"], ["two"], ["three"]])
    );
}

#[tokio::test]
async fn a_restore_through_one_server_is_served_by_another_at_its_next_request() {
    let dirs = Dirs::new();
    let a = TestServer::start(
        engine(dirs.data("a"), dirs.bucket(), ConflictPolicy::LastWriteWins).await,
        ServerOptions::default(),
    )
    .await;
    let b = TestServer::start(
        engine(dirs.data("b"), dirs.bucket(), ConflictPolicy::LastWriteWins).await,
        ServerOptions::default(),
    )
    .await;
    three_versions(&a, "alice").await;
    assert_eq!(notes(&b, "alice").await.as_array().map(Vec::len), Some(3));

    let restored = restore(&a, "alice", json!({ "version": 1 })).await;
    assert_eq!(restored.body["version"], 4, "{:?}", restored.body);
    assert_eq!(notes(&b, "alice").await, json!([["one"]]));
    let status = b.get("alice", "/v1/db").await;
    assert_eq!(status.version, Some(4));
    let versions = b.get("alice", "/v1/db/versions?limit=1").await;
    assert_eq!(listed(&versions), [4]);
}

#[tokio::test]
async fn two_versions_are_compared_row_by_row() {
    let (server, _engine, _dirs) = local_server(ServerOptions::default()).await;
    three_versions(&server, "alice").await;
    let fourth = json!({ "statements": [
        "UPDATE notes SET text = 'uno' WHERE text = 'one'",
        "CREATE TABLE tags(name)",
    ]});
    assert_eq!(server.query("alice", fourth).await.body["version"], 4);

    let grown = server.get("alice", "/v1/db/diff?from=1&to=3").await;
    assert_eq!(grown.status, 200, "{:?}", grown.body);
    assert_eq!(
        (
            &grown.body["user_id"],
            &grown.body["from"],
            &grown.body["to"]
        ),
        (&json!("alice"), &json!(1), &json!(3))
    );
    let notes = &grown.body["tables"][0];
    assert_eq!(notes["table"], "notes");
    assert_eq!(
        (&notes["added"], &notes["removed"], &notes["changed"]),
        (&json!(2), &json!(0), &json!(0))
    );
    assert_eq!(notes["rows"][0]["change"], "added");
    assert_eq!(notes["rows"][0]["after"]["text"], "two");
    assert_eq!(grown.body["schema"], json!([]));

    let first_row = server
        .get("alice", "/v1/db/diff?from=1&to=3&max_rows=1")
        .await;
    let notes = &first_row.body["tables"][0];
    assert_eq!(notes["rows"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        (&notes["added"], &notes["truncated"]),
        (&json!(2), &json!(true))
    );
    let shrunk = server.get("alice", "/v1/db/diff?from=3&to=1").await;
    assert_eq!(shrunk.body["tables"][0]["removed"], 2);

    // Version 4 is the current one: read from the instance's own copy.
    let edited = server.get("alice", "/v1/db/diff?from=3&to=4").await;
    let row = &edited.body["tables"][0]["rows"][0];
    assert_eq!(
        (
            &row["change"],
            &row["before"]["text"],
            &row["after"]["text"]
        ),
        (&json!("changed"), &json!("one"), &json!("uno")),
        "{:?}",
        edited.body
    );
    let schema = &edited.body["schema"][0];
    assert_eq!(
        (&schema["kind"], &schema["name"], &schema["change"]),
        (&json!("table"), &json!("tags"), &json!("added"))
    );
    let same = server.get("alice", "/v1/db/diff?from=2&to=2").await;
    assert_eq!(
        (&same.body["tables"], &same.body["schema"]),
        (&json!([]), &json!([]))
    );

    for bad in [
        "from=1",
        "from=1&to=x",
        "from=1&to=3&max_rows=0",
        "from=1&to=3&max_rows=1001",
    ] {
        let got = server.get("alice", &format!("/v1/db/diff?{bad}")).await;
        assert_eq!((got.status, got.code()), (400, "bad_request"), "{bad}");
    }
    let unknown = server.get("alice", "/v1/db/diff?from=1&to=99").await;
    assert_eq!((unknown.status, unknown.code()), (404, "not_found"));
    assert!(
        unknown.message().contains("no version 99"),
        "{}",
        unknown.message()
    );
    let other = server.get("bob", "/v1/db/diff?from=1&to=2").await;
    assert_eq!(
        (other.status, other.code()),
        (404, "not_found"),
        "{:?}",
        other.body
    );
}

#[tokio::test]
async fn the_description_documents_the_history_routes() {
    let (server, _engine, _dirs) = local_server(ServerOptions::default()).await;
    let description = server.get("alice", "/v1/openapi.json").await.body;
    let paths = &description["paths"];
    assert!(paths["/v1/db/versions"]["get"].is_object(), "{paths}");
    assert!(paths["/v1/db/diff"]["get"].is_object(), "{paths}");
    let restore = &paths["/v1/db/restore"]["post"];
    assert!(restore["requestBody"].is_object(), "{restore}");
    assert!(restore["responses"]["403"].is_object(), "{restore}");
    let file_params = paths["/v1/db/file"]["get"]["parameters"]
        .as_array()
        .expect("parameters");
    assert!(
        file_params.iter().any(|param| param["name"] == "version"),
        "{file_params:?}"
    );
}
