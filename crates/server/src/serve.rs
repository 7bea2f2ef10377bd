//! Running the server: the listen-address check, graceful shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use cellar_engine::Engine;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::options::{AuthMode, ServerOptions};

/// Refuses header auth on an address other hosts can reach, unless the operator said a
/// trusted proxy sets `X-User-Id` (DESIGN §5): there, anyone could claim to be anyone.
pub fn check_listen_address(addr: SocketAddr, auth: &AuthMode) -> Result<(), String> {
    match auth {
        AuthMode::Header {
            trusted_proxy: false,
        } if !addr.ip().to_canonical().is_loopback() => Err(format!(
            "refusing to listen on {addr} with auth.mode = \"header\": any client that reaches this \
             address could name any user in X-User-Id. Listen on 127.0.0.1, use auth.mode = \"jwt\", \
             or set auth.trusted_proxy = true if a proxy in front of Cellar sets X-User-Id itself"
        )),
        _ => Ok(()),
    }
}

/// Serves until `shutdown` resolves; then stops accepting, lets requests in flight finish
/// (with their uploads), closes WebSockets with "going away", and returns.
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let addr = listener.local_addr()?;
    check_listen_address(addr, &options.auth)
        .map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))?;
    let (closing, signals) = Shutdown::new();
    let tasks = signals.tasks().clone();
    let app = crate::routes::build(engine.clone(), options, signals);
    info!(%addr, "cellar is serving");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            info!("shutting down: finishing requests in flight and their uploads");
            closing.send_replace(true);
        })
        .await?;
    tasks.close();
    tasks.wait().await;
    engine.settle().await;
    info!("shut down");
    Ok(())
}

/// What long-lived work (uploads, WebSockets) watches for shutdown.
#[derive(Clone, Debug)]
pub(crate) struct Shutdown {
    closing: watch::Receiver<bool>,
    tasks: TaskTracker,
}

impl Shutdown {
    /// A signal and the sender that raises it.
    fn new() -> (watch::Sender<bool>, Self) {
        let (sender, closing) = watch::channel(false);
        let tasks = TaskTracker::new();
        (sender, Self { closing, tasks })
    }

    /// A signal that never comes (a router served by someone else).
    pub(crate) fn never() -> Self {
        Self::new().1
    }

    /// Resolves once shutdown has begun; never, if nobody can begin it.
    pub(crate) async fn closing(&self) {
        let mut closing = self.closing.clone();
        if closing.wait_for(|closing| *closing).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Work that shutdown waits for.
    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("valid address")
    }

    #[test]
    fn header_auth_is_refused_off_loopback_unless_behind_a_trusted_proxy() {
        let header = AuthMode::Header {
            trusted_proxy: false,
        };
        assert!(check_listen_address(addr("127.0.0.1:8080"), &header).is_ok());
        assert!(check_listen_address(addr("[::1]:8080"), &header).is_ok());
        assert!(check_listen_address(addr("[::ffff:127.0.0.1]:8080"), &header).is_ok());
        let refused = check_listen_address(addr("0.0.0.0:8080"), &header).expect_err("refused");
        assert!(refused.contains("trusted_proxy"), "{refused}");
        assert!(
            check_listen_address(
                addr("10.0.0.5:80"),
                &AuthMode::Header {
                    trusted_proxy: true
                }
            )
            .is_ok()
        );
        let jwt = AuthMode::Jwt { secret: "s".into() };
        assert!(check_listen_address(addr("0.0.0.0:8080"), &jwt).is_ok());
    }
}
