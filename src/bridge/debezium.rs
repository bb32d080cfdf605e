//! `CDC_FORMAT=debezium`: each change as Debezium's MongoDB connector writes it, so Debezium
//! consumers read the bridge unchanged. `before`, `after` and `updateDescription.updatedFields`
//! are strings of (relaxed) MongoDB Extended JSON, so `_id` keeps its type (`{"$oid": ..}`);
//! `source` carries `version`, `connector` (`mongodb`), `name` (`CDC_NAME`), `ts_ms` and `ord`
//! (the cluster time), `snapshot`, `db` and `collection`. With `CDC_DEBEZIUM_SCHEMAS=true`
//! the value is wrapped as `{"schema": .., "payload": ..}`, as Kafka Connect's JSON converter
//! writes it with schemas on. The AMQP envelope (message id, type, `key` header, routing key)
//! is the same as for our own format: the `key` header carries the key a delete has nowhere
//! else, as Debezium puts it in the record key.

use mongodb::bson::{Bson, Document, RawDocument};
use serde_json::{Map, Value, json};

use super::encode::{EventError, Omit, Raw, Redaction};
use crate::event::SnapshotMark;

/// How the Debezium envelope is written.
#[derive(Debug, Clone)]
pub struct Options {
    /// `source.name`: the logical name of the source (`CDC_NAME`).
    pub name: String,
    /// Wrap each value with its schema.
    pub schemas: bool,
}

/// The version `source.version` names.
const VERSION: &str = concat!("mongo-cdc-", env!("CARGO_PKG_VERSION"));

fn extended(doc: &RawDocument) -> Result<Map<String, Value>, EventError> {
    let doc = Document::try_from(doc).map_err(|e| EventError::Bson(e.to_string()))?;
    match Bson::Document(doc).into_relaxed_extjson() {
        Value::Object(m) => Ok(m),
        _ => Err(EventError::Bson("a document did not map to an object".into())),
    }
}

/// The message body of `msg` in Debezium's MongoDB envelope, without the fields `redact`
/// names and the parts `omit` leaves out.
pub fn body(msg: &Raw<'_>, redact: &Redaction, omit: Omit, o: &Options) -> Result<Vec<u8>, EventError> {
    let coll = msg.collection;
    let doc = |d: Option<&RawDocument>, leave_out: bool| -> Result<Value, EventError> {
        match d.filter(|_| !leave_out) {
            None => Ok(Value::Null),
            Some(d) => {
                let mut m = extended(d)?;
                redact.document(coll, &mut m);
                Ok(Value::String(Value::Object(m).to_string()))
            }
        }
    };
    let before = doc(msg.before, omit.before)?;
    let after = doc(msg.after, omit.after)?;
    let update = match (msg.updated, msg.removed) {
        (None, None) => Value::Null,
        _ if omit.delta => Value::Null,
        (updated, removed) => {
            let mut updated = updated.map(extended).transpose()?;
            let mut removed: Option<Vec<String>> =
                removed.map(|r| r.into_iter().filter_map(|v| v.ok()?.as_str().map(String::from)).collect());
            redact.update(coll, updated.as_mut(), removed.as_mut());
            json!({
                "removedFields": removed.filter(|r| !r.is_empty()),
                "updatedFields": updated.map(|u| Value::Object(u).to_string()),
                "truncatedArrays": null,
            })
        }
    };
    let snapshot = match msg.snapshot {
        SnapshotMark::True => "true",
        SnapshotMark::Last => "last",
        SnapshotMark::False => "false",
    };
    let payload = json!({
        "before": before,
        "after": after,
        "updateDescription": update,
        "source": {
            "version": VERSION,
            "connector": "mongodb",
            "name": o.name,
            "ts_ms": i64::from(msg.cluster_time.t) * 1000,
            "snapshot": snapshot,
            "db": msg.db,
            "sequence": null,
            "collection": coll,
            "ord": msg.cluster_time.i,
            "lsid": null,
            "txnNumber": null,
            "wallTime": msg.ts_ms,
        },
        "op": msg.op.code(),
        "ts_ms": msg.ts_ms,
        "transaction": null,
    });
    let value = if o.schemas { json!({"schema": schema(o, msg.db, coll), "payload": payload}) } else { payload };
    Ok(serde_json::to_vec(&value).expect("JSON values serialise"))
}

/// The Kafka Connect schema of the envelope, as Debezium's MongoDB connector declares it.
fn schema(o: &Options, db: &str, coll: &str) -> Value {
    let field = |name: &str, ty: &str, optional: bool| json!({"type": ty, "optional": optional, "field": name});
    let json_field = |name: &str| json!({"type": "string", "optional": true, "name": "io.debezium.data.Json", "version": 1, "field": name});
    json!({
        "type": "struct",
        "optional": false,
        "name": format!("{}.{db}.{coll}.Envelope", o.name),
        "fields": [
            json_field("before"),
            json_field("after"),
            {"type": "struct", "optional": true, "name": "io.debezium.connector.mongodb.changestream.updatedescription",
             "field": "updateDescription", "fields": [
                {"type": "array", "items": {"type": "string", "optional": false}, "optional": true, "field": "removedFields"},
                json_field("updatedFields"),
                {"type": "array", "items": {"type": "struct", "optional": false, "fields": [
                    field("field", "string", false), field("size", "int32", false)]}, "optional": true, "field": "truncatedArrays"}
             ]},
            {"type": "struct", "optional": false, "name": "io.debezium.connector.mongo.Source", "field": "source", "fields": [
                field("version", "string", false), field("connector", "string", false), field("name", "string", false),
                field("ts_ms", "int64", false),
                {"type": "string", "optional": true, "name": "io.debezium.data.Enum", "version": 1,
                 "parameters": {"allowed": "true,last,false,incremental"}, "default": "false", "field": "snapshot"},
                field("db", "string", false), field("sequence", "string", true), field("collection", "string", false),
                field("ord", "int32", false), field("lsid", "string", true), field("txnNumber", "int64", true),
                field("wallTime", "int64", true)
            ]},
            field("op", "string", true),
            field("ts_ms", "int64", true),
            {"type": "struct", "optional": true, "name": "event.block", "version": 1, "field": "transaction", "fields": [
                field("id", "string", false), field("total_order", "int64", false), field("data_collection_order", "int64", false)
            ]}
        ]
    })
}
