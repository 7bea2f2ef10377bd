//! Seed rule `version-metadata`: what every uploaded snapshot says about itself.
//!
//! Stored as S3 user metadata (`x-amz-meta-cellar-*`), so a plain object listing or
//! `aws s3api head-object` tells an operator which version a user is at.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::version::Version;

const VERSION: &str = "cellar-version";
const SHA256: &str = "cellar-sha256";
const CRC64NVME: &str = "cellar-crc64nvme";
const SIZE: &str = "cellar-size";
const WRITER: &str = "cellar-writer";
const UPDATED_AT: &str = "cellar-updated-at";

/// Raw user metadata as the store carries it.
pub type RawMetadata = BTreeMap<String, String>;

/// The metadata of one uploaded snapshot (DESIGN §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotMetadata {
    /// The version this upload carries.
    pub version: Version,
    /// Hex SHA-256 of the uploaded bytes; checked on every download.
    pub sha256: String,
    /// Hex CRC-64/NVME of the uploaded bytes, the fast check of a download as it arrives
    /// (see [`crate::checksum`]); `None` on objects uploaded before Cellar wrote it.
    pub crc64nvme: Option<String>,
    /// Size of the uploaded bytes.
    pub size: u64,
    /// Instance id of the writer.
    pub writer: String,
    /// When the upload was made.
    pub updated_at: DateTime<Utc>,
}

impl SnapshotMetadata {
    /// The key/value form sent to the store.
    pub fn to_raw(&self) -> RawMetadata {
        let mut raw = BTreeMap::from([
            (VERSION.to_owned(), self.version.to_string()),
            (SHA256.to_owned(), self.sha256.clone()),
            (SIZE.to_owned(), self.size.to_string()),
            (WRITER.to_owned(), self.writer.clone()),
            (
                UPDATED_AT.to_owned(),
                self.updated_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            ),
        ]);
        if let Some(crc) = &self.crc64nvme {
            raw.insert(CRC64NVME.to_owned(), crc.clone());
        }
        raw
    }

    /// Parses what the store returned; the error names the missing or malformed key.
    pub fn from_raw(raw: &RawMetadata) -> Result<Self, String> {
        let field = |name: &str| {
            raw.get(name)
                .map(String::as_str)
                .ok_or_else(|| format!("metadata key {name} is missing"))
        };
        let bad =
            |name: &str, value: &str| format!("metadata key {name} has a bad value {value:?}");
        let version = field(VERSION)?;
        let size = field(SIZE)?;
        let updated_at = field(UPDATED_AT)?;
        Ok(Self {
            version: version.parse().map_err(|_| bad(VERSION, version))?,
            sha256: field(SHA256)?.to_owned(),
            crc64nvme: raw.get(CRC64NVME).cloned(),
            size: size.parse().map_err(|_| bad(SIZE, size))?,
            writer: field(WRITER)?.to_owned(),
            updated_at: DateTime::parse_from_rfc3339(updated_at)
                .map_err(|_| bad(UPDATED_AT, updated_at))?
                .with_timezone(&Utc),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SnapshotMetadata {
        SnapshotMetadata {
            version: Version::new(7),
            sha256: "ab".repeat(32),
            crc64nvme: Some("0123456789abcdef".into()),
            size: 8192,
            writer: "cellar-test".into(),
            updated_at: DateTime::parse_from_rfc3339("2026-11-24T10:00:00.123Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    #[test]
    fn round_trips_through_raw_form() {
        let raw = sample().to_raw();
        assert_eq!(raw["cellar-version"], "7");
        assert_eq!(raw["cellar-updated-at"], "2026-11-24T10:00:00.123Z");
        assert_eq!(raw["cellar-crc64nvme"], "0123456789abcdef");
        assert_eq!(SnapshotMetadata::from_raw(&raw).unwrap(), sample());
    }

    #[test]
    fn objects_from_before_the_crc_still_parse() {
        let mut raw = sample().to_raw();
        raw.remove("cellar-crc64nvme");
        let parsed = SnapshotMetadata::from_raw(&raw).unwrap();
        assert_eq!(parsed.crc64nvme, None);
        assert_eq!(parsed.sha256, sample().sha256);
    }

    #[test]
    fn names_the_missing_or_bad_key() {
        let mut raw = sample().to_raw();
        raw.insert("cellar-version".into(), "seven".into());
        assert!(
            SnapshotMetadata::from_raw(&raw)
                .unwrap_err()
                .contains("cellar-version")
        );
        raw.remove("cellar-sha256");
        raw.insert("cellar-version".into(), "7".into());
        assert!(
            SnapshotMetadata::from_raw(&raw)
                .unwrap_err()
                .contains("cellar-sha256")
        );
    }
}
