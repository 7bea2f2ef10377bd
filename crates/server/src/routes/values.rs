//! JSON ↔ SQLite values. Blobs travel as `{"base64": "..."}` both ways (DESIGN §5).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use cellar_engine::rusqlite::types::Value;
use serde_json::{Map, Number, Value as Json};
use utoipa::openapi::schema::AnyOfBuilder;

/// The key of the object that carries a blob.
const BLOB_KEY: &str = "base64";

/// A query parameter: null, a boolean (0 or 1), an integer, a real, a string, or a blob.
pub(crate) fn from_json(value: Json) -> Result<Value, String> {
    match value {
        Json::Null => Ok(Value::Null),
        Json::Bool(b) => Ok(Value::Integer(i64::from(b))),
        Json::Number(n) => number(&n),
        Json::String(s) => Ok(Value::Text(s)),
        Json::Object(object) => blob(object),
        Json::Array(_) => Err(unsupported("an array")),
    }
}

/// A result value: integers and reals as numbers (infinities as the strings `"Infinity"`
/// and `"-Infinity"`, which JSON cannot write as numbers), text as strings, blobs as
/// `{"base64": ...}`.
pub(crate) fn to_json(value: Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Integer(i) => Json::from(i),
        Value::Real(r) => {
            Number::from_f64(r).map_or_else(|| Json::from(non_finite(r)), Json::Number)
        }
        Value::Text(s) => Json::String(s),
        Value::Blob(bytes) => {
            let mut object = Map::new();
            object.insert(BLOB_KEY.to_owned(), Json::String(BASE64.encode(bytes)));
            Json::Object(object)
        }
    }
}

/// The schema of a parameter, as [`from_json`] takes it.
pub(crate) fn parameter_schema() -> AnyOfBuilder {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    let of = |kind| ObjectBuilder::new().schema_type(kind);
    AnyOfBuilder::new()
        .item(of(Type::Null))
        .item(of(Type::Boolean).description(Some("stored as 0 or 1")))
        .item(
            of(Type::Integer)
                .minimum(Some(i64::MIN))
                .maximum(Some(i64::MAX)),
        )
        .item(of(Type::Number))
        .item(of(Type::String))
        .item(
            of(Type::Object)
                .description(Some("a blob"))
                .property(BLOB_KEY, of(Type::String).content_encoding("base64"))
                .required(BLOB_KEY)
                .additional_properties(Some(AdditionalProperties::FreeForm(false))),
        )
}

fn number(n: &Number) -> Result<Value, String> {
    if let Some(i) = n.as_i64() {
        Ok(Value::Integer(i))
    } else if n.is_u64() {
        Err(format!(
            "the integer {n} does not fit in SQLite's signed 64 bits"
        ))
    } else {
        n.as_f64()
            .map(Value::Real)
            .ok_or_else(|| format!("the number {n} is not representable"))
    }
}

fn blob(object: Map<String, Json>) -> Result<Value, String> {
    let mut entries = object.into_iter();
    match (entries.next(), entries.next()) {
        (Some((key, Json::String(encoded))), None) if key == BLOB_KEY => BASE64
            .decode(encoded)
            .map(Value::Blob)
            .map_err(|err| format!("the blob is not valid base64: {err}")),
        _ => Err(unsupported("an object other than {\"base64\": \"...\"}")),
    }
}

fn unsupported(what: &str) -> String {
    format!(
        "{what} is not a parameter; use null, a boolean, a number, a string or \
         {{\"base64\": \"...\"}} for a blob"
    )
}

fn non_finite(r: f64) -> &'static str {
    if r.is_sign_negative() {
        "-Infinity"
    } else {
        "Infinity"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parameters_convert_to_sqlite_values() {
        assert_eq!(from_json(json!(null)), Ok(Value::Null));
        assert_eq!(from_json(json!(true)), Ok(Value::Integer(1)));
        assert_eq!(from_json(json!(-7)), Ok(Value::Integer(-7)));
        assert_eq!(from_json(json!(2.5)), Ok(Value::Real(2.5)));
        assert_eq!(from_json(json!("é")), Ok(Value::Text("é".into())));
        assert_eq!(
            from_json(json!({"base64": "AAH/"})),
            Ok(Value::Blob(vec![0, 1, 255]))
        );
    }

    #[test]
    fn unsupported_parameters_are_refused_with_a_reason() {
        for bad in [
            json!([1]),
            json!({"b64": "AA=="}),
            json!({"base64": "***"}),
            json!(u64::MAX),
        ] {
            let err = from_json(bad.clone()).expect_err("refused");
            assert!(!err.is_empty(), "{bad}");
        }
    }

    #[test]
    fn results_convert_to_json_and_blobs_round_trip() {
        assert_eq!(to_json(Value::Integer(3)), json!(3));
        assert_eq!(to_json(Value::Real(f64::NEG_INFINITY)), json!("-Infinity"));
        let blob = to_json(Value::Blob(vec![9, 8, 7]));
        assert_eq!(from_json(blob), Ok(Value::Blob(vec![9, 8, 7])));
    }
}
