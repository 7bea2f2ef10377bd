//! [`LimitedLink`]: a loopback TCP proxy that paces each connection's
//! downloads, to emulate the per-connection throughput limit of real object
//! stores on `127.0.0.1`, where there is none.
//!
//! AWS documents about 85–90 MB/s per S3 connection and recommends parallel
//! byte-range GETs to go faster; Cloudflare R2 behaves alike. Code that
//! downloads through one connection looks fine against a local server and
//! slow against the real thing; putting this proxy in front of the local
//! server makes the difference show in benchmarks.
//!
//! The link can also be paused: it then emulates a store that stops answering
//! while its connections stay open (a stopped process, a silent network).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Largest piece read from the upstream server and paced at once.
const CHUNK: usize = 64 * 1024;

/// How far a connection's schedule may fall behind the clock, i.e. how much
/// sending time an idle connection banks. Without it, a kept-alive connection
/// idle for a minute could then send a minute's worth unpaced; with none at
/// all, every late timer wake-up (tokio's timer has 1 ms granularity) would be
/// lost for good and the rate would end up well below the configured one.
const BURST: Duration = Duration::from_millis(10);

/// A TCP proxy on `127.0.0.1` that forwards bytes both ways unchanged and
/// paces the server-to-client direction of each connection to a fixed rate.
///
/// Each accepted connection gets its own budget, so `N` parallel connections
/// together get `N` times the rate, as with a real per-connection limit.
/// Requests pass unchanged (uploads are not paced), so SigV4 signatures made
/// for the proxy's `host:port` stay valid: the server checks them against the
/// `Host` header it receives, which the proxy does not touch.
///
/// [`LimitedLink::pause`] holds every byte in either direction until
/// [`LimitedLink::resume`]; connections are still accepted meanwhile.
///
/// Dropping the value stops accepting and closes every proxied connection.
#[derive(Debug)]
pub struct LimitedLink {
    addr: SocketAddr,
    accept: JoinHandle<()>,
    /// True while bytes pass; each direction of each connection watches it.
    open: watch::Sender<bool>,
}

impl LimitedLink {
    /// Listens on a free port of `127.0.0.1` and forwards each connection to
    /// `upstream`, sending the upstream's bytes to the client at
    /// `bytes_per_second` at most.
    ///
    /// Must be called within a tokio runtime. Fails if `bytes_per_second` is
    /// zero or no port can be bound. A connection whose upstream cannot be
    /// reached is closed, as is one that fails later: the client sees what it
    /// would see on a broken network.
    pub async fn start(upstream: SocketAddr, bytes_per_second: u64) -> io::Result<LimitedLink> {
        if bytes_per_second == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a limited link needs a rate above 0 bytes per second",
            ));
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("binding the limited link: {e}")))?;
        let addr = listener.local_addr()?;
        let (open, gate) = watch::channel(true);
        let accept = tokio::spawn(accept_loop(listener, upstream, bytes_per_second, gate));
        Ok(LimitedLink { addr, accept, open })
    }

    /// The address clients connect to instead of the upstream server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding: connections stay open and new ones are accepted, but
    /// no byte passes either way, as with a server whose process is stopped.
    /// Bytes already read are held and delivered on [`LimitedLink::resume`].
    pub fn pause(&self) {
        self.open.send_replace(false);
    }

    /// Forwards again, starting with the bytes held while paused.
    pub fn resume(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for LimitedLink {
    fn drop(&mut self) {
        // The accept task owns the connection tasks' JoinSet, whose drop aborts them.
        self.accept.abort();
    }
}

/// Accepts connections forever, proxying each in its own task.
async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    bytes_per_second: u64,
    gate: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                let gate = gate.clone();
                connections.spawn(async move {
                    // Errors only end this connection; its client sees it closed.
                    let _ = proxy(client, upstream, bytes_per_second, gate).await;
                });
            }
            // Transient (a connection reset before it was accepted, out of
            // file descriptors): wait a little rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
        while connections.try_join_next().is_some() {}
    }
}

/// Forwards one connection until both directions have ended, closing the write
/// side of each socket when the other socket's read side ends (half-close), so
/// that both HTTP keep-alive and closing connections work.
async fn proxy(
    mut client: TcpStream,
    upstream: SocketAddr,
    bytes_per_second: u64,
    gate: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut server = TcpStream::connect(upstream).await?;
    // Small writes (request headers, then body) pass on at once, as they were made.
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let requests = async {
        forward(&mut client_read, &mut server_write, None, gate.clone()).await?;
        server_write.shutdown().await
    };
    let responses = async {
        let pace = Some(bytes_per_second);
        forward(&mut server_read, &mut client_write, pace, gate.clone()).await?;
        client_write.shutdown().await
    };
    tokio::try_join!(requests, responses)?;
    Ok(())
}

/// Copies `from` to `to` until `from` ends, holding each piece while the gate
/// is closed and, with a `pace`, never letting the bytes sent run ahead of
/// `pace` bytes per second times the time elapsed (less idle time beyond
/// [`BURST`]).
async fn forward(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    pace: Option<u64>,
    mut gate: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut buf = vec![0; CHUNK];
    // The instant by which everything sent so far may have been sent.
    let mut paid_until = Instant::now();
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        gate.wait_for(|open| *open)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the link was dropped"))?;
        if let Some(bytes_per_second) = pace {
            let cost = Duration::from_secs_f64(n as f64 / bytes_per_second as f64);
            paid_until = paid_until.max(Instant::now() - BURST) + cost;
            tokio::time::sleep_until(paid_until).await;
        }
        to.write_all(&buf[..n]).await?;
    }
}
