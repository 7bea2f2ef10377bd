//! A fault-injecting store wrapper: errors, latency, dropped connections and refused
//! preconditions, scripted (for exact tests) or at random rates (deterministic from a seed).
//!
//! "Dropped connection" is the nasty one: the write reaches the bucket but the answer is
//! lost, so the engine cannot know whether it landed. Its cousin for reads is a body cut
//! off half way, after the answer looked fine.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{ByteStream, ETag, Fetched, Listed, ObjectInfo, PutCondition, Store, StoreError};
use crate::metadata::RawMetadata;

/// One injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The request fails without reaching the bucket.
    Error,
    /// The request reaches the bucket and takes effect, but its answer is lost.
    DropAfterApplying,
    /// A write lands, its answer is lost, and the client's automatic retry of it is refused
    /// with 412 (its precondition no longer holds: the first try changed the object).
    RetriedAfterLanding,
    /// A write is refused as if another writer had won (conditional writes only).
    Precondition,
    /// The request is delayed, then proceeds.
    Latency(Duration),
    /// A read is answered, and the connection breaks half way through the body (reads
    /// only; a whole-body `get` fails, a streamed one fails after the first half).
    CutOffBody,
    /// The request reaches the bucket and takes effect, and its answer never comes: the
    /// store stopped answering with the connection open. Only a deadline ends the wait.
    SilentAfterApplying,
}

/// Which store operation a scripted fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// `get`.
    Get,
    /// `head`.
    Head,
    /// `put`.
    Put,
    /// `list`.
    List,
    /// `delete`.
    Delete,
}

/// Random faults: each operation fails with `error_rate`, has its answer dropped with
/// `drop_rate` (writes only), or is delayed by up to `max_latency`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultRates {
    /// Probability that an operation fails before reaching the bucket.
    pub error_rate: f64,
    /// Probability that a write lands but its answer is lost.
    pub drop_rate: f64,
    /// Probability that a write is refused with a failed precondition.
    pub precondition_rate: f64,
    /// Upper bound of a random delay added to every operation.
    pub max_latency: Duration,
}

/// Wraps a store and injects faults into it.
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    script: Mutex<VecDeque<(Operation, Fault)>>,
    random: Mutex<Option<(FaultRates, StdRng)>>,
    injected: AtomicU64,
}

impl<S: Store> FaultyStore<S> {
    /// A wrapper that injects nothing until told to.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            script: Mutex::new(VecDeque::new()),
            random: Mutex::new(None),
            injected: AtomicU64::new(0),
        }
    }

    /// Queues `fault` for the next `operation` (scripted faults go first, in order).
    pub fn inject(&self, operation: Operation, fault: Fault) {
        lock(&self.script).push_back((operation, fault));
    }

    /// Forgets every scripted fault not yet injected.
    pub fn clear_script(&self) {
        lock(&self.script).clear();
    }

    /// Switches random faults on (deterministic for a given `seed`), or off with `None`.
    pub fn set_rates(&self, rates: Option<FaultRates>, seed: u64) {
        *lock(&self.random) = rates.map(|rates| (rates, StdRng::seed_from_u64(seed)));
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn next_fault(&self, operation: Operation) -> Option<Fault> {
        let scripted = {
            let mut script = lock(&self.script);
            let position = script.iter().position(|(op, _)| *op == operation);
            position
                .and_then(|i| script.remove(i))
                .map(|(_, fault)| fault)
        };
        let fault = scripted.or_else(|| self.random_fault(operation));
        if fault.is_some() {
            self.injected.fetch_add(1, Ordering::Relaxed);
        }
        fault
    }

    fn random_fault(&self, operation: Operation) -> Option<Fault> {
        let mut random = lock(&self.random);
        let (rates, rng) = random.as_mut()?;
        let roll: f64 = rng.random();
        let writes = operation == Operation::Put;
        if roll < rates.error_rate {
            return Some(Fault::Error);
        }
        if writes && roll < rates.error_rate + rates.drop_rate {
            return Some(Fault::DropAfterApplying);
        }
        if writes && roll < rates.error_rate + rates.drop_rate + rates.precondition_rate {
            return Some(Fault::Precondition);
        }
        if rates.max_latency > Duration::ZERO {
            let micros = rng.random_range(0..=rates.max_latency.as_micros() as u64);
            return Some(Fault::Latency(Duration::from_micros(micros)));
        }
        None
    }

    /// Applies the fault due before the call; returns what must happen to its answer.
    async fn before(&self, operation: Operation, key: &str) -> Result<After, StoreError> {
        match self.next_fault(operation) {
            None | Some(Fault::Precondition) if operation != Operation::Put => Ok(After::Keep),
            None => Ok(After::Keep),
            Some(Fault::Latency(delay)) => {
                tokio::time::sleep(delay).await;
                Ok(After::Keep)
            }
            Some(Fault::Error) => Err(injected(operation, key, "request failed")),
            Some(Fault::Precondition) => Err(StoreError::PreconditionFailed {
                key: key.to_owned(),
            }),
            Some(Fault::DropAfterApplying) => Ok(After::Drop),
            Some(Fault::CutOffBody) if operation == Operation::Get => Ok(After::CutOff),
            Some(Fault::CutOffBody) => Ok(After::Keep),
            Some(Fault::RetriedAfterLanding) => Ok(After::RefuseRetry),
            Some(Fault::SilentAfterApplying) => Ok(After::Silence),
        }
    }

    /// A read whose body arrives as a stream: the fault due before it, and a body cut off
    /// half way (half of `len`) when that is the fault.
    async fn streamed(
        &self,
        key: &str,
        answer: impl Future<Output = Result<Fetched<ByteStream>, StoreError>>,
        len: impl Fn(&ObjectInfo) -> u64,
    ) -> Result<Fetched<ByteStream>, StoreError> {
        let after = self.before(Operation::Get, key).await?;
        match (after, answer.await) {
            (After::CutOff, Ok(Fetched::Found { info, body })) => Ok(Fetched::Found {
                body: cut_off(body, len(&info) / 2, key),
                info,
            }),
            (after, answer) => answered(after, Operation::Get, key, answer).await,
        }
    }
}

/// What happens to an operation's answer after it ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    Keep,
    Drop,
    RefuseRetry,
    CutOff,
    Silence,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn injected(operation: Operation, key: &str, what: &str) -> StoreError {
    StoreError::Unavailable {
        operation: match operation {
            Operation::Get => "get",
            Operation::Head => "head",
            Operation::Put => "put",
            Operation::List => "list",
            Operation::Delete => "delete",
        },
        key: key.to_owned(),
        message: format!("injected fault: {what}"),
    }
}

/// What the caller sees of `answer` under `after` (nothing, ever, under silence).
async fn answered<T>(
    after: After,
    operation: Operation,
    key: &str,
    answer: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match after {
        After::Keep => answer,
        After::Drop | After::CutOff => Err(injected(
            operation,
            key,
            "connection dropped after the request was sent",
        )),
        After::RefuseRetry => Err(StoreError::PreconditionFailed {
            key: key.to_owned(),
        }),
        After::Silence => std::future::pending().await,
    }
}

/// The first `keep` bytes of `body`, then the connection breaks.
fn cut_off(body: ByteStream, keep: u64, key: &str) -> ByteStream {
    let failure = injected(
        Operation::Get,
        key,
        "connection reset in the middle of the body",
    );
    futures::stream::unfold(
        (Some(body), keep, Some(failure)),
        |(body, left, failure)| async move {
            let Some(mut body) = body.filter(|_| left > 0) else {
                return failure.map(|failure| (Err(failure), (None, 0, None)));
            };
            match body.next().await {
                Some(Ok(piece)) => {
                    let taken =
                        usize::try_from(left).map_or(piece.len(), |left| left.min(piece.len()));
                    let rest = left - taken as u64;
                    Some((Ok(piece.slice(..taken)), (Some(body), rest, failure)))
                }
                Some(Err(err)) => Some((Err(err), (None, 0, None))),
                None => failure.map(|failure| (Err(failure), (None, 0, None))),
            }
        },
    )
    .boxed()
}

/// Runs `call` under the fault plan of `operation`.
macro_rules! faulty {
    ($self:ident, $operation:expr, $key:expr, $call:expr) => {{
        let after = $self.before($operation, $key).await?;
        answered(after, $operation, $key, $call.await).await
    }};
}

#[async_trait]
impl<S: Store> Store for FaultyStore<S> {
    async fn get(&self, key: &str, if_none_match: Option<&ETag>) -> Result<Fetched, StoreError> {
        faulty!(
            self,
            Operation::Get,
            key,
            self.inner.get(key, if_none_match)
        )
    }

    async fn get_stream(
        &self,
        key: &str,
        if_none_match: Option<&ETag>,
    ) -> Result<Fetched<ByteStream>, StoreError> {
        let answer = self.inner.get_stream(key, if_none_match);
        self.streamed(key, answer, |info| info.size).await
    }

    async fn get_range(
        &self,
        key: &str,
        if_none_match: Option<&ETag>,
        if_match: Option<&ETag>,
        range: Range<u64>,
    ) -> Result<Fetched<ByteStream>, StoreError> {
        let len = |info: &ObjectInfo| info.size.min(range.end).saturating_sub(range.start);
        let answer = self
            .inner
            .get_range(key, if_none_match, if_match, range.clone());
        self.streamed(key, answer, len).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        faulty!(self, Operation::Head, key, self.inner.head(key))
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        metadata: RawMetadata,
        condition: PutCondition,
    ) -> Result<ETag, StoreError> {
        faulty!(
            self,
            Operation::Put,
            key,
            self.inner.put(key, body, metadata, condition)
        )
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        faulty!(self, Operation::List, prefix, self.inner.list(prefix))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        faulty!(self, Operation::Delete, key, self.inner.delete(key))
    }
}
