//! Row-level diff between two SQLite database files: the rows each table gained, lost or
//! changed, and the schema objects that were added, removed or rewritten.
//!
//! Each table is read from both files in key order and the two streams are merged (a merge
//! join), so a diff costs one sequential scan of each table and memory in proportion to the
//! rows reported, not to the database. Rows are compared as borrowed SQLite values; only
//! the rows reported are turned into JSON.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use rusqlite::fallible_streaming_iterator::FallibleStreamingIterator;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Row, Rows, Statement};
use serde::Serialize;
use serde_json::{Map, Value};

/// Blob bytes shown in hex; a diff is for reading, and the length says the rest.
const BLOB_PREVIEW: usize = 64;

/// What a diff lists.
#[derive(Clone, Debug)]
pub struct DiffOptions {
    /// Rows listed per table; the counts stay exact beyond it.
    pub max_rows_per_table: usize,
}

impl Default for DiffOptions {
    fn default() -> Self {
        Self {
            max_rows_per_table: 100,
        }
    }
}

/// How the second database differs from the first. Both lists are empty when the
/// databases hold the same schema and rows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DatabaseDiff {
    /// Tables with at least one row added, removed or changed, by name.
    pub tables: Vec<TableDiff>,
    /// Schema objects added, removed or changed, by kind then name.
    pub schema: Vec<SchemaChange>,
}

/// What happened to a row or a schema object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Only in the second database.
    Added,
    /// Only in the first database.
    Removed,
    /// In both, different.
    Changed,
}

/// The kind of a schema object, as `sqlite_schema.type` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// A table, virtual tables included.
    Table,
    /// An index with SQL of its own (not one SQLite made for a constraint).
    Index,
    /// A view.
    View,
    /// A trigger.
    Trigger,
}

/// A schema object added, removed, or whose `CREATE` statement changed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SchemaChange {
    /// What the object is.
    pub kind: ObjectKind,
    /// Its name.
    pub name: String,
    /// Added, removed or changed.
    pub change: Change,
    /// Its `CREATE` statement in the first database.
    pub sql_before: Option<String>,
    /// Its `CREATE` statement in the second database.
    pub sql_after: Option<String>,
}

/// The rows of one table that differ.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TableDiff {
    /// The table's name.
    pub table: String,
    /// The columns that identify a row: the primary key, or `rowid` (or `_rowid_`, `oid`
    /// when a column takes that name) for a table without one. Empty when the two versions
    /// share no key; every row is then listed as removed and added.
    pub key: Vec<String>,
    /// Rows only in the second database.
    pub added: u64,
    /// Rows only in the first database.
    pub removed: u64,
    /// Rows in both whose values differ.
    pub changed: u64,
    /// The first rows that differ, in key order, up to [`DiffOptions::max_rows_per_table`].
    pub rows: Vec<RowChange>,
    /// Whether more rows differ than are listed.
    pub truncated: bool,
}

/// A row added, removed or changed.
///
/// Values are JSON: integers, reals and text as such, NULL as `null`, a blob as
/// `{"blob_hex": <its first 64 bytes>, "len": <its length>}`, and a real JSON cannot hold
/// (an infinity) as `{"real": "inf"}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RowChange {
    /// The row's key, column by column.
    pub key: Map<String, Value>,
    /// Added, removed or changed.
    pub change: Change,
    /// The row in the first database: every column for a removed row; for a changed row
    /// the key and only the columns whose values differ.
    pub before: Option<Map<String, Value>>,
    /// The row in the second database, with the same columns as `before`.
    pub after: Option<Map<String, Value>>,
}

/// Which of the two databases an error concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The first database, the one diffed from.
    From,
    /// The second database, the one diffed to.
    To,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::From => "\"from\"",
            Side::To => "\"to\"",
        })
    }
}

/// Why a diff failed. Messages name the side, never the file's path.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// The file could not be opened.
    #[error("cannot open the {side} database: {reason}")]
    Open {
        /// The database concerned.
        side: Side,
        /// SQLite's reason, without the path rusqlite appends to it.
        reason: String,
    },
    /// SQLite failed while reading (e.g. the file is not a database).
    #[error("cannot read the {side} database: {source}")]
    Read {
        /// The database concerned.
        side: Side,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// SQLite returned a table's rows in an order the merge cannot follow, which happens
    /// for text keys in a UTF-16 database: the diff stops rather than pairing the wrong rows.
    #[error("table \"{table}\" of the {side} database is not in the key order the diff needs")]
    KeyOrder {
        /// The database concerned.
        side: Side,
        /// The table.
        table: String,
    },
}

/// Attaches the side to a SQLite error.
trait OnSide<T> {
    fn on(self, side: Side) -> Result<T, DiffError>;
}

impl<T> OnSide<T> for rusqlite::Result<T> {
    fn on(self, side: Side) -> Result<T, DiffError> {
        self.map_err(|source| DiffError::Read { side, source })
    }
}

/// Diffs two SQLite database files, `from` being the older.
///
/// Both are opened read-only and each is read in one transaction, so a writer committing
/// meanwhile does not mix versions into the result.
pub fn diff_databases(
    from: &Path,
    to: &Path,
    options: &DiffOptions,
) -> Result<DatabaseDiff, DiffError> {
    let from = Db::open(from, Side::From)?;
    let to = Db::open(to, Side::To)?;
    let before = from.schema()?;
    let after = to.schema()?;

    let old_tables = stored_tables(&before);
    let new_tables = stored_tables(&after);
    let mut tables = Vec::new();
    for &name in old_tables.union(&new_tables) {
        let table = match (old_tables.contains(name), new_tables.contains(name)) {
            (true, true) => diff_table(&from, &to, &from.table(name)?, &to.table(name)?, options)?,
            (true, false) => list_only(&from, &from.table(name)?, Change::Removed, options)?,
            _ => list_only(&to, &to.table(name)?, Change::Added, options)?,
        };
        if table.added + table.removed + table.changed > 0 {
            tables.push(table);
        }
    }

    Ok(DatabaseDiff {
        tables,
        schema: schema_changes(&before, &after),
    })
}

/// One side's objects by kind and name, `sqlite_%` ones left out.
type Schema = BTreeMap<(ObjectKind, String), Object>;

struct Object {
    sql: Option<String>,
    /// 0 for views, triggers and virtual tables: they hold no rows of their own.
    rootpage: i64,
}

/// Tables with a b-tree. A virtual table's rows live in its shadow tables, which are
/// diffed like any other, or outside the file.
fn stored_tables(schema: &Schema) -> BTreeSet<&str> {
    schema
        .iter()
        .filter(|((kind, _), object)| *kind == ObjectKind::Table && object.rootpage != 0)
        .map(|((_, name), _)| name.as_str())
        .collect()
}

fn schema_changes(before: &Schema, after: &Schema) -> Vec<SchemaChange> {
    let keys: BTreeSet<_> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            let old = before.get(key).map(|o| o.sql.clone());
            let new = after.get(key).map(|o| o.sql.clone());
            let change = match (&old, &new) {
                (Some(_), None) => Change::Removed,
                (None, Some(_)) => Change::Added,
                (Some(a), Some(b)) if a != b => Change::Changed,
                _ => return None,
            };
            Some(SchemaChange {
                kind: key.0,
                name: key.1.clone(),
                change,
                sql_before: old.flatten(),
                sql_after: new.flatten(),
            })
        })
        .collect()
}

/// How one side's table is laid out.
struct Table {
    name: String,
    /// Stored columns, generated ones left out: they follow from the others.
    columns: Vec<String>,
    /// The columns that identify a row; `None` only when no name reaches the rowid of a
    /// table without primary key (every one taken by a column).
    key: Option<Vec<String>>,
    /// A name that reaches the rowid; `None` for a WITHOUT ROWID table.
    rowid: Option<String>,
    /// The INTEGER PRIMARY KEY column, which is the rowid.
    rowid_alias: Option<String>,
}

impl Table {
    fn column(&self, name: &str) -> Option<&String> {
        self.columns.iter().find(|c| c.eq_ignore_ascii_case(name))
    }

    fn key_names(&self) -> Vec<String> {
        self.key.clone().unwrap_or_default()
    }

    /// The select list and ORDER BY reading this table in the order of `key` (which may be
    /// the other side's key), or `None` if this side lacks one of its columns.
    ///
    /// Text is ordered `COLLATE BINARY`, the order [`compare`] follows; for a key of the
    /// default collation that is its index's order, so SQLite walks the b-tree without
    /// sorting. The rowid breaks ties, for keys that are not unique on this side (NULLs in
    /// a rowid table's primary key, or a primary key that changed).
    fn key_sql(&self, key: &[String]) -> Option<(Vec<String>, String)> {
        let mut select = Vec::with_capacity(key.len());
        let mut order = Vec::with_capacity(key.len() + 1);
        let mut is_rowid = false;
        for name in key {
            if let Some(column) = self.column(name) {
                let quoted = quote(column);
                if self.rowid_alias.as_ref() == Some(column) {
                    is_rowid = true;
                    order.push(quoted.clone());
                } else {
                    order.push(format!("{quoted} COLLATE BINARY"));
                }
                select.push(quoted);
            } else if key.len() == 1 && is_rowid_name(name) {
                let rowid = self.rowid.as_deref()?;
                is_rowid = true;
                select.push(rowid.to_owned());
                order.push(rowid.to_owned());
            } else {
                return None;
            }
        }
        match &self.rowid {
            Some(rowid) if !is_rowid => order.push(rowid.clone()),
            _ => {}
        }
        let order = if order.is_empty() {
            String::new()
        } else {
            format!(" ORDER BY {}", order.join(", "))
        };
        Some((select, order))
    }
}

/// The names SQLite accepts for the rowid, each unless a column takes it.
const ROWID_NAMES: [&str; 3] = ["rowid", "_rowid_", "oid"];

fn is_rowid_name(name: &str) -> bool {
    ROWID_NAMES.iter().any(|r| r.eq_ignore_ascii_case(name))
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

struct Db {
    conn: Connection,
    side: Side,
}

impl Db {
    fn open(path: &Path, side: Side) -> Result<Self, DiffError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|error| DiffError::Open {
            side,
            reason: match error {
                rusqlite::Error::SqliteFailure(code, _) => code.to_string(),
                rusqlite::Error::InvalidPath(_) => "not a valid path".to_owned(),
                other => other.to_string(),
            },
        })?;
        // One snapshot for the whole diff; the read lock is taken at the first read.
        conn.execute_batch("BEGIN").on(side)?;
        Ok(Self { conn, side })
    }

    fn prepare(&self, sql: &str) -> Result<Statement<'_>, DiffError> {
        self.conn.prepare(sql).on(self.side)
    }

    fn schema(&self) -> Result<Schema, DiffError> {
        let mut stmt = self.prepare(
            "SELECT type, name, sql, rootpage FROM sqlite_schema \
             WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        )?;
        let mut rows = stmt.query([]).on(self.side)?;
        let mut schema = Schema::new();
        while let Some(row) = rows.next().on(self.side)? {
            let kind = match row.get_ref(0).on(self.side)?.as_str().unwrap_or_default() {
                "table" => ObjectKind::Table,
                "index" => ObjectKind::Index,
                "view" => ObjectKind::View,
                "trigger" => ObjectKind::Trigger,
                _ => continue,
            };
            let object = Object {
                sql: row.get(2).on(self.side)?,
                rootpage: row.get::<_, Option<i64>>(3).on(self.side)?.unwrap_or(0),
            };
            schema.insert((kind, row.get(1).on(self.side)?), object);
        }
        Ok(schema)
    }

    fn table(&self, name: &str) -> Result<Table, DiffError> {
        let strings = |sql: &str| -> Result<Vec<String>, DiffError> {
            let mut stmt = self.prepare(sql)?;
            let names = stmt.query_map([name], |row| row.get(0)).on(self.side)?;
            names.collect::<rusqlite::Result<_>>().on(self.side)
        };
        let columns = strings("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
        let pk = strings("SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk")?;
        let without_rowid: bool = self
            .conn
            .query_row(
                "SELECT wr FROM pragma_table_list(?1) WHERE schema = 'main'",
                [name],
                |row| row.get(0),
            )
            .on(self.side)?;
        let rowid = (!without_rowid)
            .then(|| {
                ROWID_NAMES
                    .into_iter()
                    .find(|r| !columns.iter().any(|c| c.eq_ignore_ascii_case(r)))
            })
            .flatten()
            .map(str::to_owned);
        // A rowid table's single-column primary key is the rowid unless SQLite made an
        // index for it (it does for any declared type but INTEGER, and for DESC).
        let rowid_alias = if !without_rowid && pk.len() == 1 {
            let pk_indexes: i64 = self
                .conn
                .query_row(
                    "SELECT count(*) FROM pragma_index_list(?1) WHERE origin = 'pk'",
                    [name],
                    |row| row.get(0),
                )
                .on(self.side)?;
            (pk_indexes == 0).then(|| pk[0].clone())
        } else {
            None
        };
        let key = if pk.is_empty() {
            rowid.clone().map(|r| vec![r])
        } else {
            Some(pk)
        };
        Ok(Table {
            name: name.to_owned(),
            columns,
            key,
            rowid,
            rowid_alias,
        })
    }
}

impl TableDiff {
    fn new(table: &str, key: Vec<String>) -> Self {
        Self {
            table: table.to_owned(),
            key,
            added: 0,
            removed: 0,
            changed: 0,
            rows: Vec::new(),
            truncated: false,
        }
    }

    /// Counts a row, and lists it while there is room: rows past the cap cost no JSON.
    fn record(
        &mut self,
        change: Change,
        options: &DiffOptions,
        row: impl FnOnce() -> Result<RowChange, DiffError>,
    ) -> Result<(), DiffError> {
        match change {
            Change::Added => self.added += 1,
            Change::Removed => self.removed += 1,
            Change::Changed => self.changed += 1,
        }
        if self.rows.len() < options.max_rows_per_table {
            self.rows.push(row()?);
        }
        Ok(())
    }

    fn finish(mut self) -> Self {
        self.truncated = self.added + self.removed + self.changed > self.rows.len() as u64;
        self
    }
}

/// A table in both databases: merged on a key both sides have (the new primary key, else
/// the old one), comparing the columns they share.
fn diff_table(
    from: &Db,
    to: &Db,
    old: &Table,
    new: &Table,
    options: &DiffOptions,
) -> Result<TableDiff, DiffError> {
    let shared_key = [&new.key, &old.key]
        .into_iter()
        .flatten()
        .find_map(|key| Some((key, old.key_sql(key)?, new.key_sql(key)?)));
    let Some((key, (old_key, old_order), (new_key, new_order))) = shared_key else {
        let mut diff = TableDiff::new(&new.name, Vec::new());
        list_all(from, old, Change::Removed, options, &mut diff)?;
        list_all(to, new, Change::Added, options, &mut diff)?;
        return Ok(diff.finish());
    };

    // Each side selects its key, the shared columns, then its own: only the shared ones are
    // compared, and an added or removed row is shown whole.
    let shared: Vec<(&String, &String)> = old
        .columns
        .iter()
        .filter_map(|c| Some((c, new.column(c)?)))
        .collect();
    let old_columns: Vec<&String> = shared
        .iter()
        .map(|(c, _)| *c)
        .chain(old.columns.iter().filter(|c| new.column(c).is_none()))
        .collect();
    let new_columns: Vec<&String> = shared
        .iter()
        .map(|(_, c)| *c)
        .chain(new.columns.iter().filter(|c| old.column(c).is_none()))
        .collect();
    let select = |key: Vec<String>, columns: &[&String], order: &str| {
        let list: Vec<String> = key
            .into_iter()
            .chain(columns.iter().map(|c| quote(c)))
            .collect();
        format!(
            "SELECT {} FROM {}{order}",
            list.join(", "),
            quote(&new.name)
        )
    };
    let mut old_stmt = from.prepare(&select(old_key, &old_columns, &old_order))?;
    let mut new_stmt = to.prepare(&select(new_key, &new_columns, &new_order))?;

    let keys = key.len();
    let old_layout = Layout {
        key,
        columns: &old_columns,
    };
    let new_layout = Layout {
        key,
        columns: &new_columns,
    };
    let mut diff = TableDiff::new(&new.name, key.clone());
    let mut a = Cursor::new(&mut old_stmt, keys, Side::From)?;
    let mut b = Cursor::new(&mut new_stmt, keys, Side::To)?;
    loop {
        let order = match (a.row(), b.row()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => compare_keys(x, y, keys)?,
        };
        match (order, a.row(), b.row()) {
            (Ordering::Less, Some(x), _) => {
                diff.record(Change::Removed, options, || {
                    old_layout.whole(x, Change::Removed)
                })?;
            }
            (Ordering::Greater, _, Some(y)) => {
                diff.record(Change::Added, options, || {
                    new_layout.whole(y, Change::Added)
                })?;
            }
            (Ordering::Equal, Some(x), Some(y)) => {
                if let Some(first) = first_difference(x, y, keys, shared.len())? {
                    diff.record(Change::Changed, options, || {
                        changed_row(&old_layout, &new_layout, x, y, first, shared.len())
                    })?;
                }
            }
            _ => {}
        }
        if order.is_le() {
            a.advance(&new.name)?;
        }
        if order.is_ge() {
            b.advance(&new.name)?;
        }
    }
    Ok(diff.finish())
}

/// A table on one side only.
fn list_only(
    db: &Db,
    table: &Table,
    change: Change,
    options: &DiffOptions,
) -> Result<TableDiff, DiffError> {
    let mut diff = TableDiff::new(&table.name, table.key_names());
    list_all(db, table, change, options, &mut diff)?;
    Ok(diff.finish())
}

/// Counts every row of `table` as `change` and lists the first ones that fit.
fn list_all(
    db: &Db,
    table: &Table,
    change: Change,
    options: &DiffOptions,
    diff: &mut TableDiff,
) -> Result<(), DiffError> {
    let count: u64 = db
        .conn
        .query_row(
            &format!("SELECT count(*) FROM {}", quote(&table.name)),
            [],
            |row| row.get(0),
        )
        .on(db.side)?;
    let room = options.max_rows_per_table.saturating_sub(diff.rows.len());
    let key = table.key_names();
    let (select, order) = table.key_sql(&key).unwrap_or_default();
    let columns: Vec<&String> = table.columns.iter().collect();
    let list: Vec<String> = select
        .into_iter()
        .chain(columns.iter().map(|c| quote(c)))
        .collect();
    let mut stmt = db.prepare(&format!(
        "SELECT {} FROM {}{order} LIMIT {room}",
        list.join(", "),
        quote(&table.name)
    ))?;
    let layout = Layout {
        key: &key,
        columns: &columns,
    };
    let mut rows = stmt.query([]).on(db.side)?;
    while let Some(row) = rows.next().on(db.side)? {
        diff.rows.push(layout.whole(row, change)?);
    }
    match change {
        Change::Added => diff.added += count,
        _ => diff.removed += count,
    }
    Ok(())
}

/// The names of a row as one side selects it: the key, then the columns.
struct Layout<'a> {
    key: &'a [String],
    columns: &'a [&'a String],
}

impl Layout<'_> {
    fn key_map(&self, row: &Row<'_>, side: Side) -> Result<Map<String, Value>, DiffError> {
        let mut map = Map::new();
        for (i, name) in self.key.iter().enumerate() {
            map.insert(name.clone(), json(value(row, i, side)?));
        }
        Ok(map)
    }

    /// The key plus the columns at `indexes` (counted after the key).
    fn values(
        &self,
        row: &Row<'_>,
        side: Side,
        indexes: impl Iterator<Item = usize>,
    ) -> Result<Map<String, Value>, DiffError> {
        let mut map = self.key_map(row, side)?;
        for i in indexes {
            let v = value(row, self.key.len() + i, side)?;
            map.insert(self.columns[i].clone(), json(v));
        }
        Ok(map)
    }

    /// An added row (read from the "to" side) or a removed one (from the "from" side).
    fn whole(&self, row: &Row<'_>, change: Change) -> Result<RowChange, DiffError> {
        let side = match change {
            Change::Added => Side::To,
            _ => Side::From,
        };
        let values = self.values(row, side, 0..self.columns.len())?;
        let (before, after) = match change {
            Change::Added => (None, Some(values)),
            _ => (Some(values), None),
        };
        Ok(RowChange {
            key: self.key_map(row, side)?,
            change,
            before,
            after,
        })
    }
}

fn changed_row(
    old: &Layout<'_>,
    new: &Layout<'_>,
    x: &Row<'_>,
    y: &Row<'_>,
    first: usize,
    shared: usize,
) -> Result<RowChange, DiffError> {
    let keys = old.key.len();
    let mut differing = vec![first];
    for i in first + 1..shared {
        if !same(
            value(x, keys + i, Side::From)?,
            value(y, keys + i, Side::To)?,
        ) {
            differing.push(i);
        }
    }
    Ok(RowChange {
        key: new.key_map(y, Side::To)?,
        change: Change::Changed,
        before: Some(old.values(x, Side::From, differing.iter().copied())?),
        after: Some(new.values(y, Side::To, differing.into_iter())?),
    })
}

/// The first of the shared columns (counted after the key) whose values differ.
fn first_difference(
    x: &Row<'_>,
    y: &Row<'_>,
    keys: usize,
    shared: usize,
) -> Result<Option<usize>, DiffError> {
    for i in 0..shared {
        if !same(
            value(x, keys + i, Side::From)?,
            value(y, keys + i, Side::To)?,
        ) {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

fn value<'r>(row: &'r Row<'_>, i: usize, side: Side) -> Result<ValueRef<'r>, DiffError> {
    row.get_ref(i).on(side)
}

fn compare_keys(x: &Row<'_>, y: &Row<'_>, keys: usize) -> Result<Ordering, DiffError> {
    for i in 0..keys {
        let order = compare(value(x, i, Side::From)?, value(y, i, Side::To)?);
        if order.is_ne() {
            return Ok(order);
        }
    }
    Ok(Ordering::Equal)
}

/// SQLite's order under `COLLATE BINARY`: NULL, then numbers by value, then text, then
/// blobs, both bytewise.
fn compare(a: ValueRef<'_>, b: ValueRef<'_>) -> Ordering {
    use ValueRef::{Blob, Integer, Null, Real, Text};
    fn class(v: ValueRef<'_>) -> u8 {
        match v {
            Null => 0,
            Integer(_) | Real(_) => 1,
            Text(_) => 2,
            Blob(_) => 3,
        }
    }
    match (a, b) {
        (Integer(x), Integer(y)) => x.cmp(&y),
        (Real(x), Real(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        (Integer(i), Real(r)) => compare_int_real(i, r),
        (Real(r), Integer(i)) => compare_int_real(i, r).reverse(),
        (Text(x), Text(y)) | (Blob(x), Blob(y)) => x.cmp(y),
        _ => class(a).cmp(&class(b)),
    }
}

/// Exact, as SQLite's `sqlite3IntFloatCompare`: `i as f64` alone rounds above 2^53.
fn compare_int_real(i: i64, r: f64) -> Ordering {
    if r < -9_223_372_036_854_775_808.0 {
        return Ordering::Greater;
    }
    if r >= 9_223_372_036_854_775_808.0 {
        return Ordering::Less;
    }
    // In range, so the cast only drops the fraction.
    let whole = r as i64;
    i.cmp(&whole)
        .then_with(|| (i as f64).partial_cmp(&r).unwrap_or(Ordering::Equal))
}

/// Whether a column kept its value: the same storage class and the same bits, so that
/// `1` becoming `1.0`, or `-0.0` becoming `0.0`, shows.
fn same(a: ValueRef<'_>, b: ValueRef<'_>) -> bool {
    match (a, b) {
        (ValueRef::Null, ValueRef::Null) => true,
        (ValueRef::Integer(x), ValueRef::Integer(y)) => x == y,
        (ValueRef::Real(x), ValueRef::Real(y)) => x.to_bits() == y.to_bits(),
        (ValueRef::Text(x), ValueRef::Text(y)) | (ValueRef::Blob(x), ValueRef::Blob(y)) => x == y,
        _ => false,
    }
}

fn json(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => i.into(),
        ValueRef::Real(r) => serde_json::Number::from_f64(r)
            .map(Value::Number)
            .unwrap_or_else(|| serde_json::json!({ "real": r.to_string() })),
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned().into(),
        ValueRef::Blob(b) => {
            let hex: String = b
                .iter()
                .take(BLOB_PREVIEW)
                .map(|byte| format!("{byte:02x}"))
                .collect();
            serde_json::json!({ "blob_hex": hex, "len": b.len() })
        }
    }
}

/// One side of the merge: the current row, and a copy of the previous row's key to check
/// that rows come in the order [`compare`] expects.
struct Cursor<'s> {
    rows: Rows<'s>,
    previous: Vec<Slot>,
    keys: usize,
    side: Side,
}

/// An owned key value whose buffer is reused from row to row.
enum Slot {
    Null,
    Integer(i64),
    Real(f64),
    Bytes { text: bool, bytes: Vec<u8> },
}

impl Slot {
    fn set(&mut self, v: ValueRef<'_>) {
        match (v, &mut *self) {
            (ValueRef::Text(s), Slot::Bytes { text, bytes })
            | (ValueRef::Blob(s), Slot::Bytes { text, bytes }) => {
                *text = matches!(v, ValueRef::Text(_));
                bytes.clear();
                bytes.extend_from_slice(s);
            }
            (ValueRef::Null, _) => *self = Slot::Null,
            (ValueRef::Integer(i), _) => *self = Slot::Integer(i),
            (ValueRef::Real(r), _) => *self = Slot::Real(r),
            (ValueRef::Text(s), _) => {
                *self = Slot::Bytes {
                    text: true,
                    bytes: s.to_vec(),
                }
            }
            (ValueRef::Blob(s), _) => {
                *self = Slot::Bytes {
                    text: false,
                    bytes: s.to_vec(),
                }
            }
        }
    }

    fn get(&self) -> ValueRef<'_> {
        match self {
            Slot::Null => ValueRef::Null,
            Slot::Integer(i) => ValueRef::Integer(*i),
            Slot::Real(r) => ValueRef::Real(*r),
            Slot::Bytes { text: true, bytes } => ValueRef::Text(bytes),
            Slot::Bytes { text: false, bytes } => ValueRef::Blob(bytes),
        }
    }
}

impl<'s> Cursor<'s> {
    fn new(stmt: &'s mut Statement<'_>, keys: usize, side: Side) -> Result<Self, DiffError> {
        let mut rows = stmt.query([]).on(side)?;
        rows.advance().on(side)?;
        Ok(Self {
            rows,
            previous: Vec::new(),
            keys,
            side,
        })
    }

    fn row(&self) -> Option<&Row<'s>> {
        self.rows.get()
    }

    fn advance(&mut self, table: &str) -> Result<(), DiffError> {
        if let Some(row) = self.rows.get() {
            self.previous.resize_with(self.keys, || Slot::Null);
            for (i, slot) in self.previous.iter_mut().enumerate() {
                slot.set(value(row, i, self.side)?);
            }
        }
        self.rows.advance().on(self.side)?;
        if let Some(row) = self.rows.get() {
            for (i, slot) in self.previous.iter().enumerate() {
                match compare(slot.get(), value(row, i, self.side)?) {
                    Ordering::Less => break,
                    Ordering::Equal => continue,
                    Ordering::Greater => {
                        return Err(DiffError::KeyOrder {
                            side: self.side,
                            table: table.to_owned(),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use serde_json::json;
    use tempfile::TempDir;

    use super::*;

    /// Two databases: `from` made by `setup`, `to` a copy of it then changed by `change`.
    fn pair(setup: &str, change: &str) -> (TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from.db");
        let to = dir.path().join("to.db");
        Connection::open(&from)
            .unwrap()
            .execute_batch(setup)
            .unwrap();
        fs::copy(&from, &to).unwrap();
        Connection::open(&to)
            .unwrap()
            .execute_batch(change)
            .unwrap();
        (dir, from, to)
    }

    fn diff(setup: &str, change: &str) -> DatabaseDiff {
        let (_dir, from, to) = pair(setup, change);
        diff_databases(&from, &to, &DiffOptions::default()).unwrap()
    }

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn counts(table: &TableDiff) -> (u64, u64, u64) {
        (table.added, table.removed, table.changed)
    }

    #[test]
    fn rowid_table_insert_update_delete() {
        let d = diff(
            "CREATE TABLE t(a TEXT, b INTEGER, c REAL);
             INSERT INTO t VALUES ('one', 1, 1.5), ('two', 2, 2.5), ('three', 3, 3.5);",
            "UPDATE t SET b = 20 WHERE a = 'two';
             DELETE FROM t WHERE a = 'one';
             INSERT INTO t VALUES ('four', 4, 4.5);",
        );
        assert!(d.schema.is_empty());
        assert_eq!(d.tables.len(), 1);
        let t = &d.tables[0];
        assert_eq!(
            (t.table.as_str(), t.key.clone()),
            ("t", vec!["rowid".into()])
        );
        assert_eq!(counts(t), (1, 1, 1));
        assert!(!t.truncated);
        assert_eq!(
            t.rows,
            vec![
                RowChange {
                    key: map(json!({"rowid": 1})),
                    change: Change::Removed,
                    before: Some(map(json!({"rowid": 1, "a": "one", "b": 1, "c": 1.5}))),
                    after: None,
                },
                RowChange {
                    key: map(json!({"rowid": 2})),
                    change: Change::Changed,
                    before: Some(map(json!({"rowid": 2, "b": 2}))),
                    after: Some(map(json!({"rowid": 2, "b": 20}))),
                },
                RowChange {
                    key: map(json!({"rowid": 4})),
                    change: Change::Added,
                    before: None,
                    after: Some(map(json!({"rowid": 4, "a": "four", "b": 4, "c": 4.5}))),
                },
            ]
        );
    }

    #[test]
    fn integer_primary_key_is_the_key() {
        let d = diff(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
             INSERT INTO t VALUES (5, 'a'), (9, 'b');",
            "UPDATE t SET v = 'B' WHERE id = 9; INSERT INTO t VALUES (7, 'c');",
        );
        let t = &d.tables[0];
        assert_eq!(t.key, vec!["id".to_owned()]);
        assert_eq!(counts(t), (1, 0, 1));
        assert_eq!(t.rows[0].key, map(json!({"id": 7})));
        assert_eq!(t.rows[1].after, Some(map(json!({"id": 9, "v": "B"}))));
    }

    #[test]
    fn composite_text_primary_key() {
        // NOCASE orders 'a' < 'B' < 'c', BINARY 'B' < 'a' < 'c': the merge must not mix them.
        let d = diff(
            "CREATE TABLE t(owner TEXT COLLATE NOCASE, tag TEXT, n INTEGER,
                            PRIMARY KEY (owner, tag));
             INSERT INTO t VALUES ('a', 'x', 1), ('B', 'x', 2), ('c', 'x', 3), ('c', 'y', 4);",
            "DELETE FROM t WHERE owner = 'a';
             UPDATE t SET n = 40 WHERE owner = 'c' AND tag = 'y';
             INSERT INTO t VALUES ('B', 'w', 5);",
        );
        let t = &d.tables[0];
        assert_eq!(t.key, vec!["owner".to_owned(), "tag".to_owned()]);
        assert_eq!(counts(t), (1, 1, 1));
        let keys: Vec<_> = t.rows.iter().map(|r| (r.change, r.key.clone())).collect();
        assert_eq!(
            keys,
            vec![
                (Change::Added, map(json!({"owner": "B", "tag": "w"}))),
                (Change::Removed, map(json!({"owner": "a", "tag": "x"}))),
                (Change::Changed, map(json!({"owner": "c", "tag": "y"}))),
            ]
        );
        assert_eq!(
            t.rows[2].before,
            Some(map(json!({"owner": "c", "tag": "y", "n": 4})))
        );
    }

    #[test]
    fn without_rowid_table() {
        let d = diff(
            "CREATE TABLE kv(k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;
             INSERT INTO kv VALUES ('a', x'01'), ('b', x'02'), ('c', x'03');",
            "UPDATE kv SET v = x'ff' WHERE k = 'b'; DELETE FROM kv WHERE k = 'c';
             INSERT INTO kv VALUES ('0', NULL);",
        );
        let t = &d.tables[0];
        assert_eq!(t.key, vec!["k".to_owned()]);
        assert_eq!(counts(t), (1, 1, 1));
        assert_eq!(t.rows[1].key, map(json!({"k": "b"})));
        assert_eq!(
            t.rows[1].after,
            Some(map(json!({"k": "b", "v": {"blob_hex": "ff", "len": 1}})))
        );
    }

    #[test]
    fn added_and_dropped_tables() {
        let d = diff(
            "CREATE TABLE old(x); INSERT INTO old VALUES (1), (2);",
            "DROP TABLE old; CREATE TABLE new(y TEXT PRIMARY KEY);
             INSERT INTO new VALUES ('p'), ('q'), ('r');",
        );
        let schema: Vec<_> = d
            .schema
            .iter()
            .map(|c| (c.kind, c.name.as_str(), c.change))
            .collect();
        assert_eq!(
            schema,
            vec![
                (ObjectKind::Table, "new", Change::Added),
                (ObjectKind::Table, "old", Change::Removed),
            ]
        );
        assert_eq!(d.schema[0].sql_before, None);
        assert_eq!(
            d.schema[0].sql_after.as_deref(),
            Some("CREATE TABLE new(y TEXT PRIMARY KEY)")
        );
        let tables: Vec<_> = d
            .tables
            .iter()
            .map(|t| (t.table.as_str(), counts(t)))
            .collect();
        assert_eq!(tables, vec![("new", (3, 0, 0)), ("old", (0, 2, 0))]);
        assert_eq!(d.tables[0].key, vec!["y".to_owned()]);
        assert_eq!(d.tables[0].rows[2].after, Some(map(json!({"y": "r"}))));
        assert_eq!(
            d.tables[1].rows[1].before,
            Some(map(json!({"rowid": 2, "x": 2})))
        );
    }

    #[test]
    fn added_column_compares_the_common_ones() {
        let d = diff(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT);
             INSERT INTO t VALUES (1, 'x'), (2, 'y');",
            "ALTER TABLE t ADD COLUMN b INTEGER DEFAULT 7;
             UPDATE t SET a = 'Y' WHERE id = 2; INSERT INTO t VALUES (3, 'z', 8);",
        );
        assert_eq!(d.schema.len(), 1);
        let change = &d.schema[0];
        assert_eq!(
            (change.kind, change.change),
            (ObjectKind::Table, Change::Changed)
        );
        assert_eq!(
            change.sql_before.as_deref(),
            Some("CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT)")
        );
        assert!(
            change
                .sql_after
                .as_deref()
                .unwrap()
                .contains("b INTEGER DEFAULT 7")
        );
        let t = &d.tables[0];
        // Row 1 only gained the new column's default: not a change.
        assert_eq!(counts(t), (1, 0, 1));
        assert_eq!(t.rows[0].after, Some(map(json!({"id": 2, "a": "Y"}))));
        assert_eq!(
            t.rows[1].after,
            Some(map(json!({"id": 3, "a": "z", "b": 8})))
        );
    }

    #[test]
    fn changed_primary_key_falls_back_to_the_old_one() {
        let d = diff(
            "CREATE TABLE t(a TEXT PRIMARY KEY, b TEXT); INSERT INTO t VALUES ('1', 'x');",
            "DROP TABLE t; CREATE TABLE t(a TEXT, c TEXT PRIMARY KEY);
             INSERT INTO t VALUES ('1', 'z'), ('2', 'w');",
        );
        let t = &d.tables[0];
        // The new key, c, is not in the old table; a is in both.
        assert_eq!(t.key, vec!["a".to_owned()]);
        assert_eq!(counts(t), (1, 0, 0));
        assert_eq!(t.rows[0].after, Some(map(json!({"a": "2", "c": "w"}))));
    }

    #[test]
    fn no_shared_key_lists_every_row() {
        let d = diff(
            "CREATE TABLE t(a TEXT PRIMARY KEY) WITHOUT ROWID; INSERT INTO t VALUES ('1');",
            "DROP TABLE t; CREATE TABLE t(b TEXT PRIMARY KEY) WITHOUT ROWID;
             INSERT INTO t VALUES ('2'), ('3');",
        );
        let t = &d.tables[0];
        assert!(t.key.is_empty());
        assert_eq!(counts(t), (2, 1, 0));
        assert_eq!(t.rows.len(), 3);
    }

    #[test]
    fn index_added_and_removed() {
        let d = diff(
            "CREATE TABLE t(a, b); CREATE INDEX ta ON t(a); INSERT INTO t VALUES (1, 2);",
            "DROP INDEX ta; CREATE INDEX tb ON t(b);",
        );
        assert!(d.tables.is_empty());
        let schema: Vec<_> = d
            .schema
            .iter()
            .map(|c| (c.kind, c.name.as_str(), c.change))
            .collect();
        assert_eq!(
            schema,
            vec![
                (ObjectKind::Index, "ta", Change::Removed),
                (ObjectKind::Index, "tb", Change::Added),
            ]
        );
    }

    #[test]
    fn virtual_tables_are_diffed_through_their_shadow_tables() {
        let d = diff(
            "CREATE VIRTUAL TABLE docs USING fts5(body); INSERT INTO docs VALUES ('one');",
            "INSERT INTO docs VALUES ('two');",
        );
        assert!(d.schema.is_empty());
        let tables: Vec<_> = d.tables.iter().map(|t| t.table.as_str()).collect();
        assert!(!tables.contains(&"docs"), "{tables:?}");
        let content = d.tables.iter().find(|t| t.table == "docs_content").unwrap();
        assert_eq!(counts(content), (1, 0, 0));
        assert_eq!(
            content.rows[0].after,
            Some(map(json!({"id": 2, "c0": "two"})))
        );
    }

    #[test]
    fn identical_databases_have_an_empty_diff() {
        let d = diff(
            "CREATE TABLE t(a, b PRIMARY KEY); CREATE VIEW v AS SELECT a FROM t;
             CREATE TABLE w(k INTEGER PRIMARY KEY AUTOINCREMENT, x);
             INSERT INTO t VALUES (1, 2), (NULL, x'00'); INSERT INTO w(x) VALUES (1.5);",
            "",
        );
        assert_eq!(
            d,
            DatabaseDiff {
                tables: Vec::new(),
                schema: Vec::new()
            }
        );
    }

    #[test]
    fn cap_truncates_the_list_not_the_counts() {
        let (_dir, from, to) = pair(
            "CREATE TABLE t(n INTEGER); CREATE TABLE gone(n INTEGER);
             WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 10)
             INSERT INTO gone SELECT n FROM s;",
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 10)
             INSERT INTO t SELECT n FROM s; DROP TABLE gone;",
        );
        let options = DiffOptions {
            max_rows_per_table: 3,
        };
        let d = diff_databases(&from, &to, &options).unwrap();
        let tables: Vec<_> = d
            .tables
            .iter()
            .map(|t| (t.table.as_str(), counts(t), t.rows.len(), t.truncated))
            .collect();
        assert_eq!(
            tables,
            vec![("gone", (0, 10, 0), 3, true), ("t", (10, 0, 0), 3, true)]
        );
    }

    #[test]
    fn blobs_nulls_and_reals_rendered() {
        let d = diff(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB, n, r REAL, s TEXT);
             INSERT INTO t VALUES (1, NULL, 1, 0.5, 'x');",
            "UPDATE t SET b = zeroblob(100), n = NULL, r = 1e999, s = 'é';",
        );
        let row = &d.tables[0].rows[0];
        assert_eq!(
            row.before,
            Some(map(json!({"id": 1, "b": null, "n": 1, "r": 0.5, "s": "x"})))
        );
        assert_eq!(
            row.after,
            Some(map(json!({
                "id": 1,
                "b": {"blob_hex": "00".repeat(64), "len": 100},
                "n": null,
                "r": {"real": "inf"},
                "s": "é",
            })))
        );
    }

    #[test]
    fn type_change_is_a_change() {
        let d = diff(
            "CREATE TABLE t(x); INSERT INTO t VALUES (1);",
            "UPDATE t SET x = 1.0;",
        );
        assert_eq!(
            d.tables[0].rows[0].after,
            Some(map(json!({"rowid": 1, "x": 1.0})))
        );
    }

    #[test]
    fn serialized_as_snake_case() {
        let d = diff("CREATE TABLE t(x);", "INSERT INTO t VALUES (1);");
        let value = serde_json::to_value(&d).unwrap();
        assert_eq!(
            value,
            json!({
                "tables": [{
                    "table": "t", "key": ["rowid"], "added": 1, "removed": 0, "changed": 0,
                    "rows": [{"key": {"rowid": 1}, "change": "added", "before": null,
                              "after": {"rowid": 1, "x": 1}}],
                    "truncated": false,
                }],
                "schema": [],
            })
        );
    }

    #[test]
    fn merge_scans_follow_the_btree() {
        // A sort in the plan would make every diff read and sort the whole table.
        let (_dir, from, _) = pair(
            "CREATE TABLE a(x INTEGER PRIMARY KEY, y);
             CREATE TABLE b(p TEXT, q INTEGER, r, PRIMARY KEY (p, q));
             CREATE TABLE c(k TEXT PRIMARY KEY, v) WITHOUT ROWID;
             CREATE TABLE d(v);",
            "",
        );
        let db = Db::open(&from, Side::From).unwrap();
        for name in ["a", "b", "c", "d"] {
            let table = db.table(name).unwrap();
            let key = table.key_names();
            let (select, order) = table.key_sql(&key).unwrap();
            let sql = format!(
                "EXPLAIN QUERY PLAN SELECT {} FROM {name}{order}",
                select.join(", ")
            );
            let plan: Vec<String> = db
                .conn
                .prepare(&sql)
                .unwrap()
                .query_map([], |row| row.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                !plan.iter().any(|step| step.contains("TEMP B-TREE")),
                "{name}: {plan:?}"
            );
        }
    }

    #[test]
    fn utf16_text_keys_refused_rather_than_misdiffed() {
        // UTF-16LE bytes order 'Ā' (00 01) before 'b' (62 00); UTF-8 the other way round.
        let (_dir, from, to) = pair(
            "PRAGMA encoding = 'UTF-16le';
             CREATE TABLE t(k TEXT PRIMARY KEY) WITHOUT ROWID;
             INSERT INTO t VALUES ('b'), ('Ā');",
            "INSERT INTO t VALUES ('c');",
        );
        let err = diff_databases(&from, &to, &DiffOptions::default()).unwrap_err();
        assert!(matches!(err, DiffError::KeyOrder { .. }), "{err}");
    }

    #[test]
    fn errors_do_not_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.db");
        let junk = dir.path().join("junk.db");
        fs::write(&junk, vec![7u8; 4096]).unwrap();
        let err = diff_databases(&missing, &junk, &DiffOptions::default()).unwrap_err();
        assert!(matches!(
            err,
            DiffError::Open {
                side: Side::From,
                ..
            }
        ));
        let err = diff_databases(&junk, &junk, &DiffOptions::default()).unwrap_err();
        assert!(matches!(
            err,
            DiffError::Read {
                side: Side::From,
                ..
            }
        ));
        for err in [
            diff_databases(&missing, &junk, &DiffOptions::default()).unwrap_err(),
            diff_databases(&junk, &junk, &DiffOptions::default()).unwrap_err(),
        ] {
            let message = err.to_string();
            assert!(!message.contains(".db"), "{message}");
        }
    }
}
