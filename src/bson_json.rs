//! MongoDB's BSON as the contract's JSON (the table in `bridge::encode`): ObjectIds become hex
//! strings, dates ISO-8601 text, Decimal128 text; the rest is relaxed Extended JSON. Shared by
//! the bridge (which writes it) and the sink (which reads Debezium's Extended JSON strings
//! into the same form), so both sides key and shape documents alike.

use mongodb::bson::{Bson, Document};
use serde_json::{Map, Value};

/// The document `_id` as a string: ObjectId as hex, strings as they are, numbers in decimal,
/// anything else as compact JSON of its mapped form.
pub fn key_string(id: &Bson) -> String {
    match id {
        Bson::ObjectId(oid) => oid.to_hex(),
        Bson::String(s) => s.clone(),
        Bson::Int32(n) => n.to_string(),
        Bson::Int64(n) => n.to_string(),
        other => bson_to_json(other).to_string(),
    }
}

/// Map a BSON document to a JSON object (see the module table).
pub fn doc_to_json(doc: &Document) -> Map<String, Value> {
    doc.iter().map(|(k, v)| (k.clone(), bson_to_json(v))).collect()
}

/// RFC 3339 with exactly three fraction digits (`...:05.100Z`, not `...:05.1Z`), so every
/// date has the same width and sorts as text.
pub(crate) fn millis_precision(rfc3339: &str) -> String {
    let Some(body) = rfc3339.strip_suffix('Z') else { return rfc3339.to_string() };
    let (secs, frac) = match body.rsplit_once('.') {
        Some((secs, frac)) if !secs.contains('.') => (secs, frac),
        _ => (body, ""),
    };
    format!("{secs}.{:0<3.3}Z", frac)
}

/// Map one BSON value to JSON (see the module table).
pub fn bson_to_json(value: &Bson) -> Value {
    match value {
        Bson::Document(d) => Value::Object(doc_to_json(d)),
        Bson::Array(a) => Value::Array(a.iter().map(bson_to_json).collect()),
        Bson::ObjectId(oid) => Value::String(oid.to_hex()),
        Bson::DateTime(dt) => match dt.try_to_rfc3339_string() {
            Ok(s) => Value::String(millis_precision(&s)),
            // Outside years 0..=9999 RFC 3339 has no form; keep the exact millis.
            Err(_) => value.clone().into_relaxed_extjson(),
        },
        Bson::Decimal128(d) => Value::String(d.to_string()),
        Bson::Int32(n) => Value::from(*n),
        Bson::Int64(n) => Value::from(*n),
        Bson::String(s) => Value::String(s.clone()),
        Bson::Boolean(b) => Value::Bool(*b),
        Bson::Null => Value::Null,
        other => other.clone().into_relaxed_extjson(),
    }
}
