//! `cellar`: the server and the operator's commands over the bucket, in one binary.
//!
//! # Layout
//!
//! - [`cli`]: the command line (clap), and which flags set which settings.
//! - [`settings`]: `cellar.toml`, then `CELLAR_*` variables, then flags (DESIGN §7); builds
//!   the engine's config, the store and the server's options.
//! - [`commands`]: one module per subcommand (`serve`, `bench`, `token`, `users`, `status`,
//!   `pull`, `push`, `verify`), and per part of history (`versions`, `diff`; `restore` and
//!   `fork`; `gc`). The operator commands work on the store with a scratch cache, never on the
//!   server's `data_dir`, so they are safe beside a running server.
//! - [`output`]: text or JSON on stdout, errors on stderr, progress bars for people only.
//! - [`exit`]: the exit statuses scripts rely on: 0 ok, 1 a check failed or not found,
//!   2 usage or configuration error, 3 object store unavailable.

mod cli;
mod commands;
mod exit;
mod output;
mod settings;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::exit::Exit;
use crate::output::Output;
use crate::settings::{Environment, Settings};

#[tokio::main]
async fn main() -> ExitCode {
    // The keys are listed from the settings' own table, so `--help` cannot miss one.
    let matches = Cli::command()
        .after_long_help(settings::keys_help())
        .get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    init_tracing(&cli.command);
    let output = Output::new(cli.json);
    let exit = match run(cli, output).await {
        Ok(exit) => exit,
        Err(err) => {
            let exit = Exit::of(&err);
            output.error(&err, exit);
            exit
        }
    };
    exit.into()
}

async fn run(cli: Cli, output: Output) -> anyhow::Result<Exit> {
    let (file, flags) = (cli.config_file(), cli.flags());
    let settings = move || {
        Ok(Settings::load(
            &file,
            &Environment::from_process()?,
            &flags,
        )?)
    };
    commands::run(cli.command, settings, output).await
}

/// Logs to stderr, filtered by `RUST_LOG`; by default `info` for the server and `warn` for
/// the one-shot commands, whose results go to stdout.
fn init_tracing(command: &Command) {
    let default = if matches!(command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
