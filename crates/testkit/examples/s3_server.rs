//! A throw-away S3 server on 127.0.0.1 for manual runs and `scripts/bench.sh`:
//! `cargo run --release -p cellar-testkit --example s3_server [seaweedfs|moto] [--link-mib-per-s N]`.
//!
//! Prints `NAME=VALUE` lines (`endpoint`, `bucket`, `region`, `access_key_id`,
//! `secret_access_key`) and then `ready`, and keeps the server until its standard input
//! closes; the testkit's watchdog kills the server when this process dies, however it dies.
//!
//! With `--link-mib-per-s N`, `endpoint` is a [`LimitedLink`] in front of the server that
//! paces each connection's downloads to N MiB/s, emulating the per-connection throughput
//! limit of real object stores (R2, S3); the server's own endpoint is then printed too, as
//! `direct_endpoint`.

use std::io::Read;
use std::net::SocketAddr;

use anyhow::{Context, bail};
use cellar_testkit::{LimitedLink, S3Kind, S3Server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (kind, link_mib_per_s) = match args.as_slice() {
        [] => (None, None),
        [kind] => (Some(kind.as_str()), None),
        [flag, mib] if flag == "--link-mib-per-s" => (None, Some(mib)),
        [kind, flag, mib] if flag == "--link-mib-per-s" => (Some(kind.as_str()), Some(mib)),
        _ => bail!("usage: s3_server [seaweedfs|moto] [--link-mib-per-s N]"),
    };
    let kind = match kind {
        None | Some("seaweedfs") => S3Kind::SeaweedFs,
        Some("moto") => S3Kind::Moto,
        Some(other) => bail!("unknown S3 server {other:?}; expected seaweedfs or moto"),
    };
    let link_bytes_per_s = link_mib_per_s
        .map(|mib| {
            mib.parse::<u64>()
                .ok()
                .filter(|&mib| mib > 0)
                .and_then(|mib| mib.checked_mul(1024 * 1024))
                .with_context(|| {
                    format!("--link-mib-per-s {mib:?}: expected a whole number of MiB/s above 0")
                })
        })
        .transpose()?;
    let server = S3Server::start(kind).await?;
    let link = match link_bytes_per_s {
        Some(rate) => {
            let upstream: SocketAddr = server
                .endpoint
                .strip_prefix("http://")
                .and_then(|host_port| host_port.parse().ok())
                .with_context(|| {
                    format!("server endpoint {} is not http://IP:PORT", server.endpoint)
                })?;
            let link = LimitedLink::start(upstream, rate)
                .await
                .context("starting the limited link")?;
            println!("endpoint=http://{}", link.addr());
            println!("direct_endpoint={}", server.endpoint);
            Some(link)
        }
        None => {
            println!("endpoint={}", server.endpoint);
            None
        }
    };
    println!("bucket={}", server.bucket);
    println!("region={}", server.region);
    println!("access_key_id={}", server.access_key_id);
    println!("secret_access_key={}", server.secret_access_key);
    println!("ready");
    tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await??;
    drop(link);
    drop(server);
    Ok(())
}
