//! S3-compatible stores (R2, S3, MinIO, Garage, SeaweedFS) over the `object_store` crate.
//!
//! Metadata travels as `Attribute::Metadata` (`x-amz-meta-*`). `ObjectStore::head` does
//! not return it, so [`Store::head`] is a `GET` with `head: true`. Conditions map to
//! `PutMode::Create` (`If-None-Match: *`) and `PutMode::Update` (`If-Match`).

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, ClientOptions, GetOptions, GetRange, GetResult,
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig, UpdateVersion,
};
use tracing::warn;

use super::{
    ByteStream, DEFAULT_DEADLINE, ETag, Fetched, Listed, ObjectInfo, PutCondition, Store,
    StoreError,
};
use crate::metadata::RawMetadata;

/// How long the client waits for a connection at most (less if the deadline is short).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where an S3-compatible bucket is and how to reach it. Credentials are never part of
/// the settings: they come from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
#[derive(Clone, Debug, Default)]
pub struct S3Settings {
    /// The bucket name.
    pub bucket: String,
    /// Endpoint URL for non-AWS stores (R2: `https://<account>.r2.cloudflarestorage.com`).
    pub endpoint: Option<String>,
    /// Region (`auto` for R2).
    pub region: Option<String>,
    /// Allow plain `http://` endpoints (local MinIO or SeaweedFS).
    pub allow_http: bool,
}

/// A bucket reached through `object_store`'s S3 client.
#[derive(Debug)]
pub struct S3Store {
    inner: Arc<dyn ObjectStore>,
}

impl S3Store {
    /// Builds the client for the default deadline ([`DEFAULT_DEADLINE`]); reads
    /// credentials from the environment.
    pub fn new(settings: &S3Settings) -> Result<Self, StoreError> {
        Self::with_deadline(settings, DEFAULT_DEADLINE)
    }

    /// Builds the client for calls that a [`DeadlineStore`](super::DeadlineStore) cuts
    /// off at `deadline`; reads credentials from the environment.
    ///
    /// The client's own retries fit in the deadline: it starts no new try after half of it,
    /// so that its last try still has time to answer, and the caller learns what the store
    /// said (a 503, a refused connection) rather than only that time ran out.
    pub fn with_deadline(settings: &S3Settings, deadline: Duration) -> Result<Self, StoreError> {
        let retry_budget = deadline / 2;
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_retry(RetryConfig {
                max_retries: 4,
                retry_timeout: retry_budget,
                ..RetryConfig::default()
            })
            .with_client_options(
                // Client options hold `allow_http` too: set it here, not on the builder,
                // or these options would reset it. No read timeout: `reqwest` counts it
                // from the start of a request, upload included, which would cut off large
                // writes on a slow link.
                ClientOptions::new()
                    .with_allow_http(settings.allow_http)
                    .with_connect_timeout(CONNECT_TIMEOUT.min(retry_budget))
                    .with_timeout(Duration::from_secs(120)),
            );
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &settings.region {
            builder = builder.with_region(region);
        }
        let inner = builder
            .build()
            .map_err(|err| StoreError::unavailable("connect", &settings.bucket, err))?;
        Ok(Self::from_object_store(Arc::new(inner)))
    }

    /// Wraps an already built `object_store` client.
    pub fn from_object_store(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }

    /// A `GET` with `options`; the body is left to arrive.
    ///
    /// S3 answers 416 to any range of an empty object, even one from byte 0, where HTTP
    /// allows nothing else to be meant: such a `GET` is made again without the range, so
    /// an empty object reads as one (and names what is wrong with it) instead of failing.
    async fn get_opts(
        &self,
        key: &str,
        options: GetOptions,
    ) -> Result<Fetched<GetResult>, StoreError> {
        let path = Path::from(key);
        let whole = matches!(options.range, Some(GetRange::Bounded(ref range)) if range.start == 0)
            .then(|| GetOptions {
                range: None,
                ..options.clone()
            });
        let answer = match (self.inner.get_opts(&path, options).await, whole) {
            (Err(err), Some(whole)) if range_not_satisfiable(&err) => {
                self.inner.get_opts(&path, whole).await
            }
            (answer, _) => answer,
        };
        match answer {
            Ok(result) => Ok(Fetched::Found {
                info: ObjectInfo {
                    etag: ETag(result.meta.e_tag.clone().unwrap_or_default()),
                    size: result.meta.size,
                    metadata: user_metadata(&result.attributes),
                },
                body: result,
            }),
            Err(object_store::Error::NotFound { .. }) => Ok(Fetched::NotFound),
            Err(object_store::Error::NotModified { .. }) => Ok(Fetched::NotModified),
            Err(object_store::Error::Precondition { .. }) => Err(StoreError::PreconditionFailed {
                key: key.to_owned(),
            }),
            Err(err) => Err(failure("get", key, err)),
        }
    }

    fn conditional_get(if_none_match: Option<&ETag>) -> GetOptions {
        GetOptions {
            if_none_match: if_none_match.map(|etag| etag.0.clone()),
            ..GetOptions::default()
        }
    }

    /// A `GET` whose body is left to arrive as a stream.
    async fn get_streaming(
        &self,
        key: &str,
        options: GetOptions,
    ) -> Result<Fetched<ByteStream>, StoreError> {
        Ok(match self.get_opts(key, options).await? {
            Fetched::Found { info, body } => {
                let key = key.to_owned();
                let body = body
                    .into_stream()
                    .map(move |piece| piece.map_err(|err| failure("get", &key, err)))
                    .boxed();
                Fetched::Found { info, body }
            }
            Fetched::NotFound => Fetched::NotFound,
            Fetched::NotModified => Fetched::NotModified,
        })
    }
}

/// Whether the store answered 416. `object_store` keeps the status in a type of its own
/// that is not public, so its text is what says so.
fn range_not_satisfiable(err: &object_store::Error) -> bool {
    matches!(err, object_store::Error::Generic { .. })
        && err.to_string().contains("416 Range Not Satisfiable")
}

/// A failed request: logged in full, and summed up for whoever gets the error.
///
/// `object_store`'s error text names the endpoint URL (with the bucket, and for R2 the
/// account), and quotes the store's raw XML answer: right for the operator's log, too much
/// for an API client. The summary keeps what failed and how (status, S3 error code).
fn failure(operation: &'static str, key: &str, err: object_store::Error) -> StoreError {
    let full = err.to_string();
    warn!(operation, key, error = %full, "object store request failed");
    StoreError::unavailable(operation, key, summary(&full))
}

fn summary(full: &str) -> String {
    let before_xml = full.split("<?xml").next().unwrap_or(full);
    let mut text = before_xml
        .split_whitespace()
        .filter(|word| !word.starts_with("http://") && !word.starts_with("https://"))
        .collect::<Vec<_>>()
        .join(" ");
    text = text.trim_end_matches(':').to_owned();
    let code = full
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code);
    if let Some(code) = code {
        text.push_str(&format!(" ({code})"));
    }
    text
}

fn user_metadata(attributes: &Attributes) -> RawMetadata {
    attributes
        .iter()
        .filter_map(|(attribute, value)| match attribute {
            Attribute::Metadata(name) => Some((name.to_string(), value.as_ref().to_owned())),
            _ => None,
        })
        .collect()
}

#[async_trait]
impl Store for S3Store {
    async fn get(&self, key: &str, if_none_match: Option<&ETag>) -> Result<Fetched, StoreError> {
        match self
            .get_opts(key, Self::conditional_get(if_none_match))
            .await?
        {
            Fetched::Found { info, body } => {
                let body = body.bytes().await.map_err(|err| failure("get", key, err))?;
                Ok(Fetched::Found { info, body })
            }
            Fetched::NotFound => Ok(Fetched::NotFound),
            Fetched::NotModified => Ok(Fetched::NotModified),
        }
    }

    async fn get_stream(
        &self,
        key: &str,
        if_none_match: Option<&ETag>,
    ) -> Result<Fetched<ByteStream>, StoreError> {
        self.get_streaming(key, Self::conditional_get(if_none_match))
            .await
    }

    async fn get_range(
        &self,
        key: &str,
        if_none_match: Option<&ETag>,
        if_match: Option<&ETag>,
        range: Range<u64>,
    ) -> Result<Fetched<ByteStream>, StoreError> {
        let options = GetOptions {
            if_match: if_match.map(|etag| etag.0.clone()),
            range: Some(range.into()),
            ..Self::conditional_get(if_none_match)
        };
        self.get_streaming(key, options).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let options = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        match self.get_opts(key, options).await? {
            Fetched::Found { info, .. } => Ok(Some(info)),
            _ => Ok(None),
        }
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        metadata: RawMetadata,
        condition: PutCondition,
    ) -> Result<ETag, StoreError> {
        let mode = match condition {
            PutCondition::Create => PutMode::Create,
            PutCondition::Match(etag) => PutMode::Update(UpdateVersion {
                e_tag: Some(etag.0),
                version: None,
            }),
        };
        let attributes = metadata
            .into_iter()
            .map(|(name, value)| {
                (
                    Attribute::Metadata(Cow::Owned(name)),
                    AttributeValue::from(value),
                )
            })
            .collect();
        let options = PutOptions {
            mode,
            attributes,
            ..PutOptions::default()
        };
        match self
            .inner
            .put_opts(&Path::from(key), PutPayload::from_bytes(body), options)
            .await
        {
            Ok(result) => Ok(ETag(result.e_tag.unwrap_or_default())),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => Err(StoreError::PreconditionFailed {
                key: key.to_owned(),
            }),
            Err(err) => Err(failure("put", key, err)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        let prefix_path = Path::from(prefix.trim_end_matches('/'));
        let objects: Vec<_> = self
            .inner
            .list(Some(&prefix_path))
            .try_collect()
            .await
            .map_err(|err| failure("list", prefix, err))?;
        let mut listed: Vec<Listed> = objects
            .into_iter()
            .map(|meta| Listed {
                key: meta.location.to_string(),
                size: meta.size,
                modified: meta.last_modified,
            })
            .collect();
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(listed)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.inner.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(failure("delete", key, err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::summary;

    #[test]
    fn the_summary_keeps_the_failure_and_drops_the_endpoint_and_the_xml() {
        let full = "Generic S3 error: Error performing PUT \
            http://127.0.0.1:9000/cellar-bucket/cellar-users/alice/database.sqlite in 620ms, \
            after 4 retries, max_retries: 4, retry_timeout: 20s  - Server returned non-2xx \
            status code: 503 Service Unavailable: <?xml version=\"1.0\"?><Error><Code>SlowDown\
            </Code><Message>Please reduce your request rate.</Message><BucketName>cellar-bucket\
            </BucketName></Error>";
        let short = summary(full);
        assert_eq!(
            short,
            "Generic S3 error: Error performing PUT in 620ms, after 4 retries, max_retries: 4, \
             retry_timeout: 20s - Server returned non-2xx status code: 503 Service Unavailable \
             (SlowDown)"
        );
        assert!(!short.contains("cellar-bucket") && !short.contains("127.0.0.1"));
        let refused = "Generic S3 error: Error performing GET https://acct.r2.cloudflarestorage.com/b/k \
            in 2ms - HTTP error: error sending request";
        assert_eq!(
            summary(refused),
            "Generic S3 error: Error performing GET in 2ms - HTTP error: error sending request"
        );
    }
}
