//! The operator's dashboard and admin API: absent without `auth.admin_token`, refused
//! without the token, and what the dashboard shows (users, a user's events, every user's
//! events live, the server's samples, a user's history: versions, diff, restore), with
//! 100 000 users served from one listing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use cellar_engine::store::{Fault, FaultyStore, Operation, PutCondition};
use cellar_engine::{
    ConflictPolicy, Engine, EngineConfig, MemoryStore, SnapshotMetadata, Store, UserId, Version,
};
use cellar_server::{AdminToken, ServerOptions};
use chrono::Utc;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::common::{Answer, Dirs, STEP, TestServer, answer, engine, local_server};
use crate::events::next_event;
use crate::history::{listed, notes, three_versions};

const TOKEN: &str = "an-operator-token-for-the-tests-only-0123";

fn with_admin() -> ServerOptions {
    ServerOptions {
        admin_token: Some(AdminToken::new(TOKEN).expect("a valid token")),
        ..ServerOptions::default()
    }
}

/// `GET path` with the admin token.
async fn admin_get(server: &TestServer, path: &str) -> Answer {
    answer(server.client.get(server.url(path)).bearer_auth(TOKEN)).await
}

/// `POST path` with the admin token and `body` (sent as is).
async fn admin_post(server: &TestServer, path: &str, body: impl Into<String>) -> Answer {
    let request = server.client.post(server.url(path)).bearer_auth(TOKEN);
    answer(
        request
            .header("content-type", "application/json")
            .body(body.into()),
    )
    .await
}

/// `GET path` with the admin token until `done` holds, failing after `STEP`.
async fn admin_get_until(server: &TestServer, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + STEP;
    loop {
        let answer = admin_get(server, path).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        if done(&answer.body) {
            return answer.body;
        }
        assert!(Instant::now() < deadline, "never: {}", answer.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn user_ids(page: &Value) -> Vec<&str> {
    page["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|user| user["user_id"].as_str().expect("an id"))
        .collect()
}

async fn write(server: &TestServer, user: &str) {
    let answer = server
        .query(
            user,
            json!({ "statements": ["CREATE TABLE IF NOT EXISTS t(x)", "INSERT INTO t VALUES (1)"] }),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
}

#[tokio::test]
async fn without_an_admin_token_the_dashboard_and_the_admin_api_are_unknown_routes() {
    let (server, _engine, _dirs) = local_server(ServerOptions::default()).await;
    for path in [
        "/ui",
        "/ui/app.js",
        "/v1/admin/users",
        "/v1/admin/users/alice",
        "/v1/admin/users/alice/versions",
        "/v1/admin/users/alice/diff?from=1&to=2",
        "/v1/admin/stats",
        "/v1/admin/events",
    ] {
        let answer = answer(server.client.get(server.url(path)).bearer_auth(TOKEN)).await;
        assert_eq!((answer.status, answer.code()), (404, "not_found"), "{path}");
    }
    let description = server.get("alice", "/v1/openapi.json").await.body;
    let paths = description["paths"].as_object().expect("paths");
    assert!(
        paths.keys().all(|path| !path.starts_with("/v1/admin")),
        "{paths:?}"
    );
    assert!(description["components"]["securitySchemes"]["admin"].is_null());
}

#[tokio::test]
async fn the_admin_api_refuses_a_missing_or_wrong_token_but_the_page_loads() {
    let (server, _engine, _dirs) = local_server(with_admin()).await;
    let wrong = "x".repeat(TOKEN.len());
    for path in [
        "/v1/admin/users",
        "/v1/admin/users/alice",
        "/v1/admin/stats",
    ] {
        let none = answer(server.client.get(server.url(path))).await;
        assert_eq!((none.status, none.code()), (401, "unauthorized"), "{path}");
        let refused = answer(server.client.get(server.url(path)).bearer_auth(&wrong)).await;
        assert_eq!(
            (refused.status, refused.code()),
            (401, "unauthorized"),
            "{path}"
        );
        assert!(!refused.message().contains(TOKEN), "{}", refused.message());
    }
    // `?token=` is for the events WebSocket only.
    let in_query = answer(
        server
            .client
            .get(server.url(&format!("/v1/admin/users?token={TOKEN}"))),
    )
    .await;
    assert_eq!(in_query.status, 401);
    let user_identity = server.get("alice", "/v1/admin/users").await;
    assert_eq!(
        user_identity.status, 401,
        "a user's identity is not the operator's"
    );

    let page = answer(server.client.get(server.url("/ui"))).await;
    assert_eq!(page.status, 200);
    assert!(
        page.headers["content-type"]
            .to_str()
            .expect("text")
            .starts_with("text/html")
    );
    assert!(page.headers.contains_key("content-security-policy"));
    let html = String::from_utf8(page.bytes).expect("UTF-8");
    assert!(html.contains("id=\"token-input\""), "{html}");
    for (path, kind) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let asset = answer(server.client.get(server.url(path))).await;
        assert_eq!(asset.status, 200, "{path}");
        assert!(
            asset.headers["content-type"]
                .to_str()
                .expect("text")
                .starts_with(kind)
        );
    }
    let description = server.get("alice", "/v1/openapi.json").await.body;
    assert_eq!(
        description["components"]["securitySchemes"]["admin"]["scheme"],
        "bearer"
    );
    assert!(description["paths"]["/v1/admin/users"].is_object());
    assert!(description["paths"]["/ui"].is_null(), "pages are not API");
}

#[tokio::test]
async fn a_user_is_listed_right_after_its_first_write_and_users_are_paged_and_searched() {
    let (server, _engine, _dirs) = local_server(with_admin()).await;
    let empty = admin_get(&server, "/v1/admin/users").await;
    assert_eq!(empty.body, json!({ "users": [], "next": null, "total": 0 }));

    // Within the listing's 10 s: the engine's version event adds the user.
    write(&server, "alice").await;
    let page = admin_get_until(&server, "/v1/admin/users", |page| page["total"] == 1).await;
    let alice = &page["users"][0];
    assert_eq!(alice["user_id"], "alice");
    assert_eq!(alice["version"], 1);
    assert!(alice["size_bytes"].as_u64().expect("a size") > 0);
    assert!(
        alice["updated_at"].is_string() && alice["writer"].is_string(),
        "{alice}"
    );
    assert_eq!(alice["conflicts"], 0);

    for user in ["bob", "carol", "Alina", "dave"] {
        write(&server, user).await;
    }
    admin_get_until(&server, "/v1/admin/users", |page| page["total"] == 5).await;
    let first = admin_get(&server, "/v1/admin/users?limit=2").await.body;
    assert_eq!(user_ids(&first), ["Alina", "alice"]);
    assert_eq!(
        (&first["next"], &first["total"]),
        (&json!("alice"), &json!(5))
    );
    let second = admin_get(&server, "/v1/admin/users?limit=2&after=alice")
        .await
        .body;
    assert_eq!(user_ids(&second), ["bob", "carol"]);
    let last = admin_get(&server, "/v1/admin/users?limit=2&after=carol")
        .await
        .body;
    assert_eq!(user_ids(&last), ["dave"]);
    assert!(last["next"].is_null());

    let found = admin_get(&server, "/v1/admin/users?q=AL").await.body;
    assert_eq!(user_ids(&found), ["Alina", "alice"]);
    assert_eq!(found["total"], 2);

    for bad in ["limit=0", "limit=501", "limit=many", "after=..%2Fx"] {
        let refused = admin_get(&server, &format!("/v1/admin/users?{bad}")).await;
        assert_eq!(
            (refused.status, refused.code()),
            (400, "bad_request"),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn a_users_recent_events_are_shown_newest_first() {
    let (server, _engine, _dirs) = local_server(with_admin()).await;
    for _ in 0..3 {
        write(&server, "alice").await;
    }
    write(&server, "bob").await;
    let detail = admin_get_until(&server, "/v1/admin/users/alice", |detail| {
        detail["events"]
            .as_array()
            .is_some_and(|events| events.len() == 3)
    })
    .await;
    assert_eq!(detail["user"]["user_id"], "alice");
    assert_eq!(detail["user"]["version"], 3);
    let versions: Vec<&Value> = detail["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|event| &event["version"])
        .collect();
    assert_eq!(versions, [3, 2, 1]);
    let newest = &detail["events"][0];
    assert_eq!(
        (&newest["type"], &newest["user_id"]),
        (&json!("version"), &json!("alice"))
    );
    assert!(
        newest["at"].is_string() && newest["writer"].is_string(),
        "{newest}"
    );

    let nobody = admin_get(&server, "/v1/admin/users/nobody").await;
    assert_eq!((nobody.status, nobody.code()), (404, "not_found"));
    let invalid = admin_get(&server, "/v1/admin/users/-x").await;
    assert_eq!((invalid.status, invalid.code()), (400, "bad_request"));
}

#[tokio::test]
async fn an_operator_lists_compares_restores_and_undoes_a_users_versions() {
    let (server, _engine, _dirs) = local_server(with_admin()).await;
    three_versions(&server, "alice").await;
    three_versions(&server, "bob").await;

    let all = admin_get(&server, "/v1/admin/users/alice/versions").await;
    assert_eq!((all.status, all.version), (200, Some(3)), "{:?}", all.body);
    assert_eq!(all.body["user_id"], "alice");
    assert_eq!(listed(&all), [3, 2, 1]);
    let newest = &all.body["versions"][0];
    assert!(newest["created_at"].is_string(), "{newest}");
    assert!(newest["shipped_bytes"].as_u64() > Some(0), "{newest}");
    let two = admin_get(
        &server,
        "/v1/admin/users/alice/versions?limit=2&writers=true",
    )
    .await;
    assert_eq!(listed(&two), [3, 2]);
    assert!(
        two.body["versions"]
            .as_array()
            .expect("versions")
            .iter()
            .all(|entry| entry["writer"].is_string()),
        "{:?}",
        two.body
    );

    let grown = admin_get(&server, "/v1/admin/users/alice/diff?from=1&to=3").await;
    assert_eq!(grown.status, 200, "{:?}", grown.body);
    assert_eq!(
        (
            &grown.body["user_id"],
            &grown.body["from"],
            &grown.body["to"]
        ),
        (&json!("alice"), &json!(1), &json!(3))
    );
    let table = &grown.body["tables"][0];
    assert_eq!(
        (&table["table"], &table["added"], &table["removed"]),
        (&json!("notes"), &json!(2), &json!(0))
    );
    let added: Vec<&Value> = table["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| &row["after"]["text"])
        .collect();
    assert_eq!(added, [&json!("two"), &json!("three")]);
    let one_row = admin_get(&server, "/v1/admin/users/alice/diff?from=1&to=3&max_rows=1").await;
    assert_eq!(one_row.body["tables"][0]["truncated"], true);
    let same = admin_get(&server, "/v1/admin/users/alice/diff?from=2&to=2").await;
    assert_eq!(
        (&same.body["tables"], &same.body["schema"]),
        (&json!([]), &json!([]))
    );

    let restored = admin_post(
        &server,
        "/v1/admin/users/alice/restore",
        r#"{"version": 1}"#,
    )
    .await;
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
    assert_eq!(
        notes(&server, "bob").await.as_array().map(Vec::len),
        Some(3),
        "only the named user's database"
    );
    let detail = admin_get_until(&server, "/v1/admin/users/alice", |detail| {
        detail["events"][0]["version"] == 4
    })
    .await;
    assert_eq!(detail["events"][0]["restored_from"], 1, "{detail}");

    let undone = admin_post(
        &server,
        "/v1/admin/users/alice/restore",
        r#"{"version": 3}"#,
    )
    .await;
    assert_eq!(
        undone.body,
        json!({ "version": 5, "restored": 3, "undo": 4 })
    );
    assert_eq!(
        notes(&server, "alice").await,
        json!([["one"], ["two"], ["three"]])
    );
    let versions = admin_get(&server, "/v1/admin/users/alice/versions").await;
    assert_eq!(listed(&versions), [5, 4, 3, 2, 1]);
    let undo_diff = admin_get(&server, "/v1/admin/users/alice/diff?from=4&to=5").await;
    assert_eq!(
        undo_diff.body["tables"][0]["added"], 2,
        "{:?}",
        undo_diff.body
    );
}

#[tokio::test]
async fn the_admin_history_routes_refuse_no_token_bad_input_unknown_users_and_versions() {
    let (server, _engine, _dirs) = local_server(with_admin()).await;
    three_versions(&server, "alice").await;

    let restore = "/v1/admin/users/alice/restore";
    for path in [
        "/v1/admin/users/alice/versions",
        "/v1/admin/users/alice/diff?from=1&to=2",
    ] {
        let none = answer(server.client.get(server.url(path))).await;
        assert_eq!((none.status, none.code()), (401, "unauthorized"), "{path}");
        let as_user = server.get("alice", path).await;
        assert_eq!(as_user.status, 401, "{path}: a user is not the operator");
    }
    let body = r#"{"version": 1}"#;
    let none = answer(server.client.post(server.url(restore)).body(body)).await;
    assert_eq!((none.status, none.code()), (401, "unauthorized"));
    let as_user = answer(
        server
            .client
            .post(server.url(restore))
            .header("x-user-id", "alice")
            .body(body),
    )
    .await;
    assert_eq!(as_user.status, 401);

    let no_paths = |got: &Answer| {
        let message = got.message();
        assert!(
            !message.contains('/') && !message.contains("sqlite") && !message.contains(".log"),
            "no paths or keys: {message}"
        );
    };
    for nobody in [
        admin_get(&server, "/v1/admin/users/nobody/versions").await,
        admin_get(&server, "/v1/admin/users/nobody/diff?from=1&to=2").await,
        admin_post(&server, "/v1/admin/users/nobody/restore", body).await,
    ] {
        assert_eq!(
            (nobody.status, nobody.code()),
            (404, "not_found"),
            "{:?}",
            nobody.body
        );
        assert!(nobody.message().contains("nobody"), "{}", nobody.message());
        no_paths(&nobody);
    }
    for not_kept in [
        admin_get(&server, "/v1/admin/users/alice/diff?from=1&to=99").await,
        admin_post(&server, restore, r#"{"version": 99}"#).await,
        admin_post(&server, restore, r#"{"version": 0}"#).await,
    ] {
        assert_eq!(
            (not_kept.status, not_kept.code()),
            (404, "not_found"),
            "{:?}",
            not_kept.body
        );
        assert!(
            not_kept.message().contains("no version"),
            "{}",
            not_kept.message()
        );
        no_paths(&not_kept);
    }

    for (body, expected) in [
        ("{}", "`version`, or a moment as `at`"),
        (
            r#"{"version": 1, "at": "2025-01-01T00:00:00Z"}"#,
            "not both",
        ),
        (r#"{"at": "yesterday"}"#, "RFC 3339"),
        (r#"{"version": 1, "force": true}"#, "unknown field `force`"),
        ("{not json", "invalid request body"),
    ] {
        let got = admin_post(&server, restore, body).await;
        assert_eq!((got.status, got.code()), (400, "bad_request"), "{body}");
        assert!(
            got.message().contains(expected),
            "{body}: {}",
            got.message()
        );
    }
    for path in [
        "/v1/admin/users/-x/versions",
        "/v1/admin/users/alice/versions?limit=0",
        "/v1/admin/users/alice/versions?writers=perhaps",
        "/v1/admin/users/alice/diff?from=1",
        "/v1/admin/users/alice/diff?from=1&to=x",
        "/v1/admin/users/alice/diff?from=1&to=3&max_rows=1001",
    ] {
        let got = admin_get(&server, path).await;
        assert_eq!((got.status, got.code()), (400, "bad_request"), "{path}");
    }
    let invalid = admin_post(&server, "/v1/admin/users/-x/restore", body).await;
    assert_eq!((invalid.status, invalid.code()), (400, "bad_request"));

    let status = server.get("alice", "/v1/db").await;
    assert_eq!(status.body["version"], 3, "nothing was restored");

    let description = server.get("alice", "/v1/openapi.json").await.body;
    let paths = &description["paths"];
    for (path, method) in [
        ("/v1/admin/users/{user}/versions", "get"),
        ("/v1/admin/users/{user}/diff", "get"),
        ("/v1/admin/users/{user}/restore", "post"),
    ] {
        let operation = &paths[path][method];
        assert_eq!(operation["tags"], json!(["admin"]), "{path}");
        assert_eq!(operation["security"], json!([{ "admin": [] }]), "{path}");
        assert!(operation["responses"]["404"].is_object(), "{path}");
    }
    assert!(
        paths["/v1/admin/users/{user}/restore"]["post"]["requestBody"].is_object(),
        "{paths}"
    );
}

#[tokio::test]
async fn an_operator_restores_where_users_may_not() {
    let dirs = Dirs::new();
    let mut config = EngineConfig::new(dirs.data("a"));
    config.history.user_restore = false;
    let engine = Engine::open(config, dirs.bucket())
        .await
        .expect("engine opens");
    let server = TestServer::start(engine, with_admin()).await;
    three_versions(&server, "alice").await;

    let refused = answer(
        server
            .client
            .post(server.url("/v1/db/restore"))
            .header("x-user-id", "alice")
            .json(&json!({ "version": 1 })),
    )
    .await;
    assert_eq!((refused.status, refused.code()), (403, "forbidden"));

    let restored = admin_post(
        &server,
        "/v1/admin/users/alice/restore",
        r#"{"version": 2}"#,
    )
    .await;
    assert_eq!(
        (restored.status, restored.body.clone()),
        (200, json!({ "version": 4, "restored": 2, "undo": 3 }))
    );
    assert_eq!(notes(&server, "alice").await, json!([["one"], ["two"]]));
    let status = server.get("alice", "/v1/db").await;
    assert_eq!(status.body["version"], 4);
}

#[tokio::test]
async fn the_admin_events_websocket_relays_every_users_writes() {
    let (server, _engine, _dirs) = local_server(with_admin()).await;
    write(&server, "alice").await;
    admin_get_until(&server, "/v1/admin/users/alice", |detail| {
        detail["events"]
            .as_array()
            .is_some_and(|events| !events.is_empty())
    })
    .await;

    // A browser's way: the token in the query string.
    let url = server.ws_url(&format!("/v1/admin/events?token={TOKEN}"));
    let (mut events, _) = connect_async(url).await.expect("WebSocket connects");
    let replayed = next_event(&mut events).await;
    assert_eq!(
        (&replayed["user_id"], &replayed["version"]),
        (&json!("alice"), &json!(1))
    );

    write(&server, "bob").await;
    let live = next_event(&mut events).await;
    assert_eq!(
        (&live["type"], &live["user_id"]),
        (&json!("version"), &json!("bob"))
    );
    assert!(live["at"].is_string(), "{live}");

    let wrong = server.ws_url(&format!("/v1/admin/events?token={}", "y".repeat(40)));
    match connect_async(wrong).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let plain = admin_get(&server, "/v1/admin/events").await;
    assert_eq!((plain.status, plain.code()), (400, "bad_request"));
}

#[tokio::test]
async fn the_server_samples_its_own_stats_every_second() {
    let (server, _engine, _dirs) = local_server(with_admin()).await;
    write(&server, "alice").await;
    let stats = admin_get_until(&server, "/v1/admin/stats", |stats| {
        stats["samples"].as_array().is_some_and(|samples| {
            samples
                .iter()
                .any(|sample| sample["uploads"].as_f64() > Some(0.0))
        })
    })
    .await;
    assert_eq!(stats["interval_ms"], 1000);
    let samples = stats["samples"].as_array().expect("samples");
    let busy = samples
        .iter()
        .find(|sample| sample["uploads"].as_f64() > Some(0.0))
        .expect("the write's second");
    assert!(busy["requests"]["2xx"].as_f64() > Some(0.0), "{busy}");
    assert!(busy["bytes_up"].as_f64() > Some(0.0), "{busy}");
    assert!(
        busy["p50_ms"].is_number() && busy["p99_ms"].is_number(),
        "{busy}"
    );
    assert!(busy["cached_databases"].as_u64() >= Some(1), "{busy}");
    // The latency comes from the histogram that `/metrics` exports too.
    let metrics = String::from_utf8(server.get("alice", "/metrics").await.bytes).expect("text");
    assert!(
        metrics.contains("cellar_http_request_seconds_count "),
        "{metrics}"
    );
}

#[tokio::test]
async fn shutdown_stops_the_dashboards_work_and_closes_its_websockets() {
    let (mut server, _engine, _dirs) = local_server(with_admin()).await;
    write(&server, "alice").await;
    let url = server.ws_url(&format!("/v1/admin/events?token={TOKEN}"));
    let (mut events, _) = connect_async(url).await.expect("WebSocket connects");
    next_event(&mut events).await;
    // `stop` fails the test unless `serve` returns, which waits for the sampler, the feed
    // and the relays: each must end at shutdown.
    server
        .stopper()
        .stop()
        .await
        .expect("serve returns cleanly");
    let close = loop {
        match tokio::time::timeout(STEP, events.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|frame| frame.code), Some(CloseCode::Away));
}

/// The metadata of a version 1 of `body`.
fn metadata(body: &[u8]) -> SnapshotMetadata {
    SnapshotMetadata {
        version: Version::new(1),
        sha256: "0".repeat(64),
        crc64nvme: None,
        size: body.len() as u64,
        writer: "seeded".into(),
        updated_at: Utc::now(),
        checksum: None,
        log_floor: None,
    }
}

#[tokio::test]
async fn a_hundred_thousand_users_are_paged_and_searched_from_one_listing() {
    const USERS: usize = 100_000;
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let dirs = Dirs::new();
    let engine: Engine = engine(
        dirs.data("a"),
        Arc::clone(&store) as Arc<dyn Store>,
        ConflictPolicy::LastWriteWins,
    )
    .await;
    let body = Bytes::from_static(b"not read by the listing");
    let seeding = Instant::now();
    for n in 0..USERS {
        let user = UserId::new(format!("user{n:06}")).expect("an id");
        let key = engine.layout().database_key(&user);
        store
            .inner()
            .put(
                &key,
                body.clone(),
                metadata(&body).to_raw(),
                PutCondition::Create,
            )
            .await
            .expect("seeded");
    }
    eprintln!("seeded {USERS} users in {:?}", seeding.elapsed());
    // Every LIST goes through a scripted zero delay: the faults injected count the LISTs.
    for _ in 0..4 {
        store.inject(Operation::List, Fault::Latency(Duration::ZERO));
    }
    let server = TestServer::start(engine, with_admin()).await;

    let timed = |label: &'static str| {
        let started = Instant::now();
        move || eprintln!("{label}: {:?}", started.elapsed())
    };
    let done = timed("first page (listing 100 000 users, 50 metadata reads)");
    let first = admin_get(&server, "/v1/admin/users").await;
    done();
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["total"], USERS);
    assert_eq!(user_ids(&first.body).len(), 50);
    assert_eq!(first.body["next"], "user000049");
    assert_eq!(first.body["users"][0]["version"], 1);

    let done = timed("second page, from the cache");
    let second = admin_get(&server, "/v1/admin/users?after=user000049&limit=500").await;
    done();
    assert_eq!(user_ids(&second.body)[0], "user000050");
    assert_eq!(user_ids(&second.body).len(), 500);

    let done = timed("search over 100 000 users, from the cache");
    let found = admin_get(&server, "/v1/admin/users?q=09999").await;
    done();
    let expected: Vec<String> = std::iter::once(9_999)
        .chain(99_990..100_000)
        .map(|n| format!("user{n:06}"))
        .collect();
    assert_eq!(user_ids(&found.body), expected);
    assert_eq!(found.body["total"], 11);

    assert_eq!(store.injected(), 1, "the bucket was listed once");
}
