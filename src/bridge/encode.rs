//! MongoDB -> the wire contract: BSON to JSON (ids become strings; nothing else loses
//! information), change stream events and snapshot rows to [`ChangeEvent`]s, and what the
//! bridge reads out of resume tokens.
//!
//! | BSON                    | JSON                                             |
//! |-------------------------|--------------------------------------------------|
//! | ObjectId                | 24-char hex string                               |
//! | Date                    | ISO-8601 UTC string, millisecond precision       |
//! | Decimal128              | string (`"1.50"`)                                |
//! | Int32, Int64            | number, exact                                    |
//! | Double                  | number (NaN/±Infinity: `{"$numberDouble": ..}`)  |
//! | anything else           | relaxed Extended JSON (`$binary`, `$regularExpression`, `$timestamp`, ...) |

use mongodb::bson::{Bson, Document, RawArray, RawBsonRef, RawDocument};
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use serde_json::{Map, Value};

use super::json;
pub use crate::bson_json::{bson_to_json, doc_to_json, key_string};
use crate::event::{ChangeEvent, ClusterTime, Envelope, Op, SnapshotMark, Source};

/// Why a raw change could not become a [`ChangeEvent`].
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// A field the contract needs was absent.
    #[error("change event has no {0}")]
    Missing(&'static str),
    /// The BSON could not be read.
    #[error("unreadable BSON: {0}")]
    Bson(String),
}

/// Build the wire event from a change stream event, without the fields `redact` names.
/// `Ok(None)` for operation types we do not publish (drop, rename, invalidate, ...).
pub fn change(ev: &ChangeStreamEvent<Document>, redact: &Redaction) -> Result<Option<ChangeEvent>, EventError> {
    let op = match ev.operation_type {
        OperationType::Insert => Op::Create,
        OperationType::Update | OperationType::Replace => Op::Update,
        OperationType::Delete => Op::Delete,
        _ => return Ok(None),
    };
    let ns = ev.ns.as_ref().ok_or(EventError::Missing("ns"))?;
    let collection = ns.coll.clone().ok_or(EventError::Missing("ns.coll"))?;
    let id_value = ev.document_key.as_ref().and_then(|k| k.get("_id")).ok_or(EventError::Missing("documentKey._id"))?;
    let ct = ev.cluster_time.ok_or(EventError::Missing("clusterTime"))?;
    let ts_ms = ev.wall_time.map(|w| w.timestamp_millis()).unwrap_or(i64::from(ct.time) * 1000);
    let (mut updated_fields, mut removed_fields) = match &ev.update_description {
        Some(u) => (Some(doc_to_json(&u.updated_fields)), Some(u.removed_fields.clone())),
        None => (None, None),
    };
    let mut before = ev.full_document_before_change.as_ref().map(doc_to_json);
    let mut after = if op == Op::Delete { None } else { ev.full_document.as_ref().map(doc_to_json) };
    if !redact.is_empty() {
        for doc in [before.as_mut(), after.as_mut()].into_iter().flatten() {
            redact.document(&collection, doc);
        }
        redact.update(&collection, updated_fields.as_mut(), removed_fields.as_mut());
    }
    Ok(Some(ChangeEvent {
        id: token_data(&ev.id),
        op,
        key: key_string(id_value),
        before,
        after,
        updated_fields,
        removed_fields,
        source: Source {
            db: ns.db.clone(),
            collection,
            cluster_time: ClusterTime { t: ct.time, i: ct.increment },
            snapshot: SnapshotMark::False,
        },
        ts_ms,
        truncated: None,
    }))
}

/// Where a snapshot row was read.
pub struct RowSource<'a> {
    /// The snapshot's id.
    pub snapshot_id: &'a str,
    /// Database name.
    pub db: &'a str,
    /// Collection name.
    pub collection: &'a str,
    /// The cluster time at which the row's chunk was read.
    pub read_at: ClusterTime,
    /// Wall time of the read, ms since the epoch.
    pub ts_ms: i64,
}

/// A snapshot row: `op: "r"`, `after` the document, `before` null. Its id,
/// `r:<snapshot id>:<collection>:<id>`, is the same if the row is read again after a crash,
/// so consumers drop the repeat; the `_id` part is its canonical extended JSON, so ids of
/// different BSON types (`7` and `"7"`) never share one.
pub fn row(
    doc: &Document,
    at: &RowSource<'_>,
    mark: SnapshotMark,
    redact: &Redaction,
) -> Result<ChangeEvent, EventError> {
    let id = doc.get("_id").ok_or(EventError::Missing("_id"))?;
    let mut after = doc_to_json(doc);
    redact.document(at.collection, &mut after);
    Ok(ChangeEvent {
        id: format!("r:{}:{}:{}", at.snapshot_id, at.collection, id.clone().into_canonical_extjson()),
        op: Op::Read,
        key: key_string(id),
        before: None,
        after: Some(after),
        updated_fields: None,
        removed_fields: None,
        source: Source {
            db: at.db.to_string(),
            collection: at.collection.to_string(),
            cluster_time: at.read_at,
            snapshot: mark,
        },
        ts_ms: at.ts_ms,
        truncated: None,
    })
}

/// The fields never published (`CDC_EXCLUDE_FIELDS`): `collection.path.to.field`, where `*`
/// stands for any collection. They are removed from `after`, `before`, `updated_fields`,
/// `removed_fields` and snapshot rows before anything is encoded further, inside nested
/// documents and arrays of documents alike.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Redaction {
    rules: Vec<(Option<String>, Vec<String>)>,
}

impl Redaction {
    /// Parse `CDC_EXCLUDE_FIELDS`; the error says what is wrong (never a document's value).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((coll, path)) = item.split_once('.') else {
                return Err(format!("`{item}` is not `collection.field` (`*.field` for every collection)"));
            };
            let path: Vec<String> = path.split('.').map(String::from).collect();
            if coll.is_empty() || path.iter().any(String::is_empty) {
                return Err(format!("`{item}` has an empty part"));
            }
            if path[0] == "_id" {
                return Err(format!("`{item}`: `_id` is the document's key and is always published"));
            }
            rules.push(((coll != "*").then(|| coll.to_string()), path));
        }
        Ok(Self { rules })
    }

    /// Nothing is excluded.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn paths<'a>(&'a self, collection: &'a str) -> impl Iterator<Item = &'a [String]> + 'a {
        self.rules.iter().filter(move |(c, _)| c.as_deref().is_none_or(|c| c == collection)).map(|(_, p)| p.as_slice())
    }

    /// The excluded paths of `collection`.
    pub(super) fn paths_of<'a>(&'a self, collection: &'a str) -> json::Paths<'a> {
        self.paths(collection).collect()
    }

    /// Remove the excluded fields of `collection` from a document.
    pub fn document(&self, collection: &str, doc: &mut Map<String, Value>) {
        for path in self.paths(collection) {
            remove_path(doc, path);
        }
    }

    /// Remove the excluded fields of `collection` from an update's delta, whose keys are
    /// dotted paths (array indexes included): a key at or inside an excluded field goes, and
    /// a key above one loses it from its value.
    pub fn update(
        &self,
        collection: &str,
        updated: Option<&mut Map<String, Value>>,
        removed: Option<&mut Vec<String>>,
    ) {
        if let Some(updated) = updated {
            for path in self.paths(collection) {
                updated.retain(|key, _| !segments(key).starts_with(path));
                for (key, value) in updated.iter_mut() {
                    let above = segments(key);
                    if path.starts_with(&above) {
                        remove_in(value, &path[above.len()..]);
                    }
                }
            }
        }
        if let Some(removed) = removed {
            removed.retain(|key| !self.paths(collection).any(|path| segments(key).starts_with(path)));
        }
    }
}

/// Remove `path` from `doc`: the nested field, and a literal key spelling the dotted path.
/// `retain` rather than `remove`, which would reorder the keys under serde_json's
/// `preserve_order`.
fn remove_path(doc: &mut Map<String, Value>, path: &[String]) {
    let Some((first, rest)) = path.split_first() else { return };
    if rest.is_empty() {
        doc.retain(|k, _| k != first);
        return;
    }
    let dotted = path.join(".");
    doc.retain(|k, _| *k != dotted);
    if let Some(v) = doc.get_mut(first) {
        remove_in(v, rest);
    }
}

fn remove_in(value: &mut Value, path: &[String]) {
    match value {
        Value::Object(m) => remove_path(m, path),
        Value::Array(items) => items.iter_mut().for_each(|v| remove_in(v, path)),
        _ => {}
    }
}

/// The parts of a message that `CDC_OVERSIZE=truncate` may leave out, in that order.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Omit {
    /// The pre-image.
    pub before: bool,
    /// The update's delta (`updated_fields` and `removed_fields`).
    pub delta: bool,
    /// The document.
    pub after: bool,
}

impl Omit {
    /// The parts left out, as the contract's `truncated` lists them.
    pub fn names(self) -> Vec<&'static str> {
        [(self.before, "before"), (self.delta, "updated_fields"), (self.after, "after")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect()
    }
}

/// A message read straight from raw BSON: a change stream event or a snapshot row, with
/// its documents still raw; [`Raw::body`] writes the JSON.
#[derive(Debug)]
pub struct Raw<'a> {
    pub(super) id: String,
    pub(super) op: Op,
    pub(super) key: String,
    pub(super) db: &'a str,
    pub(super) collection: &'a str,
    pub(super) cluster_time: ClusterTime,
    pub(super) snapshot: SnapshotMark,
    pub(super) ts_ms: i64,
    pub(super) before: Option<&'a RawDocument>,
    pub(super) after: Option<&'a RawDocument>,
    pub(super) updated: Option<&'a RawDocument>,
    pub(super) removed: Option<&'a RawArray>,
}

/// A missing field as an [`EventError`].
fn field<T>(v: Result<Option<T>, mongodb::bson::raw::Error>, name: &'static str) -> Result<T, EventError> {
    v.ok().flatten().ok_or(EventError::Missing(name))
}

fn raw_to_bson(v: RawBsonRef<'_>) -> Bson {
    Bson::try_from(v.to_raw_bson()).unwrap_or(Bson::Null)
}

/// Read a change stream event, as raw BSON, into a message. `Ok(None)` for operation types
/// we do not publish (drop, rename, invalidate, ...). The same message as [`change`], without
/// decoding the documents.
pub fn raw_change(ev: &RawDocument) -> Result<Option<Raw<'_>>, EventError> {
    scan(ev).message
}

/// What one pass over a change stream event finds: enough to place it (its fragments,
/// cluster time, collection and key) and the message it makes.
#[derive(Debug)]
pub struct Scan<'a> {
    /// `splitEvent.of`: how many fragments the event came in (1 when whole).
    pub fragments: i32,
    /// `operationType`.
    pub operation: Option<&'a str>,
    /// `clusterTime`.
    pub cluster_time: Option<ClusterTime>,
    /// `ns.coll`.
    pub collection: Option<&'a str>,
    /// `documentKey._id`.
    pub id: Option<RawBsonRef<'a>>,
    /// The message: `None` for operation types we do not publish, an error for one that
    /// does not fit the contract.
    pub message: Result<Option<Raw<'a>>, EventError>,
}

/// Read a change stream event in one pass over its fields (a lookup by name scans, and
/// checks, every field before it, and an event has a dozen).
pub fn scan(ev: &RawDocument) -> Scan<'_> {
    let (mut op, mut ns, mut token, mut key, mut ct, mut wall) = (None, None, None, None, None, None);
    let (mut before, mut after, mut update, mut fragments) = (None, None, None, 1);
    let mut bad = None;
    for field in ev.iter() {
        let (name, value) = match field {
            Ok(f) => f,
            Err(e) => {
                bad = Some(EventError::Bson(e.to_string()));
                break;
            }
        };
        match (name, value) {
            ("operationType", RawBsonRef::String(s)) => op = Some(s),
            ("ns", RawBsonRef::Document(d)) => ns = Some(d),
            ("_id", v) => token = Some(v),
            ("documentKey", RawBsonRef::Document(d)) => key = Some(d),
            ("clusterTime", RawBsonRef::Timestamp(t)) => ct = Some(ClusterTime { t: t.time, i: t.increment }),
            ("wallTime", RawBsonRef::DateTime(w)) => wall = Some(w.timestamp_millis()),
            ("fullDocument", RawBsonRef::Document(d)) => after = Some(d),
            ("fullDocumentBeforeChange", RawBsonRef::Document(d)) => before = Some(d),
            ("updateDescription", RawBsonRef::Document(d)) => update = Some(d),
            ("splitEvent", RawBsonRef::Document(d)) => fragments = d.get_i32("of").unwrap_or(1),
            _ => {}
        }
    }
    let id = key.and_then(|k| k.get("_id").ok().flatten());
    let collection = ns.and_then(|ns| coll_of(ns));
    let message = match bad {
        Some(e) => Err(e),
        None => message(op, ns, token, id, ct, wall, [before, after, update]).map(|m| {
            m.map(|mut m| {
                m.collection = collection.unwrap_or_default();
                m
            })
        }),
    };
    Scan { fragments, operation: op, cluster_time: ct, collection, id, message }
}

/// `ns.coll`.
fn coll_of(ns: &RawDocument) -> Option<&str> {
    ns.iter().filter_map(Result::ok).find_map(|(k, v)| match v {
        RawBsonRef::String(s) if k == "coll" => Some(s),
        _ => None,
    })
}

/// The message of a scanned event (its collection is set by the caller).
#[allow(clippy::too_many_arguments)]
fn message<'a>(
    op: Option<&'a str>,
    ns: Option<&'a RawDocument>,
    token: Option<RawBsonRef<'a>>,
    key: Option<RawBsonRef<'a>>,
    ct: Option<ClusterTime>,
    wall: Option<i64>,
    [before, after, update]: [Option<&'a RawDocument>; 3],
) -> Result<Option<Raw<'a>>, EventError> {
    let op = match op.ok_or(EventError::Missing("operationType"))? {
        "insert" => Op::Create,
        "update" | "replace" => Op::Update,
        "delete" => Op::Delete,
        _ => return Ok(None),
    };
    let ns = ns.ok_or(EventError::Missing("ns"))?;
    let id = match token.ok_or(EventError::Missing("_id"))? {
        RawBsonRef::Document(t) => match t.get_str("_data") {
            Ok(data) => data.to_string(),
            Err(_) => raw_to_bson(RawBsonRef::Document(t)).into_relaxed_extjson().to_string(),
        },
        other => raw_to_bson(other).into_relaxed_extjson().to_string(),
    };
    let key = key.ok_or(EventError::Missing("documentKey._id"))?;
    let ct = ct.ok_or(EventError::Missing("clusterTime"))?;
    let (mut updated, mut removed) = (None, None);
    if let Some(u) = update {
        for field in u.iter() {
            match field.map_err(|e| EventError::Bson(e.to_string()))? {
                ("updatedFields", RawBsonRef::Document(d)) => updated = Some(d),
                ("removedFields", RawBsonRef::Array(a)) => removed = Some(a),
                _ => {}
            }
        }
    }
    let mut db = None;
    let mut has_coll = false;
    for field in ns.iter() {
        match field.map_err(|e| EventError::Bson(e.to_string()))? {
            ("db", RawBsonRef::String(s)) => db = Some(s),
            ("coll", RawBsonRef::String(_)) => has_coll = true,
            _ => {}
        }
    }
    if !has_coll {
        return Err(EventError::Missing("ns.coll"));
    }
    Ok(Some(Raw {
        id,
        op,
        key: key_string(&raw_to_bson(key)),
        db: db.ok_or(EventError::Missing("ns.db"))?,
        collection: "",
        cluster_time: ct,
        snapshot: SnapshotMark::False,
        ts_ms: wall.unwrap_or(i64::from(ct.t) * 1000),
        before,
        after: if op == Op::Delete { None } else { after },
        updated,
        removed,
    }))
}

/// Read a snapshot row (a document as `find` returned it) into a message; see [`row`].
pub fn raw_row<'a>(doc: &'a RawDocument, at: &RowSource<'a>, mark: SnapshotMark) -> Result<Raw<'a>, EventError> {
    let id = raw_to_bson(field(doc.get("_id"), "_id")?);
    Ok(Raw {
        id: format!("r:{}:{}:{}", at.snapshot_id, at.collection, id.clone().into_canonical_extjson()),
        op: Op::Read,
        key: key_string(&id),
        db: at.db,
        collection: at.collection,
        cluster_time: at.read_at,
        snapshot: mark,
        ts_ms: at.ts_ms,
        before: None,
        after: Some(doc),
        updated: None,
        removed: None,
    })
}

impl Raw<'_> {
    /// The message's envelope.
    pub fn envelope(&self) -> Envelope {
        Envelope {
            id: self.id.clone(),
            kind: self.op.code(),
            db: self.db.to_string(),
            collection: self.collection.to_string(),
            key: Some(self.key.clone()),
            ts_ms: self.ts_ms,
        }
    }

    /// `op`, database, collection and key, to name the message in a log line (no values).
    pub fn describe(&self) -> String {
        format!("`{}` of {}.{} key {}", self.op.code(), self.db, self.collection, self.key)
    }

    /// Whether `omit` would leave anything out of this message.
    pub fn has(&self, omit: Omit) -> bool {
        (omit.before && self.before.is_some())
            || (omit.delta && (self.updated.is_some() || self.removed.is_some()))
            || (omit.after && self.after.is_some())
    }

    /// The JSON body, field for field what `ChangeEvent::to_json` writes, without the fields
    /// `redact` names and the parts `omit` leaves out (listed in `truncated`).
    pub fn body(&self, redact: &Redaction, omit: Omit) -> Result<Vec<u8>, EventError> {
        let bad = |e: String| EventError::Bson(e);
        let paths = redact.paths_of(self.collection);
        let mut out = Vec::with_capacity(256 + self.after.map_or(0, |d| d.as_bytes().len() * 2));
        out.extend_from_slice(b"{\"id\":");
        json::string(&mut out, &self.id);
        out.extend_from_slice(b",\"op\":\"");
        out.extend_from_slice(self.op.code().as_bytes());
        out.extend_from_slice(b"\",\"key\":");
        json::string(&mut out, &self.key);
        let doc = |out: &mut Vec<u8>, name: &[u8], d: Option<&RawDocument>| -> Result<(), EventError> {
            out.extend_from_slice(name);
            match d {
                Some(d) => json::document(out, d, &paths).map_err(bad),
                None => {
                    out.extend_from_slice(b"null");
                    Ok(())
                }
            }
        };
        doc(&mut out, b",\"before\":", self.before.filter(|_| !omit.before))?;
        doc(&mut out, b",\"after\":", self.after.filter(|_| !omit.after))?;
        out.extend_from_slice(b",\"updated_fields\":");
        match self.updated.filter(|_| !omit.delta) {
            Some(u) => self.updated_fields(&mut out, u, &paths).map_err(bad)?,
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"removed_fields\":");
        match self.removed.filter(|_| !omit.delta) {
            Some(r) => {
                out.push(b'[');
                let mut first = true;
                for name in r.into_iter() {
                    let Ok(RawBsonRef::String(name)) = name else { continue };
                    if paths.iter().any(|p| segments(name).starts_with(p)) {
                        continue;
                    }
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    json::string(&mut out, name);
                }
                out.push(b']');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"source\":{\"db\":");
        json::string(&mut out, self.db);
        out.extend_from_slice(b",\"collection\":");
        json::string(&mut out, self.collection);
        let ClusterTime { t, i } = self.cluster_time;
        let mark = match self.snapshot {
            SnapshotMark::True => "true",
            SnapshotMark::Last => "last",
            SnapshotMark::False => "false",
        };
        out.extend_from_slice(
            format!(",\"cluster_time\":{{\"t\":{t},\"i\":{i}}},\"snapshot\":\"{mark}\"}},\"ts_ms\":{}", self.ts_ms)
                .as_bytes(),
        );
        if omit != Omit::default() {
            out.extend_from_slice(b",\"truncated\":");
            let _ = serde_json::to_writer(&mut out, &omit.names());
        }
        out.push(b'}');
        Ok(out)
    }

    /// An update's `updatedFields`, whose keys are dotted paths: a key at or inside an
    /// excluded field goes; a key above one is written without it.
    fn updated_fields(&self, out: &mut Vec<u8>, u: &RawDocument, paths: &[&[String]]) -> Result<(), String> {
        if paths.is_empty() {
            return json::document(out, u, paths);
        }
        out.push(b'{');
        let mut first = true;
        for field in u.iter() {
            let (key, value) = field.map_err(|e| e.to_string())?;
            let segs = segments(key);
            if paths.iter().any(|p| segs.starts_with(p)) {
                continue;
            }
            let inside: Vec<&[String]> =
                paths.iter().filter(|p| p.starts_with(&segs)).map(|p| &p[segs.len()..]).collect();
            if !first {
                out.push(b',');
            }
            first = false;
            json::string(out, key);
            out.push(b':');
            json::value_into(out, value, &inside)?;
        }
        out.push(b'}');
        Ok(())
    }
}

/// The field names of a dotted update path, array indexes left out.
fn segments(key: &str) -> Vec<String> {
    key.split('.').filter(|s| s.parse::<usize>().is_err()).map(String::from).collect()
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
    fn dates_always_have_milliseconds() {
        let at = |ms| bson_to_json(&Bson::DateTime(mongodb::bson::DateTime::from_millis(ms)));
        assert_eq!(at(1_700_000_000_100), "2023-11-14T22:13:20.100Z");
        assert_eq!(at(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(at(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn keys() {
        assert_eq!(key_string(&Bson::Int32(7)), "7");
        assert_eq!(key_string(&Bson::String("k".into())), "k");
        assert_eq!(key_string(&Bson::Document(doc! {"a": 1})), r#"{"a":1}"#);
    }

    #[test]
    fn rows_have_stable_ids_that_keep_the_id_type() {
        let at =
            RowSource { snapshot_id: "s1", db: "d", collection: "c", read_at: ClusterTime { t: 9, i: 1 }, ts_ms: 5 };
        let none = Redaction::default();
        let int = row(&doc! {"_id": 7, "v": 1}, &at, SnapshotMark::True, &none).unwrap();
        let text = row(&doc! {"_id": "7", "v": 1}, &at, SnapshotMark::Last, &none).unwrap();
        assert_eq!(int.key, text.key, "both keys read 7");
        assert_ne!(int.id, text.id, "but the ids tell the types apart");
        assert_eq!(int.id, row(&doc! {"_id": 7, "v": 2}, &at, SnapshotMark::True, &none).unwrap().id, "stable");
        assert_eq!((int.op, int.before.is_none()), (Op::Read, true));
        assert_eq!(text.source.snapshot, SnapshotMark::Last);
        assert_eq!(int.after.unwrap()["v"], 1);
        assert!(row(&doc! {"v": 1}, &at, SnapshotMark::True, &none).is_err());
    }

    #[test]
    fn redaction_removes_fields_everywhere_they_can_hide() {
        let r = Redaction::parse("users.password, *.card.number").unwrap();
        let mut doc = doc_to_json(&doc! {
            "_id": 1, "password": "s3cret", "name": "a",
            "card": {"number": "4111", "exp": "12/30"},
            "cards": [{"card": {"number": "1"}}],
            "payments": [{"x": 1}],
            "card.number": "literal",
        });
        r.document("users", &mut doc);
        let text = Value::Object(doc.clone()).to_string();
        assert!(!text.contains("s3cret") && !text.contains("4111") && !text.contains("literal"), "{text}");
        assert_eq!(doc["card"], serde_json::json!({"exp": "12/30"}));
        assert_eq!(doc.keys().cloned().collect::<Vec<_>>(), ["_id", "name", "card", "cards", "payments"], "order kept");
        // Another collection keeps its `password`; `*.card.number` still goes.
        let mut other = doc_to_json(&doc! {"password": "p", "card": {"number": "4111"}});
        r.document("orders", &mut other);
        assert_eq!(Value::Object(other), serde_json::json!({"password": "p", "card": {}}));

        let mut updated = doc_to_json(
            &doc! {"password": "x", "card.number": "1", "card": {"number": "2", "exp": "e"}, "items.0.card.number": "3", "name": "b"},
        );
        let mut removed = vec!["password".to_string(), "card.number".to_string(), "other".to_string()];
        r.update("users", Some(&mut updated), Some(&mut removed));
        // `items.0.card.number` is `items.card.number`, another field.
        assert_eq!(
            Value::Object(updated),
            serde_json::json!({"card": {"exp": "e"}, "items.0.card.number": "3", "name": "b"})
        );
        assert_eq!(removed, ["other"]);
    }

    #[test]
    fn redaction_settings_are_checked() {
        assert!(Redaction::parse("").unwrap().is_empty());
        assert!(Redaction::parse("password").unwrap_err().contains("collection.field"));
        assert!(Redaction::parse("users._id").unwrap_err().contains("_id"));
        assert!(Redaction::parse("users..x").unwrap_err().contains("empty"));
    }

    /// Change stream events as a server sends them.
    fn events() -> Vec<Document> {
        let oid = mongodb::bson::oid::ObjectId::parse_str("6b01dfc17594185f823048ac").unwrap();
        let base = |op: &str| {
            doc! {
                "_id": {"_data": format!("8263A1B2C30000000{op}")},
                "operationType": op,
                "clusterTime": mongodb::bson::Timestamp { time: 1_700_000_000, increment: 3 },
                "wallTime": mongodb::bson::DateTime::from_millis(1_700_000_000_123),
                "ns": {"db": "shop", "coll": "users"},
                "documentKey": {"_id": oid},
            }
        };
        let full =
            doc! {"_id": oid, "name": "a\"b", "password": "pw", "card": {"number": "4111", "exp": "x"}, "n": 1.5};
        let mut insert = base("insert");
        insert.insert("fullDocument", full.clone());
        let mut update = base("update");
        update.insert("fullDocument", full.clone());
        update.insert("fullDocumentBeforeChange", doc! {"_id": oid, "password": "old", "n": 1});
        update.insert(
            "updateDescription",
            doc! {"updatedFields": {"n": 1.5, "password": "pw", "card.number": "4111", "card": {"number": "1", "exp": "y"}}, "removedFields": ["gone", "password"], "truncatedArrays": []},
        );
        let mut replace = base("replace");
        replace.insert("fullDocument", full);
        let mut delete = base("delete");
        delete.insert("fullDocumentBeforeChange", doc! {"_id": oid, "password": "pw"});
        let mut lookup_missed = base("update");
        lookup_missed.insert("fullDocument", Bson::Null);
        lookup_missed.insert("updateDescription", doc! {"updatedFields": {}, "removedFields": []});
        vec![insert, update, replace, delete, lookup_missed]
    }

    #[test]
    fn raw_messages_are_the_value_route_byte_for_byte() {
        for redact in [Redaction::default(), Redaction::parse("users.password,*.card.number").unwrap()] {
            for ev in events() {
                let raw = mongodb::bson::RawDocumentBuf::from_document(&ev).unwrap();
                let typed: ChangeStreamEvent<Document> = mongodb::bson::from_document(ev.clone()).unwrap();
                let want = change(&typed, &redact).unwrap().unwrap().to_json();
                let got = raw_change(&raw).unwrap().unwrap().body(&redact, Omit::default()).unwrap();
                assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(want).unwrap(), "{ev}");
            }
        }
        let drop: Document = doc! {"_id": {"_data": "82"}, "operationType": "drop", "clusterTime": mongodb::bson::Timestamp { time: 1, increment: 1 }};
        assert!(raw_change(&mongodb::bson::RawDocumentBuf::from_document(&drop).unwrap()).unwrap().is_none());
        let at =
            RowSource { snapshot_id: "s", db: "d", collection: "users", read_at: ClusterTime { t: 9, i: 1 }, ts_ms: 5 };
        let d = doc! {"_id": 7, "password": "x", "v": [1, {"card": {"number": 2}}]};
        let redact = Redaction::parse("users.password").unwrap();
        let raw = mongodb::bson::RawDocumentBuf::from_document(&d).unwrap();
        let got = raw_row(&raw, &at, SnapshotMark::Last).unwrap().body(&redact, Omit::default()).unwrap();
        assert_eq!(got, row(&d, &at, SnapshotMark::Last, &redact).unwrap().to_json());
    }

    #[test]
    fn truncation_lists_what_it_left_out() {
        let ev = &events()[1];
        let raw = mongodb::bson::RawDocumentBuf::from_document(ev).unwrap();
        let msg = raw_change(&raw).unwrap().unwrap();
        let omit = Omit { before: true, delta: true, after: false };
        assert!(msg.has(omit));
        let v: Value = serde_json::from_slice(&msg.body(&Redaction::default(), omit).unwrap()).unwrap();
        assert_eq!(v["truncated"], serde_json::json!(["before", "updated_fields"]));
        assert_eq!(
            (v["before"].is_null(), v["updated_fields"].is_null(), v["after"]["n"].as_f64()),
            (true, true, Some(1.5))
        );
        let back: ChangeEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back.truncated, Some(vec!["before".to_string(), "updated_fields".to_string()]));
    }
}
