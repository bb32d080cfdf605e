//! The sink's in-process core: parse an event, recognise duplicates and stale events, apply
//! it to the versioned records, and predict-then-learn. No I/O, so it can be benchmarked and
//! checkpointed whole.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::features;
use crate::event::{ChangeEvent, ClusterTime, Op};
use crate::ml::{ModelStats, OnlineModel};

/// The current state of one record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The document; `None` once deleted.
    pub doc: Option<Map<String, Value>>,
    /// 1 for the insert, +1 for every later change (deletes included).
    pub version: u64,
    /// Id of the last event applied.
    pub last_id: String,
    /// `ts_ms` of the last event applied.
    pub ts_ms: i64,
    /// Cluster time of the last event applied; older events are stale.
    pub cluster_time: ClusterTime,
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
}

/// Ids of the most recently applied events, to recognise redeliveries. Bounded: a redelivery
/// comes within the unacknowledged window, which is far smaller than the capacity.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(from = "Vec<String>", into = "Vec<String>")]
pub struct RecentIds {
    order: VecDeque<String>,
    set: HashSet<String>,
    capacity: usize,
}

impl From<Vec<String>> for RecentIds {
    fn from(v: Vec<String>) -> Self {
        let set = v.iter().cloned().collect();
        Self { capacity: v.len(), order: v.into(), set }
    }
}

impl From<RecentIds> for Vec<String> {
    fn from(r: RecentIds) -> Self {
        r.order.into()
    }
}

impl RecentIds {
    fn with_capacity(capacity: usize) -> Self {
        Self { order: VecDeque::with_capacity(capacity), set: HashSet::with_capacity(capacity), capacity }
    }

    fn contains(&self, id: &str) -> bool {
        self.set.contains(id)
    }

    fn insert(&mut self, id: &str) {
        if self.order.len() >= self.capacity.max(1) {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(id.to_string());
        self.set.insert(id.to_string());
    }
}

/// Records, model and counters: everything a checkpoint holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkCore {
    spec: Spec,
    records: HashMap<String, HashMap<String, Record>>,
    live_records: u64,
    recent: RecentIds,
    model: OnlineModel,
    counters: Counters,
    last_event_id: Option<String>,
    #[serde(skip)]
    x: Vec<f64>,
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
            spec,
            records: HashMap::new(),
            live_records: 0,
            recent: RecentIds::with_capacity(dedupe_window),
            model,
            counters: Counters::default(),
            last_event_id: None,
            x: vec![0.0; n],
            lag: Lag::default(),
        }
    }

    /// After loading a checkpoint: restore buffers and the dedupe capacity.
    pub fn restored(mut self, dedupe_window: usize) -> Self {
        self.x = vec![0.0; self.spec.features.len()];
        self.recent.capacity = self.recent.capacity.max(dedupe_window);
        self
    }

    /// What this core learns.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Parse and apply one message body.
    pub fn apply_bytes(&mut self, body: &[u8]) -> Outcome {
        match serde_json::from_slice::<ChangeEvent>(body) {
            Ok(ev) => self.apply(&ev),
            Err(e) if e.is_data() => self.poison(format!("not the event contract: {e}")),
            Err(e) => self.poison(format!("not JSON: {e}")),
        }
    }

    fn poison(&mut self, reason: String) -> Outcome {
        self.counters.dead_lettered += 1;
        Outcome::Poison(reason)
    }

    /// Apply one event. State changes only when the outcome is [`Outcome::Applied`].
    pub fn apply(&mut self, ev: &ChangeEvent) -> Outcome {
        if self.recent.contains(&ev.id) {
            self.counters.duplicates_skipped += 1;
            return Outcome::Duplicate;
        }
        let existing = self.records.get(&ev.source.collection).and_then(|c| c.get(&ev.key));
        if existing.is_some_and(|r| ev.source.cluster_time < r.cluster_time) {
            self.counters.stale_skipped += 1;
            return Outcome::Stale;
        }
        if ev.op != Op::Delete && ev.after.is_none() && ev.op != Op::Update {
            return self.poison(format!("op `{}` without `after`", ev.op.code()));
        }

        // Learn first: it is the only step that can fail, and a failure must change nothing.
        let mut trained = false;
        let learns = self.spec.collections.is_empty() || self.spec.collections.contains(&ev.source.collection);
        if let (true, Some(after)) = (learns && ev.op != Op::Delete, &ev.after) {
            if let Some(label) = features::lookup(after, &self.spec.label).filter(|v| !v.is_null()) {
                if let Err(reason) = features::extract_into(after, &self.spec.features, &mut self.x) {
                    return self.poison(reason);
                }
                if let Err(e) = self.model.predict_then_learn(&self.x, label) {
                    return self.poison(format!("label `{}`: {e}", self.spec.label));
                }
                trained = true;
            }
        }

        let coll = self.records.entry(ev.source.collection.clone()).or_default();
        let rec = coll.entry(ev.key.clone()).or_insert_with(|| Record {
            doc: None,
            version: 0,
            last_id: String::new(),
            ts_ms: 0,
            cluster_time: ev.source.cluster_time,
        });
        let was_live = rec.doc.is_some();
        match ev.op {
            Op::Delete => rec.doc = None,
            // An update whose lookup found nothing (deleted since) keeps the last document;
            // the delete that follows removes it.
            _ => {
                if let Some(after) = &ev.after {
                    rec.doc = Some(after.clone());
                }
            }
        }
        rec.version += 1;
        rec.last_id.clone_from(&ev.id);
        rec.ts_ms = ev.ts_ms;
        rec.cluster_time = ev.source.cluster_time;
        match (was_live, rec.doc.is_some()) {
            (false, true) => self.live_records += 1,
            (true, false) => self.live_records -= 1,
            _ => {}
        }
        self.recent.insert(&ev.id);
        self.counters.events_applied += 1;
        self.last_event_id = Some(ev.id.clone());
        Outcome::Applied { trained, ts_ms: ev.ts_ms }
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
