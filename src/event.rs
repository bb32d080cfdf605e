//! The wire contract, whole: the JSON body of a change ([`ChangeEvent`]) and of a snapshot
//! control message ([`ControlEvent`]), the AMQP envelope every message travels in
//! ([`Envelope`]), and its routing key. How MongoDB's BSON becomes this JSON lives in
//! `bridge::encode`; the README has the field-by-field table.

use std::borrow::Cow;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
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
    /// A row of a snapshot: the document as it was read.
    #[serde(rename = "r")]
    Read,
}

impl Op {
    /// The one-letter code used on the wire, as the AMQP `type` and in the routing key.
    pub fn code(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
        }
    }
}

/// `source.snapshot`, as Debezium writes it: whether a message comes from a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotMark {
    /// A row of a snapshot, or one of its control messages.
    #[serde(rename = "true")]
    True,
    /// The final row of a snapshot.
    #[serde(rename = "last")]
    Last,
    /// A streamed change.
    #[default]
    #[serde(rename = "false")]
    False,
}

/// Where a change happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// Database name.
    pub db: String,
    /// Collection name.
    pub collection: String,
    /// The oplog time of the change, or of the read for a snapshot row; orders the messages
    /// of one document.
    pub cluster_time: ClusterTime,
    /// Whether the message comes from a snapshot (older messages lack it: `"false"`).
    #[serde(default)]
    pub snapshot: SnapshotMark,
}

/// A MongoDB timestamp: seconds and an increment within that second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterTime {
    /// Seconds since the epoch.
    pub t: u32,
    /// Ordinal within the second.
    pub i: u32,
}

/// One change, as published. See the README for the field-by-field contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Unique per change, stable when the change is published again; consumers dedupe on it.
    /// The resume token `_data` for streamed changes; `r:<snapshot id>:<collection>:<key>`
    /// for snapshot rows.
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
    /// Event wall time (for a snapshot row, when it was read), ms since the epoch.
    pub ts_ms: i64,
    /// Parts left out because the event was too large to publish whole
    /// (`CDC_OVERSIZE=truncate`): `before`, `updated_fields` (with `removed_fields`), `after`.
    /// Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Vec<String>>,
}

impl ChangeEvent {
    /// The UTF-8 JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain maps and strings cannot fail.
        serde_json::to_vec(self).expect("ChangeEvent serialises")
    }
}

/// The `op` (and AMQP `type`) of a snapshot control message.
pub const CONTROL_OP: &str = "snapshot";

/// Which end of a collection's snapshot a control message marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Rows of the collection follow.
    Start,
    /// Every row of the collection has been sent.
    End,
}

/// What a control message says about the snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The snapshot's id, the same in every message of one snapshot.
    pub id: String,
    /// `start` or `end` of this collection's snapshot.
    pub phase: Phase,
    /// The position from which the collection's snapshot is complete: every document that
    /// existed then arrives as a row, or its later changes arrive. At `end`, a consumer may
    /// drop every record of the collection it last changed at or before this time.
    pub since: ClusterTime,
    /// Rows sent for the collection (`end` only; a crash can make it count a row twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// A snapshot control message: one brackets each collection of a snapshot (`start` before
/// its rows, `end` after them), so consumers can reconcile deletes that produced no event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlEvent {
    /// `s:<snapshot id>:<collection>:<phase>`; unique and stable, like a change's id.
    pub id: String,
    /// Always [`CONTROL_OP`].
    pub op: String,
    /// The snapshot and the phase.
    pub snapshot: SnapshotInfo,
    /// The collection, and the stream position when the message was sent.
    pub source: Source,
    /// Wall time when the message was sent, ms since the epoch.
    pub ts_ms: i64,
}

impl ControlEvent {
    /// The UTF-8 JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("ControlEvent serialises")
    }
}

/// The header carrying a change's key (what partitioned sinks are hashed on).
pub const KEY_HEADER: &str = "key";

/// What a message carries besides its body: AMQP properties, headers and routing key.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// `message_id`: the message's `id`.
    pub id: String,
    /// `type`: the op code, or [`CONTROL_OP`].
    pub kind: &'static str,
    /// Header `db`.
    pub db: String,
    /// Header `collection`.
    pub collection: String,
    /// Header `key`: the document `_id` as the body's `key` writes it (none for control
    /// messages). Partitioned sinks are fed by hashing it.
    pub key: Option<String>,
    /// Event time, ms since the epoch (the AMQP `timestamp` is in seconds).
    pub ts_ms: i64,
}

impl Envelope {
    /// The envelope of a change.
    pub fn of(ev: &ChangeEvent) -> Self {
        Self {
            id: ev.id.clone(),
            kind: ev.op.code(),
            db: ev.source.db.clone(),
            collection: ev.source.collection.clone(),
            key: Some(ev.key.clone()),
            ts_ms: ev.ts_ms,
        }
    }

    /// The envelope of a control message.
    pub fn of_control(ev: &ControlEvent) -> Self {
        Self {
            id: ev.id.clone(),
            kind: CONTROL_OP,
            db: ev.source.db.clone(),
            collection: ev.source.collection.clone(),
            key: None,
            ts_ms: ev.ts_ms,
        }
    }

    /// The routing key on a topic exchange: `<db>.<collection>.<op>` (`op` is `c`, `u`, `d`,
    /// `r` or `snapshot`).
    pub fn topic_key(&self) -> String {
        format!("{}.{}.{}", self.db, self.collection, self.kind)
    }

    /// Persistent, JSON, with the id, type, timestamp and the `db`/`collection` headers.
    pub fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert("db".into(), AMQPValue::LongString(self.db.as_str().into()));
        headers.insert("collection".into(), AMQPValue::LongString(self.collection.as_str().into()));
        if let Some(key) = &self.key {
            headers.insert(KEY_HEADER.into(), AMQPValue::LongString(key.as_str().into()));
        }
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(self.id.as_str().into())
            .with_type(self.kind.into())
            .with_timestamp(u64::try_from(self.ts_ms / 1000).unwrap_or_default())
            .with_headers(headers)
    }
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
pub fn json_depth(json: &str) -> usize {
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

/// Whether well-formed JSON text nests deeper than `limit`. Text with no more than `limit`
/// opening brackets cannot (counting them is a loop the compiler vectorises), so the byte-wise
/// [`json_depth`] walk runs only on text that might.
pub fn nests_deeper_than(json: &str, limit: usize) -> bool {
    let openers = json.bytes().filter(|&b| b == b'{' || b == b'[').count();
    openers > limit && json_depth(json) > limit
}

/// Borrowed [`Source`] (without `snapshot`, which consumers of the view do not need).
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
            if doc.is_some_and(|d| nests_deeper_than(d.get(), MAX_DEPTH - 1)) {
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

/// Whether a body is a control message: its `op` is [`CONTROL_OP`]. Cheap: only the top
/// level is read, nothing is built.
pub fn is_control(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct OpOnly<'a> {
        #[serde(borrow)]
        op: Option<Cow<'a, str>>,
    }
    serde_json::from_slice::<OpOnly<'_>>(body).is_ok_and(|o| o.op.as_deref() == Some(CONTROL_OP))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change() -> ChangeEvent {
        ChangeEvent {
            id: "t\"1".into(),
            op: Op::Update,
            key: "k".into(),
            before: None,
            after: Some(serde_json::from_str(r#"{"a":1}"#).unwrap()),
            updated_fields: Some(serde_json::from_str(r#"{"a":1}"#).unwrap()),
            removed_fields: Some(vec!["b".into()]),
            source: Source {
                db: "d".into(),
                collection: "c".into(),
                cluster_time: ClusterTime { t: 5, i: 6 },
                snapshot: SnapshotMark::False,
            },
            ts_ms: 7,
            truncated: None,
        }
    }

    #[test]
    fn borrowed_view_reads_what_the_owned_event_writes() {
        let body = change().to_json();
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
    fn source_snapshot_is_a_string_and_defaults_to_false() {
        let body = String::from_utf8(change().to_json()).unwrap();
        assert!(body.contains(r#""snapshot":"false""#), "{body}");
        let old = body.replace(r#","snapshot":"false""#, "");
        let back: ChangeEvent = serde_json::from_str(&old).unwrap();
        assert_eq!(back.source.snapshot, SnapshotMark::False);
        let mut row = change();
        row.source.snapshot = SnapshotMark::Last;
        assert!(String::from_utf8(row.to_json()).unwrap().contains(r#""snapshot":"last""#));
    }

    #[test]
    fn control_messages_are_recognised_by_their_op() {
        let ctl = ControlEvent {
            id: "s:1:c:end".into(),
            op: CONTROL_OP.into(),
            snapshot: SnapshotInfo {
                id: "1".into(),
                phase: Phase::End,
                since: ClusterTime { t: 1, i: 2 },
                rows: Some(3),
            },
            source: change().source,
            ts_ms: 1,
        };
        let body = ctl.to_json();
        assert!(is_control(&body));
        assert!(!is_control(&change().to_json()));
        assert!(!is_control(b"{nope"));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["snapshot"]["phase"], "end");
        assert_eq!(v["snapshot"]["since"], serde_json::json!({"t": 1, "i": 2}));
        let env = Envelope::of_control(&ctl);
        assert_eq!(env.topic_key(), "d.c.snapshot");
        assert_eq!(Envelope::of(&change()).topic_key(), "d.c.u");
    }

    #[test]
    fn depth_is_counted_outside_strings() {
        assert_eq!(json_depth(r#"{"a": [1, {"b": "}}[[{{"}]}"#), 3);
        assert_eq!(json_depth(r#"{"a": "\"{"}"#), 1);
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(json_depth(&deep), 200);
        assert!(nests_deeper_than(&deep, 199) && !nests_deeper_than(&deep, 200));
        // Brackets inside strings count towards the quick bound but not towards the depth.
        let quoted = format!(r#"{{"a": "{}"}}"#, "[".repeat(300));
        assert!(!nests_deeper_than(&quoted, 10));
    }
}
