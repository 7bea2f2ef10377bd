//! JWT identity: HS256, `sub` is the user, `exp` and `nbf` are enforced; one identity per
//! request; `?token=` only on the events WebSocket handshake.

use cellar_engine::ConflictPolicy;
use cellar_server::{AuthMode, ServerOptions};
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;

use crate::common::{Answer, Dirs, TestServer, answer, engine, local_server, token};

const SECRET: &str = "test-secret-for-cellar";

pub async fn jwt_server() -> (TestServer, Dirs) {
    let dirs = Dirs::new();
    let engine = engine(dirs.data("a"), dirs.bucket(), ConflictPolicy::LastWriteWins).await;
    let options = ServerOptions {
        auth: AuthMode::Jwt {
            secret: SECRET.into(),
        },
        ..ServerOptions::default()
    };
    (TestServer::start(engine, options).await, dirs)
}

pub fn valid_token(user: &str) -> String {
    token(SECRET, user, 3600)
}

/// A token with exactly these claims, signed with the server's secret.
fn signed(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token")
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

async fn query_with(server: &TestServer, authorization: Option<&str>) -> Answer {
    let mut request = server
        .client
        .post(server.url("/v1/query"))
        .json(&json!({ "statements": ["SELECT 1"] }));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    answer(request).await
}

#[tokio::test]
async fn jwt_mode_identifies_callers_by_the_token_subject() {
    let (server, _dirs) = jwt_server().await;
    let bearer = format!("Bearer {}", valid_token("alice"));
    let wrote = answer(
        server
            .client
            .post(server.url("/v1/query"))
            .header("authorization", &bearer)
            .json(&json!({ "statements": ["CREATE TABLE t(x)"] })),
    )
    .await;
    assert_eq!(
        (wrote.status, wrote.version),
        (200, Some(1)),
        "{:?}",
        wrote.body
    );
    let status = answer(
        server
            .client
            .get(server.url("/v1/db"))
            .header("authorization", &bearer),
    )
    .await;
    assert_eq!(status.body["user_id"], "alice");
}

#[tokio::test]
async fn expired_badly_signed_and_malformed_tokens_get_unauthorized() {
    let (server, _dirs) = jwt_server().await;
    let expired = format!("Bearer {}", token(SECRET, "alice", -3600));
    let forged = format!("Bearer {}", token("another-secret", "alice", 3600));
    let cases = [
        (Some(expired.as_str()), "expired"),
        (Some(forged.as_str()), "signature"),
        (Some("Bearer not.a.token"), "malformed"),
        (Some("Basic YWxpY2U6cHc="), "Bearer"),
        (None, "Authorization"),
    ];
    for (authorization, expected) in cases {
        let got = query_with(&server, authorization).await;
        assert_eq!(
            (got.status, got.code()),
            (401, "unauthorized"),
            "{authorization:?}: {:?}",
            got.body
        );
        assert!(
            got.message().contains(expected),
            "{authorization:?}: {}",
            got.message()
        );
        assert_eq!(got.version, None);
    }
}

#[tokio::test]
async fn tokens_from_an_identity_provider_with_an_audience_are_accepted() {
    let (server, _dirs) = jwt_server().await;
    let claims = json!({ "sub": "alice", "exp": now() + 600, "aud": "my-app", "iss": "idp" });
    let got = query_with(&server, Some(&format!("Bearer {}", signed(&claims)))).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
}

#[tokio::test]
async fn the_user_id_header_means_nothing_in_jwt_mode() {
    let (server, _dirs) = jwt_server().await;
    let got = answer(
        server
            .client
            .post(server.url("/v1/query"))
            .header("x-user-id", "alice")
            .json(&json!({ "statements": ["SELECT 1"] })),
    )
    .await;
    assert_eq!(got.status, 401);
}

#[tokio::test]
async fn a_token_whose_subject_is_not_a_user_id_gets_bad_request() {
    let (server, dirs) = jwt_server().await;
    let bearer = format!("Bearer {}", token(SECRET, "../../etc", 3600));
    let got = query_with(&server, Some(&bearer)).await;
    assert_eq!(
        (got.status, got.code()),
        (400, "bad_request"),
        "{:?}",
        got.body
    );
    assert!(!dirs.data("etc").exists());
}

#[tokio::test]
async fn a_token_not_valid_yet_is_refused() {
    let (server, _dirs) = jwt_server().await;
    let day = 24 * 3600;
    let tomorrow = json!({ "sub": "alice", "nbf": now() + day, "exp": now() + 2 * day });
    let got = query_with(&server, Some(&format!("Bearer {}", signed(&tomorrow)))).await;
    assert_eq!(
        (got.status, got.code(), got.message()),
        (401, "unauthorized", "the token is not valid yet"),
        "{:?}",
        got.body
    );
    // The same 60 s leeway as `exp`, for clocks a little apart; past `nbf` is fine.
    for nbf in [now() + 30, now() - 60] {
        let claims = json!({ "sub": "alice", "nbf": nbf, "exp": now() + 600 });
        let got = query_with(&server, Some(&format!("Bearer {}", signed(&claims)))).await;
        assert_eq!(got.status, 200, "nbf {nbf}: {:?}", got.body);
    }
}

#[tokio::test]
async fn a_query_string_token_counts_only_on_the_events_websocket_handshake() {
    let (server, _dirs) = jwt_server().await;
    let token = valid_token("alice");
    let handshake = [("upgrade", "websocket"), ("connection", "Upgrade")];
    let refused = [
        ("GET", "/v1/db/file", &handshake[..]),
        ("GET", "/v1/db", &handshake[..]),
        ("POST", "/v1/query", &handshake[..]),
        ("POST", "/v1/query", &[][..]),
        // `Upgrade` without `Connection: upgrade` is not a handshake.
        ("GET", "/v1/events", &handshake[..1]),
    ];
    for (method, path, headers) in refused {
        let url = server.url(&format!("{path}?token={token}"));
        let mut request = match method {
            "GET" => server.client.get(url),
            _ => server
                .client
                .post(url)
                .json(&json!({ "statements": ["SELECT 1"] })),
        };
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let got = answer(request).await;
        assert_eq!(
            (got.status, got.code()),
            (401, "unauthorized"),
            "{method} {path} {headers:?}: {:?}",
            got.body
        );
    }
    let url = server.ws_url(&format!("/v1/events?token={token}"));
    connect_async(url)
        .await
        .expect("the events handshake takes ?token=");
}

#[tokio::test]
async fn two_user_id_headers_are_refused() {
    let (server, _engine, _dirs) = local_server(ServerOptions::default()).await;
    let got = answer(
        server
            .client
            .get(server.url("/v1/db"))
            .header("x-user-id", "mallory")
            .header("x-user-id", "alice"),
    )
    .await;
    assert_eq!(
        (got.status, got.code()),
        (400, "bad_request"),
        "{:?}",
        got.body
    );
    assert!(
        got.message().contains("more than one X-User-Id header"),
        "{}",
        got.message()
    );
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let (server, _dirs) = jwt_server().await;
    let got = answer(
        server
            .client
            .get(server.url("/v1/db"))
            .header(
                "authorization",
                format!("Bearer {}", valid_token("mallory")),
            )
            .header("authorization", format!("Bearer {}", valid_token("alice"))),
    )
    .await;
    assert_eq!(
        (got.status, got.code()),
        (400, "bad_request"),
        "{:?}",
        got.body
    );
    assert!(
        got.message().contains("more than one Authorization header"),
        "{}",
        got.message()
    );
}

#[tokio::test]
async fn refused_tokens_are_explained_in_words_without_parser_details() {
    let (server, _dirs) = jwt_server().await;
    let cases = [
        ("not.a.token".to_owned(), "the token is malformed"),
        ("garbage".to_owned(), "the token is malformed"),
        (
            signed(&json!({ "sub": 42, "exp": now() + 600 })),
            "the token is malformed",
        ),
        (
            signed(&json!({ "exp": now() + 600 })),
            "the token has no `sub` claim",
        ),
        (
            signed(&json!({ "sub": "alice" })),
            "the token has no `exp` claim",
        ),
        (
            token("another-secret", "alice", 3600),
            "the token's signature does not verify",
        ),
        (token(SECRET, "alice", -3600), "the token has expired"),
    ];
    for (token, expected) in cases {
        let got = query_with(&server, Some(&format!("Bearer {token}"))).await;
        assert_eq!(
            (got.status, got.code(), got.message()),
            (401, "unauthorized", expected),
            "{token}: {:?}",
            got.body
        );
    }
}
