//! Runs the built `cellar` binary in a temp folder with its own config and folder store.

#![allow(dead_code)] // each test binary uses its own part of the helpers

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cellar_engine::rusqlite::Connection;

/// A temp folder holding `cellar.toml`, the local copies and the folder store.
pub struct Cellar {
    dir: tempfile::TempDir,
}

impl Cellar {
    /// A folder whose `cellar.toml` points at `./local` and the folder store `./bucket`.
    pub fn new() -> Self {
        let cellar = Self { dir: tempfile::tempdir().expect("temp dir") };
        cellar.write_config("data_dir = \"local\"\n[store]\nurl = \"file://bucket\"\n");
        cellar
    }

    /// The temp folder (the binary's current directory).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces `cellar.toml`.
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.path().join("cellar.toml"), text).expect("write config");
    }

    /// `cellar ARGS` in the temp folder, with no `CELLAR_*` variable from the test's own
    /// environment and the given ones added.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cellar"));
        command.current_dir(self.path()).args(args).env_remove("RUST_LOG");
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("CELLAR_") {
                command.env_remove(name);
            }
        }
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
        serde_json::from_slice(&output.stdout).unwrap_or_else(|err| panic!("{err}: {}", describe(&output)))
    }

    /// Creates a SQLite database at `name` with `rows` rows in table `t`.
    pub fn sqlite_file(&self, name: &str, rows: i64) -> PathBuf {
        let path = self.path().join(name);
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch("CREATE TABLE t(x INTEGER)").expect("create");
        for x in 0..rows {
            conn.execute("INSERT INTO t VALUES (?1)", [x]).expect("insert");
        }
        path
    }

    /// The object of `user` in the folder store.
    pub fn object_path(&self, user: &str) -> PathBuf {
        self.path().join("bucket/cellar-users").join(user).join("database.sqlite")
    }
}

/// Rows in table `t` of the database at `path`.
pub fn count_rows(path: &Path) -> i64 {
    let conn = Connection::open(path).expect("open");
    conn.query_row("SELECT count(*) FROM t", [], |row| row.get(0)).expect("count")
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
