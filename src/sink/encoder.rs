//! Turning a [`Capture`] into one model's columns ([`Feature`]s), type by type: numbers,
//! categories through dictionaries (ids in order of first appearance, kept in the checkpoint
//! with the model), hash buckets, dates and lengths; and the fingerprint of what a model
//! learns from a sample.

use std::collections::HashMap;
use std::io::Write as _;

use foldhash::fast::RandomState;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::features::{Capture, FeatureSpec, FeatureType, FieldPlan, Raw};
use crate::ml::Feature;

/// Distinct values one `category` feature keeps apart. Past it, new values share one id:
/// a field with that many values is better read as `hash`.
pub const MAX_CATEGORIES: u32 = 65_536;

/// The values of one `category` feature, in order of first appearance: a value's id is its
/// position. Keyed by the value's JSON text, so `"3"` and `3` are two categories, and missing
/// and null one (`null`). Serialises as the list of values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dictionary {
    values: Vec<Value>,
    ids: HashMap<Box<str>, u32, RandomState>,
}

impl Dictionary {
    /// Number of values seen.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True before any value.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The id of the value whose JSON text is `key`, and whether it is new: a new value gets
    /// the next id, or the shared overflow id once the dictionary is full.
    fn id(&self, key: &str) -> (u32, bool) {
        match self.ids.get(key) {
            Some(&id) => (id, false),
            None => {
                let next = self.values.len() as u32;
                (next.min(MAX_CATEGORIES), next < MAX_CATEGORIES)
            }
        }
    }

    fn insert(&mut self, key: Box<str>) {
        if self.ids.contains_key(&key) || self.values.len() as u32 >= MAX_CATEGORIES {
            return;
        }
        let value = serde_json::from_str(&key).unwrap_or(Value::Null);
        self.ids.insert(key, self.values.len() as u32);
        self.values.push(value);
    }
}

impl Serialize for Dictionary {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.values.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Dictionary {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let values = Vec::<Value>::deserialize(d)?;
        let mut ids = HashMap::with_capacity_and_hasher(values.len(), RandomState::default());
        for (i, v) in values.iter().enumerate() {
            if ids.insert(v.to_string().into_boxed_str(), i as u32).is_some() {
                return Err(serde::de::Error::custom(format!("category dictionary lists {v} twice")));
            }
        }
        Ok(Self { values, ids })
    }
}

/// Per-sample buffers: the key being looked up and the categories seen for the first time,
/// which enter their dictionaries only when the sample is learned.
#[derive(Debug, Clone, Default)]
pub struct Scratch {
    key: Vec<u8>,
    new: Vec<(usize, Box<str>)>,
}

/// How one model reads its features out of a [`Capture`]; owns its category dictionaries
/// (one per feature, empty for the other types).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Encoder {
    dicts: Vec<Dictionary>,
    /// Each feature with its capture slot.
    #[serde(skip)]
    features: Vec<(FeatureSpec, usize)>,
    #[serde(skip)]
    hash_buckets: u32,
}

impl Encoder {
    /// True if `cap` lacks a feature that has no meaning when missing.
    pub fn lacks_required(&self, cap: &Capture) -> bool {
        self.features.iter().any(|(f, slot)| !f.may_be_missing() && cap.get(*slot) == Raw::Missing)
    }

    /// A fresh encoder for `features` (captured by `plan`).
    pub fn new(features: &[FeatureSpec], hash_buckets: u32, plan: &FieldPlan) -> Self {
        let mut e = Self { dicts: vec![Dictionary::default(); features.len()], ..Self::default() };
        e.bind(features, hash_buckets, plan).expect("a fresh encoder fits its features");
        e
    }

    /// Attach a restored encoder to its features and the plan's slots; fails if its
    /// dictionaries do not fit them.
    pub fn bind(&mut self, features: &[FeatureSpec], hash_buckets: u32, plan: &FieldPlan) -> Result<(), String> {
        let fits = self.dicts.len() == features.len()
            && features.iter().zip(&self.dicts).all(|(f, d)| f.ty == FeatureType::Category || d.is_empty());
        if !fits {
            return Err("its category dictionaries do not fit the features".into());
        }
        self.features = features
            .iter()
            .map(|f| (f.clone(), plan.slot(&f.path).expect("the plan captures every feature")))
            .collect();
        self.hash_buckets = hash_buckets.max(1);
        Ok(())
    }

    /// The dictionary of feature `i` (empty unless it is a category).
    pub fn dictionary(&self, i: usize) -> &Dictionary {
        &self.dicts[i]
    }

    /// Fill `x` with the columns of the captured document, in feature order. Categories seen
    /// for the first time get the ids they will have once [`commit`](Self::commit)ted and are
    /// noted in `scratch`; nothing here changes the encoder. The error names the feature and
    /// what was found, for a value its type cannot read.
    pub fn encode(&self, cap: &Capture, x: &mut Vec<Feature>, scratch: &mut Scratch) -> Result<(), String> {
        x.clear();
        scratch.new.clear();
        for (i, (f, slot)) in self.features.iter().enumerate() {
            let raw = cap.get(*slot);
            let bad = |what: &str| format!("feature `{}` {what} ({})", f.path, found(raw, cap));
            match f.ty {
                FeatureType::Numeric => x.push(Feature::Num(number(raw, cap).ok_or_else(|| bad("is not numeric"))?)),
                FeatureType::Count => {
                    let n = match raw {
                        Raw::Missing | Raw::Null => 0,
                        Raw::Array(n) => n,
                        Raw::Str { .. } => cap.str(raw).chars().count(),
                        _ => return Err(bad("has no length")),
                    };
                    x.push(Feature::Num(n as f64));
                }
                FeatureType::Date => {
                    let ms = match raw {
                        Raw::Missing | Raw::Null => None,
                        Raw::Str { .. } => Some(parse_iso_ms(cap.str(raw)).ok_or_else(|| bad("is not a date"))?),
                        Raw::DateMs(ms) | Raw::Int(ms) => Some(ms),
                        Raw::Float(v) if v.is_finite() && v.abs() < 9.0e15 => Some(v as i64),
                        _ => return Err(bad("is not a date")),
                    };
                    let (s, hour, weekday) = ms.map_or((0.0, 0.0, 0.0), date_columns);
                    x.extend([Feature::Num(s), Feature::Num(hour), Feature::Num(weekday)]);
                }
                FeatureType::Category | FeatureType::Hash => {
                    category_key(raw, cap, &mut scratch.key).ok_or_else(|| bad("is not a category"))?;
                    if f.ty == FeatureType::Hash {
                        let h = xxhash_rust::xxh3::xxh3_64(&scratch.key);
                        x.push(Feature::Cat((h % u64::from(self.hash_buckets)) as u32));
                        continue;
                    }
                    let key = std::str::from_utf8(&scratch.key).expect("serde_json writes UTF-8");
                    let (id, new) = self.dicts[i].id(key);
                    if new {
                        scratch.new.push((i, key.into()));
                    }
                    x.push(Feature::Cat(id));
                }
            }
            if f.missing_indicator {
                x.push(Feature::Num(if raw.is_absent() { 1.0 } else { 0.0 }));
            }
        }
        Ok(())
    }

    /// Enter the categories the last [`encode`](Self::encode) saw for the first time.
    pub fn commit(&mut self, scratch: &mut Scratch) {
        for (i, key) in scratch.new.drain(..) {
            self.dicts[i].insert(key);
        }
    }
}

/// What was found, for messages.
fn found(raw: Raw, cap: &Capture) -> String {
    match raw {
        Raw::Str { .. } => format!("string {:?}", cap.str(raw).chars().take(40).collect::<String>()),
        Raw::Array(_) => "an array".into(),
        other => other.kind().into(),
    }
}

/// A numeric feature's value: numbers as they are, booleans as 0/1, missing or null as 0, and
/// numeric strings (the bridge's form of Decimal128) parsed; `None` for anything else.
fn number(raw: Raw, cap: &Capture) -> Option<f64> {
    match raw {
        Raw::Missing | Raw::Null => Some(0.0),
        Raw::Bool(b) => Some(f64::from(u8::from(b))),
        Raw::Int(n) => Some(n as f64),
        Raw::UInt(n) => Some(n as f64),
        Raw::Float(v) => Some(v),
        Raw::Str { .. } => cap.str(raw).trim().parse::<f64>().ok().filter(|v| v.is_finite()),
        Raw::Array(_) | Raw::DateMs(_) | Raw::Object => None,
    }
}

/// Write the JSON text of a scalar into `key` (missing as `null`); `None` for an array or an
/// object.
fn category_key(raw: Raw, cap: &Capture, key: &mut Vec<u8>) -> Option<()> {
    key.clear();
    let written = match raw {
        Raw::Missing | Raw::Null => key.write_all(b"null"),
        Raw::Bool(b) => key.write_all(if b { b"true" } else { b"false" }),
        Raw::Int(n) => write!(key, "{n}"),
        Raw::UInt(n) => write!(key, "{n}"),
        Raw::Float(v) => serde_json::to_writer(&mut *key, &v).map_err(std::io::Error::other),
        Raw::Str { .. } => serde_json::to_writer(&mut *key, cap.str(raw)).map_err(std::io::Error::other),
        Raw::Array(_) | Raw::DateMs(_) | Raw::Object => return None,
    };
    written.ok()
}

/// Epoch seconds, hour of day and day of week (Monday 0), UTC, of `ms` since the epoch.
fn date_columns(ms: i64) -> (f64, f64, f64) {
    let hour = ms.div_euclid(3_600_000).rem_euclid(24);
    // 1970-01-01 was a Thursday.
    let weekday = (ms.div_euclid(86_400_000) + 3).rem_euclid(7);
    (ms as f64 / 1000.0, hour as f64, weekday as f64)
}

/// Days from 1970-01-01 to the proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Ms since the epoch of an ISO 8601 date (`2023-11-14`) or date-time
/// (`2023-11-14T22:13:20.123Z`, `T` or a space, seconds and fraction optional, `Z`, an offset
/// `+01:00`/`+0100`/`+01`, or none for UTC).
pub fn parse_iso_ms(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        part.iter().try_fold(0i64, |acc, c| Some(acc * 10 + i64::from(c - b'0')))
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return None;
    }
    let day_ms = days_from_civil(y, mo, d) * 86_400_000;
    let mut i = 10;
    if i == b.len() {
        return Some(day_ms);
    }
    if !matches!(b[i], b'T' | b't' | b' ') || b.get(i + 3) != Some(&b':') {
        return None;
    }
    let (h, mi) = (digits(i + 1..i + 3)?, digits(i + 4..i + 6)?);
    i += 6;
    let (mut sec, mut frac_ms) = (0, 0);
    if b.get(i) == Some(&b':') {
        sec = digits(i + 1..i + 3)?;
        i += 3;
        if matches!(b.get(i), Some(b'.' | b',')) {
            let start = i + 1;
            i = start;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return None;
            }
            // Milliseconds: the first three digits, padded.
            frac_ms = (start..start + 3)
                .map(|j| b.get(j).filter(|c| j < i && c.is_ascii_digit()))
                .fold(0i64, |acc, c| acc * 10 + c.map_or(0, |c| i64::from(c - b'0')));
        }
    }
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let offset_min = match &b[i..] {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (oh, om) = match rest {
                [_, _] => (digits(i + 1..i + 3)?, 0),
                [_, _, b':', _, _] => (digits(i + 1..i + 3)?, digits(i + 4..i + 6)?),
                [_, _, _, _] => (digits(i + 1..i + 3)?, digits(i + 3..i + 5)?),
                _ => return None,
            };
            let off = oh * 60 + om;
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    Some(day_ms + ((h * 60 + mi - offset_min) * 60 + sec) * 1000 + frac_ms)
}

/// A 64-bit fingerprint of a sample as a model learns it: its columns and its label. Never
/// 0, which marks "nothing learned" in a record.
pub fn fingerprint(x: &[Feature], label: &Value, scratch: &mut Scratch) -> u64 {
    let buf = &mut scratch.key;
    buf.clear();
    for f in x {
        match *f {
            // -0.0 and 0.0 are the same input.
            Feature::Num(v) => {
                buf.push(0);
                buf.extend_from_slice(&(v + 0.0).to_bits().to_le_bytes());
            }
            Feature::Cat(id) => {
                buf.push(1);
                buf.extend_from_slice(&id.to_le_bytes());
            }
        }
    }
    buf.push(2);
    let _ = serde_json::to_writer(&mut *buf, label);
    xxhash_rust::xxh3::xxh3_64(buf).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn encoder(features: &[&str], buckets: u32) -> (Encoder, FieldPlan) {
        let specs: Vec<FeatureSpec> = features.iter().map(|f| FeatureSpec::parse(f).unwrap()).collect();
        let plan = FieldPlan::new(specs.iter().map(|f| f.path.as_str()));
        (Encoder::new(&specs, buckets, &plan), plan)
    }

    fn run(e: &mut Encoder, plan: &FieldPlan, doc: Value, commit: bool) -> Result<Vec<Feature>, String> {
        let (mut cap, mut x, mut scratch) = (Capture::default(), Vec::new(), Scratch::default());
        plan.capture(&doc.to_string(), &mut cap).unwrap();
        e.encode(&cap, &mut x, &mut scratch)?;
        if commit {
            e.commit(&mut scratch);
        }
        Ok(x)
    }

    #[test]
    fn every_type_reads_its_values() {
        let (mut e, plan) =
            encoder(&["age:numeric?", "plan:category", "city:hash", "signup:date?", "tags:count", "vip"], 16);
        let x = run(
            &mut e,
            &plan,
            json!({"age": "41.5", "plan": "pro", "city": "Oslo", "signup": "2023-11-14T22:13:20.123Z", "tags": ["a", "b"], "vip": true}),
            true,
        )
        .unwrap();
        use Feature::{Cat, Num};
        let oslo = (xxhash_rust::xxh3::xxh3_64(b"\"Oslo\"") % 16) as u32;
        assert_eq!(
            x,
            [
                Num(41.5),
                Num(0.0),
                Cat(0),
                Cat(oslo),
                Num(1_700_000_000.123),
                Num(22.0),
                Num(1.0),
                Num(0.0),
                Num(2.0),
                Num(1.0)
            ]
        );
        let x = run(&mut e, &plan, json!({"plan": null, "tags": "héllo", "vip": false}), true).unwrap();
        let null_bucket = (xxhash_rust::xxh3::xxh3_64(b"null") % 16) as u32;
        assert_eq!(
            x,
            [Num(0.0), Num(1.0), Cat(1), Cat(null_bucket), Num(0.0), Num(0.0), Num(0.0), Num(1.0), Num(5.0), Num(0.0)]
        );
        let x = run(&mut e, &plan, json!({"plan": "pro", "signup": {"$date": {"$numberLong": "-86400000"}}}), true);
        assert_eq!(x.unwrap()[2..8], [Cat(0), Cat(null_bucket), Num(-86_400.0), Num(0.0), Num(2.0), Num(0.0)]);
        assert_eq!(serde_json::to_value(&e).unwrap()["dicts"][1], json!(["pro", null]));
    }

    #[test]
    fn new_categories_enter_only_when_committed() {
        let (mut e, plan) = encoder(&["plan:category"], 4);
        assert_eq!(run(&mut e, &plan, json!({"plan": 3}), false).unwrap(), [Feature::Cat(0)]);
        assert_eq!(run(&mut e, &plan, json!({"plan": "3"}), false).unwrap(), [Feature::Cat(0)]);
        assert!(e.dictionary(0).is_empty());
        run(&mut e, &plan, json!({"plan": "3"}), true).unwrap();
        assert_eq!(run(&mut e, &plan, json!({"plan": 3}), true).unwrap(), [Feature::Cat(1)]);
        assert_eq!(run(&mut e, &plan, json!({"plan": "3"}), true).unwrap(), [Feature::Cat(0)]);
        let back: Encoder = serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
        assert_eq!(back.dicts, e.dicts);
        assert_eq!(serde_json::to_value(&e).unwrap()["dicts"][0], json!(["3", 3]));
    }

    #[test]
    fn values_no_type_can_read_are_named() {
        let (mut e, plan) = encoder(&["n", "c:category", "d:date", "k:count"], 4);
        let err = |doc: Value| run(&mut e.clone(), &plan, doc, false).unwrap_err();
        assert_eq!(err(json!({"n": {"a": 1}})), "feature `n` is not numeric (an object)");
        assert_eq!(err(json!({"n": "abc"})), "feature `n` is not numeric (string \"abc\")");
        assert_eq!(err(json!({"n": [1]})), "feature `n` is not numeric (an array)");
        assert_eq!(err(json!({"c": [1]})), "feature `c` is not a category (an array)");
        assert_eq!(err(json!({"d": "yesterday"})), "feature `d` is not a date (string \"yesterday\")");
        assert_eq!(err(json!({"k": 3})), "feature `k` has no length (a number)");
        assert!(run(&mut e, &plan, json!({"c": {"x": 1}}), false).is_err());
    }

    #[test]
    fn iso_dates_parse_to_ms() {
        assert_eq!(parse_iso_ms("2023-11-14T22:13:20.123Z"), Some(1_700_000_000_123));
        assert_eq!(parse_iso_ms("2023-11-14T22:13:20Z"), Some(1_700_000_000_000));
        assert_eq!(parse_iso_ms("2023-11-14 23:13:20.1+01:00"), Some(1_700_000_000_100));
        assert_eq!(parse_iso_ms("2023-11-14T21:13:20.123456-0100"), Some(1_700_000_000_123));
        assert_eq!(parse_iso_ms("2023-11-14T22:13"), Some(1_699_999_980_000));
        assert_eq!(parse_iso_ms("1970-01-01"), Some(0));
        assert_eq!(parse_iso_ms("0000-03-01T00:00:00.000Z"), Some(-62_162_035_200_000));
        assert_eq!(parse_iso_ms("2024-02-29"), Some(1_709_164_800_000));
        for bad in ["2023-02-29", "2023-13-01", "2023-11-14T24:00", "2023-11-14T22:13:20.Z", "2023-11-14Tx", "23-11-14"]
        {
            assert_eq!(parse_iso_ms(bad), None, "{bad}");
        }
        assert_eq!(date_columns(1_700_000_000_123), (1_700_000_000.123, 22.0, 1.0));
        assert_eq!(date_columns(-1), (-0.001, 23.0, 2.0));
    }

    #[test]
    fn fingerprints_see_columns_and_label() {
        let mut s = Scratch::default();
        let x = [Feature::Num(1.0), Feature::Cat(2)];
        let a = fingerprint(&x, &json!(true), &mut s);
        assert_eq!(a, fingerprint(&[Feature::Num(1.0), Feature::Cat(2)], &json!(true), &mut s));
        assert_ne!(a, fingerprint(&x, &json!(false), &mut s));
        assert_ne!(a, fingerprint(&[Feature::Num(1.0), Feature::Cat(3)], &json!(true), &mut s));
        assert_eq!(
            fingerprint(&[Feature::Num(-0.0)], &json!(1), &mut s),
            fingerprint(&[Feature::Num(0.0)], &json!(1), &mut s)
        );
    }
}
