//! `cellar serve`: the HTTP API until SIGTERM or ctrl-c, then a graceful stop (in-flight
//! requests and their uploads finish first).

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use cellar_engine::Store;
use cellar_engine::store::FaultyStore;
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::open_engine_on;
use crate::exit::Exit;
use crate::output::{Output, Report};
use crate::settings::Settings;

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
    let options = settings.server_options()?;
    cellar_server::check_listen_address(settings.listen, &options.auth)
        .map_err(|reason| settings.invalid("server.listen", reason))?;
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
    let engine = open_engine_on(settings, &settings.data_dir, engine_store).await?;
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
    cellar_server::serve(listener, engine, options, shutdown)
        .await
        .context("the server failed")?;
    if let Some(faulty) = &faulty {
        let injected = faulty.injected();
        warn!(target: "cellar::faults", injected, "fault injection: {injected} faults injected");
    }
    Ok(Exit::Success)
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
