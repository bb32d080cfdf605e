//! Drift monitoring for a model: each predicted-then-learned sample's error feeds a drift
//! detector; a detection of rising error is reported, and with `reset` a fresh model takes
//! over once it has learned enough.
//!
//! The error is 0/1 (wrong class) for classification, as River's own drift-aware wrappers
//! (`drift.DriftRetrainingClassifier`) and its forests feed their detectors, and the absolute
//! error for regression, what River's examples feed ADWIN for a regressor. ADWIN's bound takes
//! the window's variance into account, but its second (Bernstein) term assumes values of
//! order 1: for targets of very small or very large scale, scale them, or prefer Page-Hinkley
//! with a `threshold` in the error's units.
//!
//! Only detections where the error went *up* count: ADWIN and Page-Hinkley fire both ways, and
//! a young model's falling error would otherwise read as drift. The detector still restarts
//! after any detection, as River's do.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::drift::{DetectorConfig, DriftDetector};
use super::sample::{Feature, Schema};
use super::{AnyModel, MlError, ModelKind, ModelStats, OnlineLearner, Prediction, Task, build};

/// How many detections [`DriftStats`] keeps.
const KEPT_EVENTS: usize = 16;

/// What to do on a detection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftAction {
    /// Report it and keep the model (default).
    #[default]
    Alert,
    /// Report it and start a fresh model, which learns alongside the old one and takes over
    /// once it has learned `warmup` samples.
    Reset,
}

/// How a [`DriftMonitor`] watches its model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// The detector and its parameters; ADWIN with River's defaults by default.
    #[serde(default)]
    pub detector: DetectorConfig,
    /// `alert` (default) or `reset`.
    #[serde(default)]
    pub action: DriftAction,
    /// With `reset`, the samples a fresh model learns before it serves. Default 200: a fresh
    /// Hoeffding tree cannot split before its grace period of 200, and the linear model's SGD
    /// at step 0.01 needs about as many samples to leave its starting point, so serving it
    /// sooner would answer from a model that knows less than the drifted one.
    #[serde(default = "default_warmup")]
    pub warmup: u64,
}

fn default_warmup() -> u64 {
    200
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self { detector: DetectorConfig::default(), action: DriftAction::Alert, warmup: default_warmup() }
    }
}

/// One detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftEvent {
    /// Samples the serving model had learned when the detector fired (this sample included).
    pub trained: u64,
    /// Samples the monitor had seen since it started (this one included), across resets.
    pub seen: u64,
}

/// Detections, for [`ModelStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftStats {
    /// Detections of rising error since the start.
    pub detections: u64,
    /// The latest detections, oldest first (at most 16).
    pub recent: Vec<DriftEvent>,
    /// Models replaced by a fresh one (`reset`).
    pub resets: u64,
    /// Samples learned by the fresh model warming up, if one is.
    pub warming_up: Option<u64>,
}

/// A model under drift monitoring. It is an [`OnlineLearner`] itself; its checkpoint holds the
/// model, the detector and the model warming up, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "MonitorState")]
pub struct DriftMonitor {
    config: MonitorConfig,
    /// The hyper-parameters to build a fresh model with.
    params: Value,
    model: AnyModel,
    fresh: Option<AnyModel>,
    detector: DriftDetector,
    seen: u64,
    stats: DriftStats,
}

#[derive(Deserialize)]
struct MonitorState {
    config: MonitorConfig,
    params: Value,
    model: AnyModel,
    fresh: Option<AnyModel>,
    detector: DriftDetector,
    seen: u64,
    stats: DriftStats,
}

impl TryFrom<MonitorState> for DriftMonitor {
    type Error = String;

    fn try_from(s: MonitorState) -> Result<Self, String> {
        let fresh_fits = s
            .fresh
            .as_ref()
            .is_none_or(|f| f.kind() == s.model.kind() && f.task() == s.model.task() && f.schema() == s.model.schema());
        // A reset builds from the config and the parameters mid-stream, where it must not fail.
        let m = &s.model;
        let rebuilds = s.config.detector.build().is_ok()
            && s.config.warmup > 0
            && build(m.task(), m.kind(), m.schema().clone(), &s.params).is_ok();
        if !fresh_fits || !rebuilds || !s.detector.is_consistent() || s.stats.recent.len() > KEPT_EVENTS {
            return Err("drift monitor checkpoint is inconsistent".into());
        }
        Ok(Self {
            config: s.config,
            params: s.params,
            model: s.model,
            fresh: s.fresh,
            detector: s.detector,
            seen: s.seen,
            stats: s.stats,
        })
    }
}

impl DriftMonitor {
    /// Build a model as [`build`] does and watch it with `config`.
    pub fn new(
        task: Task,
        kind: ModelKind,
        schema: Schema,
        params: Value,
        config: MonitorConfig,
    ) -> Result<Self, MlError> {
        let model = build(task, kind, schema, &params)?;
        let detector = config.detector.build()?;
        if config.warmup == 0 {
            return Err(MlError::Param { param: "warmup", reason: "must be at least 1" });
        }
        Ok(Self { config, params, model, fresh: None, detector, seen: 0, stats: DriftStats::default() })
    }

    /// The model serving predictions.
    pub fn model(&self) -> &AnyModel {
        &self.model
    }

    /// Detections so far.
    pub fn drift_stats(&self) -> &DriftStats {
        &self.stats
    }

    /// Progressive validation as [`OnlineLearner::predict_then_learn`], plus the detection
    /// this sample triggered, if any.
    pub fn predict_then_learn_watched(
        &mut self,
        x: &[Feature],
        y: &Value,
    ) -> Result<(Prediction, Option<DriftEvent>), MlError> {
        let prediction = self.model.predict_then_learn(x, y)?;
        self.seen += 1;
        let error = match self.model.task() {
            Task::Classification => f64::from(u8::from(prediction.prediction != *y)),
            // The label was checked by the model, and a regression prediction is a number.
            Task::Regression => (y.as_f64().unwrap_or(0.0) - prediction.prediction.as_f64().unwrap_or(0.0)).abs(),
        };
        if let Some(fresh) = &mut self.fresh {
            fresh.predict_then_learn(x, y)?;
            self.stats.warming_up = Some(fresh.trained());
            if fresh.trained() >= self.config.warmup {
                self.model = self.fresh.take().expect("checked above");
                self.stats.warming_up = None;
                self.stats.resets += 1;
                // The errors so far were the old model's; the new one starts its own window.
                self.detector = self.config.detector.build()?;
            }
        }
        let event = (self.detector.update(error) && self.detector.last_was_increase())
            .then(|| DriftEvent { trained: self.model.trained(), seen: self.seen });
        if let Some(e) = event {
            self.stats.detections += 1;
            if self.stats.recent.len() == KEPT_EVENTS {
                self.stats.recent.remove(0);
            }
            self.stats.recent.push(e);
            if self.config.action == DriftAction::Reset {
                let m = &self.model;
                self.fresh = Some(build(m.task(), m.kind(), m.schema().clone(), &self.params)?);
                self.stats.warming_up = Some(0);
            }
        }
        Ok((prediction, event))
    }
}

impl OnlineLearner for DriftMonitor {
    fn predict(&self, x: &[Feature]) -> Result<Prediction, MlError> {
        self.model.predict(x)
    }

    /// Learns in the serving model and in the one warming up; no error is scored, so the
    /// detector sees nothing.
    fn learn(&mut self, x: &[Feature], y: &Value) -> Result<(), MlError> {
        self.model.learn(x, y)?;
        if let Some(fresh) = &mut self.fresh {
            fresh.learn(x, y)?;
        }
        Ok(())
    }

    fn predict_then_learn(&mut self, x: &[Feature], y: &Value) -> Result<Prediction, MlError> {
        self.predict_then_learn_watched(x, y).map(|(p, _)| p)
    }

    fn trained(&self) -> u64 {
        self.model.trained()
    }

    fn stats(&self) -> ModelStats {
        ModelStats { drift: Some(self.stats.clone()), ..self.model.stats() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn noise(i: usize) -> f64 {
        ((i as f64 * 0.618_033_988_75).sin() * 43_758.545_3).fract().abs()
    }

    fn run(config: MonitorConfig, flip_at: usize) -> (DriftMonitor, Vec<DriftEvent>, usize) {
        let schema = Schema::numeric(2).unwrap();
        let mut m =
            DriftMonitor::new(Task::Classification, ModelKind::HoeffdingTree, schema, Value::Null, config).unwrap();
        let (mut events, mut correct_after) = (Vec::new(), 0);
        for i in 0..6_000 {
            let x = [noise(i), noise(i + 3)];
            let y = if i < flip_at { x[0] > 0.5 } else { x[0] <= 0.5 };
            let (p, e) = m.predict_then_learn_watched(&x.map(Feature::Num), &json!(y)).unwrap();
            events.extend(e);
            if i >= flip_at && p.prediction == json!(y) {
                correct_after += 1;
            }
        }
        (m, events, correct_after)
    }

    #[test]
    fn a_flip_is_detected_after_it_and_reset_recovers() {
        let (alert, events, kept) = run(MonitorConfig::default(), 3_000);
        assert!(!events.is_empty());
        assert!(events[0].seen > 3_000 && events[0].seen < 3_300, "{events:?}");
        assert_eq!(alert.drift_stats().resets, 0);
        let reset = MonitorConfig { action: DriftAction::Reset, ..MonitorConfig::default() };
        let (m, events, recovered) = run(reset, 3_000);
        assert!(events[0].seen > 3_000);
        assert!(m.drift_stats().resets >= 1);
        assert!(recovered > kept, "reset {recovered} vs alert {kept}");
        assert_eq!(m.stats().drift.as_ref().map(|d| d.detections), Some(events.len() as u64));
    }

    #[test]
    fn no_alert_on_a_stationary_stream() {
        let (_, events, _) = run(MonitorConfig::default(), usize::MAX);
        assert!(events.is_empty(), "{events:?}");
        let ph =
            MonitorConfig { detector: DetectorConfig::PageHinkley { threshold: 50.0 }, ..MonitorConfig::default() };
        let (_, events, _) = run(ph, usize::MAX);
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn monitor_round_trips_mid_warmup_and_continues_identically() {
        let schema = Schema::numeric(2).unwrap();
        let config = MonitorConfig { action: DriftAction::Reset, warmup: 300, ..MonitorConfig::default() };
        let mut m = DriftMonitor::new(Task::Classification, ModelKind::Linear, schema, Value::Null, config).unwrap();
        let mut i = 0;
        while m.fresh.is_none() && i < 10_000 {
            let x = [noise(i), noise(i + 3)];
            let y = if i < 2_000 { x[0] > 0.5 } else { x[0] <= 0.5 };
            m.predict_then_learn(&x.map(Feature::Num), &json!(y)).unwrap();
            i += 1;
        }
        assert!(m.fresh.is_some(), "no detection");
        let mut back: DriftMonitor = serde_json::from_value(serde_json::to_value(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        let mut bad = serde_json::to_value(&m).unwrap();
        bad["params"] = json!({"learning_rate": -1});
        assert!(serde_json::from_value::<DriftMonitor>(bad).is_err());
        for j in i..i + 1_000 {
            let x = [noise(j), noise(j + 3)].map(Feature::Num);
            let y = json!(noise(j) <= 0.5);
            assert_eq!(back.predict_then_learn_watched(&x, &y).unwrap(), m.predict_then_learn_watched(&x, &y).unwrap());
        }
        assert_eq!(back, m);
    }

    #[test]
    fn bad_monitor_configs_are_refused() {
        let s = Schema::numeric(1).unwrap();
        let c = MonitorConfig { warmup: 0, ..MonitorConfig::default() };
        let err = DriftMonitor::new(Task::Regression, ModelKind::Linear, s.clone(), Value::Null, c).unwrap_err();
        assert_eq!(err, MlError::Param { param: "warmup", reason: "must be at least 1" });
        let c: MonitorConfig =
            serde_json::from_value(json!({"action": "reset", "detector": {"detector": "adwin", "delta": 0.01}}))
                .unwrap();
        assert_eq!(c.detector, DetectorConfig::Adwin { delta: 0.01 });
        assert!(serde_json::from_value::<MonitorConfig>(json!({"action": "retrain"})).is_err());
    }
}
