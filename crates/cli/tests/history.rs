//! History from the command line (`versions`, `pull --version`, `restore`, `fork`, `gc`),
//! run as the built binary against a folder store.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::api::{Api, Reply};
use support::server::Server;
use support::{Cellar, assert_exit, count_rows, stderr};

/// Pushes databases of `rows` rows each as `user`'s versions 1, 2, …
fn push_versions(cellar: &Cellar, user: &str, rows: &[i64]) {
    for (i, &n) in rows.iter().enumerate() {
        let file = cellar.sqlite_file(&format!("{user}-{i}.sqlite"), n);
        let pushed = cellar.json(
            &["push", user, file.to_str().expect("a UTF-8 path")],
            &[],
            0,
        );
        assert_eq!(pushed["version"], i + 1);
    }
}

/// `cellar pull USER [--version N]` into a file; the rows of its table `t`.
fn rows_pulled(cellar: &Cellar, user: &str, version: Option<u64>) -> i64 {
    let version = version.map(|v| v.to_string());
    let mut args = vec!["pull", user, "-o", "pulled.sqlite", "--force"];
    if let Some(version) = &version {
        args.extend(["--version", version]);
    }
    let pulled = cellar.json(&args, &[], 0);
    if let Some(version) = &version {
        assert_eq!(pulled["version"].to_string(), *version);
    }
    count_rows(&cellar.path().join("pulled.sqlite"))
}

/// The versions `cellar versions USER --limit 0 --json` lists, newest first.
fn versions(cellar: &Cellar, user: &str) -> Vec<Value> {
    let listed = cellar.json(&["versions", user, "--limit", "0"], &[], 0);
    listed["versions"].as_array().expect("a list").clone()
}

/// Asserts a command failed with exit 1 and says `says`, without naming a local path or a
/// key of the bucket.
fn assert_refused(cellar: &Cellar, args: &[&str], says: &str) {
    let output = cellar.run(args, &[]);
    assert_exit(&output, 1);
    let message = stderr(&output);
    assert!(message.contains(says), "{message}");
    let folder = cellar.path().to_string_lossy().into_owned();
    for leak in [
        folder.as_str(),
        "cellar-users/",
        "log/",
        "snapshots/",
        ".sqlite",
    ] {
        assert!(!message.contains(leak), "{leak:?} in {message}");
    }
}

#[test]
fn versions_pull_restore_undo_and_fork_round_trip() {
    let cellar = Cellar::new();
    push_versions(&cellar, "alice", &[3, 5, 7, 9]);

    let listed = cellar.json(&["versions", "alice"], &[], 0);
    assert_eq!(listed["user_id"], "alice");
    assert_eq!(listed["total"], 4);
    let numbers: Vec<&Value> = listed["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["version"])
        .collect();
    assert_eq!(numbers, [&json!(4), &json!(3), &json!(2), &json!(1)]);
    let oldest = &listed["versions"][3];
    for field in [
        "version",
        "created_at",
        "held_by",
        "shipped_bytes",
        "size_bytes",
        "writer",
    ] {
        assert!(oldest.get(field).is_some(), "{field} missing from {oldest}");
    }
    assert_eq!(oldest["held_by"], json!(["snapshot"]));
    assert!(listed["versions"][0]["shipped_bytes"].as_u64().unwrap() > 0);

    let text = cellar.run(&["versions", "alice", "--limit", "2"], &[]);
    assert_exit(&text, 0);
    let text = String::from_utf8(text.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("VERSION  TIME"), "{text}");
    assert!(
        lines[1].starts_with("4 ") && lines[2].starts_with("3 "),
        "{text}"
    );
    assert_eq!(
        lines[3], "the newest 2 of 4 versions; --limit 0 lists them all",
        "{text}"
    );
    let written = cellar.json(&["versions", "alice", "--writers", "--limit", "1"], &[], 0);
    assert!(
        written["versions"][0]["writer"]
            .as_str()
            .is_some_and(|writer| writer.starts_with("cellar-")),
        "{written}"
    );

    assert_eq!(rows_pulled(&cellar, "alice", Some(2)), 5);
    assert_eq!(rows_pulled(&cellar, "alice", None), 9);

    let restore = cellar.run(&["restore", "alice", "--version", "2"], &[]);
    assert_exit(&restore, 0);
    let said = String::from_utf8(restore.stdout).unwrap();
    assert_eq!(
        said.trim_end(),
        "restored alice to the content of version 2 as version 5; \
         undo with: cellar restore alice --version 4"
    );
    assert_eq!(rows_pulled(&cellar, "alice", None), 5);

    let undo: Vec<&str> = said
        .split("undo with: cellar ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    let undone = cellar.json(&undo, &[], 0);
    assert_eq!(
        undone,
        json!({ "user_id": "alice", "version": 6, "restored": 4, "undo": 5 })
    );
    assert_eq!(rows_pulled(&cellar, "alice", None), 9);

    // The moment version 3 was written names version 3, and restores it.
    let third = versions(&cellar, "alice")
        .into_iter()
        .find(|v| v["version"] == 3)
        .unwrap();
    let at = third["created_at"].as_str().unwrap();
    let restored = cellar.json(&["restore", "alice", "--at", at], &[], 0);
    assert_eq!(
        (restored["restored"].clone(), restored["version"].clone()),
        (json!(3), json!(7))
    );
    assert_eq!(rows_pulled(&cellar, "alice", None), 7);
    assert_eq!(versions(&cellar, "alice").len(), 7);

    let forked = cellar.json(&["fork", "alice", "carol", "--version", "1"], &[], 0);
    assert_eq!(
        forked,
        json!({ "user_id": "alice", "from_version": 1, "new_user_id": "carol", "version": 1 })
    );
    assert_eq!(rows_pulled(&cellar, "carol", None), 3);
    assert_refused(
        &cellar,
        &["fork", "alice", "carol"],
        "user carol already has a database",
    );
    assert_eq!(rows_pulled(&cellar, "carol", None), 3, "carol is untouched");
    let newest = cellar.json(&["fork", "alice", "dave"], &[], 0);
    assert_eq!(newest["from_version"], Value::Null);
    assert_eq!(rows_pulled(&cellar, "dave", None), 7);
}

#[test]
fn diff_lists_the_rows_between_two_versions() {
    let cellar = Cellar::new();
    push_versions(&cellar, "alice", &[3, 5]);

    let diffed = cellar.json(&["diff", "alice", "1", "2"], &[], 0);
    assert_eq!(
        (diffed["from"].clone(), diffed["to"].clone()),
        (json!(1), json!(2))
    );
    let table = &diffed["tables"][0];
    assert_eq!(
        (
            table["table"].clone(),
            table["added"].clone(),
            table["removed"].clone()
        ),
        (json!("t"), json!(2), json!(0))
    );
    assert_eq!(
        table["rows"][0]["after"],
        json!({ "rowid": 4, "x": 3 }),
        "{diffed}"
    );
    assert_eq!(diffed["schema"], json!([]));

    let counts = cellar.json(&["diff", "alice", "1", "2", "--max-rows", "0"], &[], 0);
    assert_eq!(counts["tables"][0]["rows"], json!([]));
    assert_eq!(counts["tables"][0]["truncated"], true);

    let text = cellar.run(&["diff", "alice", "2", "1", "--max-rows", "1"], &[]);
    assert_exit(&text, 0);
    assert_eq!(
        String::from_utf8(text.stdout).unwrap().trim_end(),
        "alice from version 2 to version 1\n\
         table t: 0 added, 2 removed, 0 changed\n  \
         - rowid=4: x=3\n  \
         … 1 more (--max-rows)"
    );
    let same = cellar.run(&["diff", "alice", "2", "2"], &[]);
    assert!(
        String::from_utf8(same.stdout)
            .unwrap()
            .ends_with("no differences\n")
    );
}

#[test]
fn a_version_or_user_the_history_does_not_hold_is_not_found_in_words() {
    let cellar = Cellar::new();
    push_versions(&cellar, "alice", &[1, 2]);

    assert_refused(
        &cellar,
        &["restore", "alice", "--version", "9"],
        "user alice has no version 9 in its history: the history holds versions 1 to 2",
    );
    assert_refused(
        &cellar,
        &["pull", "alice", "--version", "9", "-o", "old.sqlite"],
        "user alice has no version 9 in its history",
    );
    assert!(!cellar.path().join("old.sqlite").exists());
    assert_refused(
        &cellar,
        &["restore", "alice", "--at", "2000-01-01T00:00:00Z"],
        "no version at 2000-01-01T00:00:00Z in its history: nothing was written at or before then",
    );
    assert_refused(
        &cellar,
        &["diff", "alice", "1", "9"],
        "user alice has no version 9 in its history",
    );
    assert_refused(
        &cellar,
        &["fork", "alice", "bob", "--version", "9"],
        "user alice has no version 9 in its history",
    );
    assert_refused(
        &cellar,
        &["restore", "bob", "--version", "1"],
        "user bob has no version 1 in its history: the user has no database",
    );
    for args in [&["versions", "bob"][..], &["gc", "bob"]] {
        let output = cellar.run(args, &[]);
        assert_exit(&output, 1);
        assert!(
            stderr(&output).contains("user bob has no database in the store file://bucket"),
            "{}",
            stderr(&output)
        );
    }
    assert_eq!(
        versions(&cellar, "alice").len(),
        2,
        "a refused restore wrote nothing"
    );
    let bad_time = cellar.run(&["restore", "alice", "--at", "yesterday"], &[]);
    assert_exit(&bad_time, 2);
    assert!(stderr(&bad_time).contains("not an RFC 3339 time"));
    assert_exit(&cellar.run(&["restore", "alice"], &[]), 2);
}

#[cfg(unix)]
#[tokio::test]
async fn gc_keeps_the_newest_versions_of_the_window_and_deletes_the_rest() {
    gc_keeps_the_newest_versions(&Cellar::new()).await;
}

#[cfg(unix)]
#[tokio::test]
async fn gc_keeps_the_newest_versions_on_seaweedfs() {
    let s3 = cellar_testkit::S3Server::seaweedfs()
        .await
        .expect("SeaweedFS starts");
    gc_keeps_the_newest_versions(&Cellar::on_s3(&s3)).await;
}

/// Compaction keeps the snapshots it replaces; only a long-lived engine compacts, so the
/// history is written through `cellar serve`.
async fn gc_keeps_the_newest_versions(cellar: &Cellar) {
    let mut server = Server::start(cellar, &[], &[("CELLAR_SYNC_COMPACT_AFTER_VERSIONS", "2")]);
    let api = Api::new(&server.address);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut appended = 0;
    // Compactions are at least a second apart: write until two snapshots are kept.
    loop {
        let reply = api.append("alice", appended).await;
        assert!(matches!(reply, Reply::Ok { .. }), "{reply:?}");
        appended += 1;
        let kept = versions(cellar, "alice")
            .iter()
            .filter(|v| v["held_by"].to_string().contains("kept_snapshot"))
            .count();
        if kept >= 2 && appended >= 8 {
            break;
        }
        assert!(Instant::now() < deadline, "no compaction in 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.terminate();
    let before = versions(cellar, "alice");
    assert_eq!(before.len() as i64, appended);

    // Unchanged with the default window (7 days): nothing is old enough.
    let kept = cellar.json(&["gc"], &[], 0);
    assert_eq!(
        (
            kept["deleted_changes"].clone(),
            kept["deleted_snapshots"].clone()
        ),
        (json!(0), json!(0))
    );

    // The log's grace must pass before a folded change goes.
    std::thread::sleep(Duration::from_millis(1100));
    let window = [
        ("CELLAR_HISTORY_KEEP_VERSIONS", "2"),
        ("CELLAR_SYNC_LOG_GRACE_SECS", "1"),
    ];
    let collected = cellar.json(&["gc", "alice"], &window, 0);
    let user = &collected["users"][0];
    assert_eq!(user["user_id"], "alice");
    assert_eq!(user["oldest_kept"], appended - 1);
    let deleted = collected["deleted_changes"].as_u64().expect("a count")
        + collected["deleted_snapshots"].as_u64().expect("a count");
    assert!(deleted > 0, "{collected}");

    let after = versions(cellar, "alice");
    assert!(after.len() < before.len(), "{after:?}");
    let first = after.last().expect("a version kept")["version"]
        .as_u64()
        .expect("a count");
    assert!(first < appended as u64, "the newest two stay: {after:?}");
    for version in [appended - 1, appended] {
        assert_eq!(rows_pulled(cellar, "alice", Some(version as u64)), version);
    }
    let gone = (first - 1).to_string();
    assert_refused(
        cellar,
        &["pull", "alice", "--version", &gone, "-o", "gone.sqlite"],
        &format!("user alice has no version {gone} in its history"),
    );

    let again = cellar.run(&["gc"], &window);
    assert_exit(&again, 0);
    assert_eq!(
        String::from_utf8(again.stdout).expect("UTF-8").trim_end(),
        "1 user(s): deleted 0 change(s) and 0 kept snapshot(s)"
    );
}
