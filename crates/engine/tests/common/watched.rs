//! [`Watched`]: a store wrapper that shows what the engine asks of the store.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cellar_engine::store::{
    ByteStream, ETag, Fetched, Listed, ObjectInfo, PutCondition, StoreError,
};
use cellar_engine::{RawMetadata, Store};
use futures::StreamExt;
use futures::future::BoxFuture;

/// A store that counts the calls made of it, records its ranged reads (how many, how
/// many at once), and can run a hook before every read of a later part (to change the
/// object under a download).
#[derive(Debug)]
pub struct Watched {
    pub inner: Arc<dyn Store>,
    calls: Mutex<BTreeMap<&'static str, usize>>,
    ranges: Mutex<Vec<Range<u64>>>,
    in_flight: Arc<AtomicUsize>,
    pub most_at_once: Arc<AtomicUsize>,
    pub before_later_parts: std::sync::Mutex<Option<Hook>>,
    /// Answers every ranged read as a store without ranges would.
    refuses_ranges: bool,
}

/// Makes the work to run before a read of a later part, once per read.
pub struct Hook(pub Box<dyn FnMut() -> BoxFuture<'static, ()> + Send>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

impl Watched {
    pub fn new(inner: Arc<dyn Store>, refuses_ranges: bool) -> Arc<Self> {
        Arc::new(Self {
            inner,
            calls: Mutex::new(BTreeMap::new()),
            ranges: Mutex::new(Vec::new()),
            in_flight: Arc::new(AtomicUsize::new(0)),
            most_at_once: Arc::new(AtomicUsize::new(0)),
            before_later_parts: std::sync::Mutex::new(None),
            refuses_ranges,
        })
    }

    pub fn ranges(&self) -> Vec<Range<u64>> {
        self.ranges.lock().unwrap().clone()
    }

    /// The calls made since the last [`Watched::forget`], by method.
    pub fn calls(&self) -> BTreeMap<&'static str, usize> {
        self.calls.lock().unwrap().clone()
    }

    fn count(&self, method: &'static str) {
        *self.calls.lock().unwrap().entry(method).or_default() += 1;
    }

    /// Forgets the calls so far (the start-up probe's).
    pub fn forget(&self) {
        self.calls.lock().unwrap().clear();
        self.ranges.lock().unwrap().clear();
        self.most_at_once.store(0, Ordering::SeqCst);
    }
}

/// Counts a ranged read as in flight until its body is dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Store for Watched {
    async fn get(&self, key: &str, if_none_match: Option<&ETag>) -> Result<Fetched, StoreError> {
        self.count("get");
        self.inner.get(key, if_none_match).await
    }
    async fn get_stream(
        &self,
        key: &str,
        if_none_match: Option<&ETag>,
    ) -> Result<Fetched<ByteStream>, StoreError> {
        self.count("get_stream");
        self.inner.get_stream(key, if_none_match).await
    }
    async fn get_range(
        &self,
        key: &str,
        if_none_match: Option<&ETag>,
        if_match: Option<&ETag>,
        range: Range<u64>,
    ) -> Result<Fetched<ByteStream>, StoreError> {
        self.count("get_range");
        self.ranges.lock().unwrap().push(range.clone());
        if self.refuses_ranges {
            return Err(StoreError::unavailable(
                "get",
                key,
                "206 expected, 200 received: this store ignores Range",
            ));
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        let guard = InFlight(Arc::clone(&self.in_flight));
        if if_match.is_some() {
            let hook = self
                .before_later_parts
                .lock()
                .unwrap()
                .as_mut()
                .map(|Hook(make)| make());
            if let Some(hook) = hook {
                hook.await;
            }
            // Long enough for the other parts to be asked for meanwhile.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let answer = self
            .inner
            .get_range(key, if_none_match, if_match, range)
            .await?;
        Ok(match answer {
            Fetched::Found { info, body } => Fetched::Found {
                info,
                body: body
                    .map(move |piece| {
                        let _held = &guard;
                        piece
                    })
                    .boxed(),
            },
            other => other,
        })
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        self.count("head");
        self.inner.head(key).await
    }
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        metadata: RawMetadata,
        condition: PutCondition,
    ) -> Result<ETag, StoreError> {
        self.count("put");
        self.inner.put(key, body, metadata, condition).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        self.count("list");
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.count("delete");
        self.inner.delete(key).await
    }
}
