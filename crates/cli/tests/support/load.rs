//! Concurrent clients for the reliability suites: each appends unique values to (and
//! sometimes reads) the lists of a few users, recording every answer in a shared ledger.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::api::{Api, Reply};
use super::checks::SharedLedger;

/// No client sends more requests than this in one run, whatever else stops it.
const MAX_REQUESTS_PER_CLIENT: usize = 100_000;
/// Nor does it send any after this long.
const MAX_RUN_TIME: Duration = Duration::from_secs(600);

/// What the clients do.
#[derive(Clone, Debug)]
pub struct Load {
    /// How many clients run at once; client `i` talks to server `i % servers`.
    pub clients: usize,
    /// The users they pick from, at random.
    pub users: Vec<String>,
    /// The share of requests that are reads (the rest are appends).
    pub read_share: f64,
    /// When the clients stop by themselves.
    pub limit: Limit,
    /// Seeds each client's choices (client `i` uses `seed + i`).
    pub seed: u64,
}

/// When the clients of a [`Load`] stop by themselves (they always stop when told to).
#[derive(Clone, Copy, Debug)]
pub enum Limit {
    /// Only when told to.
    None,
    /// After this many requests in all.
    Requests(usize),
    /// After this many appends in all (reads come on top).
    Appends(usize),
}

/// Running clients; [`Clients::stop`] ends them.
pub struct Clients {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Load {
    /// Starts the clients against `servers`. Values come from `values` (unique across
    /// runs that share it). A client stops at its first request without an answer (its
    /// server died), when told to, or at the [`Limit`].
    pub fn start(
        &self,
        servers: &[Api],
        ledger: &SharedLedger,
        values: &Arc<AtomicI64>,
    ) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let tasks = (0..self.clients)
            .map(|client| {
                let client_run = ClientRun {
                    api: servers[client % servers.len()].clone(),
                    load: self.clone(),
                    rng: StdRng::seed_from_u64(self.seed.wrapping_add(client as u64)),
                    ledger: ledger.clone(),
                    values: Arc::clone(values),
                    stop: Arc::clone(&stop),
                    sent: Arc::clone(&sent),
                };
                tokio::spawn(client_run.run())
            })
            .collect();
        Clients { tasks, stop }
    }
}

impl Clients {
    /// Waits until every client has finished by itself (a request count was given).
    pub async fn finish(self) {
        for task in self.tasks {
            task.await.expect("a client panicked");
        }
    }

    /// Tells the clients to stop after their current request, and waits for them.
    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.finish().await;
    }
}

/// One client's state.
struct ClientRun {
    api: Api,
    load: Load,
    rng: StdRng,
    ledger: SharedLedger,
    values: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
}

impl ClientRun {
    async fn run(mut self) {
        let deadline = Instant::now() + MAX_RUN_TIME;
        for _ in 0..MAX_REQUESTS_PER_CLIENT {
            if self.stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                return;
            }
            let read = self.rng.random_bool(self.load.read_share);
            let counted = match self.load.limit {
                Limit::None => None,
                Limit::Requests(limit) => Some(limit),
                Limit::Appends(limit) => (!read).then_some(limit),
            };
            if let Some(limit) = counted
                && self.sent.fetch_add(1, Ordering::Relaxed) >= limit
            {
                return;
            }
            let user = self.load.users[self.rng.random_range(0..self.load.users.len())].clone();
            let answered = if read {
                let started = self.ledger.lock().now();
                let reply = self.api.values(&user).await;
                let answered = !matches!(reply, Reply::NoAnswer(_));
                self.ledger.lock().read(&user, started, reply);
                answered
            } else {
                let value = self.values.fetch_add(1, Ordering::Relaxed);
                let reply = self.api.append(&user, value).await;
                let answered = !matches!(reply, Reply::NoAnswer(_));
                self.ledger.lock().append(&user, value, reply);
                answered
            };
            if !answered {
                return;
            }
        }
    }
}
