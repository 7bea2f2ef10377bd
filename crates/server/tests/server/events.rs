//! `GET /v1/events`: a user's WebSocket receives that user's events, and only those.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use crate::common::{STEP, TestServer, answer, local_server};
use crate::identity::{jwt_server, valid_token};

pub type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects as `user` (header auth); returns the socket and the `Cellar-Version` it got.
pub async fn connect(server: &TestServer, user: &str) -> (Socket, Option<String>) {
    let mut request = server
        .ws_url("/v1/events")
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("x-user-id", user.parse().expect("header"));
    let (socket, response) = connect_async(request).await.expect("WebSocket connects");
    let version = response
        .headers()
        .get("cellar-version")
        .map(|v| v.to_str().expect("text").to_owned());
    (socket, version)
}

/// The next JSON event, failing the test after `STEP`.
pub async fn next_event(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(STEP, socket.next())
            .await
            .expect("an event in time")
            .expect("the socket is open")
            .expect("a message");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("JSON event");
        }
    }
}

/// Fails if an event arrives within `wait`.
async fn assert_quiet(socket: &mut Socket, wait: Duration) {
    if let Ok(Some(message)) = tokio::time::timeout(wait, socket.next()).await {
        panic!("unexpected message {message:?}");
    }
}

#[tokio::test]
async fn a_websocket_client_receives_its_users_version_events_only() {
    let (server, _engine, _dirs) = local_server(Default::default()).await;
    let (mut alice_events, version) = connect(&server, "alice").await;
    assert_eq!(version.as_deref(), Some("0"));

    server
        .query("bob", json!({ "statements": ["CREATE TABLE t(x)"] }))
        .await;
    server
        .query("alice", json!({ "statements": ["CREATE TABLE t(x)"] }))
        .await;
    let event = next_event(&mut alice_events).await;
    assert_eq!(event["type"], "version");
    assert_eq!(event["user_id"], "alice");
    assert_eq!(event["version"], 1);
    assert!(event["writer"].is_string(), "{event}");

    server
        .query(
            "alice",
            json!({ "statements": ["INSERT INTO t VALUES (1)"] }),
        )
        .await;
    assert_eq!(next_event(&mut alice_events).await["version"], 2);
    server
        .query("alice", json!({ "statements": ["SELECT * FROM t"] }))
        .await;
    server
        .query("bob", json!({ "statements": ["INSERT INTO t VALUES (1)"] }))
        .await;
    assert_quiet(&mut alice_events, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn websockets_take_a_query_string_token_in_jwt_mode() {
    let (server, _dirs) = jwt_server().await;
    let url = server.ws_url(&format!("/v1/events?token={}", valid_token("alice")));
    let (mut events, _) = connect_async(url)
        .await
        .expect("WebSocket connects with ?token=");
    let wrote = answer(
        server
            .client
            .post(server.url("/v1/query"))
            .bearer_auth(valid_token("alice"))
            .json(&json!({ "statements": ["CREATE TABLE t(x)"] })),
    )
    .await;
    assert_eq!(wrote.status, 200);
    let event = next_event(&mut events).await;
    assert_eq!(
        (event["type"].as_str(), event["version"].as_u64()),
        (Some("version"), Some(1))
    );
}

#[tokio::test]
async fn websockets_without_identity_are_refused() {
    let (server, _dirs) = jwt_server().await;
    let bad = server.ws_url("/v1/events?token=forged.token.here");
    match connect_async(bad).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let (header_server, _engine, _dirs) = local_server(Default::default()).await;
    match connect_async(header_server.ws_url("/v1/events")).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
}

#[tokio::test]
async fn a_plain_get_on_the_events_route_is_a_bad_request() {
    let (server, _engine, _dirs) = local_server(Default::default()).await;
    let got = server.get("alice", "/v1/events").await;
    assert_eq!(
        (got.status, got.code()),
        (400, "bad_request"),
        "{:?}",
        got.body
    );
}
