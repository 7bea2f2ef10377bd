//! `cellar serve` as a child process: real HTTP, then SIGTERM and a clean exit.

#![cfg(unix)]

mod support;

use serde_json::{Value, json};
use support::Cellar;
use support::server::Server;

#[tokio::test]
async fn serve_answers_http_sees_operator_pushes_and_stops_cleanly_on_sigterm() {
    let cellar = Cellar::new();
    let mut server = Server::start(&cellar, &[], &[]);
    let address = server.address.clone();
    let client = reqwest::Client::new();

    let health = client
        .get(format!("http://{address}/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    assert!(health.status().is_success(), "{}", health.status());

    let body = json!({ "statements": ["CREATE TABLE t(x)", "INSERT INTO t VALUES (1)"] });
    let response = client
        .post(format!("http://{address}/v1/query"))
        .header("X-User-Id", "alice")
        .json(&body)
        .send()
        .await
        .expect("POST /v1/query");
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("JSON answer");
    assert_eq!(
        (answer["wrote"].clone(), answer["version"].clone()),
        (json!(true), json!(1))
    );

    let pushed = cellar.sqlite_file("pushed.sqlite", 3);
    let version =
        cellar.json(&["push", "alice", pushed.to_str().unwrap()], &[], 0)["version"].clone();
    assert_eq!(
        version, 2,
        "the operator's push lands on top of the server's write"
    );
    let count = json!({ "statements": ["SELECT count(*) FROM t"] });
    let response = client
        .post(format!("http://{address}/v1/query"))
        .header("X-User-Id", "alice")
        .json(&count)
        .send()
        .await
        .expect("POST /v1/query");
    let answer: Value = response.json().await.expect("JSON answer");
    assert_eq!(
        answer["version"], 2,
        "the running server sees the push at its next version check"
    );
    assert_eq!(answer["results"][0]["rows"], json!([[3]]));

    let status = server.terminate();
    assert!(status.success(), "cellar serve exited with {status}");

    let verified = cellar.json(&["verify", "alice"], &[], 0);
    assert_eq!(verified["users"][0]["version"], 2);
}

#[test]
fn serve_refuses_header_auth_off_loopback() {
    let cellar = Cellar::new();
    let output = cellar.run(&["serve", "--listen", "0.0.0.0:0"], &[]);
    support::assert_exit(&output, 2);
    let message = support::stderr(&output);
    assert!(
        message.contains("server.listen (from flag --listen)"),
        "{message}"
    );
}
