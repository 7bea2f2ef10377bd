//! `GET /v1/openapi.json` of the built server: it names every route and every error code,
//! and Schemathesis (installed into the venv by `scripts/test.sh`) finds no answer that
//! breaks it: no 500, every status, content type, header and body as described.

#![cfg(unix)]

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use support::Cellar;
use support::server::Server;

const ROUTES: [&str; 7] = [
    "/healthz",
    "/metrics",
    "/v1/db",
    "/v1/db/file",
    "/v1/events",
    "/v1/openapi.json",
    "/v1/query",
];

/// Examples per operation and phase: enough to reach every kind of answer in well under a
/// minute on two cores.
const EXAMPLES: &str = "60";

fn schemathesis() -> PathBuf {
    let venv = std::env::var_os("CELLAR_VENV")
        .expect("CELLAR_VENV names the venv with schemathesis: run bash scripts/test.sh");
    PathBuf::from(venv).join("bin/schemathesis")
}

/// Runs Schemathesis against the server at `url` with `auth` (the `[auth.openapi.identity]`
/// table of its config, so that it also sends requests without the identity and with a
/// wrong one) and `excluded` checks; panics with its report on a failure.
fn check_with_schemathesis(cellar: &Cellar, server: &mut Server, auth: &str, excluded: &str) {
    let config = cellar.path().join("schemathesis.toml");
    std::fs::write(&config, format!("[auth.openapi.identity]\n{auth}\n"))
        .expect("write the schemathesis config");
    let run = Command::new(schemathesis())
        // It keeps a cache (`.schemathesis/`) in its working directory.
        .current_dir(cellar.path())
        .arg("--config-file")
        .arg(&config)
        .args(["run", &server.url("/v1/openapi.json"), "--checks", "all"])
        .args(["--exclude-checks", excluded])
        .args(["--max-examples", EXAMPLES, "--workers", "2"])
        .args(["--request-timeout", "10"])
        .args(["--suppress-health-check", "all", "--no-color"])
        .output()
        .expect("run schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        run.status.success(),
        "schemathesis found answers that break the description:\n{report}\n--- server log ---\n{}",
        server.log()
    );
    let summary: Vec<&str> = report.lines().rev().take(8).collect();
    eprintln!(
        "{}",
        summary.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    assert!(
        server.exited().is_none(),
        "the server stopped:\n{}",
        server.log()
    );
}

async fn description(server: &Server) -> Value {
    let response = reqwest::get(server.url("/v1/openapi.json"))
        .await
        .expect("GET /v1/openapi.json");
    assert_eq!(response.status(), 200);
    response.json().await.expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_description_covers_every_route_and_the_server_keeps_to_it() {
    let cellar = Cellar::new();
    let mut server = Server::start(&cellar, &[], &[]);
    let document = description(&server).await;
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        document["openapi"]
    );
    let paths: BTreeSet<&str> = document["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(paths, BTreeSet::from(ROUTES));
    let codes: BTreeSet<&str> = document["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("the error codes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for code in [
        "sql_error",
        "conflict",
        "sync_pending",
        "insufficient_storage",
    ] {
        assert!(codes.contains(code), "{code} missing from {codes:?}");
    }
    assert_eq!(
        document["components"]["securitySchemes"]["identity"]["name"],
        "x-user-id"
    );
    // Valid SQL is narrower than the schema says (a string): SQLite refuses most strings.
    // In header mode any valid user id is an identity, so a "wrong" one is accepted.
    check_with_schemathesis(
        &cellar,
        &mut server,
        "api_key = \"schemathesis\"",
        "positive_data_acceptance,ignored_auth",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_jwt_identity_the_description_names_bearer_tokens_and_holds() {
    let secret = "a-secret-for-the-openapi-test-only-32b";
    let cellar = Cellar::new();
    let mut server = Server::start(
        &cellar,
        &[],
        &[
            ("CELLAR_AUTH_MODE", "jwt"),
            ("CELLAR_AUTH_JWT_SECRET", secret),
        ],
    );
    let document = description(&server).await;
    let scheme = &document["components"]["securitySchemes"]["identity"];
    assert_eq!(
        (&scheme["scheme"], &scheme["bearerFormat"]),
        (&"bearer".into(), &"JWT".into())
    );
    let claims = serde_json::json!({ "sub": "schemathesis", "exp": 4_102_444_800u64 });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign a token");
    check_with_schemathesis(
        &cellar,
        &mut server,
        &format!("bearer = \"{token}\""),
        "positive_data_acceptance",
    );
}
