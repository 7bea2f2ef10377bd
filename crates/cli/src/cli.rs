//! The command line (DESIGN §8), parsed by clap.

use std::path::PathBuf;

use cellar_engine::{RestoreTarget, UserId, Version};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

use crate::settings::{ConfigFile, Flag};

/// Per-user SQLite databases whose source of truth is object storage.
///
/// Settings come from cellar.toml (or --config), then CELLAR_* environment variables, then
/// flags. Exit status: 0 ok, 1 a check failed or not found, 2 usage or configuration error,
/// 3 object store unavailable.
#[derive(Debug, Parser)]
#[command(name = "cellar", version)]
pub struct Cli {
    /// Configuration file [default: ./cellar.toml, if present]
    #[arg(long, global = true, env = "CELLAR_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// The object store: file://PATH, s3://BUCKET/PREFIX or memory:// (the `store.url` key)
    #[arg(long, global = true, value_name = "URL")]
    pub store_url: Option<String>,

    /// Print results as one line of JSON, for scripts (no progress bars)
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The longest life `cellar token` gives a token: ten years keeps `exp` well inside the
/// integers JavaScript reads exactly.
const MAX_TOKEN_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API until SIGTERM or ctrl-c
    Serve {
        /// Address to bind, IP:PORT (the `server.listen` key)
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Folder of the local database copies (the `data_dir` key)
        #[arg(long, value_name = "DIR")]
        data_dir: Option<String>,
    },
    /// Drive a running server's HTTP API and report throughput, latency and sync cost
    Bench(BenchArgs),
    /// Print a token (an HS256 JWT) for USER, signed with auth.jwt_secret (auth.mode = "jwt")
    Token {
        /// The user id (the token's `sub`)
        user: UserId,
        /// How long the token is valid, in seconds (at most ten years)
        #[arg(long, value_name = "N", default_value_t = 86_400,
            value_parser = clap::value_parser!(u64).range(1..=MAX_TOKEN_TTL_SECS))]
        ttl_secs: u64,
    },
    /// The operator's commands.
    #[command(flatten)]
    Bucket(BucketCommand),
}

/// What `cellar bench` does to a running server (docs/benchmarks.md).
#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    /// The server, e.g. http://127.0.0.1:8080; it must run with auth.mode = "header"
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// Distinct users, PREFIX-0 .. PREFIX-(N-1), taken in turn
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub users: u64,
    /// Requests in flight at once
    #[arg(long, value_name = "C", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    pub concurrency: u64,
    /// Measure for this long [default: 10 s unless --requests is given]
    #[arg(long, value_name = "SECS", conflicts_with = "requests", value_parser = clap::value_parser!(u64).range(1..))]
    pub duration: Option<u64>,
    /// Measure this many requests instead (0: only set the users up)
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Fraction of requests that write one row (the rest read)
    #[arg(long, value_name = "R", default_value_t = 0.05, value_parser = fraction)]
    pub write_ratio: f64,
    /// Grow each user's database to at least this size first: bytes, or with KiB, MiB, GiB
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = byte_size)]
    pub preload_bytes: u64,
    /// Then N one-row UPDATEs per user, one request each, before measuring (so that the
    /// log after the snapshot holds N changes)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub preload_writes: u64,
    /// Prefix of the user ids: a new prefix gives fresh users, the same one reuses them
    #[arg(long, value_name = "PREFIX", default_value = "bench")]
    pub user_prefix: String,
}

/// The operator's commands: they work on the store only, never on `data_dir`.
#[derive(Debug, Subcommand)]
pub enum BucketCommand {
    /// List the users that have a database in the store
    Users,
    /// Show a user's database as the store has it
    Status {
        /// The user id
        user: UserId,
    },
    /// Download a user's database into a file
    Pull {
        /// The user id
        user: UserId,
        /// Download this version from the history instead of the newest
        #[arg(long, value_name = "N")]
        version: Option<Version>,
        /// Where to write it [default: ./USER.sqlite]
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace the file if it exists
        #[arg(long)]
        force: bool,
    },
    /// Upload a SQLite file as a user's new version
    Push {
        /// The user id
        user: UserId,
        /// The SQLite database file
        file: PathBuf,
    },
    /// Check databases in the store: checksum against metadata and PRAGMA integrity_check
    Verify(VerifyTarget),
    /// List a user's restorable versions, newest first
    Versions {
        /// The user id
        user: UserId,
        /// Also tell which instance wrote each version (one metadata read per version)
        #[arg(long)]
        writers: bool,
        /// Show the newest N versions (0: all)
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
    },
    /// Bring back an old version's content as a user's newest version (itself undoable)
    Restore {
        /// The user id
        user: UserId,
        /// Which version to bring back
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Start a new user's database from a copy of a user's
    Fork {
        /// The user id to copy from
        user: UserId,
        /// The new user id; it must not have a database yet
        new_user: UserId,
        /// Copy this version from the history [default: the newest]
        #[arg(long, value_name = "N")]
        version: Option<Version>,
    },
    /// Show how a user's database changed between two versions, row by row
    Diff {
        /// The user id
        user: UserId,
        /// The version to compare from
        from: Version,
        /// The version to compare to
        to: Version,
        /// Rows listed per table (0: counts only) [default: 100]
        #[arg(long, value_name = "N")]
        max_rows: Option<usize>,
    },
    /// Delete the history the retention window (history.*) no longer keeps
    Gc {
        /// The user id [default: every user in the store]
        user: Option<UserId>,
    },
}

/// Which version `restore` brings back: one by number, or the one current at a moment.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// This version
    #[arg(long, value_name = "N")]
    pub version: Option<Version>,
    /// The version current at this moment, in RFC 3339 (2025-01-31T09:30:00Z)
    #[arg(long, value_name = "TIME", value_parser = rfc3339)]
    pub at: Option<DateTime<Utc>>,
}

impl TargetArgs {
    /// The engine's name for the target; clap makes sure exactly one is given.
    pub fn target(&self) -> RestoreTarget {
        match (self.version, self.at) {
            (Some(version), _) => RestoreTarget::Version(version),
            (None, Some(at)) => RestoreTarget::At(at),
            (None, None) => unreachable!("clap requires --version or --at"),
        }
    }
}

/// Which databases `verify` checks: one user's, or everyone's.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct VerifyTarget {
    /// The user id
    pub user: Option<UserId>,
    /// Every user in the store
    #[arg(long)]
    pub all: bool,
}

/// A number from 0 to 1.
fn fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(format!("{text:?} is not a number from 0 to 1")),
    }
}

/// A moment in RFC 3339, with its offset (`2025-01-31T09:30:00Z`, `…+02:00`).
fn rfc3339(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| format!("{text:?} is not an RFC 3339 time, such as 2025-01-31T09:30:00Z"))
}

/// A size in bytes: `1048576`, `512KiB`, `16MiB`, `1GiB`.
fn byte_size(text: &str) -> Result<u64, String> {
    let units = [
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
        ("", 1),
    ];
    let (number, unit) = units
        .iter()
        .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|number| (number, *unit)))
        .unwrap_or((text, 1));
    number
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| {
            format!("{text:?} is not a size; expected bytes, or a number with KiB, MiB or GiB")
        })
}

impl Cli {
    /// The configuration file to read.
    pub fn config_file(&self) -> ConfigFile {
        self.config
            .clone()
            .map_or(ConfigFile::Default, ConfigFile::Named)
    }

    /// The settings given as flags: the strongest source.
    pub fn flags(&self) -> Vec<Flag> {
        let (listen, data_dir) = match &self.command {
            Command::Serve { listen, data_dir } => (listen.as_ref(), data_dir.as_ref()),
            Command::Bench(_) | Command::Token { .. } | Command::Bucket(_) => (None, None),
        };
        [
            ("store.url", "--store-url", self.store_url.as_ref()),
            ("server.listen", "--listen", listen),
            ("data_dir", "--data-dir", data_dir),
        ]
        .into_iter()
        .filter_map(|(key, flag, value)| {
            value.map(|value| Flag {
                key,
                flag,
                value: value.clone(),
            })
        })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn verify_takes_a_user_or_all_but_not_both() {
        assert!(Cli::try_parse_from(["cellar", "verify"]).is_err());
        assert!(Cli::try_parse_from(["cellar", "verify", "alice", "--all"]).is_err());
        assert!(Cli::try_parse_from(["cellar", "verify", "--all"]).is_ok());
    }

    #[test]
    fn restore_takes_a_version_or_a_time_but_not_both() {
        let target = |args: &[&str]| -> Result<RestoreTarget, clap::Error> {
            let cli = Cli::try_parse_from([&["cellar", "restore", "alice"], args].concat())?;
            match cli.command {
                Command::Bucket(BucketCommand::Restore { target, .. }) => Ok(target.target()),
                other => panic!("parsed as {other:?}"),
            }
        };
        assert_eq!(
            target(&["--version", "3"]).unwrap(),
            RestoreTarget::Version(Version::new(3))
        );
        let at = "2025-01-31T10:30:00+01:00"
            .parse::<DateTime<Utc>>()
            .unwrap();
        assert_eq!(
            target(&["--at", "2025-01-31T10:30:00+01:00"]).unwrap(),
            RestoreTarget::At(at)
        );
        assert!(target(&[]).is_err());
        assert!(target(&["--version", "3", "--at", "2025-01-31T09:30:00Z"]).is_err());
        let err = target(&["--at", "yesterday"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("not an RFC 3339 time"), "{err}");
        assert!(target(&["--version", "x"]).is_err());
    }

    #[test]
    fn invalid_user_ids_are_usage_errors() {
        let err = Cli::try_parse_from(["cellar", "status", "../etc"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("invalid user id"), "{err}");
    }

    #[test]
    fn bench_sizes_and_ratios_are_checked() {
        assert_eq!(byte_size("16MiB"), Ok(16 << 20));
        assert_eq!(byte_size("4096"), Ok(4096));
        assert_eq!(byte_size("1 GiB"), Ok(1 << 30));
        assert!(byte_size("16MB").is_err());
        let parse = |args: &[&str]| {
            Cli::try_parse_from([&["cellar", "bench", "--url", "http://h"], args].concat())
        };
        assert!(parse(&["--write-ratio", "1.5"]).is_err());
        assert!(
            parse(&["--duration", "5", "--requests", "9"]).is_err(),
            "a run is bounded by one or the other"
        );
        assert!(parse(&["--users", "0"]).is_err());
        assert!(parse(&["--requests", "0", "--preload-bytes", "64MiB"]).is_ok());
        assert!(parse(&["--preload-bytes", "64MiB", "--preload-writes", "63"]).is_ok());
        assert!(parse(&["--preload-writes", "-1"]).is_err());
    }

    #[test]
    fn flags_name_their_keys() {
        let args = [
            "cellar",
            "serve",
            "--listen",
            "127.0.0.1:1",
            "--data-dir",
            "d",
            "--store-url",
            "memory://",
        ];
        let cli = Cli::try_parse_from(args).unwrap();
        let keys: Vec<_> = cli
            .flags()
            .iter()
            .map(|flag| (flag.key, flag.flag))
            .collect();
        assert_eq!(
            keys,
            [
                ("store.url", "--store-url"),
                ("server.listen", "--listen"),
                ("data_dir", "--data-dir")
            ]
        );
        assert!(
            Cli::try_parse_from(["cellar", "users", "--data-dir", "d"]).is_err(),
            "operator commands never use data_dir"
        );
    }
}
