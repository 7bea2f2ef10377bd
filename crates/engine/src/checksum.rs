//! The whole-body checksums an object's metadata carries, and checking a body against them.
//!
//! `cellar-sha256` (DESIGN §3) is the checksum of record: every download is checked
//! against it before it replaces the local file. `cellar-crc64nvme` is a fast one beside
//! it: CRC-64/NVME, S3's own full-object checksum, computed with carry-less multiplication
//! at many GB/s where SHA-256 manages about 1.6 GB/s. A download is checked against the CRC
//! while it arrives, so a large database can answer its first read as soon as its last
//! byte is in; SHA-256 follows before the file is installed (see `sync::staged`). Objects
//! without a CRC (uploaded before it existed) are checked against SHA-256 as they arrive.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::Path;

use crc_fast::{CrcAlgorithm, Digest as Crc};
use sha2::{Digest, Sha256};

use crate::metadata::SnapshotMetadata;

/// Hex SHA-256 of `bytes`, as carried in `cellar-sha256`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hex SHA-256 of the file at `path`, read in pieces.
pub fn sha256_of_file(path: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    io::copy(
        &mut BufReader::with_capacity(1 << 20, File::open(path)?),
        &mut hasher,
    )?;
    Ok(hex::encode(hasher.finalize()))
}

/// Hex CRC-64/NVME of `bytes`, as carried in `cellar-crc64nvme`.
pub fn crc64nvme_hex(bytes: &[u8]) -> String {
    format_crc(crc_fast::checksum(CrcAlgorithm::Crc64Nvme, bytes))
}

fn format_crc(crc: u64) -> String {
    format!("{crc:016x}")
}

/// Checks a whole body against every checksum its metadata carries, and its size.
/// The error says which one failed, with both values.
pub fn check_body(metadata: &SnapshotMetadata, body: &[u8]) -> Result<(), String> {
    let mut check = BodyCheck::full(metadata);
    check.update(body);
    check.finish().map(|_| ())
}

/// A body checked piece by piece as it arrives.
#[derive(Debug)]
pub struct BodyCheck {
    expected_size: u64,
    received: u64,
    crc: Option<(Crc, String)>,
    sha256: Option<(Sha256, String)>,
}

/// What [`BodyCheck::finish`] found in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked {
    /// SHA-256 was among the checks (it is left out when a CRC is there to check).
    pub sha256: bool,
}

impl BodyCheck {
    /// The fast check a download gets while it arrives: the CRC when the metadata has one,
    /// SHA-256 otherwise.
    pub fn arriving(metadata: &SnapshotMetadata) -> Self {
        let mut check = Self::full(metadata);
        if check.crc.is_some() {
            check.sha256 = None;
        }
        check
    }

    /// Every checksum the metadata carries.
    pub fn full(metadata: &SnapshotMetadata) -> Self {
        Self {
            expected_size: metadata.size,
            received: 0,
            crc: metadata
                .crc64nvme
                .clone()
                .map(|expected| (Crc::new(CrcAlgorithm::Crc64Nvme), expected)),
            sha256: Some((Sha256::new(), metadata.sha256.clone())),
        }
    }

    /// Adds the next piece of the body.
    pub fn update(&mut self, piece: &[u8]) {
        self.received += piece.len() as u64;
        if let Some((crc, _)) = &mut self.crc {
            crc.update(piece);
        }
        if let Some((sha, _)) = &mut self.sha256 {
            sha.update(piece);
        }
    }

    /// Compares what arrived with what the metadata says.
    pub fn finish(self) -> Result<Checked, String> {
        if self.received != self.expected_size {
            return Err(format!(
                "cellar-size says {} bytes but {} were received",
                self.expected_size, self.received
            ));
        }
        if let Some((crc, expected)) = self.crc {
            let actual = format_crc(crc.finalize());
            if !actual.eq_ignore_ascii_case(&expected) {
                return Err(format!(
                    "cellar-crc64nvme says {expected} but the bytes received give {actual}"
                ));
            }
        }
        let sha256 = self.sha256.is_some();
        if let Some((sha, expected)) = self.sha256 {
            let actual = hex::encode(sha.finalize());
            if !actual.eq_ignore_ascii_case(&expected) {
                return Err(format!(
                    "cellar-sha256 says {expected} but the bytes received hash to {actual}"
                ));
            }
        }
        Ok(Checked { sha256 })
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::Version;

    fn metadata_of(body: &[u8], crc: bool) -> SnapshotMetadata {
        SnapshotMetadata {
            version: Version::new(1),
            sha256: sha256_hex(body),
            crc64nvme: crc.then(|| crc64nvme_hex(body)),
            size: body.len() as u64,
            writer: "test".into(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn a_file_hashes_like_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(sha256_of_file(&path).unwrap(), sha256_hex(&bytes));
    }

    #[test]
    fn crc64nvme_matches_the_published_check_value() {
        // CRC-64/NVME of "123456789" (the catalogue's check value, as S3 computes it).
        assert_eq!(crc64nvme_hex(b"123456789"), "ae8b14860a799888");
    }

    #[test]
    fn pieces_give_the_same_answer_as_the_whole() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let metadata = metadata_of(&body, true);
        let mut check = BodyCheck::full(&metadata);
        for piece in body.chunks(7_919) {
            check.update(piece);
        }
        assert_eq!(check.finish(), Ok(Checked { sha256: true }));
    }

    #[test]
    fn arriving_bodies_are_checked_by_crc_when_there_is_one() {
        let body = b"SQLite format 3\0 and more".to_vec();
        let mut check = BodyCheck::arriving(&metadata_of(&body, true));
        check.update(&body);
        assert_eq!(check.finish(), Ok(Checked { sha256: false }));
        let mut check = BodyCheck::arriving(&metadata_of(&body, false));
        check.update(&body);
        assert_eq!(check.finish(), Ok(Checked { sha256: true }));
    }

    #[test]
    fn each_mismatch_names_its_checksum() {
        let body = b"the real body".to_vec();
        let metadata = metadata_of(&body, true);
        let flipped = b"the reel body".to_vec();
        let crc_error = check_body(&metadata, &flipped).unwrap_err();
        assert!(crc_error.contains("cellar-crc64nvme"), "{crc_error}");
        let sha_only = metadata_of(&body, false);
        let sha_error = check_body(&sha_only, &flipped).unwrap_err();
        assert!(sha_error.contains("cellar-sha256"), "{sha_error}");
        let size_error = check_body(&metadata, b"short").unwrap_err();
        assert!(size_error.contains("cellar-size"), "{size_error}");
    }

    #[test]
    fn a_crc_that_matches_does_not_excuse_a_wrong_sha256() {
        let body = b"body".to_vec();
        let mut metadata = metadata_of(&body, true);
        metadata.sha256 = sha256_hex(b"another body");
        assert!(
            check_body(&metadata, &body)
                .unwrap_err()
                .contains("cellar-sha256")
        );
    }
}
