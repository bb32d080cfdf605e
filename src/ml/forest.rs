//! The adaptive random forest family: River 0.26's `ARFClassifier` and `ARFRegressor`.
//!
//! `n_models` Hoeffding trees, each leaf observing a random subset of `max_features` columns,
//! each tree learning every sample with a Poisson(`lambda`) weight (online bagging). Each
//! tree's error on the samples it learns feeds two ADWIN detectors: the warning one
//! (delta 0.01) starts a background tree, the drift one (delta 0.001) replaces the tree by its
//! background tree (or a fresh one). Classification votes with each tree's probabilities
//! weighted by its accuracy; regression takes the median of the trees (River's default, with
//! weighted vote off). River's tree defaults inside a forest: grace period 50, delta 0.01.
//!
//! River's random draws cannot be matched, so the figures match River's quality, not its
//! numbers; the generator ([`Rng`]) lives in the model, so runs are reproducible and a restored
//! checkpoint continues with the very numbers the original would have drawn. Written here
//! rather than on `irithyll` (evaluated: its `AdaptiveRandomForest` resets a drifting tree
//! instead of growing a background tree, votes by majority, and is built on its histogram
//! trees) or `rill-ml` (no forests).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use smallvec::SmallVec;

use super::drift::Adwin;
use super::rng::Rng;
use super::sample::{Feature, Schema};
use super::stats::Var;
use super::tree::{LearnTarget, TreeCore, TreeParams, argmax};
use super::{ClassProbs, Family, MlError, ModelKind, Supervised, Task};

/// Hyper-parameters of an adaptive random forest; every default is River 0.26's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForestParams {
    /// Number of trees. Default 10.
    #[serde(default = "default_n_models")]
    pub n_models: u32,
    /// Columns each leaf observes: `"sqrt"` (default), `"log2"`, a count or a fraction. Any
    /// other value is refused when the model is built.
    #[serde(default = "default_max_features")]
    pub max_features: Value,
    /// Mean of the Poisson weight of each sample for each tree. Default 6.
    #[serde(default = "default_lambda")]
    pub lambda: f64,
    /// Significance of each tree's drift detector (ADWIN). Default 0.001.
    #[serde(default = "default_drift_delta")]
    pub drift_delta: f64,
    /// Significance of each tree's warning detector (ADWIN), which starts a background tree.
    /// Default 0.01.
    #[serde(default = "default_warning_delta")]
    pub warning_delta: f64,
    /// Classification: weight each tree's vote by its accuracy (default true). Regression:
    /// River's default is false, and with `median` aggregation it is never used.
    #[serde(default)]
    pub weighted_vote: Option<bool>,
    /// Regression: `median` (default) or `mean` of the trees' predictions.
    #[serde(default)]
    pub aggregation: Aggregation,
    /// The random seed. Default 42.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Grace period of the trees. Default 50 (River's forest default, not the tree's 200).
    #[serde(default = "default_forest_grace_period")]
    pub grace_period: u32,
    /// Split significance of the trees. Default 0.01 (River's forest default).
    #[serde(default = "default_forest_delta")]
    pub delta: f64,
    /// Tie threshold of the trees. Default 0.05.
    #[serde(default = "default_tau")]
    pub tau: f64,
    /// Maximum depth of the trees; unlimited by default.
    #[serde(default)]
    pub max_depth: Option<u32>,
}

/// How a regression forest combines its trees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    /// The median prediction.
    #[default]
    Median,
    /// The mean prediction (weighted by inverse error if `weighted_vote`).
    Mean,
}

fn default_n_models() -> u32 {
    10
}
fn default_max_features() -> Value {
    Value::from("sqrt")
}
fn default_lambda() -> f64 {
    6.0
}
fn default_drift_delta() -> f64 {
    0.001
}
fn default_warning_delta() -> f64 {
    0.01
}
fn default_seed() -> u64 {
    42
}
fn default_forest_grace_period() -> u32 {
    50
}
fn default_forest_delta() -> f64 {
    0.01
}
fn default_tau() -> f64 {
    0.05
}

impl Default for ForestParams {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("every field has a default")
    }
}

impl ForestParams {
    /// The number of columns each leaf observes for `n` columns, as River computes it.
    fn max_features(&self, n: usize) -> Result<usize, MlError> {
        let bad =
            MlError::Param { param: "max_features", reason: "must be \"sqrt\", \"log2\", an integer or a fraction" };
        let nf = n as f64;
        let k = match &self.max_features {
            Value::String(s) if s == "sqrt" => nf.sqrt().round_ties_even() as i64,
            Value::String(s) if s == "log2" => nf.log2().round_ties_even() as i64,
            Value::Number(v) if v.is_u64() || v.is_i64() => v.as_i64().ok_or(bad.clone())?,
            Value::Number(v) => {
                let f = v.as_f64().unwrap_or(f64::NAN);
                if !(f > 0.0 && f <= 1.0) {
                    return Err(bad);
                }
                (f * nf) as i64
            }
            _ => return Err(bad),
        };
        // River: a negative count means "all but", then at least 1 and at most all.
        let k = if k < 0 { k + n as i64 } else { k };
        Ok((k.max(1) as usize).min(n))
    }

    fn tree_params(&self) -> TreeParams {
        TreeParams {
            grace_period: self.grace_period,
            delta: self.delta,
            tau: self.tau,
            max_depth: self.max_depth,
            ..TreeParams::default()
        }
    }

    fn validate(&self) -> Result<(), MlError> {
        use MlError::Param;
        if self.n_models == 0 {
            return Err(Param { param: "n_models", reason: "must be at least 1" });
        }
        if !(self.lambda > 0.0 && self.lambda.is_finite()) {
            return Err(Param { param: "lambda", reason: "must be a finite number above 0" });
        }
        if !(self.drift_delta > 0.0 && self.drift_delta < 1.0) {
            return Err(Param { param: "drift_delta", reason: "must be in (0, 1)" });
        }
        if !(self.warning_delta > 0.0 && self.warning_delta < 1.0) {
            return Err(Param { param: "warning_delta", reason: "must be in (0, 1)" });
        }
        Ok(())
    }
}

/// One member of the forest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Member {
    tree: TreeCore,
    background: Option<TreeCore>,
    drift: Adwin,
    warning: Adwin,
    /// Samples scored since the tree started; with `score_sum`, River's per-tree metric:
    /// correct predictions (`Accuracy`) or squared errors (`MSE`).
    scored: f64,
    score_sum: f64,
    /// Regression: the tree's errors, which normalise what its detectors see.
    errors: Var,
    drifts: u32,
    warnings: u32,
}

impl Member {
    fn new(tree: TreeCore, p: &ForestParams) -> Self {
        Self {
            tree,
            background: None,
            drift: Adwin::new(p.drift_delta),
            warning: Adwin::new(p.warning_delta),
            scored: 0.0,
            score_sum: 0.0,
            errors: Var::default(),
            drifts: 0,
            warnings: 0,
        }
    }

    /// The tree's accuracy so far (0 before any sample).
    fn accuracy(&self) -> f64 {
        if self.scored > 0.0 { self.score_sum / self.scored } else { 0.0 }
    }
}

/// The adaptive random forest family's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forest {
    params: ForestParams,
    max_features: usize,
    task: Task,
    members: Vec<Member>,
    rng: Rng,
    /// A fresh tree to clone when one is needed.
    template: TreeCore,
}

impl Supervised<Forest> {
    /// A fresh forest for `task` over `schema`.
    pub fn with_params(task: Task, schema: Schema, params: ForestParams) -> Result<Self, MlError> {
        params.validate()?;
        let max_features = params.max_features(schema.len())?;
        let cfg = params.tree_params().resolve(task, Some(max_features))?;
        let template = TreeCore::new(cfg, task, &schema);
        let members = (0..params.n_models).map(|_| Member::new(template.fresh(), &params)).collect();
        let rng = Rng::new(params.seed);
        let forest = Forest { params, max_features, task, members, rng, template };
        Ok(Self::from_parts(task, schema, forest))
    }
}

impl Forest {
    /// Drift detections so far, over all trees.
    pub fn n_drifts(&self) -> u32 {
        self.members.iter().map(|m| m.drifts).sum()
    }

    /// Warnings (background trees started) so far, over all trees.
    pub fn n_warnings(&self) -> u32 {
        self.members.iter().map(|m| m.warnings).sum()
    }

    fn learn(&mut self, x: &[Feature], target: LearnTarget) {
        let p = &self.params;
        for m in &mut self.members {
            // The tree's error before learning: what its vote weight and its detectors see.
            let (wrong, error) = match target {
                LearnTarget::Class(c) => {
                    let wrong = argmax(&m.tree.predict_proba(x, 0)) != Some(c);
                    m.score_sum += f64::from(u8::from(!wrong));
                    (wrong, 0.0)
                }
                LearnTarget::Value(y) => {
                    let e = y - m.tree.predict_value(x);
                    m.score_sum += e * e;
                    (false, e)
                }
            };
            m.scored += 1.0;
            let k = self.rng.poisson(p.lambda);
            if k == 0 {
                continue;
            }
            let input = match target {
                LearnTarget::Class(_) => f64::from(u8::from(wrong)),
                LearnTarget::Value(_) => {
                    // River's normalisation, over the errors of the samples the tree learned:
                    // (e + 3 sd) / 6 sd, 0.5 on the first or while they do not vary.
                    m.errors.update(error, 1.0);
                    let sd = m.errors.variance().sqrt();
                    if m.errors.n == 1.0 || sd <= 0.0 { 0.5 } else { (error + 3.0 * sd) / (6.0 * sd) }
                }
            };
            let w = f64::from(k);
            if let Some(bg) = &mut m.background {
                bg.learn(x, target, w, Some(&mut self.rng));
            }
            m.tree.learn(x, target, w, Some(&mut self.rng));
            if m.warning.update(input) {
                m.background = Some(self.template.fresh());
                m.warning = Adwin::new(p.warning_delta);
                m.warnings += 1;
            }
            if m.drift.update(input) {
                // River restarts the warning detector only when a background tree takes over.
                match m.background.take() {
                    Some(bg) => {
                        m.tree = bg;
                        m.warning = Adwin::new(p.warning_delta);
                    }
                    None => m.tree = self.template.fresh(),
                }
                m.drift = Adwin::new(p.drift_delta);
                m.scored = 0.0;
                m.score_sum = 0.0;
                m.drifts += 1;
            }
        }
    }
}

impl Family for Forest {
    const KIND: ModelKind = ModelKind::AdaptiveForest;

    fn predict_proba(&self, x: &[Feature], n_classes: usize) -> ClassProbs {
        let weighted = self.params.weighted_vote.unwrap_or(true);
        let mut votes = ClassProbs::from_elem(0.0, n_classes);
        for m in &self.members {
            let probs = m.tree.predict_proba(x, n_classes);
            let acc = m.accuracy();
            // River weights by accuracy only when it is above 0, so a tree that has always
            // been wrong still votes with weight 1.
            let weight = if weighted && acc > 0.0 { acc } else { 1.0 };
            if votes.len() < probs.len() {
                votes.resize(probs.len(), 0.0);
            }
            votes.iter_mut().zip(&probs).for_each(|(v, p)| *v += p * weight);
        }
        let total: f64 = votes.iter().sum();
        if total > 0.0 {
            votes.iter_mut().for_each(|v| *v /= total);
        }
        votes
    }

    fn predict_value(&self, x: &[Feature]) -> f64 {
        let mut preds: SmallVec<[f64; 16]> = self.members.iter().map(|m| m.tree.predict_value(x)).collect();
        match self.params.aggregation {
            Aggregation::Median => {
                preds.sort_unstable_by(f64::total_cmp);
                let n = preds.len();
                if n % 2 == 1 { preds[n / 2] } else { (preds[n / 2 - 1] + preds[n / 2]) / 2.0 }
            }
            Aggregation::Mean if self.params.weighted_vote.unwrap_or(false) => {
                // River: weights (sum - mse_i) / sum over trees, so smaller errors weigh more.
                let mse: Vec<f64> =
                    self.members.iter().map(|m| if m.scored > 0.0 { m.score_sum / m.scored } else { 0.0 }).collect();
                let sum: f64 = mse.iter().sum();
                if sum == 0.0 {
                    return preds.iter().sum::<f64>() / preds.len() as f64;
                }
                let w: Vec<f64> = mse.iter().map(|e| sum - e).collect();
                let wsum: f64 = w.iter().sum();
                // The weighted average. River multiplies by the normalised weights and then
                // takes the mean again, which divides the prediction by the number of trees;
                // that slip is not copied.
                preds.iter().zip(&w).map(|(p, w)| p * w).sum::<f64>() / wsum
            }
            Aggregation::Mean => preds.iter().sum::<f64>() / preds.len() as f64,
        }
    }

    fn learn_class(&mut self, x: &[Feature], class: usize, _n_classes: usize) {
        self.learn(x, LearnTarget::Class(class));
    }

    fn learn_value(&mut self, x: &[Feature], y: f64) {
        self.learn(x, LearnTarget::Value(y));
    }

    fn fits(&self, schema: &Schema, task: Task, n_classes: usize) -> bool {
        let Ok(k) = self.params.max_features(schema.len()) else { return false };
        self.params.validate().is_ok()
            && self.rng.is_usable()
            && self.task == task
            && k == self.max_features
            && self.members.len() == self.params.n_models as usize
            && self.template.fits(schema, task, n_classes)
            && self.members.iter().all(|m| {
                m.tree.fits(schema, task, n_classes)
                    && m.background.as_ref().is_none_or(|b| b.fits(schema, task, n_classes))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::super::OnlineLearner;
    use super::*;
    use serde_json::json;

    fn noise(i: usize) -> f64 {
        ((i as f64 * 0.618_033_988_75).sin() * 43_758.545_3).fract().abs()
    }

    #[test]
    fn max_features_follows_river() {
        let p = |v: Value| ForestParams { max_features: v, ..ForestParams::default() };
        assert_eq!(p(json!("sqrt")).max_features(30), Ok(5));
        // Python rounds half to even: sqrt(6.25) = 2.5 -> 2.
        assert_eq!(p(json!("sqrt")).max_features(6), Ok(2));
        assert_eq!(p(json!("sqrt")).max_features(3), Ok(2));
        assert_eq!(p(json!("log2")).max_features(16), Ok(4));
        assert_eq!(p(json!(0.5)).max_features(9), Ok(4));
        assert_eq!(p(json!(50)).max_features(9), Ok(9));
        assert_eq!(p(json!(-2)).max_features(9), Ok(7));
        assert!(p(json!("cube")).max_features(9).is_err());
        assert!(p(json!(1.5)).max_features(9).is_err());
    }

    #[test]
    fn forest_recovers_after_an_abrupt_change() {
        let schema = Schema::numeric(3).unwrap();
        let mut m = Supervised::<Forest>::with_params(Task::Classification, schema, ForestParams::default()).unwrap();
        let mut late_correct = 0;
        for i in 0..8_000 {
            let x = [noise(i), noise(i + 1), noise(i + 2)];
            let y = if i < 4_000 { x[0] > 0.5 } else { x[0] <= 0.5 };
            let p = m.predict_then_learn(&x.map(Feature::Num), &json!(y)).unwrap();
            if i >= 6_000 && p.prediction == json!(y) {
                late_correct += 1;
            }
        }
        assert!(m.family().n_drifts() > 0);
        assert!(late_correct > 1_800, "{late_correct} / 2000");
    }
}
