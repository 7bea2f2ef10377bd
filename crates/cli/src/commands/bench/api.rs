//! The HTTP side of `cellar bench`: queries as a user (header auth), and the server's
//! sync counters from `GET /metrics`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use cellar_engine::UserId;
use cellar_server::USER_ID_HEADER;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Long enough for a preload request that grows a database by a whole chunk.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A client of one server.
pub struct Api {
    client: reqwest::Client,
    query_url: String,
    metrics_url: String,
}

/// Why a request failed: the server's error code (`sql_error`, `sync_pending`, ...), or
/// `timeout`, `connect`, `transport` or `http_STATUS` when there was no JSON error body.
#[derive(Debug)]
pub struct Failure {
    /// The code errors are counted by.
    pub code: String,
    /// What the server or the client said.
    pub message: String,
}

/// An error answer (DESIGN §5).
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// The part of a query answer the measured phase looks at.
#[derive(Deserialize)]
pub struct Acknowledged {
    /// The request changed the database, and so uploaded.
    pub wrote: bool,
}

/// A query answer with its rows.
#[derive(Deserialize)]
pub struct Answer {
    /// One result per statement.
    pub results: Vec<StatementRows>,
}

/// The rows of one statement.
#[derive(Deserialize)]
pub struct StatementRows {
    /// Rows of JSON values.
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// The server's sync counters (or the difference between two readings).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// `cellar_uploads_total`.
    pub uploads: u64,
    /// `cellar_upload_bytes_total`.
    pub upload_bytes: u64,
    /// `cellar_downloads_total`.
    pub downloads: u64,
    /// `cellar_download_bytes_total`.
    pub download_bytes: u64,
    /// `cellar_conflicts_total`.
    pub conflicts: u64,
}

impl Api {
    /// A client of the server at `url` (`http://127.0.0.1:8080`), keeping up to
    /// `concurrency` connections open.
    pub fn new(url: &str, concurrency: u64) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/');
        let parsed =
            reqwest::Url::parse(base).with_context(|| format!("--url {url:?} is not a URL"))?;
        if parsed.scheme() != "http" {
            bail!("--url {url:?}: only http:// is supported");
        }
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(usize::try_from(concurrency).unwrap_or(usize::MAX))
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self {
            client,
            query_url: format!("{base}/v1/query"),
            metrics_url: format!("{base}/metrics"),
        })
    }

    /// `POST /v1/query` as `user`; the answer as `T`, or why it failed.
    pub async fn query<T: DeserializeOwned>(
        &self,
        user: &UserId,
        body: &serde_json::Value,
    ) -> Result<T, Failure> {
        let response = self
            .client
            .post(&self.query_url)
            .header(USER_ID_HEADER, user.as_str())
            .json(body)
            .send()
            .await
            .map_err(Failure::transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(Failure::transport)?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|err| Failure {
                code: "bad_response".into(),
                message: format!("the answer is not the expected JSON: {err}"),
            })
        } else {
            Err(Failure::of_error_body(status, &bytes))
        }
    }

    /// The sync counters from `GET /metrics`.
    pub async fn counters(&self) -> anyhow::Result<Counters> {
        let text = self
            .client
            .get(&self.metrics_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("cannot read {}", self.metrics_url))?
            .text()
            .await
            .with_context(|| format!("cannot read {}", self.metrics_url))?;
        Counters::parse(&text)
            .with_context(|| format!("{} is not a cellar server's", self.metrics_url))
    }
}

impl Failure {
    fn transport(err: reqwest::Error) -> Self {
        let code = if err.is_timeout() {
            "timeout"
        } else if err.is_connect() {
            "connect"
        } else {
            "transport"
        };
        Self {
            code: code.into(),
            message: err.to_string(),
        }
    }

    /// The `{"error": {"code", "message"}}` body of DESIGN §5, or the status if it is not one.
    fn of_error_body(status: reqwest::StatusCode, body: &[u8]) -> Self {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(ErrorBody { error }) => Self {
                code: error.code,
                message: error.message,
            },
            Err(_) => Self {
                code: format!("http_{}", status.as_u16()),
                message: String::from_utf8_lossy(body).into_owned(),
            },
        }
    }
}

impl Counters {
    /// Reads the counters from Prometheus text; each must be there.
    fn parse(text: &str) -> anyhow::Result<Self> {
        let samples: BTreeMap<&str, u64> = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split_once(' '))
            .filter_map(|(name, value)| Some((name, value.trim().parse().ok()?)))
            .collect();
        let get = |name: &str| {
            samples
                .get(name)
                .copied()
                .with_context(|| format!("no sample {name}"))
        };
        Ok(Self {
            uploads: get("cellar_uploads_total")?,
            upload_bytes: get("cellar_upload_bytes_total")?,
            downloads: get("cellar_downloads_total")?,
            download_bytes: get("cellar_download_bytes_total")?,
            conflicts: get("cellar_conflicts_total")?,
        })
    }

    /// What happened between `before` and this reading.
    pub fn since(&self, before: &Counters) -> Counters {
        Counters {
            uploads: self.uploads.saturating_sub(before.uploads),
            upload_bytes: self.upload_bytes.saturating_sub(before.upload_bytes),
            downloads: self.downloads.saturating_sub(before.downloads),
            download_bytes: self.download_bytes.saturating_sub(before.download_bytes),
            conflicts: self.conflicts.saturating_sub(before.conflicts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_prometheus_text_and_subtracted() {
        let text = "# HELP cellar_uploads_total x\n# TYPE cellar_uploads_total counter\n\
                    cellar_uploads_total 7\ncellar_upload_bytes_total 7000\ncellar_downloads_total 1\n\
                    cellar_download_bytes_total 4096\ncellar_conflicts_total 0\n\
                    cellar_http_requests_total{route=\"/v1/query\",status=\"200\"} 9\n";
        let after = Counters::parse(text).unwrap();
        let before = Counters {
            uploads: 2,
            upload_bytes: 1000,
            ..Counters::default()
        };
        let delta = after.since(&before);
        assert_eq!(
            (delta.uploads, delta.upload_bytes, delta.download_bytes),
            (5, 6000, 4096)
        );
        let err = Counters::parse("cellar_uploads_total 1\n").unwrap_err();
        assert!(
            err.to_string().contains("cellar_upload_bytes_total"),
            "{err}"
        );
    }

    #[test]
    fn error_bodies_give_their_code_and_anything_else_its_status() {
        let body = br#"{"error": {"code": "sync_pending", "message": "kept locally"}}"#;
        let failure = Failure::of_error_body(reqwest::StatusCode::SERVICE_UNAVAILABLE, body);
        assert_eq!(
            (failure.code.as_str(), failure.message.as_str()),
            ("sync_pending", "kept locally")
        );
        let failure = Failure::of_error_body(reqwest::StatusCode::BAD_GATEWAY, b"<html>");
        assert_eq!(failure.code, "http_502");
    }
}
