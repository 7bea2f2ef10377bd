//! The JavaScript client (`clients/js`) against the built `cellar serve`: runs its Node tests,
//! which start the server themselves from `CELLAR_BIN` (queries, blobs, typed errors, the file
//! snapshot, events, and a subscription that comes back after a server restart).

#![cfg(unix)]

use std::process::Command;

#[test]
fn js_client_passes_its_node_tests_against_a_real_server() {
    let output = Command::new("node")
        .args(["--experimental-websocket", "--test", "clients/js/test/"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env("CELLAR_BIN", env!("CARGO_BIN_EXE_cellar"))
        .output()
        .expect("run node (Node.js 20 or later)");
    assert!(
        output.status.success(),
        "node --test clients/js/test/ failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}
