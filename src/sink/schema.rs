//! Each collection's schema, inferred as the records arrive: every field path seen (objects
//! are walked, dotted; arrays are one field) with the JSON types seen there and how often.
//! After a warm-up of events per collection, a path never seen, or a type never seen at a
//! path, is a schema change: reported once, since it is recorded as it is reported.

use std::collections::BTreeMap;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

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

impl Schemas {
    /// Infer from one document of `collection` (its JSON text); the changes it brings after
    /// `warmup` events. An `after` that is not an object (or not JSON) counts as an event with
    /// no fields.
    pub fn observe(&mut self, collection: &str, doc: &str, warmup: u64) -> Vec<SchemaChange> {
        let c = match self.collections.get_mut(collection) {
            Some(c) => c,
            None => self.collections.entry(collection.to_string()).or_default(),
        };
        let warm = c.events >= warmup;
        c.events += 1;
        let mut walk = Walk { path: String::new(), fields: &mut c.fields, warm, changes: Vec::new() };
        let mut de = serde_json::Deserializer::from_str(doc);
        // The document's text is walked as it is parsed, never built into a `Value`: a `Value`
        // per change cost the sink a third of its apply time. serde's visitors are the parser
        // here; only the path bookkeeping is ours.
        if DeserializeSeed::deserialize(Fields(&mut walk), &mut de).is_err() {
            return Vec::new();
        }
        walk.changes
    }
}

/// The state of one document's walk.
struct Walk<'a> {
    path: String,
    fields: &'a mut BTreeMap<String, BTreeMap<String, u64>>,
    warm: bool,
    changes: Vec<SchemaChange>,
}

impl Walk<'_> {
    /// The field at `path` has type `t` in this document.
    fn saw(&mut self, t: &'static str) {
        let types = match self.fields.get_mut(self.path.as_str()) {
            Some(t) => t,
            None => self.fields.entry(self.path.clone()).or_default(),
        };
        match types.get_mut(t) {
            Some(n) => *n += 1,
            None => {
                if self.warm {
                    self.changes.push(SchemaChange {
                        field: self.path.clone(),
                        was: types.keys().cloned().collect(),
                        now: t.into(),
                    });
                }
                types.insert(t.to_string(), 1);
            }
        }
    }
}

/// An object's fields, each recorded under its dotted path.
struct Fields<'w, 'a>(&'w mut Walk<'a>);

/// One field's value: its type recorded, an object walked.
struct Field<'w, 'a>(&'w mut Walk<'a>);

/// A key, appended to the path.
struct Key<'w, 'a>(&'w mut Walk<'a>);

impl<'de> DeserializeSeed<'de> for Fields<'_, '_> {
    type Value = ();
    /// A document that is not an object fails here, and `observe` then records no field.
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Fields<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let walk = self.0;
        loop {
            let len = walk.path.len();
            if map.next_key_seed(Key(walk))?.is_none() {
                return Ok(());
            }
            map.next_value_seed(Field(walk))?;
            walk.path.truncate(len);
        }
    }
}

impl<'de> DeserializeSeed<'de> for Key<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E>(self, k: &str) -> Result<(), E> {
        let path = &mut self.0.path;
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(k);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Field<'_, '_> {
    type Value = ();
    /// The value is skimmed as raw text, not parsed: its type is its first byte, and parsing
    /// every number only to learn it is one was a third of this walk. An object's text is
    /// walked again for its fields, so a byte is read once per object it sits in (documents
    /// nest at most [`crate::event::MAX_DEPTH`] levels).
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let raw = <&'de RawValue>::deserialize(d)?;
        let text = raw.get();
        let t = match text.as_bytes().first() {
            Some(b'{') => "object",
            Some(b'[') => "array",
            Some(b'"') => "string",
            Some(b't' | b'f') => "boolean",
            Some(b'n') => "null",
            _ => "number",
        };
        self.0.saw(t);
        if t == "object" {
            let mut de = serde_json::Deserializer::from_str(text);
            Fields(self.0).deserialize(&mut de).map_err(D::Error::custom)?;
        }
        Ok(())
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
            assert!(s.observe("o", &json!({"a": i, "b": {"c": "x"}}).to_string(), 3).is_empty());
        }
        let ch = s.observe("o", &json!({"a": "one", "b": {"c": "x", "d": null}}).to_string(), 3);
        assert_eq!(ch.len(), 2, "{ch:?}");
        assert_eq!(ch[0], SchemaChange { field: "a".into(), was: vec!["number".into()], now: "string".into() });
        assert_eq!(ch[1], SchemaChange { field: "b.d".into(), was: vec![], now: "null".into() });
        assert!(s.observe("o", &json!({"a": "two"}).to_string(), 3).is_empty(), "the second time is no change");
        assert_eq!(s.collections["o"].fields["a"]["number"], 3);
        assert_eq!(s.collections["o"].events, 5);
    }

    #[test]
    fn arrays_are_one_field_and_escaped_keys_are_read() {
        let mut s = Schemas::default();
        s.observe("o", r#"{"a": [1, {"x": 2}], "b\"q": "s", "n": {"m": null}}"#, 10);
        let fields: Vec<&str> = s.collections["o"].fields.keys().map(String::as_str).collect();
        assert_eq!(fields, ["a", "b\"q", "n", "n.m"]);
        assert_eq!(s.collections["o"].fields["a"]["array"], 1);
        assert_eq!(s.collections["o"].fields["n"]["object"], 1);
        s.observe("o", r#"{"t": true, "f": false, "neg": -1.5e3, "s": "-1", "o": {"p": {"q": 0}}}"#, 10);
        let types = &s.collections["o"].fields;
        let only = |f: &str| types[f].keys().map(String::as_str).collect::<Vec<_>>();
        assert_eq!(
            (only("t"), only("f"), only("neg"), only("s")),
            (vec!["boolean"], vec!["boolean"], vec!["number"], vec!["string"])
        );
        assert_eq!((only("o"), only("o.p"), only("o.p.q")), (vec!["object"], vec!["object"], vec!["number"]));
        assert!(s.observe("o", "not json", 10).is_empty());
        assert_eq!(s.collections["o"].events, 3);
    }
}
