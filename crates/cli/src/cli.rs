//! The command line (DESIGN §8), parsed by clap.

use std::path::PathBuf;

use cellar_engine::UserId;
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
    /// The operator's commands.
    #[command(flatten)]
    Bucket(BucketCommand),
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

impl Cli {
    /// The configuration file to read.
    pub fn config_file(&self) -> ConfigFile {
        self.config.clone().map_or(ConfigFile::Default, ConfigFile::Named)
    }

    /// The settings given as flags: the strongest source.
    pub fn flags(&self) -> Vec<Flag> {
        let (listen, data_dir) = match &self.command {
            Command::Serve { listen, data_dir } => (listen.as_ref(), data_dir.as_ref()),
            Command::Bucket(_) => (None, None),
        };
        [
            ("store.url", "--store-url", self.store_url.as_ref()),
            ("server.listen", "--listen", listen),
            ("data_dir", "--data-dir", data_dir),
        ]
        .into_iter()
        .filter_map(|(key, flag, value)| value.map(|value| Flag { key, flag, value: value.clone() }))
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
    fn invalid_user_ids_are_usage_errors() {
        let err = Cli::try_parse_from(["cellar", "status", "../etc"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("invalid user id"), "{err}");
    }

    #[test]
    fn flags_name_their_keys() {
        let args = ["cellar", "serve", "--listen", "127.0.0.1:1", "--data-dir", "d", "--store-url", "memory://"];
        let cli = Cli::try_parse_from(args).unwrap();
        let keys: Vec<_> = cli.flags().iter().map(|flag| (flag.key, flag.flag)).collect();
        assert_eq!(keys, [("store.url", "--store-url"), ("server.listen", "--listen"), ("data_dir", "--data-dir")]);
        assert!(Cli::try_parse_from(["cellar", "users", "--data-dir", "d"]).is_err(), "operator commands never use data_dir");
    }
}
