//! The whole-body checksums an object's metadata carries, and checking a body against them.
//!
//! `cellar-sha256` (DESIGN §3) is the checksum of record: every download is checked
//! against it before it replaces the local file. `cellar-crc64nvme` is a fast one beside
//! it: CRC-64/NVME, S3's own full-object checksum, computed with carry-less multiplication
//! at many GB/s where SHA-256 manages about 1.6 GB/s. A download is checked against the CRC
//! while it arrives, so a large database can answer its first read as soon as its last
//! byte is in; SHA-256 follows before the file is installed (see `sync::staged`). Objects
//! without a CRC (uploaded before it existed) are checked against SHA-256 as they arrive.

use std::collections::BTreeMap;
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
    check.update(0, 0, body);
    check.finish().map(|_| ())
}

/// A body checked piece by piece as it arrives, possibly in parts that arrive side by side.
///
/// The CRC is kept per part and the parts' CRCs are combined in order at the end (a CRC of
/// two pieces follows from theirs), so parts may arrive in any order. SHA-256 has no such
/// property: a check that includes it needs the pieces in order ([`BodyCheck::in_order`]).
#[derive(Debug)]
pub struct BodyCheck {
    expected_size: u64,
    received: u64,
    /// The CRC of each part so far, and the expected CRC of the whole.
    crc: Option<(PartCrcs, String)>,
    sha256: Option<InOrderSha256>,
}

/// The CRC of each part so far and its length, by the part's first byte.
type PartCrcs = BTreeMap<u64, (Crc, u64)>;

#[derive(Debug)]
struct InOrderSha256 {
    hasher: Sha256,
    /// The offset of the next byte it needs; a piece anywhere else spoils the check.
    next: Option<u64>,
    expected: String,
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
                .map(|expected| (BTreeMap::new(), expected)),
            sha256: Some(InOrderSha256 {
                hasher: Sha256::new(),
                next: Some(0),
                expected: metadata.sha256.clone(),
            }),
        }
    }

    /// True when the pieces must arrive in order (SHA-256 is among the checks).
    pub fn in_order(&self) -> bool {
        self.sha256.is_some()
    }

    /// Adds `piece`, found at `offset` of the body, in the part that starts at `part`.
    /// The pieces of one part must come in order.
    pub fn update(&mut self, part: u64, offset: u64, piece: &[u8]) {
        let len = piece.len() as u64;
        self.received += len;
        if let Some((parts, _)) = &mut self.crc {
            let (crc, part_len) = parts
                .entry(part)
                .or_insert_with(|| (Crc::new(CrcAlgorithm::Crc64Nvme), 0));
            crc.update(piece);
            *part_len += len;
        }
        if let Some(sha) = &mut self.sha256 {
            if sha.next == Some(offset) {
                sha.hasher.update(piece);
                sha.next = Some(offset + len);
            } else {
                sha.next = None;
            }
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
        if let Some((parts, expected)) = self.crc {
            let actual = combined_crc(parts)
                .map(format_crc)
                .ok_or("the parts received leave gaps or overlap")?;
            if !actual.eq_ignore_ascii_case(&expected) {
                return Err(format!(
                    "cellar-crc64nvme says {expected} but the bytes received give {actual}"
                ));
            }
        }
        let sha256 = self.sha256.is_some();
        if let Some(sha) = self.sha256 {
            if sha.next.is_none() {
                return Err(
                    "the body arrived out of order, so SHA-256 could not be checked".into(),
                );
            }
            let actual = hex::encode(sha.hasher.finalize());
            if !actual.eq_ignore_ascii_case(&sha.expected) {
                return Err(format!(
                    "cellar-sha256 says {} but the bytes received hash to {actual}",
                    sha.expected
                ));
            }
        }
        Ok(Checked { sha256 })
    }
}

/// The CRC of the whole body from its parts' CRCs; `None` unless the parts follow each
/// other without gaps from the first byte.
fn combined_crc(parts: PartCrcs) -> Option<u64> {
    let mut whole: Option<(u64, u64)> = None; // (crc, length so far)
    for (start, (crc, len)) in parts {
        let crc = crc.finalize();
        whole = Some(match whole {
            None if start == 0 => (crc, len),
            Some((so_far, end)) if start == end => (
                crc_fast::checksum_combine(CrcAlgorithm::Crc64Nvme, so_far, crc, len),
                end + len,
            ),
            _ => return None,
        });
    }
    Some(whole.map_or_else(
        || crc_fast::checksum(CrcAlgorithm::Crc64Nvme, b""),
        |(crc, _)| crc,
    ))
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::version::Version;

    fn metadata_of(body: &[u8], crc: bool) -> SnapshotMetadata {
        SnapshotMetadata {
            version: Version::new(1),
            sha256: sha256_hex(body),
            crc64nvme: crc.then(|| crc64nvme_hex(body)),
            size: body.len() as u64,
            writer: "test".into(),
            updated_at: Utc::now(),
            checksum: None,
            log_floor: None,
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
        for (i, piece) in body.chunks(7_919).enumerate() {
            check.update(0, (i * 7_919) as u64, piece);
        }
        assert_eq!(check.finish(), Ok(Checked { sha256: true }));
    }

    #[test]
    fn arriving_bodies_are_checked_by_crc_when_there_is_one() {
        let body = b"SQLite format 3\0 and more".to_vec();
        let mut check = BodyCheck::arriving(&metadata_of(&body, true));
        check.update(0, 0, &body);
        assert_eq!(check.finish(), Ok(Checked { sha256: false }));
        let mut check = BodyCheck::arriving(&metadata_of(&body, false));
        check.update(0, 0, &body);
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

    /// Feeds `body` as parts of `part` bytes, in the order `order` gives their indexes, each
    /// part in pieces of 1 000 bytes.
    fn in_parts(check: &mut BodyCheck, body: &[u8], part: usize, order: &[usize]) {
        for &index in order {
            let start = index * part;
            let end = (start + part).min(body.len());
            for piece_start in (start..end).step_by(1_000) {
                let piece = &body[piece_start..(piece_start + 1_000).min(end)];
                check.update(start as u64, piece_start as u64, piece);
            }
        }
    }

    #[test]
    fn parts_arriving_in_any_order_give_the_crc_of_the_whole() {
        let body: Vec<u8> = (0..25_000u32).map(|i| (i % 241) as u8).collect();
        let metadata = metadata_of(&body, true);
        let mut check = BodyCheck::arriving(&metadata);
        assert!(!check.in_order());
        in_parts(&mut check, &body, 10_000, &[2, 0, 1]);
        assert_eq!(check.finish(), Ok(Checked { sha256: false }));
    }

    #[test]
    fn a_missing_or_repeated_part_is_refused() {
        let body: Vec<u8> = (0..25_000u32).map(|i| (i % 241) as u8).collect();
        let metadata = metadata_of(&body, true);
        let mut missing = BodyCheck::arriving(&metadata);
        in_parts(&mut missing, &body, 10_000, &[0, 2]);
        assert!(missing.finish().unwrap_err().contains("cellar-size"));
        // The right size, but part 1 twice and part 2 never: the parts leave a gap.
        let mut gap = BodyCheck::arriving(&metadata);
        in_parts(&mut gap, &body, 10_000, &[0, 1]);
        gap.update(10_000, 20_000, &body[10_000..15_000]);
        let error = gap.finish().unwrap_err();
        assert!(
            error.contains("gaps") || error.contains("cellar-crc64nvme"),
            "{error}"
        );
    }

    #[test]
    fn sha256_needs_the_pieces_in_order() {
        let body: Vec<u8> = (0..25_000u32).map(|i| (i % 241) as u8).collect();
        let metadata = metadata_of(&body, false);
        let mut in_order = BodyCheck::arriving(&metadata);
        assert!(in_order.in_order());
        in_parts(&mut in_order, &body, 10_000, &[0, 1, 2]);
        assert_eq!(in_order.finish(), Ok(Checked { sha256: true }));
        let mut shuffled = BodyCheck::arriving(&metadata);
        in_parts(&mut shuffled, &body, 10_000, &[1, 0, 2]);
        assert!(shuffled.finish().unwrap_err().contains("out of order"));
    }
}
