//! Reading features and the label out of a record, by dotted path: from a parsed document
//! (for `/predict`), and in one streaming pass over raw JSON (the hot path: no document is
//! built, only the wanted fields are read).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

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

/// One feature as a number: numbers as they are, booleans as 0/1, missing or null as 0, and
/// numeric strings (the bridge's form of Decimal128) parsed. Anything else is an error naming
/// what was found.
pub fn numeric(v: Option<&Value>) -> Result<f64, String> {
    match v {
        None | Some(Value::Null) => Ok(0.0),
        Some(Value::Bool(b)) => Ok(f64::from(u8::from(*b))),
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| format!("number {n} out of range")),
        Some(Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(x),
            _ => Err(format!("string {:?}", truncate(s))),
        },
        Some(Value::Array(_)) => Err("an array".into()),
        Some(Value::Object(_)) => Err("an object".into()),
    }
}

/// Fill `out` with the features of `doc` in order.
pub fn extract_into(doc: &Map<String, Value>, paths: &[String], out: &mut [f64]) -> Result<(), String> {
    for (slot, path) in out.iter_mut().zip(paths) {
        *slot = numeric(lookup(doc, path)).map_err(|found| format!("feature `{path}` is not numeric ({found})"))?;
    }
    Ok(())
}

/// Extract features from a whole JSON value (the body of `/predict`), insisting every feature
/// is present.
pub fn extract_strict(doc: &Value, paths: &[String]) -> Result<Vec<f64>, String> {
    let obj = doc.as_object().ok_or("the body must be a JSON object")?;
    let missing: Vec<&str> = paths.iter().filter(|p| lookup(obj, p).is_none()).map(String::as_str).collect();
    if !missing.is_empty() {
        return Err(format!("missing features: {}", missing.join(", ")));
    }
    let mut x = vec![0.0; paths.len()];
    extract_into(obj, paths, &mut x)?;
    Ok(x)
}

/// The wanted fields as a tree of path segments, built once from the settings.
#[derive(Debug, Clone, Default)]
pub struct FieldPlan {
    root: Node,
    n_features: usize,
    feature_names: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// Few children, so a linear scan beats hashing.
    children: Vec<(String, Node)>,
    feature: Option<usize>,
    label: bool,
}

impl Node {
    fn child(&self, key: &str) -> Option<&Node> {
        self.children.iter().find(|(k, _)| k == key).map(|(_, n)| n)
    }

    fn child_mut(&mut self, key: &str) -> &mut Node {
        if let Some(i) = self.children.iter().position(|(k, _)| k == key) {
            return &mut self.children[i].1;
        }
        self.children.push((key.to_string(), Node::default()));
        &mut self.children.last_mut().expect("just pushed").1
    }

    fn is_leaf(&self) -> bool {
        self.feature.is_some() || self.label
    }
}

impl FieldPlan {
    /// The plan for `features` (in order) and `label`.
    pub fn new(features: &[String], label: &str) -> Self {
        let mut root = Node::default();
        let mut mark = |path: &str, set: &dyn Fn(&mut Node)| {
            // A literal key that contains dots, and the nested path it also names.
            set(root.child_mut(path));
            if path.contains('.') {
                let mut node = &mut root;
                for seg in path.split('.') {
                    node = node.child_mut(seg);
                }
                set(node);
            }
        };
        for (i, f) in features.iter().enumerate() {
            mark(f, &|n| n.feature = Some(i));
        }
        mark(label, &|n| n.label = true);
        Self { root, n_features: features.len(), feature_names: features.to_vec() }
    }

    /// Read the features of the raw JSON object `doc` into `out` (missing or null as 0) and
    /// return the label if present and not null. Same rules as [`numeric`] and [`lookup`].
    pub fn extract(&self, doc: &str, out: &mut [f64]) -> Result<Option<Value>, String> {
        out.iter_mut().for_each(|x| *x = 0.0);
        let mut state = State {
            out,
            literal: vec![false; self.n_features],
            label: None,
            label_literal: false,
            error: None,
            pending: Vec::new(),
        };
        let mut de = serde_json::Deserializer::from_str(doc);
        let seed = DocSeed { plan: self, node: &self.root, root: true, state: &mut state };
        match seed.deserialize(&mut de) {
            Ok(()) => match state.pending.iter().find(|(i, _)| !state.literal[*i]) {
                Some((_, msg)) => Err(msg.clone()),
                None => Ok(state.label.filter(|l| !l.is_null())),
            },
            Err(e) => Err(state.error.take().unwrap_or_else(|| format!("`after` is not valid JSON: {e}"))),
        }
    }
}

struct State<'o> {
    out: &'o mut [f64],
    /// Features set from a literal dotted key, which wins over the nested path.
    literal: Vec<bool>,
    label: Option<Value>,
    label_literal: bool,
    /// The readable reason behind a failed parse (serde's message adds positions).
    error: Option<String>,
    /// Bad values found by nested path: errors unless a literal dotted key overrides them.
    pending: Vec<(usize, String)>,
}

struct DocSeed<'p, 's, 'o> {
    plan: &'p FieldPlan,
    node: &'p Node,
    root: bool,
    state: &'s mut State<'o>,
}

impl<'de> DeserializeSeed<'de> for DocSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DocSeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let Some(child) = self.node.child(&key) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let literal = self.root && key.contains('.');
            if !child.is_leaf() {
                map.next_value_seed(DocSeed { plan: self.plan, node: child, root: false, state: &mut *self.state })?;
                continue;
            }
            // A leaf that also has children ("a" and "a.b" both wanted) needs the whole value.
            let value: Leaf = if child.children.is_empty() && !child.label {
                map.next_value::<Leaf>()?
            } else {
                Leaf::Json(map.next_value::<Value>()?)
            };
            self.apply(child, literal, value).map_err(de::Error::custom)?;
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

impl DocSeed<'_, '_, '_> {
    fn apply(&mut self, node: &Node, literal: bool, value: Leaf) -> Result<(), String> {
        if let Some(i) = node.feature
            && (literal || !self.state.literal[i])
        {
            let found = match &value {
                Leaf::Num(x) => Ok(*x),
                Leaf::Bad(what) => Err(what.clone()),
                Leaf::Json(v) => numeric(Some(v)),
            };
            match found {
                Ok(x) => self.state.out[i] = x,
                Err(found) => {
                    let msg = format!("feature `{}` is not numeric ({found})", self.plan.feature_names[i]);
                    if !literal {
                        self.state.pending.push((i, msg));
                        return Ok(());
                    }
                    self.state.error = Some(msg.clone());
                    return Err(msg);
                }
            }
            self.state.literal[i] |= literal;
        }
        if node.label
            && (literal || !self.state.label_literal)
            && let Leaf::Json(v) = value
        {
            self.state.label = Some(v);
            self.state.label_literal |= literal;
        }
        Ok(())
    }
}

/// A feature value as read in one pass.
enum Leaf {
    Num(f64),
    Bad(String),
    Json(Value),
}

impl<'de> de::Deserialize<'de> for Leaf {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Leaf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Leaf, E> {
                Ok(Leaf::Num(f64::from(u8::from(b))))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Leaf, E> {
                Ok(Leaf::Num(n as f64))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Leaf, E> {
                Ok(Leaf::Num(n as f64))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Leaf, E> {
                Ok(Leaf::Num(n))
            }
            fn visit_unit<E>(self) -> Result<Leaf, E> {
                Ok(Leaf::Num(0.0))
            }
            fn visit_str<E>(self, s: &str) -> Result<Leaf, E> {
                Ok(match numeric(Some(&Value::String(s.to_string()))) {
                    Ok(x) => Leaf::Num(x),
                    Err(found) => Leaf::Bad(found),
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Leaf, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Leaf::Bad("an array".into()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Leaf, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Leaf::Bad("an object".into()))
            }
        }
        d.deserialize_any(V)
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn paths_and_conversions() {
        let d = obj(json!({"a": {"b": 2}, "a.c": 3, "t": true, "n": null, "s": "1.5", "bad": "x"}));
        let paths: Vec<String> = ["a.b", "a.c", "t", "n", "missing", "s"].iter().map(|s| s.to_string()).collect();
        let mut x = [0.0; 6];
        extract_into(&d, &paths, &mut x).unwrap();
        assert_eq!(x, [2.0, 3.0, 1.0, 0.0, 0.0, 1.5]);
        let err = extract_into(&d, &["bad".to_string()], &mut [0.0]).unwrap_err();
        assert!(err.contains("`bad`"), "{err}");
        assert!(extract_strict(&json!({"a": {"b": 1}}), &["a.b".into(), "zz".into()]).unwrap_err().contains("zz"));
    }

    #[test]
    fn the_streaming_plan_agrees_with_lookup() {
        let docs = [
            json!({"a": {"b": 2, "c": [1]}, "a.c": 3, "t": true, "n": null, "s": "1.5", "label": "x", "other": {"deep": [1, {"z": 2}]}}),
            json!({"a": 5, "t": false, "label": null}),
            json!({"a": {"b": {"nested": 1}}}),
            json!({"t": "abc", "label": 1}),
            json!({"s": [1, 2], "label": {"o": 1}}),
        ];
        let paths: Vec<String> = ["a.b", "a.c", "t", "n", "missing", "s"].iter().map(|s| s.to_string()).collect();
        let plan = FieldPlan::new(&paths, "label");
        for d in docs {
            let obj = obj(d.clone());
            let mut want = [0.0; 6];
            let want_result = extract_into(&obj, &paths, &mut want);
            let mut got = [9.0; 6];
            let got_result = plan.extract(&d.to_string(), &mut got);
            match (want_result, got_result) {
                (Ok(()), Ok(label)) => {
                    assert_eq!(got, want, "{d}");
                    assert_eq!(label, lookup(&obj, "label").filter(|v| !v.is_null()).cloned(), "{d}");
                }
                (Err(w), Err(g)) => assert_eq!(g, w, "{d}"),
                (w, g) => panic!("{d}: lookup {w:?}, plan {g:?}"),
            }
        }
    }
}
