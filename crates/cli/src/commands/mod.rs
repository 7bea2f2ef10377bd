//! One module per subcommand. Each takes the resolved settings and returns the exit status;
//! errors carry their cause up to `main`, which prints them.

mod bench;
mod diff;
mod gc;
mod pull;
mod push;
mod restore;
mod serve;
mod status;
mod token;
mod users;
mod verify;
mod versions;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use cellar_engine::{BucketReader, Engine, Layout, Store, UserId};

use crate::cli::{BucketCommand, Command, VerifyTarget};
use crate::exit::Exit;
use crate::output::Output;
use crate::settings::Settings;

/// Runs `command`, loading the settings only for the commands that use them.
pub async fn run(
    command: Command,
    settings: impl FnOnce() -> anyhow::Result<Settings>,
    output: Output,
) -> anyhow::Result<Exit> {
    let command = match command {
        // A client of a running server: the settings are the server's, not its own.
        Command::Bench(args) => return bench::run(args, output).await,
        Command::Serve { .. } => return serve::run(&settings()?, output).await,
        Command::Token { user, ttl_secs } => {
            return token::run(&settings()?, &user, ttl_secs, output);
        }
        Command::Bucket(command) => command,
    };
    let settings = &settings()?;
    let cache = tempfile::tempdir().context("cannot create a scratch folder")?;
    let bucket = Bucket {
        settings,
        cache: cache.path(),
    };
    match command {
        BucketCommand::Users => users::run(&bucket, output).await,
        BucketCommand::Status { user } => status::run(&bucket, &user, output).await,
        BucketCommand::Pull {
            user,
            version,
            output: path,
            force,
        } => {
            let path = path.unwrap_or_else(|| format!("{user}.sqlite").into());
            pull::run(&bucket, &user, version, &path, force, output).await
        }
        BucketCommand::Push { user, file } => push::run(&bucket, &user, &file, output).await,
        BucketCommand::Verify(VerifyTarget { user, .. }) => {
            verify::run(&bucket, user, output).await
        }
        BucketCommand::Versions {
            user,
            writers,
            limit,
        } => versions::run(&bucket, &user, writers, limit, output).await,
        BucketCommand::Restore { user, target } => {
            restore::restore(&bucket, &user, target.target(), output).await
        }
        BucketCommand::Fork {
            user,
            new_user,
            version,
        } => restore::fork(&bucket, &user, &new_user, version, output).await,
        BucketCommand::Diff {
            user,
            from,
            to,
            max_rows,
        } => diff::run(&bucket, &user, (from, to), max_rows, output).await,
        BucketCommand::Gc { user } => gc::run(&bucket, user, output).await,
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
    /// Opens the engine on the store (for `push`, `restore`, `fork` and `gc`: they write).
    async fn open(&self) -> anyhow::Result<Engine> {
        open_engine(self.settings, self.cache).await
    }

    /// Reads the store without an engine: no start-up probe (it writes), so read-only
    /// keys are enough for `users`, `status`, `pull`, `verify`, `versions` and `diff`.
    fn reader(&self) -> anyhow::Result<BucketReader> {
        let layout = Layout::new(self.cache, self.settings.store_url.prefix());
        Ok(BucketReader::new(self.settings.open_store()?, layout))
    }

    /// The store, as the user configured it, for error messages.
    fn url(&self) -> String {
        self.settings.store_url.to_string()
    }

    /// The error for a user without a database in the store (exit status 1).
    fn missing(&self, user: &UserId) -> anyhow::Error {
        anyhow::anyhow!(
            "user {user} has no database in the store {}",
            self.settings.store_url
        )
    }
}

/// Opens the engine on the configured store with `data_dir` as its local folder: probes the
/// store, finishes uploads an earlier run left pending there.
async fn open_engine(settings: &Settings, data_dir: &Path) -> anyhow::Result<Engine> {
    open_engine_on(settings, data_dir, settings.open_store()?).await
}

/// Like [`open_engine`], on `store` (the configured store, wrapped).
async fn open_engine_on(
    settings: &Settings,
    data_dir: &Path,
    store: Arc<dyn Store>,
) -> anyhow::Result<Engine> {
    let mut config = settings.engine_config();
    config.data_dir = data_dir.to_owned();
    Engine::open(config, store)
        .await
        .with_context(|| format!("cannot open the store {}", settings.store_url))
}
