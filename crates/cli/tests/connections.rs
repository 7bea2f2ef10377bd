//! `cellar serve` under an open-files limit (`ulimit -n` in a shell that then runs it):
//! it raises the soft limit to the hard one, fits the database cache and
//! `server.max_connections` under it or refuses to start, and a flood of idle connections
//! larger than the limit neither runs it out of open files nor silences `/healthz`.

#![cfg(unix)]

mod support;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Cellar;

/// A limit too low for the defaults, high enough for 8 connections and a small cache.
const LIMIT: u64 = 256;
/// How long any one step may take.
const STEP: Duration = Duration::from_secs(30);

/// `cellar serve` run by `sh -c 'ulimit ARG && exec cellar serve …'`; killed when dropped.
struct Limited {
    child: Child,
    log: PathBuf,
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Limited {
    /// Starts `cellar serve --listen 127.0.0.1:0 --json` under `ulimit {ulimit}`.
    fn spawn(cellar: &Cellar, ulimit: &str, env: &[(&str, &str)]) -> Self {
        let serve = cellar.command(&["serve", "--listen", "127.0.0.1:0", "--json"], env);
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit {ulimit} && exec \"$0\" \"$@\""))
            .arg(serve.get_program())
            .args(serve.get_args());
        if let Some(dir) = serve.get_current_dir() {
            command.current_dir(dir);
        }
        for (name, value) in serve.get_envs() {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        let log = cellar
            .path()
            .join(format!("serve-{}.log", ulimit.replace(' ', "")));
        command
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("create the log"));
        Self {
            child: command.spawn().expect("spawn sh"),
            log,
        }
    }

    /// The address the server announced on its first line of stdout.
    fn address(&mut self) -> String {
        let stdout = self.child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read stdout");
        let announced: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("no address announced; log:\n{}", self.log()));
        announced["listening"]
            .as_str()
            .expect("an address")
            .to_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status, waiting up to [`STEP`].
    fn exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// True once `stream` is closed by the server (end of stream or reset) within `within`.
fn closed_within(mut stream: &TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).expect("read timeout");
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// One `GET /healthz` on a fresh connection: whether it answered 200.
fn healthz(address: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let asked =
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: cellar\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    asked.is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}

#[test]
fn an_idle_flood_larger_than_the_open_files_limit_does_not_silence_healthz() {
    let cellar = Cellar::new();
    let mut server = Limited::spawn(
        &cellar,
        &format!("-n {LIMIT}"),
        &[
            ("RUST_LOG", "warn"),
            ("CELLAR_SERVER_MAX_CONNECTIONS", "8"),
            ("CELLAR_SERVER_HEADER_READ_TIMEOUT_SECS", "1"),
        ],
    );
    let address = server.address();
    assert!(healthz(&address), "serves; log:\n{}", server.log());

    let flood_began = Instant::now();
    let idle: Vec<TcpStream> = (0..LIMIT + 20)
        .map(|_| TcpStream::connect(&address).expect("the kernel takes the connection"))
        .collect();
    let answered = loop {
        if healthz(&address) {
            break flood_began.elapsed();
        }
        assert!(
            flood_began.elapsed() < STEP,
            "/healthz stayed silent; log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let still_open = idle
        .iter()
        .filter(|stream| !closed_within(stream, Duration::from_secs(5)))
        .count();

    let log = server.log();
    assert!(
        server.child.try_wait().expect("wait").is_none(),
        "the server exited; log:\n{log}"
    );
    assert_eq!(still_open, 0, "idle connections outlived the deadline");
    assert!(
        answered < Duration::from_secs(10),
        "/healthz answered only {answered:?} into the flood"
    );
    assert!(
        !log.contains("Too many open files"),
        "the server ran out of open files:\n{log}"
    );
    assert!(
        log.contains("serving with a smaller database cache"),
        "the shrunk cache is logged:\n{log}"
    );
}

#[test]
fn max_connections_that_cannot_fit_the_open_files_limit_refuse_to_start() {
    let cellar = Cellar::new();
    let mut server = Limited::spawn(
        &cellar,
        &format!("-n {LIMIT}"),
        &[("CELLAR_SERVER_MAX_CONNECTIONS", "1000")],
    );
    let status = server.exit();
    let log = server.log();
    assert_eq!(status.code(), Some(2), "a configuration error; log:\n{log}");
    for figure in [
        "server.max_connections",
        "CELLAR_SERVER_MAX_CONNECTIONS",
        "1000 connections",
        "limit of 256",
        "at most 32",
    ] {
        assert!(log.contains(figure), "{figure:?} in:\n{log}");
    }
}

#[test]
fn the_soft_open_files_limit_is_raised_to_the_hard_one_and_both_are_logged() {
    let cellar = Cellar::new();
    let mut server = Limited::spawn(&cellar, "-Sn 300", &[("RUST_LOG", "info")]);
    let address = server.address();
    assert!(healthz(&address), "serves; log:\n{}", server.log());
    let log = server.log();
    let raised = log
        .lines()
        .find(|line| line.contains("raised the soft open-files limit"))
        .unwrap_or_else(|| panic!("no line on the raise in:\n{log}"));
    assert!(raised.contains("old_soft=300"), "{raised}");
    assert!(
        raised.contains("new_soft=") && raised.contains("hard="),
        "{raised}"
    );
    // Where the kernel tells (Linux), the limit in force is the hard one.
    let limits = format!("/proc/{}/limits", server.child.id());
    if let Ok(limits) = std::fs::read_to_string(limits) {
        let open_files: Vec<&str> = limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .expect("a line on open files")
            .split_whitespace()
            .collect();
        assert_eq!(open_files[3], open_files[4], "soft = hard: {open_files:?}");
        assert!(
            raised.contains(&format!("new_soft={}", open_files[3])),
            "{raised}"
        );
    }
}
