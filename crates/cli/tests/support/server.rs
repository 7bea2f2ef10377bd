//! `cellar serve` as a child process: on a free port of 127.0.0.1 (it binds port 0 and
//! announces the address), its log in a file, SIGKILLed when dropped.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Cellar;

/// How long a server may take to announce its address (opening an S3 store included).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Numbers the log files of the servers started by one test binary.
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// A running `cellar serve`; killed (SIGKILL) and reaped when dropped.
pub struct Server {
    child: Child,
    /// `127.0.0.1:PORT`, as the server announced it.
    pub address: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Server {
    /// Starts `cellar serve ARGS --listen 127.0.0.1:0 --json` with `env` added (and
    /// `RUST_LOG=warn` unless `env` sets it); panics with the log if it does not come up.
    pub fn start(cellar: &Cellar, args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::try_start(cellar, args, env)
            .unwrap_or_else(|log| panic!("cellar serve did not start:\n{log}"))
    }

    /// Like [`Server::start`]; the error is the server's log.
    pub fn try_start(
        cellar: &Cellar,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Server, String> {
        let number = STARTED.fetch_add(1, Ordering::Relaxed);
        let log = cellar.path().join(format!("serve-{number}.log"));
        let mut all_args = vec!["serve", "--listen", "127.0.0.1:0", "--json"];
        all_args.extend_from_slice(args);
        let mut command = cellar.command(&all_args, &[("RUST_LOG", "warn")]);
        command
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("create the server log"));
        let mut child = command.spawn().expect("spawn cellar serve");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut server = Server {
            child,
            address: String::new(),
            log,
        };
        match announced_address(stdout) {
            Some(address) => {
                server.address = address;
                Ok(server)
            }
            None => {
                server.kill();
                Err(server.log())
            }
        }
    }

    /// `http://ADDRESS/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, then reap; nothing happens if it already exited.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a graceful exit (in-flight requests finish first).
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        self.wait_exit(STOP_TIMEOUT).unwrap_or_else(|| {
            panic!("cellar serve did not stop within {STOP_TIMEOUT:?} of SIGTERM")
        })
    }

    /// The exit status, if the process has exited (without waiting).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait for cellar serve")
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The address in the server's first line of stdout, `{"listening": "127.0.0.1:PORT"}`;
/// `None` if it exits or stays silent for [`START_TIMEOUT`].
fn announced_address(stdout: std::process::ChildStdout) -> Option<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(line);
    });
    let line = receiver.recv_timeout(START_TIMEOUT).ok()?;
    let announced: Value = serde_json::from_str(&line).ok()?;
    announced["listening"].as_str().map(str::to_owned)
}
