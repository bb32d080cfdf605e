//! The sink's in-process core: parse an event, recognise duplicates and stale events, apply
//! it to the versioned records, and predict-then-learn. No I/O, so it can be benchmarked and
//! checkpointed whole.

use std::collections::{HashMap, HashSet, VecDeque};

use foldhash::fast::RandomState;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::features::{self, FieldPlan};
use crate::event::{self, ChangeEventRef, ClusterTime, ControlEvent, Op, Phase};
use crate::ml::{ModelStats, OnlineModel};

/// The current state of one record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The document, as the JSON it arrived in; `None` once deleted.
    pub doc: Option<Box<RawValue>>,
    /// 1 for the insert, +1 for every later change (deletes included).
    pub version: u64,
    /// Id of the last event applied.
    pub last_id: String,
    /// `ts_ms` of the last event applied.
    pub ts_ms: i64,
    /// Cluster time of the last event applied; older events are stale.
    pub cluster_time: ClusterTime,
    /// Changed since the last checkpoint write.
    #[serde(skip)]
    dirty: bool,
}

/// What applying one message did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Applied to the records; `trained` says whether the model learned from it.
    Applied {
        /// The model learned from this event.
        trained: bool,
        /// The event's wall time, ms since the epoch (for lag).
        ts_ms: i64,
    },
    /// A snapshot control message, applied (at a collection's `end`, records the snapshot did
    /// not deliver were removed).
    Control,
    /// Already applied (same event id).
    Duplicate,
    /// Older than what the record already holds.
    Stale,
    /// Unusable: goes to the dead-letter queue with this reason.
    Poison(String),
}

/// What the core is configured to learn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// Feature paths.
    pub features: Vec<String>,
    /// Label path.
    pub label: String,
    /// Collections to learn from; empty is all.
    pub collections: Vec<String>,
}

/// Counters served by `/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Events applied to the records.
    pub events_applied: u64,
    /// Events skipped as already applied.
    pub duplicates_skipped: u64,
    /// Events skipped as older than the record.
    pub stale_skipped: u64,
    /// Messages sent to the dead-letter queue.
    pub dead_lettered: u64,
    /// Snapshot rows identical to the record held: applied without training again.
    #[serde(default)]
    pub unchanged_skipped: u64,
    /// Records removed at the end of a collection's snapshot because the snapshot did not
    /// deliver them and no later change touched them (deleted while the bridge had lost its place).
    #[serde(default)]
    pub reconciled_deletes: u64,
    /// Snapshot control messages applied.
    #[serde(default)]
    pub snapshot_controls: u64,
}

/// Fingerprints (128-bit xxh3) of the most recently applied event ids, to recognise
/// redeliveries without keeping the ids. Bounded: a redelivery comes within the
/// unacknowledged window, which is far smaller than the capacity.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "Vec<u128>", into = "Vec<u128>")]
pub struct RecentIds {
    order: VecDeque<u128>,
    set: HashSet<u128, RandomState>,
    capacity: usize,
}

impl From<Vec<u128>> for RecentIds {
    fn from(v: Vec<u128>) -> Self {
        let set = v.iter().copied().collect();
        Self { capacity: v.len(), order: v.into(), set }
    }
}

impl From<RecentIds> for Vec<u128> {
    fn from(r: RecentIds) -> Self {
        r.order.into()
    }
}

fn fingerprint(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

impl RecentIds {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            order: VecDeque::with_capacity(capacity),
            set: HashSet::with_capacity_and_hasher(capacity, RandomState::default()),
            capacity,
        }
    }

    fn contains(&self, fp: u128) -> bool {
        self.set.contains(&fp)
    }

    fn insert(&mut self, fp: u128) {
        if self.order.len() >= self.capacity.max(1)
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(fp);
        self.set.insert(fp);
    }
}

type Map<V> = HashMap<String, V, RandomState>;

/// Records, model and counters: everything a checkpoint holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkCore {
    spec: Spec,
    records: Map<Map<Record>>,
    live_records: u64,
    recent: RecentIds,
    model: OnlineModel,
    counters: Counters,
    last_event_id: Option<String>,
    /// Sequence number of the last checkpoint write this state contains.
    #[serde(default)]
    seq: u64,
    /// Fingerprints added to `recent` since the last checkpoint write.
    #[serde(skip)]
    fresh_ids: usize,
    #[serde(skip)]
    x: Vec<f64>,
    #[serde(skip)]
    plan: FieldPlan,
    #[serde(skip)]
    lag: Lag,
}

/// How far behind the sink runs: apply time minus event time, over the last events applied.
#[derive(Debug, Clone, Default)]
struct Lag {
    recent_ms: VecDeque<i64>,
}

/// Lags kept for the percentiles.
const LAG_WINDOW: usize = 10_000;

impl Lag {
    fn record(&mut self, lag_ms: i64) {
        if self.recent_ms.len() >= LAG_WINDOW {
            self.recent_ms.pop_front();
        }
        self.recent_ms.push_back(lag_ms.max(0));
    }

    fn percentiles(&self) -> Option<LagStats> {
        if self.recent_ms.is_empty() {
            return None;
        }
        let mut v: Vec<i64> = self.recent_ms.iter().copied().collect();
        v.sort_unstable();
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some(LagStats { p50: at(0.50), p95: at(0.95), p99: at(0.99), count: v.len() })
    }
}

/// Lag percentiles (ms) from the change's commit to the sink applying it.
#[derive(Debug, Clone, Serialize)]
pub struct LagStats {
    /// Median.
    pub p50: i64,
    /// 95th percentile.
    pub p95: i64,
    /// 99th percentile.
    pub p99: i64,
    /// Events the figures cover (the most recent ones).
    pub count: usize,
}

impl SinkCore {
    /// A fresh core; `dedupe_window` is how many recent event ids are remembered.
    pub fn new(spec: Spec, model: OnlineModel, dedupe_window: usize) -> Self {
        let n = spec.features.len();
        Self {
            plan: FieldPlan::new(&spec.features, &spec.label),
            spec,
            records: Map::default(),
            live_records: 0,
            recent: RecentIds::with_capacity(dedupe_window),
            model,
            counters: Counters::default(),
            last_event_id: None,
            seq: 0,
            fresh_ids: 0,
            x: vec![0.0; n],
            lag: Lag::default(),
        }
    }

    /// After loading a checkpoint: restore buffers and the dedupe capacity.
    pub fn restored(mut self, dedupe_window: usize) -> Self {
        self.x = vec![0.0; self.spec.features.len()];
        self.plan = FieldPlan::new(&self.spec.features, &self.spec.label);
        self.recent.capacity = self.recent.capacity.max(dedupe_window);
        self
    }

    /// What this core learns.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Parse and apply one message body. State changes only when the outcome is
    /// [`Outcome::Applied`].
    pub fn apply_bytes(&mut self, body: &[u8]) -> Outcome {
        let ev = match serde_json::from_slice::<ChangeEventRef<'_>>(body) {
            Ok(ev) => ev,
            Err(_) if event::is_control(body) => return self.apply_control(body),
            // serde_json reports some wrong types (a number where an enum goes) as syntax
            // errors, so check the JSON itself before saying it is not JSON.
            Err(e) if e.is_data() || serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() => {
                return self.poison(format!("not the event contract: {e}"));
            }
            Err(e) => return self.poison(format!("not JSON: {e}")),
        };
        if let Err(reason) = ev.validate() {
            return self.poison(format!("not the event contract: {reason}"));
        }
        let fp = fingerprint(&ev.id);
        if self.recent.contains(fp) {
            self.counters.duplicates_skipped += 1;
            return Outcome::Duplicate;
        }
        let existing = self.records.get(&*ev.source.collection).and_then(|c| c.get(&*ev.key));
        if existing.is_some_and(|r| ev.source.cluster_time < r.cluster_time) {
            self.counters.stale_skipped += 1;
            return Outcome::Stale;
        }

        // A snapshot row carrying exactly the document held (a row read again after a crash,
        // or a document the stream already delivered) changes nothing and teaches nothing.
        if ev.op == Op::Read
            && let (Some(rec), Some(after)) = (existing, ev.after)
            && rec.doc.as_deref().is_some_and(|d| d.get() == after.get())
        {
            let rec = self.records.get_mut(&*ev.source.collection).and_then(|c| c.get_mut(&*ev.key));
            if let Some(rec) = rec {
                rec.last_id.clear();
                rec.last_id.push_str(&ev.id);
                rec.ts_ms = ev.ts_ms;
                rec.cluster_time = ev.source.cluster_time;
                rec.dirty = true;
            }
            self.counters.unchanged_skipped += 1;
            return self.applied(fp, &ev.id, false, ev.ts_ms);
        }

        // Learn first: it is the only step that can fail, and a failure must change nothing.
        let mut trained = false;
        let learns =
            self.spec.collections.is_empty() || self.spec.collections.iter().any(|c| *c == ev.source.collection);
        if let (true, Some(after)) = (learns && ev.op != Op::Delete, ev.after) {
            let label = match self.plan.extract(after.get(), &mut self.x) {
                Ok(label) => label,
                Err(reason) => return self.poison(reason),
            };
            if let Some(label) = label {
                if let Err(e) = self.model.predict_then_learn(&self.x, &label) {
                    return self.poison(format!("label `{}`: {e}", self.spec.label));
                }
                trained = true;
            }
        }

        let coll = match self.records.get_mut(&*ev.source.collection) {
            Some(c) => c,
            None => self.records.entry(ev.source.collection.to_string()).or_default(),
        };
        let rec = match coll.get_mut(&*ev.key) {
            Some(r) => r,
            None => coll.entry(ev.key.to_string()).or_insert_with(|| Record {
                doc: None,
                version: 0,
                last_id: String::new(),
                ts_ms: 0,
                cluster_time: ev.source.cluster_time,
                dirty: true,
            }),
        };
        let was_live = rec.doc.is_some();
        match (ev.op, ev.after) {
            (Op::Delete, _) => rec.doc = None,
            (_, Some(after)) => rec.doc = Some(after.to_owned()),
            // An update whose lookup found nothing (deleted since) keeps the last document;
            // the delete that follows removes it.
            (_, None) => {}
        }
        rec.version += 1;
        rec.dirty = true;
        rec.last_id.clear();
        rec.last_id.push_str(&ev.id);
        rec.ts_ms = ev.ts_ms;
        rec.cluster_time = ev.source.cluster_time;
        match (was_live, rec.doc.is_some()) {
            (false, true) => self.live_records += 1,
            (true, false) => self.live_records -= 1,
            _ => {}
        }
        self.applied(fp, &ev.id, trained, ev.ts_ms)
    }

    /// Remember an applied event.
    fn applied(&mut self, fp: u128, id: &str, trained: bool, ts_ms: i64) -> Outcome {
        self.remember(fp, id);
        self.counters.events_applied += 1;
        Outcome::Applied { trained, ts_ms }
    }

    fn remember(&mut self, fp: u128, id: &str) {
        self.recent.insert(fp);
        self.fresh_ids += 1;
        match &mut self.last_event_id {
            Some(last) => {
                last.clear();
                last.push_str(id);
            }
            None => self.last_event_id = Some(id.to_string()),
        }
    }

    /// A snapshot control message. At a collection's `end`, every live record of it that was
    /// last changed at or before the snapshot's `since` was neither delivered by the snapshot
    /// nor touched by a later change: it no longer exists in MongoDB (deleted while the
    /// bridge had lost its place), so it is removed. Control messages are never poison: one
    /// this build cannot read is counted and skipped.
    fn apply_control(&mut self, body: &[u8]) -> Outcome {
        let ctl: ControlEvent = match serde_json::from_slice(body) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "skipping a snapshot control message this build cannot read");
                self.counters.snapshot_controls += 1;
                return Outcome::Control;
            }
        };
        let fp = fingerprint(&ctl.id);
        if self.recent.contains(fp) {
            self.counters.duplicates_skipped += 1;
            return Outcome::Duplicate;
        }
        if ctl.snapshot.phase == Phase::End
            && let Some(coll) = self.records.get_mut(&ctl.source.collection)
        {
            let since = ctl.snapshot.since;
            let mut removed = 0;
            for rec in coll.values_mut().filter(|r| r.doc.is_some() && r.cluster_time <= since) {
                rec.doc = None;
                rec.version += 1;
                rec.last_id.clone_from(&ctl.id);
                rec.ts_ms = ctl.ts_ms;
                rec.cluster_time = since;
                rec.dirty = true;
                removed += 1;
            }
            self.live_records -= removed;
            self.counters.reconciled_deletes += removed;
            if removed > 0 {
                tracing::info!(collection = %ctl.source.collection, removed, "reconciled records the snapshot did not deliver");
            }
        }
        self.remember(fp, &ctl.id);
        self.counters.snapshot_controls += 1;
        Outcome::Control
    }

    fn poison(&mut self, reason: String) -> Outcome {
        self.counters.dead_lettered += 1;
        Outcome::Poison(reason)
    }

    /// Sequence number of the last checkpoint write this state contains.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Set by the checkpoint writer.
    pub fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
    }

    /// What changed since the last checkpoint write, as delta `seq`.
    pub fn delta(&self, seq: u64) -> DeltaRef<'_> {
        let records = self
            .records
            .iter()
            .flat_map(|(c, m)| m.iter().filter(|(_, r)| r.dirty).map(move |(k, r)| (c.as_str(), k.as_str(), r)))
            .collect();
        let fresh = self.fresh_ids.min(self.recent.order.len());
        DeltaRef {
            seq,
            records,
            recent: self.recent.order.iter().skip(self.recent.order.len() - fresh).copied().collect(),
            model: &self.model,
            counters: &self.counters,
            live_records: self.live_records,
            last_event_id: &self.last_event_id,
        }
    }

    /// Everything so far is in a checkpoint.
    pub fn mark_saved(&mut self) {
        self.records.values_mut().flat_map(|m| m.values_mut()).for_each(|r| r.dirty = false);
        self.fresh_ids = 0;
    }

    /// Replay a delta read back from disk.
    pub fn apply_delta(&mut self, d: Delta) {
        for (c, k, r) in d.records {
            self.records.entry(c).or_default().insert(k, r);
        }
        for fp in d.recent {
            self.recent.insert(fp);
        }
        self.model = d.model;
        self.counters = d.counters;
        self.live_records = d.live_records;
        self.last_event_id = d.last_event_id;
        self.seq = d.seq;
    }

    /// Note that an event with wall time `ts_ms` was applied at `now_ms`.
    pub fn record_lag(&mut self, ts_ms: i64, now_ms: i64) {
        self.lag.record(now_ms - ts_ms);
    }

    /// One record.
    pub fn record(&self, collection: &str, key: &str) -> Option<&Record> {
        self.records.get(collection)?.get(key)
    }

    /// Live (not deleted) records in `collection`, or in all collections.
    pub fn live_records(&self, collection: Option<&str>) -> u64 {
        match collection {
            None => self.live_records,
            Some(c) => self.records.get(c).map_or(0, |m| m.values().filter(|r| r.doc.is_some()).count() as u64),
        }
    }

    /// Predict for a document shaped like the records.
    pub fn predict(&self, doc: &Value) -> Result<crate::ml::Prediction, String> {
        let x = features::extract_strict(doc, &self.spec.features)?;
        self.model.predict(&x).map_err(|e| e.to_string())
    }

    /// The figures served by `/stats`.
    pub fn stats(&self) -> Stats {
        Stats {
            counters: self.counters.clone(),
            records: self.live_records,
            last_event_id: self.last_event_id.clone(),
            lag_ms: self.lag.percentiles(),
            model: self.model.stats(),
        }
    }
}

/// What changed since the last checkpoint write (written by `sink::checkpoint`).
#[derive(Serialize)]
pub struct DeltaRef<'a> {
    seq: u64,
    records: Vec<(&'a str, &'a str, &'a Record)>,
    recent: Vec<u128>,
    model: &'a OnlineModel,
    counters: &'a Counters,
    live_records: u64,
    last_event_id: &'a Option<String>,
}

/// A [`DeltaRef`] read back.
#[derive(Deserialize)]
pub struct Delta {
    seq: u64,
    records: Vec<(String, String, Record)>,
    recent: Vec<u128>,
    model: OnlineModel,
    counters: Counters,
    live_records: u64,
    last_event_id: Option<String>,
}

/// The body of `/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Event counters.
    #[serde(flatten)]
    pub counters: Counters,
    /// Live records.
    pub records: u64,
    /// Id of the newest event applied.
    pub last_event_id: Option<String>,
    /// Commit-to-applied lag over the last 10,000 events (null before any).
    pub lag_ms: Option<LagStats>,
    /// Model figures.
    pub model: ModelStats,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::{ModelConfig, Task};

    fn core() -> SinkCore {
        let spec = Spec { features: vec!["x".into()], label: "y".into(), collections: vec![] };
        SinkCore::new(spec, OnlineModel::new(ModelConfig::new(Task::Classification), 1).unwrap(), 100)
    }

    fn reason(o: Outcome) -> String {
        match o {
            Outcome::Poison(r) => r,
            other => panic!("not poison: {other:?}"),
        }
    }

    #[test]
    fn poison_reasons_say_what_is_wrong() {
        let mut c = core();
        assert!(reason(c.apply_bytes(b"{nope")).starts_with("not JSON"));
        let wrong_op = br#"{"id":"a","op":5,"key":"k","after":{"x":1},"source":{"db":"d","collection":"c","cluster_time":{"t":1,"i":1}},"ts_ms":1}"#;
        assert!(reason(c.apply_bytes(wrong_op)).starts_with("not the event contract"));
        let deep = format!(
            r#"{{"id":"a","op":"c","key":"k","after":{{"x":1,"d":{}1{}}},"source":{{"db":"d","collection":"c","cluster_time":{{"t":1,"i":1}}}},"ts_ms":1}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(reason(c.apply_bytes(deep.as_bytes())).contains("deeper"));
        assert_eq!(c.stats().counters.dead_lettered, 3);
        assert_eq!(c.stats().counters.events_applied, 0);
    }
}
