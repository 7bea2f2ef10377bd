//! `cellar serve`: the HTTP API until SIGTERM or ctrl-c, then a graceful stop (in-flight
//! requests and their uploads finish first).

use std::future::Future;

use anyhow::Context;
use serde::Serialize;
use tokio::net::TcpListener;
use tracing::info;

use super::open_engine;
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
    let engine = open_engine(settings, &settings.data_dir).await?;
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let address = listener.local_addr().context("cannot read the bound address")?;
    info!(store = %settings.store_url, data_dir = %settings.data_dir.display(), "opened the store");
    output.report(&Listening { listening: address.to_string() })?;
    cellar_server::serve(listener, engine, options, shutdown)
        .await
        .context("the server failed")?;
    Ok(Exit::Success)
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
