//! JWT identity: HS256, `sub` is the user, `exp` is enforced.

use cellar_engine::ConflictPolicy;
use cellar_server::{AuthMode, ServerOptions};
use serde_json::json;

use crate::common::{Answer, Dirs, TestServer, answer, engine, token};

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
        (Some("Bearer not.a.token"), "invalid token"),
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
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({ "sub": "alice", "exp": now + 600, "aud": "my-app", "iss": "idp" });
    let signed = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token");
    let got = query_with(&server, Some(&format!("Bearer {signed}"))).await;
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
async fn query_string_tokens_are_accepted_only_for_websockets() {
    let (server, _dirs) = jwt_server().await;
    let url = server.url(&format!("/v1/query?token={}", valid_token("alice")));
    let got = answer(
        server
            .client
            .post(url)
            .json(&json!({ "statements": ["SELECT 1"] })),
    )
    .await;
    assert_eq!((got.status, got.code()), (401, "unauthorized"));
}
