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
const CHECKSUM: &str = "cellar-checksum";
const FORMAT: &str = "cellar-format";
const BASE_VERSION: &str = "cellar-base-version";
const LOG_FLOOR: &str = "cellar-log-floor";
const RESTORED_FROM: &str = "cellar-restored-from";
/// How a kept snapshot's body is encoded (its other keys describe the SQLite file).
pub(crate) const ENCODING: &str = "cellar-encoding";
/// The one encoding written: a zstd frame.
pub(crate) const ZSTD: &str = "zstd";

/// The format this release writes: a snapshot plus a log of changes (`docs/delta-sync.md`).
/// Format 1, the snapshot alone, is read as a snapshot with an empty log.
pub const FORMAT_VERSION: u32 = 2;

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
    /// The rolling checksum of the database's pages (`cellar-checksum`), against which the
    /// log's first change is checked; `None` on snapshots of format 1.
    pub checksum: Option<u64>,
    /// Changes after this version may still be in the log (`cellar-log-floor`); those at
    /// or below it were deleted by compaction. `None`: none was ever deleted.
    pub log_floor: Option<Version>,
}

impl SnapshotMetadata {
    /// The key/value form sent to the store.
    pub fn to_raw(&self) -> RawMetadata {
        let mut raw = common_raw(
            self.version,
            &self.sha256,
            self.size,
            &self.writer,
            self.updated_at,
        );
        if let Some(crc) = &self.crc64nvme {
            raw.insert(CRC64NVME.to_owned(), crc.clone());
        }
        if let Some(checksum) = self.checksum {
            raw.insert(CHECKSUM.to_owned(), format!("{checksum:016x}"));
            raw.insert(FORMAT.to_owned(), FORMAT_VERSION.to_string());
        }
        if let Some(floor) = self.log_floor {
            raw.insert(LOG_FLOOR.to_owned(), floor.to_string());
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
        if let Some(format) = raw.get(FORMAT)
            && format
                .parse::<u32>()
                .map_or(true, |format| format > FORMAT_VERSION)
        {
            return Err(format!(
                "the object is in format {format}, newer than this release reads \
                 ({FORMAT_VERSION}); upgrade Cellar"
            ));
        }
        let version = field(VERSION)?;
        let size = field(SIZE)?;
        let updated_at = field(UPDATED_AT)?;
        let log_floor = raw
            .get(LOG_FLOOR)
            .map(|floor| {
                floor
                    .parse()
                    .map_err(|_| format!("metadata key {LOG_FLOOR} has a bad value {floor:?}"))
            })
            .transpose()?;
        Ok(Self {
            checksum: optional_checksum(raw)?,
            log_floor,
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

/// What a change in the log says about itself (`docs/delta-sync.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeMetadata {
    /// The version the database is at once the change is applied.
    pub version: Version,
    /// The version it applies to.
    pub base_version: Version,
    /// Hex SHA-256 of the stored bytes: how a writer whose `PUT` failed recognises its own.
    pub sha256: String,
    /// Size of the stored (compressed) bytes.
    pub size: u64,
    /// Instance id of the writer.
    pub writer: String,
    /// When it was written.
    pub updated_at: DateTime<Utc>,
    /// The rolling checksum of the database after the change.
    pub checksum: u64,
    /// The version whose content the change brought back, if it is a restore.
    pub restored_from: Option<Version>,
}

impl ChangeMetadata {
    /// The key/value form sent to the store.
    pub fn to_raw(&self) -> RawMetadata {
        let mut raw = common_raw(
            self.version,
            &self.sha256,
            self.size,
            &self.writer,
            self.updated_at,
        );
        raw.extend([
            (BASE_VERSION.to_owned(), self.base_version.to_string()),
            (CHECKSUM.to_owned(), format!("{:016x}", self.checksum)),
            (FORMAT.to_owned(), FORMAT_VERSION.to_string()),
        ]);
        if let Some(origin) = self.restored_from {
            raw.insert(RESTORED_FROM.to_owned(), origin.to_string());
        }
        raw
    }

    /// Parses what the store returned; the error names the missing or malformed key.
    pub fn from_raw(raw: &RawMetadata) -> Result<Self, String> {
        let restored_from =
            match raw.get(RESTORED_FROM) {
                Some(origin) => Some(origin.parse().map_err(|_| {
                    format!("metadata key {RESTORED_FROM} has a bad value {origin:?}")
                })?),
                None => None,
            };
        let snapshot_like = SnapshotMetadata::from_raw(raw)?;
        let base = raw
            .get(BASE_VERSION)
            .ok_or_else(|| format!("metadata key {BASE_VERSION} is missing"))?;
        Ok(Self {
            version: snapshot_like.version,
            base_version: base
                .parse()
                .map_err(|_| format!("metadata key {BASE_VERSION} has a bad value {base:?}"))?,
            sha256: snapshot_like.sha256,
            size: snapshot_like.size,
            writer: snapshot_like.writer,
            updated_at: snapshot_like.updated_at,
            checksum: snapshot_like
                .checksum
                .ok_or_else(|| format!("metadata key {CHECKSUM} is missing"))?,
            restored_from,
        })
    }
}

/// The keys every object of Cellar's carries.
fn common_raw(
    version: Version,
    sha256: &str,
    size: u64,
    writer: &str,
    updated_at: DateTime<Utc>,
) -> RawMetadata {
    BTreeMap::from([
        (VERSION.to_owned(), version.to_string()),
        (SHA256.to_owned(), sha256.to_owned()),
        (SIZE.to_owned(), size.to_string()),
        (WRITER.to_owned(), writer.to_owned()),
        (
            UPDATED_AT.to_owned(),
            updated_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        ),
    ])
}

fn optional_checksum(raw: &RawMetadata) -> Result<Option<u64>, String> {
    raw.get(CHECKSUM)
        .map(|hex| {
            u64::from_str_radix(hex, 16)
                .map_err(|_| format!("metadata key {CHECKSUM} has a bad value {hex:?}"))
        })
        .transpose()
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
            checksum: Some(0x0123_4567_89ab_cdef),
            log_floor: Some(Version::new(3)),
        }
    }

    #[test]
    fn changes_round_trip_and_newer_formats_are_refused() {
        let change = ChangeMetadata {
            version: Version::new(8),
            base_version: Version::new(7),
            sha256: "cd".repeat(32),
            size: 73,
            writer: "cellar-test".into(),
            updated_at: sample().updated_at,
            checksum: 42,
            restored_from: Some(Version::new(3)),
        };
        let mut raw = change.to_raw();
        assert_eq!(raw["cellar-base-version"], "7");
        assert_eq!(ChangeMetadata::from_raw(&raw).unwrap(), change);
        raw.insert("cellar-format".into(), "3".into());
        assert!(
            ChangeMetadata::from_raw(&raw)
                .unwrap_err()
                .contains("upgrade")
        );
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
