//! Reading features and the label out of a record, by dotted path.

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
}
