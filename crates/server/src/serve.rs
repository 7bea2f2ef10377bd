//! Running the server: the listen-address check, the accept loop (a bounded number of
//! connections, a deadline on request heads and on blocked writes), graceful shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use cellar_engine::Engine;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::options::{AuthMode, ServerOptions};
use crate::routes;
use crate::state::{HttpMetrics, Shutdown};

/// The first pause after a failed `accept` (out of open files, say); it doubles up to
/// [`MAX_ACCEPT_PAUSE`], so that the loop neither spins nor floods the log.
const FIRST_ACCEPT_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause between two failed `accept`s.
const MAX_ACCEPT_PAUSE: Duration = Duration::from_secs(1);
/// Connections refused because every slot is taken are reported at most this often.
const REFUSALS_REPORTED_EVERY: Duration = Duration::from_secs(10);

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

/// Serves HTTP/1.1 until `shutdown` resolves; then stops accepting, lets requests in flight
/// finish (with their uploads), closes WebSockets with "going away", and returns.
///
/// At most [`ServerOptions::max_connections`] connections are open at once: one more is
/// closed as soon as it is accepted, so idle clients can neither exhaust the open files nor
/// queue ahead of `/healthz`. A connection that sends no complete request head within
/// [`ServerOptions::header_read_timeout`], the first or the next on a keep-alive connection,
/// is closed. HTTP/2 is not served: hyper has no such deadline for an HTTP/2 connection.
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
    let accept = Accept {
        slots: Arc::new(Semaphore::new(
            options.max_connections.min(Semaphore::MAX_PERMITS),
        )),
        max_connections: options.max_connections,
        header_read_timeout: options.header_read_timeout,
        write_stall_timeout: options.write_stall_timeout,
        http: Arc::default(),
        connections: TaskTracker::new(),
        shutdown: signals.clone(),
    };
    let app = routes::build(engine.clone(), options, Arc::clone(&accept.http), signals);
    info!(%addr, max_connections = accept.max_connections,
        header_read_timeout_secs = accept.header_read_timeout.as_secs_f64(), "cellar is serving");
    accept.run(listener, &app, shutdown).await;
    info!("shutting down: finishing requests in flight and their uploads");
    closing.send_replace(true);
    accept.connections.close();
    accept.connections.wait().await;
    tasks.close();
    tasks.wait().await;
    engine.settle().await;
    info!("shut down");
    Ok(())
}

/// The accept loop and what each connection it admits is served with.
struct Accept {
    /// One permit per open connection; see [`Admitted`].
    slots: Arc<Semaphore>,
    max_connections: usize,
    header_read_timeout: Duration,
    write_stall_timeout: Duration,
    /// Where refused connections are counted for `/metrics`.
    http: Arc<HttpMetrics>,
    /// The connections being served, waited for at shutdown.
    connections: TaskTracker,
    shutdown: Shutdown,
}

impl Accept {
    /// Accepts until `stop` resolves, then drops the listener: new connections are refused.
    async fn run(&self, listener: TcpListener, app: &Router, stop: impl Future<Output = ()>) {
        let mut stop = pin!(stop);
        let mut pause = FIRST_ACCEPT_PAUSE;
        let mut refusals = Refusals::default();
        loop {
            let accepted = tokio::select! {
                () = &mut stop => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => {
                    pause = FIRST_ACCEPT_PAUSE;
                    accepted
                }
                // The client left before it was accepted: nothing is wrong here.
                Err(err) if is_connection_error(&err) => {
                    debug!(error = %err, "a connection was lost before it was accepted");
                    continue;
                }
                // Out of open files or memory: retrying at once would spin. Connections
                // in flight close meanwhile, or the header deadline closes them.
                Err(err) => {
                    error!(error = %err, pause_ms = pause.as_millis() as u64,
                        "cannot accept connections; trying again after a pause");
                    tokio::select! {
                        () = &mut stop => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(MAX_ACCEPT_PAUSE);
                    continue;
                }
            };
            // Full: close at once rather than stop accepting, so the kernel's queue holds
            // no idle clients ahead of a health check, and a client learns it now.
            let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                self.http
                    .refused_connections
                    .fetch_add(1, Ordering::Relaxed);
                refusals.count(self.max_connections);
                continue;
            };
            let socket = Admitted::new(stream, slot, self.write_stall_timeout);
            self.connections.spawn(serve_connection(
                socket,
                peer,
                app.clone(),
                self.header_read_timeout,
                self.shutdown.clone(),
            ));
        }
    }
}

/// Serves one connection until it closes: by the client, at the header deadline, or after
/// the request in flight when shutdown begins. An upgraded connection (a WebSocket) lives
/// on in its handler's task, with its slot.
async fn serve_connection(
    socket: Admitted,
    peer: SocketAddr,
    app: Router,
    header_read_timeout: Duration,
    shutdown: Shutdown,
) {
    let mut http = http1::Builder::new();
    // Hyper restarts this deadline whenever a connection waits for a request head, so it
    // also closes keep-alive connections left idle between requests.
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connection = http
        .serve_connection(TokioIo::new(socket), TowerToHyperService::new(app))
        .with_upgrades();
    let mut connection = pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = shutdown.closing() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = served {
        debug!(%peer, error = %err, "connection closed");
    }
}

/// Errors of one connection, not of the listener (as hyper 0.14's `AddrIncoming` told them).
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Counts connections closed because every slot was taken, and warns about them at most
/// every [`REFUSALS_REPORTED_EVERY`].
#[derive(Default)]
struct Refusals {
    unreported: u64,
    reported_at: Option<Instant>,
}

impl Refusals {
    fn count(&mut self, max_connections: usize) {
        self.unreported += 1;
        if self
            .reported_at
            .is_some_and(|at| at.elapsed() < REFUSALS_REPORTED_EVERY)
        {
            return;
        }
        warn!(
            max_connections,
            refused = self.unreported,
            "every connection slot is taken (max_connections): new connections are closed at once"
        );
        self.unreported = 0;
        self.reported_at = Some(Instant::now());
    }
}

/// An accepted socket holding its slot among the `max_connections`. The slot is given back
/// when the socket is closed, which after an upgrade is when the WebSocket ends, not when
/// hyper lets go of the connection.
///
/// A write that stays blocked for [`ServerOptions::write_stall_timeout`] (the client reads
/// nothing while an answer waits) fails, which closes the connection: a client that never
/// reads cannot keep its slot, its answer and the file behind it. Reads have no such bound
/// here: hyper's header deadline covers idle connections, and an idle WebSocket is fine.
struct Admitted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    write_stall_timeout: Duration,
    /// Armed while a write is blocked; disarmed by any progress.
    stalled_since: Option<Pin<Box<Sleep>>>,
}

impl Admitted {
    fn new(stream: TcpStream, slot: OwnedSemaphorePermit, write_stall_timeout: Duration) -> Self {
        Self {
            stream,
            _slot: slot,
            write_stall_timeout,
            stalled_since: None,
        }
    }

    /// Passes a write's outcome on; a write still blocked past the deadline fails.
    fn bound<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled_since = None;
            return polled;
        }
        let timeout = self.write_stall_timeout;
        let stalled = self
            .stalled_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client read nothing for {} s while an answer waited",
                    timeout.as_secs_f64()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.bound(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.bound(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_flush(cx);
        this.bound(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
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
