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

const ROUTES: [&str; 10] = [
    "/healthz",
    "/metrics",
    "/v1/db",
    "/v1/db/diff",
    "/v1/db/file",
    "/v1/db/restore",
    "/v1/db/versions",
    "/v1/events",
    "/v1/openapi.json",
    "/v1/query",
];

/// Examples per operation and phase: enough to reach every kind of answer in well under a
/// minute.
const EXAMPLES: &str = "60";

fn schemathesis() -> PathBuf {
    let venv = std::env::var_os("CELLAR_VENV")
        .expect("CELLAR_VENV names the venv with schemathesis: run bash scripts/test.sh");
    PathBuf::from(venv).join("bin/schemathesis")
}

/// Runs Schemathesis against the server at `url` with `auth` (its config's
/// `[auth.openapi.<scheme>]` tables, so that it also sends requests without each identity
/// and with a wrong one) and `excluded` checks; panics with its report on a failure.
fn check_with_schemathesis(cellar: &Cellar, server: &mut Server, auth: &str, excluded: &str) {
    let config = cellar.path().join("schemathesis.toml");
    std::fs::write(&config, auth).expect("write the schemathesis config");
    let run = Command::new(schemathesis())
        // It keeps a cache (`.schemathesis/`) in its working directory.
        .current_dir(cellar.path())
        .arg("--config-file")
        .arg(&config)
        .args(["run", &server.url("/v1/openapi.json"), "--checks", "all"])
        .args(["--exclude-checks", excluded])
        // One worker: CPython 3.11's `ast.parse`, which Hypothesis calls to describe the
        // filters on query parameters, fails spuriously when two threads parse at once
        // (python/cpython#106905: "AST constructor recursion depth mismatch").
        .args(["--max-examples", EXAMPLES, "--workers", "1"])
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

/// The routes a description names.
fn paths(document: &Value) -> BTreeSet<&str> {
    document["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect()
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
    let paths = paths(&document);
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
        "[auth.openapi.identity]\napi_key = \"schemathesis\"\n",
        "positive_data_acceptance,ignored_auth",
    );
}

/// The admin API, served with `auth.admin_token` only.
const ADMIN_ROUTES: [&str; 7] = [
    "/v1/admin/events",
    "/v1/admin/stats",
    "/v1/admin/users",
    "/v1/admin/users/{user}",
    "/v1/admin/users/{user}/diff",
    "/v1/admin/users/{user}/restore",
    "/v1/admin/users/{user}/versions",
];

/// With jwt identity and the operator's token: the checks of ignored auth then hold for
/// both schemes (in header mode any valid user id is an identity).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_jwt_identity_and_an_admin_token_the_description_names_both_and_holds() {
    let secret = "a-secret-for-the-openapi-test-only-32b";
    let admin_token = "an-admin-token-for-the-openapi-test-only";
    let cellar = Cellar::new();
    let mut server = Server::start(
        &cellar,
        &[],
        &[
            ("CELLAR_AUTH_MODE", "jwt"),
            ("CELLAR_AUTH_JWT_SECRET", secret),
            ("CELLAR_AUTH_ADMIN_TOKEN", admin_token),
        ],
    );
    let document = description(&server).await;
    let scheme = &document["components"]["securitySchemes"]["identity"];
    assert_eq!(
        (&scheme["scheme"], &scheme["bearerFormat"]),
        (&"bearer".into(), &"JWT".into())
    );
    assert_eq!(
        document["components"]["securitySchemes"]["admin"]["scheme"],
        "bearer"
    );
    let paths = paths(&document);
    assert_eq!(
        paths,
        BTreeSet::from_iter(ROUTES.into_iter().chain(ADMIN_ROUTES))
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
        &format!(
            "[auth.openapi.identity]\nbearer = \"{token}\"\n\
             [auth.openapi.admin]\nbearer = \"{admin_token}\"\n"
        ),
        "positive_data_acceptance",
    );
}
