//! BSON to JSON text, written straight from raw BSON: the hot path of the bridge. It writes
//! exactly what `encode::bson_to_json` followed by `serde_json` would (the BSON -> JSON table
//! is one), without building a `Document` or a `serde_json::Value` on the way, and leaves out
//! the fields a [`Redaction`](super::encode::Redaction) names as it goes.
//!
//! Written by hand because no crate writes JSON from raw BSON; strings and numbers still go
//! through `serde_json`'s own writer, so escaping and float formatting are the same bytes.

use mongodb::bson::{Bson, RawArray, RawBsonRef, RawDocument};

use crate::bson_json::millis_precision;

/// The excluded paths that still apply below the current position (relative to it).
pub(super) type Paths<'p> = Vec<&'p [String]>;

/// What becomes of a key, given the paths that apply at its level.
enum Below<'p> {
    /// The key is excluded.
    Drop,
    /// The key stays; these paths apply inside its value.
    Keep(Paths<'p>),
}

fn below<'p>(paths: &[&'p [String]], key: &str) -> Below<'p> {
    let mut rest = Vec::new();
    for p in paths {
        let hit = match p.len() {
            0 => false,
            1 => p[0] == key,
            // A literal key that spells the dotted rest of the path (keys may contain dots).
            _ => key.len() == p.iter().map(|s| s.len() + 1).sum::<usize>() - 1 && key == p.join("."),
        };
        if hit {
            return Below::Drop;
        }
        if p.len() > 1 && p[0] == key {
            rest.push(&p[1..]);
        }
    }
    Below::Keep(rest)
}

/// Write a JSON string.
pub(super) fn string(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Write `doc` as a JSON object, without `paths`.
pub(super) fn document(out: &mut Vec<u8>, doc: &RawDocument, paths: &[&[String]]) -> Result<(), String> {
    out.push(b'{');
    let mut first = true;
    for field in doc.iter() {
        let (key, value) = field.map_err(|e| e.to_string())?;
        let inner = if paths.is_empty() {
            Vec::new()
        } else {
            match below(paths, key) {
                Below::Drop => continue,
                Below::Keep(rest) => rest,
            }
        };
        if !first {
            out.push(b',');
        }
        first = false;
        string(out, key);
        out.push(b':');
        value_into(out, value, &inner)?;
    }
    out.push(b'}');
    Ok(())
}

fn array(out: &mut Vec<u8>, items: &RawArray, paths: &[&[String]]) -> Result<(), String> {
    out.push(b'[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Arrays are transparent to paths, as in MongoDB's dotted notation.
        value_into(out, item.map_err(|e| e.to_string())?, paths)?;
    }
    out.push(b']');
    Ok(())
}

/// Write one value (see the module table in `encode`), without `paths` inside it.
pub(super) fn value_into(out: &mut Vec<u8>, value: RawBsonRef<'_>, paths: &[&[String]]) -> Result<(), String> {
    match value {
        RawBsonRef::Document(d) => document(out, d, paths)?,
        RawBsonRef::Array(a) => array(out, a, paths)?,
        RawBsonRef::String(s) => string(out, s),
        RawBsonRef::Int32(n) => {
            let _ = serde_json::to_writer(&mut *out, &n);
        }
        RawBsonRef::Int64(n) => {
            let _ = serde_json::to_writer(&mut *out, &n);
        }
        RawBsonRef::Double(f) if f.is_finite() => {
            let _ = serde_json::to_writer(&mut *out, &f);
        }
        RawBsonRef::Boolean(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        RawBsonRef::Null => out.extend_from_slice(b"null"),
        RawBsonRef::ObjectId(oid) => {
            out.push(b'"');
            out.extend_from_slice(oid.to_hex().as_bytes());
            out.push(b'"');
        }
        RawBsonRef::Decimal128(d) => string(out, &d.to_string()),
        RawBsonRef::DateTime(dt) => match dt.try_to_rfc3339_string() {
            Ok(s) => string(out, &millis_precision(&s)),
            Err(_) => {
                let _ = serde_json::to_writer(&mut *out, &Bson::DateTime(dt).into_relaxed_extjson());
            }
        },
        // The rare types: through the bson crate's relaxed extended JSON, as the table says.
        other => {
            let bson = Bson::try_from(other.to_raw_bson()).map_err(|e| e.to_string())?;
            let _ = serde_json::to_writer(&mut *out, &bson.into_relaxed_extjson());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::encode::{Redaction, doc_to_json};
    use mongodb::bson::{Binary, DateTime, Document, Regex, Timestamp, doc, oid::ObjectId, spec::BinarySubtype};

    fn raw(d: &Document) -> mongodb::bson::RawDocumentBuf {
        mongodb::bson::RawDocumentBuf::from_document(d).unwrap()
    }

    /// The same bytes as the `Value` route, for every type of the table.
    #[test]
    fn writes_what_the_value_route_writes() {
        let oid = ObjectId::parse_str("6b01dfc17594185f823048ac").unwrap();
        let d = doc! {
            "_id": oid,
            "s": "héllo \"q\" \\ \n\t\u{1}✓🚀", "i": 42_i32, "l": 9_007_199_254_740_993_i64, "neg": -5_i64,
            "f": 3.25, "whole": 2.0, "tiny": 1e-300, "nan": f64::NAN, "inf": f64::NEG_INFINITY,
            "t": true, "n": null, "date": DateTime::from_millis(1_700_000_000_100),
            "far": DateTime::from_millis(i64::MAX / 2),
            "dec": Bson::Decimal128("12345.678900".parse().unwrap()),
            "bin": Binary { subtype: BinarySubtype::Generic, bytes: vec![1, 2, 3, 255] },
            "re": Regex { pattern: "^a.c$".into(), options: "xi".into() },
            "ts": Timestamp { time: 1, increment: 2 }, "min": Bson::MinKey, "max": Bson::MaxKey,
            "js": Bson::JavaScriptCode("x".into()), "sym": Bson::Symbol("s".into()), "undef": Bson::Undefined,
            "nested": {"arr": [1, [2, {"deep": oid}], {"x": null}], "e": {}, "a": []},
            "a.b": "dotted", "$x": "dollar",
        };
        let mut out = Vec::new();
        document(&mut out, &raw(&d), &[]).unwrap();
        let want = serde_json::to_vec(&doc_to_json(&d)).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), String::from_utf8(want).unwrap());
    }

    #[test]
    fn leaves_out_what_the_redaction_names_like_the_value_route() {
        let r = Redaction::parse("c.password,*.card.number,c.a.b").unwrap();
        let d = doc! {
            "_id": 1, "password": "s", "card": {"number": "4111", "exp": "x"}, "cards": [{"card": {"number": 1}}],
            "card.number": "literal", "a": {"b": 1, "c": 2, "b.x": 3}, "list": [{"password": 1}],
        };
        let mut want = doc_to_json(&d);
        r.document("c", &mut want);
        let mut out = Vec::new();
        document(&mut out, &raw(&d), &r.paths_of("c")).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&want).unwrap());
    }
}
