//! The bytes an upload carries: a consistent image of the database, stamped with its version.
//!
//! The image is taken with `sqlite3_serialize` on the request's own connection while its
//! transaction is still open: it reads every page through the pager, so it holds exactly
//! the request's writes and nobody else's, and the local file is not committed until the
//! bucket has the image (see `docs/sync-protocol.md`).
//!
//! Stamping: SQLite's header has a change counter (offset 24), the page count (28) and
//! the counter value that page count is valid for (92). SQLite writes all three at commit;
//! an image taken inside a transaction has not had them written yet, so the stamp writes
//! them, with the low 32 bits of the Cellar version as the counter. That makes every
//! version's bytes unique, so S3's content-hash ETags differ for every version and a stale
//! writer can never pass `If-Match` after the same content was uploaded again (ABA).

use crate::checksum::{crc64nvme_hex, sha256_hex};
use crate::version::Version;
use bytes::{Bytes, BytesMut};
use rusqlite::{Connection, MAIN_DB};

const CHANGE_COUNTER: usize = 24;
const PAGE_COUNT: usize = 28;
const PAGE_SIZE: usize = 16;
const VERSION_VALID_FOR: usize = 92;
/// Bytes of SQLite's file header: what tells a database file from anything else.
pub const HEADER_LEN: usize = 100;

/// A database image ready to upload.
///
/// The bytes are shared: [`Snapshot::body`] hands them to the store without copying (an
/// image is as large as the database), and [`Snapshot::stamp`] copies them only if a
/// store still holds an earlier body.
#[derive(Clone, Debug)]
pub struct Snapshot {
    bytes: Bytes,
}

impl Snapshot {
    /// Copies the database as `conn` sees it, uncommitted writes included.
    pub fn take(conn: &Connection) -> rusqlite::Result<Self> {
        let data = conn.serialize(MAIN_DB)?;
        Ok(Self {
            bytes: Bytes::from(data.to_vec()),
        })
    }

    /// Wraps bytes that already form a database image (a pending upload, a pushed file).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self {
            bytes: Bytes::from(bytes),
        }
    }

    /// Writes the header fields SQLite writes at commit, with `version` as change counter.
    /// Does nothing to an image too short to be a database.
    pub fn stamp(&mut self, version: Version) {
        if self.bytes.len() < HEADER_LEN {
            return;
        }
        let shared = std::mem::take(&mut self.bytes);
        let mut bytes = shared
            .try_into_mut()
            .unwrap_or_else(|held| BytesMut::from(&held[..]));
        let counter = (version.get() as u32).to_be_bytes();
        let pages = (bytes.len() / page_size(&bytes)) as u32;
        bytes[CHANGE_COUNTER..CHANGE_COUNTER + 4].copy_from_slice(&counter);
        bytes[VERSION_VALID_FOR..VERSION_VALID_FOR + 4].copy_from_slice(&counter);
        bytes[PAGE_COUNT..PAGE_COUNT + 4].copy_from_slice(&pages.to_be_bytes());
        self.bytes = bytes.freeze();
    }

    /// The image as an upload body, sharing its bytes.
    pub fn body(&self) -> Bytes {
        self.bytes.clone()
    }

    /// Hex SHA-256 of the image, as carried in `cellar-sha256`.
    pub fn sha256(&self) -> String {
        sha256_hex(&self.bytes)
    }

    /// Hex CRC-64/NVME of the image, as carried in `cellar-crc64nvme`.
    pub fn crc64nvme(&self) -> String {
        crc64nvme_hex(&self.bytes)
    }

    /// The image.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// True for an empty image.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// SQLite's own verdict on the database `conn` reads: `"ok"`, or what `PRAGMA
/// integrity_check` found wrong (or why it could not run). The one check every path that
/// takes a database from outside uses: a download kept aside, a pushed file, a verify.
pub fn integrity_verdict(conn: &Connection) -> String {
    conn.query_row("PRAGMA integrity_check", [], |row| row.get::<_, String>(0))
        .unwrap_or_else(|err| err.to_string())
}

/// True when `bytes` start with the SQLite file header.
pub fn looks_like_sqlite(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN && bytes.starts_with(b"SQLite format 3\0")
}

fn page_size(image: &[u8]) -> usize {
    match u16::from_be_bytes([image[PAGE_SIZE], image[PAGE_SIZE + 1]]) {
        1 => 65536,
        0 => 4096,
        n => usize::from(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_with_rows(n: i64) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t(x); BEGIN;").unwrap();
        for i in 0..n {
            conn.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        conn
    }

    #[test]
    fn same_content_stamped_with_different_versions_hashes_differently() {
        let conn = open_with_rows(3);
        let mut a = Snapshot::take(&conn).unwrap();
        let mut b = a.clone();
        a.stamp(Version::new(5));
        b.stamp(Version::new(6));
        assert_ne!(a.sha256(), b.sha256());
    }

    #[test]
    fn stamping_again_never_changes_a_body_already_handed_out() {
        let conn = open_with_rows(3);
        let mut image = Snapshot::take(&conn).unwrap();
        image.stamp(Version::new(5));
        let uploaded = image.body();
        image.stamp(Version::new(6));
        assert_eq!(
            uploaded[CHANGE_COUNTER + 3],
            5,
            "a store may still hold the first body"
        );
        assert_eq!(image.bytes()[CHANGE_COUNTER + 3], 6);
    }

    #[test]
    fn an_image_taken_inside_a_transaction_holds_its_writes_and_is_valid_once_stamped() {
        let conn = open_with_rows(500);
        let mut image = Snapshot::take(&conn).unwrap();
        image.stamp(Version::new(9));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copy.sqlite");
        std::fs::write(&path, image.bytes()).unwrap();
        let copy = Connection::open(&path).unwrap();
        let check: String = copy
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        let rows: i64 = copy
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!((check.as_str(), rows), ("ok", 500));
        assert!(looks_like_sqlite(image.bytes()));
    }
}
