//! Each collection's schema, inferred as the records arrive: every field path seen (objects
//! are walked, dotted; arrays are one field) with the JSON types seen there and how often.
//! After a warm-up of events per collection, a path never seen, or a type never seen at a
//! path, is a schema change: reported once, since it is recorded as it is reported.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Events per collection before a new field or type is a change (`SINK_SCHEMA_WARMUP`).
pub const DEFAULT_SCHEMA_WARMUP: u64 = 1_000;

/// One collection's inferred schema.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CollectionSchema {
    /// Documents inferred from.
    pub events: u64,
    /// Field path -> JSON type -> documents where the field had that type.
    pub fields: BTreeMap<String, BTreeMap<String, u64>>,
}

/// A field seen with a type it never had (or for the first time) after the warm-up.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaChange {
    /// The dotted path.
    pub field: String,
    /// The types it had before (empty for a new field).
    pub was: Vec<String>,
    /// The type seen now.
    pub now: String,
}

/// Every collection's schema (served by `/schema`, checkpointed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Schemas {
    /// By collection.
    pub collections: BTreeMap<String, CollectionSchema>,
}

/// The JSON type's name.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl Schemas {
    /// Infer from one document of `collection`; the changes it brings after `warmup` events.
    pub fn observe(&mut self, collection: &str, doc: &Value, warmup: u64) -> Vec<SchemaChange> {
        let c = match self.collections.get_mut(collection) {
            Some(c) => c,
            None => self.collections.entry(collection.to_string()).or_default(),
        };
        let warm = c.events >= warmup;
        c.events += 1;
        let mut changes = Vec::new();
        if let Value::Object(map) = doc {
            let mut path = String::new();
            walk(map, &mut path, &mut c.fields, warm, &mut changes);
        }
        changes
    }
}

fn walk(
    map: &serde_json::Map<String, Value>,
    path: &mut String,
    fields: &mut BTreeMap<String, BTreeMap<String, u64>>,
    warm: bool,
    changes: &mut Vec<SchemaChange>,
) {
    for (k, v) in map {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(k);
        let t = type_name(v);
        let types = match fields.get_mut(path.as_str()) {
            Some(t) => t,
            None => fields.entry(path.clone()).or_default(),
        };
        match types.get_mut(t) {
            Some(n) => *n += 1,
            None => {
                if warm {
                    changes.push(SchemaChange {
                        field: path.clone(),
                        was: types.keys().cloned().collect(),
                        now: t.into(),
                    });
                }
                types.insert(t.to_string(), 1);
            }
        }
        if let Value::Object(inner) = v {
            walk(inner, path, fields, warm, changes);
        }
        path.truncate(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_change_per_field_and_type() {
        let mut s = Schemas::default();
        for i in 0..3 {
            assert!(s.observe("o", &json!({"a": i, "b": {"c": "x"}}), 3).is_empty());
        }
        let ch = s.observe("o", &json!({"a": "one", "b": {"c": "x", "d": null}}), 3);
        assert_eq!(ch.len(), 2, "{ch:?}");
        assert_eq!(ch[0], SchemaChange { field: "a".into(), was: vec!["number".into()], now: "string".into() });
        assert_eq!(ch[1], SchemaChange { field: "b.d".into(), was: vec![], now: "null".into() });
        assert!(s.observe("o", &json!({"a": "two"}), 3).is_empty(), "the second time is no change");
        assert_eq!(s.collections["o"].fields["a"]["number"], 3);
        assert_eq!(s.collections["o"].events, 5);
    }
}
