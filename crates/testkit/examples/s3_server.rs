//! A throw-away S3 server on 127.0.0.1 for manual runs and `scripts/bench.sh`:
//! `cargo run --release -p cellar-testkit --example s3_server [seaweedfs|moto]`.
//!
//! Prints `NAME=VALUE` lines (`endpoint`, `bucket`, `region`, `access_key_id`,
//! `secret_access_key`) and then `ready`, and keeps the server until its standard input
//! closes; the testkit's watchdog kills the server when this process dies, however it dies.

use std::io::Read;

use anyhow::bail;
use cellar_testkit::{S3Kind, S3Server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let kind = match std::env::args().nth(1).as_deref() {
        None | Some("seaweedfs") => S3Kind::SeaweedFs,
        Some("moto") => S3Kind::Moto,
        Some(other) => bail!("unknown S3 server {other:?}; expected seaweedfs or moto"),
    };
    let server = S3Server::start(kind).await?;
    println!("endpoint={}", server.endpoint);
    println!("bucket={}", server.bucket);
    println!("region={}", server.region);
    println!("access_key_id={}", server.access_key_id);
    println!("secret_access_key={}", server.secret_access_key);
    println!("ready");
    tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await??;
    drop(server);
    Ok(())
}
