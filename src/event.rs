//! The wire contract: one [`ChangeEvent`] per change, as UTF-8 JSON, and the BSON -> JSON
//! mapping (ids become strings; nothing else loses information).
//!
//! | BSON                    | JSON                                             |
//! |-------------------------|--------------------------------------------------|
//! | ObjectId                | 24-char hex string                               |
//! | Date                    | ISO-8601 UTC string, millisecond precision       |
//! | Decimal128              | string (`"1.50"`)                                |
//! | Int32, Int64            | number, exact                                    |
//! | Double                  | number (NaN/±Infinity: `{"$numberDouble": ..}`)  |
//! | anything else           | relaxed Extended JSON (`$binary`, `$regularExpression`, `$timestamp`, ...) |

use std::borrow::Cow;

use mongodb::bson::{Bson, Document};
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The kind of change, Debezium style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// Insert.
    #[serde(rename = "c")]
    Create,
    /// Update or replace.
    #[serde(rename = "u")]
    Update,
    /// Delete.
    #[serde(rename = "d")]
    Delete,
    /// A row of an initial snapshot (resync).
    #[serde(rename = "r")]
    Read,
}

impl Op {
    /// The one-letter code used on the wire and as the AMQP `type`.
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
        }
    }
}

/// Where a change happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// Database name.
    pub db: String,
    /// Collection name.
    pub collection: String,
    /// The oplog time of the change; orders changes to one document.
    pub cluster_time: ClusterTime,
}

/// A MongoDB timestamp: seconds and an increment within that second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterTime {
    /// Seconds since the epoch.
    pub t: u32,
    /// Ordinal within the second.
    pub i: u32,
}

/// One change, as published. See the README for the field-by-field contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// The change's resume token `_data`; unique, consumers dedupe on it.
    pub id: String,
    /// What happened.
    pub op: Op,
    /// The document `_id` as a string.
    pub key: String,
    /// Pre-image, when the collection records them.
    pub before: Option<Map<String, Value>>,
    /// The document after the change; null for deletes.
    pub after: Option<Map<String, Value>>,
    /// Fields set by an update.
    pub updated_fields: Option<Map<String, Value>>,
    /// Fields removed by an update.
    pub removed_fields: Option<Vec<String>>,
    /// Where and when.
    pub source: Source,
    /// Event wall time, ms since the epoch.
    pub ts_ms: i64,
}

/// A borrowed view of a [`ChangeEvent`] (same fields, same wire form) for consumers that read
/// many events: strings borrow from the message, documents stay raw JSON until needed.
#[derive(Debug, Deserialize)]
pub struct ChangeEventRef<'a> {
    /// See [`ChangeEvent::id`].
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// See [`ChangeEvent::op`].
    pub op: Op,
    /// See [`ChangeEvent::key`].
    #[serde(borrow)]
    pub key: Cow<'a, str>,
    /// See [`ChangeEvent::before`].
    #[serde(borrow)]
    pub before: Option<&'a RawValue>,
    /// See [`ChangeEvent::after`].
    #[serde(borrow)]
    pub after: Option<&'a RawValue>,
    /// See [`ChangeEvent::updated_fields`].
    #[serde(borrow)]
    pub updated_fields: Option<&'a RawValue>,
    /// See [`ChangeEvent::removed_fields`].
    #[serde(borrow)]
    pub removed_fields: Option<&'a RawValue>,
    /// See [`ChangeEvent::source`].
    #[serde(borrow)]
    pub source: SourceRef<'a>,
    /// See [`ChangeEvent::ts_ms`].
    pub ts_ms: i64,
}

/// Deepest nesting a message may have: serde_json's own limit, so the borrowed and the owned
/// view accept the same messages.
pub const MAX_DEPTH: usize = 128;

/// The deepest nesting of objects and arrays in well-formed JSON text. Written by hand:
/// serde_json skips raw values without a depth limit, and this is one pass over the bytes.
fn json_depth(json: &str) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for b in json.bytes() {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Borrowed [`Source`].
#[derive(Debug, Deserialize)]
pub struct SourceRef<'a> {
    /// Database name.
    #[serde(borrow)]
    pub db: Cow<'a, str>,
    /// Collection name.
    #[serde(borrow)]
    pub collection: Cow<'a, str>,
    /// The oplog time of the change.
    pub cluster_time: ClusterTime,
}

impl ChangeEventRef<'_> {
    /// Check the shapes a [`RawValue`] does not: documents are objects, `removed_fields` an
    /// array of strings, only deletes and updates may lack `after`, and nothing nests deeper
    /// than [`MAX_DEPTH`] (which [`ChangeEvent`] also refuses; MongoDB allows 100 levels).
    pub fn validate(&self) -> Result<(), String> {
        for (name, doc) in [("after", self.after), ("before", self.before), ("updated_fields", self.updated_fields)] {
            if doc.is_some_and(|d| json_depth(d.get()) > MAX_DEPTH - 1) {
                return Err(format!("`{name}` nests deeper than {} levels", MAX_DEPTH - 1));
            }
        }
        let starts = |v: Option<&RawValue>, c: u8| v.is_none_or(|r| r.get().as_bytes().first() == Some(&c));
        if !starts(self.after, b'{') {
            return Err("`after` is not an object".into());
        }
        if !starts(self.before, b'{') {
            return Err("`before` is not an object".into());
        }
        if !starts(self.updated_fields, b'{') {
            return Err("`updated_fields` is not an object".into());
        }
        if let Some(r) = self.removed_fields {
            serde_json::from_str::<Vec<&str>>(r.get())
                .map_err(|_| "`removed_fields` is not a list of strings".to_string())?;
        }
        if self.after.is_none() && matches!(self.op, Op::Create | Op::Read) {
            return Err(format!("op `{}` without `after`", self.op.code()));
        }
        Ok(())
    }
}

/// Why a raw change could not become a [`ChangeEvent`].
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// A field the contract needs was absent.
    #[error("change event has no {0}")]
    Missing(&'static str),
}

impl ChangeEvent {
    /// Build the wire event from a change stream event. `Ok(None)` for operation types we do
    /// not publish (drop, rename, invalidate, ...).
    pub fn from_change(ev: &ChangeStreamEvent<Document>) -> Result<Option<Self>, EventError> {
        let op = match ev.operation_type {
            OperationType::Insert => Op::Create,
            OperationType::Update | OperationType::Replace => Op::Update,
            OperationType::Delete => Op::Delete,
            _ => return Ok(None),
        };
        let ns = ev.ns.as_ref().ok_or(EventError::Missing("ns"))?;
        let collection = ns.coll.clone().ok_or(EventError::Missing("ns.coll"))?;
        let id_value =
            ev.document_key.as_ref().and_then(|k| k.get("_id")).ok_or(EventError::Missing("documentKey._id"))?;
        let ct = ev.cluster_time.ok_or(EventError::Missing("clusterTime"))?;
        let ts_ms = ev.wall_time.map(|w| w.timestamp_millis()).unwrap_or(i64::from(ct.time) * 1000);
        let (updated_fields, removed_fields) = match &ev.update_description {
            Some(u) => (Some(doc_to_json(&u.updated_fields)), Some(u.removed_fields.clone())),
            None => (None, None),
        };
        Ok(Some(ChangeEvent {
            id: token_data(&ev.id),
            op,
            key: key_string(id_value),
            before: ev.full_document_before_change.as_ref().map(doc_to_json),
            after: if op == Op::Delete { None } else { ev.full_document.as_ref().map(doc_to_json) },
            updated_fields,
            removed_fields,
            source: Source { db: ns.db.clone(), collection, cluster_time: ClusterTime { t: ct.time, i: ct.increment } },
            ts_ms,
        }))
    }

    /// The UTF-8 JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain maps and strings cannot fail.
        serde_json::to_vec(self).expect("ChangeEvent serialises")
    }
}

/// The `_data` string of a resume token (falls back to its extended JSON).
pub fn token_data(token: &ResumeToken) -> String {
    match mongodb::bson::to_bson(token) {
        Ok(Bson::Document(d)) => match d.get("_data") {
            Some(Bson::String(s)) => s.clone(),
            _ => Bson::Document(d).into_relaxed_extjson().to_string(),
        },
        Ok(other) => other.into_relaxed_extjson().to_string(),
        Err(_) => String::new(),
    }
}

/// The cluster time a resume token points at, if its format is known: MongoDB's `_data` is
/// a hex KeyString whose first byte is 0x82 followed by the big-endian timestamp; SecantusDB's
/// is hex BSON with a `t` timestamp. Decoded by hand because no crate reads either format.
pub fn token_cluster_time(token: &ResumeToken) -> Option<ClusterTime> {
    let data = token_data(token);
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    if data.len() >= 18 && data[..2].eq_ignore_ascii_case("82") {
        return Some(ClusterTime { t: hex(&data[2..10])?, i: hex(&data[10..18])? });
    }
    let bytes: Vec<u8> =
        (0..data.len() / 2).map(|k| u8::from_str_radix(data.get(2 * k..2 * k + 2)?, 16).ok()).collect::<Option<_>>()?;
    match Document::from_reader(bytes.as_slice()).ok()?.get("t")? {
        Bson::Timestamp(ts) => Some(ClusterTime { t: ts.time, i: ts.increment }),
        _ => None,
    }
}

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
fn millis_precision(rfc3339: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{doc, oid::ObjectId};

    #[test]
    fn ids_become_strings_and_types_keep_information() {
        let oid = ObjectId::parse_str("6b01dfc17594185f823048ac").unwrap();
        let d = doc! {
            "_id": oid,
            "when": mongodb::bson::DateTime::from_millis(1_700_000_000_123),
            "big": 9_007_199_254_740_993_i64,
            "nested": { "ref": oid, "list": [1, [2, { "x": oid }]] },
            "a.b": 1, "$x": "y",
        };
        let j = Value::Object(doc_to_json(&d));
        assert_eq!(
            j,
            serde_json::json!({
                "_id": "6b01dfc17594185f823048ac",
                "when": "2023-11-14T22:13:20.123Z",
                "big": 9_007_199_254_740_993_i64,
                "nested": { "ref": "6b01dfc17594185f823048ac", "list": [1, [2, { "x": "6b01dfc17594185f823048ac" }]] },
                "a.b": 1, "$x": "y",
            })
        );
        assert!(j.to_string().contains("9007199254740993"));
    }

    #[test]
    fn token_times() {
        let mongo: ResumeToken =
            mongodb::bson::from_document(doc! {"_data": "8263A1B2C3000000042B022C0100296E5A1004"}).unwrap();
        assert_eq!(token_cluster_time(&mongo), Some(ClusterTime { t: 0x63A1B2C3, i: 4 }));
        let secantus: ResumeToken = mongodb::bson::from_document(doc! {"_data": "3e0000001073000800000011740005000000c4df016b026e00180000007363726162626c652e24636d642e61676772656761746500036b00050000000000"}).unwrap();
        assert_eq!(token_cluster_time(&secantus), Some(ClusterTime { t: 0x6b01dfc4, i: 5 }));
        let other: ResumeToken = mongodb::bson::from_document(doc! {"_data": "zz"}).unwrap();
        assert_eq!(token_cluster_time(&other), None);
    }

    #[test]
    fn borrowed_view_reads_what_the_owned_event_writes() {
        let ev = ChangeEvent {
            id: "t\"1".into(),
            op: Op::Update,
            key: "k".into(),
            before: None,
            after: Some(doc_to_json(&doc! {"a": 1})),
            updated_fields: Some(doc_to_json(&doc! {"a": 1})),
            removed_fields: Some(vec!["b".into()]),
            source: Source { db: "d".into(), collection: "c".into(), cluster_time: ClusterTime { t: 5, i: 6 } },
            ts_ms: 7,
        };
        let body = ev.to_json();
        let view: ChangeEventRef<'_> = serde_json::from_slice(&body).unwrap();
        assert_eq!(view.id, "t\"1");
        assert_eq!(view.after.unwrap().get(), r#"{"a":1}"#);
        assert_eq!(view.source.cluster_time, ClusterTime { t: 5, i: 6 });
        view.validate().unwrap();
        let text = String::from_utf8(body).unwrap().replace(r#""removed_fields":["b"]"#, r#""removed_fields":[1]"#);
        let bad: ChangeEventRef<'_> = serde_json::from_str(&text).unwrap();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn dates_always_have_milliseconds() {
        let at = |ms| bson_to_json(&Bson::DateTime(mongodb::bson::DateTime::from_millis(ms)));
        assert_eq!(at(1_700_000_000_100), "2023-11-14T22:13:20.100Z");
        assert_eq!(at(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(at(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn depth_is_counted_outside_strings() {
        assert_eq!(json_depth(r#"{"a": [1, {"b": "}}[[{{"}]}"#), 3);
        assert_eq!(json_depth(r#"{"a": "\"{"}"#), 1);
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(json_depth(&deep), 200);
    }

    #[test]
    fn keys() {
        assert_eq!(key_string(&Bson::Int32(7)), "7");
        assert_eq!(key_string(&Bson::String("k".into())), "k");
        assert_eq!(key_string(&Bson::Document(doc! {"a": 1})), r#"{"a":1}"#);
    }
}
