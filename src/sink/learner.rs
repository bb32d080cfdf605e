//! One model of the sink: its spec, its encoder (category dictionaries), the drift-monitored
//! model and its counters; how it turns a captured document into a sample, and decides
//! whether the sample teaches it anything new.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::encoder::{self, Encoder, Scratch};
use super::features::{Capture, FeatureSpec, FieldPlan, Raw};
use super::spec::ModelSpec;
use crate::ml::{DriftAction, DriftEvent, DriftMonitor, Feature, MlError, ModelStats, OnlineLearner, Prediction};

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
    model: DriftMonitor,
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
    /// Task, kind, samples learned, classes, quality and drift detections.
    #[serde(flatten)]
    pub stats: ModelStats,
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

impl Learner {
    /// A fresh model for `spec`, reading the fields `plan` captures.
    pub fn new(spec: ModelSpec, plan: &FieldPlan) -> Result<Self, MlError> {
        let model = spec.build()?;
        let encoder = Encoder::new(&spec.features, spec.hash_buckets, plan);
        let mut l = Self {
            spec,
            encoder,
            model,
            unchanged_skipped: 0,
            label_slot: 0,
            x: Vec::new(),
            label: Value::Null,
            scratch: Scratch::default(),
        };
        l.label_slot = plan.slot(&l.spec.label).expect("the plan captures every label");
        Ok(l)
    }

    /// Attach a restored model to the plan's slots; fails if its state does not fit its spec.
    pub fn bind(&mut self, plan: &FieldPlan) -> Result<(), String> {
        let schema = self.spec.schema().map_err(|e| e.to_string())?;
        if self.model.model().schema() != &schema || self.model.model().kind() != self.spec.kind {
            return Err(format!("model `{}` does not fit its features", self.spec.name));
        }
        self.encoder
            .bind(&self.spec.features, self.spec.hash_buckets, plan)
            .map_err(|e| format!("model `{}`: {e}", self.spec.name))?;
        self.label_slot = plan.slot(&self.spec.label).expect("the plan captures every label");
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
        let Some(label) = cap.label(self.label_slot) else { return Ok(Decision::Skip) };
        self.spec.task.check_label(&label).map_err(|e| format!("label `{}`: {e}", self.spec.label))?;
        self.encoder.encode(cap, &mut self.x, &mut self.scratch)?;
        self.model.model().schema().check(&self.x).map_err(|e| format!("model `{}`: {e}", self.spec.name))?;
        let fp = encoder::fingerprint(&self.x, &label, &mut self.scratch);
        self.label = label;
        Ok(if last == Some(fp) { Decision::Unchanged } else { Decision::Learn(fp) })
    }

    /// Score, then learn the sample [`prepare`](Self::prepare) read (its new categories enter
    /// the dictionaries); the drift detection it triggered, if any.
    pub fn learn(&mut self) -> Result<Option<DriftEvent>, MlError> {
        let (_, event) = self.model.predict_then_learn_watched(&self.x, &self.label)?;
        self.encoder.commit(&mut self.scratch);
        Ok(event)
    }

    /// Count an event skipped as unchanged.
    pub fn skip_unchanged(&mut self) {
        self.unchanged_skipped += 1;
    }

    /// Samples learned.
    pub fn trained(&self) -> u64 {
        self.model.trained()
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
        self.model.predict(&x).map_err(|e| e.to_string())
    }

    /// The model's figures.
    pub fn report(&self) -> ModelReport {
        ModelReport {
            name: self.spec.name.clone(),
            stats: self.model.stats(),
            features: self.spec.features.clone(),
            label: self.spec.label.clone(),
            collections: self.spec.collections.clone(),
            unchanged_skipped: self.unchanged_skipped,
            drift_action: self.spec.drift.action,
        }
    }
}
