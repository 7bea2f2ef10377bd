//! [`Version`]: the number every upload of a user's database carries.

use std::fmt;
use std::str::FromStr;

/// A database version. 0 means "no upload yet"; every upload carries a larger one
/// (invariant 3, versions only grow).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Version(u64);

impl Version {
    /// The version of a user that has never uploaded.
    pub const ZERO: Version = Version(0);

    /// Wraps a raw number.
    pub const fn new(n: u64) -> Self {
        Self(n)
    }

    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Seed rule `version-increment-on-write`: the version an upload made from this one carries.
    pub const fn next(self) -> Self {
        Self(self.0 + 1)
    }

    /// The version an overwrite must carry so that it is newer than both sides
    /// (`max(local, remote) + 1`, DESIGN §4).
    pub fn after_both(self, other: Version) -> Self {
        self.max(other).next()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Version {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_both_is_strictly_greater_than_each_side() {
        for (a, b) in [(0, 0), (3, 9), (9, 3), (7, 7), (u64::MAX - 1, 0)] {
            let v = Version::new(a).after_both(Version::new(b));
            assert!(v > Version::new(a) && v > Version::new(b));
        }
    }

    #[test]
    fn parses_decimal_and_refuses_garbage() {
        assert_eq!("42".parse::<Version>().unwrap(), Version::new(42));
        assert!("-1".parse::<Version>().is_err());
        assert!("4x".parse::<Version>().is_err());
    }
}
