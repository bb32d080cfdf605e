//! Online models for the sink: a standard scaler feeding an SGD linear model (logistic for
//! classes, squared loss for numbers), scored by progressive validation.
//!
//! Written here rather than on `rill-ml` (1.5.6 evaluated): its classifiers are binary with
//! `bool` targets only, so there is no multiclass and no JSON labels to discover online, and its
//! pipeline allocates a `Vec` on every transform and every gradient step.
//!
//! With the defaults ([`ModelConfig`]) classification computes exactly River 0.26's
//! `StandardScaler | LogisticRegression` probabilities, and regression River's
//! `TargetStandardScaler(StandardScaler | LinearRegression)`; `tests/ml_quality.rs` has the
//! figures on scikit-learn's bundled datasets and `scripts/ml_quality.py` River's.

mod error;
mod metrics;
mod scaler;
mod sgd;

use serde::{Deserialize, Serialize, Serializer, ser::SerializeMap};
use serde_json::Value;
use smallvec::SmallVec;

pub use error::MlError;
pub use metrics::{ClassificationMetrics, LOG_LOSS_EPS, MetricSummary, ROLLING_WINDOW, RegressionMetrics};
pub use scaler::StandardScaler;
use sgd::{ClassProbs, LinearRegressor, LogisticClassifier, check_class_label, regression_target};

/// What a model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// A class label: a JSON bool, string or integer. Classes are discovered as they come.
    Classification,
    /// A JSON number.
    Regression,
}

/// Hyper-parameters of an [`OnlineModel`]. The defaults are River 0.26's for
/// `LogisticRegression` and `LinearRegression` (plain SGD, step 0.01 for the weights and the
/// intercept, no L2), the same for both tasks and not tuned to any dataset; regression also
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

fn default_learning_rate() -> f64 {
    0.01
}

fn default_scale_target() -> bool {
    true
}

impl ModelConfig {
    /// The defaults for `task`.
    pub fn new(task: Task) -> Self {
        Self { task, learning_rate: default_learning_rate(), l2: 0.0, scale_target: default_scale_target() }
    }

    fn validate(&self) -> Result<(), MlError> {
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(MlError::Config("learning_rate must be a finite number above 0"));
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(MlError::Config("l2 must be a finite number, 0 or above"));
        }
        Ok(())
    }
}

/// Class label -> probability, in the order the classes were first seen. Serialises as a JSON
/// object whose keys are the labels as text (`true`, `3`, `"spam"` -> `"true"`, `"3"`, `"spam"`),
/// so labels `3` and `"3"` in one model would share a key there; [`iter`](Self::iter) keeps them
/// apart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Probabilities(SmallVec<[(Value, f64); 2]>);

impl Probabilities {
    /// The probability of `class`, if it is a known class.
    pub fn get(&self, class: &Value) -> Option<f64> {
        self.0.iter().find(|(c, _)| c == class).map(|&(_, p)| p)
    }

    /// `(class, probability)` pairs, in the order the classes were first seen.
    pub fn iter(&self) -> impl Iterator<Item = (&Value, f64)> {
        self.0.iter().map(|(c, p)| (c, *p))
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True before any class is seen.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Probabilities {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (class, p) in &self.0 {
            match class {
                Value::String(s) => map.serialize_entry(s, p)?,
                other => map.serialize_entry(&other.to_string(), p)?,
            }
        }
        map.end()
    }
}

/// One prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The predicted class in its original JSON type, or the predicted number. JSON null for a
    /// classifier that has not seen a class yet.
    pub prediction: Value,
    /// Per-class probabilities; `None` for regression. With a single class seen, the
    /// probability not given to it is the model's belief that some other class comes next.
    pub probabilities: Option<Probabilities>,
}

/// A model's figures, as served to people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelStats {
    /// What the model predicts.
    pub task: Task,
    /// Samples learned.
    pub trained: u64,
    /// Classes seen, in order of first appearance (classification only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<Value>>,
    /// Progressive validation over every sample scored since the start.
    pub progressive: MetricSummary,
    /// Progressive validation over the last [`ROLLING_WINDOW`] samples scored.
    pub rolling_1000: MetricSummary,
}

/// What the sink needs from an online model, so other model types can sit beside
/// [`OnlineModel`] later.
pub trait OnlineLearner: Send + Sync {
    /// Predict for `x` without learning.
    fn predict(&self, x: &[f64]) -> Result<Prediction, MlError>;
    /// Learn one sample; the metrics are not touched.
    fn learn(&mut self, x: &[f64], y: &Value) -> Result<(), MlError>;
    /// Progressive validation: predict, score the prediction against `y`, then learn.
    fn predict_then_learn(&mut self, x: &[f64], y: &Value) -> Result<Prediction, MlError>;
    /// Samples learned.
    fn trained(&self) -> u64;
    /// Current figures.
    fn stats(&self) -> ModelStats;
}

/// A label checked against the task.
#[derive(Clone, Copy)]
enum Label<'a> {
    Class(&'a Value),
    Number(f64),
}

/// The task-specific half of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Head {
    Classification { model: LogisticClassifier, metrics: ClassificationMetrics },
    Regression { model: LinearRegressor, metrics: RegressionMetrics },
}

/// A [`StandardScaler`] feeding an SGD linear model, with its progressive-validation metrics.
/// Serialise it to checkpoint it; loading checks that the parts fit together.
///
/// `predict_then_learn` does not allocate for regression or for binary classification with
/// bool or integer labels (string labels are cloned into the returned [`Prediction`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Checkpoint")]
pub struct OnlineModel {
    config: ModelConfig,
    n_features: usize,
    trained: u64,
    scaler: StandardScaler,
    head: Head,
    #[serde(skip)]
    scratch: Scratch,
}

/// The standardised sample being learned, kept in the model so learning never allocates. It
/// holds no state between calls, so it takes no part in equality.
#[derive(Debug, Clone, Default)]
struct Scratch(Vec<f64>);

impl PartialEq for Scratch {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// What a checkpoint holds, checked before it becomes an [`OnlineModel`].
#[derive(Deserialize)]
struct Checkpoint {
    config: ModelConfig,
    n_features: usize,
    trained: u64,
    scaler: StandardScaler,
    head: Head,
}

impl TryFrom<Checkpoint> for OnlineModel {
    type Error = String;

    fn try_from(c: Checkpoint) -> Result<Self, String> {
        c.config.validate().map_err(|e| e.to_string())?;
        let n = c.n_features;
        let head_fits = match (&c.head, c.config.task) {
            (Head::Classification { model, metrics }, Task::Classification) => model.fits(n) && metrics.is_consistent(),
            (Head::Regression { model, metrics }, Task::Regression) => model.fits(n) && metrics.is_consistent(),
            _ => false,
        };
        if n == 0 || !c.scaler.fits(n) || !head_fits {
            return Err(format!("model checkpoint is inconsistent (n_features = {n})"));
        }
        Ok(Self {
            config: c.config,
            n_features: n,
            trained: c.trained,
            scaler: c.scaler,
            head: c.head,
            scratch: Scratch(vec![0.0; n]),
        })
    }
}

impl OnlineModel {
    /// A fresh model for `n_features` features (at least 1).
    pub fn new(config: ModelConfig, n_features: usize) -> Result<Self, MlError> {
        config.validate()?;
        if n_features == 0 {
            return Err(MlError::Config("a model needs at least one feature"));
        }
        let head = match config.task {
            Task::Classification => Head::Classification {
                model: LogisticClassifier::new(n_features),
                metrics: ClassificationMetrics::default(),
            },
            Task::Regression => Head::Regression {
                model: LinearRegressor::new(n_features, config.scale_target),
                metrics: RegressionMetrics::default(),
            },
        };
        Ok(Self {
            config,
            n_features,
            trained: 0,
            scaler: StandardScaler::new(n_features),
            head,
            scratch: Scratch(vec![0.0; n_features]),
        })
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Number of features a sample must have.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Samples learned.
    pub fn trained(&self) -> u64 {
        self.trained
    }

    /// Predict for `x` without learning.
    pub fn predict(&self, x: &[f64]) -> Result<Prediction, MlError> {
        self.check_features(x)?;
        Ok(match &self.head {
            Head::Classification { model, .. } => {
                let probs = model.predict_proba(&self.scaler, x);
                class_prediction(model, &probs, best_class(model, &probs))
            }
            Head::Regression { model, .. } => regression_prediction(model.predict(&self.scaler, x)),
        })
    }

    /// Learn one sample; the metrics are not touched. A refused sample changes nothing.
    pub fn learn(&mut self, x: &[f64], y: &Value) -> Result<(), MlError> {
        self.check_features(x)?;
        let label = self.check_label(y)?;
        self.learn_checked(x, label);
        Ok(())
    }

    /// Progressive validation: predict `x`, score the prediction against `y` in the metrics,
    /// then learn `(x, y)`. A refused sample changes nothing.
    pub fn predict_then_learn(&mut self, x: &[f64], y: &Value) -> Result<Prediction, MlError> {
        self.check_features(x)?;
        let label = self.check_label(y)?;
        let prediction = match (&mut self.head, label) {
            (Head::Classification { model, metrics }, _) => {
                let probs = model.predict_proba(&self.scaler, x);
                let best = best_class(model, &probs);
                let truth = model.index_of(y);
                // A label not seen yet would take the next index; in the binary stage that
                // index still has a probability (the mass not given to the known classes).
                let p_truth = probs.get(truth.unwrap_or(model.classes().len())).copied().unwrap_or(0.0);
                metrics.update(best.is_some() && best == truth, p_truth);
                class_prediction(model, &probs, best)
            }
            (Head::Regression { model, metrics }, Label::Number(target)) => {
                let y_hat = model.predict(&self.scaler, x);
                metrics.update(target, y_hat);
                regression_prediction(y_hat)
            }
            (Head::Regression { .. }, Label::Class(_)) => unreachable!("check_label follows the task"),
        };
        self.learn_checked(x, label);
        Ok(prediction)
    }

    /// Current figures.
    pub fn stats(&self) -> ModelStats {
        let (classes, progressive, rolling_1000) = match &self.head {
            Head::Classification { model, metrics } => {
                (Some(model.classes().to_vec()), metrics.progressive(), metrics.rolling())
            }
            Head::Regression { metrics, .. } => (None, metrics.progressive(), metrics.rolling()),
        };
        ModelStats { task: self.config.task, trained: self.trained, classes, progressive, rolling_1000 }
    }

    fn check_features(&self, x: &[f64]) -> Result<(), MlError> {
        if x.len() != self.n_features {
            return Err(MlError::FeatureCount { expected: self.n_features, got: x.len() });
        }
        match x.iter().position(|v| !v.is_finite()) {
            Some(index) => Err(MlError::NonFiniteFeature { index }),
            None => Ok(()),
        }
    }

    fn check_label<'a>(&self, y: &'a Value) -> Result<Label<'a>, MlError> {
        match self.head {
            Head::Classification { .. } => check_class_label(y).map(|()| Label::Class(y)),
            Head::Regression { .. } => regression_target(y).map(Label::Number),
        }
    }

    /// Learn a sample whose features and label have been checked.
    fn learn_checked(&mut self, x: &[f64], label: Label<'_>) {
        let ModelConfig { learning_rate: lr, l2, .. } = self.config;
        self.scaler.update(x);
        let xs = &mut self.scratch.0;
        self.scaler.transform_into(x, xs);
        match (&mut self.head, label) {
            (Head::Classification { model, .. }, Label::Class(y)) => model.learn(xs, y, lr, l2),
            (Head::Regression { model, .. }, Label::Number(y)) => model.learn(xs, y, lr, l2),
            _ => unreachable!("check_label follows the task"),
        }
        self.trained += 1;
    }
}

impl OnlineLearner for OnlineModel {
    fn predict(&self, x: &[f64]) -> Result<Prediction, MlError> {
        OnlineModel::predict(self, x)
    }

    fn learn(&mut self, x: &[f64], y: &Value) -> Result<(), MlError> {
        OnlineModel::learn(self, x, y)
    }

    fn predict_then_learn(&mut self, x: &[f64], y: &Value) -> Result<Prediction, MlError> {
        OnlineModel::predict_then_learn(self, x, y)
    }

    fn trained(&self) -> u64 {
        OnlineModel::trained(self)
    }

    fn stats(&self) -> ModelStats {
        OnlineModel::stats(self)
    }
}

/// Index of the most probable known class (the first seen on a tie), if any class is known.
#[inline]
fn best_class(model: &LogisticClassifier, probs: &ClassProbs) -> Option<usize> {
    let known = model.classes().len().min(probs.len());
    probs[..known]
        .iter()
        .enumerate()
        .fold(None, |best: Option<(usize, f64)>, (i, &p)| match best {
            Some((_, bp)) if bp >= p => best,
            _ => Some((i, p)),
        })
        .map(|(i, _)| i)
}

fn class_prediction(model: &LogisticClassifier, probs: &ClassProbs, best: Option<usize>) -> Prediction {
    let classes = model.classes();
    // Pushing rather than collecting: SmallVec's generic `extend` cost more than the model.
    let mut pairs = SmallVec::new();
    for (class, &p) in classes.iter().zip(probs) {
        pairs.push((class.clone(), p));
    }
    Prediction {
        prediction: best.map_or(Value::Null, |i| classes[i].clone()),
        probabilities: Some(Probabilities(pairs)),
    }
}

fn regression_prediction(y_hat: f64) -> Prediction {
    Prediction { prediction: Value::from(y_hat), probabilities: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model(task: Task, n: usize) -> OnlineModel {
        OnlineModel::new(ModelConfig::new(task), n).unwrap()
    }

    /// A deterministic, irregular sequence in [0, 1).
    fn noise(i: usize) -> f64 {
        ((i as f64 * 0.618_033_988_75).sin() * 43_758.545_3).fract().abs()
    }

    fn accuracy(stats: &ModelStats) -> f64 {
        match stats.progressive {
            MetricSummary::Classification { accuracy: Some(a), .. } => a,
            ref other => panic!("no accuracy in {other:?}"),
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
        assert!(serde_json::from_value::<ModelConfig>(json!({"task": "clustering"})).is_err());
        let bad = ModelConfig { learning_rate: 0.0, ..c };
        assert!(matches!(OnlineModel::new(bad, 3), Err(MlError::Config(_))));
        assert!(matches!(OnlineModel::new(c, 0), Err(MlError::Config(_))));
    }

    #[test]
    fn learns_a_separable_problem() {
        let mut m = model(Task::Classification, 2);
        assert_eq!(m.predict(&[0.0, 0.0]).unwrap().prediction, Value::Null);
        for i in 0..2_000 {
            let (a, b) = (noise(i) * 2.0 - 1.0, noise(i + 1) * 2.0 - 1.0);
            m.predict_then_learn(&[a, b], &json!(a + b > 0.0)).unwrap();
        }
        assert_eq!(m.predict(&[0.8, 0.5]).unwrap().prediction, json!(true));
        assert_eq!(m.predict(&[-0.7, -0.2]).unwrap().prediction, json!(false));
        let p = m.predict(&[0.8, 0.5]).unwrap().probabilities.unwrap();
        assert!(p.get(&json!(true)).unwrap() > 0.9);
        let stats = m.stats();
        assert_eq!(stats.trained, 2_000);
        assert_eq!(stats.classes.as_ref().map(Vec::len), Some(2));
        assert!(accuracy(&stats) > 0.9, "{stats:?}");
    }

    #[test]
    fn three_string_classes_appearing_one_by_one() {
        let mut m = model(Task::Classification, 2);
        let centre = |c: &str| match c {
            "red" => (0.0, 0.0),
            "green" => (4.0, 0.0),
            _ => (0.0, 4.0),
        };
        let mut rows = Vec::new();
        // Two classes first, so the model passes through its binary stage.
        for i in 0..300 {
            rows.push(if i % 2 == 0 { "red" } else { "green" });
        }
        for i in 0..3_000 {
            rows.push(["red", "green", "blue"][i % 3]);
        }
        for (i, c) in rows.iter().enumerate() {
            let (cx, cy) = centre(c);
            let x = [cx + noise(i) - 0.5, cy + noise(i + 9) - 0.5];
            m.predict_then_learn(&x, &json!(c)).unwrap();
        }
        for c in ["red", "green", "blue"] {
            let (cx, cy) = centre(c);
            let p = m.predict(&[cx, cy]).unwrap();
            assert_eq!(p.prediction, json!(c));
            let probs = p.probabilities.unwrap();
            assert_eq!(probs.len(), 3);
            assert!((probs.iter().map(|(_, p)| p).sum::<f64>() - 1.0).abs() < 1e-12);
        }
        assert_eq!(m.stats().classes, Some(vec![json!("red"), json!("green"), json!("blue")]));
        match m.stats().rolling_1000 {
            MetricSummary::Classification { accuracy: Some(a), .. } => assert!(a > 0.95, "{a}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bool_labels_come_back_as_bools() {
        let mut m = model(Task::Classification, 1);
        let first = m.predict_then_learn(&[1.0], &json!(true)).unwrap();
        assert_eq!(first.prediction, Value::Null);
        // One class seen: it is predicted, and the rest of the mass is for "something else".
        let p = m.predict_then_learn(&[-1.0], &json!(false)).unwrap();
        assert_eq!(p.prediction, json!(true));
        for i in 0..200 {
            let v = if i % 2 == 0 { 1.0 } else { -1.0 };
            m.predict_then_learn(&[v], &json!(v > 0.0)).unwrap();
        }
        let p = m.predict(&[1.0]).unwrap();
        assert_eq!(p.prediction, json!(true));
        assert_eq!(serde_json::to_value(&p).unwrap()["probabilities"].as_object().unwrap().len(), 2);
        assert!(serde_json::to_value(&p).unwrap()["probabilities"]["true"].as_f64().unwrap() > 0.5);
    }

    #[test]
    fn integer_labels_stay_integers() {
        let mut m = model(Task::Classification, 1);
        for i in 0..100 {
            let v = if i % 2 == 0 { 3.0 } else { -3.0 };
            m.predict_then_learn(&[v], &json!(if v > 0.0 { 7 } else { -2 })).unwrap();
        }
        assert_eq!(m.predict(&[3.0]).unwrap().prediction, json!(7));
        assert_eq!(m.predict(&[-3.0]).unwrap().prediction, json!(-2));
    }

    #[test]
    fn regression_fits_a_line() {
        for scale_target in [true, false] {
            let config = ModelConfig { scale_target, ..ModelConfig::new(Task::Regression) };
            fits_a_line(OnlineModel::new(config, 1).unwrap());
        }
    }

    fn fits_a_line(mut m: OnlineModel) {
        for i in 0..20_000 {
            let x = noise(i) * 10.0 - 5.0;
            m.predict_then_learn(&[x], &json!(2.0 * x + 1.0)).unwrap();
        }
        for x in [-3.0, 0.0, 2.5] {
            let y = m.predict(&[x]).unwrap().prediction.as_f64().unwrap();
            assert!((y - (2.0 * x + 1.0)).abs() < 1e-2, "f({x}) = {y}");
        }
        match m.stats().rolling_1000 {
            MetricSummary::Regression { mae: Some(mae), r2: Some(r2), .. } => {
                assert!(mae < 1e-2 && r2 > 0.9999, "{mae} {r2}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(m.predict(&[1.0]).unwrap().probabilities, None);
    }

    #[test]
    fn bad_samples_are_refused_and_change_nothing() {
        let mut c = model(Task::Classification, 2);
        let before = c.clone();
        assert_eq!(c.learn(&[1.0, 2.0], &json!(0.5)), Err(MlError::BadClassLabel { got: "float" }));
        assert_eq!(c.learn(&[1.0, 2.0], &json!({"a": 1})), Err(MlError::BadClassLabel { got: "object" }));
        assert_eq!(c.learn(&[1.0], &json!(1)), Err(MlError::FeatureCount { expected: 2, got: 1 }));
        assert_eq!(c.predict_then_learn(&[1.0, f64::NAN], &json!(1)), Err(MlError::NonFiniteFeature { index: 1 }));
        assert_eq!(c, before);
        let mut r = model(Task::Regression, 1);
        assert_eq!(r.predict_then_learn(&[1.0], &json!("12")), Err(MlError::BadTarget { got: "string" }));
        assert_eq!(r.learn(&[1.0], &json!(true)), Err(MlError::BadTarget { got: "bool" }));
        assert_eq!(r.trained(), 0);
        assert_eq!(r.stats().progressive, MetricSummary::Regression { mae: None, rmse: None, r2: None });
    }

    #[test]
    fn serde_round_trip_preserves_predictions() {
        let mut c = model(Task::Classification, 2);
        let mut r = model(Task::Regression, 2);
        for i in 0..500 {
            let x = [noise(i), noise(i + 5) * 3.0];
            c.predict_then_learn(&x, &json!(["a", "b", "c"][i % 3])).unwrap();
            r.predict_then_learn(&x, &json!(x[0] - x[1])).unwrap();
        }
        for m in [c, r] {
            // Through `Value` the numbers stay f64, so the state must come back bit for bit.
            let mut back: OnlineModel = serde_json::from_value(serde_json::to_value(&m).unwrap()).unwrap();
            assert_eq!(back, m);
            assert_eq!(back.stats(), m.stats());
            let x = [0.3, 1.7];
            assert_eq!(back.predict(&x).unwrap(), m.predict(&x).unwrap());
            // It keeps learning the same way too.
            let mut m = m;
            let y = if m.config().task == Task::Regression { json!(1.5) } else { json!("b") };
            assert_eq!(back.predict_then_learn(&x, &y).unwrap(), m.predict_then_learn(&x, &y).unwrap());
            assert_eq!(back, m);

            // Through text, serde_json's default float parsing may be off by one ulp (its
            // `float_roundtrip` feature makes it exact), so predictions agree to ~1e-15.
            let text: OnlineModel = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
            let (a, b) = (text.predict(&x).unwrap(), m.predict(&x).unwrap());
            assert_eq!(a.prediction.is_number(), b.prediction.is_number());
            if let (Some(a), Some(b)) = (a.prediction.as_f64(), b.prediction.as_f64()) {
                assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0));
            } else {
                assert_eq!(a.prediction, b.prediction);
                for ((ca, pa), (cb, pb)) in a.probabilities.unwrap().iter().zip(b.probabilities.unwrap().iter()) {
                    assert!(ca == cb && (pa - pb).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn inconsistent_checkpoints_are_refused() {
        let m = model(Task::Regression, 2);
        let mut v = serde_json::to_value(&m).unwrap();
        v["n_features"] = json!(3);
        assert!(serde_json::from_value::<OnlineModel>(v).is_err());
        let mut v = serde_json::to_value(&m).unwrap();
        v["config"]["task"] = json!("classification");
        assert!(serde_json::from_value::<OnlineModel>(v).is_err());
    }

    #[test]
    fn stats_serialise_with_the_agreed_keys() {
        let mut c = model(Task::Classification, 1);
        c.predict_then_learn(&[1.0], &json!("x")).unwrap();
        let v = serde_json::to_value(c.stats()).unwrap();
        assert_eq!(v["task"], json!("classification"));
        assert_eq!(v["classes"], json!(["x"]));
        assert!(v["progressive"]["accuracy"].is_number() && v["rolling_1000"]["log_loss"].is_number());
        let back: ModelStats = serde_json::from_value(v).unwrap();
        assert_eq!(back, c.stats());
        let v = serde_json::to_value(model(Task::Regression, 1).stats()).unwrap();
        assert_eq!(serde_json::from_value::<ModelStats>(v.clone()).unwrap(), model(Task::Regression, 1).stats());
        assert_eq!(
            v,
            json!({"task": "regression", "trained": 0,
            "progressive": {"mae": null, "rmse": null, "r2": null},
            "rolling_1000": {"mae": null, "rmse": null, "r2": null}})
        );
    }

    #[test]
    fn models_are_send_sync_and_can_sit_behind_the_trait() {
        fn assert_send_sync<T: Send + Sync + Clone + Serialize + for<'de> Deserialize<'de>>() {}
        assert_send_sync::<OnlineModel>();
        let mut boxed: Box<dyn OnlineLearner> = Box::new(model(Task::Regression, 1));
        boxed.learn(&[1.0], &json!(2)).unwrap();
        assert_eq!(boxed.trained(), 1);
    }
}
