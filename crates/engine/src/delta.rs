//! Deltas: the pages one transaction changed, in the format of a log object
//! (`docs/delta-sync.md`, "A log object"), and the rolling checksum that chains them.
//!
//! [`capture`] reads a delta while its transaction is still open: the rollback journal holds
//! the original of every page SQLite made writable, `sqlite_dbpage` the new content. Three
//! things SQLite does would make the captured pages differ from what COMMIT writes, and
//! are handled here:
//!
//! - A free-list leaf that was free when the transaction began is reused without being
//!   journaled (its content does not matter to SQLite), and a savepoint rolled back can
//!   leave it changed and free again. Capture compares every leaf listed on the free-list
//!   trunk pages the transaction changed with the database file.
//! - Without `secure_delete`, a page freed in the transaction may be left unwritten at
//!   COMMIT while `sqlite_dbpage` shows its content from before. Capture refuses such a
//!   connection; the bundled SQLite is built with `secure_delete` on (`.cargo/config.toml`).
//! - In `auto_vacuum = FULL`, COMMIT moves pages to drop free ones; capture does it first.
//!
//! [`apply`] writes a run of deltas (one or more, composed in memory) through
//! `sqlite_dbpage` in the receiver's own transaction, underneath SQLite's b-tree layer:
//! nothing else runs in that transaction, and [`forget_cached_pages`] follows its end.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::Path;

use crc_fast::{CrcAlgorithm, Digest};
use rusqlite::Connection;

use crate::version::Version;

/// The first bytes of every delta, before compression.
const MAGIC: &[u8; 8] = b"CLDELTA1";
/// Magic, page size, two versions, two page counts, two checksums, flags, record count.
const HEADER_LEN: usize = 8 + 4 + 8 + 8 + 4 + 4 + 8 + 8 + 1 + 4;
/// A record's page number and kind, before its page.
const RECORD_HEAD_LEN: usize = 4 + 1;
/// zstd's default: a one-row update compresses as well as at higher levels.
const ZSTD_LEVEL: i32 = 3;
/// Bit 0 of the flags byte: the delta is a whole image.
const FLAG_REPLACE: u8 = 1;

/// Page 1's bytes SQLite rewrites at every commit (change counter, version-valid-for,
/// SQLite version): left out of checksums and XOR records, so that every copy keeps its
/// own counters (which tell its connections their cache is stale) and still holds the same
/// logical pages.
const COMMIT_COUNTERS: [Range<usize>; 2] = [24..28, 92..100];
/// Page 1's page count. SQLite may set it only at COMMIT, so page 1 is always compared
/// and checksummed with the count it is (or will be) committed with.
const HEADER_PAGE_COUNT: Range<usize> = 28..32;
/// Page 1: the first free-list trunk page.
const FIRST_TRUNK: usize = 32;
/// Page 1: the schema cookie, which tells connections to reload the schema.
const SCHEMA_COOKIE: usize = 40;
/// Page 1: the bytes reserved at the end of every page.
const RESERVED_BYTES: usize = 20;
/// Page 1: the page size (1 meaning 65536).
const PAGE_SIZE_FIELD: Range<usize> = 16..18;
/// The start of every SQLite file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// SQLite never stores anything in the page holding this file offset (its locks live there).
const PENDING_BYTE: u64 = 0x4000_0000;

/// The first bytes of a rollback journal's header once it is synced; before that they
/// are zero, and so is the record count.
const JOURNAL_MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];
/// Magic, record count, checksum seed, original page count, sector size, page size.
const JOURNAL_HEADER_LEN: usize = 28;
/// A journal header's record count when the records run to the end of the file.
const JOURNAL_UNCOUNTED: [u32; 2] = [0, u32::MAX];

/// Why a delta could not be read, captured or applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeltaError {
    /// Bytes that are not a delta (or a journal, or an image) this code can read.
    #[error("not a readable delta: {0}")]
    Corrupt(String),
    /// The database is not the one the delta starts from, or applying it did not give the
    /// writer's result: the receiver must download the database afresh.
    #[error(
        "the database does not match the delta ({stage} it): expected checksum {expected:016x}, found {found:016x}"
    )]
    Mismatch {
        /// The checksum the delta carries.
        expected: u64,
        /// The receiver's.
        found: u64,
        /// `before` or `after` applying the delta.
        stage: &'static str,
    },
    /// This transaction or database cannot be captured or applied page by page: the
    /// caller sends or installs the whole database instead.
    #[error("cannot be done page by page: {0}")]
    Unsupported(String),
    /// SQLite failed.
    #[error("SQLite: {0}")]
    Sql(#[from] rusqlite::Error),
    /// Reading the journal or the database file failed.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

/// How a record carries its page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// The XOR of the old and the new page: zero where nothing changed, so it compresses to
    /// almost nothing, and it runs both ways (old = new XOR record).
    Xor = 0,
    /// The new page whole: past the old end of the file.
    New = 1,
    /// The old page whole: past the new end of the file (kept for history).
    Removed = 2,
}

impl RecordKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Self::Xor),
            1 => Some(Self::New),
            2 => Some(Self::Removed),
            _ => None,
        }
    }
}

/// One changed page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PageRecord {
    pub(crate) pgno: u32,
    pub(crate) kind: RecordKind,
    /// Exactly one page.
    pub(crate) bytes: Vec<u8>,
}

/// The change from one version of a database to the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Delta {
    pub(crate) page_size: u32,
    pub(crate) base_version: Version,
    pub(crate) version: Version,
    pub(crate) pages_before: u32,
    pub(crate) pages_after: u32,
    pub(crate) checksum_before: u64,
    pub(crate) checksum_after: u64,
    /// A whole image: every page as `New`, applies on any base (used for last-write-wins
    /// overwrites, pushes, first versions).
    pub(crate) replace: bool,
    /// By page number, ascending, each page once.
    pub(crate) records: Vec<PageRecord>,
}

impl Delta {
    /// The log object's bytes: a zstd frame, with its content checksum, of the header and
    /// the records, all numbers big-endian.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, DeltaError> {
        let record_count = u32::try_from(self.records.len())
            .map_err(|_| DeltaError::Corrupt("more records than page numbers".into()))?;
        if let Some(record) = self
            .records
            .iter()
            .find(|record| record.bytes.len() != self.page_size as usize)
        {
            return Err(DeltaError::Corrupt(format!(
                "page {} has {} bytes, not a page of {}",
                record.pgno,
                record.bytes.len(),
                self.page_size
            )));
        }
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?;
        encoder.include_checksum(true)?;
        encoder.write_all(&self.header(record_count))?;
        for record in &self.records {
            encoder.write_all(&record.pgno.to_be_bytes())?;
            encoder.write_all(&[record.kind as u8])?;
            encoder.write_all(&record.bytes)?;
        }
        Ok(encoder.finish()?)
    }

    fn header(&self, record_count: u32) -> Vec<u8> {
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&self.page_size.to_be_bytes());
        header.extend_from_slice(&self.base_version.get().to_be_bytes());
        header.extend_from_slice(&self.version.get().to_be_bytes());
        header.extend_from_slice(&self.pages_before.to_be_bytes());
        header.extend_from_slice(&self.pages_after.to_be_bytes());
        header.extend_from_slice(&self.checksum_before.to_be_bytes());
        header.extend_from_slice(&self.checksum_after.to_be_bytes());
        header.push(if self.replace { FLAG_REPLACE } else { 0 });
        header.extend_from_slice(&record_count.to_be_bytes());
        header
    }

    /// Reads a log object's bytes, checking everything [`Delta::encode`] promises. Any
    /// input gives a delta or an error; the output is read as it is decompressed and never
    /// exceeds what the header's page counts allow, so a small object cannot expand into
    /// unbounded memory.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DeltaError> {
        let mut plain = zstd::stream::read::Decoder::with_buffer(bytes)
            .map_err(|err| DeltaError::Corrupt(format!("zstd: {err}")))?;
        let mut header = [0; HEADER_LEN];
        read_exactly(&mut plain, &mut header, "the header")?;
        let (mut delta, record_count) = Self::parse_header(&header)?;
        let mut rules = RecordRules::new(&delta, record_count)?;
        for _ in 0..record_count {
            let record = read_record(&mut plain, delta.page_size)?;
            rules.check(&record)?;
            delta.records.push(record);
        }
        rules.finish()?;
        // Reading past the last record also makes zstd check the frame's checksum.
        let mut past_end = [0; 1];
        match plain.read(&mut past_end) {
            Ok(0) => Ok(delta),
            Ok(_) => Err(DeltaError::Corrupt("bytes after the last record".into())),
            Err(err) => Err(DeltaError::Corrupt(format!("zstd: {err}"))),
        }
    }

    fn parse_header(header: &[u8; HEADER_LEN]) -> Result<(Self, u32), DeltaError> {
        let mut fields = Fields(&header[MAGIC.len()..]);
        if &header[..MAGIC.len()] != MAGIC {
            return Err(DeltaError::Corrupt("no CLDELTA1 magic".into()));
        }
        let delta = Self {
            page_size: fields.u32(),
            base_version: Version::new(fields.u64()),
            version: Version::new(fields.u64()),
            pages_before: fields.u32(),
            pages_after: fields.u32(),
            checksum_before: fields.u64(),
            checksum_after: fields.u64(),
            replace: match fields.u8() {
                0 => false,
                FLAG_REPLACE => true,
                flags => return Err(DeltaError::Corrupt(format!("unknown flags {flags:#04x}"))),
            },
            records: Vec::new(),
        };
        check_page_size(delta.page_size)?;
        if delta.pages_after == 0 {
            return Err(DeltaError::Corrupt("a database of no pages".into()));
        }
        Ok((delta, fields.u32()))
    }

    /// A delta that replaces any database with `image` (a whole SQLite file). Its versions
    /// are zero: the caller sets them.
    pub(crate) fn from_image(image: &[u8]) -> Result<Self, DeltaError> {
        let page_size = image_page_size(image)?;
        let pages = image.len() / page_size as usize;
        if !image.len().is_multiple_of(page_size as usize) {
            return Err(DeltaError::Corrupt(format!(
                "an image of {} bytes is not whole pages of {page_size}",
                image.len()
            )));
        }
        let pages_after = u32::try_from(pages).map_err(|_| {
            DeltaError::Corrupt(format!("{pages} pages is more than SQLite allows"))
        })?;
        let records = image
            .chunks_exact(page_size as usize)
            .zip(1..)
            .map(|(page, pgno)| {
                let mut bytes = page.to_vec();
                if pgno == 1 {
                    set_header_page_count(&mut bytes, pages_after);
                }
                PageRecord {
                    pgno,
                    kind: RecordKind::New,
                    bytes,
                }
            })
            .collect();
        Ok(Self {
            page_size,
            base_version: Version::ZERO,
            version: Version::ZERO,
            pages_before: 0,
            pages_after,
            checksum_before: 0,
            checksum_after: image_checksum(image, page_size as usize),
            replace: true,
            records,
        })
    }

    /// The change from the database `old` (read once, page by page, `old_len` bytes) to the
    /// image `new` (whole SQLite files): how a restore or a push ships only the pages that
    /// differ from the copy it replaces, without holding that copy in memory. Databases of
    /// different page sizes are [`DeltaError::Unsupported`]. Its versions are zero: the
    /// caller sets them.
    pub(crate) fn between(
        mut old: impl Read,
        old_len: u64,
        new: &[u8],
    ) -> Result<Self, DeltaError> {
        let page_size = image_page_size(new)?;
        let size = page_size as usize;
        let pages_before = whole_pages(old_len, page_size)?;
        let pages_after = whole_pages(new.len() as u64, page_size)?;
        let new_page = |pgno: u32| &new[(pgno as usize - 1) * size..][..size];
        // The checksum before is summed on the way; the records' changes to it after.
        let (mut checksum_before, mut records) = (0, Records::new(0));
        let mut page = vec![0; size];
        for pgno in 1..=pages_before {
            old.read_exact(&mut page)?;
            if pgno == 1 && image_page_size(&page)? != page_size {
                return Err(DeltaError::Unsupported("the page size changed".into()));
            }
            checksum_before ^= committed_page_checksum(pgno, &page, pages_before);
            if pgno > pages_after {
                records.push(pgno, RecordKind::Removed, page.clone());
            } else if pgno == 1 || page != new_page(pgno) {
                let counts = (pages_before, pages_after);
                records.changed_counted(pgno, page.clone(), new_page(pgno).to_vec(), counts);
            }
        }
        for pgno in pages_before + 1..=pages_after {
            records.push(pgno, RecordKind::New, new_page(pgno).to_vec());
        }
        // The records' changes to the checksum, on top of the one summed on the way.
        records.checksum ^= checksum_before;
        let after = records.checksum;
        records.into_change(
            page_size,
            (pages_before, pages_after),
            checksum_before,
            after,
        )
    }

    /// The change from the database `old` (read once, page by page: `old_len` bytes at the
    /// rolling checksum `old_checksum`) to the version the run `deltas` makes of `snapshot`
    /// (read once, page by page, to its end; at `snapshot_checksum`, summed on the way when
    /// unknown): how a restore rebuilt from a snapshot ships only the pages that differ from
    /// the copy without the version ever being whole in memory. Only the pages the run
    /// touches are held (on both sides); where the copy differs on the others, the record
    /// is made as they stream past. Checked: the copy's checksum
    /// with the records must give the run's, so a copy that drifted from `old_checksum` is
    /// refused. Databases of different page sizes are [`DeltaError::Unsupported`]. Its
    /// versions are zero: the caller sets them.
    pub(crate) fn between_rebuilt(
        mut old: impl Read,
        old_len: u64,
        old_checksum: u64,
        mut snapshot: impl Read,
        snapshot_checksum: Option<u64>,
        deltas: Vec<Delta>,
    ) -> Result<Self, DeltaError> {
        let mut page = vec![0; 100];
        if !read_page(&mut snapshot, &mut page)? {
            return Err(DeltaError::Corrupt("an empty snapshot".into()));
        }
        let page_size = image_page_size(&page)?;
        let size = page_size as usize;
        page.resize(size, 0);
        if !read_page(&mut snapshot, &mut page[100..])? {
            return Err(DeltaError::Corrupt("a snapshot shorter than a page".into()));
        }
        let mut old_page = vec![0; size];
        if old_len > 0 {
            old.read_exact(&mut old_page[..100])?;
            if image_page_size(&old_page[..100])? != page_size {
                return Err(DeltaError::Unsupported("the page size changed".into()));
            }
        }
        let pages_before = whole_pages(old_len, page_size)?;
        let touched: BTreeSet<u32> = deltas
            .iter()
            .flat_map(|delta| delta.records.iter().map(|record| record.pgno))
            .chain([1])
            .collect();
        // The version's page count, where the run says it (else the snapshot's): a page the
        // run does not touch is the snapshot's up to it, and gone past it (a whole image
        // can leave fewer pages than the snapshot had).
        let version_pages = deltas.last().map(|delta| delta.pages_after);
        // The snapshot's pages the run reads, and the copy's beside them; the records of the
        // pages the run leaves as the snapshot has them, made as they stream past.
        let (mut held, mut held_old) = (BTreeMap::new(), BTreeMap::new());
        let mut untouched = Records::new(0);
        let (mut snapshot_pages, mut summed) = (0, 0);
        for pgno in 1..u32::MAX {
            let in_snapshot =
                pgno == snapshot_pages + 1 && (pgno == 1 || read_page(&mut snapshot, &mut page)?);
            let in_old = pgno <= pages_before;
            if !in_snapshot && !in_old {
                break;
            }
            if in_old {
                // Page 1's header was read with its page size.
                let from = if pgno == 1 { 100 } else { 0 };
                old.read_exact(&mut old_page[from..])?;
            }
            if in_snapshot {
                snapshot_pages = pgno;
                if snapshot_checksum.is_none() && pgno > 1 {
                    summed ^= page_checksum(pgno, &page);
                }
            }
            if touched.contains(&pgno) {
                if in_snapshot {
                    held.insert(pgno, page.clone());
                }
                if in_old {
                    held_old.insert(pgno, old_page.clone());
                }
            } else {
                let in_version = version_pages.map_or(in_snapshot, |pages| pgno <= pages);
                if in_version && !in_snapshot {
                    return Err(DeltaError::Corrupt(format!(
                        "page {pgno} of the version is in neither the snapshot nor a change"
                    )));
                }
                // Page 1 is always touched: no page count to set in a header here.
                match (in_old, in_version) {
                    // Most pages are the same on both sides: compared before any XOR.
                    (true, true) if page != old_page => untouched.changed(pgno, &old_page, &page),
                    (true, false) => untouched.push(pgno, RecordKind::Removed, old_page.clone()),
                    (false, true) => untouched.push(pgno, RecordKind::New, page.clone()),
                    _ => {}
                }
            }
        }
        let checksum = match snapshot_checksum {
            Some(checksum) => checksum,
            None => summed ^ committed_page_checksum(1, &held[&1], snapshot_pages),
        };
        let source = Held {
            pages: &held,
            count: snapshot_pages,
        };
        let run = Run::of(&source, page_size, deltas.into_iter().map(Ok), checksum)?;
        // The run's page count is its last change's: `version_pages` when there is one.
        let pages_after = run.count;
        let mut records = Records::new(old_checksum);
        for &pgno in &touched {
            let new = (pgno <= pages_after).then(|| run.page(pgno)).transpose()?;
            match (held_old.remove(&pgno), new) {
                (Some(old), Some(new)) => {
                    records.changed_counted(pgno, old, new, (pages_before, pages_after));
                }
                (Some(old), None) => records.push(pgno, RecordKind::Removed, old),
                (None, Some(new)) => records.push(pgno, RecordKind::New, new),
                (None, None) => {} // past both ends
            }
        }
        // The two sets of records, in page order; the checksum changes of both.
        records.checksum ^= untouched.checksum;
        records.records.append(&mut untouched.records);
        records.records.sort_by_key(|record| record.pgno);
        records.into_change(
            page_size,
            (pages_before, pages_after),
            old_checksum,
            run.checksum,
        )
    }

    /// The change that undoes this one, from its version back to its base: XOR records
    /// run both ways, a page it added goes and a page it removed comes back. `None` for a
    /// replace, which does not carry the pages it replaced.
    pub(crate) fn inverse(&self) -> Option<Self> {
        if self.replace {
            return None;
        }
        let records = self
            .records
            .iter()
            .map(|record| PageRecord {
                pgno: record.pgno,
                kind: match record.kind {
                    RecordKind::Xor => RecordKind::Xor,
                    RecordKind::New => RecordKind::Removed,
                    RecordKind::Removed => RecordKind::New,
                },
                bytes: record.bytes.clone(),
            })
            .collect();
        Some(Self {
            page_size: self.page_size,
            base_version: self.version,
            version: self.base_version,
            pages_before: self.pages_after,
            pages_after: self.pages_before,
            checksum_before: self.checksum_after,
            checksum_after: self.checksum_before,
            replace: false,
            records,
        })
    }

    /// Pages this delta changes (for logging and metrics).
    pub(crate) fn changed_pages(&self) -> usize {
        self.records.len()
    }
}

/// Big-endian numbers read in order from a slice known to be long enough.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        out.copy_from_slice(&self.0[..N]);
        self.0 = &self.0[N..];
        out
    }

    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }

    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
}

/// The big-endian u32 at `at` of `bytes` (which must hold it).
fn be32(bytes: &[u8], at: usize) -> u32 {
    Fields(&bytes[at..]).u32()
}

/// How many pages of `page_size` a database of `len` bytes holds.
fn whole_pages(len: u64, page_size: u32) -> Result<u32, DeltaError> {
    match len.is_multiple_of(u64::from(page_size)) {
        true => u32::try_from(len / u64::from(page_size))
            .map_err(|_| DeltaError::Corrupt("more pages than SQLite allows".into())),
        false => Err(DeltaError::Corrupt(format!(
            "a database of {len} bytes is not whole pages of {page_size}"
        ))),
    }
}

/// Fills `page` from `from`: `false` at its end, an error when it ends inside the page.
fn read_page(from: &mut impl Read, page: &mut [u8]) -> Result<bool, DeltaError> {
    let mut filled = 0;
    while filled < page.len() {
        match from.read(&mut page[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err.into()),
        }
    }
    match filled {
        0 => Ok(false),
        full if full == page.len() => Ok(true),
        part => Err(DeltaError::Corrupt(format!(
            "a database that ends {part} bytes into a page"
        ))),
    }
}

fn read_exactly(plain: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), DeltaError> {
    plain.read_exact(buf).map_err(|err| match err.kind() {
        io::ErrorKind::UnexpectedEof => DeltaError::Corrupt(format!("it ends inside {what}")),
        _ => DeltaError::Corrupt(format!("zstd, in {what}: {err}")),
    })
}

fn read_record(plain: &mut impl Read, page_size: u32) -> Result<PageRecord, DeltaError> {
    let mut head = [0; RECORD_HEAD_LEN];
    read_exactly(plain, &mut head, "a record")?;
    let pgno = be32(&head, 0);
    let kind = RecordKind::from_byte(head[4])
        .ok_or_else(|| DeltaError::Corrupt(format!("page {pgno} has unknown kind {}", head[4])))?;
    let mut bytes = vec![0; page_size as usize];
    read_exactly(plain, &mut bytes, "a page")?;
    Ok(PageRecord { pgno, kind, bytes })
}

/// What a delta's records must be, given its header: each page once, ascending, of the
/// kind its place says (XOR where the page exists on both sides, New past the old end,
/// Removed past the new end), every page past either end present; a replace is every
/// page, New.
struct RecordRules {
    replace: bool,
    pages_before: u32,
    pages_after: u32,
    last: u32,
    added: u32,
    removed: u32,
}

impl RecordRules {
    fn new(delta: &Delta, record_count: u32) -> Result<Self, DeltaError> {
        let most = if delta.replace {
            delta.pages_after
        } else {
            delta.pages_before.max(delta.pages_after)
        };
        if record_count > most {
            return Err(DeltaError::Corrupt(format!(
                "{record_count} records for a database of {most} pages"
            )));
        }
        Ok(Self {
            replace: delta.replace,
            pages_before: delta.pages_before,
            pages_after: delta.pages_after,
            last: 0,
            added: 0,
            removed: 0,
        })
    }

    fn check(&mut self, record: &PageRecord) -> Result<(), DeltaError> {
        let pgno = record.pgno;
        if pgno <= self.last {
            return Err(DeltaError::Corrupt(format!(
                "page {pgno} follows page {}",
                self.last
            )));
        }
        self.last = pgno;
        let in_place = match record.kind {
            RecordKind::Xor => !self.replace && pgno <= self.pages_before.min(self.pages_after),
            RecordKind::New if self.replace => pgno <= self.pages_after,
            RecordKind::New => pgno > self.pages_before && pgno <= self.pages_after,
            RecordKind::Removed => {
                !self.replace && pgno > self.pages_after && pgno <= self.pages_before
            }
        };
        if !in_place {
            return Err(DeltaError::Corrupt(format!(
                "page {pgno} as {:?} in a delta from {} to {} pages",
                record.kind, self.pages_before, self.pages_after
            )));
        }
        match record.kind {
            RecordKind::New => self.added += 1,
            RecordKind::Removed => self.removed += 1,
            RecordKind::Xor => {}
        }
        Ok(())
    }

    fn finish(self) -> Result<(), DeltaError> {
        let (added, removed) = if self.replace {
            (self.pages_after, 0)
        } else {
            (
                self.pages_after.saturating_sub(self.pages_before),
                self.pages_before.saturating_sub(self.pages_after),
            )
        };
        if self.added != added || self.removed != removed {
            return Err(DeltaError::Corrupt(format!(
                "{} new and {} removed pages where {added} and {removed} are due",
                self.added, self.removed
            )));
        }
        Ok(())
    }
}

fn check_page_size(page_size: u32) -> Result<(), DeltaError> {
    if page_size.is_power_of_two() && (512..=65536).contains(&page_size) {
        Ok(())
    } else {
        Err(DeltaError::Corrupt(format!("page size {page_size}")))
    }
}

/// The page size an SQLite image's header gives.
pub(crate) fn image_page_size(image: &[u8]) -> Result<u32, DeltaError> {
    if image.len() < 100 || &image[..SQLITE_MAGIC.len()] != SQLITE_MAGIC {
        return Err(DeltaError::Corrupt("not an SQLite image".into()));
    }
    let raw = u16::from_be_bytes([
        image[PAGE_SIZE_FIELD.start],
        image[PAGE_SIZE_FIELD.start + 1],
    ]);
    let page_size = if raw == 1 { 65536 } else { u32::from(raw) };
    check_page_size(page_size)?;
    Ok(page_size)
}

/// CRC-64/NVME of `pgno` (u32 BE) followed by the page, through a mixing function; for
/// page 1, the bytes 24..28 (change counter) and 92..100 (version-valid-for, SQLite
/// version) are taken as zero: SQLite rewrites them at every commit on every copy.
///
/// The mixing is what lets `checksum_after` vouch for the receiver's pages. A CRC is
/// linear: CRC(a) ^ CRC(a ^ x) is the same for every page `a`, so with bare CRCs the
/// checksum after an XOR record would follow from the record alone, whatever page it was
/// applied to, and a copy that had drifted from its checksum would go unnoticed.
pub(crate) fn page_checksum(pgno: u32, page: &[u8]) -> u64 {
    mix(page_crc(pgno, page))
}

/// MurmurHash3's 64-bit finalizer: a non-linear bijection with full avalanche.
fn mix(mut value: u64) -> u64 {
    value ^= value >> 33;
    value = value.wrapping_mul(0xff51_afd7_ed55_8ccd);
    value ^= value >> 33;
    value = value.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    value ^ (value >> 33)
}

fn page_crc(pgno: u32, page: &[u8]) -> u64 {
    const ZEROS: [u8; 8] = [0; 8];
    let mut digest = Digest::new(CrcAlgorithm::Crc64Nvme);
    digest.update(&pgno.to_be_bytes());
    let mut start = 0;
    if pgno == 1 && page.len() >= COMMIT_COUNTERS[1].end {
        for counter in COMMIT_COUNTERS {
            digest.update(&page[start..counter.start]);
            digest.update(&ZEROS[..counter.len()]);
            start = counter.end;
        }
    }
    digest.update(&page[start..]);
    digest.finalize()
}

/// The checksum of a database: the XOR of [`page_checksum`] over its pages, page 1 with
/// its page count as committed. (A trailing partial page is no page, for SQLite too.)
pub(crate) fn image_checksum(image: &[u8], page_size: usize) -> u64 {
    let pages = u32::try_from(image.len() / page_size).unwrap_or(u32::MAX);
    image
        .chunks_exact(page_size)
        .zip(1..)
        .fold(0, |checksum, (page, pgno)| {
            checksum ^ committed_page_checksum(pgno, page, pages)
        })
}

/// The checksum of the database `conn` sees, read through `sqlite_dbpage`: inside an open
/// transaction it includes the transaction's writes, except that pages written through
/// `sqlite_dbpage` itself (by [`apply`]) count only from COMMIT on.
pub(crate) fn database_checksum(conn: &Connection) -> rusqlite::Result<u64> {
    let pages = page_count(conn)?;
    let mut statement = conn.prepare("SELECT pgno, data FROM sqlite_dbpage")?;
    let mut rows = statement.query([])?;
    let mut checksum = 0;
    while let Some(row) = rows.next()? {
        let page = row.get_ref(1)?.as_blob()?;
        checksum ^= committed_page_checksum(row.get(0)?, page, pages);
    }
    Ok(checksum)
}

/// [`page_checksum`] with page 1's page count set to `pages`.
fn committed_page_checksum(pgno: u32, page: &[u8], pages: u32) -> u64 {
    if pgno == 1 && page.len() >= HEADER_PAGE_COUNT.end {
        let mut page = page.to_vec();
        set_header_page_count(&mut page, pages);
        page_checksum(pgno, &page)
    } else {
        page_checksum(pgno, page)
    }
}

fn set_header_page_count(page_one: &mut [u8], pages: u32) {
    page_one[HEADER_PAGE_COUNT].copy_from_slice(&pages.to_be_bytes());
}

/// Copies page 1's commit counters from `from` into `to`.
fn keep_commit_counters(to: &mut [u8], from: &[u8]) {
    for counter in COMMIT_COUNTERS {
        to[counter.clone()].copy_from_slice(&from[counter]);
    }
}

fn page_size(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "page_size", |row| row.get(0))
}

fn page_count(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "page_count", |row| row.get(0))
}

/// The page `conn` sees at `pgno`, through its pager (so with the open transaction's
/// writes).
fn current_page(conn: &Connection, pgno: u32) -> Result<Vec<u8>, DeltaError> {
    let mut statement = conn.prepare_cached("SELECT data FROM sqlite_dbpage WHERE pgno = ?1")?;
    match statement.query_row([pgno], |row| row.get(0)) {
        Err(rusqlite::Error::QueryReturnedNoRows) => Err(DeltaError::Corrupt(format!(
            "page {pgno} is past the end of the database"
        ))),
        page => Ok(page?),
    }
}

/// The page SQLite keeps empty for its locks, whatever the database's size.
fn pending_byte_page(page_size: u32) -> u32 {
    u32::try_from(PENDING_BYTE / u64::from(page_size) + 1).unwrap_or(u32::MAX)
}

/// The pages the open transaction on `conn` changed, from the rollback journal at
/// `journal` and `sqlite_dbpage`, as a delta from `checksum_before` (the checksum of the
/// database as committed). Versions are zero: the caller sets them.
///
/// Needs a rollback journal (`DELETE` or `TRUNCATE`), `secure_delete` on (see the module
/// documentation) and a database file. In `auto_vacuum = FULL` it first does what COMMIT
/// would (moves the free pages out), so that COMMIT writes exactly the pages captured.
/// A transaction whose pages SQLite already wrote to the file (a cache spill) is
/// refused when the old content of a page the journal does not hold is needed.
pub(crate) fn capture(
    conn: &Connection,
    journal: &Path,
    checksum_before: u64,
) -> Result<Delta, DeltaError> {
    check_capturable(conn)?;
    finish_auto_vacuum(conn)?;
    let page_size = page_size(conn)?;
    let file = DatabaseFile::open(conn, page_size)?;
    let journal = match Journal::read(journal, page_size)? {
        Some(journal) => journal,
        None => Journal::untouched(file.page_count()?),
    };
    let capture = Capture {
        conn,
        page_size,
        pages_after: page_count(conn)?,
        journal,
        file,
    };
    capture.delta(checksum_before)
}

fn check_capturable(conn: &Connection) -> Result<(), DeltaError> {
    if conn.is_autocommit() {
        return Err(DeltaError::Unsupported("no transaction is open".into()));
    }
    let journal_mode: String = conn.pragma_query_value(None, "journal_mode", |row| row.get(0))?;
    if !["delete", "truncate"].contains(&journal_mode.to_ascii_lowercase().as_str()) {
        return Err(DeltaError::Unsupported(format!(
            "journal_mode {journal_mode}: the changed pages are read from a rollback journal \
             (DELETE or TRUNCATE)"
        )));
    }
    let secure_delete: i64 = conn.pragma_query_value(None, "secure_delete", |row| row.get(0))?;
    if secure_delete != 1 {
        return Err(DeltaError::Unsupported(
            "secure_delete is off: SQLite may leave pages freed in the transaction unwritten, \
             so the file would not hold what is captured"
                .into(),
        ));
    }
    Ok(())
}

/// In `auto_vacuum = FULL`, COMMIT moves every free page out of the file; doing it now
/// (`incremental_vacuum` works in FULL mode too) leaves COMMIT nothing to move.
fn finish_auto_vacuum(conn: &Connection) -> rusqlite::Result<()> {
    const FULL: i64 = 1;
    let auto_vacuum: i64 = conn.pragma_query_value(None, "auto_vacuum", |row| row.get(0))?;
    let free: i64 = conn.pragma_query_value(None, "freelist_count", |row| row.get(0))?;
    if auto_vacuum == FULL && free > 0 {
        let mut statement = conn.prepare("PRAGMA incremental_vacuum")?;
        let mut steps = statement.raw_query();
        while steps.next()?.is_some() {}
    }
    Ok(())
}

/// The database file as committed, for pages the journal does not hold.
struct DatabaseFile {
    file: File,
    page_size: u32,
}

impl DatabaseFile {
    fn open(conn: &Connection, page_size: u32) -> Result<Self, DeltaError> {
        let path = conn
            .path()
            .filter(|path| !path.is_empty())
            .ok_or_else(|| DeltaError::Unsupported("the database has no file".into()))?;
        Ok(Self {
            file: File::open(path)?,
            page_size,
        })
    }

    fn page_count(&self) -> Result<u32, DeltaError> {
        let pages = self.file.metadata()?.len() / u64::from(self.page_size);
        u32::try_from(pages)
            .map_err(|_| DeltaError::Corrupt(format!("a database file of {pages} pages")))
    }

    fn read_page(&mut self, pgno: u32) -> io::Result<Vec<u8>> {
        let mut page = vec![0; self.page_size as usize];
        self.file.seek(SeekFrom::Start(
            u64::from(pgno - 1) * u64::from(self.page_size),
        ))?;
        self.file.read_exact(&mut page)?;
        Ok(page)
    }
}

/// What a rollback journal tells about the open transaction (the format is SQLite's,
/// `pager.c`).
struct Journal {
    /// The page count when the transaction began.
    pages_before: u32,
    /// The journal was synced, or is never synced: SQLite may already have written changed
    /// pages to the database file (it syncs the journal before it spills its cache).
    maybe_spilled: bool,
    /// The content each journaled page had when the transaction began.
    originals: BTreeMap<u32, Vec<u8>>,
}

impl Journal {
    /// No page was written yet (SQLite creates the journal at the first write).
    fn untouched(pages_before: u32) -> Self {
        Self {
            pages_before,
            maybe_spilled: false,
            originals: BTreeMap::new(),
        }
    }

    /// `None` when there is no journal, or an empty one.
    fn read(path: &Path, page_size: u32) -> Result<Option<Self>, DeltaError> {
        let bytes = match fs::read(path) {
            Ok(bytes) if bytes.is_empty() => return Ok(None),
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err.into()),
        };
        Self::parse(&bytes, page_size).map(Some)
    }

    /// Reads every segment: a header (one sector) and its records, each the page number,
    /// the page's original content and a checksum. A synced header counts its records and
    /// may be followed by another segment at the next sector boundary; an unsynced one (zero
    /// magic and count) is the last, its records running to the end of the file.
    fn parse(bytes: &[u8], page_size: u32) -> Result<Self, DeltaError> {
        let first = JournalHeader::parse(bytes, 0, page_size)?;
        let mut journal = Self {
            pages_before: first.pages_before,
            maybe_spilled: first.synced,
            originals: BTreeMap::new(),
        };
        let mut header = first;
        let mut offset = 0;
        loop {
            let end = journal.read_segment(bytes, offset, &header, page_size)?;
            if header.counted().is_none() {
                return Ok(journal);
            }
            offset = end.next_multiple_of(header.sector_size);
            if offset + JOURNAL_HEADER_LEN > bytes.len() {
                return Ok(journal);
            }
            header = JournalHeader::parse(bytes, offset, page_size)?;
        }
    }

    /// Keeps the first original of each page in the segment at `offset`; returns where the
    /// segment ends.
    fn read_segment(
        &mut self,
        bytes: &[u8],
        offset: usize,
        header: &JournalHeader,
        page_size: u32,
    ) -> Result<usize, DeltaError> {
        let record_len = 4 + page_size as usize + 4;
        let mut at = offset + header.sector_size;
        let mut read = 0;
        while header.counted().is_none_or(|count| read < count) {
            let Some(record) = bytes.get(at..at + record_len) else {
                if header.counted().is_some() {
                    return Err(DeltaError::Corrupt(
                        "the journal ends inside a record".into(),
                    ));
                }
                break;
            };
            let pgno = be32(record, 0);
            let page = &record[4..4 + page_size as usize];
            if pgno == 0 || be32(record, record_len - 4) != header.record_checksum(page) {
                if header.counted().is_some() {
                    return Err(DeltaError::Corrupt(format!(
                        "journal record {read} at byte {at} fails its checksum"
                    )));
                }
                // An unsynced segment ends at its first record that is not whole.
                break;
            }
            self.originals.entry(pgno).or_insert_with(|| page.to_vec());
            at += record_len;
            read += 1;
        }
        Ok(at)
    }
}

struct JournalHeader {
    synced: bool,
    record_count: u32,
    checksum_seed: u32,
    pages_before: u32,
    sector_size: usize,
}

impl JournalHeader {
    fn parse(bytes: &[u8], offset: usize, page_size: u32) -> Result<Self, DeltaError> {
        let corrupt =
            |what: String| DeltaError::Corrupt(format!("journal header at byte {offset}: {what}"));
        let header = bytes
            .get(offset..offset + JOURNAL_HEADER_LEN)
            .ok_or_else(|| corrupt("cut short".into()))?;
        let synced = header[..8] == JOURNAL_MAGIC;
        if !synced && header[..12].iter().any(|&byte| byte != 0) {
            return Err(corrupt("no journal magic".into()));
        }
        let mut fields = Fields(&header[8..]);
        let parsed = Self {
            synced,
            record_count: fields.u32(),
            checksum_seed: fields.u32(),
            pages_before: fields.u32(),
            sector_size: fields.u32() as usize,
        };
        let journal_page_size = fields.u32();
        if journal_page_size != page_size {
            return Err(corrupt(format!(
                "pages of {journal_page_size} bytes in a database of {page_size}"
            )));
        }
        if !(JOURNAL_HEADER_LEN..=65536).contains(&parsed.sector_size) {
            return Err(corrupt(format!("sector size {}", parsed.sector_size)));
        }
        Ok(parsed)
    }

    /// How many records the segment holds, when the header says.
    fn counted(&self) -> Option<u32> {
        (self.synced && !JOURNAL_UNCOUNTED.contains(&self.record_count))
            .then_some(self.record_count)
    }

    /// SQLite's record checksum: the seed plus every 200th byte counted from the end (the
    /// bytes at `len - 200`, `len - 400`, ..., never byte 0).
    fn record_checksum(&self, page: &[u8]) -> u32 {
        (200..page.len())
            .step_by(200)
            .fold(self.checksum_seed, |sum, back| {
                sum.wrapping_add(u32::from(page[page.len() - back]))
            })
    }
}

/// One capture's sources: the journal for originals, `sqlite_dbpage` for what the
/// transaction sees, the file for what the journal lacks.
struct Capture<'c> {
    conn: &'c Connection,
    page_size: u32,
    pages_after: u32,
    journal: Journal,
    file: DatabaseFile,
}

impl Capture<'_> {
    fn delta(mut self, checksum_before: u64) -> Result<Delta, DeltaError> {
        let reused = self.reused_free_pages()?;
        let mut originals = std::mem::take(&mut self.journal.originals);
        originals.extend(reused);
        let pages_before = self.journal.pages_before;
        let pages_after = self.pages_after;
        let mut records = Records::new(checksum_before);
        for pgno in self.pages_on_both_sides(&originals) {
            let old = match originals.get(&pgno) {
                Some(page) => page.clone(),
                None => current_page(self.conn, pgno)?,
            };
            let new = current_page(self.conn, pgno)?;
            records.changed_counted(pgno, old, new, (pages_before, pages_after));
        }
        for pgno in pages_before + 1..=pages_after {
            let mut new = current_page(self.conn, pgno)?;
            if pgno == 1 {
                set_header_page_count(&mut new, pages_after);
            }
            records.push(pgno, RecordKind::New, new);
        }
        for pgno in pages_after + 1..=pages_before {
            let old = match originals.remove(&pgno) {
                Some(page) => page,
                None => self.committed_page(pgno)?,
            };
            records.push(pgno, RecordKind::Removed, old);
        }
        Ok(Delta {
            page_size: self.page_size,
            base_version: Version::ZERO,
            version: Version::ZERO,
            pages_before,
            pages_after,
            checksum_before,
            checksum_after: records.checksum,
            replace: false,
            records: records.records,
        })
    }

    /// The pages that may differ and exist before and after: those with a known original,
    /// and page 1 when the page count changed (its header holds the count).
    fn pages_on_both_sides(&self, originals: &BTreeMap<u32, Vec<u8>>) -> BTreeSet<u32> {
        let both = self.journal.pages_before.min(self.pages_after);
        let mut pages: BTreeSet<u32> = originals.range(..=both).map(|(&pgno, _)| pgno).collect();
        if both >= 1 && self.journal.pages_before != self.pages_after {
            pages.insert(1);
        }
        pages
    }

    /// The committed content of a page the journal does not hold, from the file: refused
    /// when SQLite may have written the page there already.
    fn committed_page(&mut self, pgno: u32) -> Result<Vec<u8>, DeltaError> {
        if self.journal.maybe_spilled {
            return Err(DeltaError::Unsupported(format!(
                "SQLite wrote pages to the file before COMMIT (its cache spilled), so the old \
                 content of page {pgno}, which the journal does not hold, may be lost"
            )));
        }
        Ok(self.file.read_page(pgno)?)
    }

    /// Pages that were free-list leaves when the transaction began and that it changed,
    /// with their original content. SQLite reuses such a page without journaling it (its
    /// content does not matter to SQLite), and a savepoint or statement rolled back leaves
    /// it changed and back on the free list, in its old slot. Either way the page was taken
    /// off a trunk page, which SQLite does journal: every leaf the original of a journaled
    /// trunk lists is compared with the file.
    fn reused_free_pages(&mut self) -> Result<BTreeMap<u32, Vec<u8>>, DeltaError> {
        let mut reused = BTreeMap::new();
        for pgno in self.leaves_of_changed_trunks()? {
            let committed = self.committed_page(pgno)?;
            if committed != current_page(self.conn, pgno)? {
                reused.insert(pgno, committed);
            }
        }
        Ok(reused)
    }

    /// The unjournaled pages on both sides that the originals of the journaled free-list
    /// trunk pages list as leaves.
    fn leaves_of_changed_trunks(&mut self) -> Result<BTreeSet<u32>, DeltaError> {
        let mut leaves = BTreeSet::new();
        // Every change to the free list changes its count, on page 1.
        let Some(page_one) = self.journal.originals.get(&1) else {
            return Ok(leaves);
        };
        let usable = self.page_size as usize - usize::from(page_one[RESERVED_BYTES]);
        let most_leaves = usable / 4 - 2;
        let mut trunk = be32(page_one, FIRST_TRUNK);
        let mut seen = BTreeSet::new();
        while trunk != 0 && trunk <= self.journal.pages_before && seen.insert(trunk) {
            let original = match self.journal.originals.get(&trunk) {
                Some(original) => {
                    leaves.extend(trunk_leaves(original, most_leaves));
                    original.clone()
                }
                // Not journaled: unchanged (a trunk page is never reused unjournaled).
                None if trunk <= self.pages_after => current_page(self.conn, trunk)?,
                None => self.file.read_page(trunk)?,
            };
            trunk = be32(&original, 0);
        }
        let both = self.journal.pages_before.min(self.pages_after);
        leaves
            .retain(|pgno| (2..=both).contains(pgno) && !self.journal.originals.contains_key(pgno));
        Ok(leaves)
    }
}

/// The leaf page numbers a free-list trunk page lists.
fn trunk_leaves(trunk: &[u8], most_leaves: usize) -> Vec<u32> {
    let count = (be32(trunk, 4) as usize).min(most_leaves);
    (0..count).map(|slot| be32(trunk, 8 + 4 * slot)).collect()
}

/// Records being built, and the checksum after them.
struct Records {
    records: Vec<PageRecord>,
    checksum: u64,
}

impl Records {
    fn new(checksum_before: u64) -> Self {
        Self {
            records: Vec::new(),
            checksum: checksum_before,
        }
    }

    /// Adds the XOR of `old` and `new` unless they are the same page.
    fn changed(&mut self, pgno: u32, old: &[u8], new: &[u8]) {
        let mut xor: Vec<u8> = old.iter().zip(new).map(|(a, b)| a ^ b).collect();
        if pgno == 1 {
            for counter in COMMIT_COUNTERS {
                xor[counter].fill(0);
            }
        }
        if xor.iter().all(|&byte| byte == 0) {
            return; // written and restored, or never changed
        }
        self.checksum ^= page_checksum(pgno, old) ^ page_checksum(pgno, new);
        self.records.push(PageRecord {
            pgno,
            kind: RecordKind::Xor,
            bytes: xor,
        });
    }

    /// [`Records::changed`] for a page of a database going from `before` to `after` pages:
    /// page 1 is compared with each side's count in its header.
    fn changed_counted(
        &mut self,
        pgno: u32,
        mut old: Vec<u8>,
        mut new: Vec<u8>,
        (before, after): (u32, u32),
    ) {
        if pgno == 1 {
            set_header_page_count(&mut old, before);
            set_header_page_count(&mut new, after);
        }
        self.changed(pgno, &old, &new);
    }

    /// The change these records make to a database of `pages.0` pages at
    /// `checksum_before` (the checksum they started from), checked to end at `expected`
    /// (what applying the run gives). Its versions are zero: the caller sets them.
    fn into_change(
        self,
        page_size: u32,
        (pages_before, pages_after): (u32, u32),
        checksum_before: u64,
        expected: u64,
    ) -> Result<Delta, DeltaError> {
        if self.checksum != expected {
            return Err(DeltaError::Mismatch {
                expected,
                found: self.checksum,
                stage: "after",
            });
        }
        Ok(Delta {
            page_size,
            base_version: Version::ZERO,
            version: Version::ZERO,
            pages_before,
            pages_after,
            checksum_before,
            checksum_after: expected,
            replace: false,
            records: self.records,
        })
    }

    /// Adds a page that exists on one side only.
    fn push(&mut self, pgno: u32, kind: RecordKind, page: Vec<u8>) {
        self.checksum ^= page_checksum(pgno, &page);
        self.records.push(PageRecord {
            pgno,
            kind,
            bytes: page,
        });
    }
}

/// Applies `deltas` (as they are decoded), in order, to the database `conn` opened, inside
/// the transaction the caller opened (and commits or rolls back), checking `checksum` (the
/// database's current checksum) against each delta's `checksum_before` unless it is a
/// replace, and each result against its `checksum_after`; returns the checksum after the
/// last. Everything is checked before anything is written: a delta that fails (or fails to
/// decode) leaves the database as it was, the deltas before it too. Reads only the pages the
/// deltas change (for a replace, page 1).
///
/// The deltas are composed in memory, each dropped once added (so a run holds the pages it
/// changed and one delta), and the final pages are written once, through `sqlite_dbpage`; a
/// shorter file is truncated at COMMIT; page 1 keeps this copy's commit counters. One call
/// per transaction, and nothing else in it: SQLite's b-tree layer does not see these writes
/// before [`forget_cached_pages`] (and a second call could not read the pages the first
/// added). A run of changes so costs one transaction and one reset of the cache and schema,
/// not one per change.
pub(crate) fn apply(
    conn: &Connection,
    deltas: impl IntoIterator<Item = Result<Delta, DeltaError>>,
    checksum: u64,
) -> Result<u64, DeltaError> {
    let page_size = page_size(conn)?;
    let receiver = Receiver {
        conn,
        pages: committed_page_count(conn)?,
    };
    let run = Run::of(&receiver, page_size, deltas, checksum)?;
    receiver.write(&run.pages, page_size, run.count)?;
    Ok(run.checksum)
}

/// The one change a run of `deltas` makes to the database `conn` opened (at `checksum`),
/// every delta checked as [`apply`] checks it, nothing written: how a restore that undoes
/// many changes ships them as one, and applies it like any other. Its versions are zero.
pub(crate) fn compose(
    conn: &Connection,
    deltas: impl IntoIterator<Item = Result<Delta, DeltaError>>,
    checksum: u64,
) -> Result<Delta, DeltaError> {
    let page_size = page_size(conn)?;
    let receiver = Receiver {
        conn,
        pages: committed_page_count(conn)?,
    };
    let run = Run::of(&receiver, page_size, deltas, checksum)?;
    let (pages_before, pages_after) = (receiver.pages, run.count);
    let mut records = Records::new(checksum);
    // Page 1 holds the page count: compared whenever the count changed.
    let both: BTreeSet<u32> = run
        .pages
        .range(..=pages_before.min(pages_after))
        .map(|(&pgno, _)| pgno)
        .chain((pages_before != pages_after).then_some(1))
        .collect();
    for pgno in both {
        let (old, new) = (receiver.page(pgno)?, run.page(pgno)?);
        records.changed_counted(pgno, old, new, (pages_before, pages_after));
    }
    for pgno in pages_before + 1..=pages_after {
        records.push(pgno, RecordKind::New, run.page(pgno)?);
    }
    for pgno in pages_after + 1..=pages_before {
        records.push(pgno, RecordKind::Removed, receiver.page(pgno)?);
    }
    records.into_change(
        page_size,
        (pages_before, pages_after),
        checksum,
        run.checksum,
    )
}

/// [`apply`] in a transaction of its own on a connection the engine alone uses (a copy
/// being rebuilt), committed, with the cached pages forgotten after it.
pub(crate) fn apply_committed(
    conn: &Connection,
    deltas: impl IntoIterator<Item = Result<Delta, DeltaError>>,
    checksum: u64,
) -> Result<u64, DeltaError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let applied = apply(conn, deltas, checksum);
    let ended = match applied {
        Ok(_) => conn.execute_batch("COMMIT"),
        Err(_) => conn.execute_batch("ROLLBACK"),
    };
    forget_cached_pages(conn)?;
    ended?;
    applied
}

/// Makes `conn` read the database afresh: call it after the COMMIT (or ROLLBACK) that
/// follows [`apply`], before the connection runs anything else. `apply` writes pages
/// underneath SQLite's b-tree layer, which keeps what it decoded from a cached page's old
/// content (its cells and where they are) while the page stays cached, and keeps the schema
/// it parsed: both are dropped here.
pub(crate) fn forget_cached_pages(conn: &Connection) -> rusqlite::Result<()> {
    conn.release_memory()?;
    conn.execute_batch("PRAGMA writable_schema = RESET")
}

/// The page count before the open transaction wrote: a write transaction on an empty
/// database starts by making page 1 in memory, which is no committed page.
fn committed_page_count(conn: &Connection) -> Result<u32, DeltaError> {
    let pages = page_count(conn)?;
    let has_file = conn.path().is_some_and(|path| !path.is_empty());
    if pages == 1 && has_file && DatabaseFile::open(conn, page_size(conn)?)?.page_count()? == 0 {
        return Ok(0);
    }
    Ok(pages)
}

/// The database deltas are applied to, with its page count as committed.
struct Receiver<'c> {
    conn: &'c Connection,
    pages: u32,
}

/// Deltas applied in memory, one after another, on top of a receiver: what their pages are
/// after the last, the page count and the checksum.
struct Run<'r> {
    receiver: &'r dyn Pages,
    /// Every page a delta wrote and no later one removed, page 1 with the run's page count.
    /// Every page past the receiver's end is here: only a New record (or a replace) adds one.
    pages: BTreeMap<u32, Vec<u8>>,
    count: u32,
    checksum: u64,
}

impl<'r> Run<'r> {
    /// `deltas` composed in memory over `receiver`'s pages (at `checksum`), each checked.
    fn of(
        receiver: &'r dyn Pages,
        page_size: u32,
        deltas: impl IntoIterator<Item = Result<Delta, DeltaError>>,
        checksum: u64,
    ) -> Result<Self, DeltaError> {
        let mut run = Run {
            receiver,
            pages: BTreeMap::new(),
            count: receiver.count(),
            checksum,
        };
        for delta in deltas {
            let delta = delta?;
            if delta.page_size != page_size {
                return Err(DeltaError::Unsupported(format!(
                    "the delta has pages of {} bytes, the database pages of {page_size}",
                    delta.page_size
                )));
            }
            run.add(&delta)?;
        }
        Ok(run)
    }

    fn add(&mut self, delta: &Delta) -> Result<(), DeltaError> {
        if delta.replace {
            self.replace(delta)?;
        } else {
            self.change(delta)?;
        }
        if self.checksum != delta.checksum_after {
            return Err(DeltaError::Mismatch {
                expected: delta.checksum_after,
                found: self.checksum,
                stage: "after",
            });
        }
        Ok(())
    }

    /// An ordinary delta: each record on the page as the run left it.
    fn change(&mut self, delta: &Delta) -> Result<(), DeltaError> {
        if self.checksum != delta.checksum_before {
            return Err(DeltaError::Mismatch {
                expected: delta.checksum_before,
                found: self.checksum,
                stage: "before",
            });
        }
        if self.count != delta.pages_before {
            return Err(DeltaError::Corrupt(format!(
                "the delta starts from {} pages, the database has {}",
                delta.pages_before, self.count
            )));
        }
        for record in &delta.records {
            let pgno = record.pgno;
            match record.kind {
                RecordKind::Xor => {
                    let current = self.page(pgno)?;
                    let mut new: Vec<u8> = current
                        .iter()
                        .zip(&record.bytes)
                        .map(|(a, b)| a ^ b)
                        .collect();
                    if pgno == 1 {
                        keep_commit_counters(&mut new, &current);
                    }
                    self.checksum ^= page_checksum(pgno, &current) ^ page_checksum(pgno, &new);
                    self.pages.insert(pgno, new);
                }
                RecordKind::New => {
                    let new = self.new_page(record)?;
                    self.checksum ^= page_checksum(pgno, &new);
                    self.pages.insert(pgno, new);
                }
                RecordKind::Removed => {
                    self.checksum ^= page_checksum(pgno, &self.page(pgno)?);
                    self.pages.remove(&pgno);
                }
            }
        }
        self.count = delta.pages_after;
        Ok(())
    }

    /// A replace: every page anew, whatever the run held; the checksum is theirs.
    fn replace(&mut self, delta: &Delta) -> Result<(), DeltaError> {
        let mut checksum = 0;
        let mut pages = BTreeMap::new();
        for record in &delta.records {
            let mut new = self.new_page(record)?;
            if record.pgno == 1 {
                set_header_page_count(&mut new, delta.pages_after);
                self.receiver.check_auto_vacuum(&new)?;
            }
            checksum ^= page_checksum(record.pgno, &new);
            pages.insert(record.pgno, new);
        }
        self.pages = pages;
        self.count = delta.pages_after;
        self.checksum = checksum;
        Ok(())
    }

    /// A record's page whole; page 1 keeps this copy's commit counters.
    fn new_page(&self, record: &PageRecord) -> Result<Vec<u8>, DeltaError> {
        let mut new = record.bytes.clone();
        if record.pgno == 1 && self.count >= 1 {
            keep_commit_counters(&mut new, &self.page(1)?);
        }
        Ok(new)
    }

    /// The page as the run left it, page 1 with the run's page count.
    fn page(&self, pgno: u32) -> Result<Vec<u8>, DeltaError> {
        match self.pages.get(&pgno) {
            Some(page) => Ok(page.clone()),
            None => self.receiver.page(pgno),
        }
    }
}

/// The pages a run starts from: a database through SQLite, or an image in memory.
trait Pages {
    /// The page count.
    fn count(&self) -> u32;
    /// The page, page 1 with [`Pages::count`] as its page count.
    fn page(&self, pgno: u32) -> Result<Vec<u8>, DeltaError>;
    /// Refuses a whole image these pages cannot take.
    fn check_auto_vacuum(&self, new_page_one: &[u8]) -> Result<(), DeltaError>;
}

impl Pages for Receiver<'_> {
    fn count(&self) -> u32 {
        self.pages
    }

    fn page(&self, pgno: u32) -> Result<Vec<u8>, DeltaError> {
        Receiver::page(self, pgno)
    }

    fn check_auto_vacuum(&self, new_page_one: &[u8]) -> Result<(), DeltaError> {
        Receiver::check_auto_vacuum(self, new_page_one)
    }
}

/// A whole database image in memory (a scratch copy being rebuilt).
struct Image<'a> {
    bytes: &'a [u8],
    page_size: usize,
}

impl Pages for Image<'_> {
    fn count(&self) -> u32 {
        (self.bytes.len() / self.page_size) as u32
    }

    fn page(&self, pgno: u32) -> Result<Vec<u8>, DeltaError> {
        let start = (pgno as usize - 1) * self.page_size;
        let mut page = self
            .bytes
            .get(start..start + self.page_size)
            .ok_or_else(|| DeltaError::Corrupt(format!("no page {pgno} in the image")))?
            .to_vec();
        if pgno == 1 {
            set_header_page_count(&mut page, self.count());
        }
        Ok(page)
    }

    /// An image is no live database: nothing moves its pages at a commit.
    fn check_auto_vacuum(&self, _: &[u8]) -> Result<(), DeltaError> {
        Ok(())
    }
}

/// The pages of a database a run reads, kept as the database streamed past
/// ([`Delta::between_rebuilt`]).
struct Held<'a> {
    pages: &'a BTreeMap<u32, Vec<u8>>,
    count: u32,
}

impl Pages for Held<'_> {
    fn count(&self) -> u32 {
        self.count
    }

    fn page(&self, pgno: u32) -> Result<Vec<u8>, DeltaError> {
        let mut page = self
            .pages
            .get(&pgno)
            .ok_or_else(|| DeltaError::Corrupt(format!("page {pgno} is not among those kept")))?
            .clone();
        if pgno == 1 {
            set_header_page_count(&mut page, self.count);
        }
        Ok(page)
    }

    /// A snapshot is no live database: nothing moves its pages at a commit.
    fn check_auto_vacuum(&self, _: &[u8]) -> Result<(), DeltaError> {
        Ok(())
    }
}

/// `deltas` applied in order to `image` (a whole database at `checksum`), in memory and in
/// place, each checked as [`apply`] checks it: how a version is rebuilt from a snapshot
/// without a file, a transaction or a copy. Answers the new image and its checksum.
pub(crate) fn apply_to_image(
    mut image: Vec<u8>,
    deltas: impl IntoIterator<Item = Result<Delta, DeltaError>>,
    checksum: u64,
) -> Result<(Vec<u8>, u64), DeltaError> {
    let page_size = image_page_size(&image)?;
    let size = page_size as usize;
    if !image.len().is_multiple_of(size) {
        return Err(DeltaError::Corrupt(format!(
            "an image of {} bytes is not whole pages of {page_size}",
            image.len()
        )));
    }
    let source = Image {
        bytes: &image,
        page_size: size,
    };
    let Run {
        pages,
        count,
        checksum,
        ..
    } = Run::of(&source, page_size, deltas, checksum)?;
    image.resize(count as usize * size, 0);
    for (pgno, page) in &pages {
        let start = (*pgno as usize - 1) * size;
        image[start..start + size].copy_from_slice(page);
    }
    if count >= 1 {
        set_header_page_count(&mut image[..size], count);
    }
    Ok((image, checksum))
}

impl Receiver<'_> {
    /// In `auto_vacuum = FULL` SQLite moves free pages out at COMMIT, going by what it
    /// knew of the file when the transaction began: an image written under it must have no
    /// free page.
    fn check_auto_vacuum(&self, new_page_one: &[u8]) -> Result<(), DeltaError> {
        const FULL: i64 = 1;
        const FREE_PAGES: usize = 36;
        let auto_vacuum: i64 = self
            .conn
            .pragma_query_value(None, "auto_vacuum", |row| row.get(0))?;
        if auto_vacuum == FULL && be32(new_page_one, FREE_PAGES) != 0 {
            return Err(DeltaError::Unsupported(
                "an image with free pages cannot replace an auto_vacuum = FULL database in place"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The page as committed, page 1 with its page count as committed.
    fn page(&self, pgno: u32) -> Result<Vec<u8>, DeltaError> {
        let mut page = current_page(self.conn, pgno)?;
        if pgno == 1 {
            set_header_page_count(&mut page, self.pages);
        }
        Ok(page)
    }

    /// Writes `pages` (ascending), page 1 with the schema cookie it has now, then
    /// truncates to `pages_after`, then sets the schema cookie. The truncation must follow
    /// every page written (SQLite forgets it at the next one, and does it at COMMIT); and
    /// a statement run once the cookie changed would reload the schema through the b-tree's
    /// stale pages (see [`forget_cached_pages`]), except `PRAGMA schema_version`, which
    /// sets the cookie itself.
    fn write(
        &self,
        pages: &BTreeMap<u32, Vec<u8>>,
        page_size: u32,
        pages_after: u32,
    ) -> Result<(), DeltaError> {
        let pending = pending_byte_page(page_size);
        let cookie: u32 = self
            .conn
            .pragma_query_value(None, "schema_version", |row| row.get::<_, i32>(0))?
            .cast_unsigned();
        let mut insert = self
            .conn
            .prepare_cached("INSERT INTO sqlite_dbpage(pgno, data) VALUES (?1, ?2)")?;
        let mut new_cookie = cookie;
        for (pgno, page) in pages.iter().filter(|(pgno, _)| **pgno != pending) {
            if *pgno == 1 {
                new_cookie = be32(page, SCHEMA_COOKIE);
                let mut page = page.clone();
                page[SCHEMA_COOKIE..SCHEMA_COOKIE + 4].copy_from_slice(&cookie.to_be_bytes());
                insert.execute(rusqlite::params![pgno, page])?;
            } else {
                insert.execute(rusqlite::params![pgno, page])?;
            }
        }
        if pages_after < self.pages {
            // Writing NULL at page N keeps the pages before it.
            insert.execute(rusqlite::params![pages_after + 1, rusqlite::types::Null])?;
        }
        if new_cookie != cookie {
            let cookie = new_cookie.cast_signed();
            self.conn
                .execute_batch(&format!("PRAGMA schema_version = {cookie}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use rusqlite::types::Value;

    use super::*;

    /// xorshift64*: the operations a seed runs repeat, so a failure can be replayed.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    /// Opens `path` with the engine's settings.
    fn open(path: &Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA cache_spill = OFF;")
            .unwrap();
        conn
    }

    fn journal_of(path: &Path) -> PathBuf {
        let mut journal = path.as_os_str().to_owned();
        journal.push("-journal");
        journal.into()
    }

    /// Runs `work` in a transaction on the database at `path`, captures it and commits;
    /// returns the delta as read back from its bytes.
    fn write_and_capture(
        conn: &Connection,
        path: &Path,
        checksum: u64,
        work: impl FnOnce(&Connection),
    ) -> Delta {
        conn.execute_batch("BEGIN").unwrap();
        work(conn);
        let delta = capture(conn, &journal_of(path), checksum).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        let decoded = Delta::decode(&delta.encode().unwrap()).unwrap();
        assert_eq!(decoded, delta);
        decoded
    }

    /// Every table's rows, in rowid order.
    fn rows(conn: &Connection) -> Vec<(String, Vec<Vec<Value>>)> {
        let mut tables = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .unwrap();
        let names: Vec<String> = tables
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        names
            .into_iter()
            .map(|name| {
                let mut select = conn
                    .prepare(&format!("SELECT * FROM \"{name}\" ORDER BY rowid"))
                    .unwrap();
                let columns = select.column_count();
                let rows = select
                    .query_map([], |row| (0..columns).map(|i| row.get(i)).collect())
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                (name, rows)
            })
            .collect()
    }

    fn integrity(conn: &Connection) -> String {
        conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap()
    }

    /// Asserts the committed files hold the same pages, but for page 1's commit counters.
    fn assert_same_files(a: &Path, b: &Path, page_size: usize) {
        let (a, b) = (fs::read(a).unwrap(), fs::read(b).unwrap());
        assert_eq!(a.len(), b.len(), "the files differ in length");
        let differing: Vec<(usize, Vec<usize>)> = a
            .chunks(page_size)
            .zip(b.chunks(page_size))
            .enumerate()
            .map(|(index, (a, b))| {
                let bytes = (0..page_size)
                    .filter(|&i| a[i] != b[i])
                    .filter(|i| index > 0 || !COMMIT_COUNTERS.iter().any(|c| c.contains(i)))
                    .collect::<Vec<_>>();
                (index + 1, bytes)
            })
            .filter(|(_, bytes)| !bytes.is_empty())
            .map(|(pgno, bytes)| (pgno, bytes.into_iter().take(8).collect()))
            .collect();
        assert!(
            differing.is_empty(),
            "pages differ (at bytes): {differing:?}"
        );
    }

    #[test]
    fn the_change_between_two_images_takes_one_to_the_other_grown_or_shrunk() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.sqlite"), dir.path().join("b.sqlite"));
        let conn = open(&a);
        conn.execute_batch(
            "PRAGMA page_size = 1024; CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400)
             INSERT INTO t SELECT i, printf('%0200d', i) FROM n;",
        )
        .unwrap();
        drop(conn);
        fs::copy(&a, &b).unwrap();
        // Grown, then shrunk below the original, with another table and rows changed.
        for work in [
            "CREATE TABLE u(x); INSERT INTO u SELECT v FROM t; UPDATE t SET v = 'x' WHERE k % 7 = 0;",
            "DROP TABLE u; DELETE FROM t WHERE k > 100; VACUUM;",
        ] {
            let conn = open(&b);
            conn.execute_batch(work).unwrap();
            drop(conn);
            let (old, new) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
            let delta = Delta::between(&old[..], old.len() as u64, &new).unwrap();
            assert!(!delta.replace);
            assert_eq!(delta.checksum_after, image_checksum(&new, 1024));
            let decoded = Delta::decode(&delta.encode().unwrap()).unwrap();
            let conn = open(&a);
            apply_committed(&conn, [Ok(decoded.clone())], image_checksum(&old, 1024)).unwrap();
            assert_eq!(rows(&conn), rows(&open(&b)));
            assert_eq!(integrity(&conn), "ok");
            drop(conn);
            assert_same_files(&a, &b, 1024);
            // And back: the inverse takes the new image to the old one.
            let back = dir.path().join("back.sqlite");
            fs::write(&back, &new).unwrap();
            let conn = open(&back);
            let inverse = decoded.inverse().unwrap();
            apply_committed(&conn, [Ok(inverse)], image_checksum(&new, 1024)).unwrap();
            assert_eq!(integrity(&conn), "ok");
            drop(conn);
            fs::write(&b, &old).unwrap();
            assert_same_files(&back, &b, 1024);
            fs::write(&b, &new).unwrap();
        }
        assert_eq!(
            Delta::from_image(&fs::read(&a).unwrap()).unwrap().inverse(),
            None
        );
        let other = dir.path().join("c.sqlite");
        open(&other)
            .execute_batch("PRAGMA page_size = 4096; CREATE TABLE t(x);")
            .unwrap();
        let old = fs::read(&a).unwrap();
        let err = Delta::between(&old[..], old.len() as u64, &fs::read(&other).unwrap());
        assert!(matches!(err, Err(DeltaError::Unsupported(_))), "{err:?}");
    }

    #[test]
    fn a_composed_run_is_one_change_that_does_what_the_run_does_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live.sqlite");
        let conn = open(&live);
        conn.execute_batch(
            "PRAGMA page_size = 1024; CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
             INSERT INTO t SELECT i, printf('%0150d', i) FROM n;",
        )
        .unwrap();
        drop(conn);
        let mut images = vec![fs::read(&live).unwrap()];
        for work in [
            "UPDATE t SET v = 'changed' WHERE k % 5 = 0;",
            "CREATE TABLE u(x); INSERT INTO u SELECT v FROM t;",
            "DROP TABLE u; DELETE FROM t WHERE k > 200; VACUUM;",
        ] {
            open(&live).execute_batch(work).unwrap();
            images.push(fs::read(&live).unwrap());
        }
        let deltas: Vec<Delta> = images
            .windows(2)
            .map(|pair| Delta::between(&pair[0][..], pair[0].len() as u64, &pair[1]).unwrap())
            .collect();
        let copy = dir.path().join("copy.sqlite");
        // Forwards from the first image, and back from the last with the inverses.
        for (from, to, run) in [
            (&images[0], &images[3], deltas.clone()),
            (
                &images[3],
                &images[0],
                deltas.iter().rev().map(|d| d.inverse().unwrap()).collect(),
            ),
        ] {
            fs::write(&copy, from).unwrap();
            let conn = open(&copy);
            let checksum = image_checksum(from, 1024);
            // In memory, the run gives the same image.
            let (image, after) =
                apply_to_image(from.clone(), run.iter().cloned().map(Ok), checksum).unwrap();
            assert_eq!(after, image_checksum(to, 1024));
            let in_memory = dir.path().join("in-memory.sqlite");
            fs::write(&in_memory, &image).unwrap();
            let expected = dir.path().join("expected.sqlite");
            fs::write(&expected, to).unwrap();
            assert_same_files(&in_memory, &expected, 1024);
            let composed = compose(&conn, run.into_iter().map(Ok), checksum).unwrap();
            assert_eq!(fs::read(&copy).unwrap(), *from, "compose wrote nothing");
            assert_eq!(composed.checksum_after, image_checksum(to, 1024));
            apply_committed(&conn, [Ok(composed)], checksum).unwrap();
            assert_eq!(integrity(&conn), "ok");
            drop(conn);
            assert_same_files(&copy, &expected, 1024);
        }
    }

    #[test]
    fn the_change_to_a_version_rebuilt_from_a_snapshot_takes_any_copy_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live.sqlite");
        open(&live)
            .execute_batch(
                "PRAGMA page_size = 1024; CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
                 INSERT INTO t SELECT i, printf('%0150d', i) FROM n;",
            )
            .unwrap();
        let mut images = vec![fs::read(&live).unwrap()];
        // Rows changed, grown, shrunk below the start, grown again.
        for work in [
            "UPDATE t SET v = 'changed' WHERE k % 5 = 0;",
            "CREATE TABLE u(x); INSERT INTO u SELECT v FROM t;",
            "DROP TABLE u; DELETE FROM t WHERE k > 200; VACUUM;",
            "INSERT INTO t(v) SELECT v || v FROM t WHERE k < 50;",
        ] {
            open(&live).execute_batch(work).unwrap();
            images.push(fs::read(&live).unwrap());
        }
        let checksums: Vec<u64> = images.iter().map(|i| image_checksum(i, 1024)).collect();
        let mut deltas: Vec<Delta> = images
            .windows(2)
            .map(|pair| Delta::between(&pair[0][..], pair[0].len() as u64, &pair[1]).unwrap())
            .collect();
        for (delta, checksum) in deltas.iter_mut().zip(&checksums) {
            delta.checksum_before = *checksum;
        }
        let copy = dir.path().join("copy.sqlite");
        let expected = dir.path().join("expected.sqlite");
        // Every version from every snapshot at or before it, onto every copy, with the
        // snapshot's checksum recorded or summed.
        for snapshot in 0..images.len() {
            for version in snapshot..images.len() {
                for (held, old) in images.iter().enumerate() {
                    for recorded in [Some(checksums[snapshot]), None] {
                        let delta = Delta::between_rebuilt(
                            &old[..],
                            old.len() as u64,
                            checksums[held],
                            &images[snapshot][..],
                            recorded,
                            deltas[snapshot..version].to_vec(),
                        )
                        .unwrap();
                        assert_eq!(delta.checksum_after, checksums[version]);
                        fs::write(&copy, old).unwrap();
                        let conn = open(&copy);
                        let decoded = Delta::decode(&delta.encode().unwrap()).unwrap();
                        apply_committed(&conn, [Ok(decoded)], checksums[held]).unwrap();
                        assert_eq!(integrity(&conn), "ok");
                        drop(conn);
                        fs::write(&expected, &images[version]).unwrap();
                        assert_same_files(&copy, &expected, 1024);
                    }
                }
            }
        }
        // A run through a whole image.
        let mut whole = Delta::from_image(&images[2]).unwrap();
        whole.checksum_before = checksums[1];
        let run = vec![deltas[0].clone(), whole, deltas[2].clone()];
        let delta = Delta::between_rebuilt(
            &images[4][..],
            images[4].len() as u64,
            checksums[4],
            &images[0][..],
            None,
            run,
        )
        .unwrap();
        assert_eq!(delta.checksum_after, checksums[3]);
        // A whole image with fewer pages than the snapshot: the pages past it go, whatever
        // the copy.
        let mut shrinking = Delta::from_image(&images[3]).unwrap();
        shrinking.checksum_before = checksums[2];
        for (held, old) in images.iter().enumerate() {
            let delta = Delta::between_rebuilt(
                &old[..],
                old.len() as u64,
                checksums[held],
                &images[2][..],
                Some(checksums[2]),
                vec![shrinking.clone()],
            )
            .unwrap();
            assert_eq!(delta.checksum_after, checksums[3], "copy {held}");
            fs::write(&copy, old).unwrap();
            let conn = open(&copy);
            apply_committed(&conn, [Ok(delta)], checksums[held]).unwrap();
            drop(conn);
            fs::write(&expected, &images[3]).unwrap();
            assert_same_files(&copy, &expected, 1024);
        }
        // A copy that is not at the checksum it claims is refused, wherever it drifted.
        for pgno in [1, 7, images[1].len() / 1024] {
            let mut drifted = images[1].clone();
            drifted[(pgno - 1) * 1024 + 512] ^= 1;
            let refused = Delta::between_rebuilt(
                &drifted[..],
                drifted.len() as u64,
                checksums[1],
                &images[0][..],
                Some(checksums[0]),
                deltas[..2].to_vec(),
            );
            assert!(
                matches!(refused, Err(DeltaError::Mismatch { .. })),
                "page {pgno}: {refused:?}"
            );
        }
        // A snapshot that is not the run's base, or ends inside a page.
        let refused = Delta::between_rebuilt(
            &images[0][..],
            images[0].len() as u64,
            checksums[0],
            &images[1][..],
            None,
            deltas[..1].to_vec(),
        );
        assert!(
            matches!(refused, Err(DeltaError::Mismatch { .. })),
            "{refused:?}"
        );
        let cut = &images[0][..images[0].len() - 10];
        let refused = Delta::between_rebuilt(
            &images[0][..],
            images[0].len() as u64,
            checksums[0],
            cut,
            None,
            vec![],
        );
        assert!(
            matches!(refused, Err(DeltaError::Corrupt(_))),
            "{refused:?}"
        );
        // Another page size.
        let other = dir.path().join("other.sqlite");
        open(&other)
            .execute_batch("PRAGMA page_size = 4096; CREATE TABLE t(x);")
            .unwrap();
        let other = fs::read(&other).unwrap();
        let refused = Delta::between_rebuilt(
            &other[..],
            other.len() as u64,
            image_checksum(&other, 4096),
            &images[0][..],
            None,
            vec![],
        );
        assert!(
            matches!(refused, Err(DeltaError::Unsupported(_))),
            "{refused:?}"
        );
    }

    /// Two connections to two files that must hold the same database.
    struct Pair {
        _dir: tempfile::TempDir,
        origin_path: PathBuf,
        origin: Connection,
        replica_path: PathBuf,
        replica: Connection,
        checksum: u64,
        page_size: usize,
    }

    impl Pair {
        /// An origin set up by `setup` and a copy of its file.
        fn new(setup: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let origin_path = dir.path().join("origin.sqlite");
            let replica_path = dir.path().join("replica.sqlite");
            let origin = open(&origin_path);
            origin.execute_batch(setup).unwrap();
            fs::copy(&origin_path, &replica_path).unwrap();
            let checksum = database_checksum(&origin).unwrap();
            Self {
                page_size: page_size(&origin).unwrap() as usize,
                replica: open(&replica_path),
                _dir: dir,
                origin_path,
                origin,
                replica_path,
                checksum,
            }
        }

        /// Writes on the origin, ships the delta to the replica, checks they agree.
        fn round(&mut self, work: impl FnOnce(&Connection)) -> Delta {
            let delta = write_and_capture(&self.origin, &self.origin_path, self.checksum, work);
            let applied =
                apply_committed(&self.replica, [Ok(delta.clone())], self.checksum).unwrap();
            assert_eq!(applied, delta.checksum_after);
            self.checksum = applied;
            self.assert_same();
            delta
        }

        fn assert_same(&self) {
            assert_eq!(database_checksum(&self.origin).unwrap(), self.checksum);
            assert_eq!(database_checksum(&self.replica).unwrap(), self.checksum);
            assert_eq!(rows(&self.replica), rows(&self.origin));
            assert_eq!(integrity(&self.replica), "ok");
            assert_same_files(&self.replica_path, &self.origin_path, self.page_size);
        }
    }

    /// One random statement (or savepoint that is rolled back) on a table of `tables`.
    fn random_write(conn: &Connection, rng: &mut Rng, tables: &mut Vec<String>, page_size: u64) {
        let table = tables[rng.below(tables.len() as u64) as usize].clone();
        let insert = format!(
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?1)
             INSERT INTO {table}(v) SELECT randomblob(?2) FROM c"
        );
        let outcome = match rng.below(10) {
            0 | 1 => conn.execute(&insert, [1 + rng.below(40), 1 + rng.below(200)]),
            2 => conn.execute(&insert, [1 + rng.below(3), page_size * (1 + rng.below(4))]),
            3 => conn.execute(
                &format!("UPDATE {table} SET v = randomblob(?1) WHERE id % 7 = ?2"),
                [rng.below(3 * page_size), rng.below(7)],
            ),
            4 => conn.execute(
                &format!("DELETE FROM {table} WHERE id % 5 = ?1"),
                [rng.below(5)],
            ),
            5 => conn.execute(&format!("DELETE FROM {table}"), []),
            6 => {
                let name = format!("t{}", rng.below(1_000_000));
                tables.push(name.clone());
                conn.execute_batch(&format!(
                    "CREATE TABLE {name}(id INTEGER PRIMARY KEY, v BLOB);
                     INSERT INTO {name}(v) VALUES (randomblob(100))"
                ))
                .map(|()| 0)
            }
            7 => conn
                .execute_batch(&format!(
                    "CREATE INDEX IF NOT EXISTS {table}_v ON {table}(v)"
                ))
                .map(|()| 0),
            8 if tables.len() > 1 => {
                tables.retain(|name| *name != table);
                conn.execute_batch(&format!("DROP TABLE {table}")).map(|()| 0)
            }
            _ => conn
                .execute_batch(&format!(
                    "SAVEPOINT s; DELETE FROM {table}; INSERT INTO {table}(v) VALUES (randomblob(5000));
                     ROLLBACK TO s; RELEASE s"
                ))
                .map(|()| 0),
        };
        outcome.unwrap();
    }

    /// A pair for random transactions: one table of two rows.
    fn random_pair(auto_vacuum: &str, page_size: u64) -> Pair {
        Pair::new(&format!(
            "PRAGMA page_size = {page_size}; PRAGMA auto_vacuum = {auto_vacuum};
             CREATE TABLE t0(id INTEGER PRIMARY KEY, v BLOB);
             INSERT INTO t0(v) VALUES (randomblob(1000)), (randomblob(10));"
        ))
    }

    /// Up to four random statements (see [`random_write`]).
    fn random_transaction(
        conn: &Connection,
        rng: &mut Rng,
        tables: &mut Vec<String>,
        page_size: u64,
    ) {
        for _ in 0..rng.below(5) {
            random_write(conn, rng, tables, page_size);
        }
    }

    fn replay(seed: u64, auto_vacuum: &str, page_size: u64, rounds: usize) {
        let mut pair = random_pair(auto_vacuum, page_size);
        let mut rng = Rng(seed);
        let mut tables = vec!["t0".to_owned()];
        for round in 0..rounds {
            let delta =
                pair.round(|conn| random_transaction(conn, &mut rng, &mut tables, page_size));
            eprintln!(
                "seed {seed} ({auto_vacuum}, {page_size}) round {round}: {} -> {} pages, {} records",
                delta.pages_before,
                delta.pages_after,
                delta.changed_pages()
            );
        }
    }

    #[test]
    fn random_transactions_replay_exactly_on_a_copy() {
        for seed in 1..=9u64 {
            let auto_vacuum = ["NONE", "FULL", "INCREMENTAL"][(seed % 3) as usize];
            let page_size = [4096, 1024, 512][(seed / 3 % 3) as usize];
            replay(seed, auto_vacuum, page_size, 25);
        }
    }

    /// `rounds` random transactions on the origin, captured and not applied; with a whole
    /// image of the origin after round `image_after`, as an overwrite leaves in the log.
    fn random_run(
        pair: &Pair,
        seed: u64,
        page_size: u64,
        rounds: usize,
        image_after: Option<usize>,
    ) -> Vec<Delta> {
        let mut rng = Rng(seed);
        let mut tables = vec!["t0".to_owned()];
        let mut checksum = pair.checksum;
        let mut run = Vec::new();
        for round in 0..rounds {
            let delta = write_and_capture(&pair.origin, &pair.origin_path, checksum, |conn| {
                random_transaction(conn, &mut rng, &mut tables, page_size)
            });
            checksum = delta.checksum_after;
            run.push(delta);
            if image_after == Some(round) {
                let image = fs::read(&pair.origin_path).unwrap();
                run.push(Delta::from_image(&image).unwrap());
            }
        }
        run
    }

    #[test]
    fn a_run_of_random_transactions_applies_as_one() {
        for seed in 1..=9u64 {
            let auto_vacuum = ["NONE", "FULL", "INCREMENTAL"][(seed % 3) as usize];
            let page_size = [4096, 1024, 512][(seed / 3 % 3) as usize];
            let mut pair = random_pair(auto_vacuum, page_size);
            let image_after = (seed % 2 == 0).then_some(12);
            let run = random_run(&pair, seed, page_size, 25, image_after);
            let applied =
                apply_committed(&pair.replica, run.iter().cloned().map(Ok), pair.checksum).unwrap();
            assert_eq!(applied, run.last().unwrap().checksum_after, "seed {seed}");
            pair.checksum = applied;
            pair.assert_same();
        }
    }

    #[test]
    fn a_run_with_a_delta_that_does_not_fit_is_refused_whole() {
        let mut pair = random_pair("NONE", 4096);
        let mut checksum = pair.checksum;
        let run: Vec<Delta> = (1..=6)
            .map(|i| {
                let delta = write_and_capture(&pair.origin, &pair.origin_path, checksum, |conn| {
                    conn.execute("INSERT INTO t0(v) VALUES (randomblob(?1))", [i * 700])
                        .unwrap();
                });
                checksum = delta.checksum_after;
                delta
            })
            .collect();
        let untouched = fs::read(&pair.replica_path).unwrap();
        let mut skipped = run.clone();
        skipped.remove(3);
        let mut spoiled = run.clone();
        let record = &mut spoiled[3].records[0];
        let middle = record.bytes.len() / 2;
        record.bytes[middle] ^= 1;
        let unreadable = run
            .iter()
            .enumerate()
            .map(|(i, delta)| match i {
                3 => Delta::decode(b"not a delta"),
                _ => Ok(delta.clone()),
            })
            .collect::<Vec<_>>();
        let bad_runs = [
            (skipped.into_iter().map(Ok).collect(), "before"),
            (spoiled.into_iter().map(Ok).collect(), "after"),
            (unreadable, "readable"),
        ];
        for (bad, what) in bad_runs {
            let refused = apply_committed(&pair.replica, bad, pair.checksum).unwrap_err();
            let expected = match &refused {
                DeltaError::Mismatch { stage, .. } => *stage == what,
                DeltaError::Corrupt(_) => what == "readable",
                _ => false,
            };
            assert!(expected, "{what}: {refused}");
            assert_eq!(fs::read(&pair.replica_path).unwrap(), untouched);
            assert_eq!(database_checksum(&pair.replica).unwrap(), pair.checksum);
        }
        pair.checksum =
            apply_committed(&pair.replica, run.iter().cloned().map(Ok), pair.checksum).unwrap();
        pair.assert_same();
    }

    #[test]
    fn free_pages_reused_without_journaling_are_captured() {
        let mut pair = Pair::new(
            "CREATE TABLE a(v); CREATE TABLE b(v);
             WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 50)
             INSERT INTO a SELECT randomblob(3000) FROM c;
             INSERT INTO b SELECT v FROM a;
             DELETE FROM a;",
        );
        let delta = pair.round(|conn| {
            conn.execute_batch("INSERT INTO b SELECT randomblob(3000) FROM b LIMIT 10")
                .unwrap()
        });
        assert!(
            delta.changed_pages() > 10,
            "{} pages",
            delta.changed_pages()
        );
    }

    #[test]
    fn a_first_transaction_on_an_empty_file_applies_to_an_empty_file() {
        let mut pair = Pair::new("");
        assert_eq!(pair.checksum, 0);
        let delta = pair.round(|conn| {
            conn.execute_batch("CREATE TABLE t(v); INSERT INTO t VALUES ('first')")
                .unwrap()
        });
        assert_eq!((delta.pages_before, delta.pages_after), (0, 2));
        let empty = pair.round(|_| {});
        assert!(empty.records.is_empty());
        assert_eq!(empty.checksum_after, empty.checksum_before);
    }

    #[test]
    fn a_transaction_whose_cache_spilled_is_read_across_journal_segments() {
        let mut pair = Pair::new("CREATE TABLE t(v)");
        pair.origin
            .execute_batch("PRAGMA cache_size = 10; PRAGMA cache_spill = ON")
            .unwrap();
        let journal = journal_of(&pair.origin_path);
        pair.round(|conn| {
            conn.execute_batch(
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 300)
                 INSERT INTO t SELECT randomblob(1000) FROM c;
                 UPDATE t SET v = randomblob(900) WHERE rowid % 3 = 0;",
            )
            .unwrap();
            let parsed = Journal::read(&journal, 4096).unwrap().unwrap();
            assert!(parsed.maybe_spilled);
        });
        // With free pages to reuse, the old content of the reused ones may be lost: refused.
        pair.origin.execute_batch("DELETE FROM t").unwrap();
        pair.origin.execute_batch("BEGIN").unwrap();
        pair.origin
            .execute_batch(
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 1000)
                 INSERT INTO t SELECT randomblob(1000) FROM c",
            )
            .unwrap();
        let refused = capture(&pair.origin, &journal, 0).unwrap_err();
        assert!(matches!(refused, DeltaError::Unsupported(_)), "{refused}");
        pair.origin.execute_batch("ROLLBACK").unwrap();
    }

    #[test]
    fn capture_needs_secure_delete_and_a_rollback_journal() {
        let pair = Pair::new("CREATE TABLE t(v)");
        let journal = journal_of(&pair.origin_path);
        for (setting, what) in [
            ("PRAGMA secure_delete = OFF", "secure_delete"),
            ("PRAGMA journal_mode = MEMORY", "journal_mode"),
        ] {
            let conn = open(&pair.origin_path);
            conn.execute_batch(setting).unwrap();
            conn.execute_batch("BEGIN; INSERT INTO t VALUES (1)")
                .unwrap();
            let refused = capture(&conn, &journal, pair.checksum).unwrap_err();
            assert!(refused.to_string().contains(what), "{refused}");
            conn.execute_batch("ROLLBACK").unwrap();
        }
        let outside = capture(&pair.origin, &journal, pair.checksum).unwrap_err();
        assert!(outside.to_string().contains("no transaction"), "{outside}");
    }

    #[test]
    fn a_one_row_update_of_8_mib_is_a_few_hundred_bytes() {
        let mut pair = Pair::new(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);
             WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 250000)
             INSERT INTO t SELECT i, printf('row %08d, a short one', i) FROM c;",
        );
        let size = fs::metadata(&pair.origin_path).unwrap().len();
        assert!(size >= 8 << 20, "{size} bytes");
        let delta = pair.round(|conn| {
            conn.execute("UPDATE t SET v = 'changed' WHERE id = 123456", [])
                .unwrap();
        });
        let encoded = delta.encode().unwrap().len();
        eprintln!(
            "one-row update of {size} bytes: {} pages changed, {encoded} bytes encoded",
            delta.changed_pages()
        );
        assert!(encoded < 400, "{encoded} bytes");
    }

    #[test]
    fn a_delta_on_the_wrong_base_is_refused_before_anything_is_written() {
        let pair = Pair::new("CREATE TABLE t(v); INSERT INTO t VALUES (1)");
        pair.replica
            .execute_batch("INSERT INTO t VALUES ('the replica went its own way')")
            .unwrap();
        let delta = write_and_capture(&pair.origin, &pair.origin_path, pair.checksum, |conn| {
            conn.execute_batch("INSERT INTO t VALUES (2)").unwrap()
        });
        let untouched = fs::read(&pair.replica_path).unwrap();
        let own = database_checksum(&pair.replica).unwrap();
        let before = apply_committed(&pair.replica, [Ok(delta.clone())], own).unwrap_err();
        assert!(
            matches!(
                before,
                DeltaError::Mismatch {
                    stage: "before",
                    ..
                }
            ),
            "{before}"
        );
        // A caller claiming the right base is caught by the result, still before writing.
        let after =
            apply_committed(&pair.replica, [Ok(delta.clone())], delta.checksum_before).unwrap_err();
        assert!(
            matches!(after, DeltaError::Mismatch { stage: "after", .. }),
            "{after}"
        );
        assert_eq!(fs::read(&pair.replica_path).unwrap(), untouched);
    }

    fn sample_delta() -> Vec<u8> {
        let mut pair = Pair::new("CREATE TABLE t(v); INSERT INTO t VALUES (randomblob(5000))");
        pair.round(|conn| {
            conn.execute_batch("UPDATE t SET v = randomblob(9000)")
                .unwrap()
        })
        .encode()
        .unwrap()
    }

    #[test]
    fn decoding_refuses_anything_but_a_whole_delta() {
        let encoded = sample_delta();
        assert!(Delta::decode(&encoded).is_ok());
        for len in 0..encoded.len() {
            assert!(
                Delta::decode(&encoded[..len]).is_err(),
                "cut to {len} bytes"
            );
        }
        for bit in 0..encoded.len() * 8 {
            let mut flipped = encoded.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            // zstd ignores a few bits of its frame header; nothing else may pass.
            if let Ok(decoded) = Delta::decode(&flipped) {
                assert_eq!(decoded.encode().unwrap(), encoded, "bit {bit} flipped");
            }
        }
        let mut rng = Rng(7);
        for len in [0, 1, 8, 57, 100, 4096] {
            let garbage: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
            assert!(Delta::decode(&garbage).is_err());
        }
        let mut trailing = encoded.clone();
        trailing.extend_from_slice(&encoded);
        assert!(Delta::decode(&trailing).is_err());
    }

    /// `plain` compressed as a delta is, followed by `zeros` zero bytes.
    fn compressed(plain: &[u8], zeros: usize) -> Vec<u8> {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL).unwrap();
        encoder.include_checksum(true).unwrap();
        encoder.write_all(plain).unwrap();
        let chunk = vec![0; 1 << 20];
        for start in (0..zeros).step_by(chunk.len()) {
            encoder
                .write_all(&chunk[..chunk.len().min(zeros - start)])
                .unwrap();
        }
        encoder.finish().unwrap()
    }

    #[test]
    fn decoding_reads_no_more_than_the_header_allows() {
        let one_page = Delta {
            page_size: 512,
            base_version: Version::new(1),
            version: Version::new(2),
            pages_before: 1,
            pages_after: 1,
            checksum_before: 0,
            checksum_after: 0,
            replace: false,
            records: vec![],
        };
        // A header for one record, the record, then a gigabyte of zeros: refused after it.
        let mut plain = one_page.header(1);
        plain.extend_from_slice(&[0, 0, 0, 1, RecordKind::Xor as u8]);
        plain.extend_from_slice(&[0; 512]);
        let bomb = compressed(&plain, 1 << 30);
        assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
        let refused = Delta::decode(&bomb).unwrap_err();
        assert!(
            refused.to_string().contains("after the last record"),
            "{refused}"
        );
        // More records than the database has pages: refused before reading any.
        let refused = Delta::decode(&compressed(&one_page.header(u32::MAX), 0)).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("records for a database of 1 pages"),
            "{refused}"
        );
    }

    #[test]
    fn records_out_of_place_are_refused() {
        let page = vec![0; 512];
        let record = |pgno, kind| PageRecord {
            pgno,
            kind,
            bytes: page.clone(),
        };
        let base = Delta {
            page_size: 512,
            base_version: Version::new(1),
            version: Version::new(2),
            pages_before: 3,
            pages_after: 4,
            checksum_before: 1,
            checksum_after: 2,
            replace: false,
            records: vec![record(2, RecordKind::Xor), record(4, RecordKind::New)],
        };
        assert_eq!(Delta::decode(&base.encode().unwrap()).unwrap(), base);
        for records in [
            vec![record(4, RecordKind::New), record(2, RecordKind::Xor)],
            vec![record(2, RecordKind::Xor), record(2, RecordKind::Xor)],
            vec![record(4, RecordKind::Xor)],
            vec![record(3, RecordKind::New), record(4, RecordKind::New)],
            vec![record(2, RecordKind::Removed), record(4, RecordKind::New)],
            vec![record(0, RecordKind::Xor), record(4, RecordKind::New)],
            vec![record(2, RecordKind::Xor)],
        ] {
            let bad = Delta {
                records: records.clone(),
                ..base.clone()
            };
            assert!(
                Delta::decode(&bad.encode().unwrap()).is_err(),
                "{records:?}"
            );
        }
        let short_page = Delta {
            records: vec![PageRecord {
                pgno: 4,
                kind: RecordKind::New,
                bytes: vec![0; 100],
            }],
            ..base
        };
        assert!(short_page.encode().is_err());
    }

    #[test]
    fn an_image_replaces_an_empty_a_larger_and_a_smaller_database() {
        let source = Pair::new(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
             WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 40)
             INSERT INTO t(v) SELECT randomblob(1500) FROM c;",
        );
        let image = fs::read(&source.origin_path).unwrap();
        let delta = Delta::decode(&Delta::from_image(&image).unwrap().encode().unwrap()).unwrap();
        assert_eq!(delta.checksum_after, image_checksum(&image, 4096));
        assert_eq!(delta.checksum_after, source.checksum);
        for setup in [
            "",
            "CREATE TABLE other(v); INSERT INTO other VALUES (randomblob(200000))",
            "CREATE TABLE other(v); INSERT INTO other VALUES (1)",
        ] {
            let target = Pair::new(setup);
            let applied = apply_committed(&target.origin, [Ok(delta.clone())], 12345).unwrap();
            assert_eq!(applied, delta.checksum_after);
            assert_eq!(database_checksum(&target.origin).unwrap(), applied);
            assert_eq!(rows(&target.origin), rows(&source.origin));
            assert_eq!(integrity(&target.origin), "ok");
            assert_same_files(&target.origin_path, &source.origin_path, 4096);
        }
        assert!(Delta::from_image(b"not a database").is_err());
        assert!(Delta::from_image(&image[..image.len() - 1]).is_err());
    }

    #[test]
    fn the_checksum_after_an_xor_record_depends_on_the_page_it_was_applied_to() {
        let (a, b) = (vec![1; 512], vec![2; 512]);
        let record: Vec<u8> = (0..512).map(|i| (i % 7) as u8).collect();
        let xor =
            |page: &[u8]| -> Vec<u8> { page.iter().zip(&record).map(|(p, r)| p ^ r).collect() };
        let change = |page: &[u8]| page_checksum(2, page) ^ page_checksum(2, &xor(page));
        assert_ne!(change(&a), change(&b));
        let crc_change = |page: &[u8]| page_crc(2, page) ^ page_crc(2, &xor(page));
        assert_eq!(crc_change(&a), crc_change(&b), "a bare CRC cannot tell");
    }

    #[test]
    fn page_checksums_leave_out_the_commit_counters_only() {
        let mut page = vec![7; 512];
        let checksum = page_checksum(1, &page);
        page[24] = 0;
        page[99] = 0;
        assert_eq!(page_checksum(1, &page), checksum);
        assert_ne!(page_checksum(2, &page), page_checksum(2, &vec![7; 512]));
        page[28] = 0;
        assert_ne!(page_checksum(1, &page), checksum);
        assert_ne!(page_checksum(1, &page), page_checksum(3, &page));
    }

    #[test]
    fn sqlite_dbpage_is_built_in() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t(v)").unwrap();
        let pages: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_dbpage", [], |row| row.get(0))
            .unwrap();
        assert_eq!(pages, 2);
    }

    /// Finding for the bundled SQLite 3.50: `INSERT INTO sqlite_dbpage(pgno, data) VALUES
    /// (N, NULL)` keeps pages 1..N-1 (not N), only at COMMIT (the page count does not
    /// change before), and a page written through `sqlite_dbpage` afterwards cancels it.
    #[test]
    fn a_null_page_truncates_the_pages_from_it_at_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let conn = open(&path);
        conn.execute_batch("CREATE TABLE t(v)").unwrap();
        let file_pages = || fs::metadata(&path).unwrap().len() / 4096;
        let page_one = current_page(&conn, 1).unwrap();
        let grow = |pages: u32| {
            let mut first = page_one.clone();
            set_header_page_count(&mut first, pages);
            conn.execute(
                "INSERT INTO sqlite_dbpage(pgno, data) VALUES (1, ?1)",
                [first],
            )
            .unwrap();
        };
        let write_empty = |pgno: u32| {
            conn.execute(
                "INSERT INTO sqlite_dbpage(pgno, data) VALUES (?1, zeroblob(4096))",
                [pgno],
            )
            .unwrap();
        };
        conn.execute_batch("BEGIN").unwrap();
        grow(6);
        (3..=6).for_each(write_empty);
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!(file_pages(), 6);

        conn.execute_batch("BEGIN").unwrap();
        grow(4);
        conn.execute("INSERT INTO sqlite_dbpage(pgno, data) VALUES (5, NULL)", [])
            .unwrap();
        assert_eq!(page_count(&conn).unwrap(), 6);
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!(file_pages(), 4);

        conn.execute_batch("BEGIN").unwrap();
        grow(4);
        conn.execute("INSERT INTO sqlite_dbpage(pgno, data) VALUES (3, NULL)", [])
            .unwrap();
        write_empty(4);
        conn.execute_batch("COMMIT").unwrap();
        assert_eq!(file_pages(), 4, "a later page write cancels the truncation");
    }
}
