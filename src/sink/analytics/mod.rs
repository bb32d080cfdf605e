//! Streaming analytics: per-collection tumbling windows of event time (`ts_ms`), counting
//! every op and computing sums, means, minima and maxima of numeric fields, per group. The
//! core feeds it each event it applies (so duplicates, stale events and poison never count),
//! and checkpoints it whole, in the same transaction as the records.
//!
//! Time: the watermark is the latest `ts_ms` applied. A window closes once the watermark
//! passes its end by the allowed lateness (`SINK_AGGREGATE_LATENESS`); an event for a closed
//! window (or one older than the windows kept) is counted as `late` and not added.
//!
//! What the measures read: an insert's, update's or snapshot row's `after`; a delete's
//! `before` when the message carries it, else the document the sink held for the key (the
//! same thing, as the sink saw it), else nothing (counted only). An update whose lookup found
//! nothing (no `after`) is counted only.

pub mod spec;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use self::spec::{AggregateSpec, Func};
use super::decode::Change;
use super::features::{Capture, FieldPlan, Raw};
use crate::event::Op;

/// Windows kept per aggregate, the open ones included: an hour of one-minute windows.
pub const HISTORY: usize = 60;

/// Groups kept per window; later groups are counted together as [`OTHER`]. A `group_by` on a
/// field with a value per document would otherwise grow a window (and every checkpoint)
/// with the number of documents.
pub const MAX_GROUPS: usize = 200;

/// The group that collects the groups past [`MAX_GROUPS`].
pub const OTHER: &str = "(other)";

/// Lateness allowed unless `SINK_AGGREGATE_LATENESS` says otherwise. The bridge publishes in
/// commit order, so only snapshot rows (stamped when their chunk was read) and clock steps
/// arrive out of order, by seconds.
pub const DEFAULT_LATENESS: Duration = Duration::from_secs(60);

/// The op codes, in the order of the per-op arrays.
pub const OPS: [&str; 4] = ["c", "u", "d", "r"];

fn op_index(op: Op) -> usize {
    match op {
        Op::Create => 0,
        Op::Update => 1,
        Op::Delete => 2,
        Op::Read => 3,
    }
}

/// What the sink aggregates and how late an event may be.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyticsSettings {
    /// The aggregates, in order (default: [`spec::DEFAULT_AGGREGATES`]).
    pub aggregates: Vec<AggregateSpec>,
    /// How far behind the watermark an event may be and still update its window.
    pub lateness: Duration,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        Self {
            aggregates: spec::parse_list(spec::DEFAULT_AGGREGATES).expect("the default parses"),
            lateness: DEFAULT_LATENESS,
        }
    }
}

/// Count, sum, minimum and maximum of the numeric values of one field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Moments {
    n: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Moments {
    fn add(&mut self, x: f64) {
        if self.n == 0 {
            (self.min, self.max) = (x, x);
        } else {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
        self.n += 1;
        self.sum += x;
    }

    /// The value of `func` over the values seen (`None` when there were none, except a sum).
    fn get(&self, func: Func) -> Option<f64> {
        match func {
            Func::Sum => Some(self.sum),
            _ if self.n == 0 => None,
            Func::Mean => Some(self.sum / self.n as f64),
            Func::Min => Some(self.min),
            Func::Max => Some(self.max),
        }
    }
}

/// One op within one group of one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct OpCell {
    count: u64,
    /// One per distinct measured field of the aggregate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    fields: Vec<Moments>,
}

/// One group of one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Cell {
    collection: String,
    group: Option<String>,
    ops: [OpCell; 4],
}

/// One tumbling window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Window {
    start: i64,
    /// By group key (collection and group, see [`group_key`]).
    cells: BTreeMap<String, Cell>,
}

/// One aggregate's windows, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Aggregate {
    spec: AggregateSpec,
    late: u64,
    windows: VecDeque<Window>,
    /// Capture slot of `group_by`, and of each distinct measured field ([`AggregateSpec::fields`]).
    #[serde(skip)]
    group_slot: Option<usize>,
    #[serde(skip)]
    field_slots: Vec<usize>,
}

impl Aggregate {
    fn new(spec: AggregateSpec) -> Self {
        Self { spec, late: 0, windows: VecDeque::new(), group_slot: None, field_slots: Vec::new() }
    }

    fn reads_fields(&self) -> bool {
        self.spec.group_by.is_some() || !self.spec.measures.is_empty()
    }
}

/// The window of `windows` starting at `start`, made if it is new (the oldest then goes if
/// there are more than [`HISTORY`]); `None` when it is older than every window kept and
/// there is no room for it.
fn window_at(windows: &mut VecDeque<Window>, start: i64) -> Option<&mut Window> {
    let i = match windows.iter().rposition(|w| w.start <= start) {
        Some(i) if windows[i].start == start => i,
        Some(i) => {
            windows.insert(i + 1, Window { start, ..Window::default() });
            i + 1
        }
        None if windows.len() < HISTORY => {
            windows.push_front(Window { start, ..Window::default() });
            0
        }
        None => return None,
    };
    let i = if windows.len() > HISTORY {
        windows.pop_front();
        i - 1
    } else {
        i
    };
    Some(&mut windows[i])
}

/// The key of a group in a window: the collection, then the group's value (or none).
fn group_key(buf: &mut String, collection: &str, group: Option<&str>) {
    buf.clear();
    buf.push_str(collection);
    match group {
        Some(g) => {
            buf.push_str("\0=");
            buf.push_str(g);
        }
        None => buf.push_str("\0-"),
    }
}

/// Every aggregate's recent windows, the watermark, and the events counted by op.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "Saved")]
pub struct Analytics {
    aggregates: Vec<Aggregate>,
    /// The latest `ts_ms` counted.
    watermark: Option<i64>,
    /// Events counted since the state began, by op (`c`, `u`, `d`, `r`).
    totals: [u64; 4],
    #[serde(skip)]
    lateness_ms: i64,
    /// Every field any aggregate reads, captured in one pass.
    #[serde(skip)]
    plan: FieldPlan,
    #[serde(skip)]
    capture: Capture,
    #[serde(skip)]
    key: String,
    #[serde(skip)]
    text: String,
}

/// The saved part of [`Analytics`], to rebuild the rest from.
#[derive(Deserialize)]
struct Saved {
    aggregates: Vec<Aggregate>,
    watermark: Option<i64>,
    totals: [u64; 4],
}

impl From<Saved> for Analytics {
    fn from(s: Saved) -> Self {
        let mut a = Self::empty(DEFAULT_LATENESS);
        (a.aggregates, a.watermark, a.totals) = (s.aggregates, s.watermark, s.totals);
        a.bind();
        a
    }
}

impl Default for Analytics {
    /// The default aggregates ([`AnalyticsSettings::default`]), empty.
    fn default() -> Self {
        let mut a = Self::empty(DEFAULT_LATENESS);
        a.configure(&AnalyticsSettings::default());
        a
    }
}

impl Analytics {
    fn empty(lateness: Duration) -> Self {
        Self {
            aggregates: Vec::new(),
            watermark: None,
            totals: [0; 4],
            lateness_ms: lateness.as_millis() as i64,
            plan: FieldPlan::default(),
            capture: Capture::default(),
            key: String::new(),
            text: String::new(),
        }
    }

    /// Aggregate what `settings` say from now on. An aggregate defined exactly as one held
    /// keeps its windows; a new or changed one starts empty; one no longer listed is dropped.
    pub fn configure(&mut self, settings: &AnalyticsSettings) {
        let mut old = std::mem::take(&mut self.aggregates);
        for spec in &settings.aggregates {
            match old.iter().position(|a| &a.spec == spec) {
                Some(i) => self.aggregates.push(old.swap_remove(i)),
                None => {
                    if self.watermark.is_some() {
                        tracing::info!(aggregate = %spec.name, "new aggregate: it counts from now on");
                    }
                    self.aggregates.push(Aggregate::new(spec.clone()));
                }
            }
        }
        for a in old {
            tracing::info!(aggregate = %a.spec.name, "aggregate no longer configured: dropped");
        }
        self.lateness_ms = settings.lateness.as_millis() as i64;
        self.bind();
    }

    /// Rebuild the capture plan and each aggregate's slots.
    fn bind(&mut self) {
        let paths =
            self.aggregates.iter().flat_map(|a| a.spec.group_by.iter().map(String::as_str).chain(a.spec.fields()));
        self.plan = FieldPlan::new(paths.collect::<Vec<_>>());
        for a in &mut self.aggregates {
            a.group_slot = a.spec.group_by.as_deref().and_then(|g| self.plan.slot(g));
            a.field_slots = a.spec.fields().iter().filter_map(|f| self.plan.slot(f)).collect();
        }
    }

    /// Count an event being applied. `held` is the document the sink holds for its key (read
    /// only for a delete without `before`).
    pub fn observe(&mut self, ev: &Change<'_>, held: Option<&RawValue>) {
        let doc = match ev.op {
            Op::Delete => ev.before.as_deref().or(held),
            _ => ev.after.as_deref(),
        };
        self.count(&ev.collection, ev.op, ev.ts_ms, doc.map(RawValue::get));
    }

    /// Count one event of `collection` at `ts_ms`, its measures read from `doc`.
    pub fn count(&mut self, collection: &str, op: Op, ts_ms: i64, doc: Option<&str>) {
        let o = op_index(op);
        self.totals[o] += 1;
        let watermark = self.watermark.map_or(ts_ms, |w| w.max(ts_ms));
        self.watermark = Some(watermark);
        let closed_before = watermark.saturating_sub(self.lateness_ms);
        let wants_fields = self.aggregates.iter().any(|a| a.reads_fields() && a.spec.covers(collection));
        // A document that is not JSON was refused earlier; if one gets here, it counts only.
        let captured = wants_fields && doc.is_some_and(|d| self.plan.capture(d, &mut self.capture).is_ok());
        for a in self.aggregates.iter_mut().filter(|a| a.spec.covers(collection)) {
            let w = a.spec.window_ms as i64;
            let start = ts_ms - ts_ms.rem_euclid(w);
            if start + w <= closed_before {
                a.late += 1;
                continue;
            }
            let (group_slot, n_fields) = (a.group_slot, a.field_slots.len());
            let group = match (captured, group_slot) {
                (true, Some(slot)) => group_value(&self.capture, self.capture.get(slot), &mut self.text),
                _ => None,
            };
            let Some(window) = window_at(&mut a.windows, start) else {
                a.late += 1;
                continue;
            };
            group_key(&mut self.key, collection, group);
            let group = if !window.cells.contains_key(&self.key) && window.cells.len() >= MAX_GROUPS {
                group_key(&mut self.key, collection, Some(OTHER));
                Some(OTHER)
            } else {
                group
            };
            let cell = match window.cells.get_mut(&self.key) {
                Some(c) => c,
                None => window.cells.entry(self.key.clone()).or_insert_with(|| Cell {
                    collection: collection.to_string(),
                    group: group.map(str::to_string),
                    ops: Default::default(),
                }),
            };
            let cell_op = &mut cell.ops[o];
            cell_op.count += 1;
            if captured && n_fields > 0 {
                cell_op.fields.resize(n_fields, Moments::default());
                for (m, &slot) in cell_op.fields.iter_mut().zip(&a.field_slots) {
                    if let Some(x) = numeric(&self.capture, self.capture.get(slot)) {
                        m.add(x);
                    }
                }
            }
        }
    }

    /// What `/analytics` serves (and `/metrics` reads): a copy of the state.
    pub fn view(&self) -> AnalyticsView {
        AnalyticsView {
            lateness_ms: self.lateness_ms,
            watermark: self.watermark,
            totals: self.totals,
            aggregates: self.aggregates.clone(),
        }
    }
}

/// A group's value as text: strings as they are, numbers and booleans as JSON writes them;
/// missing or null is no group; arrays and objects are named by kind.
fn group_value<'t>(cap: &'t Capture, raw: Raw, text: &'t mut String) -> Option<&'t str> {
    use std::fmt::Write;
    text.clear();
    match raw {
        Raw::Missing | Raw::Null => return None,
        Raw::Str { .. } => return Some(cap.str(raw)),
        Raw::Bool(b) => text.push_str(if b { "true" } else { "false" }),
        Raw::Int(n) => write!(text, "{n}").expect("writing to a String"),
        Raw::UInt(n) => write!(text, "{n}").expect("writing to a String"),
        Raw::Float(x) => write!(text, "{x}").expect("writing to a String"),
        Raw::Array(_) => text.push_str("(array)"),
        Raw::DateMs(_) | Raw::Object => text.push_str("(object)"),
    }
    Some(text.as_str())
}

/// A measured field's value: numbers, and numeric strings (Decimal128 arrives as one);
/// anything else is not counted in the field's figures.
fn numeric(cap: &Capture, raw: Raw) -> Option<f64> {
    match raw {
        Raw::Int(n) => Some(n as f64),
        Raw::UInt(n) => Some(n as f64),
        Raw::Float(x) => Some(x),
        Raw::Str { .. } => cap.str(raw).trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
}

/// The analytics as `/analytics` serves them: a copy taken when the view was published,
/// written out readably on request.
#[derive(Debug, Clone)]
pub struct AnalyticsView {
    lateness_ms: i64,
    watermark: Option<i64>,
    totals: [u64; 4],
    aggregates: Vec<Aggregate>,
}

/// One group's figures in the current window of an aggregate, for `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentCount<'a> {
    /// The aggregate's name.
    pub aggregate: &'a str,
    /// The collection.
    pub collection: &'a str,
    /// The group's value (empty for none).
    pub group: &'a str,
    /// The op code.
    pub op: &'static str,
    /// Events of that op in the window so far.
    pub count: u64,
}

impl AnalyticsView {
    /// Events counted since the state began, by op code.
    pub fn totals(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        OPS.iter().copied().zip(self.totals)
    }

    /// Each aggregate's name and late count.
    pub fn late(&self) -> impl Iterator<Item = (&str, u64)> {
        self.aggregates.iter().map(|a| (a.spec.name.as_str(), a.late))
    }

    /// The window of each aggregate that holds the watermark (the current one): its start, if
    /// any event fell in it, per aggregate.
    fn current(&self, a: &Aggregate) -> Option<usize> {
        let wm = self.watermark?;
        let w = a.spec.window_ms as i64;
        let start = wm - wm.rem_euclid(w);
        a.windows.iter().rposition(|x| x.start == start)
    }

    /// Every count of every current window, by aggregate, group and op.
    pub fn current_counts(&self) -> Vec<CurrentCount<'_>> {
        let mut out = Vec::new();
        for a in &self.aggregates {
            let Some(i) = self.current(a) else { continue };
            for cell in a.windows[i].cells.values() {
                for (op, c) in OPS.iter().zip(&cell.ops).filter(|(_, c)| c.count > 0) {
                    out.push(CurrentCount {
                        aggregate: &a.spec.name,
                        collection: &cell.collection,
                        group: cell.group.as_deref().unwrap_or(""),
                        op,
                        count: c.count,
                    });
                }
            }
        }
        out
    }
}

impl Serialize for AnalyticsView {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Analytics", 4)?;
        st.serialize_field("lateness_ms", &self.lateness_ms)?;
        st.serialize_field("watermark_ms", &self.watermark)?;
        st.serialize_field("totals", &OpsMap(&self.totals))?;
        let aggregates: Vec<AggregateOut<'_>> = self
            .aggregates
            .iter()
            .map(|a| AggregateOut { a, current: self.current(a), closed_before: self.closed_before() })
            .collect();
        st.serialize_field("aggregates", &aggregates)?;
        st.end()
    }
}

impl AnalyticsView {
    fn closed_before(&self) -> Option<i64> {
        self.watermark.map(|w| w.saturating_sub(self.lateness_ms))
    }
}

/// `{"c": n, "u": n, "d": n, "r": n}`.
struct OpsMap<'a>(&'a [u64; 4]);

impl Serialize for OpsMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(4))?;
        for (op, n) in OPS.iter().zip(self.0) {
            m.serialize_entry(op, n)?;
        }
        m.end()
    }
}

struct AggregateOut<'a> {
    a: &'a Aggregate,
    current: Option<usize>,
    closed_before: Option<i64>,
}

impl Serialize for AggregateOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let spec = &self.a.spec;
        let mut st = s.serialize_struct("Aggregate", 9)?;
        st.serialize_field("name", &spec.name)?;
        st.serialize_field("collection", spec.collection.as_deref().unwrap_or("*"))?;
        st.serialize_field("window_ms", &spec.window_ms)?;
        st.serialize_field("group_by", &spec.group_by)?;
        let measures: Vec<String> =
            std::iter::once("count".to_string()).chain(spec.measures.iter().map(ToString::to_string)).collect();
        st.serialize_field("measures", &measures)?;
        st.serialize_field("late", &self.a.late)?;
        st.serialize_field("current_start_ms", &self.current.map(|i| self.a.windows[i].start))?;
        let windows: Vec<WindowOut<'_>> =
            self.a.windows.iter().map(|w| WindowOut { w, spec, closed_before: self.closed_before }).collect();
        st.serialize_field("windows", &windows)?;
        st.end()
    }
}

struct WindowOut<'a> {
    w: &'a Window,
    spec: &'a AggregateSpec,
    closed_before: Option<i64>,
}

impl Serialize for WindowOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let end = self.w.start + self.spec.window_ms as i64;
        let mut st = s.serialize_struct("Window", 5)?;
        st.serialize_field("start_ms", &self.w.start)?;
        st.serialize_field("end_ms", &end)?;
        st.serialize_field("closed", &self.closed_before.is_some_and(|c| end <= c))?;
        let count: u64 = self.w.cells.values().flat_map(|c| c.ops.iter()).map(|o| o.count).sum();
        st.serialize_field("count", &count)?;
        let groups: Vec<GroupOut<'_>> = self.w.cells.values().map(|cell| GroupOut { cell, spec: self.spec }).collect();
        st.serialize_field("groups", &groups)?;
        st.end()
    }
}

struct GroupOut<'a> {
    cell: &'a Cell,
    spec: &'a AggregateSpec,
}

impl Serialize for GroupOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Group", 4)?;
        st.serialize_field("collection", &self.cell.collection)?;
        st.serialize_field("group", &self.cell.group)?;
        st.serialize_field("count", &self.cell.ops.iter().map(|o| o.count).sum::<u64>())?;
        st.serialize_field("ops", &OpsOut(self))?;
        st.end()
    }
}

/// `{"c": {"count": n, "sum(quantity)": x, ...}, ...}`, the ops that occurred.
struct OpsOut<'a>(&'a GroupOut<'a>);

impl Serialize for OpsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let GroupOut { cell, spec } = self.0;
        let fields = spec.fields();
        let mut m = s.serialize_map(None)?;
        for (op, c) in OPS.iter().zip(&cell.ops).filter(|(_, c)| c.count > 0) {
            let mut figures = serde_json::Map::new();
            figures.insert("count".into(), c.count.into());
            for measure in &spec.measures {
                let j = fields.iter().position(|f| *f == measure.field).expect("a measure's field is listed");
                let value = c.fields.get(j).copied().unwrap_or_default().get(measure.func);
                figures.insert(measure.to_string(), value.into());
            }
            m.serialize_entry(op, &figures)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn analytics(list: &str, lateness_s: u64) -> Analytics {
        let mut a = Analytics::default();
        a.configure(&AnalyticsSettings {
            aggregates: spec::parse_list(list).unwrap(),
            lateness: Duration::from_secs(lateness_s),
        });
        a
    }

    fn view(a: &Analytics) -> Value {
        serde_json::to_value(a.view()).unwrap()
    }

    const MIN: i64 = 60_000;

    #[test]
    fn windows_count_ops_and_measure_fields_per_group() {
        let mut a = analytics("orders:1m:by=status:sum(quantity),mean(quantity),min(amount),max(amount); *:1m", 60);
        let t0 = 1_700_000_020_000; // 40 s into a minute
        a.count("orders", Op::Create, t0, Some(r#"{"status": "new", "quantity": 2, "amount": 5.5}"#));
        a.count("orders", Op::Create, t0 + 1, Some(r#"{"status": "new", "quantity": 3, "amount": "7.25"}"#));
        a.count("orders", Op::Update, t0 + 2, Some(r#"{"status": "paid", "quantity": 3, "amount": null}"#));
        a.count("orders", Op::Delete, t0 + 3, None);
        a.count("users", Op::Create, t0 + 4, Some("{}"));
        // The next minute.
        a.count("orders", Op::Create, t0 + 30_000, Some(r#"{"quantity": 1}"#));
        let v = view(&a);
        assert_eq!(v["totals"], json!({"c": 4, "u": 1, "d": 1, "r": 0}));
        let orders = &v["aggregates"][0];
        assert_eq!(
            orders["measures"],
            json!(["count", "sum(quantity)", "mean(quantity)", "min(amount)", "max(amount)"])
        );
        let windows = orders["windows"].as_array().unwrap();
        assert_eq!(windows.len(), 2);
        let first = &windows[0];
        assert_eq!(first["start_ms"], json!(t0 - 40_000));
        assert_eq!((first["count"].as_u64(), first["closed"].as_bool()), (Some(4), Some(false)));
        let groups = first["groups"].as_array().unwrap();
        let group = |g: Value| groups.iter().find(|x| x["group"] == g).unwrap_or_else(|| panic!("{g} in {groups:?}"));
        assert_eq!(
            group(json!("new"))["ops"],
            json!({"c": {"count": 2, "sum(quantity)": 5.0, "mean(quantity)": 2.5, "min(amount)": 5.5, "max(amount)": 7.25}})
        );
        assert_eq!(
            group(json!("paid"))["ops"]["u"],
            json!({"count": 1, "sum(quantity)": 3.0, "mean(quantity)": 3.0, "min(amount)": null, "max(amount)": null})
        );
        // A delete without a document counts only.
        assert_eq!(group(Value::Null)["ops"]["d"]["count"], json!(1));
        assert_eq!(group(Value::Null)["ops"]["d"]["sum(quantity)"], json!(0.0));
        assert_eq!(windows[1]["groups"][0]["ops"]["c"]["sum(quantity)"], json!(1.0));
        assert_eq!(orders["current_start_ms"], windows[1]["start_ms"]);
        // `*`: one group per collection.
        let all = &v["aggregates"][1]["windows"][0]["groups"];
        assert_eq!(all.as_array().unwrap().len(), 2);
        assert_eq!((&all[0]["collection"], &all[0]["count"]), (&json!("orders"), &json!(4)));
        assert_eq!((&all[1]["collection"], &all[1]["ops"]), (&json!("users"), &json!({"c": {"count": 1}})));
        // /metrics' figures: the current window only.
        let counts = a.view();
        let counts = counts.current_counts();
        assert_eq!(counts.len(), 2, "{counts:?}");
        assert!(counts.iter().all(|c| c.op == "c" && c.count == 1));
    }

    #[test]
    fn a_late_event_updates_its_window_until_the_lateness_has_passed() {
        let mut a = analytics("*:1m", 30);
        let t = 10 * MIN;
        a.count("c", Op::Create, t + 5_000, None);
        a.count("c", Op::Create, t + MIN + 20_000, None); // watermark 20 s into the next minute
        a.count("c", Op::Create, t + 50_000, None); // the first window is open for 10 s more
        let v = view(&a);
        assert_eq!(v["aggregates"][0]["windows"][0]["count"], json!(2));
        assert_eq!(v["aggregates"][0]["windows"][0]["closed"], json!(false));
        a.count("c", Op::Create, t + MIN + 31_000, None); // now it is closed
        a.count("c", Op::Update, t + 59_999, None);
        let v = view(&a);
        assert_eq!(v["aggregates"][0]["late"], json!(1));
        assert_eq!(v["aggregates"][0]["windows"][0]["count"], json!(2), "not added");
        assert_eq!(v["aggregates"][0]["windows"][0]["closed"], json!(true));
        assert_eq!(v["totals"]["u"], json!(1), "the totals count every event applied");
    }

    #[test]
    fn history_and_groups_are_bounded() {
        let mut a = analytics("k:1s:by=g", 3600);
        for i in 0..(HISTORY as i64 + 5) {
            a.count("k", Op::Create, i * 1000, Some(r#"{"g": 1}"#));
        }
        let v = view(&a);
        let windows = v["aggregates"][0]["windows"].as_array().unwrap();
        assert_eq!(windows.len(), HISTORY);
        assert_eq!(windows[0]["start_ms"], json!(5_000));
        // Older than every window kept, though within the lateness: late.
        a.count("k", Op::Create, 1_000, None);
        assert_eq!(view(&a)["aggregates"][0]["late"], json!(1));
        for g in 0..(MAX_GROUPS + 10) {
            a.count("k", Op::Create, 64_000, Some(&format!(r#"{{"g": "v{g}"}}"#)));
        }
        let v = view(&a);
        let groups = v["aggregates"][0]["windows"][HISTORY - 1]["groups"].as_array().unwrap();
        assert_eq!(groups.len(), MAX_GROUPS + 1, "the first {MAX_GROUPS} groups, and (other)");
        let other = groups.iter().find(|g| g["group"] == OTHER).unwrap();
        assert_eq!(other["count"], json!(11), "the window held group 1 already");
    }

    #[test]
    fn a_saved_state_restores_the_same_windows_and_a_new_aggregate_starts_empty() {
        let settings = AnalyticsSettings {
            aggregates: spec::parse_list("k:1s:sum(x); *:1m").unwrap(),
            lateness: Duration::from_secs(5),
        };
        let mut live = Analytics::default();
        live.configure(&settings);
        let restore = |a: &Analytics, s: &AnalyticsSettings| {
            let mut back: Analytics = serde_json::from_str(&serde_json::to_string(a).unwrap()).unwrap();
            back.configure(s);
            back
        };
        for round in 0..5i64 {
            for i in 0..30 {
                let t = round * 20_000 + i * 700;
                live.count("k", Op::Create, t, Some(&format!(r#"{{"x": {i}}}"#)));
            }
            // Late, then too old to keep.
            live.count("k", Op::Update, round * 20_000 - 9_000, None);
            assert_eq!(view(&restore(&live, &settings)), view(&live), "after round {round}");
        }
        // Restarted with another list: the kept one keeps its windows.
        let other = AnalyticsSettings { aggregates: spec::parse_list("*:1m; k:1s:max(x)").unwrap(), ..settings };
        let v = view(&restore(&live, &other));
        assert_eq!(v["aggregates"][0]["name"], "*:1m");
        assert_eq!(v["aggregates"][0]["windows"], view(&live)["aggregates"][1]["windows"]);
        assert_eq!(v["aggregates"][1]["windows"], json!([]));
    }

    /// The core feeds the analytics only what it applies.
    mod through_the_core {
        use super::*;
        use crate::ml::{ModelKind, Task};
        use crate::sink::checkpoint::CheckpointStore;
        use crate::sink::core::{Outcome, SinkCore};
        use crate::sink::features::FeatureSpec;
        use crate::sink::spec::ModelSpec;

        fn core() -> SinkCore {
            let spec = ModelSpec::single(
                Task::Classification,
                ModelKind::Linear,
                vec![FeatureSpec::parse("x").unwrap()],
                "y".into(),
                vec![],
            );
            let mut core = SinkCore::new(vec![spec], 1000).unwrap();
            core.analytics_mut().configure(&AnalyticsSettings {
                aggregates: spec::parse_list("orders:1h:sum(quantity)").unwrap(),
                lateness: DEFAULT_LATENESS,
            });
            core
        }

        fn event(id: &str, op: &str, key: u32, t: u32, after: Option<Value>, before: Option<Value>) -> Vec<u8> {
            json!({"id": id, "op": op, "key": format!("k{key}"), "after": after, "before": before,
                   "source": {"db": "d", "collection": "orders", "cluster_time": {"t": t, "i": 1}},
                   "ts_ms": 3_600_000 + i64::from(t)})
            .to_string()
            .into_bytes()
        }

        /// Every op's count and sum of quantity, over every window.
        fn figures(core: &SinkCore) -> Value {
            let v = serde_json::to_value(core.analytics().view()).unwrap();
            let mut out = serde_json::Map::new();
            for w in v["aggregates"][0]["windows"].as_array().unwrap() {
                for g in w["groups"].as_array().unwrap() {
                    for (op, f) in g["ops"].as_object().unwrap() {
                        let e = out.entry(op.clone()).or_insert(json!([0, 0.0]));
                        *e = json!([
                            e[0].as_u64().unwrap() + f["count"].as_u64().unwrap(),
                            e[1].as_f64().unwrap() + f["sum(quantity)"].as_f64().unwrap()
                        ]);
                    }
                }
            }
            Value::Object(out)
        }

        #[test]
        fn duplicates_stale_poison_and_reconciled_deletes_do_not_count() {
            let mut c = core();
            let doc = |q: i64| Some(json!({"quantity": q, "x": 1, "y": true}));
            assert!(matches!(c.apply_bytes(&event("i1", "c", 1, 10, doc(3), None)), Outcome::Applied { .. }));
            c.apply_bytes(&event("i2", "c", 2, 11, doc(4), None));
            assert_eq!(c.apply_bytes(&event("i1", "c", 1, 10, doc(3), None)), Outcome::Duplicate);
            c.apply_bytes(&event("u1", "u", 1, 20, doc(5), None));
            assert_eq!(c.apply_bytes(&event("old", "u", 1, 15, doc(100), None)), Outcome::Stale);
            let poison = json!({"quantity": 1, "x": {"o": 1}, "y": true});
            assert!(matches!(c.apply_bytes(&event("p", "c", 3, 21, Some(poison), None)), Outcome::Poison(_)));
            // A delete without `before` reads the document held (quantity 5); with one, `before`.
            c.apply_bytes(&event("d1", "d", 1, 30, None, None));
            c.apply_bytes(&event("d2", "d", 2, 31, None, Some(json!({"quantity": 40}))));
            // A snapshot's end removing a record the snapshot did not deliver is no event.
            c.apply_bytes(&event("i3", "c", 3, 40, doc(7), None));
            let end = json!({"id": "s:1:orders:end", "op": "snapshot", "ts_ms": 3_600_050,
                "snapshot": {"id": "1", "phase": "end", "since": {"t": 45, "i": 1}},
                "source": {"db": "d", "collection": "orders", "cluster_time": {"t": 46, "i": 1}, "snapshot": "true"}});
            assert_eq!(c.apply_bytes(end.to_string().as_bytes()), Outcome::Control);
            assert_eq!(c.stats().counters.reconciled_deletes, 1, "the control message did remove k3");
            assert_eq!(figures(&c), json!({"c": [3, 14.0], "u": [1, 5.0], "d": [2, 45.0]}));
            let totals: Vec<_> = c.analytics().view().totals().collect();
            assert_eq!(totals, [("c", 3), ("u", 1), ("d", 2), ("r", 0)]);
        }

        #[test]
        fn the_checkpoint_restores_the_aggregates_exactly() {
            let dir = tempfile::tempdir().unwrap();
            let file = CheckpointStore::open(dir.path(), "q").unwrap();
            let mut live = core();
            let mut n = 0u32;
            for round in 0..10u32 {
                for _ in 0..(3 + round) {
                    n += 1;
                    let q = i64::from(n % 7);
                    let op = if n.is_multiple_of(3) { "u" } else { "c" };
                    live.apply_bytes(&event(&format!("e{n}"), op, n % 5, n, Some(json!({"quantity": q})), None));
                }
                file.save(&mut live).unwrap();
                let mut back = file.load(1000).unwrap().unwrap();
                back.analytics_mut().configure(&AnalyticsSettings {
                    aggregates: spec::parse_list("orders:1h:sum(quantity)").unwrap(),
                    lateness: DEFAULT_LATENESS,
                });
                let (a, b) = (live.analytics().view(), back.analytics().view());
                assert_eq!(serde_json::to_value(a).unwrap(), serde_json::to_value(b).unwrap(), "after round {round}");
            }
            assert_eq!(
                figures(&live)["c"][0].as_u64().unwrap() + figures(&live)["u"][0].as_u64().unwrap(),
                u64::from(n)
            );
        }
    }
}
