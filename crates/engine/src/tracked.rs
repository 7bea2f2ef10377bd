//! Seed rules `write-tracked-connection` and `write-detect-operations`.
//!
//! All of a request's SQL runs through a [`TrackedConnection`], which knows whether the
//! request wrote by asking SQLite, never by reading the SQL text: a statement writes when
//! `sqlite3_stmt_readonly` says it may change the database, it is not an `EXPLAIN`, and it
//! ran to completion. That covers DML in any spelling (CTEs, `REPLACE`, UPSERT,
//! `RETURNING`), DDL, writing pragmas, `ANALYZE` and triggers, and leaves out reads, failed
//! statements and work that is rolled back (the engine discards the whole transaction).
//!
//! The connection always runs inside the engine's transaction; transaction control from the
//! request (`BEGIN`, `COMMIT`, `ROLLBACK`) is refused by the authorizer, so a request can
//! never commit locally what the bucket has not got. Savepoints remain available, except
//! the one the engine wraps each piece of a group commit in ([`ENGINE_SAVEPOINT`]): a
//! request that could name it could release or roll back the engine's own savepoint and
//! have a failed request's writes committed with the next one. Nor may request SQL touch
//! `sqlite_dbpage`, SQLite's page virtual table, in any spelling: it reads and rewrites any
//! page, and only the engine's own statements ([`TrackedConnection::engine`]) use it, to
//! capture and apply deltas.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, InterruptHandle, Params, Row, Statement};

use crate::error::{Error, Result};

/// How many SQLite VM steps pass between two checks of the time limit.
const PROGRESS_STEPS: i32 = 10_000;

/// The savepoint each piece of work in a group commit runs in; request SQL may not name
/// it (SQLite compares savepoint names without regard to ASCII case).
const ENGINE_SAVEPOINT: &str = "cellar_group";

/// SQLite's page virtual table: it reads and rewrites any page, so only the engine's own
/// statements may name it (they capture and apply deltas through it).
const PAGE_TABLE: &str = "sqlite_dbpage";

/// An extra authorization policy for request SQL: answers why an action is refused, or
/// `None` to allow it. The sandbox ([`crate::sandbox::sandbox_policy`]) is one.
pub type SqlPolicy = Arc<dyn Fn(&AuthContext<'_>) -> Option<String> + Send + Sync>;

/// The result of one statement run through [`TrackedConnection::run`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatementOutput {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Rows, each as many values as columns.
    pub rows: Vec<Vec<Value>>,
    /// Rows inserted, updated or deleted (0 for a statement that did not write).
    pub rows_affected: u64,
    /// The rowid of the row this statement inserted, if it inserted one.
    pub last_insert_rowid: Option<i64>,
}

/// How much output one request's statements may still produce: rows per statement, and
/// bytes over all of them, counted as the JSON answer spells them (blobs in base64), so
/// that an answer is refused before it is held in memory, not after.
#[derive(Clone, Debug)]
pub struct OutputBudget {
    max_rows: usize,
    max_bytes: u64,
    bytes_left: u64,
}

impl OutputBudget {
    /// At most `max_rows` rows per statement and `max_bytes` bytes in all.
    pub fn new(max_rows: usize, max_bytes: u64) -> Self {
        Self {
            max_rows,
            max_bytes,
            bytes_left: max_bytes,
        }
    }

    /// At most `max_rows` rows per statement, bytes unbounded (the engine's own reads).
    pub fn rows(max_rows: usize) -> Self {
        Self::new(max_rows, u64::MAX)
    }

    /// Counts one row's values before copying them out of SQLite.
    fn take_row(&mut self, row: &Row<'_>, columns: usize) -> Result<Vec<Value>> {
        (0..columns)
            .map(|i| {
                let value = row.get_ref(i)?;
                self.spend(json_len(value))?;
                Ok(Value::from(value))
            })
            .collect()
    }

    fn spend(&mut self, bytes: u64) -> Result<()> {
        match self.bytes_left.checked_sub(bytes) {
            Some(left) => {
                self.bytes_left = left;
                Ok(())
            }
            None => Err(Error::ResponseTooLarge {
                limit: self.max_bytes,
            }),
        }
    }
}

/// The bytes `value` takes in a JSON answer, with its separator.
fn json_len(value: ValueRef<'_>) -> u64 {
    /// `{"base64":""}`
    const BLOB_WRAPPING: u64 = 13;
    1 + match value {
        ValueRef::Null => 4,
        ValueRef::Integer(_) => 20,
        ValueRef::Real(_) => 24,
        ValueRef::Text(text) => json_text_len(text),
        ValueRef::Blob(blob) => BLOB_WRAPPING + (blob.len() as u64).div_ceil(3) * 4,
    }
}

/// The bytes `text` takes as a JSON string: quotes, and escapes for quotes, backslashes
/// and control characters (at most six bytes each).
fn json_text_len(text: impl AsRef<[u8]>) -> u64 {
    let text = text.as_ref();
    let escaped: u64 = text
        .iter()
        .map(|&byte| match byte {
            b'"' | b'\\' => 1,
            0..0x20 => 5,
            _ => 0,
        })
        .sum();
    2 + text.len() as u64 + escaped
}

/// A SQLite connection that records whether the request wrote.
pub struct TrackedConnection {
    conn: Connection,
    wrote: Cell<bool>,
    /// The engine opened a transaction and has not ended it: request SQL must run in it.
    in_transaction: Cell<bool>,
    /// Set while the engine runs its own SQL: the authorizer then allows everything.
    engine_control: Arc<AtomicBool>,
    refused: Arc<Mutex<Option<String>>>,
    deadline: Arc<Mutex<Option<Instant>>>,
}

impl TrackedConnection {
    /// Wraps `conn`, installing the authorizer that keeps transaction control with the engine
    /// and applies `policy` to everything else.
    pub fn new(conn: Connection, policy: Option<SqlPolicy>) -> Self {
        let engine_control = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(Mutex::new(None));
        let flag = Arc::clone(&engine_control);
        let last_refusal = Arc::clone(&refused);
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            let refusal = if flag.load(Ordering::Relaxed) {
                None
            } else {
                request_refusal(&ctx).or_else(|| policy.as_ref().and_then(|policy| policy(&ctx)))
            };
            match refusal {
                None => Authorization::Allow,
                Some(reason) => {
                    *last_refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                    Authorization::Deny
                }
            }
        }));
        let deadline: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
        let watched = Arc::clone(&deadline);
        conn.progress_handler(
            PROGRESS_STEPS,
            Some(move || {
                let deadline = *watched.lock().unwrap_or_else(|p| p.into_inner());
                deadline.is_some_and(|deadline| Instant::now() >= deadline)
            }),
        );
        Self {
            conn,
            wrote: Cell::new(false),
            in_transaction: Cell::new(false),
            engine_control,
            refused,
            deadline,
        }
    }

    /// Runs one statement with parameters; returns the number of rows changed.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        let mut stmt = self.prepare(sql)?;
        let writes = statement_writes(&stmt);
        let changed = stmt.execute(params).map_err(|e| self.explain_refusal(e))?;
        self.record(writes);
        Ok(changed)
    }

    /// Runs several statements separated by `;`, discarding any rows they return.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        let mut batch = rusqlite::Batch::new(&self.conn, sql);
        while let Some(mut stmt) = batch.next().map_err(|err| self.explain_refusal(err))? {
            let writes = statement_writes(&stmt);
            let mut rows = stmt.raw_query();
            while rows.next().map_err(|e| self.explain_refusal(e))?.is_some() {}
            self.record(writes);
        }
        Ok(())
    }

    /// Runs a query and maps its first row; errors if it returns none.
    pub fn query_row<T, P, F>(&self, sql: &str, params: P, map: F) -> Result<T>
    where
        P: Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    {
        let mut stmt = self.prepare(sql)?;
        let writes = statement_writes(&stmt);
        let value = stmt
            .query_row(params, map)
            .map_err(|e| self.explain_refusal(e))?;
        self.record(writes);
        Ok(value)
    }

    /// Runs a query and maps every row.
    pub fn query_map<T, P, F>(&self, sql: &str, params: P, mut map: F) -> Result<Vec<T>>
    where
        P: Params,
        F: FnMut(&Row<'_>) -> rusqlite::Result<T>,
    {
        let mut stmt = self.prepare(sql)?;
        let writes = statement_writes(&stmt);
        let mut rows = stmt.query(params).map_err(|e| self.explain_refusal(e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.explain_refusal(e))? {
            out.push(map(row)?);
        }
        self.record(writes);
        Ok(out)
    }

    /// Runs one statement of any kind and collects its output within `budget`: more rows
    /// than it allows a statement, or more bytes than it has left, and the statement is
    /// abandoned before they are held in memory (the engine rolls the request back).
    pub fn run(
        &self,
        sql: &str,
        params: &[Value],
        budget: &mut OutputBudget,
    ) -> Result<StatementOutput> {
        let mut stmt = self.prepare(sql)?;
        if stmt.parameter_count() != params.len() {
            return Err(Error::from(rusqlite::Error::InvalidParameterCount(
                params.len(),
                stmt.parameter_count(),
            )));
        }
        let writes = statement_writes(&stmt);
        let columns = column_names(&stmt);
        budget.spend(columns.iter().map(json_text_len).sum())?;
        let changes_before = self.conn.total_changes();
        let rowid_before = self.conn.last_insert_rowid();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params))
            .map_err(|e| self.explain_refusal(e))?;
        let mut collected = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.explain_refusal(e))? {
            if collected.len() == budget.max_rows {
                return Err(Error::LimitExceeded {
                    what: "result rows",
                    limit: budget.max_rows as u64,
                });
            }
            collected.push(budget.take_row(row, columns.len())?);
        }
        drop(rows);
        self.record(writes);
        let rows_affected = if writes { self.conn.changes() } else { 0 };
        let rowid_after = self.conn.last_insert_rowid();
        let inserted =
            writes && self.conn.total_changes() > changes_before && rowid_after != rowid_before;
        Ok(StatementOutput {
            columns,
            rows: collected,
            rows_affected,
            last_insert_rowid: inserted.then_some(rowid_after),
        })
    }

    /// True once any statement of this request wrote.
    pub fn wrote(&self) -> bool {
        self.wrote.get()
    }

    /// Interrupts any statement still running `limit` from now (`SQLITE_INTERRUPT`), until
    /// called again; `None` lifts the limit. The error then says "interrupted".
    pub fn set_time_limit(&self, limit: Option<Duration>) {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) =
            limit.map(|limit| Instant::now() + limit);
    }

    /// A handle that interrupts the statement running on this connection (for timeouts).
    pub fn interrupt_handle(&self) -> InterruptHandle {
        self.conn.get_interrupt_handle()
    }

    /// True when SQLite ended the engine's transaction on its own: it rolls everything
    /// back when, for one, a write is interrupted or the disk is full. Nothing the request
    /// did before is kept, and nothing it runs afterwards may run outside a transaction.
    pub fn transaction_lost(&self) -> bool {
        self.in_transaction.get() && self.conn.is_autocommit()
    }

    /// Prepares `sql`, turning an authorizer refusal into [`Error::Forbidden`]; refuses to
    /// run anything once the transaction is lost (it would be committed on its own).
    fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        if self.transaction_lost() {
            return Err(transaction_lost_error());
        }
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.conn
            .prepare(sql)
            .map_err(|err| self.explain_refusal(err))
    }

    /// Names what the authorizer refused; `VACUUM` (and so `VACUUM INTO`, which SQLite
    /// only authorizes once it runs) is refused because a request is always a transaction.
    fn explain_refusal(&self, err: rusqlite::Error) -> Error {
        let reason = self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let vacuum = matches!(&err, rusqlite::Error::SqliteFailure(_, Some(message))
            if message.starts_with("cannot VACUUM"));
        match reason {
            Some(what) => Error::Forbidden { what },
            None if vacuum => Error::Forbidden {
                what: "VACUUM and VACUUM INTO are not allowed in a request".into(),
            },
            None => Error::from(err),
        }
    }

    /// Sets the write flag (group commit tracks each piece of work apart).
    pub(crate) fn set_wrote(&self, wrote: bool) {
        self.wrote.set(wrote);
    }

    fn record(&self, writes: bool) {
        if writes {
            self.wrote.set(true);
        }
    }

    /// Runs engine-owned SQL (transaction control), bypassing tracking and the policy.
    pub(crate) fn control(&self, sql: &str) -> rusqlite::Result<()> {
        self.engine(|conn| conn.execute_batch(sql))
    }

    /// Runs the engine's own work on the raw connection, the authorizer allowing everything
    /// (`sqlite_dbpage`, pragmas, transaction control) until `work` returns or unwinds.
    pub(crate) fn engine<T>(&self, work: impl FnOnce(&Connection) -> T) -> T {
        let _engine = EngineControl::on(&self.engine_control);
        work(&self.conn)
    }

    /// Opens the savepoint one piece of a group commit runs in.
    pub(crate) fn begin_piece(&self) -> rusqlite::Result<()> {
        self.control(&format!("SAVEPOINT {ENGINE_SAVEPOINT}"))
    }

    /// Keeps what the piece did (and closes any savepoint it left open).
    pub(crate) fn keep_piece(&self) -> rusqlite::Result<()> {
        self.control(&format!("RELEASE {ENGINE_SAVEPOINT}"))
    }

    /// Undoes everything the piece did.
    pub(crate) fn undo_piece(&self) -> rusqlite::Result<()> {
        self.control(&format!(
            "ROLLBACK TO {ENGINE_SAVEPOINT}; RELEASE {ENGINE_SAVEPOINT}"
        ))
    }

    /// Starts the request's transaction and forgets earlier writes.
    pub(crate) fn begin(&self) -> rusqlite::Result<()> {
        self.wrote.set(false);
        self.control("BEGIN")?;
        self.in_transaction.set(true);
        Ok(())
    }

    /// Commits the request's transaction; fails, keeping nothing, if SQLite ended it.
    pub(crate) fn commit(&self) -> Result<()> {
        if self.transaction_lost() {
            self.in_transaction.set(false);
            return Err(transaction_lost_error());
        }
        self.in_transaction.set(false);
        Ok(self.control("COMMIT")?)
    }

    /// Ends the request's transaction without keeping anything (a no-op outside one).
    pub(crate) fn rollback(&self) {
        self.in_transaction.set(false);
        if !self.conn.is_autocommit() {
            // A failed rollback leaves SQLite to roll back when the connection closes,
            // and the caller drops the connection in that case.
            let _ = self.control("ROLLBACK");
        }
    }

    /// The raw connection, for the engine's own reads (serialize, status).
    pub(crate) fn raw(&self) -> &Connection {
        &self.conn
    }
}

/// Marks the connection as running engine SQL while it lives.
struct EngineControl<'a>(&'a AtomicBool);

impl<'a> EngineControl<'a> {
    fn on(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::Relaxed);
        Self(flag)
    }
}

impl Drop for EngineControl<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for TrackedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackedConnection")
            .field("path", &self.conn.path())
            .field("wrote", &self.wrote.get())
            .finish()
    }
}

/// The request's transaction ended inside SQLite (see [`TrackedConnection::transaction_lost`]).
pub(crate) fn transaction_lost_error() -> Error {
    Error::from(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
        Some(
            "SQLite rolled back the request's transaction after an error inside it; \
             nothing the request did was kept"
                .into(),
        ),
    ))
}

/// What request SQL may never do, whatever the policy: control the transaction, name the
/// engine's savepoint, touch raw pages.
fn request_refusal(ctx: &AuthContext<'_>) -> Option<String> {
    match ctx.action {
        AuthAction::Transaction { .. } => Some(
            "transaction control (BEGIN, COMMIT, ROLLBACK): a request is already one \
             transaction; use SAVEPOINT instead"
                .to_owned(),
        ),
        AuthAction::Savepoint { savepoint_name, .. }
            if savepoint_name.eq_ignore_ascii_case(ENGINE_SAVEPOINT) =>
        {
            Some(format!(
                "the savepoint name {ENGINE_SAVEPOINT} is reserved for the engine; \
                 use another name"
            ))
        }
        AuthAction::Read { table_name, .. }
        | AuthAction::Insert { table_name }
        | AuthAction::Update { table_name, .. }
        | AuthAction::Delete { table_name }
            if table_name.eq_ignore_ascii_case(PAGE_TABLE) =>
        {
            Some(format!("{PAGE_TABLE} (raw page access) is not allowed"))
        }
        AuthAction::CreateVtable { module_name, .. }
            if module_name.eq_ignore_ascii_case(PAGE_TABLE) =>
        {
            Some(format!("{PAGE_TABLE} (raw page access) is not allowed"))
        }
        _ => None,
    }
}

/// Asks SQLite whether `stmt` may write: not read-only and not an `EXPLAIN`.
fn statement_writes(stmt: &Statement<'_>) -> bool {
    !stmt.readonly() && stmt.is_explain() == 0
}

fn column_names(stmt: &Statement<'_>) -> Vec<String> {
    stmt.column_names().into_iter().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests;
