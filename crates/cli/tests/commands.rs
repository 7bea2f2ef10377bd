//! The operator commands, run as the built binary against a folder store.

mod support;

use serde_json::json;
use support::{Cellar, assert_exit, count_rows, stderr};

#[test]
fn users_status_push_pull_and_verify_round_trip_with_json() {
    let cellar = Cellar::new();
    assert_eq!(cellar.json(&["users"], &[], 0), json!({ "users": [] }));

    let first = cellar.sqlite_file("first.sqlite", 3);
    let pushed = cellar.json(&["push", "alice", first.to_str().unwrap()], &[], 0);
    assert_eq!(
        (pushed["user_id"].clone(), pushed["version"].clone()),
        (json!("alice"), json!(1))
    );
    let second = cellar.sqlite_file("second.sqlite", 5);
    let pushed = cellar.json(&["push", "alice", second.to_str().unwrap()], &[], 0);
    assert_eq!(pushed["version"], 2);

    let users = cellar.json(&["users"], &[], 0);
    assert_eq!(users["users"][0]["user_id"], "alice");
    let status = cellar.json(&["status", "alice"], &[], 0);
    assert_eq!(status["version"], 2);
    assert_eq!(status["size_bytes"], users["users"][0]["size_bytes"]);
    assert_eq!(status["sha256"].as_str().map(str::len), Some(64));

    let pulled = cellar.json(&["pull", "alice", "-o", "copy.sqlite"], &[], 0);
    assert_eq!(pulled["version"], 2);
    assert_eq!(count_rows(&cellar.path().join("copy.sqlite")), 5);
    let again = cellar.run(&["pull", "alice", "-o", "copy.sqlite"], &[]);
    assert_exit(&again, 1);
    assert!(
        stderr(&again).contains("pass --force"),
        "{}",
        stderr(&again)
    );
    cellar.json(&["pull", "alice", "-o", "copy.sqlite", "--force"], &[], 0);
    cellar.json(&["pull", "alice"], &[], 0);
    assert_eq!(count_rows(&cellar.path().join("alice.sqlite")), 5);

    let verified = cellar.json(&["verify", "alice"], &[], 0);
    assert_eq!(
        (verified["ok"].clone(), verified["checked"].clone()),
        (json!(true), json!(1))
    );
    assert_eq!(verified["users"][0]["integrity_ok"], true);
    assert_eq!(cellar.json(&["verify", "--all"], &[], 0)["checked"], 1);
    assert!(
        !cellar.path().join("local").exists(),
        "operator commands leave data_dir to the server"
    );
}

#[test]
fn a_user_without_a_database_is_not_found() {
    let cellar = Cellar::new();
    let status = cellar.run(&["status", "bob"], &[]);
    assert_exit(&status, 1);
    assert!(
        stderr(&status).contains("user bob has no database in the store file://bucket"),
        "{}",
        stderr(&status)
    );
    assert_exit(&cellar.run(&["pull", "bob"], &[]), 1);
    let verified = cellar.json(&["verify", "bob"], &[], 1);
    assert_eq!(
        verified["users"][0]["problems"],
        json!(["no database in the store"])
    );
}

#[test]
fn pushing_a_file_that_is_not_sqlite_is_refused_before_the_store_is_touched() {
    let cellar = Cellar::new();
    std::fs::write(
        cellar.path().join("notes.txt"),
        "not a database, just some text ".repeat(10),
    )
    .unwrap();
    let output = cellar.run(&["push", "alice", "notes.txt"], &[]);
    assert_exit(&output, 1);
    let message = stderr(&output);
    assert!(
        message.contains("refusing to push notes.txt: it is not a SQLite database"),
        "{message}"
    );
    assert!(
        !cellar.path().join("bucket").exists(),
        "the store was touched"
    );
}

#[test]
fn verify_and_pull_detect_a_corrupted_object() {
    let cellar = Cellar::new();
    let file = cellar.sqlite_file("db.sqlite", 200);
    cellar.json(&["push", "alice", file.to_str().unwrap()], &[], 0);
    cellar.json(&["push", "bob", file.to_str().unwrap()], &[], 0);

    let object = cellar.object_path("alice");
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() - 100;
    bytes[middle] ^= 0xff;
    std::fs::write(&object, bytes).unwrap();

    let verified = cellar.json(&["verify", "alice"], &[], 1);
    assert_eq!(verified["ok"], false);
    assert_eq!(verified["users"][0]["checksum_ok"], false);
    let problems = verified["users"][0]["problems"].to_string();
    assert!(problems.contains("checksum mismatch"), "{problems}");

    let all = cellar.json(&["verify", "--all"], &[], 1);
    assert_eq!(
        (all["checked"].clone(), all["failed"].clone()),
        (json!(2), json!(1))
    );

    let pull = cellar.run(&["pull", "alice", "-o", "bad.sqlite"], &[]);
    assert_exit(&pull, 1);
    assert!(
        stderr(&pull).contains("cellar-crc64nvme"),
        "{}",
        stderr(&pull)
    );
    assert!(!cellar.path().join("bad.sqlite").exists());
}

#[test]
fn a_bad_config_key_is_named_in_the_error() {
    let cellar = Cellar::new();
    cellar.write_config("[store]\nbukcet = \"x\"\n");
    let output = cellar.run(&["users"], &[]);
    assert_exit(&output, 2);
    let message = stderr(&output);
    assert!(
        message.contains("unknown key store.bukcet (from config file cellar.toml)"),
        "{message}"
    );

    cellar.write_config("[sync]\nconflict = \"strict\"\n");
    let output = cellar.run(&["users", "--json"], &[("CELLAR_SYNC_CONFLICT", "never")]);
    assert_exit(&output, 2);
    let error: serde_json::Value = serde_json::from_slice(&output.stderr).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("sync.conflict (from environment variable CELLAR_SYNC_CONFLICT)"),
        "{message}"
    );
}

#[test]
fn an_environment_variable_overrides_the_file_and_a_flag_overrides_both() {
    let cellar = Cellar::new();
    let file = cellar.sqlite_file("db.sqlite", 1);
    cellar.json(
        &[
            "push",
            "alice",
            file.to_str().unwrap(),
            "--store-url",
            "file://other",
        ],
        &[],
        0,
    );

    let from_file = cellar.json(&["users"], &[], 0);
    assert_eq!(from_file["users"], json!([]));
    let env = [("CELLAR_STORE_URL", "file://other")];
    let from_env = cellar.json(&["users"], &env, 0);
    assert_eq!(from_env["users"][0]["user_id"], "alice");
    let from_flag = cellar.json(&["users", "--store-url", "file://third"], &env, 0);
    assert_eq!(from_flag["users"], json!([]));
}

#[test]
fn usage_errors_exit_with_2() {
    let cellar = Cellar::new();
    assert_exit(&cellar.run(&["status"], &[]), 2);
    assert_exit(&cellar.run(&["status", "../etc"], &[]), 2);
    assert_exit(&cellar.run(&["users", "--config", "missing.toml"], &[]), 2);
}

#[test]
fn an_unreachable_store_exits_with_3() {
    let cellar = Cellar::new();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    cellar.write_config(&format!(
        "[store]\nurl = \"s3://bucket/cellar-users\"\nendpoint = \"http://{closed_port}\"\n\
         region = \"us-east-1\"\nallow_http = true\n"
    ));
    let env = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let output = cellar.run(&["users"], &env);
    assert_exit(&output, 3);
    assert!(
        stderr(&output).contains("cannot list the users in the store s3://bucket/cellar-users"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn help_lists_every_configuration_key_with_its_variable() {
    let cellar = Cellar::new();
    let output = cellar.run(&["--help"], &[]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for (key, var) in [
        ("server.listen", "CELLAR_SERVER_LISTEN"),
        ("store.url", "CELLAR_STORE_URL"),
        ("sync.conflict", "CELLAR_SYNC_CONFLICT"),
        (
            "sync.download_parallelism",
            "CELLAR_SYNC_DOWNLOAD_PARALLELISM",
        ),
        ("limits.query_timeout_ms", "CELLAR_LIMITS_QUERY_TIMEOUT_MS"),
        ("faults.seed", "CELLAR_FAULTS_SEED"),
        ("server.demo", "CELLAR_SERVER_DEMO"),
    ] {
        let line = help
            .lines()
            .find(|line| line.trim_start().starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("{key} is not in --help:\n{help}"));
        assert!(line.contains(var), "{line}");
    }
}

/// The claims of `token`, checked against `secret` as the server checks them.
fn verified_claims(token: &str, secret: &str) -> serde_json::Value {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    jsonwebtoken::decode(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &Validation::new(Algorithm::HS256),
    )
    .expect("a valid HS256 token")
    .claims
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

#[test]
fn token_signs_a_jwt_for_the_user_with_the_configured_secret() {
    let cellar = Cellar::new();
    let secret = "token-test-secret-0123456789abcdef";
    let jwt = [
        ("CELLAR_AUTH_MODE", "jwt"),
        ("CELLAR_AUTH_JWT_SECRET", secret),
    ];
    let made = cellar.json(&["token", "alice", "--ttl-secs", "600"], &jwt, 0);
    assert_eq!(made["user_id"], "alice");
    let claims = verified_claims(made["token"].as_str().unwrap(), secret);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["exp"], made["expires_at"]);
    let ttl = claims["exp"].as_u64().unwrap() - unix_now();
    assert!((590..=600).contains(&ttl), "expires in {ttl} s");

    // As text: the token alone, valid for a day.
    let output = cellar.run(&["token", "bob"], &jwt);
    assert_exit(&output, 0);
    let text = String::from_utf8(output.stdout).unwrap();
    let claims = verified_claims(text.trim_end(), secret);
    assert_eq!(claims["sub"], "bob");
    let ttl = claims["exp"].as_u64().unwrap() - unix_now();
    assert!((86_390..=86_400).contains(&ttl), "expires in {ttl} s");
}

#[test]
fn token_refuses_header_mode_a_missing_secret_and_a_bad_user_in_words() {
    let cellar = Cellar::new();
    let header_mode = cellar.run(&["token", "alice"], &[]);
    assert_exit(&header_mode, 2);
    assert!(
        stderr(&header_mode)
            .contains("auth.mode (from the default): tokens are for auth.mode = \"jwt\""),
        "{}",
        stderr(&header_mode)
    );
    let no_secret = cellar.run(&["token", "alice"], &[("CELLAR_AUTH_MODE", "jwt")]);
    assert_exit(&no_secret, 2);
    assert!(
        stderr(&no_secret).contains("auth.jwt_secret is not set"),
        "{}",
        stderr(&no_secret)
    );
    let jwt = [
        ("CELLAR_AUTH_MODE", "jwt"),
        (
            "CELLAR_AUTH_JWT_SECRET",
            "token-test-secret-0123456789abcdef",
        ),
    ];
    assert_exit(&cellar.run(&["token", "../etc"], &jwt), 2);
    assert_exit(&cellar.run(&["token", "alice", "--ttl-secs", "0"], &jwt), 2);
}
