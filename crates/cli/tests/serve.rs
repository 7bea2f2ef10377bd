//! `cellar serve` as a child process: real HTTP, then SIGTERM and a clean exit.

#![cfg(unix)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Cellar;

/// Kills the server if the test fails before it stops it.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Server {
    /// Starts `cellar serve` on a free port and returns it with the address it announced.
    fn start(cellar: &Cellar) -> (Server, String) {
        let mut child = cellar
            .command(&["serve", "--listen", "127.0.0.1:0", "--json"], &[("RUST_LOG", "warn")])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn cellar serve");
        let stdout = child.stdout.take().expect("stdout");
        let server = Server(child);
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = receiver.recv_timeout(Duration::from_secs(60)).expect("cellar serve announces its address");
        let announced: Value = serde_json::from_str(&line).unwrap_or_else(|err| panic!("{err}: {line:?}"));
        let address = announced["listening"].as_str().expect("listening").to_owned();
        (server, address)
    }

    /// Sends SIGTERM and waits for the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.0.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "cellar serve did not stop within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[tokio::test]
async fn serve_answers_http_sees_operator_pushes_and_stops_cleanly_on_sigterm() {
    let cellar = Cellar::new();
    let (server, address) = Server::start(&cellar);
    let client = reqwest::Client::new();

    let health = client.get(format!("http://{address}/healthz")).send().await.expect("GET /healthz");
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
    assert_eq!((answer["wrote"].clone(), answer["version"].clone()), (json!(true), json!(1)));

    let pushed = cellar.sqlite_file("pushed.sqlite", 3);
    let version = cellar.json(&["push", "alice", pushed.to_str().unwrap()], &[], 0)["version"].clone();
    assert_eq!(version, 2, "the operator's push lands on top of the server's write");
    let count = json!({ "statements": ["SELECT count(*) FROM t"] });
    let response = client
        .post(format!("http://{address}/v1/query"))
        .header("X-User-Id", "alice")
        .json(&count)
        .send()
        .await
        .expect("POST /v1/query");
    let answer: Value = response.json().await.expect("JSON answer");
    assert_eq!(answer["version"], 2, "the running server sees the push at its next version check");
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
    assert!(message.contains("server.listen (from flag --listen)"), "{message}");
}
