//! Every setting key, once: its dotted name (and so its `CELLAR_*` variable), the TOML type
//! the file must give it, and how its text becomes a value in [`Settings`].

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cellar_server::AdminToken;

use super::{AuthKind, Secret, Settings};

/// Every environment variable of a key starts with this.
pub const ENV_PREFIX: &str = "CELLAR_";

/// One setting.
pub struct Key {
    /// The dotted name, as in the file (`store.url`).
    pub name: &'static str,
    kind: Kind,
    parse: fn(&mut Settings, &str) -> Result<(), String>,
}

/// The TOML type a key takes in the file. Environment variables and flags are text and
/// are parsed by the same setter.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Integer,
    /// A float; a whole number is accepted too (`drop_rate = 0`).
    Number,
    Boolean,
}

/// A value as its source gave it.
pub enum Raw {
    /// From the file, typed.
    Toml(toml::Value),
    /// From an environment variable or a flag.
    Text(String),
}

impl Key {
    const fn text(
        name: &'static str,
        parse: fn(&mut Settings, &str) -> Result<(), String>,
    ) -> Self {
        Self {
            name,
            kind: Kind::Text,
            parse,
        }
    }

    const fn integer(
        name: &'static str,
        parse: fn(&mut Settings, &str) -> Result<(), String>,
    ) -> Self {
        Self {
            name,
            kind: Kind::Integer,
            parse,
        }
    }

    const fn number(
        name: &'static str,
        parse: fn(&mut Settings, &str) -> Result<(), String>,
    ) -> Self {
        Self {
            name,
            kind: Kind::Number,
            parse,
        }
    }

    const fn boolean(
        name: &'static str,
        parse: fn(&mut Settings, &str) -> Result<(), String>,
    ) -> Self {
        Self {
            name,
            kind: Kind::Boolean,
            parse,
        }
    }

    /// `CELLAR_` and the name upper-cased, dots as underscores (`CELLAR_STORE_URL`).
    pub fn env_var(&self) -> String {
        format!("{ENV_PREFIX}{}", self.name.replace('.', "_").to_uppercase())
    }

    /// Parses `raw` into `settings`; the error says what is wrong with the value.
    pub fn set(&self, settings: &mut Settings, raw: &Raw) -> Result<(), String> {
        let text = match raw {
            Raw::Text(text) => Cow::Borrowed(text.as_str()),
            Raw::Toml(value) => Cow::Owned(self.kind.text_of(value)?),
        };
        (self.parse)(settings, &text)
    }
}

impl Kind {
    /// The value as text, if the file gave it the right TOML type.
    fn text_of(self, value: &toml::Value) -> Result<String, String> {
        match (self, value) {
            (Kind::Text, toml::Value::String(text)) => Ok(text.clone()),
            (Kind::Integer | Kind::Number, toml::Value::Integer(n)) => Ok(n.to_string()),
            (Kind::Number, toml::Value::Float(x)) => Ok(x.to_string()),
            (Kind::Boolean, toml::Value::Boolean(b)) => Ok(b.to_string()),
            (kind, other) => Err(format!(
                "expected {}, found {}",
                kind.describe(),
                other.type_str()
            )),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Text => "a string",
            Kind::Integer => "an integer",
            Kind::Number => "a number",
            Kind::Boolean => "true or false",
        }
    }
}

/// All keys (DESIGN §7, plus the server's limits).
pub const KEYS: &[Key] = &[
    Key::text("server.listen", |s, v| {
        parse_listen(v).map(|addr| s.listen = addr)
    }),
    Key::integer("server.header_read_timeout_secs", |s, v| {
        parse_positive(v).map(|secs| s.header_read_timeout = Duration::from_secs(secs as u64))
    }),
    Key::integer("server.max_connections", |s, v| {
        parse_positive(v).map(|n| s.max_connections = n)
    }),
    Key::integer("server.write_stall_timeout_secs", |s, v| {
        parse_positive(v).map(|secs| s.write_stall_timeout = Duration::from_secs(secs as u64))
    }),
    Key::boolean("server.demo", |s, v| parse_bool(v).map(|b| s.demo = b)),
    Key::text("data_dir", |s, v| {
        non_empty(v).map(|dir| s.data_dir = PathBuf::from(dir))
    }),
    Key::text("store.url", |s, v| v.parse().map(|url| s.store_url = url)),
    Key::text("store.endpoint", |s, v| {
        non_empty(v).map(|e| s.store_endpoint = Some(e.to_owned()))
    }),
    Key::text("store.region", |s, v| {
        non_empty(v).map(|r| s.store_region = Some(r.to_owned()))
    }),
    Key::boolean("store.allow_http", |s, v| {
        parse_bool(v).map(|b| s.store_allow_http = b)
    }),
    Key::integer("store.timeout_ms", |s, v| {
        parse_positive(v).map(|ms| s.store_timeout = Duration::from_millis(ms as u64))
    }),
    Key::text("sync.conflict", |s, v| {
        v.parse().map(|policy| s.conflict = policy)
    }),
    Key::integer("sync.size_info_bytes", |s, v| {
        parse_count(v).map(|n| s.size_thresholds.info_bytes = n)
    }),
    Key::integer("sync.size_warn_bytes", |s, v| {
        parse_count(v).map(|n| s.size_thresholds.warn_bytes = n)
    }),
    Key::integer("sync.min_upload_interval_ms", |s, v| {
        parse_millis(v).map(|interval| s.min_upload_interval = interval)
    }),
    Key::boolean("sync.version_check", |s, v| {
        parse_bool(v).map(|b| s.version_check = b)
    }),
    Key::integer("sync.download_parallelism", |s, v| {
        parse_positive(v).map(|n| s.download_parallelism = n)
    }),
    Key::integer("sync.download_part_bytes", |s, v| {
        parse_positive(v).map(|n| s.download_part_bytes = n as u64)
    }),
    Key::integer("sync.compact_after_versions", |s, v| {
        parse_positive(v).map(|n| s.compact_after_versions = n as u64)
    }),
    Key::integer("sync.compact_after_bytes", |s, v| {
        parse_positive(v).map(|n| s.compact_after_bytes = Some(n as u64))
    }),
    Key::integer("sync.log_grace_secs", |s, v| {
        parse_positive(v).map(|secs| s.log_grace = Duration::from_secs(secs as u64))
    }),
    Key::text("sync.durability", |s, v| {
        v.parse().map(|durability| s.durability = durability)
    }),
    Key::integer("history.keep_days", |s, v| {
        parse_whole(v, "days").map(|days| s.history.keep_days = days)
    }),
    Key::integer("history.keep_versions", |s, v| {
        parse_whole(v, "versions").map(|n| s.history.keep_versions = n)
    }),
    Key::integer("history.walk_back_changes", |s, v| {
        parse_whole(v, "changes").map(|n| s.history.walk_back_changes = n)
    }),
    Key::boolean("history.user_restore", |s, v| {
        parse_bool(v).map(|b| s.history.user_restore = b)
    }),
    Key::text("auth.mode", |s, v| {
        parse_auth_mode(v).map(|mode| s.auth_mode = mode)
    }),
    Key::text("auth.jwt_secret", |s, v| {
        non_empty(v).map(|t| s.jwt_secret = Some(Secret(t.to_owned())))
    }),
    Key::boolean("auth.trusted_proxy", |s, v| {
        parse_bool(v).map(|b| s.trusted_proxy = b)
    }),
    Key::text("auth.admin_token", |s, v| {
        AdminToken::new(v)
            .map(|token| s.admin_token = Some(token))
            .map_err(|invalid| invalid.to_string())
    }),
    Key::integer("limits.max_body_bytes", |s, v| {
        parse_positive(v).map(|n| s.limits.max_body_bytes = n)
    }),
    Key::integer("limits.max_statements", |s, v| {
        parse_positive(v).map(|n| s.limits.max_statements = n)
    }),
    Key::integer("limits.max_sql_bytes", |s, v| {
        parse_positive(v).map(|n| s.limits.max_sql_bytes = n)
    }),
    Key::integer("limits.max_result_rows", |s, v| {
        parse_positive(v).map(|n| s.limits.max_result_rows = n)
    }),
    Key::integer("limits.max_response_bytes", |s, v| {
        parse_positive(v).map(|n| s.limits.max_response_bytes = n)
    }),
    Key::integer("limits.query_timeout_ms", |s, v| {
        parse_positive(v).map(|ms| s.limits.query_timeout = Duration::from_millis(ms as u64))
    }),
    Key::integer("limits.body_read_timeout_secs", |s, v| {
        parse_positive(v).map(|secs| s.limits.body_read_timeout = Duration::from_secs(secs as u64))
    }),
    Key::number("faults.error_rate", |s, v| {
        parse_rate(v).map(|rate| s.faults.rates.error_rate = rate)
    }),
    Key::number("faults.drop_rate", |s, v| {
        parse_rate(v).map(|rate| s.faults.rates.drop_rate = rate)
    }),
    Key::integer("faults.latency_ms", |s, v| {
        parse_millis(v).map(|delay| s.faults.rates.max_latency = delay)
    }),
    Key::integer("faults.seed", |s, v| {
        v.parse()
            .map(|seed| s.faults.seed = seed)
            .map_err(|_| format!("{v:?} is not a whole number"))
    }),
];

/// Every key with its environment variable and the kind of value it takes, for
/// `cellar --help`.
pub fn help() -> String {
    let width = KEYS.iter().map(|key| key.name.len()).max().unwrap_or(0);
    let lines: Vec<String> = KEYS
        .iter()
        .map(|key| {
            format!(
                "  {:width$}  {} ({})",
                key.name,
                key.env_var(),
                key.kind.describe()
            )
        })
        .collect();
    format!(
        "Configuration keys (cellar.toml: [section] key = value; environment: CELLAR_*):\n{}",
        lines.join("\n")
    )
}

/// The key called `name`.
pub fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|key| key.name == name)
}

/// The key whose environment variable is `var`.
pub fn find_by_env_var(var: &str) -> Option<&'static Key> {
    KEYS.iter().find(|key| key.env_var() == var)
}

/// The section of a dotted name (`store` for `store.url`), if it has one.
pub fn section_of(name: &str) -> Option<&str> {
    name.split_once('.').map(|(section, _)| section)
}

/// The sections that hold keys (`server`, `store`, ...).
pub fn sections() -> impl Iterator<Item = &'static str> {
    KEYS.iter().filter_map(|key| section_of(key.name))
}

/// What to say about an unknown key: the keys of its section, or all top-level names.
pub fn hint_for(unknown: &str) -> String {
    if unknown.contains("access_key") || unknown.contains("secret_key") {
        return "credentials are never configured here: they come from AWS_ACCESS_KEY_ID and \
                AWS_SECRET_ACCESS_KEY"
            .into();
    }
    let section = section_of(unknown);
    let known: Vec<&str> = KEYS
        .iter()
        .map(|key| key.name)
        .filter(|name| section.is_none() || section_of(name) == section)
        .collect();
    format!("known keys: {}", known.join(", "))
}

fn non_empty(value: &str) -> Result<&str, String> {
    if value.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(value)
    }
}

fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| {
        format!("{value:?} is not an address; expected IP:PORT, such as 127.0.0.1:8080")
    })
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("{other:?} is not true or false")),
    }
}

fn parse_count(value: &str) -> Result<u64, String> {
    parse_whole(value, "bytes")
}

/// A whole number of `unit`s, 0 included.
fn parse_whole<T: std::str::FromStr>(value: &str, unit: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{value:?} is not a whole number of {unit}"))
}

fn parse_millis(value: &str) -> Result<Duration, String> {
    value
        .parse()
        .map(Duration::from_millis)
        .map_err(|_| format!("{value:?} is not a whole number of milliseconds"))
}

/// A probability: a number from 0 to 1.
fn parse_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!(
            "{value:?} is not a probability; expected a number from 0 to 1, such as 0.1"
        )),
    }
}

fn parse_positive(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{value:?} is not a positive whole number")),
    }
}

fn parse_auth_mode(value: &str) -> Result<AuthKind, String> {
    match value {
        "header" => Ok(AuthKind::Header),
        "jwt" => Ok(AuthKind::Jwt),
        other => Err(format!(
            "unknown auth mode {other:?}; expected header or jwt"
        )),
    }
}
