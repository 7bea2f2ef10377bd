//! The SQL sandbox (DESIGN §6): what a request's SQL may not do, and how big it may get.
//!
//! An authorizer refuses, at prepare time, anything that reaches outside the user's own
//! database file or weakens its durability: `ATTACH`/`DETACH` (which is also how
//! `VACUUM INTO` reaches a file), `load_extension`, and every pragma not on a short list of
//! harmless ones (so `writable_schema`, `journal_mode`, `synchronous`, `locking_mode`,
//! `temp_store_directory`, `database_list`, ... are refused), and TEMP tables, views,
//! triggers and indexes: they would outlive the request on the cached connection, grow
//! the temp file without bound while the user's database stays small, and count as
//! writes that upload an unchanged database (a request is one transaction: a CTE, or a
//! table of the user's own, does what a TEMP table would). SQLite's own limits bound
//! string and blob length, SQL length, and more; run time is bounded by the caller through
//! [`crate::TrackedConnection::interrupt_handle`].

use std::sync::Arc;

use rusqlite::Connection;
use rusqlite::hooks::{AuthAction, AuthContext};
use rusqlite::limits::Limit;

use crate::tracked::SqlPolicy;

/// Pragmas a request may run, read or write. Everything else is refused.
const ALLOWED_PRAGMAS: &[&str] = &[
    "application_id",
    "case_sensitive_like",
    "collation_list",
    "data_version",
    "defer_foreign_keys",
    "encoding",
    "foreign_key_check",
    "foreign_key_list",
    "foreign_keys",
    "freelist_count",
    "function_list",
    "index_info",
    "index_list",
    "index_xinfo",
    "integrity_check",
    "module_list",
    "optimize",
    "page_count",
    "page_size",
    "pragma_list",
    "quick_check",
    "recursive_triggers",
    "schema_version",
    "table_info",
    "table_list",
    "table_xinfo",
    "user_version",
];

/// Pragmas that may be read but not set.
const READ_ONLY_PRAGMAS: &[&str] = &["page_size", "schema_version", "encoding"];

/// Functions a request may not call.
const FORBIDDEN_FUNCTIONS: &[&str] = &["load_extension", "fts3_tokenizer"];

/// Why TEMP objects are refused, in the caller's terms.
const TEMP_REFUSAL: &str = "TEMP tables, views, triggers and indexes are not allowed \
     (they would outlive the request); use a common table expression or a table of your own";

/// Size limits applied to every connection that runs request SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqlLimits {
    /// Longest string or blob, in bytes (`SQLITE_LIMIT_LENGTH`).
    pub max_value_bytes: i32,
    /// Longest SQL statement, in bytes (`SQLITE_LIMIT_SQL_LENGTH`).
    pub max_sql_bytes: i32,
}

impl Default for SqlLimits {
    fn default() -> Self {
        Self {
            max_value_bytes: 16 * 1024 * 1024,
            max_sql_bytes: 100 * 1024,
        }
    }
}

impl SqlLimits {
    /// Applies the limits to `conn`; attaching databases is impossible altogether.
    pub fn apply(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, self.max_value_bytes)?;
        conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, self.max_sql_bytes)?;
        conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
        Ok(())
    }
}

/// The sandbox's authorization policy, for [`crate::EngineBuilder::sql_policy`].
pub fn sandbox_policy() -> SqlPolicy {
    Arc::new(refusal)
}

/// Why `ctx` is refused, or `None` when it is allowed.
fn refusal(ctx: &AuthContext<'_>) -> Option<String> {
    match ctx.action {
        AuthAction::Attach { filename } => Some(format!(
            "ATTACH and VACUUM INTO (reaching the file {filename:?}) are not allowed"
        )),
        AuthAction::Detach { .. } => Some("DETACH is not allowed".into()),
        AuthAction::CreateTempTable { .. }
        | AuthAction::CreateTempView { .. }
        | AuthAction::CreateTempTrigger { .. }
        | AuthAction::CreateTempIndex { .. } => Some(TEMP_REFUSAL.into()),
        AuthAction::CreateTable { .. }
        | AuthAction::CreateView { .. }
        | AuthAction::CreateTrigger { .. }
        | AuthAction::CreateIndex { .. }
        | AuthAction::CreateVtable { .. }
            if ctx.database_name == Some("temp") =>
        {
            Some(TEMP_REFUSAL.into())
        }
        AuthAction::Function { function_name } if is_forbidden_function(function_name) => {
            Some(format!("the function {function_name}() is not allowed"))
        }
        AuthAction::Pragma {
            pragma_name,
            pragma_value,
        } => pragma_refusal(pragma_name, pragma_value),
        _ => None,
    }
}

fn is_forbidden_function(name: &str) -> bool {
    FORBIDDEN_FUNCTIONS
        .iter()
        .any(|f| f.eq_ignore_ascii_case(name))
}

fn pragma_refusal(name: &str, value: Option<&str>) -> Option<String> {
    let name = name.to_ascii_lowercase();
    if !ALLOWED_PRAGMAS.contains(&name.as_str()) {
        return Some(format!("PRAGMA {name} is not allowed"));
    }
    if value.is_some() && READ_ONLY_PRAGMAS.contains(&name.as_str()) {
        return Some(format!("PRAGMA {name} may be read but not set"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::tracked::{OutputBudget, TrackedConnection};

    fn sandboxed() -> TrackedConnection {
        let conn = Connection::open_in_memory().unwrap();
        SqlLimits {
            max_value_bytes: 1000,
            max_sql_bytes: 500,
        }
        .apply(&conn)
        .unwrap();
        conn.execute_batch("CREATE TABLE t(x)").unwrap();
        let tracked = TrackedConnection::new(conn, Some(sandbox_policy()));
        tracked.begin().unwrap();
        tracked
    }

    fn refused(sql: &str) -> String {
        match sandboxed().run(sql, &[], &mut OutputBudget::rows(10)) {
            Err(Error::Forbidden { what }) => what,
            other => panic!("{sql}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn reaching_outside_the_database_is_refused_naming_what() {
        assert!(refused("ATTACH DATABASE '/tmp/x.db' AS x").contains("ATTACH"));
        assert!(refused("ATTACH 'file:/etc/passwd?mode=ro' AS p").contains("ATTACH"));
        assert!(refused("DETACH DATABASE main").contains("DETACH"));
        assert!(refused("VACUUM INTO '/tmp/copy.db'").contains("VACUUM INTO"));
        assert!(refused("SELECT load_extension('/tmp/evil.so')").contains("load_extension"));
    }

    #[test]
    fn temp_objects_are_refused_in_every_spelling() {
        for sql in [
            "CREATE TEMP TABLE big(x)",
            "CREATE TEMPORARY TABLE big(x)",
            "CREATE TABLE temp.big(x)",
            "CREATE TEMP TABLE big AS SELECT 1",
            "CREATE TEMP VIEW v AS SELECT 1",
            "CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END",
            "CREATE VIRTUAL TABLE temp.docs USING fts5(body)",
        ] {
            assert!(refused(sql).contains("TEMP"), "{sql}");
        }
    }

    #[test]
    fn pragmas_that_weaken_durability_or_move_files_are_refused() {
        for pragma in [
            "PRAGMA writable_schema = ON",
            "PRAGMA journal_mode = OFF",
            "PRAGMA synchronous = OFF",
            "PRAGMA locking_mode = EXCLUSIVE",
            "PRAGMA temp_store_directory = '/tmp'",
            "PRAGMA database_list",
            "PRAGMA page_size = 512",
            "SELECT * FROM pragma_database_list",
        ] {
            assert!(refused(pragma).contains("PRAGMA"), "{pragma}");
        }
    }

    #[test]
    fn ordinary_sql_keeps_working() {
        let conn = sandboxed();
        for sql in [
            "PRAGMA user_version = 3",
            "PRAGMA table_info(t)",
            "SELECT * FROM pragma_table_info('t')",
            "CREATE TABLE j(doc TEXT); INSERT INTO j VALUES (json_object('a', 1))",
            "SELECT json_extract(doc, '$.a') FROM j",
            "CREATE VIRTUAL TABLE docs USING fts5(body)",
            "INSERT INTO docs VALUES ('hello cellar')",
            "SELECT rowid FROM docs WHERE docs MATCH 'cellar'",
            "SELECT x, row_number() OVER (ORDER BY x) FROM t",
            "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 3) SELECT n FROM c",
        ] {
            conn.execute_batch(sql)
                .unwrap_or_else(|err| panic!("{sql}: {err}"));
        }
    }

    #[test]
    fn raw_page_access_is_refused_in_every_spelling() {
        for sql in [
            "SELECT count(*) FROM sqlite_dbpage",
            "SELECT data FROM sqlite_dbpage WHERE pgno = 1",
            "SELECT * FROM sqlite_dbpage('main')",
            "SELECT * FROM main.sqlite_dbpage",
            "SELECT * FROM \"SQLITE_DBPAGE\"",
            "SELECT * FROM SQLite_DbPage",
            "SELECT (SELECT count(*) FROM sqlite_dbpage)",
            "WITH p AS (SELECT pgno FROM sqlite_dbpage) SELECT count(*) FROM p",
            "INSERT INTO sqlite_dbpage(pgno, data) VALUES (2, zeroblob(512))",
            "INSERT INTO sqlite_dbpage(pgno, data) VALUES (2, NULL)",
            "UPDATE sqlite_dbpage SET data = zeroblob(512) WHERE pgno = 1",
            "DELETE FROM sqlite_dbpage",
            "CREATE VIRTUAL TABLE pages USING sqlite_dbpage",
            "CREATE VIRTUAL TABLE pages USING SQLITE_DBPAGE",
        ] {
            assert_eq!(
                refused(sql),
                "sqlite_dbpage (raw page access) is not allowed",
                "{sql}"
            );
        }
    }

    #[test]
    fn the_engine_reads_raw_pages_and_requests_still_may_not() {
        let conn = sandboxed();
        let count = |conn: &rusqlite::Connection| {
            conn.query_row("SELECT count(*) FROM sqlite_dbpage", [], |row| {
                row.get::<_, i64>(0)
            })
        };
        assert_eq!(conn.engine(count).unwrap(), 2);
        let request = conn.run(
            "SELECT count(*) FROM sqlite_dbpage",
            &[],
            &mut OutputBudget::rows(10),
        );
        assert!(
            matches!(request, Err(Error::Forbidden { .. })),
            "{request:?}"
        );
        // The engine's permission ends with its work, even when the work panics.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            conn.engine(|_| panic!("the engine's work failed"))
        }));
        assert!(panicked.is_err());
        let request = conn.run(
            "SELECT * FROM sqlite_dbpage",
            &[],
            &mut OutputBudget::rows(10),
        );
        assert!(
            matches!(request, Err(Error::Forbidden { .. })),
            "{request:?}"
        );
    }

    #[test]
    fn oversized_values_and_statements_are_refused() {
        let conn = sandboxed();
        let too_big = conn
            .run("SELECT zeroblob(5000)", &[], &mut OutputBudget::rows(10))
            .unwrap_err();
        assert!(too_big.to_string().contains("too big"), "{too_big}");
        let long_sql = format!("SELECT '{}'", "x".repeat(600));
        let too_long = conn
            .run(&long_sql, &[], &mut OutputBudget::rows(10))
            .unwrap_err();
        assert!(
            too_long.to_string().contains("too long") || too_long.to_string().contains("too big"),
            "{too_long}"
        );
    }
}
