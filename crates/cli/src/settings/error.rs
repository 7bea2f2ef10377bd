//! What can be wrong with the configuration, always naming the key and where its value
//! came from.

use std::fmt;
use std::path::PathBuf;

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Nobody set it: the embedded default (DESIGN §7).
    Default,
    /// The configuration file.
    File(PathBuf),
    /// A `CELLAR_*` environment variable, by name.
    Env(String),
    /// A command-line flag, as typed (`--listen`).
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("the default"),
            Source::File(path) => write!(f, "config file {}", path.display()),
            Source::Env(name) => write!(f, "environment variable {name}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// The configuration cannot be used; the process must not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file exists (or was named) but cannot be read.
    #[error("cannot read config file {}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },

    /// The configuration file is not TOML.
    #[error("config file {} is not valid TOML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },

    /// A key that Cellar does not know (a typo, or a setting of another version).
    #[error("unknown key {key} (from {origin}); {hint}")]
    UnknownKey {
        /// The key as given, dotted (`store.bukcet`).
        key: String,
        /// Where it was given.
        origin: Source,
        /// The keys that would have been accepted nearby.
        hint: String,
    },

    /// A known key with a value that does not parse or does not make sense.
    #[error("invalid value for {key} (from {origin}): {reason}")]
    InvalidValue {
        /// The key.
        key: &'static str,
        /// Where the value came from.
        origin: Source,
        /// What is wrong with it.
        reason: String,
    },

    /// A key that must be set because of another key's value.
    #[error("{key} is not set, but {reason}")]
    Missing {
        /// The key that is missing.
        key: &'static str,
        /// Which other setting needs it, and where that one came from.
        reason: String,
    },

    /// A `CELLAR_*` variable whose value is not UTF-8.
    #[error("environment variable {name} is not valid UTF-8")]
    NotUtf8 {
        /// The variable.
        name: String,
    },

    /// The store described by `store.*` cannot be set up (a malformed endpoint, ...).
    #[error("cannot set up the object store {url}: {reason}")]
    Store {
        /// The store URL.
        url: String,
        /// What the client library said.
        reason: String,
    },
}
