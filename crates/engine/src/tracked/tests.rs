use super::*;

const SCHEMA: &str = "
    CREATE TABLE projects(id INTEGER PRIMARY KEY, name TEXT UNIQUE, stars INTEGER CHECK (stars >= 0));
    CREATE TABLE audit(note TEXT);
    CREATE TRIGGER log_star AFTER UPDATE OF stars ON projects BEGIN INSERT INTO audit VALUES ('star'); END;
    INSERT INTO projects(name, stars) VALUES ('cellar', 1);
";

fn tracked() -> TrackedConnection {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let tracked = TrackedConnection::new(conn, None);
    tracked.begin().unwrap();
    tracked
}

/// Runs `sql` as a request would and reports whether it counted as a write.
fn wrote(sql: &str) -> bool {
    let conn = tracked();
    let _ = conn.run(sql, &[], &mut OutputBudget::rows(100));
    conn.wrote()
}

#[test]
fn dml_in_every_spelling_is_a_write() {
    for sql in [
        "INSERT INTO projects(name) VALUES ('a')",
        "insert into projects(name) values ('b')",
        "-- leading comment\n/* and another */ InSeRt INTO projects(name) VALUES ('c')",
        "UPDATE projects SET name = 'x'",
        "DELETE FROM projects",
        "WITH n(v) AS (SELECT 'w') INSERT INTO projects(name) SELECT v FROM n",
        "REPLACE INTO projects(id, name) VALUES (1, 'r')",
        "INSERT INTO projects(id, name) VALUES (1, 'u') ON CONFLICT(id) DO UPDATE SET name = excluded.name",
        "INSERT INTO projects(name) VALUES ('ret') RETURNING id",
        "DELETE FROM projects RETURNING name",
    ] {
        assert!(wrote(sql), "should be a write: {sql}");
    }
}

#[test]
fn schema_changes_are_writes() {
    for sql in [
        "CREATE TABLE t(x)",
        "DROP TABLE audit",
        "ALTER TABLE projects ADD COLUMN color TEXT",
        "ALTER TABLE projects RENAME TO works",
        "CREATE INDEX by_name ON projects(name)",
        "CREATE VIEW v AS SELECT * FROM projects",
        "CREATE TRIGGER t2 AFTER INSERT ON projects BEGIN SELECT 1; END",
        "DROP TRIGGER log_star",
    ] {
        assert!(wrote(sql), "should be a write: {sql}");
    }
}

#[test]
fn writing_pragmas_analyze_and_trigger_writes_are_writes() {
    for sql in [
        "PRAGMA user_version = 7",
        "ANALYZE",
        "UPDATE projects SET stars = 5",
    ] {
        assert!(wrote(sql), "should be a write: {sql}");
    }
    let conn = tracked();
    conn.run(
        "UPDATE projects SET stars = 9",
        &[],
        &mut OutputBudget::rows(10),
    )
    .unwrap();
    let audited: i64 = conn
        .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    assert_eq!(audited, 1, "the trigger ran inside the tracked transaction");
}

#[test]
fn reads_explain_and_read_pragmas_are_not_writes() {
    for sql in [
        "SELECT * FROM projects",
        "SELECT 'INSERT INTO projects VALUES (1)' AS looks_like_a_write",
        "select name from projects where name like '%DELETE%'",
        "EXPLAIN INSERT INTO projects(name) VALUES ('e')",
        "EXPLAIN QUERY PLAN DELETE FROM projects",
        "PRAGMA user_version",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5) SELECT x FROM c",
    ] {
        assert!(!wrote(sql), "should be a read: {sql}");
    }
}

#[test]
fn a_failed_statement_is_not_a_write() {
    let conn = tracked();
    let err = conn
        .run(
            "UPDATE projects SET stars = -1",
            &[],
            &mut OutputBudget::rows(10),
        )
        .unwrap_err();
    assert!(err.to_string().contains("CHECK"), "{err}");
    let dup = conn.execute("INSERT INTO projects(name) VALUES ('cellar')", []);
    assert!(dup.is_err());
    assert!(!conn.wrote());
}

#[test]
fn request_transaction_control_is_refused_but_savepoints_work() {
    let conn = tracked();
    for sql in ["COMMIT", "ROLLBACK", "BEGIN", "END"] {
        let err = conn.run(sql, &[], &mut OutputBudget::rows(10)).unwrap_err();
        assert!(
            err.to_string().contains("transaction control"),
            "{sql}: {err}"
        );
    }
    conn.execute_batch("SAVEPOINT s; INSERT INTO projects(name) VALUES ('sp'); RELEASE s;")
        .unwrap();
    assert!(conn.wrote());
    assert!(
        !conn.raw().is_autocommit(),
        "the engine's transaction is still open"
    );
}

#[test]
fn a_rolled_back_transaction_keeps_nothing() {
    let conn = tracked();
    conn.execute("DELETE FROM projects", []).unwrap();
    conn.rollback();
    let left: i64 = conn
        .query_row("SELECT count(*) FROM projects", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 1);
    conn.begin().unwrap();
    assert!(!conn.wrote(), "a new transaction starts clean");
}

#[test]
fn a_runaway_query_is_interrupted_at_its_time_limit() {
    let conn = tracked();
    conn.set_time_limit(Some(std::time::Duration::from_millis(50)));
    let started = std::time::Instant::now();
    let err = conn
        .run("WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT count(*) FROM c", &[], &mut OutputBudget::rows(10))
        .unwrap_err();
    assert!(err.to_string().contains("interrupted"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    conn.set_time_limit(None);
    assert!(
        conn.run("SELECT 1", &[], &mut OutputBudget::rows(10))
            .is_ok()
    );
}

#[test]
fn run_reports_columns_rows_changes_and_rowid() {
    let conn = tracked();
    let params = [Value::Text("p".into()), Value::Integer(3)];
    let out = conn
        .run(
            "INSERT INTO projects(name, stars) VALUES (?1, ?2)",
            &params,
            &mut OutputBudget::rows(10),
        )
        .unwrap();
    assert_eq!((out.rows_affected, out.last_insert_rowid), (1, Some(2)));
    let out = conn
        .run(
            "SELECT id, name FROM projects ORDER BY id",
            &[],
            &mut OutputBudget::rows(10),
        )
        .unwrap();
    assert_eq!(out.columns, ["id", "name"]);
    assert_eq!(out.rows[1], [Value::Integer(2), Value::Text("p".into())]);
    assert_eq!((out.rows_affected, out.last_insert_rowid), (0, None));
    let too_many = conn
        .run("SELECT * FROM projects", &[], &mut OutputBudget::rows(1))
        .unwrap_err();
    assert!(
        matches!(too_many, Error::LimitExceeded { .. }),
        "{too_many}"
    );
    let wrong = conn
        .run("SELECT ?1", &[], &mut OutputBudget::rows(1))
        .unwrap_err();
    assert!(wrong.to_string().contains("parameter"), "{wrong}");
}

#[test]
fn the_engines_savepoint_cannot_be_named_by_request_sql() {
    let conn = tracked();
    conn.begin_piece().unwrap();
    for sql in [
        "SAVEPOINT cellar_group",
        "SAVEPOINT CELLAR_Group",
        "SAVEPOINT \"cellar_group\"",
        "RELEASE cellar_group",
        "RELEASE SAVEPOINT cellar_group",
        "ROLLBACK TO cellar_group",
    ] {
        let err = conn.run(sql, &[], &mut OutputBudget::rows(10)).unwrap_err();
        assert!(err.to_string().contains("reserved"), "{sql}: {err}");
    }
    conn.undo_piece().unwrap();
}

#[test]
fn a_write_interrupted_by_the_time_limit_loses_the_transaction_and_nothing_runs_after() {
    let conn = tracked();
    conn.execute("INSERT INTO projects(name) VALUES ('before')", [])
        .unwrap();
    conn.set_time_limit(Some(Duration::from_millis(50)));
    let err = conn
        .run(
            "INSERT INTO audit WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) \
             SELECT n FROM c",
            &[],
            &mut OutputBudget::rows(10),
        )
        .unwrap_err();
    conn.set_time_limit(None);
    assert!(err.to_string().contains("interrupted"), "{err}");
    assert!(
        conn.transaction_lost(),
        "SQLite rolls back an interrupted write"
    );
    let after = conn
        .execute("INSERT INTO projects(name) VALUES ('after')", [])
        .unwrap_err();
    assert!(after.to_string().contains("rolled back"), "{after}");
    assert!(conn.commit().is_err(), "nothing is committed");
    let names: Vec<String> = conn
        .query_map("SELECT name FROM projects ORDER BY id", [], |r| r.get(0))
        .unwrap();
    assert_eq!(names, ["cellar"]);
}

#[test]
fn results_past_the_byte_budget_are_refused_while_rows_are_produced() {
    let conn = tracked();
    // Each row is a 3 000-byte blob: 4 000 bytes of base64 in the answer.
    let sql = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 100) \
               SELECT zeroblob(3000) FROM c";
    let mut budget = OutputBudget::new(1000, 40_000);
    let err = conn.run(sql, &[], &mut budget).unwrap_err();
    assert!(
        matches!(err, Error::ResponseTooLarge { limit: 40_000 }),
        "{err}"
    );
    // The budget is shared by every statement of a request.
    let mut budget = OutputBudget::new(1000, 10_000);
    let one = "SELECT zeroblob(3000)";
    for _ in 0..2 {
        conn.run(one, &[], &mut budget).unwrap();
    }
    assert!(matches!(
        conn.run(one, &[], &mut budget),
        Err(Error::ResponseTooLarge { .. })
    ));
}

#[test]
fn json_lengths_count_what_the_answer_spells() {
    assert_eq!(json_text_len("ab"), 4);
    assert_eq!(json_text_len("a\"b"), 6);
    assert_eq!(json_text_len("\u{1}"), 8);
    assert_eq!(json_len(ValueRef::Blob(&[0; 3])), 1 + 13 + 4);
    assert_eq!(json_len(ValueRef::Null), 5);
}
