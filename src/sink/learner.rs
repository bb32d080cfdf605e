//! One model of the sink: its spec, its encoder (category dictionaries), the drift-monitored
//! model and its counters; how it turns a captured document into a sample, and decides
//! whether the sample teaches it anything new.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::encoder::{self, Encoder, Scratch};
use super::features::{Capture, FeatureSpec, FieldPlan, Raw};
use super::spec::ModelSpec;
use crate::ml::{
    AnomalyDetector, AnomalyScore, AnomalyStats, DriftAction, DriftEvent, DriftMonitor, Feature, MlError, ModelStats,
    OnlineLearner, Prediction,
};

/// What one model does with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to learn: another collection, or no label.
    Skip,
    /// The same columns and label it last learned for the key: neither scored nor learned.
    Unchanged,
    /// Score, then learn; the sample's fingerprint.
    Learn(u64),
}

/// A model with everything it needs to read records; serialised whole into the checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Learner {
    spec: ModelSpec,
    encoder: Encoder,
    /// The supervised model (every task but anomaly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<DriftMonitor>,
    /// The anomaly model (task anomaly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detector: Option<AnomalyDetector>,
    /// Events skipped because what it learns from them had not changed.
    unchanged_skipped: u64,
    #[serde(skip)]
    label_slot: usize,
    /// The sample of the event being applied, from [`prepare`](Self::prepare).
    #[serde(skip)]
    x: Vec<Feature>,
    #[serde(skip)]
    label: Value,
    #[serde(skip)]
    scratch: Scratch,
}

/// A model's figures, as `/models` and `/stats` serve them.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    /// The model's name.
    pub name: String,
    /// Task, kind, samples learned, and classes, quality and drift detections or an anomaly
    /// model's alerts and threshold.
    #[serde(flatten)]
    pub stats: ReportStats,
    /// The typed features.
    pub features: Vec<FeatureSpec>,
    /// The label's field.
    pub label: String,
    /// Collections it learns from; empty is all.
    pub collections: Vec<String>,
    /// Events skipped because their columns and label were those last learned for the key.
    pub unchanged_skipped: u64,
    /// What a drift detection does: `alert` or `reset`.
    pub drift_action: DriftAction,
}

/// A supervised model's figures or an anomaly model's.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ReportStats {
    /// Classification or regression.
    Supervised(ModelStats),
    /// Anomaly.
    Anomaly(AnomalyStats),
}

impl ReportStats {
    /// Samples learned.
    pub fn trained(&self) -> u64 {
        match self {
            Self::Supervised(s) => s.trained,
            Self::Anomaly(a) => a.trained,
        }
    }

    /// A supervised model's figures.
    pub fn supervised(&self) -> Option<&ModelStats> {
        match self {
            Self::Supervised(s) => Some(s),
            Self::Anomaly(_) => None,
        }
    }
}

/// What learning one sample gave.
#[derive(Debug, Clone, Default)]
pub struct Learned {
    /// A drift detection (supervised models).
    pub drift: Option<DriftEvent>,
    /// The score given before learning (anomaly models).
    pub anomaly: Option<AnomalyScore>,
}

impl Learner {
    /// A fresh model for `spec`, reading the fields `plan` captures.
    pub fn new(spec: ModelSpec, plan: &FieldPlan) -> Result<Self, MlError> {
        let detector = spec.build_anomaly()?;
        let model = if detector.is_none() { Some(spec.build()?) } else { None };
        let encoder = Encoder::new(&spec.features, spec.hash_buckets, plan);
        let mut l = Self {
            spec,
            encoder,
            model,
            detector,
            unchanged_skipped: 0,
            label_slot: 0,
            x: Vec::new(),
            label: Value::Null,
            scratch: Scratch::default(),
        };
        l.label_slot = label_slot(&l.spec, plan);
        Ok(l)
    }

    /// Attach a restored model to the plan's slots; fails if its state does not fit its spec.
    pub fn bind(&mut self, plan: &FieldPlan) -> Result<(), String> {
        let schema = self.spec.schema().map_err(|e| e.to_string())?;
        let fits = match (&self.model, &self.detector, &self.spec.anomaly) {
            (Some(m), None, None) => m.model().schema() == &schema && m.model().kind() == self.spec.kind,
            (None, Some(d), Some(a)) => d.schema() == &schema && d.kind() == a.kind,
            _ => false,
        };
        if !fits {
            return Err(format!("model `{}` does not fit its features", self.spec.name));
        }
        self.encoder
            .bind(&self.spec.features, self.spec.hash_buckets, plan)
            .map_err(|e| format!("model `{}`: {e}", self.spec.name))?;
        self.label_slot = label_slot(&self.spec, plan);
        Ok(())
    }

    /// What the model is.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Let the model learn from other collections from now on (its state does not depend on
    /// them).
    pub fn set_collections(&mut self, collections: Vec<String>) {
        self.spec.collections = collections;
    }

    /// Read the captured document into a sample and decide what to do with it; `last` is the
    /// fingerprint of what the model last learned for the key. Changes nothing but the sample
    /// buffers; the error is why the document is poison. A document without the label is not
    /// read further: it teaches this model nothing, so its other fields cannot be poison to it.
    pub fn prepare(&mut self, cap: &Capture, last: Option<u64>) -> Result<Decision, String> {
        let label = match &self.model {
            Some(m) => {
                let Some(label) = cap.label(self.label_slot) else { return Ok(Decision::Skip) };
                self.spec.task.check_label(&label).map_err(|e| format!("label `{}`: {e}", self.spec.label))?;
                self.encoder.encode(cap, &mut self.x, &mut self.scratch)?;
                m.model().schema().check(&self.x).map_err(|e| format!("model `{}`: {e}", self.spec.name))?;
                label
            }
            None => {
                // Without a label, a document missing a feature the model cannot do without
                // is simply not for it.
                if self.encoder.lacks_required(cap) {
                    return Ok(Decision::Skip);
                }
                self.encoder.encode(cap, &mut self.x, &mut self.scratch)?;
                Value::Null
            }
        };
        let fp = encoder::fingerprint(&self.x, &label, &mut self.scratch);
        self.label = label;
        Ok(if last == Some(fp) { Decision::Unchanged } else { Decision::Learn(fp) })
    }

    /// Score, then learn the sample [`prepare`](Self::prepare) read (its new categories enter
    /// the dictionaries); the drift detection it triggered, if any.
    pub fn learn(&mut self) -> Result<Learned, MlError> {
        let mut out = Learned::default();
        match (&mut self.model, &mut self.detector) {
            (Some(m), _) => out.drift = m.predict_then_learn_watched(&self.x, &self.label)?.1,
            (None, Some(d)) => out.anomaly = Some(d.score_then_learn(&self.x)?),
            (None, None) => unreachable!("a learner has a model"),
        }
        self.encoder.commit(&mut self.scratch);
        Ok(out)
    }

    /// The name of column `i` of the model.
    pub fn column_name(&self, i: usize) -> Option<&str> {
        let schema = match (&self.model, &self.detector) {
            (Some(m), _) => m.model().schema(),
            (None, Some(d)) => d.schema(),
            (None, None) => return None,
        };
        schema.columns().get(i).map(|c| c.name.as_str())
    }

    /// Count an event skipped as unchanged.
    pub fn skip_unchanged(&mut self) {
        self.unchanged_skipped += 1;
    }

    /// Samples learned.
    pub fn trained(&self) -> u64 {
        match (&self.model, &self.detector) {
            (Some(m), _) => m.trained(),
            (None, Some(d)) => d.trained(),
            (None, None) => 0,
        }
    }

    /// Predict for a captured document. A feature missing from it is an error unless missing
    /// has a meaning of its own for its type.
    pub fn predict(&self, cap: &Capture, plan: &FieldPlan) -> Result<Prediction, String> {
        let missing: Vec<String> = self
            .spec
            .features
            .iter()
            .filter(|f| !f.may_be_missing() && cap.get(plan.slot(&f.path).expect("captured")) == Raw::Missing)
            .map(|f| f.path.clone())
            .collect();
        if !missing.is_empty() {
            return Err(format!("missing features: {}", missing.join(", ")));
        }
        let (mut x, mut scratch) = (Vec::new(), Scratch::default());
        self.encoder.encode(cap, &mut x, &mut scratch)?;
        match &self.model {
            Some(m) => m.predict(&x).map_err(|e| e.to_string()),
            None => Err(format!("model `{}` is an anomaly model: its scores arrive as alerts", self.spec.name)),
        }
    }

    /// The model's figures.
    pub fn report(&self) -> ModelReport {
        ModelReport {
            name: self.spec.name.clone(),
            stats: match (&self.model, &self.detector) {
                (Some(m), _) => ReportStats::Supervised(m.stats()),
                (None, Some(d)) => ReportStats::Anomaly(d.stats()),
                (None, None) => unreachable!("a learner has a model"),
            },
            features: self.spec.features.clone(),
            label: self.spec.label.clone(),
            collections: self.spec.collections.clone(),
            unchanged_skipped: self.unchanged_skipped,
            drift_action: self.spec.drift.action,
        }
    }
}

/// The slot of the spec's label (unused without one).
fn label_slot(spec: &ModelSpec, plan: &FieldPlan) -> usize {
    if spec.anomaly.is_some() {
        return 0;
    }
    plan.slot(&spec.label).expect("the plan captures every label")
}
