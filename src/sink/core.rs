//! The sink's in-process core: parse an event, recognise duplicates and stale events, apply
//! it to the versioned records, and let every model that reads the collection score and learn
//! it when what it learns from changed; drift detections become alerts. Records are read
//! through [`Records`] (from the state store when there is one); nothing else here does I/O,
//! so the core can be benchmarked in memory.

use std::collections::{BTreeMap, HashSet, VecDeque};

use foldhash::fast::RandomState;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use smallvec::SmallVec;

use super::analytics::Analytics;
use super::decode::{Change, Decoded, Decoder, Delivery, Position, Skipped, Truncate};
use super::features::{Capture, FieldPlan};
use super::learner::{Decision, Learner, ModelReport};
use super::rules::Rule;
use super::schema::{DEFAULT_SCHEMA_WARMUP, Schemas};
use super::spec::{DEFAULT_MODEL, ModelSpec};
pub use super::state::{Record, Row};
use super::state::{Records, StoreError};
use crate::event::{ControlEvent, Op, Phase};
use crate::ml::{MlError, Prediction};

/// What applying one message did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Applied to the records; `trained` says whether a model learned from it.
    Applied {
        /// At least one model learned from this event.
        trained: bool,
        /// The event's wall time, ms since the epoch (for lag).
        ts_ms: i64,
    },
    /// A snapshot control message, applied (at a collection's `end`, records the snapshot did
    /// not deliver were removed).
    Control,
    /// Already applied (same event id).
    Duplicate,
    /// Carries no change (a tombstone, heartbeat, schema change): counted and skipped.
    Ignored,
    /// Older than what the record already holds.
    Stale,
    /// Unusable: goes to the dead-letter queue with this reason.
    Poison(String),
    /// The state store failed (the reason); nothing changed, the message must come again.
    Unavailable(String),
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
    /// Events applied to the records without teaching any model, because for every model
    /// that reads them nothing it learns from changed: snapshot rows identical to the record
    /// held, and changes whose columns and label are what each model last learned for the key
    /// (a backlog's repeated lookups, edits of other fields). Per model in `models`.
    #[serde(default)]
    pub unchanged_skipped: u64,
    /// Records removed at the end of a collection's snapshot because the snapshot did not
    /// deliver them and no later change touched them (deleted while the bridge had lost its place).
    #[serde(default)]
    pub reconciled_deletes: u64,
    /// Snapshot control messages applied.
    #[serde(default)]
    pub snapshot_controls: u64,
    /// Drift detections, all models together.
    #[serde(default)]
    pub drift_alerts: u64,
    /// Messages that carry no change, skipped (Debezium tombstones, heartbeats, schema
    /// changes, transaction markers).
    #[serde(default)]
    pub ignored: Ignored,
    /// Tables emptied by a truncate (Debezium PostgreSQL's `t`).
    #[serde(default)]
    pub truncates: u64,
    /// Anomaly alerts, all anomaly models together.
    #[serde(default)]
    pub anomaly_alerts: u64,
    /// Rule alerts, all rules together.
    #[serde(default)]
    pub rule_alerts: u64,
    /// Schema change alerts.
    #[serde(default)]
    pub schema_alerts: u64,
}

/// Messages skipped because they carry no change, by kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ignored {
    /// Empty values (`null`, or Debezium Server's `null.value`).
    pub tombstones: u64,
    /// Heartbeats.
    pub heartbeats: u64,
    /// Schema changes (DDL).
    pub schema_changes: u64,
    /// Transaction markers and logical decoding messages.
    pub other: u64,
}

/// An alert, as `/alerts` serves it and `<queue>.alerts` carries it: `kind` (`anomaly`,
/// `rule`, `schema` or `drift`), `id` and `ts_ms` always; the rest per kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `anomaly`, `rule`, `schema` or `drift`.
    pub kind: String,
    /// Derived from the event's id and what raised it (model, rule, field and type), so
    /// seeing the event again (after a crash) gives the same id: consumers dedupe on it.
    pub id: String,
    /// `ts_ms` of the event that raised it.
    pub ts_ms: i64,
    /// The record's collection (anomaly, rule, schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// The record's key (anomaly, rule, schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The model (anomaly, drift).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Samples the model had learned when the detector fired, this one included (drift).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained: Option<u64>,
    /// The anomaly score in [0, 1] (anomaly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The features that weighed most in the score, largest first (anomaly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_features: Option<Vec<String>>,
    /// The rule's name (rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The field path (schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The types the field had before, none for a new field (schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub was: Option<Vec<String>>,
    /// The type it has now (schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<String>,
}

/// Alerts kept for `/alerts`.
pub const ALERTS_KEPT: usize = 1_000;

/// The latest alerts, and those not yet published.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Alerts {
    recent: VecDeque<Alert>,
    /// Raised since the last checkpoint write: published before the next one is written,
    /// which stores them.
    #[serde(skip)]
    unpublished: Vec<Alert>,
}

impl Alerts {
    fn keep(&mut self, a: Alert) {
        if self.recent.len() >= ALERTS_KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back(a);
    }
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

/// Records, models, alerts and counters: everything a checkpoint holds. Serialised, it is
/// the checkpoint's `core` value; the records, the duplicate memory and the recent alerts
/// have tables of their own (see [`super::checkpoint`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct SinkCore {
    learners: Vec<Learner>,
    #[serde(skip)]
    records: Records,
    live_records: u64,
    #[serde(skip)]
    recent: RecentIds,
    /// Event ids ever remembered: numbers the duplicate memory's rows.
    #[serde(default)]
    remembered: u64,
    counters: Counters,
    last_event_id: Option<String>,
    #[serde(skip)]
    alerts: Alerts,
    /// Alerts ever raised: numbers the alerts' rows.
    #[serde(default)]
    raised: u64,
    /// With a stream queue: the offset of the last message applied (consuming resumes after it).
    #[serde(default)]
    stream_offset: Option<u64>,
    /// Windowed counts and measures of the events applied.
    #[serde(default)]
    analytics: Analytics,
    /// Each collection's inferred schema.
    #[serde(default)]
    schemas: Schemas,
    /// The declared rules (configuration, not state).
    #[serde(skip)]
    rules: Vec<Rule>,
    /// Events per collection before schema changes alert.
    #[serde(skip, default = "default_schema_warmup")]
    schema_warmup: u64,
    /// Fingerprints added to `recent` since the last checkpoint write.
    #[serde(skip)]
    fresh_ids: usize,
    /// Every field any model reads, captured in one pass.
    #[serde(skip)]
    plan: FieldPlan,
    #[serde(skip)]
    capture: Capture,
    #[serde(skip)]
    decisions: Vec<Decision>,
    #[serde(skip)]
    lag: Lag,
    /// Reads message bodies in the configured input format.
    #[serde(skip)]
    decoder: Decoder,
}

fn default_schema_warmup() -> u64 {
    DEFAULT_SCHEMA_WARMUP
}

/// Why `/predict` cannot answer.
#[derive(Debug, Clone, PartialEq)]
pub enum PredictError {
    /// No model has this name.
    UnknownModel(String),
    /// The document cannot be read (the reason).
    BadDocument(String),
}

/// The plan capturing every feature and label of `specs`.
fn plan_for<'a>(specs: impl Iterator<Item = &'a ModelSpec> + Clone) -> FieldPlan {
    let features = specs.clone().flat_map(|s| s.features.iter().map(|f| f.path.as_str()));
    FieldPlan::new(features.chain(specs.filter(|s| s.anomaly.is_none()).map(|s| s.label.as_str())))
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
    /// A fresh core training one model per spec (at least one); `dedupe_window` is how many
    /// recent event ids are remembered.
    pub fn new(specs: Vec<ModelSpec>, dedupe_window: usize) -> Result<Self, MlError> {
        if specs.is_empty() {
            return Err(MlError::Config("the sink needs at least one model"));
        }
        let plan = plan_for(specs.iter());
        let learners = specs.into_iter().map(|s| Learner::new(s, &plan)).collect::<Result<_, _>>()?;
        Ok(Self {
            learners,
            plan,
            records: Records::default(),
            live_records: 0,
            recent: RecentIds::with_capacity(dedupe_window),
            remembered: 0,
            counters: Counters::default(),
            last_event_id: None,
            alerts: Alerts::default(),
            raised: 0,
            stream_offset: None,
            analytics: Analytics::default(),
            schemas: Schemas::default(),
            rules: Vec::new(),
            schema_warmup: DEFAULT_SCHEMA_WARMUP,
            fresh_ids: 0,
            capture: Capture::default(),
            decisions: Vec::new(),
            lag: Lag::default(),
            decoder: Decoder::default(),
        })
    }

    /// After loading a checkpoint: rebuild the plan, attach the models to it and restore the
    /// dedupe capacity; fails if a model's state does not fit its spec.
    pub fn restored(mut self, dedupe_window: usize) -> Result<Self, String> {
        if self.learners.is_empty() {
            return Err("it holds no model".into());
        }
        self.plan = plan_for(self.learners.iter().map(Learner::spec));
        for l in &mut self.learners {
            l.bind(&self.plan)?;
        }
        self.recent.capacity = self.recent.capacity.max(dedupe_window);
        Ok(self)
    }

    /// Declare the rules and the schema warm-up (configuration: not checkpointed).
    pub fn configure_alerts(&mut self, rules: Vec<Rule>, schema_warmup: u64) {
        self.rules = rules;
        self.schema_warmup = schema_warmup;
    }

    /// Each collection's inferred schema.
    pub fn schemas(&self) -> &Schemas {
        &self.schemas
    }

    /// The models' specs, in order.
    pub fn specs(&self) -> impl Iterator<Item = &ModelSpec> {
        self.learners.iter().map(Learner::spec)
    }

    /// Check that a restored core trains the models `specs` describe (same names in the same
    /// order, and nothing its state depends on changed); adopt their collections. The error
    /// says what differs, naming settings with `name` (the models file's key -> how the user
    /// set it).
    pub fn adopt(&mut self, specs: &[ModelSpec], name: impl Fn(&'static str) -> String) -> Result<(), String> {
        let names = |s: &mut dyn Iterator<Item = &ModelSpec>| s.map(|m| m.name.clone()).collect::<Vec<_>>().join(", ");
        if specs.len() != self.learners.len() || specs.iter().zip(&self.learners).any(|(s, l)| s.name != l.spec().name)
        {
            return Err(format!("models were {}", names(&mut self.specs())));
        }
        for (s, l) in specs.iter().zip(&self.learners) {
            if let Some((setting, was)) = s.differs_from(l.spec()) {
                return Err(format!("model `{}`: {} was {was}", s.name, name(setting)));
            }
        }
        for (s, l) in specs.iter().zip(&mut self.learners) {
            l.set_collections(s.collections.clone());
        }
        Ok(())
    }

    /// How message bodies are read (`SINK_INPUT` and the Debezium key settings).
    pub fn set_decoder(&mut self, decoder: Decoder) {
        self.decoder = decoder;
    }

    /// Parse and apply one message body. State changes only when the outcome is
    /// [`Outcome::Applied`].
    pub fn apply_bytes(&mut self, body: &[u8]) -> Outcome {
        self.apply_delivery(&Delivery::body(body))
    }

    /// Decode and apply one delivery (its body, routing key and key header).
    pub fn apply_delivery(&mut self, delivery: &Delivery<'_>) -> Outcome {
        match self.decoder.decode(delivery) {
            Decoded::Change(ev) => self.apply_change(ev),
            Decoded::Control => self.apply_control(delivery.body),
            Decoded::Truncate(t) => self.apply_truncate(t),
            Decoded::Skipped(kind) => {
                let n = &mut self.counters.ignored;
                match kind {
                    Skipped::Tombstone => n.tombstones += 1,
                    Skipped::Heartbeat => n.heartbeats += 1,
                    Skipped::SchemaChange => n.schema_changes += 1,
                    Skipped::Other => n.other += 1,
                }
                Outcome::Ignored
            }
            Decoded::Poison(reason) => self.poison(reason),
        }
    }

    /// Apply one change, whatever format it came in.
    pub fn apply_change(&mut self, ev: Change<'_>) -> Outcome {
        let fp = fingerprint(&ev.id);
        if self.recent.contains(fp) {
            self.counters.duplicates_skipped += 1;
            return Outcome::Duplicate;
        }
        if let Err(e) = self.records.fetch(&ev.collection, &ev.key) {
            return Outcome::Unavailable(e.to_string());
        }
        let existing = self.records.get(&ev.collection, &ev.key);
        // A replay older than the dedupe memory is still recognised: the record's last event,
        // by its id at the same position; anything older is stale.
        if existing.is_some_and(|r| r.position == ev.position && r.last_id == ev.id) {
            self.counters.duplicates_skipped += 1;
            return Outcome::Duplicate;
        }
        if existing.is_some_and(|r| ev.position < r.position) {
            self.counters.stale_skipped += 1;
            return Outcome::Stale;
        }

        // A snapshot row carrying exactly the document held (a row read again after a crash,
        // or a document the stream already delivered) changes nothing and teaches nothing.
        if ev.op == Op::Read
            && let (Some(rec), Some(after)) = (existing, ev.after.as_deref())
            && rec.doc.as_deref().is_some_and(|d| d.get() == after.get())
        {
            if let Some(rec) = self.records.get_mut(&ev.collection, &ev.key) {
                rec.last_id.clear();
                rec.last_id.push_str(&ev.id);
                rec.ts_ms = ev.ts_ms;
                rec.position = ev.position;
                rec.dirty = true;
            }
            self.counters.unchanged_skipped += 1;
            return self.applied(fp, &ev.id, false, ev.ts_ms);
        }

        // Learn first: it is the only step that can fail, and a failure must change nothing.
        // Every model reads its sample and checks its label before any learns.
        let coll_name = &*ev.collection;
        let mut raised: SmallVec<[Alert; 1]> = SmallVec::new();
        let mut learned: SmallVec<[(usize, u64); 4]> = SmallVec::new();
        if let (false, Some(after)) = (ev.op == Op::Delete, ev.after.as_deref())
            && self.learners.iter().any(|l| l.spec().learns_from(coll_name))
        {
            if let Err(reason) = self.plan.capture(after.get(), &mut self.capture) {
                return self.poison(reason);
            }
            let last: &[u64] = existing.map_or(&[], |r| &r.learned);
            let mut decisions = std::mem::take(&mut self.decisions);
            decisions.clear();
            let mut failed = None;
            for (i, l) in self.learners.iter_mut().enumerate() {
                if !l.spec().learns_from(coll_name) {
                    decisions.push(Decision::Skip);
                    continue;
                }
                match l.prepare(&self.capture, last.get(i).copied().filter(|&fp| fp != 0)) {
                    Ok(d) => decisions.push(d),
                    Err(reason) => {
                        failed = Some(reason);
                        break;
                    }
                }
            }
            if let Some(reason) = failed {
                self.decisions = decisions;
                return self.poison(reason);
            }
            let mut unchanged = false;
            for (i, d) in decisions.iter().enumerate() {
                match *d {
                    Decision::Skip => {}
                    Decision::Unchanged => {
                        self.learners[i].skip_unchanged();
                        unchanged = true;
                    }
                    Decision::Learn(sample) => {
                        let outcome = match self.learners[i].learn() {
                            Ok(e) => e,
                            // prepare checked the sample and the label.
                            Err(e) => {
                                self.decisions = decisions;
                                return self.poison(format!("model `{}`: {e}", self.learners[i].spec().name));
                            }
                        };
                        learned.push((i, sample));
                        if let Some(e) = outcome.drift {
                            let model = self.learners[i].spec().name.clone();
                            raised.push(Alert {
                                kind: "drift".into(),
                                id: alert_id(&ev.id, &model),
                                model: Some(model),
                                trained: Some(e.trained),
                                ts_ms: ev.ts_ms,
                                ..Alert::default()
                            });
                        }
                        if let Some(a) = outcome.anomaly.filter(|a| a.alert) {
                            let l = &self.learners[i];
                            let model = l.spec().name.clone();
                            let top = a.top_features.iter().take(3).filter_map(|&c| l.column_name(c)).map(String::from);
                            let top_features = Some(top.collect());
                            raised.push(Alert {
                                kind: "anomaly".into(),
                                id: alert_id(&ev.id, &format!("anomaly\0{model}")),
                                ts_ms: ev.ts_ms,
                                collection: Some(coll_name.to_string()),
                                key: Some(ev.key.to_string()),
                                model: Some(model),
                                score: Some(a.score),
                                top_features,
                                ..Alert::default()
                            });
                        }
                    }
                }
            }
            self.decisions = decisions;
            if unchanged && learned.is_empty() {
                self.counters.unchanged_skipped += 1;
            }
        }
        let trained = !learned.is_empty();
        for a in raised {
            self.raise(a);
        }
        if let (false, Some(after)) = (ev.op == Op::Delete, ev.after.as_deref()) {
            self.watch(&ev, coll_name, after.get());
        }
        // Counted here, where nothing can fail any more, and before the record changes: a
        // delete's measures read the document held when the message has no `before`.
        let held = (ev.op == Op::Delete)
            .then(|| self.records.get(coll_name, &ev.key).and_then(|r| r.doc.as_deref()))
            .flatten();
        self.analytics.observe(&ev, held);

        let rec = self.records.entry(&ev.collection, &ev.key, ev.position);
        let was_live = rec.doc.is_some();
        match (ev.op, ev.after.as_deref()) {
            (Op::Delete, _) => {
                rec.doc = None;
                rec.learned.clear();
            }
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
        rec.position = ev.position;
        if let Some(&(last, _)) = learned.last() {
            if rec.learned.len() <= last {
                rec.learned.resize(self.learners.len(), 0);
            }
            for (i, sample) in learned {
                rec.learned[i] = sample;
            }
        }
        match (was_live, rec.doc.is_some()) {
            (false, true) => self.live_records += 1,
            (true, false) => self.live_records -= 1,
            _ => {}
        }
        self.applied(fp, &ev.id, trained, ev.ts_ms)
    }

    /// Schema inference and the rules, on a change whose document is `after`, before the
    /// record takes it (the rules' edges compare with the document held).
    fn watch(&mut self, ev: &Change<'_>, collection: &str, after: &str) {
        let key = || Some(ev.key.to_string());
        for change in self.schemas.observe(collection, after, self.schema_warmup) {
            let id = alert_id(&ev.id, &format!("schema\0{}\0{}", change.field, change.now));
            self.raise(Alert {
                kind: "schema".into(),
                id,
                ts_ms: ev.ts_ms,
                collection: Some(collection.to_string()),
                key: key(),
                field: Some(change.field),
                was: Some(change.was),
                now: Some(change.now),
                ..Alert::default()
            });
        }
        if !self.rules.iter().any(|r| r.watches(collection)) {
            return;
        }
        let Ok(doc) = serde_json::from_str::<Value>(after) else { return };
        let held = self.records.get(collection, &ev.key).and_then(|r| r.doc.as_deref());
        let before: Option<Value> = held.and_then(|d| serde_json::from_str(d.get()).ok());
        let fired: Vec<String> = self
            .rules
            .iter()
            .filter(|r| r.watches(collection) && r.fires(before.as_ref(), &doc))
            .map(|r| r.name.clone())
            .collect();
        for rule in fired {
            self.raise(Alert {
                kind: "rule".into(),
                id: alert_id(&ev.id, &format!("rule\0{rule}")),
                ts_ms: ev.ts_ms,
                collection: Some(collection.to_string()),
                key: key(),
                rule: Some(rule),
                ..Alert::default()
            });
        }
    }

    /// Keep an alert, to publish and to serve.
    fn raise(&mut self, alert: Alert) {
        let c = &mut self.counters;
        match alert.kind.as_str() {
            "drift" => {
                tracing::warn!(kind = "drift", model = ?alert.model, trained = ?alert.trained, id = %alert.id, "drift detected");
                c.drift_alerts += 1;
            }
            "anomaly" => {
                tracing::warn!(kind = "anomaly", model = ?alert.model, collection = ?alert.collection, key = ?alert.key, score = ?alert.score, id = %alert.id, "anomaly");
                c.anomaly_alerts += 1;
            }
            "rule" => {
                tracing::warn!(kind = "rule", rule = ?alert.rule, collection = ?alert.collection, key = ?alert.key, id = %alert.id, "rule fired");
                c.rule_alerts += 1;
            }
            _ => {
                tracing::warn!(kind = "schema", collection = ?alert.collection, field = ?alert.field, was = ?alert.was, now = ?alert.now, id = %alert.id, "schema changed");
                c.schema_alerts += 1;
            }
        }
        self.raised += 1;
        self.alerts.keep(alert.clone());
        self.alerts.unpublished.push(alert);
    }

    /// Remember an applied event.
    fn applied(&mut self, fp: u128, id: &str, trained: bool, ts_ms: i64) -> Outcome {
        self.remember(fp, id);
        self.counters.events_applied += 1;
        Outcome::Applied { trained, ts_ms }
    }

    fn remember(&mut self, fp: u128, id: &str) {
        self.recent.insert(fp);
        self.remembered += 1;
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
        if ctl.snapshot.phase == Phase::End {
            let since = Position::from(ctl.snapshot.since);
            let removed = match self.records.change_where(
                &ctl.source.collection,
                |r| r.doc.is_some() && r.position <= since,
                |rec| delete(rec, &ctl.id, ctl.ts_ms, since),
            ) {
                Ok(n) => n,
                Err(e) => return Outcome::Unavailable(e.to_string()),
            };
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

    /// A truncate: every live record of the table last changed at or before it is deleted.
    fn apply_truncate(&mut self, t: Truncate<'_>) -> Outcome {
        let fp = fingerprint(&t.id);
        if self.recent.contains(fp) {
            self.counters.duplicates_skipped += 1;
            return Outcome::Duplicate;
        }
        let removed = match self.records.change_where(
            &t.collection,
            |r| r.doc.is_some() && r.position <= t.position,
            |rec| delete(rec, &t.id, t.ts_ms, t.position),
        ) {
            Ok(n) => n,
            Err(e) => return Outcome::Unavailable(e.to_string()),
        };
        self.live_records -= removed;
        tracing::info!(table = %t.collection, removed, "truncated");
        self.counters.truncates += 1;
        self.applied(fp, &t.id, false, t.ts_ms)
    }

    fn poison(&mut self, reason: String) -> Outcome {
        self.counters.dead_lettered += 1;
        Outcome::Poison(reason)
    }

    /// The records, for the checkpoint to write the changed ones.
    pub(super) fn records(&self) -> &Records {
        &self.records
    }

    /// The event ids remembered since the last checkpoint write, each with its number.
    pub(super) fn fresh_ids(&self) -> impl Iterator<Item = (u64, u128)> + '_ {
        let fresh = self.fresh_ids.min(self.recent.order.len());
        let first = self.remembered - fresh as u64;
        self.recent.order.iter().skip(self.recent.order.len() - fresh).copied().zip(first..).map(|(fp, n)| (n, fp))
    }

    /// How many event ids the duplicate memory keeps, and how many were ever remembered.
    pub(super) fn dedupe_span(&self) -> (u64, u64) {
        (self.recent.capacity.max(1) as u64, self.remembered)
    }

    /// The alerts raised since the last checkpoint write, each with its number; and how many
    /// were ever raised.
    pub(super) fn numbered_alerts(&self) -> (impl Iterator<Item = (u64, &Alert)>, u64) {
        let first = self.raised - self.alerts.unpublished.len() as u64;
        ((first..).zip(&self.alerts.unpublished), self.raised)
    }

    /// After loading a checkpoint: the duplicate memory and the recent alerts, oldest first.
    pub(super) fn restore_memory(&mut self, ids: impl Iterator<Item = u128>, alerts: impl Iterator<Item = Alert>) {
        for fp in ids {
            self.recent.insert(fp);
        }
        for a in alerts {
            self.alerts.keep(a);
        }
    }

    /// Read records through `db` as it is now committed (after loading, and after each
    /// checkpoint); changed ones are written by the checkpoint.
    pub(super) fn attach_store(&mut self, db: &redb::Database) -> Result<(), StoreError> {
        self.records.attach(db)
    }

    /// The records changed since the last checkpoint write, for the mirrors: written before
    /// the checkpoint that marks them saved.
    pub fn changed_rows(&self) -> Vec<Row> {
        self.records.changed().map(|(c, k, r)| Row::of(c, k, r)).collect()
    }

    /// A page of up to `limit` records as the last checkpoint stored them, after the page
    /// ending at `after`; and where the next page starts (`None`: this was the last). For a
    /// mirror to catch up on every record without holding them all.
    pub fn stored_rows(&self, after: Option<&str>, limit: usize) -> Result<(Vec<Row>, Option<String>), StoreError> {
        let mut rows = Vec::new();
        let next = self.records.stored_page(after, limit, |c, k, r| rows.push(Row::of(c, k, r)))?;
        Ok((rows, next))
    }

    /// Everything so far is in a checkpoint (and its alerts were published before): the
    /// records held only for it are let go.
    pub fn mark_saved(&mut self) {
        self.fresh_ids = 0;
        self.alerts.unpublished.clear();
        self.records.saved();
    }

    /// Alerts raised since the last checkpoint write: to publish before writing the next.
    pub fn unpublished_alerts(&self) -> &[Alert] {
        &self.alerts.unpublished
    }

    /// The latest alerts, oldest first (at most [`ALERTS_KEPT`]).
    pub fn alerts(&self) -> &VecDeque<Alert> {
        &self.alerts.recent
    }

    /// The streaming analytics.
    pub fn analytics(&self) -> &Analytics {
        &self.analytics
    }

    /// The streaming analytics, to configure.
    pub fn analytics_mut(&mut self) -> &mut Analytics {
        &mut self.analytics
    }

    /// With a stream queue: the offset of the last message applied.
    pub fn stream_offset(&self) -> Option<u64> {
        self.stream_offset
    }

    /// The message at stream offset `offset` was applied (whatever its outcome).
    pub fn set_stream_offset(&mut self, offset: u64) {
        self.stream_offset = Some(offset);
    }

    /// Note that an event with wall time `ts_ms` was applied at `now_ms`.
    pub fn record_lag(&mut self, ts_ms: i64, now_ms: i64) {
        self.lag.record(now_ms - ts_ms);
    }

    /// One record, held or stored (`None` if the store cannot be read: logged).
    pub fn record(&self, collection: &str, key: &str) -> Option<Record> {
        self.records.read(collection, key).unwrap_or_else(|e| {
            tracing::error!(error = %e, collection, key, "cannot read a record");
            None
        })
    }

    /// Live (not deleted) records in `collection`, or in all collections.
    pub fn live_records(&self, collection: Option<&str>) -> Result<u64, StoreError> {
        let Some(c) = collection else { return Ok(self.live_records) };
        let mut n = 0;
        self.records.for_each(Some(c), |_, _, r| n += u64::from(r.doc.is_some()))?;
        Ok(n)
    }

    /// The model `/predict` and `/stats.model` serve: the one named `default`, else the
    /// first.
    fn default_learner(&self) -> &Learner {
        self.learners.iter().find(|l| l.spec().name == DEFAULT_MODEL).unwrap_or(&self.learners[0])
    }

    /// Predict with the model `name` (or the default one) for a document shaped like the
    /// records.
    pub fn predict(&self, name: Option<&str>, doc: &Value) -> Result<Prediction, PredictError> {
        let learner = match name {
            None => self.default_learner(),
            Some(n) => self
                .learners
                .iter()
                .find(|l| l.spec().name == n)
                .ok_or_else(|| PredictError::UnknownModel(n.to_string()))?,
        };
        let obj = doc.as_object().ok_or_else(|| PredictError::BadDocument("the body must be a JSON object".into()))?;
        let mut cap = Capture::default();
        self.plan.capture_value(obj, &mut cap);
        learner.predict(&cap, &self.plan).map_err(PredictError::BadDocument)
    }

    /// Every model's figures, in configuration order.
    pub fn models(&self) -> Vec<ModelReport> {
        self.learners.iter().map(Learner::report).collect()
    }

    /// Samples learned by each model, in configuration order.
    pub fn trained(&self) -> Vec<u64> {
        self.learners.iter().map(Learner::trained).collect()
    }

    /// The figures served by `/stats`.
    pub fn stats(&self) -> Stats {
        Stats {
            counters: self.counters.clone(),
            records: self.live_records,
            last_event_id: self.last_event_id.clone(),
            lag_ms: self.lag.percentiles(),
            model: self.default_learner().report(),
            models: self.learners.iter().map(|l| (l.spec().name.clone(), l.report())).collect(),
        }
    }
}

/// The id of the alert `model` raised on event `event_id`: the same whenever the event is
/// applied again.
fn alert_id(event_id: &str, model: &str) -> String {
    let mut bytes = Vec::with_capacity(event_id.len() + model.len() + 1);
    bytes.extend_from_slice(event_id.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(model.as_bytes());
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes))
}

/// A record's delete by `id` (a reconciliation or a truncate) at `position`.
fn delete(rec: &mut Record, id: &str, ts_ms: i64, position: Position) {
    rec.doc = None;
    rec.learned.clear();
    rec.version += 1;
    rec.last_id.clear();
    rec.last_id.push_str(id);
    rec.ts_ms = ts_ms;
    rec.position = position;
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
    /// The default model's figures (the one named `default`, else the first).
    pub model: ModelReport,
    /// Every model's figures, by name.
    pub models: BTreeMap<String, ModelReport>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::{ModelKind, Task};
    use crate::sink::features::FeatureSpec;
    use serde_json::json;

    fn spec(name: &str, task: Task, features: &[&str], label: &str) -> ModelSpec {
        let features = features.iter().map(|f| FeatureSpec::parse(f).unwrap()).collect();
        ModelSpec { name: name.into(), ..ModelSpec::single(task, ModelKind::Linear, features, label.into(), vec![]) }
    }

    fn core() -> SinkCore {
        SinkCore::new(vec![spec("default", Task::Classification, &["x"], "y")], 100).unwrap()
    }

    fn event(id: &str, op: &str, key: &str, t: u32, after: Value) -> Vec<u8> {
        json!({"id": id, "op": op, "key": key, "after": after,
               "source": {"db": "d", "collection": "c", "cluster_time": {"t": t, "i": 1}}, "ts_ms": 1_000 + t})
        .to_string()
        .into_bytes()
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
        assert_eq!(
            reason(c.apply_bytes(&event("b", "c", "k", 1, json!({"x": {"o": 1}, "y": true})))),
            "feature `x` is not numeric (an object)"
        );
        assert!(reason(c.apply_bytes(&event("c", "c", "k", 1, json!({"x": 1, "y": 0.5})))).starts_with("label `y`"));
        assert_eq!(c.stats().counters.dead_lettered, 5);
        assert_eq!(c.stats().counters.events_applied, 0);
    }

    #[test]
    fn updates_of_other_fields_train_once() {
        let mut c = core();
        assert_eq!(
            c.apply_bytes(&event("i", "c", "k", 1, json!({"x": 1, "y": true, "note": 0}))),
            Outcome::Applied { trained: true, ts_ms: 1_001 }
        );
        for n in 1..=10 {
            let o = c.apply_bytes(&event(&format!("u{n}"), "u", "k", 1 + n, json!({"x": 1, "y": true, "note": n})));
            assert_eq!(o, Outcome::Applied { trained: false, ts_ms: 1_001 + i64::from(n) });
        }
        let s = c.stats();
        assert_eq!((s.model.stats.trained(), s.counters.unchanged_skipped, s.model.unchanged_skipped), (1, 10, 10));
        assert_eq!(c.record("c", "k").unwrap().version, 11, "the records still apply every event");
        // A change of the label or a feature teaches again; so does a delete and a re-insert.
        c.apply_bytes(&event("u11", "u", "k", 20, json!({"x": 1, "y": false})));
        c.apply_bytes(&event("u12", "u", "k", 21, json!({"x": 2, "y": false})));
        c.apply_bytes(&event("d", "d", "k", 22, Value::Null));
        c.apply_bytes(&event("i2", "c", "k", 23, json!({"x": 2, "y": false})));
        assert_eq!(c.stats().model.stats.trained(), 4);
    }

    #[test]
    fn a_backlog_of_repeated_lookups_trains_once_per_distinct_sample() {
        let mut c = core();
        // Updates read while a backlog drains carry the document as it is when read: here
        // three updates carry B, then two carry C; the first of each run is new.
        let afters = [
            json!({"x": 1, "y": true}),
            json!({"x": 5, "y": true}),
            json!({"x": 5, "y": true}),
            json!({"x": 5, "y": true}),
            json!({"x": 7, "y": false}),
            json!({"x": 7, "y": false}),
        ];
        let mut trained = Vec::new();
        for (n, after) in afters.into_iter().enumerate() {
            let op = if n == 0 { "c" } else { "u" };
            match c.apply_bytes(&event(&format!("e{n}"), op, "k", n as u32 + 1, after)) {
                Outcome::Applied { trained: t, .. } => trained.push(t),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(trained, [true, true, false, false, true, false]);
        assert_eq!(c.stats().counters.unchanged_skipped, 3);
    }

    #[test]
    fn several_models_learn_from_one_stream_and_poison_stops_them_all() {
        let mut churn = spec("churn", Task::Classification, &["age", "plan:category"], "churned");
        churn.kind = ModelKind::HoeffdingTree;
        let mut spend = spec("spend", Task::Regression, &["age", "plan:category"], "spend");
        spend.collections = vec!["c".into()];
        let mut other = spec("other", Task::Regression, &["age"], "spend");
        other.collections = vec!["elsewhere".into()];
        let mut c = SinkCore::new(vec![churn, spend, other], 100).unwrap();
        for n in 0..50u32 {
            let plan = ["a", "b"][n as usize % 2];
            let after = json!({"age": n, "plan": plan, "churned": n % 3 == 0, "spend": f64::from(n) * 2.0});
            c.apply_bytes(&event(&format!("e{n}"), "c", &format!("k{n}"), n + 1, after));
        }
        // Only `churn` has a label here.
        c.apply_bytes(&event("e50", "c", "k50", 60, json!({"age": 1, "churned": true})));
        assert_eq!(c.trained(), [51, 50, 0]);
        let s = c.stats();
        assert_eq!(s.model.name, "churn", "no model is named default: the first serves");
        assert_eq!(s.models["spend"].stats.supervised().unwrap().task, Task::Regression);
        // An object where the models read a category: the whole event is poison, nobody learns.
        let bad = json!({"age": 1, "plan": {"o": 1}, "churned": true, "spend": 1.0});
        assert!(reason(c.apply_bytes(&event("p", "c", "kp", 70, bad))).contains("`plan` is not a category"));
        assert_eq!(c.trained(), [51, 50, 0]);
        // Without a label, a document is stored and read no further.
        let unlabelled = json!({"age": {"o": 1}, "plan": [1]});
        assert_eq!(
            c.apply_bytes(&event("u", "c", "ku", 71, unlabelled)),
            Outcome::Applied { trained: false, ts_ms: 1_071 }
        );
        let p = c.predict(Some("spend"), &json!({"age": 10, "plan": "a"})).unwrap();
        assert!(p.prediction.is_f64());
        let p = c.predict(None, &json!({"age": 10, "plan": "zzz"})).unwrap();
        assert!(p.probabilities.is_some(), "an unseen category is fine");
        assert_eq!(c.predict(Some("nope"), &json!({})), Err(PredictError::UnknownModel("nope".into())));
        match c.predict(None, &json!({"plan": "a"})) {
            Err(PredictError::BadDocument(r)) => assert_eq!(r, "missing features: age"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn drift_alerts_have_ids_that_replays_repeat() {
        let stream: Vec<Vec<u8>> = (0..3_000u32)
            .map(|n| {
                let x = f64::from((n * 7919) % 1000) / 1000.0;
                let y = if n < 1_500 { x > 0.5 } else { x <= 0.5 };
                event(&format!("e{n}"), "c", &format!("k{n}"), n + 1, json!({"x": x, "y": y}))
            })
            .collect();
        let run = || {
            let mut c = core();
            for body in &stream {
                c.apply_bytes(body);
            }
            c
        };
        let (mut a, b) = (run(), run());
        assert!(!a.alerts().is_empty());
        let first = &a.alerts()[0];
        assert!(
            first.trained > Some(1_500) && first.model.as_deref() == Some("default") && first.kind == "drift",
            "{first:?}"
        );
        assert_eq!(a.alerts(), b.alerts());
        assert_eq!(a.unpublished_alerts().len(), a.alerts().len());
        assert_eq!(a.stats().counters.drift_alerts, a.alerts().len() as u64);
        a.mark_saved();
        assert!(a.unpublished_alerts().is_empty() && !a.alerts().is_empty());
    }

    #[test]
    fn a_replay_beyond_the_dedupe_memory_is_still_recognised() {
        let spec = spec("default", Task::Classification, &["x"], "y");
        let mut c = SinkCore::new(vec![spec], 2).unwrap();
        let bodies: Vec<Vec<u8>> = (0..10)
            .map(|i| event(&format!("e{i}"), "c", &format!("k{i}"), 10 + i, json!({"x": i, "y": i % 2 == 0})))
            .collect();
        for b in &bodies {
            assert!(matches!(c.apply_bytes(b), Outcome::Applied { .. }));
        }
        // The memory holds two ids; the whole window comes again, as after a bridge crash.
        for b in &bodies {
            assert_eq!(c.apply_bytes(b), Outcome::Duplicate);
        }
        assert_eq!(c.stats().counters.events_applied, 10);
        assert_eq!(c.stats().model.stats.trained(), 10);
    }
}
