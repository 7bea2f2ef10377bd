//! One module per subcommand. Each takes the resolved settings and returns the exit status;
//! errors carry their cause up to `main`, which prints them.

mod pull;
mod push;
mod serve;
mod status;
mod users;
mod verify;

use std::path::Path;

use anyhow::Context;
use cellar_engine::{Engine, UserId};

use crate::cli::{BucketCommand, Command, VerifyTarget};
use crate::exit::Exit;
use crate::output::Output;
use crate::settings::Settings;

/// Runs `command`.
pub async fn run(command: Command, settings: &Settings, output: Output) -> anyhow::Result<Exit> {
    let command = match command {
        Command::Serve { .. } => return serve::run(settings, output).await,
        Command::Bucket(command) => command,
    };
    let cache = tempfile::tempdir().context("cannot create a scratch folder")?;
    let bucket = Bucket { settings, cache: cache.path() };
    match command {
        BucketCommand::Users => users::run(&bucket, output).await,
        BucketCommand::Status { user } => status::run(&bucket, &user, output).await,
        BucketCommand::Pull { user, output: path, force } => {
            let path = path.unwrap_or_else(|| format!("{user}.sqlite").into());
            pull::run(&bucket, &user, &path, force, output).await
        }
        BucketCommand::Push { user, file } => push::run(&bucket, &user, &file, output).await,
        BucketCommand::Verify(VerifyTarget { user, .. }) => verify::run(&bucket, user, output).await,
    }
}

/// What the operator commands work on: the configured store, with a scratch folder as the
/// engine's local cache. They never use `data_dir`: the engine locks nothing across
/// processes, and a download installed there would replace a database (and delete its
/// `-wal`) under a running server's open connection. Like any other instance, a server
/// notices their uploads at its next version check.
struct Bucket<'a> {
    settings: &'a Settings,
    cache: &'a Path,
}

impl Bucket<'_> {
    /// Opens the engine on the store.
    async fn open(&self) -> anyhow::Result<Engine> {
        open_engine(self.settings, self.cache).await
    }

    /// The error for a user without a database in the store (exit status 1).
    fn missing(&self, user: &UserId) -> anyhow::Error {
        anyhow::anyhow!("user {user} has no database in the store {}", self.settings.store_url)
    }
}

/// Opens the engine on the configured store with `data_dir` as its local folder: probes the
/// store, finishes uploads an earlier run left pending there.
async fn open_engine(settings: &Settings, data_dir: &Path) -> anyhow::Result<Engine> {
    let store = settings.open_store()?;
    let mut config = settings.engine_config();
    config.data_dir = data_dir.to_owned();
    Engine::open(config, store)
        .await
        .with_context(|| format!("cannot open the store {}", settings.store_url))
}
