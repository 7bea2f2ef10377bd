//! How results reach the caller: text for people or one JSON line for scripts on stdout,
//! errors on stderr, progress on stderr only when a person is watching.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::exit::Exit;

/// A command's result, printable both ways.
pub trait Report: Serialize {
    /// The result for people.
    fn to_text(&self) -> String;
}

/// Where and how to print.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    json: bool,
}

impl Output {
    /// JSON for scripts when `json`, text otherwise.
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// Prints a command's result on stdout.
    pub fn report(&self, report: &impl Report) -> anyhow::Result<()> {
        let text = if self.json {
            serde_json::to_string(report).context("cannot encode the result as JSON")?
        } else {
            report.to_text()
        };
        writeln!(std::io::stdout().lock(), "{text}").context("cannot write to stdout")
    }

    /// Prints an error with its whole chain of causes on stderr.
    pub fn error(&self, err: &anyhow::Error, exit: Exit) {
        let message = describe(err);
        let line = if self.json {
            serde_json::json!({ "error": { "message": message, "exit_code": exit as u8 } })
                .to_string()
        } else {
            format!("error: {message}")
        };
        // Nothing better can be done if stderr itself is gone; the exit status still tells.
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    /// A bar counting `len` steps (users verified, ...).
    pub fn bar(&self, len: u64) -> ProgressBar {
        let style = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        ProgressBar::with_draw_target(Some(len), self.draw_target()).with_style(style)
    }

    /// A spinner for one transfer whose progress the engine does not report.
    pub fn spinner(&self, message: String) -> ProgressBar {
        let style = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let spinner = ProgressBar::with_draw_target(None, self.draw_target())
            .with_style(style)
            .with_message(message);
        spinner.enable_steady_tick(Duration::from_millis(120));
        spinner
    }

    fn draw_target(&self) -> ProgressDrawTarget {
        if self.json || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        }
    }
}

/// `rows` (a header first) as columns aligned on their widest cell, two spaces apart.
pub fn table(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        widths.resize(widths.len().max(row.len()), 0);
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let lines: Vec<String> = rows
        .iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, &width)| format!("{cell:width$}"))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect();
    lines.join("\n")
}

/// The error and its causes joined by `: `, skipping a cause whose message its parent
/// already quotes (many errors print their source inside their own message).
fn describe(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_aligns_its_columns_without_trailing_spaces() {
        let rows = [
            vec!["VERSION".into(), "HELD BY".into(), "WRITER".into()],
            vec!["12".into(), "change".into(), "-".into()],
            vec!["3".into(), "kept snapshot".into(), String::new()],
        ];
        assert_eq!(
            table(&rows),
            "VERSION  HELD BY        WRITER\n12       change         -\n3        kept snapshot"
        );
    }

    #[test]
    fn a_cause_already_quoted_by_its_parent_is_not_repeated() {
        let io = std::io::Error::other("disk full");
        let err = anyhow::Error::from(io)
            .context("cannot write x: disk full")
            .context("cannot pull alice");
        assert_eq!(
            describe(&err),
            "cannot pull alice: cannot write x: disk full"
        );
        let err = anyhow::anyhow!("no such file").context("cannot read cellar.toml");
        assert_eq!(describe(&err), "cannot read cellar.toml: no such file");
    }
}
