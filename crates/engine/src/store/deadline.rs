//! A deadline on every store call. A store that stops answering (a paused process, a
//! connection left open and silent) then fails a request as unavailable within the
//! deadline, as a store that refuses connections does, instead of holding it for ever.
//!
//! What the deadline bounds is silence, never work visibly under way:
//! - a call waits at most the deadline for its answer;
//! - a body arriving as a stream waits at most the deadline for each next piece, so a large
//!   download on a slow link still finishes and a stalled one fails;
//! - a write cannot be watched as it goes out, so its deadline grows with its size.
//!
//! A write that ran out of time may still land. It fails as [`StoreError::Unavailable`],
//! like a write whose answer was lost, which the engine already treats as "may have
//! landed": kept pending, and adopted if it did land (`sync::pending`).

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::{ByteStream, ETag, Fetched, Listed, ObjectInfo, PutCondition, Store, StoreError};
use crate::metadata::RawMetadata;

/// The deadline unless one is configured (`store.timeout_ms`): far beyond a healthy store's
/// answers, well within what a client waits for before giving up itself.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// The slowest upload a write is given time for on top of the deadline: 1 MiB/s, about
/// 8 Mbit/s, so a large database still uploads on a modest link.
const SLOWEST_UPLOAD_BYTES_PER_SEC: u64 = 1 << 20;

/// Wraps a store and fails any call that stays unanswered past the deadline.
#[derive(Debug)]
pub struct DeadlineStore<S> {
    inner: S,
    deadline: Duration,
}

impl<S: Store> DeadlineStore<S> {
    /// `inner`, each of whose calls (and each wait for a piece of a body) gets `deadline`.
    pub fn new(inner: S, deadline: Duration) -> Self {
        Self { inner, deadline }
    }

    /// A streamed read: the deadline on its answer, then on each next piece of its body.
    async fn streamed(
        &self,
        key: &str,
        call: impl Future<Output = Result<Fetched<ByteStream>, StoreError>>,
    ) -> Result<Fetched<ByteStream>, StoreError> {
        let fetched = within("get", key, self.deadline, call).await?;
        Ok(fetched.map_body(|body| idle_deadline(body, key.to_owned(), self.deadline)))
    }
}

/// `call`'s answer, or [`StoreError::Unavailable`] once `limit` has passed without one.
async fn within<T>(
    operation: &'static str,
    key: &str,
    limit: Duration,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(silent(operation, key, limit)))
}

fn silent(operation: &'static str, key: &str, limit: Duration) -> StoreError {
    StoreError::unavailable(
        operation,
        key,
        format!("the object store did not answer within {}", InWords(limit)),
    )
}

/// The time a write of `len` bytes is given: the deadline, and one second per MiB.
fn write_limit(deadline: Duration, len: usize) -> Duration {
    let upload = len as u64 / SLOWEST_UPLOAD_BYTES_PER_SEC;
    deadline.saturating_add(Duration::from_secs(upload))
}

/// `body`, failing once a wait for its next piece lasts `limit`. The clock runs only
/// while the reader waits for a piece, not while it is busy with the one before.
fn idle_deadline(body: ByteStream, key: String, limit: Duration) -> ByteStream {
    futures::stream::unfold(Some((body, key)), move |state| async move {
        let (mut body, key) = state?;
        match tokio::time::timeout(limit, body.next()).await {
            Ok(Some(piece)) => Some((piece, Some((body, key)))),
            Ok(None) => None,
            Err(_) => Some((Err(silent("get", &key, limit)), None)),
        }
    })
    .boxed()
}

/// A whole body from its pieces (without a copy when it came in one).
async fn gather(body: ByteStream) -> Result<Bytes, StoreError> {
    let mut pieces: Vec<Bytes> = body.try_collect().await?;
    Ok(if pieces.len() == 1 {
        pieces.swap_remove(0)
    } else {
        Bytes::from(pieces.concat())
    })
}

/// A duration as an operator reads it: "10 s", "1500 ms".
struct InWords(Duration);

impl fmt::Display for InWords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self(duration) = self;
        if duration.subsec_millis() == 0 && duration.as_secs() > 0 {
            write!(f, "{} s", duration.as_secs())
        } else {
            write!(f, "{} ms", duration.as_millis())
        }
    }
}

#[async_trait]
impl<S: Store> Store for DeadlineStore<S> {
    /// A streamed read gathered: the same idle deadline on its body, so that a large
    /// object on a slow link still comes whole.
    async fn get(&self, key: &str, if_none_match: Option<&ETag>) -> Result<Fetched, StoreError> {
        Ok(match self.get_stream(key, if_none_match).await? {
            Fetched::Found { info, body } => Fetched::Found {
                info,
                body: gather(body).await?,
            },
            Fetched::NotFound => Fetched::NotFound,
            Fetched::NotModified => Fetched::NotModified,
        })
    }

    async fn get_stream(
        &self,
        key: &str,
        if_none_match: Option<&ETag>,
    ) -> Result<Fetched<ByteStream>, StoreError> {
        self.streamed(key, self.inner.get_stream(key, if_none_match))
            .await
    }

    async fn get_range(
        &self,
        key: &str,
        if_none_match: Option<&ETag>,
        if_match: Option<&ETag>,
        range: Range<u64>,
    ) -> Result<Fetched<ByteStream>, StoreError> {
        let call = self.inner.get_range(key, if_none_match, if_match, range);
        self.streamed(key, call).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        within("head", key, self.deadline, self.inner.head(key)).await
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        metadata: RawMetadata,
        condition: PutCondition,
    ) -> Result<ETag, StoreError> {
        let limit = write_limit(self.deadline, body.len());
        let call = self.inner.put(key, body, metadata, condition);
        within("put", key, limit, call).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        within("list", prefix, self.deadline, self.inner.list(prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        within("delete", key, self.deadline, self.inner.delete(key)).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::store::MemoryStore;

    const DEADLINE: Duration = Duration::from_millis(100);

    /// A store that never answers: a paused process with its connections still open.
    #[derive(Debug)]
    struct Silent;

    #[async_trait]
    impl Store for Silent {
        async fn get(&self, _: &str, _: Option<&ETag>) -> Result<Fetched, StoreError> {
            std::future::pending().await
        }
        async fn head(&self, _: &str) -> Result<Option<ObjectInfo>, StoreError> {
            std::future::pending().await
        }
        async fn put(
            &self,
            _: &str,
            _: Bytes,
            _: RawMetadata,
            _: PutCondition,
        ) -> Result<ETag, StoreError> {
            std::future::pending().await
        }
        async fn list(&self, _: &str) -> Result<Vec<Listed>, StoreError> {
            std::future::pending().await
        }
        async fn delete(&self, _: &str) -> Result<(), StoreError> {
            std::future::pending().await
        }
    }

    /// A store that answers at once with a body of `pieces` pieces, each after `gap`, then
    /// (when `stalls`) waits for ever instead of ending.
    #[derive(Debug)]
    struct Trickle {
        pieces: usize,
        gap: Duration,
        stalls: bool,
    }

    impl Trickle {
        fn body(&self) -> ByteStream {
            let gap = self.gap;
            let pieces = futures::stream::iter(0..self.pieces).then(move |i| async move {
                tokio::time::sleep(gap).await;
                Ok(Bytes::from(vec![i as u8; 3]))
            });
            let stall = futures::stream::once(std::future::pending::<Result<Bytes, StoreError>>());
            if self.stalls {
                pieces.chain(stall).boxed()
            } else {
                pieces.boxed()
            }
        }
    }

    #[async_trait]
    impl Store for Trickle {
        async fn get(&self, key: &str, _: Option<&ETag>) -> Result<Fetched, StoreError> {
            Err(StoreError::unavailable(
                "get",
                key,
                "whole reads are not used",
            ))
        }
        async fn get_stream(
            &self,
            _: &str,
            _: Option<&ETag>,
        ) -> Result<Fetched<ByteStream>, StoreError> {
            Ok(Fetched::Found {
                info: ObjectInfo {
                    etag: ETag("e".into()),
                    size: 3 * self.pieces as u64,
                    metadata: RawMetadata::new(),
                },
                body: self.body(),
            })
        }
        async fn head(&self, _: &str) -> Result<Option<ObjectInfo>, StoreError> {
            Ok(None)
        }
        async fn put(
            &self,
            _: &str,
            _: Bytes,
            _: RawMetadata,
            _: PutCondition,
        ) -> Result<ETag, StoreError> {
            Ok(ETag("e".into()))
        }
        async fn list(&self, _: &str) -> Result<Vec<Listed>, StoreError> {
            Ok(Vec::new())
        }
        async fn delete(&self, _: &str) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn assert_timed_out<T>(answer: Result<T, StoreError>, operation: &str, started: Instant) {
        let elapsed = started.elapsed();
        match answer {
            Err(StoreError::Unavailable {
                operation: op,
                message,
                ..
            }) => {
                assert_eq!(op, operation);
                assert_eq!(message, "the object store did not answer within 100 ms");
            }
            Err(other) => panic!("{operation}: expected unavailable, got {other:?}"),
            Ok(_) => panic!("{operation}: a store that never answers answered"),
        }
        assert!(
            elapsed >= DEADLINE && elapsed < DEADLINE * 10,
            "{operation} failed after {elapsed:?}"
        );
    }

    #[tokio::test]
    async fn every_call_to_a_store_that_never_answers_fails_as_unavailable_at_the_deadline() {
        let store = DeadlineStore::new(Silent, DEADLINE);
        let body = || Bytes::from_static(b"x");
        let started = Instant::now();
        assert_timed_out(store.get("k", None).await, "get", started);
        let started = Instant::now();
        assert_timed_out(store.get_stream("k", None).await, "get", started);
        let started = Instant::now();
        assert_timed_out(store.get_range("k", None, None, 0..1).await, "get", started);
        let started = Instant::now();
        assert_timed_out(store.head("k").await, "head", started);
        let started = Instant::now();
        let put = store.put("k", body(), RawMetadata::new(), PutCondition::Create);
        assert_timed_out(put.await, "put", started);
        let started = Instant::now();
        assert_timed_out(store.list("k").await, "list", started);
        let started = Instant::now();
        assert_timed_out(store.delete("k").await, "delete", started);
    }

    /// Six pieces 50 ms apart take three times the deadline, and still come, whether
    /// streamed or gathered.
    #[tokio::test]
    async fn a_slow_but_steady_body_finishes_past_the_deadline() {
        let store = DeadlineStore::new(
            Trickle {
                pieces: 6,
                gap: DEADLINE / 2,
                stalls: false,
            },
            DEADLINE,
        );
        let started = Instant::now();
        let Fetched::Found { body, .. } = store.get_stream("k", None).await.unwrap() else {
            panic!("expected the object");
        };
        let pieces: Vec<Bytes> = body.try_collect().await.unwrap();
        assert_eq!(pieces.len(), 6);
        assert!(started.elapsed() > DEADLINE * 2, "{:?}", started.elapsed());
        let Fetched::Found { body, .. } = store.get("k", None).await.unwrap() else {
            panic!("expected the object");
        };
        assert_eq!(body.len(), 18);
        assert_eq!(&body[15..], &[5, 5, 5]);
    }

    #[tokio::test]
    async fn a_body_that_stalls_fails_once_the_wait_for_its_next_piece_reaches_the_deadline() {
        let store = DeadlineStore::new(
            Trickle {
                pieces: 2,
                gap: Duration::ZERO,
                stalls: true,
            },
            DEADLINE,
        );
        let Fetched::Found { mut body, .. } = store.get_stream("k", None).await.unwrap() else {
            panic!("expected the object");
        };
        assert!(body.next().await.unwrap().is_ok());
        assert!(body.next().await.unwrap().is_ok());
        let started = Instant::now();
        let stalled = body.next().await.unwrap();
        assert_timed_out(stalled, "get", started);
        assert!(
            body.next().await.is_none(),
            "the stream ends after its failure"
        );
        let started = Instant::now();
        assert_timed_out(store.get("k", None).await, "get", started);
    }

    #[test]
    fn a_write_gets_the_deadline_and_a_second_per_mib_it_carries() {
        let deadline = Duration::from_secs(10);
        assert_eq!(write_limit(deadline, 0), deadline);
        assert_eq!(write_limit(deadline, 300 << 10), deadline);
        assert_eq!(write_limit(deadline, 64 << 20), Duration::from_secs(74));
    }

    #[test]
    fn durations_read_as_an_operator_writes_them() {
        assert_eq!(InWords(Duration::from_secs(10)).to_string(), "10 s");
        assert_eq!(InWords(Duration::from_millis(1500)).to_string(), "1500 ms");
        assert_eq!(InWords(Duration::from_millis(5)).to_string(), "5 ms");
    }

    /// A store that answers in time is unchanged by the wrapper.
    #[tokio::test]
    async fn a_store_that_answers_keeps_the_contract_through_the_wrapper() {
        let store = DeadlineStore::new(MemoryStore::new(), DEFAULT_DEADLINE);
        crate::store::tests::contract(&store, "deadline").await;
    }
}
