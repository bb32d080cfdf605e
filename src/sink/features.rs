//! Which fields a model reads and how: the typed feature specs of `SINK_FEATURES` and of the
//! models file (`age`, `plan:category`, `city:hash`, `signup:date`, `tags:count`), and the
//! capture of every wanted field of a record, by dotted path: in one streaming pass over the
//! raw JSON of `after` (the hot path: no document is built, only the wanted fields are read)
//! or from a parsed document (for `/predict`). Both give the same [`Capture`]; turning it into
//! model columns is `sink::encoder`'s.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ml::Column;

/// How a feature's value becomes model columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureType {
    /// A number (the default): numbers, booleans as 0/1, numeric strings parsed, missing or
    /// null as 0. One numeric column.
    Numeric,
    /// A category: each distinct value (string, number, bool; missing and null are one more)
    /// gets an id in order of first appearance. One nominal column.
    Category,
    /// A category through the hashing trick: the value's bucket among the model's
    /// `hash_buckets`. One nominal column whose categories are the buckets.
    Hash,
    /// A date: the bridge's ISO strings (`2023-11-14T22:13:20.123Z`), `{"$date": ...}`, or a
    /// number of ms since the epoch. Three numeric columns: epoch seconds, hour of day and day
    /// of week (Monday 0), all UTC; missing or null as 0.
    Date,
    /// The length of an array or of a string (in characters); missing or null as 0. One
    /// numeric column.
    Count,
}

impl FeatureType {
    /// The name used in feature specs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Numeric => "numeric",
            Self::Category => "category",
            Self::Hash => "hash",
            Self::Date => "date",
            Self::Count => "count",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "numeric" => Self::Numeric,
            "category" => Self::Category,
            "hash" => Self::Hash,
            "date" => Self::Date,
            "count" => Self::Count,
            _ => return None,
        })
    }
}

/// One feature: a field path, its type, and whether a missing-indicator column (1 when the
/// field is missing or null) follows its columns. Written `path[:type][?]`, e.g. `age`,
/// `plan:category`, `signup:date?`; it serialises as that text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct FeatureSpec {
    /// The field, by dotted path (a literal key containing dots wins over the nested path).
    pub path: String,
    /// How it becomes columns.
    pub ty: FeatureType,
    /// An extra numeric column says whether the field was missing or null.
    pub missing_indicator: bool,
}

impl FeatureSpec {
    /// Parse `path[:type][?]`. A suffix after the last `:` that is not a type is an error
    /// (write `a:b:numeric` for a field named `a:b`). `?` adds a missing indicator, for the
    /// types whose missing value is a number (`numeric`, `date`, `count`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (path, ty, indicator) = match text.rsplit_once(':') {
            Some((path, ty)) => {
                let (ty_name, indicator) = match ty.strip_suffix('?') {
                    Some(t) => (t, true),
                    None => (ty, false),
                };
                let ty = FeatureType::parse(ty_name).ok_or_else(|| {
                    format!("`{text}`: unknown feature type `{ty_name}` (use numeric, category, hash, date or count)")
                })?;
                (path, ty, indicator)
            }
            None => (text, FeatureType::Numeric, false),
        };
        if path.is_empty() {
            return Err(format!("`{text}`: the field path is empty"));
        }
        if indicator && matches!(ty, FeatureType::Category | FeatureType::Hash) {
            return Err(format!(
                "`{text}`: `?` (missing indicator) applies to numeric, date and count features; a missing {} is a value of its own",
                ty.name()
            ));
        }
        Ok(Self { path: path.to_string(), ty, missing_indicator: indicator })
    }

    /// The model columns this feature gives, in order.
    pub fn columns(&self) -> Vec<Column> {
        let p = &self.path;
        let mut out = match self.ty {
            FeatureType::Numeric => vec![Column::numeric(p.clone())],
            FeatureType::Category | FeatureType::Hash => vec![Column::nominal(p.clone())],
            FeatureType::Date => vec![
                Column::numeric(format!("{p}:epoch_s")),
                Column::numeric(format!("{p}:hour")),
                Column::numeric(format!("{p}:weekday")),
            ],
            FeatureType::Count => vec![Column::numeric(format!("{p}:count"))],
        };
        if self.missing_indicator {
            out.push(Column::numeric(format!("{p}:missing")));
        }
        out
    }

    /// True when a field missing from a `/predict` body has a meaning of its own (a category
    /// or hash value, or a missing indicator), rather than being a likely client mistake.
    pub fn may_be_missing(&self) -> bool {
        self.missing_indicator || matches!(self.ty, FeatureType::Category | FeatureType::Hash)
    }
}

impl fmt::Display for FeatureSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        if self.ty != FeatureType::Numeric || self.missing_indicator || self.path.contains(':') {
            write!(f, ":{}", self.ty.name())?;
        }
        if self.missing_indicator {
            f.write_str("?")?;
        }
        Ok(())
    }
}

impl From<FeatureSpec> for String {
    fn from(f: FeatureSpec) -> Self {
        f.to_string()
    }
}

impl TryFrom<String> for FeatureSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

/// Look up `path` in `doc`: a literal key first (keys may contain dots), then nested fields.
pub fn lookup<'a>(doc: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = doc.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut cur = doc.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

/// A field's value as captured: scalars as they are, strings in the capture's text buffer,
/// arrays by their length. Conversions by type read it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Raw {
    /// The field is absent.
    #[default]
    Missing,
    /// JSON null.
    Null,
    /// A JSON bool.
    Bool(bool),
    /// A JSON integer that fits `i64`.
    Int(i64),
    /// A JSON integer above `i64::MAX`.
    UInt(u64),
    /// Any other JSON number.
    Float(f64),
    /// A string: a byte range of [`Capture::text`].
    Str {
        /// Start of the string.
        start: u32,
        /// End of the string.
        end: u32,
    },
    /// An array, with its length.
    Array(usize),
    /// A date as relaxed Extended JSON (`{"$date": {"$numberLong": "..."}}`, the bridge's form
    /// outside years 0-9999): ms since the epoch.
    DateMs(i64),
    /// Any other object.
    Object,
}

impl Raw {
    /// The JSON kind, for messages.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Null => "null",
            Self::Bool(_) => "a bool",
            Self::Int(_) | Self::UInt(_) | Self::Float(_) => "a number",
            Self::Str { .. } => "a string",
            Self::Array(_) => "an array",
            Self::DateMs(_) | Self::Object => "an object",
        }
    }

    /// Missing or null.
    pub fn is_absent(self) -> bool {
        matches!(self, Self::Missing | Self::Null)
    }

    fn from_value(v: &Value, text: &mut String) -> Self {
        match v {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Self::Int(i),
                (None, Some(u)) => Self::UInt(u),
                _ => Self::Float(n.as_f64().unwrap_or(0.0)),
            },
            Value::String(s) => push_str(text, s),
            Value::Array(a) => Self::Array(a.len()),
            Value::Object(o) => match (o.len(), o.get("$date")) {
                (1, Some(d)) => extjson_date(d).map_or(Self::Object, Self::DateMs),
                _ => Self::Object,
            },
        }
    }
}

/// The ms of a relaxed Extended JSON `$date` value's content, if it is one.
fn extjson_date(d: &Value) -> Option<i64> {
    match d {
        Value::Number(n) => n.as_i64(),
        Value::Object(o) if o.len() == 1 => o.get("$numberLong")?.as_str()?.parse().ok(),
        _ => None,
    }
}

fn push_str(text: &mut String, s: &str) -> Raw {
    let start = text.len() as u32;
    text.push_str(s);
    Raw::Str { start, end: text.len() as u32 }
}

/// The captured fields of one document, one slot per path of the [`FieldPlan`]. Reused from
/// one document to the next, so capturing does not allocate once warm.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    slots: Vec<Raw>,
    /// Set from a literal dotted key, which wins over the nested path.
    literal: Vec<bool>,
    text: String,
}

impl Capture {
    fn reset(&mut self, n: usize) {
        self.slots.clear();
        self.slots.resize(n, Raw::Missing);
        self.literal.clear();
        self.literal.resize(n, false);
        self.text.clear();
    }

    /// The value of slot `i`.
    #[inline]
    pub fn get(&self, i: usize) -> Raw {
        self.slots[i]
    }

    /// The text of a [`Raw::Str`] (empty for anything else).
    #[inline]
    pub fn str(&self, raw: Raw) -> &str {
        match raw {
            Raw::Str { start, end } => &self.text[start as usize..end as usize],
            _ => "",
        }
    }

    /// Slot `i` as a label: `None` when missing or null. Arrays and objects come back empty,
    /// which is enough for the model to say why it refuses them.
    pub fn label(&self, i: usize) -> Option<Value> {
        let raw = self.slots[i];
        Some(match raw {
            Raw::Missing | Raw::Null => return None,
            Raw::Bool(b) => Value::Bool(b),
            Raw::Int(n) => Value::from(n),
            Raw::UInt(n) => Value::from(n),
            Raw::Float(x) => Value::from(x),
            Raw::Str { .. } => Value::String(self.str(raw).to_string()),
            Raw::Array(_) => Value::Array(Vec::new()),
            Raw::DateMs(_) | Raw::Object => Value::Object(Map::new()),
        })
    }

    fn store(&mut self, slot: usize, literal: bool, raw: Raw) {
        if literal || !self.literal[slot] {
            self.slots[slot] = raw;
            self.literal[slot] |= literal;
        }
    }
}

/// The wanted fields as a tree of path segments, built once from the settings; every path
/// has a slot in a [`Capture`].
#[derive(Debug, Clone, Default)]
pub struct FieldPlan {
    root: Node,
    paths: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// Few children, so a linear scan beats hashing.
    children: Vec<(String, Node)>,
    slot: Option<usize>,
}

impl Node {
    /// The child named `key`, trying the child after the last one found first: documents of a
    /// collection tend to list their fields in one order, so a walk mostly hits at once
    /// instead of comparing the key with every child before it.
    fn child_after(&self, key: &str, next: &mut usize) -> Option<&Node> {
        let i = match self.children.get(*next) {
            Some((k, _)) if k == key => *next,
            _ => self.children.iter().position(|(k, _)| k == key)?,
        };
        *next = i + 1;
        Some(&self.children[i].1)
    }

    fn child_mut(&mut self, key: &str) -> &mut Node {
        if let Some(i) = self.children.iter().position(|(k, _)| k == key) {
            return &mut self.children[i].1;
        }
        self.children.push((key.to_string(), Node::default()));
        &mut self.children.last_mut().expect("just pushed").1
    }
}

impl FieldPlan {
    /// A plan capturing `paths` (duplicates share a slot).
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a str>) -> Self {
        let mut plan = Self::default();
        for p in paths {
            if plan.slot(p).is_some() {
                continue;
            }
            let i = plan.paths.len();
            plan.paths.push(p.to_string());
            // A literal key that contains dots, and the nested path it also names.
            plan.root.child_mut(p).slot = Some(i);
            if p.contains('.') {
                let mut node = &mut plan.root;
                for seg in p.split('.') {
                    node = node.child_mut(seg);
                }
                node.slot = Some(i);
            }
        }
        plan
    }

    /// The slot of `path`, if the plan captures it.
    pub fn slot(&self, path: &str) -> Option<usize> {
        self.paths.iter().position(|p| p == path)
    }

    /// Capture the wanted fields of the raw JSON object `doc` into `cap`. Fails only when
    /// `doc` is not valid JSON.
    pub fn capture(&self, doc: &str, cap: &mut Capture) -> Result<(), String> {
        cap.reset(self.paths.len());
        let mut de = serde_json::Deserializer::from_str(doc);
        DocSeed { node: &self.root, root: true, cap }
            .deserialize(&mut de)
            .map_err(|e| format!("`after` is not valid JSON: {e}"))
    }

    /// Capture the wanted fields of a parsed document, with the same rules.
    pub fn capture_value(&self, doc: &Map<String, Value>, cap: &mut Capture) {
        cap.reset(self.paths.len());
        for (i, p) in self.paths.iter().enumerate() {
            if let Some(v) = lookup(doc, p) {
                cap.slots[i] = Raw::from_value(v, &mut cap.text);
            }
        }
    }
}

struct DocSeed<'p, 'c> {
    node: &'p Node,
    root: bool,
    cap: &'c mut Capture,
}

impl<'de> DeserializeSeed<'de> for DocSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DocSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut next = 0;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let Some(child) = self.node.child_after(&key, &mut next) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let literal = self.root && key.contains('.');
            let Some(slot) = child.slot else {
                map.next_value_seed(DocSeed { node: child, root: false, cap: &mut *self.cap })?;
                continue;
            };
            // A wanted field that also has wanted children ("a" and "a.b") is read whole; the
            // children are not (they would make "a" an object, which no type reads).
            let raw = if child.children.is_empty() {
                map.next_value_seed(RawSeed { text: &mut self.cap.text })?
            } else {
                Raw::from_value(&map.next_value::<Value>()?, &mut self.cap.text)
            };
            self.cap.store(slot, literal, raw);
        }
        Ok(())
    }

    // Anything but an object where a nested path expects one: the path is missing.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Reads one value into a [`Raw`], copying a string into the capture's text buffer.
struct RawSeed<'t> {
    text: &'t mut String,
}

impl<'de> DeserializeSeed<'de> for RawSeed<'_> {
    type Value = Raw;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RawSeed<'_> {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Raw, E> {
        Ok(Raw::Int(n))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Raw, E> {
        Ok(i64::try_from(n).map_or(Raw::UInt(n), Raw::Int))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Raw, E> {
        Ok(Raw::Float(n))
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_str<E>(self, s: &str) -> Result<Raw, E> {
        Ok(push_str(self.text, s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut n = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            n += 1;
        }
        Ok(Raw::Array(n))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut raw = Raw::Object;
        let mut first = true;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if first && key == "$date" {
                raw = extjson_date(&map.next_value::<Value>()?).map_or(Raw::Object, Raw::DateMs);
            } else {
                map.next_value::<IgnoredAny>()?;
                raw = Raw::Object;
            }
            first = false;
        }
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn specs(list: &[&str]) -> Vec<FeatureSpec> {
        list.iter().map(|s| FeatureSpec::parse(s).unwrap()).collect()
    }

    #[test]
    fn feature_specs_parse_and_print_back() {
        let f =
            specs(&["age", "plan:category", "city:hash", "signup:date?", "tags:count", "a:b:numeric", "x:numeric?"]);
        assert_eq!(f[0], FeatureSpec { path: "age".into(), ty: FeatureType::Numeric, missing_indicator: false });
        assert_eq!((f[3].ty, f[3].missing_indicator), (FeatureType::Date, true));
        assert_eq!(f[5].path, "a:b");
        for (spec, text) in
            f.iter().zip(["age", "plan:category", "city:hash", "signup:date?", "tags:count", "a:b:numeric"])
        {
            assert_eq!(spec.to_string(), text);
            assert_eq!(&FeatureSpec::parse(text).unwrap(), spec);
        }
        assert!(FeatureSpec::parse("plan:categorical").unwrap_err().contains("unknown feature type `categorical`"));
        assert!(FeatureSpec::parse("plan:category?").unwrap_err().contains("missing indicator"));
        assert!(FeatureSpec::parse(":date").unwrap_err().contains("empty"));
        let cols: Vec<String> = f[3].columns().into_iter().map(|c| c.name).collect();
        assert_eq!(cols, ["signup:epoch_s", "signup:hour", "signup:weekday", "signup:missing"]);
    }

    #[test]
    fn the_streaming_capture_agrees_with_the_parsed_one() {
        let docs = [
            json!({"a": {"b": 2, "c": [1]}, "a.c": 3, "t": true, "n": null, "s": "é\"1.5", "label": "x", "other": {"deep": [1, {"z": 2}]}}),
            json!({"a": 5, "t": false, "label": null, "s": 18446744073709551615u64}),
            json!({"a": {"b": {"nested": 1}}, "s": -3, "t": 1.0}),
            json!({"t": "abc", "label": 1, "s": {"$date": {"$numberLong": "-62198755200000"}}}),
            json!({"s": [1, 2], "label": {"o": 1}, "a": {"b": {"$date": 5, "x": 1}}}),
        ];
        let paths = ["a.b", "a.c", "t", "n", "missing", "s", "label"];
        let plan = FieldPlan::new(paths);
        let (mut streamed, mut parsed) = (Capture::default(), Capture::default());
        for d in docs {
            plan.capture(&d.to_string(), &mut streamed).unwrap();
            plan.capture_value(d.as_object().unwrap(), &mut parsed);
            for (i, path) in paths.iter().enumerate() {
                let (s, p) = (streamed.get(i), parsed.get(i));
                assert_eq!((s, streamed.str(s)), (p, parsed.str(p)), "{path} in {d}");
            }
        }
        plan.capture(r#"{"a.c": 3, "a": {"c": 9}}"#, &mut streamed).unwrap();
        assert_eq!(streamed.get(1), Raw::Int(3), "the literal dotted key wins");
        assert!(plan.capture("{nope", &mut streamed).unwrap_err().contains("not valid JSON"));
    }
}
