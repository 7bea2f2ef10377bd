//! [`UserId`]: the validated name of one user's database.

use std::fmt;
use std::str::FromStr;

/// Longest accepted user id, in bytes.
pub const MAX_USER_ID_LEN: usize = 64;

/// A user id that is safe to use as a folder name and as part of an object key.
///
/// 1–64 characters of `[A-Za-z0-9_-]`, not starting with `-`. Validation happens here,
/// once, before any file or object is touched: everything downstream takes a `UserId`,
/// never a raw string, so `..`, `a/b` or control characters cannot reach a path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

/// Why a text is not a user id; nothing was touched. Converts into
/// [`crate::Error::InvalidUserId`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid user id \"{input}\": {reason}")]
pub struct InvalidUserId {
    /// The offending input, escaped and shortened.
    pub input: String,
    /// Which rule it broke.
    pub reason: &'static str,
}

impl UserId {
    /// Validates `input` as a user id.
    pub fn new(input: impl Into<String>) -> Result<Self, InvalidUserId> {
        let input = input.into();
        match Self::problem(&input) {
            None => Ok(Self(input)),
            Some(reason) => Err(InvalidUserId {
                input: printable(&input),
                reason,
            }),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn problem(input: &str) -> Option<&'static str> {
        if input.is_empty() {
            return Some("it is empty");
        }
        if input.len() > MAX_USER_ID_LEN {
            return Some("it is longer than 64 characters");
        }
        if input.starts_with('-') {
            return Some("it starts with '-'");
        }
        if !input
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Some("only letters, digits, '_' and '-' are allowed");
        }
        None
    }
}

/// A bounded, escaped rendering of untrusted input for error messages.
fn printable(input: &str) -> String {
    let shown: String = input.chars().take(80).collect();
    let mut escaped = shown.escape_debug().to_string();
    if input.chars().count() > 80 {
        escaped.push('…');
    }
    escaped
}

impl FromStr for UserId {
    type Err = InvalidUserId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_letters_digits_underscore_and_inner_dash() {
        for ok in ["a", "alice", "user_42", "A-b-C", &"x".repeat(64)] {
            assert!(UserId::new(ok).is_ok(), "{ok} should be valid");
        }
    }

    #[test]
    fn refuses_paths_dots_controls_and_bad_lengths() {
        let long = "y".repeat(65);
        for bad in [
            "", "..", "a/b", "a\\b", "-lead", "a b", "tab\t", "nul\0", "é", &long,
        ] {
            let err = UserId::new(bad).expect_err(bad);
            assert!(err.to_string().contains("invalid user id"), "{err}");
        }
    }

    #[test]
    fn error_message_escapes_and_bounds_the_input() {
        let err = UserId::new(format!("\u{7}{}", "z".repeat(300))).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\\u{7}"), "{text}");
        assert!(text.len() < 200, "{text}");
    }
}
