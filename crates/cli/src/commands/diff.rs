//! `cellar diff USER A B [--max-rows N]`: how a user's database changed from version A
//! to version B, row by row and in its schema. Both versions are rebuilt from the history,
//! so read-only keys are enough.

use anyhow::Context;
use cellar_engine::diff::{Change, DatabaseDiff, DiffOptions, ObjectKind, RowChange, SchemaChange};
use cellar_engine::{UserId, Version};
use serde::Serialize;
use serde_json::{Map, Value};

use super::Bucket;
use crate::exit::Exit;
use crate::output::{Output, Report};

/// The two versions and what differs between them.
#[derive(Serialize)]
struct Diffed {
    user_id: String,
    from: Version,
    to: Version,
    #[serde(flatten)]
    diff: DatabaseDiff,
}

impl Report for Diffed {
    fn to_text(&self) -> String {
        let mut lines = vec![format!(
            "{} from version {} to version {}",
            self.user_id, self.from, self.to
        )];
        if self.diff.tables.is_empty() && self.diff.schema.is_empty() {
            lines.push("no differences".into());
        }
        lines.extend(self.diff.schema.iter().map(schema_line));
        for table in &self.diff.tables {
            lines.push(format!(
                "table {}: {} added, {} removed, {} changed",
                table.table, table.added, table.removed, table.changed
            ));
            lines.extend(table.rows.iter().map(|row| row_line(row, &table.key)));
            let listed = table.rows.len() as u64;
            let differ = table.added + table.removed + table.changed;
            if table.truncated {
                lines.push(format!("  … {} more (--max-rows)", differ - listed));
            }
        }
        lines.join("\n")
    }
}

/// `+ index by_name` and the like; a changed object with its statement after.
fn schema_line(change: &SchemaChange) -> String {
    let kind = match change.kind {
        ObjectKind::Table => "table",
        ObjectKind::Index => "index",
        ObjectKind::View => "view",
        ObjectKind::Trigger => "trigger",
    };
    let sql = match change.change {
        Change::Removed => &change.sql_before,
        Change::Added | Change::Changed => &change.sql_after,
    };
    let sql = sql
        .as_deref()
        .map_or(String::new(), |sql| format!(": {sql}"));
    format!("{} {kind} {}{sql}", sign(change.change), change.name)
}

/// A row as `+ id=3: name="x"`; a changed one as `~ id=3: name "x" → "y"`.
fn row_line(row: &RowChange, key: &[String]) -> String {
    let key_text = cells(&row.key, &[]);
    let values = match (row.change, &row.before, &row.after) {
        (Change::Changed, Some(before), Some(after)) => {
            let changed: Vec<String> = after
                .iter()
                .filter(|(column, _)| !key.contains(column))
                .map(|(column, new)| {
                    let old = before.get(column).unwrap_or(&Value::Null);
                    format!("{column} {old} → {new}")
                })
                .collect();
            changed.join(", ")
        }
        (_, _, Some(row)) | (_, Some(row), None) => cells(row, key),
        (_, None, None) => String::new(),
    };
    format!("  {} {key_text}: {values}", sign(row.change))
}

/// `column=value` pairs, leaving out the columns in `skip`.
fn cells(row: &Map<String, Value>, skip: &[String]) -> String {
    let cells: Vec<String> = row
        .iter()
        .filter(|(column, _)| !skip.contains(column))
        .map(|(column, value)| format!("{column}={value}"))
        .collect();
    cells.join(", ")
}

fn sign(change: Change) -> char {
    match change {
        Change::Added => '+',
        Change::Removed => '-',
        Change::Changed => '~',
    }
}

/// Compares `user`'s database at `from` and at `to`, listing up to `max_rows` rows per
/// table (the engine's default when `None`).
pub async fn run(
    bucket: &Bucket<'_>,
    user: &UserId,
    (from, to): (Version, Version),
    max_rows: Option<usize>,
    output: Output,
) -> anyhow::Result<Exit> {
    let mut options = DiffOptions::default();
    if let Some(max_rows) = max_rows {
        options.max_rows_per_table = max_rows;
    }
    let reader = bucket.reader()?;
    let spinner = output.spinner(format!("comparing versions {from} and {to} of {user}"));
    let diffed = reader.diff(user, from, to, options).await;
    spinner.finish_and_clear();
    let diff = diffed
        .with_context(|| format!("cannot compare versions {from} and {to} of user {user}"))?;
    output.report(&Diffed {
        user_id: user.to_string(),
        from,
        to,
        diff,
    })?;
    Ok(Exit::Success)
}
