//! `POST /v1/query`: the caller's statements in ONE transaction, all or nothing.
//!
//! The request is read, parsed and checked against the limits by [`parse`], a middleware
//! in front of the handler, so that a malformed or oversized request is refused before any
//! file or object is touched. [`run`] then hands the statements to
//! [`Engine::transact`](cellar_engine::Engine::transact): the version check, the statements
//! in one transaction, and one upload if they wrote, shared with the same user's requests
//! that arrived while an upload was in flight (group commit). The database-sync layer
//! (`sync`) is not on this route: it serves handlers of one's own that take a `Db`.

use std::fmt;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cellar_engine::rusqlite::types::Value;
use cellar_engine::{
    Durability, Error, OutputBudget, StatementOutput, TrackedConnection, UserId, Version,
};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type,
};
use utoipa::{PartialSchema, ToSchema};

use super::values;
use crate::error::{ApiError, SqlErrors, UserErrors};
use crate::options::Limits;
use crate::state::AppState;
use crate::sync::{read_body, set_version};

/// The request body: the statements of ONE transaction, run in order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryRequest {
    statements: Vec<Statement>,
}

/// One statement: a bare SQL string, or `{"sql": "...", "params": [...]}`.
#[derive(Debug)]
pub(crate) struct Statement {
    sql: String,
    params: Vec<serde_json::Value>,
}

impl PartialSchema for Statement {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("SQL without parameters")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .property("sql", ObjectBuilder::new().schema_type(Type::String))
                    .required("sql")
                    .property(
                        "params",
                        ArrayBuilder::new()
                            .items(values::parameter_schema())
                            .description(Some("Values for `?`, `?NNN`, in order")),
                    )
                    .additional_properties(Some(AdditionalProperties::FreeForm(false))),
            )
            .into()
    }
}

impl ToSchema for Statement {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatementObject {
    sql: String,
    #[serde(default)]
    params: Vec<serde_json::Value>,
}

impl<'de> Deserialize<'de> for Statement {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StatementVisitor)
    }
}

/// Accepts either shape with the error messages of the shape that was sent.
struct StatementVisitor;

impl<'de> Visitor<'de> for StatementVisitor {
    type Value = Statement;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SQL string or {\"sql\": \"...\", \"params\": [...]}")
    }

    fn visit_str<E: de::Error>(self, sql: &str) -> Result<Statement, E> {
        Ok(Statement {
            sql: sql.to_owned(),
            params: Vec::new(),
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Statement, A::Error> {
        let object = StatementObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Statement {
            sql: object.sql,
            params: object.params,
        })
    }
}

/// A statement ready to run: SQL within the limits, parameters as SQLite values.
struct Prepared {
    sql: String,
    params: Vec<Value>,
}

/// The checked request, handed from [`parse`] to [`run`] as a request extension.
#[derive(Clone)]
pub(crate) struct PreparedQuery(Arc<Vec<Prepared>>);

impl QueryRequest {
    fn prepare(self, limits: &Limits) -> Result<PreparedQuery, ApiError> {
        if self.statements.len() > limits.max_statements {
            return Err(ApiError::payload_too_large(format!(
                "{} statements in one request; the limit is {}",
                self.statements.len(),
                limits.max_statements
            )));
        }
        let prepared = self
            .statements
            .into_iter()
            .enumerate()
            .map(|(index, statement)| statement.prepare(index, limits))
            .collect::<Result<_, _>>()?;
        Ok(PreparedQuery(Arc::new(prepared)))
    }
}

impl Statement {
    fn prepare(self, index: usize, limits: &Limits) -> Result<Prepared, ApiError> {
        if self.sql.len() > limits.max_sql_bytes {
            return Err(ApiError::payload_too_large(format!(
                "statement {} has {} bytes of SQL; the limit is {}",
                index + 1,
                self.sql.len(),
                limits.max_sql_bytes
            )));
        }
        let params = self
            .params
            .into_iter()
            .enumerate()
            .map(|(n, param)| {
                values::from_json(param).map_err(|reason| {
                    ApiError::bad_request(format!(
                        "statement {}, parameter {}: {reason}",
                        index + 1,
                        n + 1
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Prepared {
            sql: self.sql,
            params,
        })
    }
}

/// Middleware: reads, parses and checks the body, before the handler runs anything.
pub(crate) async fn parse(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let parsed = async {
        let bytes = read_body(body, &state.limits).await?;
        let request: QueryRequest = serde_json::from_slice(&bytes)
            .map_err(|err| ApiError::bad_request(format!("invalid request body: {err}")))?;
        request.prepare(&state.limits)
    };
    match parsed.await {
        Ok(prepared) => {
            parts.extensions.insert(prepared);
            next.run(Request::from_parts(parts, Body::empty())).await
        }
        Err(err) => err.into_response(),
    }
}

/// The response body.
#[derive(Serialize, ToSchema)]
pub(crate) struct QueryResponse {
    /// The version of the caller's database this answer reflects.
    #[schema(value_type = u64)]
    version: Version,
    /// Whether the statements changed the database (and so made a new version).
    wrote: bool,
    /// `sync`: the bucket had `version` before this answer; `async`: `version` is committed
    /// on this instance and its upload is pending (`sync.durability = "async"`).
    #[schema(schema_with = durability_schema)]
    durability: Durability,
    /// One result per statement, in order.
    results: Vec<StatementResult>,
}

/// One statement's output.
#[derive(Serialize, ToSchema)]
struct StatementResult {
    /// Column names of its rows (empty for a statement that returns none).
    columns: Vec<String>,
    /// Its rows; each value a number, a string, `null`, `"Infinity"`/`"-Infinity"`, or a
    /// blob as `{"base64": "..."}`.
    #[schema(value_type = Vec<Vec<Object>>)]
    rows: Vec<Vec<serde_json::Value>>,
    /// Rows changed by an INSERT, UPDATE or DELETE.
    rows_affected: u64,
    /// The rowid of the last row inserted by this statement, if it inserted.
    last_insert_rowid: Option<i64>,
}

fn durability_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["sync", "async"]))
}

impl From<StatementOutput> for StatementResult {
    fn from(output: StatementOutput) -> Self {
        Self {
            columns: output.columns,
            rows: output
                .rows
                .into_iter()
                .map(|row| row.into_iter().map(values::to_json).collect())
                .collect(),
            rows_affected: output.rows_affected,
            last_insert_rowid: output.last_insert_rowid,
        }
    }
}

/// The handler: all statements in ONE transaction through [`Engine::transact`], which
/// does the version check, the upload if they wrote, group commit with other requests of
/// the same user, and rebase (running the statements again on the winner).
///
/// [`Engine::transact`]: cellar_engine::Engine::transact
#[utoipa::path(
    post,
    path = "/v1/query",
    tag = "database",
    security(("identity" = [])),
    description = "The statements in ONE transaction on the caller's database: the version \
        check first, all or nothing, and ONE upload if they wrote (as version + 1). A failed \
        statement fails the request and changes nothing.",
    request_body(content = QueryRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Every statement ran; the new version is in the bucket \
            (`durability: sync`) or committed here (`async`)", body = QueryResponse,
            headers(("Cellar-Version" = u64))),
        UserErrors,
        SqlErrors,
    )
)]
pub(crate) async fn run(
    State(state): State<Arc<AppState>>,
    user: axum::Extension<UserId>,
    request: Option<axum::Extension<PreparedQuery>>,
) -> Result<Response, ApiError> {
    let axum::Extension(PreparedQuery(statements)) = request
        .ok_or_else(|| ApiError::internal("/v1/query is served without its parse middleware"))?;
    let statements = Arc::new(statements);
    let limits = state.limits.clone();
    let committed = state
        .engine
        .transact(&user, move |conn| {
            let mut budget =
                OutputBudget::new(limits.max_result_rows, limits.max_response_bytes as u64);
            conn.set_time_limit(Some(limits.query_timeout));
            let outputs = run_all(conn, &statements, &mut budget);
            conn.set_time_limit(None);
            outputs.map_err(Error::work)
        })
        .await;
    let committed = match committed {
        Ok(committed) => committed,
        Err(err) => {
            let mut response = ApiError::from_work(err).into_response();
            if let Some(version) = state.engine.seen_version(&user) {
                set_version(&mut response, version);
            }
            return Ok(response);
        }
    };
    let mut response = Json(QueryResponse {
        version: committed.version,
        wrote: committed.wrote,
        durability: if committed.in_bucket {
            Durability::Sync
        } else {
            Durability::Async
        },
        results: committed
            .value
            .into_iter()
            .map(StatementResult::from)
            .collect(),
    })
    .into_response();
    set_version(&mut response, committed.version);
    Ok(response)
}

/// Runs the statements in order; the first failure fails the request, naming the statement.
fn run_all(
    conn: &TrackedConnection,
    statements: &[Prepared],
    budget: &mut OutputBudget,
) -> Result<Vec<StatementOutput>, ApiError> {
    statements
        .iter()
        .enumerate()
        .map(|(index, statement)| {
            conn.run(&statement.sql, &statement.params, budget)
                .map_err(|err| ApiError::from(err).context(describe(index, &statement.sql)))
        })
        .collect()
}

/// `statement 2 (`SELECT …`)`: which statement, with a short excerpt of its SQL.
fn describe(index: usize, sql: &str) -> String {
    const SHOWN: usize = 60;
    let flat = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut excerpt: String = flat.chars().take(SHOWN).collect();
    if flat.chars().count() > SHOWN {
        excerpt.push('…');
    }
    format!("statement {} (`{excerpt}`)", index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_body(body: &str) -> Result<QueryRequest, serde_json::Error> {
        serde_json::from_str(body)
    }

    #[test]
    fn statements_are_bare_strings_or_objects_with_params() {
        let request = parse_body(r#"{"statements": ["SELECT 1", {"sql": "SELECT ?", "params": [1]}, {"sql": "SELECT 2"}]}"#)
            .expect("valid request");
        let shapes: Vec<_> = request
            .statements
            .iter()
            .map(|s| (s.sql.as_str(), s.params.len()))
            .collect();
        assert_eq!(shapes, [("SELECT 1", 0), ("SELECT ?", 1), ("SELECT 2", 0)]);
    }

    #[test]
    fn unknown_fields_and_wrong_shapes_are_refused_with_their_name() {
        let cases = [
            (r#"{"statements": [], "extra": 1}"#, "extra"),
            (
                r#"{"statements": [{"sql": "SELECT 1", "param": []}]}"#,
                "param",
            ),
            (r#"{"statements": [42]}"#, "a SQL string"),
            (r#"{"statements": "SELECT 1"}"#, "sequence"),
            (r#"{}"#, "statements"),
        ];
        for (body, expected) in cases {
            let err = parse_body(body).expect_err(body).to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }

    #[test]
    fn limits_are_checked_before_anything_runs() {
        let limits = Limits {
            max_statements: 2,
            max_sql_bytes: 10,
            ..Limits::default()
        };
        let too_many =
            parse_body(r#"{"statements": ["SELECT 1", "SELECT 2", "SELECT 3"]}"#).expect("valid");
        assert_eq!(
            too_many.prepare(&limits).err().map(|e| e.code()),
            Some(crate::error::ErrorCode::PayloadTooLarge)
        );
        let too_long = parse_body(r#"{"statements": ["SELECT 1 + 1 + 1"]}"#).expect("valid");
        assert_eq!(
            too_long.prepare(&limits).err().map(|e| e.code()),
            Some(crate::error::ErrorCode::PayloadTooLarge)
        );
        let bad_param =
            parse_body(r#"{"statements": [{"sql": "SELECT ?", "params": [[1]]}]}"#).expect("valid");
        let err = bad_param.prepare(&limits).err().expect("refused");
        assert!(err.message().contains("statement 1, parameter 1"), "{err}");
    }

    #[test]
    fn statement_descriptions_are_short_and_on_one_line() {
        assert_eq!(describe(0, "SELECT\n  1"), "statement 1 (`SELECT 1`)");
        assert!(describe(4, &"x".repeat(500)).len() < 80);
    }
}
