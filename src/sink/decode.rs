//! Message bodies -> source-neutral changes: one decoder per input format (`SINK_INPUT`). Our
//! own messages (the wire contract in [`crate::event`]) and Debezium's (as Debezium Server's
//! RabbitMQ sink publishes them: the value only, JSON, with or without the `schema` wrapper,
//! from the PostgreSQL, MySQL and MongoDB connectors) both become a [`Change`]: a collection
//! (or table), a key, an op, the documents as JSON, and a [`Position`] that orders the changes
//! of one key. `core` applies changes without knowing where they came from.

use std::borrow::Cow;
use std::collections::HashMap;

use mongodb::bson::Bson;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::bson_json::{bson_to_json, key_string};
use crate::event::{self, ChangeEventRef, ClusterTime, KEY_HEADER, Op};

/// Where a change stands in its source's log: orders the changes of one key. A MongoDB
/// cluster time (seconds, increment), a PostgreSQL LSN (`t`, `i` = 0), a MySQL binlog position
/// (file number, offset and row). Serialised as `{"t": .., "i": ..}`, like a cluster time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// Major part: seconds, LSN or binlog file number.
    pub t: u64,
    /// Minor part: increment, 0, or binlog offset and row.
    pub i: u64,
}

impl From<ClusterTime> for Position {
    fn from(c: ClusterTime) -> Self {
        Self { t: u64::from(c.t), i: u64::from(c.i) }
    }
}

/// One change, whatever format it arrived in.
#[derive(Debug, Clone)]
pub struct Change<'a> {
    /// Unique per change and the same when it comes again: what duplicates are recognised by.
    pub id: Cow<'a, str>,
    /// What happened.
    pub op: Op,
    /// The collection or table.
    pub collection: Cow<'a, str>,
    /// The record's key within it.
    pub key: Cow<'a, str>,
    /// The document before the change, when the source sends it.
    pub before: Option<Cow<'a, RawValue>>,
    /// The document after the change (none for deletes).
    pub after: Option<Cow<'a, RawValue>>,
    /// Orders the changes of one key.
    pub position: Position,
    /// Event time, ms since the epoch.
    pub ts_ms: i64,
}

/// A table emptied at once (Debezium PostgreSQL's `t`).
#[derive(Debug, Clone, PartialEq)]
pub struct Truncate<'a> {
    /// Unique per truncate.
    pub id: String,
    /// The table.
    pub collection: Cow<'a, str>,
    /// Where it happened: records changed after it stay.
    pub position: Position,
    /// Event time, ms since the epoch.
    pub ts_ms: i64,
}

/// Messages that carry no change and are skipped (counted, never dead-lettered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// An empty value (a delete's follow-up, for log compaction).
    Tombstone,
    /// A heartbeat (`{"ts_ms": ..}`).
    Heartbeat,
    /// A schema change (DDL).
    SchemaChange,
    /// A transaction boundary or a logical decoding message.
    Other,
}

/// What a message body holds.
#[derive(Debug, Clone)]
pub enum Decoded<'a> {
    /// A change to apply.
    Change(Change<'a>),
    /// One of our snapshot control messages (the core reads the body itself).
    Control,
    /// A table emptied.
    Truncate(Truncate<'a>),
    /// Nothing to apply.
    Skipped(Skipped),
    /// Unusable, for this reason.
    Poison(String),
}

/// What a delivery brings besides its body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delivery<'a> {
    /// The body.
    pub body: &'a [u8],
    /// The AMQP routing key it was published with.
    pub routing_key: &'a str,
    /// Our `key` header, when present (our bridge sets it).
    pub key_header: Option<&'a str>,
}

impl<'a> Delivery<'a> {
    /// A delivery of just `body`.
    pub fn body(body: &'a [u8]) -> Self {
        Self { body, ..Self::default() }
    }

    /// Read the `key` header and routing key of an AMQP delivery.
    pub fn of(body: &'a [u8], routing_key: &'a str, headers: Option<&'a lapin::types::FieldTable>) -> Self {
        let key_header = headers.and_then(|h| h.inner().get(KEY_HEADER)).and_then(|v| match v {
            lapin::types::AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            _ => None,
        });
        Self { body, routing_key, key_header }
    }
}

/// `SINK_INPUT`: the format of the messages consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Input {
    /// Our bridge's messages.
    #[default]
    Native,
    /// Debezium's change events (our bridge's `CDC_FORMAT=debezium` too).
    Debezium,
    /// Decide per message: a JSON object with top-level `id` and `op` is ours, anything else
    /// Debezium's.
    Auto,
}

impl Input {
    /// Parse `native`, `debezium` or `auto`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" | "native" => Ok(Self::Native),
            "debezium" => Ok(Self::Debezium),
            "auto" => Ok(Self::Auto),
            other => Err(format!("`{other}` is not native, debezium or auto")),
        }
    }
}

/// `SINK_DEBEZIUM_KEY_FROM`: where a Debezium message's key comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeyFrom {
    /// The key columns of the row (`after`, or `before` for a delete); `_id` for MongoDB.
    #[default]
    Value,
    /// The AMQP routing key (Debezium Server's `routingKey.source=key`): the record's key as
    /// JSON; the value is read when the routing key does not give one.
    RoutingKey,
}

impl KeyFrom {
    /// Parse `value` or `routing_key`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" | "value" => Ok(Self::Value),
            "routing_key" => Ok(Self::RoutingKey),
            other => Err(format!("`{other}` is not value or routing_key")),
        }
    }
}

/// `SINK_DEBEZIUM_KEYS`: the key columns of each table, `table:col[+col...]` separated by
/// commas; `*:col` changes the default (`id`). MongoDB collections are keyed by `_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumns {
    default: Vec<String>,
    tables: HashMap<String, Vec<String>>,
}

impl Default for KeyColumns {
    fn default() -> Self {
        Self { default: vec!["id".into()], tables: HashMap::new() }
    }
}

impl KeyColumns {
    /// Parse `orders:id,order_lines:order_id+line_no,*:uuid`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut keys = Self::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (table, cols) =
                item.split_once(':').ok_or_else(|| format!("`{item}` is not table:column[+column...]"))?;
            let cols: Vec<String> = cols.split('+').map(|c| c.trim().to_string()).collect();
            if table.trim().is_empty() || cols.iter().any(String::is_empty) {
                return Err(format!("`{item}` is not table:column[+column...]"));
            }
            match table.trim() {
                "*" => keys.default = cols,
                t => {
                    keys.tables.insert(t.to_string(), cols);
                }
            }
        }
        Ok(keys)
    }

    fn of(&self, table: &str) -> &[String] {
        self.tables.get(table).unwrap_or(&self.default)
    }
}

/// Reads message bodies in the configured format.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decoder {
    /// `SINK_INPUT`.
    pub input: Input,
    /// `SINK_DEBEZIUM_KEYS`.
    pub keys: KeyColumns,
    /// `SINK_DEBEZIUM_KEY_FROM`.
    pub key_from: KeyFrom,
}

impl Decoder {
    /// Decode one delivery.
    pub fn decode<'a>(&self, d: &Delivery<'a>) -> Decoded<'a> {
        match self.input {
            Input::Native => native(d.body),
            Input::Debezium => self.debezium(d),
            Input::Auto if looks_native(d.body) => native(d.body),
            Input::Auto => self.debezium(d),
        }
    }

    fn debezium<'a>(&self, d: &Delivery<'a>) -> Decoded<'a> {
        let body = d.body.trim_ascii();
        if body.is_empty() || body == b"null" || body == b"default" {
            return Decoded::Skipped(Skipped::Tombstone);
        }
        // Our bridge's snapshot control messages travel in its Debezium stream too.
        if event::is_control(body) {
            return Decoded::Control;
        }
        let top: Value_<'a> = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) if e.is_data() || serde_json::from_slice::<IgnoredAny>(body).is_ok() => {
                return Decoded::Poison(format!("not a Debezium change event: {e}"));
            }
            Err(e) => return Decoded::Poison(format!("not JSON: {e}")),
        };
        // `{"schema": .., "payload": ..}` or the payload itself.
        let v = match (top.schema.is_some() || top.op.is_none(), top.payload) {
            (true, Some(p)) => match serde_json::from_str::<Value_<'a>>(p.get()) {
                Ok(v) => v,
                Err(_) if p.get() == "null" => return Decoded::Skipped(Skipped::Tombstone),
                Err(e) => return Decoded::Poison(format!("not a Debezium change event: payload: {e}")),
            },
            (true, None) if top.schema.is_some() => return Decoded::Skipped(Skipped::Tombstone),
            _ => top,
        };
        let Some(op) = v.op.as_deref() else {
            return match (&v.source, v.ts_ms) {
                _ if v.ddl.is_some() || v.table_changes.is_some() => Decoded::Skipped(Skipped::SchemaChange),
                _ if v.status.is_some() => Decoded::Skipped(Skipped::Other),
                (None, Some(_)) => Decoded::Skipped(Skipped::Heartbeat),
                _ => Decoded::Poison("not a Debezium change event: no `op`".into()),
            };
        };
        let Some(source) = v.source.as_ref() else {
            return Decoded::Poison("Debezium change event without `source`".into());
        };
        let connector = match source.connector.as_deref() {
            Some(c @ ("postgresql" | "mysql" | "mongodb")) => c,
            Some(other) => {
                return Decoded::Poison(format!(
                    "Debezium connector `{other}` is not read (postgresql, mysql, mongodb)"
                ));
            }
            None if source.lsn.is_some() => "postgresql",
            None if source.file.is_some() => "mysql",
            None if source.collection.is_some() => "mongodb",
            None => return Decoded::Poison("Debezium change event: `source.connector` is missing".into()),
        };
        let position = match source.position(connector) {
            Ok(p) => p,
            Err(reason) => return Decoded::Poison(reason),
        };
        let ts_ms = source.ts_ms.filter(|&t| t > 0).or(v.ts_ms).unwrap_or_default();
        let table = if connector == "mongodb" { source.collection.clone() } else { source.table.clone() };
        let Some(collection) = table.filter(|t| !t.is_empty()) else {
            let field = if connector == "mongodb" { "source.collection" } else { "source.table" };
            return Decoded::Poison(format!("Debezium change event without `{field}`"));
        };
        let op = match op {
            "c" => Op::Create,
            "u" => Op::Update,
            "d" => Op::Delete,
            "r" => Op::Read,
            "t" => {
                let id = format!("dbz:{connector}:{}:{}:{collection}:t", position.t, position.i);
                return Decoded::Truncate(Truncate { id, collection, position, ts_ms });
            }
            "m" => return Decoded::Skipped(Skipped::Other),
            other => return Decoded::Poison(format!("Debezium op `{other}` is not c, u, d, r, t or m")),
        };
        let (before, after) = if connector == "mongodb" {
            match (extended_json(v.before, "before"), extended_json(v.after, "after")) {
                (Ok(b), Ok(a)) => (b, a),
                (Err(e), _) | (_, Err(e)) => return Decoded::Poison(e),
            }
        } else {
            for (name, doc) in [("before", v.before), ("after", v.after)] {
                if let Some(d) = doc {
                    if !d.get().starts_with('{') {
                        return Decoded::Poison(format!("Debezium `{name}` is not an object"));
                    }
                    if event::nests_deeper_than(d.get(), event::MAX_DEPTH - 1) {
                        return Decoded::Poison(format!("`{name}` nests deeper than {} levels", event::MAX_DEPTH - 1));
                    }
                }
            }
            (v.before.map(Cow::Borrowed), v.after.map(Cow::Borrowed))
        };
        let after = if op == Op::Delete { None } else { after };
        if after.is_none() && matches!(op, Op::Create | Op::Read) {
            return Decoded::Poison(format!("Debezium op `{}` without `after`", op.code()));
        }
        let mongo = connector == "mongodb";
        let columns: Vec<String> = if mongo { vec!["_id".into()] } else { self.keys.of(&collection).to_vec() };
        let from_value = || {
            let doc = after.as_deref().or(before.as_deref())?;
            key_of(doc.get(), &columns, false)
        };
        let from_routing = || routing_key(d.routing_key, &columns, mongo);
        let key = match self.key_from {
            KeyFrom::RoutingKey => from_routing().or_else(from_value),
            KeyFrom::Value => from_value(),
        }
        .or_else(|| d.key_header.map(str::to_string));
        let Some(key) = key else {
            let hint = if mongo {
                "MongoDB events without `_id` need Debezium Server's routingKey.source=key and SINK_DEBEZIUM_KEY_FROM=routing_key"
            } else {
                "set SINK_DEBEZIUM_KEYS, or the table's REPLICA IDENTITY so deletes carry the key"
            };
            return Decoded::Poison(format!("no key `{}` in the {collection} event: {hint}", columns.join("+")));
        };
        let id = format!("dbz:{connector}:{}:{}:{collection}:{key}:{}", position.t, position.i, op.code());
        Decoded::Change(Change {
            id: Cow::Owned(id),
            op,
            collection,
            key: Cow::Owned(key),
            before,
            after,
            position,
            ts_ms,
        })
    }
}

/// Whether a body is one of our messages: a JSON object with top-level `id` and `op`
/// (Debezium's values never have both).
fn looks_native(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        id: Option<IgnoredAny>,
        op: Option<IgnoredAny>,
    }
    serde_json::from_slice::<Probe>(body).is_ok_and(|p| p.id.is_some() && p.op.is_some())
}

/// Our own format.
fn native(body: &[u8]) -> Decoded<'_> {
    let ev = match serde_json::from_slice::<ChangeEventRef<'_>>(body) {
        Ok(ev) => ev,
        Err(_) if event::is_control(body) => return Decoded::Control,
        // serde_json reports some wrong types (a number where an enum goes) as syntax
        // errors, so check the JSON itself before saying it is not JSON.
        Err(e) if e.is_data() || serde_json::from_slice::<IgnoredAny>(body).is_ok() => {
            return Decoded::Poison(format!("not the event contract: {e}"));
        }
        Err(e) => return Decoded::Poison(format!("not JSON: {e}")),
    };
    if let Err(reason) = ev.validate() {
        return Decoded::Poison(format!("not the event contract: {reason}"));
    }
    Decoded::Change(Change {
        id: ev.id,
        op: ev.op,
        collection: ev.source.collection,
        key: ev.key,
        before: ev.before.map(Cow::Borrowed),
        after: ev.after.map(Cow::Borrowed),
        position: ev.source.cluster_time.into(),
        ts_ms: ev.ts_ms,
    })
}

/// A Debezium value (or its `payload`): the fields read, borrowed.
#[derive(Deserialize)]
struct Value_<'a> {
    #[serde(borrow, default)]
    before: Option<&'a RawValue>,
    #[serde(borrow, default)]
    after: Option<&'a RawValue>,
    #[serde(borrow, default)]
    op: Option<Cow<'a, str>>,
    #[serde(default)]
    ts_ms: Option<i64>,
    #[serde(borrow, default)]
    source: Option<Source<'a>>,
    /// Present, even as `null` (a tombstone with schemas on).
    #[serde(borrow, default, deserialize_with = "present")]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    schema: Option<IgnoredAny>,
    #[serde(default)]
    ddl: Option<IgnoredAny>,
    #[serde(default, rename = "tableChanges")]
    table_changes: Option<IgnoredAny>,
    #[serde(default)]
    status: Option<IgnoredAny>,
}

/// A field that is there, `null` included.
fn present<'de: 'a, 'a, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'a RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// `source`: what orders and places a change. `snapshot` (a string or a boolean), `rs`, `h`,
/// `ts_us`, `ts_ns` and the rest are not needed.
#[derive(Deserialize)]
struct Source<'a> {
    #[serde(borrow, default)]
    connector: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    table: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    collection: Option<Cow<'a, str>>,
    #[serde(default)]
    ts_ms: Option<i64>,
    #[serde(default)]
    lsn: Option<u64>,
    #[serde(borrow, default)]
    file: Option<Cow<'a, str>>,
    #[serde(default)]
    pos: Option<u64>,
    #[serde(default)]
    row: Option<u64>,
    #[serde(default)]
    ord: Option<u64>,
}

impl Source<'_> {
    fn position(&self, connector: &str) -> Result<Position, String> {
        match connector {
            "postgresql" => {
                let lsn = self.lsn.ok_or("Debezium PostgreSQL event without `source.lsn`")?;
                Ok(Position { t: lsn, i: 0 })
            }
            "mysql" => {
                let (file, pos) =
                    self.file.as_deref().zip(self.pos).ok_or("Debezium MySQL event without `source.file`/`pos`")?;
                // `mysql-bin.000003`: the files are numbered in order.
                let n = file.rsplit('.').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or_default();
                Ok(Position { t: n, i: pos.saturating_mul(1 << 16).saturating_add(self.row.unwrap_or(0).min(0xffff)) })
            }
            _ => {
                let ts = self.ts_ms.ok_or("Debezium MongoDB event without `source.ts_ms`")?;
                Ok(Position { t: u64::try_from(ts / 1000).unwrap_or_default(), i: self.ord.unwrap_or(0) })
            }
        }
    }
}

/// A MongoDB connector document: a string of Extended JSON -> the contract's JSON.
fn extended_json<'a>(doc: Option<&'a RawValue>, name: &str) -> Result<Option<Cow<'a, RawValue>>, String> {
    let Some(doc) = doc else { return Ok(None) };
    let text: Cow<'_, str> =
        serde_json::from_str(doc.get()).map_err(|_| format!("Debezium MongoDB `{name}` is not a string"))?;
    let bson = extjson_to_bson(&text).map_err(|e| format!("Debezium MongoDB `{name}` is not Extended JSON: {e}"))?;
    if !matches!(bson, Bson::Document(_)) {
        return Err(format!("Debezium MongoDB `{name}` is not a document"));
    }
    let json = serde_json::to_string(&bson_to_json(&bson)).map_err(|e| e.to_string())?;
    RawValue::from_string(json).map(|r| Some(Cow::Owned(r))).map_err(|e| e.to_string())
}

/// Extended JSON text (canonical or relaxed) -> BSON.
fn extjson_to_bson(text: &str) -> Result<Bson, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Bson::try_from(value).map_err(|e| e.to_string())
}

/// The key of a row: its key columns' values (a string as it is, anything else as JSON; a
/// composite key as a JSON array). `extended`: `_id` values are Extended JSON strings.
fn key_of(doc: &str, columns: &[String], extended: bool) -> Option<String> {
    let fields: HashMap<Cow<'_, str>, &RawValue> = serde_json::from_str(doc).ok()?;
    let mut parts = Vec::with_capacity(columns.len());
    for c in columns {
        let raw = fields.get(c.as_str())?;
        if raw.get() == "null" {
            return None;
        }
        parts.push(*raw);
    }
    let one = |raw: &RawValue| -> Option<String> {
        if extended && let Ok(text) = serde_json::from_str::<Cow<'_, str>>(raw.get()) {
            return extjson_to_bson(&text).ok().map(|b| key_string(&b)).or(Some(text.into_owned()));
        }
        if c_is_string(raw) {
            return serde_json::from_str::<String>(raw.get()).ok();
        }
        if raw.get().starts_with('{') {
            // An `_id` that is itself a document or a typed value, e.g. `{"$oid": ..}`.
            let v: Value = serde_json::from_str(raw.get()).ok()?;
            return Bson::try_from(v).ok().map(|b| key_string(&b));
        }
        Some(raw.get().to_string())
    };
    match parts.as_slice() {
        [raw] => one(raw),
        _ => {
            let all: Option<Vec<Value>> = parts.iter().map(|r| serde_json::from_str::<Value>(r.get()).ok()).collect();
            Some(Value::Array(all?).to_string())
        }
    }
}

fn c_is_string(raw: &RawValue) -> bool {
    raw.get().starts_with('"')
}

/// The key the routing key carries (Debezium Server's `routingKey.source=key`): the record
/// key as JSON, maybe in a `schema`/`payload` wrapper; MongoDB's holds `id`, the `_id` as an
/// Extended JSON string. A routing key that is not a JSON object is the key itself.
fn routing_key(rk: &str, columns: &[String], mongo: bool) -> Option<String> {
    if rk.is_empty() {
        return None;
    }
    let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(rk) else { return Some(rk.to_string()) };
    if let Some(Value::Object(p)) = obj.remove("payload") {
        obj = p;
    }
    let text = Value::Object(obj).to_string();
    if mongo {
        return key_of(&text, &["id".to_string()], true);
    }
    key_of(&text, columns, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dbz() -> Decoder {
        Decoder { input: Input::Debezium, ..Decoder::default() }
    }

    #[test]
    fn key_columns_parse() {
        let k = KeyColumns::parse("orders:id, lines:order_id+line, *:uuid").unwrap();
        assert_eq!(k.of("orders"), ["id"]);
        assert_eq!(k.of("lines"), ["order_id", "line"]);
        assert_eq!(k.of("other"), ["uuid"]);
        assert!(KeyColumns::parse("orders").is_err());
        assert!(KeyColumns::parse("orders:a+").is_err());
    }

    #[test]
    fn keys_from_values_and_routing_keys() {
        let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(key_of(r#"{"id": 7, "x": 1}"#, &cols(&["id"]), false).unwrap(), "7");
        assert_eq!(key_of(r#"{"id": "a\"b"}"#, &cols(&["id"]), false).unwrap(), "a\"b");
        assert_eq!(key_of(r#"{"a": 1, "b": "x"}"#, &cols(&["a", "b"]), false).unwrap(), r#"[1,"x"]"#);
        assert_eq!(key_of(r#"{"id": null}"#, &cols(&["id"]), false), None);
        assert_eq!(
            key_of(r#"{"_id": {"$oid": "5d4b0a5bd6e4f2b1f8c3a9e1"}}"#, &cols(&["_id"]), false).unwrap(),
            "5d4b0a5bd6e4f2b1f8c3a9e1"
        );
        let mongo_key = r#"{"id": "{\"$oid\": \"5d4b0a5bd6e4f2b1f8c3a9e1\"}"}"#;
        assert_eq!(routing_key(mongo_key, &[], true).unwrap(), "5d4b0a5bd6e4f2b1f8c3a9e1");
        let wrapped = r#"{"schema": {"type": "struct"}, "payload": {"id": "{\"$numberLong\": \"1004\"}"}}"#;
        assert_eq!(routing_key(wrapped, &[], true).unwrap(), "1004");
        assert_eq!(routing_key(r#"{"id": 1001}"#, &cols(&["id"]), false).unwrap(), "1001");
        assert_eq!(routing_key("plain", &cols(&["id"]), false).unwrap(), "plain");
    }

    #[test]
    fn tombstones_heartbeats_and_schema_changes_are_skipped() {
        let d = dbz();
        for body in [&b""[..], b"null", b"default", br#"{"schema": null, "payload": null}"#] {
            assert!(matches!(d.decode(&Delivery::body(body)), Decoded::Skipped(Skipped::Tombstone)), "{body:?}");
        }
        let hb = br#"{"schema": {"type": "struct"}, "payload": {"ts_ms": 1588252618953}}"#;
        assert!(matches!(d.decode(&Delivery::body(hb)), Decoded::Skipped(Skipped::Heartbeat)));
        let ddl = br#"{"source": {"connector": "mysql", "file": "mysql-bin.000003", "pos": 154}, "databaseName": "inventory", "ddl": "CREATE TABLE t (id INT)", "tableChanges": []}"#;
        assert!(matches!(d.decode(&Delivery::body(ddl)), Decoded::Skipped(Skipped::SchemaChange)));
        assert!(matches!(d.decode(&Delivery::body(b"{nope")), Decoded::Poison(r) if r.starts_with("not JSON")));
        assert!(matches!(d.decode(&Delivery::body(br#"{"x": 1}"#)), Decoded::Poison(_)));
    }

    #[test]
    fn auto_tells_ours_from_debeziums() {
        assert!(looks_native(br#"{"id": "a", "op": "c", "key": "k"}"#));
        assert!(!looks_native(br#"{"payload": {"op": "c"}}"#));
        assert!(!looks_native(br#"{"op": "c", "before": null}"#));
        assert!(!looks_native(b"default"));
    }
}
