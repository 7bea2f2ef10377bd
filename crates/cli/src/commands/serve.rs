//! `cellar serve`: the HTTP API until SIGTERM or ctrl-c, then a graceful stop (in-flight
//! requests and their uploads finish first).

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use cellar_engine::Store;
use cellar_engine::store::FaultyStore;
use cellar_server::AuthMode;
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::exit::Exit;
use crate::output::{Output, Report};
use crate::settings::{ConfigError, Settings, Source};

/// Where the server listens, printed once it does.
#[derive(Serialize)]
struct Listening {
    listening: String,
}

impl Report for Listening {
    fn to_text(&self) -> String {
        format!("cellar listening on http://{}", self.listening)
    }
}

/// Serves until a shutdown signal, then returns once in-flight requests have finished.
pub async fn run(settings: &Settings, output: Output) -> anyhow::Result<Exit> {
    let mut options = settings.server_options()?;
    cellar_server::check_listen_address(settings.listen, &options.auth)
        .map_err(|reason| settings.invalid("server.listen", reason))?;
    // Before the engine opens any file: the cache it opens with must fit.
    let budget = budget_open_files(settings)?;
    options.max_connections = budget.max_connections;
    // Installed before the address is announced: a signal sent as soon as it is known is
    // a request to stop, never the default "terminate at once".
    let shutdown = shutdown_signal().context("cannot install the signal handlers")?;
    let store = settings.open_store()?;
    let faulty = settings
        .faults
        .injected()
        .map(|_| Arc::new(FaultyStore::new(store.clone())));
    let engine_store = faulty
        .clone()
        .map_or(store, |faulty| faulty as Arc<dyn Store>);
    let engine = open_engine(settings, engine_store, budget.cache_capacity).await?;
    if let Some(faulty) = &faulty {
        inject_faults(settings, faulty);
    }
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let address = listener
        .local_addr()
        .context("cannot read the bound address")?;
    info!(store = %settings.store_url, data_dir = %settings.data_dir.display(), "opened the store");
    if !settings.version_check {
        warn!(source = %settings.source_of("sync.version_check"),
            "sync.version_check is off: for benchmarks only; uploads by other instances and \
             operator commands are not seen");
    }
    output.report(&Listening {
        listening: address.to_string(),
    })?;
    if options.demo {
        announce_demo(address, &options.auth);
    }
    cellar_server::serve(listener, engine, options, shutdown)
        .await
        .context("the server failed")?;
    if let Some(faulty) = &faulty {
        let injected = faulty.injected();
        warn!(target: "cellar::faults", injected, "fault injection: {injected} faults injected");
    }
    Ok(Exit::Success)
}

/// Says where the demo app is and how to open it: with a token, so only in JWT mode (a
/// browser's WebSocket cannot send `X-User-Id`).
fn announce_demo(address: std::net::SocketAddr, auth: &AuthMode) {
    match auth {
        AuthMode::Jwt { .. } => info!(
            "the demo app is at http://{address}/demo#token=TOKEN (make a token with: cellar token USER)"
        ),
        AuthMode::Header { .. } => warn!(
            "server.demo is on, but the demo app signs in with a token: set auth.mode = \"jwt\" \
             and auth.jwt_secret to use it"
        ),
    }
}

/// Opens the engine on `store` with `data_dir` (see `super::open_engine_on`), keeping at
/// most `cache_capacity` databases open: what fits under the open-files limit.
async fn open_engine(
    settings: &Settings,
    store: Arc<dyn Store>,
    cache_capacity: usize,
) -> anyhow::Result<cellar_engine::Engine> {
    let mut config = settings.engine_config();
    config.cache_capacity = cache_capacity;
    cellar_engine::Engine::open(config, store)
        .await
        .with_context(|| format!("cannot open the store {}", settings.store_url))
}

/// Open files one cached database may hold: its file, and its rollback journal (or a staged
/// download, or the file read for its upload) while it is written.
const FDS_PER_DATABASE: u64 = 2;
/// Open files one connection may hold: its socket, and the store connection or the file
/// its request uses.
const FDS_PER_CONNECTION: u64 = 2;
/// Open files for everything else: standard streams, the listener, the runtime, the store
/// client's idle connections, downloads' temporary files.
const FDS_RESERVED: u64 = 64;
/// The smallest database cache the budget shrinks to; below it most requests would reopen
/// their database.
const MIN_CACHE_CAPACITY: usize = 64;

/// How many databases stay open and how many connections are served at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FdBudget {
    cache_capacity: usize,
    max_connections: usize,
}

impl FdBudget {
    /// The open files this budget may take at most.
    fn files(self) -> u64 {
        FDS_PER_DATABASE
            .saturating_mul(self.cache_capacity as u64)
            .saturating_add(FDS_PER_CONNECTION.saturating_mul(self.max_connections as u64))
            .saturating_add(FDS_RESERVED)
    }

    /// `wanted`, or what fits of it under `limit` open files. Defaults shrink, with the
    /// cache and the connections in proportion; a `max_connections` the operator chose
    /// never does (only the cache shrinks then), and the cache never below
    /// [`MIN_CACHE_CAPACITY`]. The error says which numbers do not fit.
    fn fit(wanted: FdBudget, connections_chosen: bool, limit: u64) -> Result<FdBudget, String> {
        if wanted.files() <= limit {
            return Ok(wanted);
        }
        let spare = limit.saturating_sub(FDS_RESERVED);
        let min_cache_files = FDS_PER_DATABASE * MIN_CACHE_CAPACITY as u64;
        let fitted = if connections_chosen {
            let connection_files = FDS_PER_CONNECTION.saturating_mul(wanted.max_connections as u64);
            FdBudget {
                cache_capacity: (spare.saturating_sub(connection_files) / FDS_PER_DATABASE)
                    as usize,
                ..wanted
            }
        } else {
            let wanted_files = wanted.files() - FDS_RESERVED;
            let share =
                |count: usize| (count as u128 * spare as u128 / wanted_files as u128) as usize;
            FdBudget {
                cache_capacity: share(wanted.cache_capacity),
                max_connections: share(wanted.max_connections),
            }
        };
        if fitted.cache_capacity >= MIN_CACHE_CAPACITY && fitted.max_connections >= 1 {
            return Ok(fitted);
        }
        let needed = FdBudget {
            cache_capacity: MIN_CACHE_CAPACITY,
            max_connections: fitted.max_connections.max(1),
        }
        .files();
        let advice = match spare.saturating_sub(min_cache_files) / FDS_PER_CONNECTION {
            fits @ 1.. => {
                format!("set server.max_connections to at most {fits}, or raise the hard limit")
            }
            _ => "raise the hard limit".to_owned(),
        };
        Err(format!(
            "{} connections need {FDS_PER_CONNECTION} open files each, a database cache of at \
             least {MIN_CACHE_CAPACITY} needs {FDS_PER_DATABASE} each, and {FDS_RESERVED} are \
             reserved: {needed} open files, more than the limit of {limit} (RLIMIT_NOFILE). To \
             fit, {advice} (ulimit -Hn; LimitNOFILE= in a systemd unit)",
            fitted.max_connections.max(1)
        ))
    }
}

/// Raises the open-files limit as far as it goes, then fits the database cache and
/// `server.max_connections` under it, so that the server never runs out of open files
/// (which stops it accepting connections, `/healthz` included).
fn budget_open_files(settings: &Settings) -> Result<FdBudget, ConfigError> {
    let wanted = FdBudget {
        cache_capacity: settings.engine_config().cache_capacity,
        max_connections: settings.max_connections,
    };
    let Some(limit) = raise_open_files_limit() else {
        return Ok(wanted);
    };
    let chosen = settings.source_of("server.max_connections") != Source::Default;
    let fitted = FdBudget::fit(wanted, chosen, limit)
        .map_err(|reason| settings.invalid("server.max_connections", reason))?;
    if fitted != wanted {
        warn!(
            limit,
            cache_capacity = fitted.cache_capacity,
            max_connections = fitted.max_connections,
            default_cache_capacity = wanted.cache_capacity,
            default_max_connections = wanted.max_connections,
            "the open-files limit cannot hold the defaults: serving with a smaller database cache \
             and the connections that fit; raise the hard limit (ulimit -Hn; LimitNOFILE= in a \
             systemd unit) to keep the defaults"
        );
    }
    info!(
        limit,
        budgeted = fitted.files(),
        cache_capacity = fitted.cache_capacity,
        max_connections = fitted.max_connections,
        "open files budgeted"
    );
    Ok(fitted)
}

/// Where macOS caps the soft open-files limit (`OPEN_MAX`) when the hard one is unlimited.
#[cfg(unix)]
const OPEN_MAX: u64 = 10_240;

/// Raises the soft open-files limit (RLIMIT_NOFILE, often 1 024) to the hard one, logging
/// both, and returns the limit now in force; `None` if it cannot be read.
#[cfg(unix)]
fn raise_open_files_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(err) => {
            warn!(error = %err, "cannot read the open-files limit (RLIMIT_NOFILE); the database \
                cache and server.max_connections are not checked against it");
            return None;
        }
    };
    let mut refused = None;
    for target in [hard, hard.min(OPEN_MAX)] {
        if target <= soft {
            break;
        }
        match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
            Ok(()) => {
                info!(
                    old_soft = soft,
                    new_soft = target,
                    hard,
                    "raised the soft open-files limit (RLIMIT_NOFILE)"
                );
                return Some(target);
            }
            Err(err) => refused = Some(err),
        }
    }
    match refused {
        Some(err) => warn!(soft, hard, error = %err,
            "cannot raise the soft open-files limit (RLIMIT_NOFILE); keeping it"),
        None => info!(
            soft,
            hard, "the soft open-files limit (RLIMIT_NOFILE) is already the hard limit"
        ),
    }
    Some(soft)
}

/// Elsewhere the limit is not known: nothing to raise or check.
#[cfg(not(unix))]
fn raise_open_files_limit() -> Option<u64> {
    None
}

/// Switches the `faults.*` settings on, once the store is open (the start-up probe and the
/// finishing of pending uploads run without them), and says so loudly.
fn inject_faults(settings: &Settings, faulty: &FaultyStore<Arc<dyn Store>>) {
    let faults = settings.faults;
    let Some(rates) = faults.injected() else {
        return;
    };
    faulty.set_rates(Some(rates), faults.seed);
    warn!(target: "cellar::faults", error_rate = rates.error_rate, drop_rate = rates.drop_rate,
        latency_ms = rates.max_latency.as_millis() as u64, seed = faults.seed,
        "FAULT INJECTION IS ON: requests to the store fail on purpose (faults.*); \
         for demos and tests only, never in production");
}

/// A future that resolves at the first SIGTERM or ctrl-c (SIGINT). The handlers are
/// registered now, not when the future is first polled.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => info!("SIGTERM received"),
            _ = interrupt.recv() => info!("ctrl-c received"),
        }
    })
}

/// A future that resolves at the first ctrl-c.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            info!("ctrl-c received");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: FdBudget = FdBudget {
        cache_capacity: 1024,
        max_connections: 1024,
    };

    #[test]
    fn the_defaults_fit_a_raised_limit_unchanged() {
        assert_eq!(DEFAULTS.files(), 4160);
        assert_eq!(FdBudget::fit(DEFAULTS, false, 524_288), Ok(DEFAULTS));
        assert_eq!(FdBudget::fit(DEFAULTS, true, 4160), Ok(DEFAULTS));
    }

    #[test]
    fn the_defaults_shrink_in_proportion_under_a_hard_limit_of_1024() {
        let fitted = FdBudget::fit(DEFAULTS, false, 1024).expect("fits");
        assert_eq!(
            fitted,
            FdBudget {
                cache_capacity: 240,
                max_connections: 240
            }
        );
        assert!(fitted.files() <= 1024);
    }

    #[test]
    fn chosen_connections_keep_their_number_and_the_cache_gives_way() {
        let wanted = FdBudget {
            max_connections: 256,
            ..DEFAULTS
        };
        let fitted = FdBudget::fit(wanted, true, 1024).expect("fits");
        assert_eq!(
            fitted,
            FdBudget {
                cache_capacity: 224,
                max_connections: 256
            }
        );
        assert_eq!(fitted.files(), 1024);
    }

    #[test]
    fn chosen_connections_that_do_not_fit_are_refused_with_the_numbers() {
        let wanted = FdBudget {
            max_connections: 2000,
            ..DEFAULTS
        };
        let refused = FdBudget::fit(wanted, true, 1024).expect_err("does not fit");
        for figure in [
            "2000 connections",
            "at least 64",
            "4192 open files",
            "limit of 1024",
            "server.max_connections to at most 416",
        ] {
            assert!(refused.contains(figure), "{figure:?} in {refused}");
        }
        let fits = FdBudget {
            max_connections: 416,
            ..DEFAULTS
        };
        assert!(FdBudget::fit(fits, true, 1024).is_ok());
    }

    #[test]
    fn a_limit_too_low_even_for_shrunk_defaults_is_refused() {
        let refused = FdBudget::fit(DEFAULTS, false, 200).expect_err("does not fit");
        assert!(refused.contains("limit of 200"), "{refused}");
        assert!(
            refused.contains("server.max_connections to at most 4, or raise the hard limit"),
            "{refused}"
        );
        let refused = FdBudget::fit(DEFAULTS, false, 150).expect_err("does not fit");
        assert!(
            refused.contains("To fit, raise the hard limit"),
            "{refused}"
        );
    }

    #[test]
    fn absurd_numbers_are_refused_without_overflowing() {
        let wanted = FdBudget {
            max_connections: usize::MAX,
            ..DEFAULTS
        };
        assert_eq!(wanted.files(), u64::MAX);
        assert!(FdBudget::fit(wanted, true, 524_288).is_err());
    }
}
