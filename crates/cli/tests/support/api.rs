//! The HTTP calls the reliability suites make: append one unique value to a user's list
//! (table `t`), read the whole list; and their answers, classified.

use std::time::Duration;

use serde_json::{Value, json};

/// No request waits longer than this for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The answer to one request.
#[derive(Clone, Debug)]
pub enum Reply<T> {
    /// 200: what the request returned, at `version`.
    Ok {
        /// The version the answer was at (`Cellar-Version`).
        version: u64,
        /// What was read (nothing for an append).
        value: T,
    },
    /// An error answer.
    Refused {
        /// HTTP status.
        status: u16,
        /// `Cellar-Version`, when the server knew it.
        version: Option<u64>,
        /// `error.code`.
        code: String,
        /// `error.message`.
        message: String,
    },
    /// No answer: the connection failed or was cut (a killed server). The request may or
    /// may not have taken effect.
    NoAnswer(String),
}

impl<T> Reply<T> {
    /// True for the refusal of a stale object by Cellar's version check.
    pub fn is_stale_read(&self) -> bool {
        matches!(self, Reply::Refused { code, message, .. }
            if code == "store_unavailable" && is_stale_read_message(message))
    }
}

/// True when an error message is the version check refusing an older object.
pub fn is_stale_read_message(message: &str) -> bool {
    message.contains("refusing to go back") || message.contains("stale read")
}

/// A client of one server.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    /// A client of the server at `address` (`127.0.0.1:PORT`).
    pub fn new(address: &str) -> Self {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("build the HTTP client");
        Self {
            client,
            base: format!("http://{address}"),
        }
    }

    /// Appends `value` to `user`'s list, creating the table if needed, in one request.
    pub async fn append(&self, user: &str, value: i64) -> Reply<()> {
        let statements = json!([
            "CREATE TABLE IF NOT EXISTS t(v INTEGER NOT NULL)",
            { "sql": "INSERT INTO t(v) VALUES (?1)", "params": [value] },
        ]);
        self.query(user, statements).await.map(|_| ())
    }

    /// Like [`Api::append`], and in the same request adds `pad_bytes` random bytes to the
    /// user's table `pad`: each append makes the database that much bigger.
    pub async fn append_padded(&self, user: &str, value: i64, pad_bytes: usize) -> Reply<()> {
        let statements = json!([
            "CREATE TABLE IF NOT EXISTS t(v INTEGER NOT NULL)",
            "CREATE TABLE IF NOT EXISTS pad(b BLOB NOT NULL)",
            { "sql": "INSERT INTO t(v) VALUES (?1)", "params": [value] },
            { "sql": "INSERT INTO pad(b) VALUES (randomblob(?1))", "params": [pad_bytes] },
        ]);
        self.query(user, statements).await.map(|_| ())
    }

    /// `user`'s list, in append order (empty before the first append).
    pub async fn values(&self, user: &str) -> Reply<Vec<i64>> {
        match self
            .query(user, json!(["SELECT v FROM t ORDER BY rowid"]))
            .await
        {
            Reply::Ok { version, value } => Reply::Ok {
                version,
                value: rows_of(&value),
            },
            Reply::Refused {
                code,
                message,
                version,
                ..
            } if code == "sql_error" && message.contains("no such table") => Reply::Ok {
                version: version.unwrap_or(0),
                value: Vec::new(),
            },
            other => other.map(|_| Vec::new()),
        }
    }

    /// `POST /v1/query` as `user`.
    async fn query(&self, user: &str, statements: Value) -> Reply<Value> {
        let sent = self
            .client
            .post(format!("{}/v1/query", self.base))
            .header("X-User-Id", user)
            .json(&json!({ "statements": statements }))
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(err) => return Reply::NoAnswer(describe(&err)),
        };
        let status = response.status().as_u16();
        let version = response
            .headers()
            .get("cellar-version")
            .and_then(|value| value.to_str().ok()?.parse().ok());
        let body: Value = match response.json().await {
            Ok(body) => body,
            Err(err) => return Reply::NoAnswer(describe(&err)),
        };
        if status == 200 {
            let version = body["version"]
                .as_u64()
                .expect("a 200 answer carries its version");
            return Reply::Ok {
                version,
                value: body,
            };
        }
        Reply::Refused {
            status,
            version,
            code: body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            message: body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        }
    }
}

impl<T> Reply<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Reply<U> {
        match self {
            Reply::Ok { version, value } => Reply::Ok {
                version,
                value: f(value),
            },
            Reply::Refused {
                status,
                version,
                code,
                message,
            } => Reply::Refused {
                status,
                version,
                code,
                message,
            },
            Reply::NoAnswer(why) => Reply::NoAnswer(why),
        }
    }
}

/// The integers of the first result's rows.
fn rows_of(body: &Value) -> Vec<i64> {
    body["results"][0]["rows"]
        .as_array()
        .expect("a query answer has rows")
        .iter()
        .map(|row| row[0].as_i64().expect("an integer value"))
        .collect()
}

/// An error with its chain of causes ("connection refused" is at the bottom).
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}
