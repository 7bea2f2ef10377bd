//! Runs the built `cellar` binary in a temp folder with its own config and folder store
//! (or a bucket on a real S3-compatible server).
//!
//! - [`Cellar`]: the folder, its `cellar.toml`, one-shot commands (`pull`, `verify`, ...).
//! - [`server`]: `cellar serve` as a child process that never outlives its test.
//! - [`api`]: the HTTP calls the reliability suites make, and their classified answers.
//! - [`load`]: concurrent clients appending unique values and reading them back.
//! - [`checks`]: the ledger of answers, and what must hold after a fault, a crash or a race.
//! - [`disk`]: a small tmpfs over a data dir, for disk-full tests.
//!
//! The reliability suites run a quick version by default and the full one with
//! `CELLAR_RELIABILITY_FULL=1` ([`full_run`]); `CELLAR_RELIABILITY_SEED` replays a run.

#![allow(dead_code)] // each test binary uses its own part of the helpers

pub mod api;
pub mod checks;
pub mod disk;
pub mod load;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cellar_engine::rusqlite::Connection;

/// True when the reliability suites are to run in full (`CELLAR_RELIABILITY_FULL=1`).
pub fn full_run() -> bool {
    std::env::var("CELLAR_RELIABILITY_FULL").is_ok_and(|value| value == "1")
}

/// The seed of a reliability run: `CELLAR_RELIABILITY_SEED`, or else from the clock. It is
/// printed, so that a failing run can be replayed.
pub fn run_seed(suite: &str) -> u64 {
    let seed = match std::env::var("CELLAR_RELIABILITY_SEED") {
        Ok(text) => text
            .parse()
            .expect("CELLAR_RELIABILITY_SEED is a whole number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64),
    };
    eprintln!("{suite}: seed {seed} (replay with CELLAR_RELIABILITY_SEED={seed})");
    seed
}

/// A temp folder holding `cellar.toml`, the local copies and the folder store.
pub struct Cellar {
    dir: tempfile::TempDir,
    /// Added to every command's environment (S3 credentials).
    env: Vec<(String, String)>,
}

impl Cellar {
    /// A folder whose `cellar.toml` points at `./local` and the folder store `./bucket`.
    pub fn new() -> Self {
        let cellar = Self {
            dir: tempfile::tempdir().expect("temp dir"),
            env: Vec::new(),
        };
        cellar.write_config("data_dir = \"local\"\n[store]\nurl = \"file://bucket\"\n");
        cellar
    }

    /// A folder whose `cellar.toml` points at `./local` and at the bucket of `s3`.
    pub fn on_s3(s3: &cellar_testkit::S3Server) -> Self {
        let env = vec![
            ("AWS_ACCESS_KEY_ID".to_owned(), s3.access_key_id.clone()),
            (
                "AWS_SECRET_ACCESS_KEY".to_owned(),
                s3.secret_access_key.clone(),
            ),
        ];
        let cellar = Self {
            dir: tempfile::tempdir().expect("temp dir"),
            env,
        };
        cellar.write_config(&format!(
            "data_dir = \"local\"\n[store]\nurl = \"{}\"\nendpoint = \"{}\"\nregion = \"{}\"\nallow_http = true\n",
            s3.store_url("cellar-users"),
            s3.endpoint,
            s3.region
        ));
        cellar
    }

    /// The temp folder (the binary's current directory).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The local copies of the server(s) started without `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.path().join("local")
    }

    /// Replaces `cellar.toml`.
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.path().join("cellar.toml"), text).expect("write config");
    }

    /// `cellar ARGS` in the temp folder, with no `CELLAR_*` variable from the test's own
    /// environment and the given ones added.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cellar"));
        command
            .current_dir(self.path())
            .args(args)
            .env_remove("RUST_LOG");
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("CELLAR_") {
                command.env_remove(name);
            }
        }
        command.envs(self.env.iter().map(|(name, value)| (name, value)));
        command.envs(env.iter().copied());
        command
    }

    /// Runs `cellar ARGS` to completion.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().expect("run cellar")
    }

    /// Runs `cellar ARGS --json`, expects `exit`, and parses stdout.
    pub fn json(&self, args: &[&str], env: &[(&str, &str)], exit: i32) -> serde_json::Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let output = self.run(&with_json, env);
        assert_exit(&output, exit);
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|err| panic!("{err}: {}", describe(&output)))
    }

    /// Creates a SQLite database at `name` with `rows` rows in table `t`.
    pub fn sqlite_file(&self, name: &str, rows: i64) -> PathBuf {
        let path = self.path().join(name);
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch("CREATE TABLE t(x INTEGER)")
            .expect("create");
        for x in 0..rows {
            conn.execute("INSERT INTO t VALUES (?1)", [x])
                .expect("insert");
        }
        path
    }

    /// The object of `user` in the folder store.
    pub fn object_path(&self, user: &str) -> PathBuf {
        self.path()
            .join("bucket/cellar-users")
            .join(user)
            .join("database.sqlite")
    }
}

/// Rows in table `t` of the database at `path`.
pub fn count_rows(path: &Path) -> i64 {
    let conn = Connection::open(path).expect("open");
    conn.query_row("SELECT count(*) FROM t", [], |row| row.get(0))
        .expect("count")
}

/// Asserts the exit status, showing both streams when it is wrong.
pub fn assert_exit(output: &Output, expected: i32) {
    assert_eq!(output.status.code(), Some(expected), "{}", describe(output));
}

/// Stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        stderr(output)
    )
}
