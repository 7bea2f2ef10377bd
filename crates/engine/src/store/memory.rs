//! An in-memory store, for fast unit tests only.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{
    ETag, Fetched, Listed, ObjectInfo, PutCondition, Store, StoreError, check_condition,
    content_etag,
};
use crate::metadata::RawMetadata;

/// An object: what a read answers, its body, and when it was written.
type Stored = (ObjectInfo, Bytes, DateTime<Utc>);

/// Objects in a map behind a mutex; the mutex makes conditional puts atomic.
#[derive(Debug, Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Stored>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Stored>> {
        // A panic while holding the lock cannot leave a half-written entry: every
        // mutation is a single insert or remove.
        self.objects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str, if_none_match: Option<&ETag>) -> Result<Fetched, StoreError> {
        Ok(match self.objects().get(key) {
            None => Fetched::NotFound,
            Some((info, _, _)) if Some(&info.etag) == if_none_match => Fetched::NotModified,
            Some((info, body, _)) => Fetched::Found {
                info: info.clone(),
                body: body.clone(),
            },
        })
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        Ok(self.objects().get(key).map(|(info, _, _)| info.clone()))
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        metadata: RawMetadata,
        condition: PutCondition,
    ) -> Result<ETag, StoreError> {
        let mut objects = self.objects();
        check_condition(
            key,
            objects.get(key).map(|(info, _, _)| &info.etag),
            &condition,
        )?;
        let info = ObjectInfo {
            etag: content_etag(&body),
            size: body.len() as u64,
            metadata,
        };
        let etag = info.etag.clone();
        objects.insert(key.to_owned(), (info, body, Utc::now()));
        Ok(etag)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        Ok(self
            .objects()
            .range(prefix.to_owned()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, (info, _, modified))| Listed {
                key: key.clone(),
                size: info.size,
                modified: *modified,
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.objects().remove(key);
        Ok(())
    }
}
