//! The linear family: numeric columns standardised online, nominal columns one-hot encoded
//! over the categories seen so far, feeding an SGD linear model (logistic loss for classes,
//! squared loss for numbers).
//!
//! With the defaults, classification computes exactly River 0.26's
//! `StandardScaler | LogisticRegression` probabilities on numeric columns, and regression
//! River's `TargetStandardScaler(StandardScaler | LinearRegression)`. Nominal columns are
//! River's `OneHotEncoder` (a category seen for the first time gets a weight starting at 0; the
//! 0/1 inputs are not scaled). Written here rather than on `rill-ml` (1.5.6 evaluated): its
//! classifiers are binary with `bool` targets only, and its pipeline allocates a `Vec` on
//! every transform and gradient step.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::sample::{Feature, Schema};
use super::scaler::{Moments, StandardScaler};
use super::{ClassProbs, Family, MlError, ModelKind, Supervised, Task};

/// River's default gradient clip; it only stops a runaway target from producing infinities.
const CLIP_GRADIENT: f64 = 1e12;

/// Hyper-parameters of a [`LinearModel`](super::LinearModel) together with its task (the
/// configuration the sink had before the other families; [`LinearParams`] is the same without
/// the task). The defaults are River 0.26's for `LogisticRegression` and `LinearRegression`
/// (plain SGD, step 0.01 for the weights and the intercept, no L2); regression also
/// standardises its target online.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// What the model predicts.
    pub task: Task,
    /// SGD step size for the weights and the intercept. Default 0.01. For regression keep
    /// `learning_rate * (1 + n_features)` well below 1: past that, squared-loss SGD on
    /// standardised features overshoots and diverges (at 0.01, stay under ~100 features).
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// L2 penalty on the weights (not the intercept). Default 0.
    #[serde(default)]
    pub l2: f64,
    /// Regression only: learn on the target standardised with its running mean and standard
    /// deviation (River's `preprocessing.TargetStandardScaler`), so a target far from 0 needs no
    /// long warm-up while the intercept walks to it. Default true; false is exactly River's
    /// `StandardScaler | LinearRegression`.
    #[serde(default = "default_scale_target")]
    pub scale_target: bool,
}

/// Hyper-parameters of the linear family, as the factory takes them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearParams {
    /// See [`ModelConfig::learning_rate`]. Default 0.01.
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// See [`ModelConfig::l2`]. Default 0.
    #[serde(default)]
    pub l2: f64,
    /// See [`ModelConfig::scale_target`]. Default true.
    #[serde(default = "default_scale_target")]
    pub scale_target: bool,
}

impl Default for LinearParams {
    fn default() -> Self {
        Self { learning_rate: default_learning_rate(), l2: 0.0, scale_target: default_scale_target() }
    }
}

fn default_learning_rate() -> f64 {
    0.01
}

fn default_scale_target() -> bool {
    true
}

impl ModelConfig {
    /// The defaults for `task`.
    pub fn new(task: Task) -> Self {
        let p = LinearParams::default();
        Self { task, learning_rate: p.learning_rate, l2: p.l2, scale_target: p.scale_target }
    }

    fn params(&self) -> LinearParams {
        LinearParams { learning_rate: self.learning_rate, l2: self.l2, scale_target: self.scale_target }
    }
}

impl LinearParams {
    fn validate(&self) -> Result<(), MlError> {
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(MlError::Param { param: "learning_rate", reason: "must be a finite number above 0" });
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(MlError::Param { param: "l2", reason: "must be a finite number, 0 or above" });
        }
        Ok(())
    }
}

impl Supervised<Linear> {
    /// A fresh linear model for `config.task` over `schema`.
    pub fn new(config: ModelConfig, schema: Schema) -> Result<Self, MlError> {
        Self::with_params(config.task, schema, config.params())
    }

    /// A fresh linear model with the factory's hyper-parameters.
    pub fn with_params(task: Task, schema: Schema, params: LinearParams) -> Result<Self, MlError> {
        params.validate()?;
        let linear = Linear::new(task, &schema, params);
        Ok(Self::from_parts(task, schema, linear))
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> ModelConfig {
        let p = self.family().params;
        ModelConfig { task: self.task(), learning_rate: p.learning_rate, l2: p.l2, scale_target: p.scale_target }
    }
}

/// One-hot slots for the nominal columns: each (column, category) seen gets the next slot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct OneHot {
    /// For each nominal column (in schema order), slot + 1 of each category id; 0 if unseen.
    slot_of: Vec<Vec<u32>>,
    n_slots: usize,
}

impl OneHot {
    /// The slot of the `j`-th nominal column's category `id`, if seen.
    #[inline]
    fn slot(&self, j: usize, id: u32) -> Option<usize> {
        match self.slot_of[j].get(id as usize) {
            Some(&s) if s > 0 => Some(s as usize - 1),
            _ => None,
        }
    }

    /// The slot of the `j`-th nominal column's category `id`, given the next slot if new.
    fn slot_or_insert(&mut self, j: usize, id: u32) -> usize {
        if let Some(s) = self.slot(j, id) {
            return s;
        }
        let ids = &mut self.slot_of[j];
        if ids.len() <= id as usize {
            ids.resize(id as usize + 1, 0);
        }
        self.n_slots += 1;
        ids[id as usize] = self.n_slots as u32;
        self.n_slots - 1
    }

    /// Slots of the categories in `x` that have been seen, in column order.
    #[inline]
    fn active(&self, x: &[Feature]) -> SmallVec<[usize; 8]> {
        let mut out = SmallVec::new();
        let mut j = 0;
        for f in x {
            if let Feature::Cat(id) = *f {
                if let Some(s) = self.slot(j, id) {
                    out.push(s);
                }
                j += 1;
            }
        }
        out
    }

    fn is_consistent(&self, n_nominal: usize) -> bool {
        let max = self.slot_of.iter().flatten().copied().max().unwrap_or(0) as usize;
        let used = self.slot_of.iter().flatten().filter(|&&s| s > 0).count();
        self.slot_of.len() == n_nominal && max == self.n_slots && used == self.n_slots
    }
}

/// The linear family's state: the scaler, the one-hot slots and the SGD model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Linear {
    params: LinearParams,
    scaler: StandardScaler,
    onehot: OneHot,
    head: Head,
    #[serde(skip)]
    scratch: Scratch,
}

/// The task's SGD model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Head {
    Classification(LogisticClassifier),
    Regression(LinearRegressor),
}

/// Buffers for the sample being learned, kept so learning never allocates. They hold no
/// state between calls, so they take no part in equality.
#[derive(Debug, Clone, Default)]
struct Scratch {
    raw: Vec<f64>,
    xs: Vec<f64>,
    active: Vec<usize>,
}

impl PartialEq for Scratch {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Linear {
    fn new(task: Task, schema: &Schema, params: LinearParams) -> Self {
        let n = schema.n_numeric();
        let n_nominal = schema.len() - n;
        let head = match task {
            Task::Classification => Head::Classification(LogisticClassifier::new(n)),
            Task::Regression => Head::Regression(LinearRegressor::new(n, params.scale_target)),
        };
        Self {
            params,
            scaler: StandardScaler::new(n),
            onehot: OneHot { slot_of: vec![Vec::new(); n_nominal], n_slots: 0 },
            head,
            scratch: Scratch::default(),
        }
    }

    /// Update the scaler and the one-hot slots with `x`, leaving the standardised numeric
    /// values and the active slots in the scratch buffers.
    fn encode_for_learning(&mut self, x: &[Feature]) {
        let s = &mut self.scratch;
        s.raw.clear();
        s.active.clear();
        let mut j = 0;
        for f in x {
            match *f {
                Feature::Num(v) => s.raw.push(v),
                Feature::Cat(id) => {
                    s.active.push(self.onehot.slot_or_insert(j, id));
                    j += 1;
                }
            }
        }
        self.scaler.update(&s.raw);
        s.xs.resize(s.raw.len(), 0.0);
        self.scaler.transform_into(&s.raw, &mut s.xs);
    }

    fn learn_encoded(&mut self, class: Option<usize>, y: f64) {
        let LinearParams { learning_rate: lr, l2, .. } = self.params;
        let (xs, active, n_slots) = (&self.scratch.xs, &self.scratch.active, self.onehot.n_slots);
        match (&mut self.head, class) {
            (Head::Classification(m), Some(c)) => m.learn(xs, active, n_slots, c, lr, l2),
            (Head::Regression(m), None) => m.learn(xs, active, n_slots, y, lr, l2),
            _ => unreachable!("Supervised follows the task"),
        }
    }
}

impl Family for Linear {
    const KIND: ModelKind = ModelKind::Linear;

    fn predict_proba(&self, x: &[Feature], _n_classes: usize) -> ClassProbs {
        match &self.head {
            Head::Classification(m) => m.predict_proba(&self.scaler, x, &self.onehot.active(x)),
            Head::Regression(_) => ClassProbs::new(),
        }
    }

    fn predict_value(&self, x: &[Feature]) -> f64 {
        match &self.head {
            Head::Regression(m) => m.predict(&self.scaler, x, &self.onehot.active(x)),
            Head::Classification(_) => f64::NAN,
        }
    }

    fn learn_class(&mut self, x: &[Feature], class: usize, _n_classes: usize) {
        self.encode_for_learning(x);
        self.learn_encoded(Some(class), 0.0);
    }

    fn learn_value(&mut self, x: &[Feature], y: f64) {
        self.encode_for_learning(x);
        self.learn_encoded(None, y);
    }

    fn fits(&self, schema: &Schema, task: Task, n_classes: usize) -> bool {
        let n = schema.n_numeric();
        let slots = self.onehot.n_slots;
        self.params.validate().is_ok()
            && self.scaler.fits(n)
            && self.onehot.is_consistent(schema.len() - n)
            && match (&self.head, task) {
                (Head::Classification(m), Task::Classification) => m.fits(n, slots, n_classes),
                (Head::Regression(m), Task::Regression) => m.fits(n, slots),
                _ => false,
            }
    }
}

/// The numeric values of `x`, in column order.
#[inline]
fn numeric(x: &[Feature]) -> impl Iterator<Item = f64> + '_ {
    x.iter().filter_map(|f| f.num())
}

/// The logistic function.
#[inline]
fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

#[inline]
fn dot(w: &[f64], x: &[f64]) -> f64 {
    w.iter().zip(x).map(|(a, b)| a * b).sum()
}

/// `w · standardise(x)` over the numeric values of `x`, in the very order of
/// [`StandardScaler::dot_transformed`], so numeric-only figures stay bit for bit.
#[inline]
fn dot_scaled(scaler: &StandardScaler, w: &[f64], x: &[Feature]) -> f64 {
    let mut sum = 0.0;
    for (((&wi, xi), &m), &s) in w.iter().zip(numeric(x)).zip(scaler.mean()).zip(scaler.inv_std()) {
        sum += wi * ((xi - m) * s);
    }
    sum
}

/// Sum of the one-hot weights of the active slots (0/1 inputs, so no products).
#[inline]
fn dot_onehot(w: &[f64], active: &[usize]) -> f64 {
    active.iter().map(|&s| w.get(s).copied().unwrap_or(0.0)).sum()
}

/// One plain SGD step on `loss_gradient * x + l2 * w` for the numeric weights `w` (inputs
/// `xs`) and the one-hot weights `oh` (input 1 at the `active` slots, 0 elsewhere); the
/// intercept gets no L2, as in River, whose L2 also reaches every weight, present or not.
#[inline]
#[allow(clippy::too_many_arguments)]
fn step(w: &mut [f64], oh: &mut [f64], b: &mut f64, xs: &[f64], active: &[usize], g: f64, lr: f64, l2: f64) {
    for (wi, &xi) in w.iter_mut().zip(xs) {
        *wi -= lr * (g * xi + l2 * *wi);
    }
    if l2 > 0.0 {
        for wi in oh.iter_mut() {
            *wi -= lr * (l2 * *wi);
        }
    }
    for &s in active {
        oh[s] -= lr * g;
    }
    *b -= lr * g;
}

/// Squared-loss linear regression, like River's `linear_model.LinearRegression`, optionally
/// on an online-standardised target like River's `preprocessing.TargetStandardScaler`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LinearRegressor {
    weights: Vec<f64>,
    #[serde(default)]
    onehot: Vec<f64>,
    intercept: f64,
    /// Running statistics of the target when it is standardised.
    target: Option<Moments>,
}

impl LinearRegressor {
    fn new(n_numeric: usize, scale_target: bool) -> Self {
        Self {
            weights: vec![0.0; n_numeric],
            onehot: Vec::new(),
            intercept: 0.0,
            target: scale_target.then(Moments::default),
        }
    }

    fn fits(&self, n_numeric: usize, n_slots: usize) -> bool {
        self.weights.len() == n_numeric && self.onehot.len() <= n_slots
    }

    #[inline]
    fn predict(&self, scaler: &StandardScaler, x: &[Feature], active: &[usize]) -> f64 {
        let raw = dot_scaled(scaler, &self.weights, x) + dot_onehot(&self.onehot, active) + self.intercept;
        match &self.target {
            Some(t) => raw * t.sample_std() + t.mean,
            None => raw,
        }
    }

    #[inline]
    fn learn(&mut self, xs: &[f64], active: &[usize], n_slots: usize, y: f64, lr: f64, l2: f64) {
        let y = match &mut self.target {
            Some(t) => {
                t.add(y);
                let sd = t.sample_std();
                if sd > 0.0 { (y - t.mean) / sd } else { 0.0 }
            }
            None => y,
        };
        if self.onehot.len() < n_slots {
            self.onehot.resize(n_slots, 0.0);
        }
        let y_hat = dot(&self.weights, xs) + dot_onehot(&self.onehot, active) + self.intercept;
        let g = (2.0 * (y_hat - y)).clamp(-CLIP_GRADIENT, CLIP_GRADIENT);
        step(&mut self.weights, &mut self.onehot, &mut self.intercept, xs, active, g, lr, l2);
    }
}

/// Logistic-loss classifier over classes discovered online, in order of first appearance.
///
/// With up to two classes it is River's `LogisticRegression`: one weight row giving
/// P(class 1), so P(class 0) = 1 - P(class 1), learning from the very first sample. When a
/// third class appears it becomes one-vs-rest with one row per class: the binary row is
/// already "class 1 vs rest", its negation is exactly what "class 0 vs rest" would have
/// learned, and the new class starts from zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LogisticClassifier {
    n_features: usize,
    n_classes: usize,
    /// Row-major, `intercepts.len()` rows of `n_features`.
    weights: Vec<f64>,
    /// One-hot weights, one vector per row, as long as the slots seen when it last learned.
    #[serde(default)]
    onehot: Vec<Vec<f64>>,
    intercepts: Vec<f64>,
}

impl LogisticClassifier {
    fn new(n_features: usize) -> Self {
        Self {
            n_features,
            n_classes: 0,
            weights: vec![0.0; n_features],
            onehot: vec![Vec::new()],
            intercepts: vec![0.0],
        }
    }

    fn fits(&self, n_features: usize, n_slots: usize, n_classes: usize) -> bool {
        let rows = if self.n_classes <= 2 { 1 } else { self.n_classes };
        self.n_features == n_features
            && self.n_classes == n_classes
            && self.intercepts.len() == rows
            && self.onehot.len() == rows
            && self.onehot.iter().all(|r| r.len() <= n_slots)
            && self.weights.len() == rows * n_features
    }

    /// Probabilities for raw `x`. In the binary stage there are always two entries (classes 0
    /// and 1, seen or not); in one-vs-rest there is one per class, normalised to sum to 1.
    fn predict_proba(&self, scaler: &StandardScaler, x: &[Feature], active: &[usize]) -> ClassProbs {
        let row = |i: usize| {
            let w = &self.weights[i * self.n_features..(i + 1) * self.n_features];
            sigmoid(dot_scaled(scaler, w, x) + dot_onehot(&self.onehot[i], active) + self.intercepts[i])
        };
        if self.intercepts.len() == 1 {
            let p1 = row(0);
            return SmallVec::from_slice(&[1.0 - p1, p1]);
        }
        let mut probs: ClassProbs = (0..self.intercepts.len()).map(row).collect();
        let total: f64 = probs.iter().sum();
        if total > 0.0 {
            probs.iter_mut().for_each(|p| *p /= total);
        }
        probs
    }

    /// One SGD step per row for standardised `xs` and class `target` (a new class if it is
    /// `n_classes`).
    fn learn(&mut self, xs: &[f64], active: &[usize], n_slots: usize, target: usize, lr: f64, l2: f64) {
        if target == self.n_classes {
            self.add_class();
        }
        let single = self.intercepts.len() == 1;
        let nf = self.n_features;
        for row in 0..self.intercepts.len() {
            let (w, b, oh) =
                (&mut self.weights[row * nf..(row + 1) * nf], &mut self.intercepts[row], &mut self.onehot[row]);
            if oh.len() < n_slots {
                oh.resize(n_slots, 0.0);
            }
            let hit = if single { target == 1 } else { target == row };
            let p = sigmoid(dot(w, xs) + dot_onehot(oh, active) + *b);
            step(w, oh, b, xs, active, p - f64::from(u8::from(hit)), lr, l2);
        }
    }

    /// Register a new class, switching to one-vs-rest at three classes.
    fn add_class(&mut self) {
        self.n_classes += 1;
        let k = self.n_classes;
        if k == 3 {
            let class1 = std::mem::take(&mut self.weights);
            let b1 = self.intercepts[0];
            self.weights = class1.iter().map(|w| -w).chain(class1.iter().copied()).collect();
            self.intercepts = vec![-b1, b1];
            let oh1 = std::mem::take(&mut self.onehot[0]);
            self.onehot = vec![oh1.iter().map(|w| -w).collect(), oh1];
        }
        if k >= 3 {
            self.weights.resize(self.weights.len() + self.n_features, 0.0);
            self.intercepts.push(0.0);
            self.onehot.push(Vec::new());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Column, LinearModel, MetricSummary, OnlineLearner};
    use super::*;
    use serde_json::{Value, json};

    fn model(task: Task, n: usize) -> LinearModel {
        LinearModel::new(ModelConfig::new(task), Schema::numeric(n).unwrap()).unwrap()
    }

    fn num(x: &[f64]) -> Vec<Feature> {
        x.iter().map(|&v| Feature::Num(v)).collect()
    }

    /// A deterministic, irregular sequence in [0, 1).
    fn noise(i: usize) -> f64 {
        ((i as f64 * 0.618_033_988_75).sin() * 43_758.545_3).fract().abs()
    }

    fn accuracy(m: &LinearModel) -> f64 {
        match m.stats().progressive {
            MetricSummary::Classification { accuracy: Some(a), .. } => a,
            other => panic!("no accuracy in {other:?}"),
        }
    }

    #[test]
    fn config_defaults_fill_missing_fields() {
        let c: ModelConfig = serde_json::from_value(json!({"task": "regression"})).unwrap();
        assert_eq!(c, ModelConfig::new(Task::Regression));
        let c: ModelConfig = serde_json::from_value(
            json!({"task": "classification", "learning_rate": 0.5, "l2": 0.1, "scale_target": false}),
        )
        .unwrap();
        assert_eq!((c.task, c.learning_rate, c.l2, c.scale_target), (Task::Classification, 0.5, 0.1, false));
        let bad = ModelConfig { learning_rate: 0.0, ..c };
        assert!(matches!(LinearModel::new(bad, Schema::numeric(3).unwrap()), Err(MlError::Param { .. })));
        let bad = ModelConfig { l2: -1.0, ..c };
        assert_eq!(
            LinearModel::new(bad, Schema::numeric(3).unwrap()).unwrap_err(),
            MlError::Param { param: "l2", reason: "must be a finite number, 0 or above" }
        );
    }

    #[test]
    fn learns_a_separable_problem() {
        let mut m = model(Task::Classification, 2);
        assert_eq!(m.predict(&num(&[0.0, 0.0])).unwrap().prediction, Value::Null);
        for i in 0..2_000 {
            let (a, b) = (noise(i) * 2.0 - 1.0, noise(i + 1) * 2.0 - 1.0);
            m.predict_then_learn(&num(&[a, b]), &json!(a + b > 0.0)).unwrap();
        }
        assert_eq!(m.predict(&num(&[0.8, 0.5])).unwrap().prediction, json!(true));
        assert_eq!(m.predict(&num(&[-0.7, -0.2])).unwrap().prediction, json!(false));
        assert!(accuracy(&m) > 0.9);
    }

    #[test]
    fn three_string_classes_appearing_one_by_one() {
        let mut m = model(Task::Classification, 2);
        let centre = |c: &str| match c {
            "red" => (0.0, 0.0),
            "green" => (4.0, 0.0),
            _ => (0.0, 4.0),
        };
        let mut rows: Vec<&str> = (0..300).map(|i| if i % 2 == 0 { "red" } else { "green" }).collect();
        rows.extend((0..3_000).map(|i| ["red", "green", "blue"][i % 3]));
        for (i, c) in rows.iter().enumerate() {
            let (cx, cy) = centre(c);
            m.predict_then_learn(&num(&[cx + noise(i) - 0.5, cy + noise(i + 9) - 0.5]), &json!(c)).unwrap();
        }
        for c in ["red", "green", "blue"] {
            let (cx, cy) = centre(c);
            let p = m.predict(&num(&[cx, cy])).unwrap();
            assert_eq!(p.prediction, json!(c));
            assert!((p.probabilities.unwrap().iter().map(|(_, p)| p).sum::<f64>() - 1.0).abs() < 1e-12);
        }
        assert_eq!(m.stats().classes, Some(vec![json!("red"), json!("green"), json!("blue")]));
    }

    #[test]
    fn bool_and_integer_labels_keep_their_type() {
        let mut m = model(Task::Classification, 1);
        assert_eq!(m.predict_then_learn(&num(&[1.0]), &json!(true)).unwrap().prediction, Value::Null);
        assert_eq!(m.predict_then_learn(&num(&[-1.0]), &json!(false)).unwrap().prediction, json!(true));
        for i in 0..200 {
            let v = if i % 2 == 0 { 1.0 } else { -1.0 };
            m.predict_then_learn(&num(&[v]), &json!(v > 0.0)).unwrap();
        }
        let p = m.predict(&num(&[1.0])).unwrap();
        assert_eq!(p.prediction, json!(true));
        assert!(serde_json::to_value(&p).unwrap()["probabilities"]["true"].as_f64().unwrap() > 0.5);
        let mut m = model(Task::Classification, 1);
        for i in 0..100 {
            let v = if i % 2 == 0 { 3.0 } else { -3.0 };
            m.predict_then_learn(&num(&[v]), &json!(if v > 0.0 { 7 } else { -2 })).unwrap();
        }
        assert_eq!(m.predict(&num(&[-3.0])).unwrap().prediction, json!(-2));
    }

    #[test]
    fn regression_fits_a_line() {
        for scale_target in [true, false] {
            let config = ModelConfig { scale_target, ..ModelConfig::new(Task::Regression) };
            let mut m = LinearModel::new(config, Schema::numeric(1).unwrap()).unwrap();
            for i in 0..20_000 {
                let x = noise(i) * 10.0 - 5.0;
                m.predict_then_learn(&num(&[x]), &json!(2.0 * x + 1.0)).unwrap();
            }
            for x in [-3.0, 0.0, 2.5] {
                let y = m.predict(&num(&[x])).unwrap().prediction.as_f64().unwrap();
                assert!((y - (2.0 * x + 1.0)).abs() < 1e-2, "f({x}) = {y}");
            }
        }
    }

    /// A nominal column's categories get their own weights: the target depends on the city
    /// alone, which only the one-hot weights can learn.
    #[test]
    fn one_hot_weights_learn_categories() {
        let schema = Schema::new(vec![Column::numeric("noise"), Column::nominal("city")]).unwrap();
        let mut c = LinearModel::new(ModelConfig::new(Task::Classification), schema.clone()).unwrap();
        let mut r = LinearModel::new(ModelConfig::new(Task::Regression), schema).unwrap();
        for i in 0..6_000 {
            let city = (i % 4) as u32;
            let x = [Feature::Num(noise(i)), Feature::Cat(city)];
            c.predict_then_learn(&x, &json!(city >= 2)).unwrap();
            r.predict_then_learn(&x, &json!(10.0 * f64::from(city))).unwrap();
        }
        for city in 0..4u32 {
            let x = [Feature::Num(0.5), Feature::Cat(city)];
            assert_eq!(c.predict(&x).unwrap().prediction, json!(city >= 2));
            let y = r.predict(&x).unwrap().prediction.as_f64().unwrap();
            assert!((y - 10.0 * f64::from(city)).abs() < 1.0, "city {city}: {y}");
        }
        // An unseen category has weight 0: no error, a prediction from the rest.
        assert!(c.predict(&[Feature::Num(0.5), Feature::Cat(99)]).is_ok());
        assert_eq!(c.family().onehot.n_slots, 4);
    }

    #[test]
    fn third_class_splits_the_binary_row_without_losing_it() {
        let scaler = {
            let mut s = StandardScaler::new(2);
            s.update(&[0.0, 0.0]);
            s.update(&[2.0, 2.0]);
            s
        };
        let mut m = LogisticClassifier::new(2);
        let mut xs = [0.0; 2];
        for (i, x) in [[0.0, 0.0], [2.0, 2.0]].iter().cycle().take(20).enumerate() {
            scaler.transform_into(x, &mut xs);
            m.learn(&xs, &[], 0, i % 2, 0.1, 0.0);
        }
        let x = num(&[2.0, 2.0]);
        let before = m.predict_proba(&scaler, &x, &[]);
        m.add_class();
        let after = m.predict_proba(&scaler, &x, &[]);
        assert_eq!(after.len(), 3);
        assert!(after[1] > after[0]);
        assert!((after[1] / after[0] - before[1] / before[0]).abs() < 1e-9);
        assert!((after.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
