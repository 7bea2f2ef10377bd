//! Settings: one TOML file, overridden by `CELLAR_*` environment variables, overridden by
//! flags (DESIGN §7). Each key is listed once, in [`keys`], with its parser; every error
//! names the key and the source of the offending value.
//!
//! Settings are plain values. The components they describe are built from them:
//! [`Settings::engine_config`], [`Settings::open_store`], [`Settings::server_options`].

mod error;
mod keys;
mod store_url;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cellar_engine::store::{DeadlineStore, FaultRates};
use cellar_engine::{
    ConflictPolicy, Durability, EngineConfig, HistoryConfig, LocalStore, MemoryStore, S3Settings,
    S3Store, SizeThresholds, Store,
};
use cellar_server::{AdminToken, AuthMode, Limits, ServerOptions};

pub use error::{ConfigError, Source};
pub use keys::help as keys_help;
pub use store_url::StoreUrl;

use keys::{ENV_PREFIX, Raw};

/// The file read when `--config` is not given; it may be absent.
pub const DEFAULT_FILE: &str = "cellar.toml";

/// HS256 keys shorter than the hash are refused (RFC 7518 §3.2).
const MIN_JWT_SECRET_BYTES: usize = 32;

/// Which configuration file to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigFile {
    /// `cellar.toml` in the current folder, if there is one.
    Default,
    /// A file named with `--config`; it must exist.
    Named(PathBuf),
}

/// A value for a key given on the command line.
#[derive(Clone, Debug)]
pub struct Flag {
    /// The key it sets.
    pub key: &'static str,
    /// The flag as typed, for error messages.
    pub flag: &'static str,
    /// Its value.
    pub value: String,
}

/// The `CELLAR_*` environment variables, by name.
#[derive(Clone, Debug, Default)]
pub struct Environment(BTreeMap<String, String>);

impl Environment {
    /// This process's `CELLAR_*` variables.
    pub fn from_process() -> Result<Self, ConfigError> {
        std::env::vars_os()
            .filter_map(|(name, value)| name.into_string().ok().map(|name| (name, value)))
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .map(|(name, value)| match value.into_string() {
                Ok(value) => Ok((name, value)),
                Err(_) => Err(ConfigError::NotUtf8 { name }),
            })
            .collect()
    }
}

impl FromIterator<(String, String)> for Environment {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(vars: I) -> Self {
        Self(vars.into_iter().collect())
    }
}

/// How callers prove who they are (`auth.mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthKind {
    /// Trust `X-User-Id`.
    Header,
    /// HS256 bearer tokens.
    Jwt,
}

/// A secret; `Debug` does not print it.
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Every setting, resolved, and where each came from.
#[derive(Debug)]
pub struct Settings {
    /// `server.listen`: where `cellar serve` binds.
    pub listen: SocketAddr,
    /// `server.header_read_timeout_secs`: how long a connection may take to send a request
    /// head (the first, or the next on a keep-alive connection) before it is closed.
    pub header_read_timeout: Duration,
    /// `server.max_connections`: most connections open at once, WebSockets included. At
    /// start-up `cellar serve` checks that they fit under the open-files limit.
    pub max_connections: usize,
    /// `server.write_stall_timeout_secs`: how long a write to a client may stay blocked
    /// before the connection is closed.
    pub write_stall_timeout: Duration,
    /// `server.demo`: serve the end-user demo app at `/demo`.
    pub demo: bool,
    /// `data_dir`: the local copies.
    pub data_dir: PathBuf,
    /// `store.url`: the bucket.
    pub store_url: StoreUrl,
    /// `store.endpoint`: an S3-compatible endpoint (R2, MinIO, SeaweedFS).
    pub store_endpoint: Option<String>,
    /// `store.region` (`auto` for R2).
    pub store_region: Option<String>,
    /// `store.allow_http`: plain-HTTP endpoints (local MinIO, SeaweedFS).
    pub store_allow_http: bool,
    /// `store.timeout_ms`: how long a store call may go unanswered (or a download wait for
    /// its next piece) before the request fails as `store_unavailable`.
    pub store_timeout: Duration,
    /// `sync.conflict`.
    pub conflict: ConflictPolicy,
    /// `sync.size_info_bytes`, `sync.size_warn_bytes`.
    pub size_thresholds: SizeThresholds,
    /// `sync.min_upload_interval_ms`: pacing, the least time between two uploads of one
    /// user's database (0: none).
    pub min_upload_interval: Duration,
    /// `sync.version_check`: check the bucket's version at every request start. For
    /// benchmarks only: off, this instance never sees other writers' uploads.
    pub version_check: bool,
    /// `sync.download_parallelism`: how many parts of one download come side by side
    /// (1: one `GET` for the whole object).
    pub download_parallelism: usize,
    /// `sync.download_part_bytes`: the size of one part of a download.
    pub download_part_bytes: u64,
    /// `sync.compact_after_versions`: fold the log into a new snapshot once it holds this
    /// many changes since the snapshot…
    pub compact_after_versions: u64,
    /// `sync.compact_after_bytes`: …or this many bytes of changes (unset: a quarter of the
    /// database, at least 1 MiB).
    pub compact_after_bytes: Option<u64>,
    /// `sync.log_grace_secs`: a change of the log is deleted only when older than this
    /// (and folded into a snapshot).
    pub log_grace: Duration,
    /// `sync.durability`: acknowledge writes after the upload (`sync`) or after the local
    /// commit, uploading in the background (`async`).
    pub durability: Durability,
    /// `history.keep_days`, `history.keep_versions` (either 0 turns history off),
    /// `history.user_restore`: which versions stay restorable, and who may restore them;
    /// `history.walk_back_changes`: how far a restore walks back from the local copy.
    pub history: HistoryConfig,
    /// `auth.mode`.
    pub auth_mode: AuthKind,
    /// `auth.jwt_secret`.
    pub jwt_secret: Option<Secret>,
    /// `auth.trusted_proxy`: header mode may listen off loopback.
    pub trusted_proxy: bool,
    /// `auth.admin_token`: the operator's token for `/ui` and `/v1/admin/…` (off without).
    pub admin_token: Option<AdminToken>,
    /// `limits.*`: the server's request limits.
    pub limits: Limits,
    /// `faults.*`: store faults injected on purpose by `cellar serve` (off by default).
    pub faults: Faults,
    sources: BTreeMap<&'static str, Source>,
}

/// `faults.*`: faults `cellar serve` injects into its store, to show (in demos and tests)
/// how Cellar answers when the bucket fails. Never for production.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// `faults.error_rate` (a store request fails), `faults.drop_rate` (a write lands but
    /// its answer is lost), `faults.latency_ms` (the longest random delay added).
    pub rates: FaultRates,
    /// `faults.seed`: the same seed injects the same sequence of faults.
    pub seed: u64,
}

impl Faults {
    /// The rates to inject, or `None` when no fault is asked for.
    pub fn injected(&self) -> Option<FaultRates> {
        let FaultRates {
            error_rate,
            drop_rate,
            max_latency,
            ..
        } = self.rates;
        (error_rate > 0.0 || drop_rate > 0.0 || !max_latency.is_zero()).then_some(self.rates)
    }
}

/// One value from one source, not yet checked.
struct Entry {
    key: String,
    value: Raw,
    source: Source,
}

impl Settings {
    /// The embedded default: a local folder store, header auth on 127.0.0.1:8080.
    fn defaults() -> Self {
        let engine_defaults = EngineConfig::new("");
        let server_defaults = ServerOptions::default();
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            header_read_timeout: server_defaults.header_read_timeout,
            max_connections: server_defaults.max_connections,
            write_stall_timeout: server_defaults.write_stall_timeout,
            demo: server_defaults.demo,
            data_dir: PathBuf::from("./cellar-data/local"),
            store_url: StoreUrl::Folder(PathBuf::from("./cellar-data/bucket")),
            store_endpoint: None,
            store_region: None,
            store_allow_http: false,
            store_timeout: cellar_engine::store::DEFAULT_DEADLINE,
            conflict: ConflictPolicy::default(),
            size_thresholds: SizeThresholds::default(),
            min_upload_interval: Duration::ZERO,
            version_check: true,
            download_parallelism: engine_defaults.download_parallelism,
            download_part_bytes: engine_defaults.download_part_bytes,
            compact_after_versions: engine_defaults.compact_after_versions,
            compact_after_bytes: engine_defaults.compact_after_bytes,
            log_grace: engine_defaults.log_grace,
            durability: Durability::default(),
            history: engine_defaults.history,
            auth_mode: AuthKind::Header,
            jwt_secret: None,
            trusted_proxy: false,
            admin_token: None,
            limits: Limits::default(),
            faults: Faults::default(),
            sources: BTreeMap::new(),
        }
    }

    /// Reads `file`, then `env`, then `flags`, each overriding the one before, and checks
    /// that the result makes sense as a whole.
    pub fn load(file: &ConfigFile, env: &Environment, flags: &[Flag]) -> Result<Self, ConfigError> {
        let mut settings = Self::defaults();
        let entries = file_entries(file)?
            .into_iter()
            .chain(env_entries(env))
            .chain(flags.iter().map(|flag| Entry {
                key: flag.key.to_owned(),
                value: Raw::Text(flag.value.clone()),
                source: Source::Flag(flag.flag),
            }));
        for entry in entries {
            settings.apply(entry)?;
        }
        settings.check()?;
        Ok(settings)
    }

    fn apply(&mut self, entry: Entry) -> Result<(), ConfigError> {
        let Some(key) = keys::find(&entry.key) else {
            return Err(ConfigError::UnknownKey {
                hint: keys::hint_for(&entry.key),
                key: entry.key,
                origin: entry.source,
            });
        };
        key.set(self, &entry.value)
            .map_err(|reason| ConfigError::InvalidValue {
                key: key.name,
                origin: entry.source.clone(),
                reason,
            })?;
        self.sources.insert(key.name, entry.source);
        Ok(())
    }

    /// Where the value of `key` came from.
    pub fn source_of(&self, key: &'static str) -> Source {
        self.sources.get(key).cloned().unwrap_or(Source::Default)
    }

    /// An error about the current value of `key`.
    pub fn invalid(&self, key: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError::InvalidValue {
            key,
            origin: self.source_of(key),
            reason: reason.into(),
        }
    }

    /// Checks what no single key can: combinations.
    fn check(&self) -> Result<(), ConfigError> {
        let SizeThresholds {
            info_bytes,
            warn_bytes,
        } = self.size_thresholds;
        if info_bytes > warn_bytes {
            return Err(self.invalid(
                "sync.size_info_bytes",
                format!("{info_bytes} is above sync.size_warn_bytes ({warn_bytes})"),
            ));
        }
        let FaultRates {
            error_rate,
            drop_rate,
            ..
        } = self.faults.rates;
        if error_rate + drop_rate > 1.0 {
            return Err(self.invalid(
                "faults.drop_rate",
                format!("faults.error_rate ({error_rate}) and faults.drop_rate ({drop_rate}) add up to more than 1"),
            ));
        }
        if !matches!(self.store_url, StoreUrl::S3 { .. }) {
            let s3_only = ["store.endpoint", "store.region", "store.allow_http"];
            if let Some(key) = s3_only
                .into_iter()
                .find(|key| self.sources.contains_key(key))
            {
                return Err(self.invalid(
                    key,
                    format!(
                        "it applies to s3:// stores only, but store.url is {} (from {})",
                        self.store_url,
                        self.source_of("store.url")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The engine's settings.
    pub fn engine_config(&self) -> EngineConfig {
        let mut config = EngineConfig::new(&self.data_dir);
        config.prefix = self.store_url.prefix().to_owned();
        config.conflict = self.conflict;
        config.size_thresholds = self.size_thresholds;
        config.min_upload_interval = self.min_upload_interval;
        config.version_check = self.version_check;
        config.download_parallelism = self.download_parallelism;
        config.download_part_bytes = self.download_part_bytes;
        config.compact_after_versions = self.compact_after_versions;
        config.compact_after_bytes = self.compact_after_bytes;
        config.log_grace = self.log_grace;
        config.durability = self.durability;
        config.history = self.history;
        config
    }

    /// The object store named by `store.*`, every call bounded by `store.timeout_ms` (so
    /// that neither the server nor an operator's command hangs on a silent store). S3
    /// credentials come from `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, never from
    /// the settings.
    pub fn open_store(&self) -> Result<Arc<dyn Store>, ConfigError> {
        let store: Arc<dyn Store> = match &self.store_url {
            StoreUrl::Folder(root) => Arc::new(LocalStore::new(root)),
            StoreUrl::Memory => Arc::new(MemoryStore::new()),
            StoreUrl::S3 { bucket, .. } => {
                let s3 = S3Settings {
                    bucket: bucket.clone(),
                    endpoint: self.store_endpoint.clone(),
                    region: self.store_region.clone(),
                    allow_http: self.store_allow_http,
                };
                let store = S3Store::with_deadline(&s3, self.store_timeout);
                Arc::new(store.map_err(|err| ConfigError::Store {
                    url: self.store_url.to_string(),
                    reason: err.to_string(),
                })?)
            }
        };
        Ok(Arc::new(DeadlineStore::new(store, self.store_timeout)))
    }

    /// The server's options: identity mode and request limits. Only the server needs a JWT
    /// secret, so only here is its absence an error.
    pub fn server_options(&self) -> Result<ServerOptions, ConfigError> {
        let auth = match self.auth_mode {
            AuthKind::Header => AuthMode::Header {
                trusted_proxy: self.trusted_proxy,
            },
            AuthKind::Jwt => AuthMode::Jwt {
                secret: self.jwt_secret()?.to_owned(),
            },
        };
        Ok(ServerOptions {
            auth,
            limits: self.limits.clone(),
            header_read_timeout: self.header_read_timeout,
            max_connections: self.max_connections,
            write_stall_timeout: self.write_stall_timeout,
            demo: self.demo,
            admin_token: self.admin_token.clone(),
        })
    }

    /// The secret `cellar token` signs with: there are tokens only in `auth.mode = "jwt"`.
    pub fn token_secret(&self) -> Result<&str, ConfigError> {
        if self.auth_mode != AuthKind::Jwt {
            return Err(self.invalid(
                "auth.mode",
                "tokens are for auth.mode = \"jwt\"; in header mode the server takes X-User-Id \
                 and no token (set auth.mode = \"jwt\" and auth.jwt_secret, or CELLAR_AUTH_MODE \
                 and CELLAR_AUTH_JWT_SECRET)",
            ));
        }
        self.jwt_secret()
    }

    /// The JWT secret, required and long enough.
    fn jwt_secret(&self) -> Result<&str, ConfigError> {
        let Some(Secret(secret)) = &self.jwt_secret else {
            return Err(ConfigError::Missing {
                key: "auth.jwt_secret",
                reason: format!(
                    "auth.mode is \"jwt\" (from {}); set it in the file or in CELLAR_AUTH_JWT_SECRET",
                    self.source_of("auth.mode")
                ),
            });
        };
        if secret.len() < MIN_JWT_SECRET_BYTES {
            return Err(self.invalid(
                "auth.jwt_secret",
                format!("an HS256 secret needs at least {MIN_JWT_SECRET_BYTES} bytes"),
            ));
        }
        Ok(secret)
    }
}

/// The file's values, or none when the default file is absent.
fn file_entries(file: &ConfigFile) -> Result<Vec<Entry>, ConfigError> {
    let (path, required) = match file {
        ConfigFile::Default => (Path::new(DEFAULT_FILE), false),
        ConfigFile::Named(path) => (path.as_path(), true),
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(Vec::new());
        }
        Err(source) => {
            return Err(ConfigError::Unreadable {
                path: path.to_owned(),
                source,
            });
        }
    };
    let table: toml::Table = toml::from_str(&text).map_err(|err| ConfigError::Syntax {
        path: path.to_owned(),
        message: err.to_string(),
    })?;
    let mut leaves = Vec::new();
    flatten("", table, &mut leaves);
    Ok(leaves
        .into_iter()
        .map(|(key, value)| Entry {
            key,
            value: Raw::Toml(value),
            source: Source::File(path.to_owned()),
        })
        .collect())
}

/// Turns nested tables into dotted keys (`[store] url = …` becomes `store.url`).
fn flatten(prefix: &str, table: toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            toml::Value::Table(inner) => flatten(&key, inner, out),
            leaf => out.push((key, leaf)),
        }
    }
}

/// The environment's values. An empty variable counts as unset. Variables outside the
/// settings' sections (`CELLAR_CONFIG`, `CELLAR_VENV`) are someone else's and are left
/// alone; one inside a section that names no key (`CELLAR_STORE_URLL`) is a typo.
fn env_entries(env: &Environment) -> Vec<Entry> {
    env.0
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .filter_map(|(name, value)| {
            let key = match keys::find_by_env_var(name) {
                Some(key) => key.name.to_owned(),
                None => key_in_a_section(name)?,
            };
            Some(Entry {
                key,
                value: Raw::Text(value.clone()),
                source: Source::Env(name.clone()),
            })
        })
        .collect()
}

/// The dotted key an unknown `CELLAR_SECTION_REST` variable was meant to set, if it is in
/// the namespace of a section.
fn key_in_a_section(var: &str) -> Option<String> {
    let rest = var.strip_prefix(ENV_PREFIX)?.to_lowercase();
    keys::sections().find_map(|section| {
        let name = rest.strip_prefix(section)?.strip_prefix('_')?;
        Some(format!("{section}.{name}"))
    })
}

#[cfg(test)]
mod tests;
