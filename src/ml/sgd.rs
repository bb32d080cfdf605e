//! SGD linear models on standardised features: logistic classification (binary, then
//! one-vs-rest once a third class shows up) and squared-loss regression.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use smallvec::SmallVec;

use super::error::{MlError, json_kind};
use super::scaler::{Moments, StandardScaler};

/// Per-class probabilities, indexed like the classes; inline for the binary case.
pub(super) type ClassProbs = SmallVec<[f64; 2]>;

/// River's default gradient clip; it only stops a runaway target from producing infinities.
const CLIP_GRADIENT: f64 = 1e12;

/// The logistic function.
#[inline]
fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

#[inline]
fn dot(w: &[f64], x: &[f64]) -> f64 {
    w.iter().zip(x).map(|(a, b)| a * b).sum()
}

/// One plain SGD step on `loss_gradient * x + l2 * w`; the intercept gets no L2, as in River.
#[inline]
fn step(w: &mut [f64], b: &mut f64, xs: &[f64], loss_gradient: f64, lr: f64, l2: f64) {
    for (wi, &xi) in w.iter_mut().zip(xs) {
        *wi -= lr * (loss_gradient * xi + l2 * *wi);
    }
    *b -= lr * loss_gradient;
}

/// A regression target as `f64`, or why it is not one.
pub(super) fn regression_target(y: &Value) -> Result<f64, MlError> {
    match y.as_f64() {
        Some(v) => Ok(v),
        None => Err(MlError::BadTarget { got: json_kind(y) }),
    }
}

/// Check that `y` can be a class label: a bool, a string or an integer.
pub(super) fn check_class_label(y: &Value) -> Result<(), MlError> {
    match y {
        Value::Bool(_) | Value::String(_) => Ok(()),
        Value::Number(n) if !n.is_f64() => Ok(()),
        _ => Err(MlError::BadClassLabel { got: json_kind(y) }),
    }
}

/// Squared-loss linear regression, like River's `linear_model.LinearRegression`, optionally
/// on an online-standardised target like River's `preprocessing.TargetStandardScaler`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearRegressor {
    weights: Vec<f64>,
    intercept: f64,
    /// Running statistics of the target when it is standardised.
    target: Option<Moments>,
}

impl LinearRegressor {
    /// All-zero weights for `n_features` features; `scale_target` learns on the standardised
    /// target, so a target far from 0 needs no warm-up while the intercept walks to it.
    pub fn new(n_features: usize, scale_target: bool) -> Self {
        Self { weights: vec![0.0; n_features], intercept: 0.0, target: scale_target.then(Moments::default) }
    }

    /// True if the weights are for `n_features` features (a loaded checkpoint's check).
    pub fn fits(&self, n_features: usize) -> bool {
        self.weights.len() == n_features
    }

    /// The prediction for raw `x`, standardised on the fly by `scaler`.
    #[inline]
    pub fn predict(&self, scaler: &StandardScaler, x: &[f64]) -> f64 {
        let raw = scaler.dot_transformed(&self.weights, x) + self.intercept;
        match &self.target {
            Some(t) => raw * t.sample_std() + t.mean,
            None => raw,
        }
    }

    /// One SGD step towards `y` for already standardised `xs`.
    #[inline]
    pub fn learn(&mut self, xs: &[f64], y: f64, lr: f64, l2: f64) {
        let y = match &mut self.target {
            Some(t) => {
                t.add(y);
                let sd = t.sample_std();
                if sd > 0.0 { (y - t.mean) / sd } else { 0.0 }
            }
            None => y,
        };
        let y_hat = dot(&self.weights, xs) + self.intercept;
        let g = (2.0 * (y_hat - y)).clamp(-CLIP_GRADIENT, CLIP_GRADIENT);
        step(&mut self.weights, &mut self.intercept, xs, g, lr, l2);
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
pub struct LogisticClassifier {
    n_features: usize,
    classes: Vec<Value>,
    /// Row-major, `intercepts.len()` rows of `n_features`.
    weights: Vec<f64>,
    intercepts: Vec<f64>,
}

impl LogisticClassifier {
    /// A classifier that has seen no class yet; `n_features` must be at least 1.
    pub fn new(n_features: usize) -> Self {
        Self { n_features, classes: Vec::new(), weights: vec![0.0; n_features], intercepts: vec![0.0] }
    }

    /// True if the rows are for `n_features` features and the classes seen (a loaded
    /// checkpoint's check).
    pub fn fits(&self, n_features: usize) -> bool {
        let rows = if self.classes.len() <= 2 { 1 } else { self.classes.len() };
        self.n_features == n_features && self.intercepts.len() == rows && self.weights.len() == rows * n_features
    }

    /// The classes seen so far, in order of first appearance.
    pub fn classes(&self) -> &[Value] {
        &self.classes
    }

    /// Index of class `y`, if seen.
    #[inline]
    pub fn index_of(&self, y: &Value) -> Option<usize> {
        self.classes.iter().position(|c| c == y)
    }

    fn rows(&self) -> impl Iterator<Item = (&[f64], f64)> {
        self.weights.chunks_exact(self.n_features).zip(self.intercepts.iter().copied())
    }

    /// Probabilities for raw `x`, standardised on the fly by `scaler`. In the binary stage
    /// there are always two entries (classes 0 and 1, seen or not); in one-vs-rest there is
    /// one per class, normalised to sum to 1.
    pub fn predict_proba(&self, scaler: &StandardScaler, x: &[f64]) -> ClassProbs {
        if let [b] = self.intercepts[..] {
            let p1 = sigmoid(scaler.dot_transformed(&self.weights, x) + b);
            return SmallVec::from_buf([1.0 - p1, p1]);
        }
        let mut probs: ClassProbs = self.rows().map(|(w, b)| sigmoid(scaler.dot_transformed(w, x) + b)).collect();
        let total: f64 = probs.iter().sum();
        if total > 0.0 {
            probs.iter_mut().for_each(|p| *p /= total);
        }
        probs
    }

    /// One SGD step per row for already standardised `xs` and a label already checked with
    /// [`check_class_label`]. An unseen label becomes a new class.
    pub fn learn(&mut self, xs: &[f64], y: &Value, lr: f64, l2: f64) {
        let target = match self.index_of(y) {
            Some(i) => i,
            None => self.add_class(y.clone()),
        };
        let single = self.intercepts.len() == 1;
        let rows = self.weights.chunks_exact_mut(self.n_features).zip(&mut self.intercepts);
        for (row, (w, b)) in rows.enumerate() {
            let hit = if single { target == 1 } else { target == row };
            let p = sigmoid(dot(w, xs) + *b);
            step(w, b, xs, p - f64::from(u8::from(hit)), lr, l2);
        }
    }

    /// Register a new class and return its index, switching to one-vs-rest at three classes.
    fn add_class(&mut self, y: Value) -> usize {
        self.classes.push(y);
        let k = self.classes.len();
        if k == 3 {
            let class1 = std::mem::take(&mut self.weights);
            let b1 = self.intercepts[0];
            self.weights = class1.iter().map(|w| -w).chain(class1.iter().copied()).collect();
            self.intercepts = vec![-b1, b1];
        }
        if k >= 3 {
            self.weights.resize(self.weights.len() + self.n_features, 0.0);
            self.intercepts.push(0.0);
        }
        k - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_are_checked_by_json_kind() {
        for ok in [json!(true), json!("a"), json!(3), json!(-3), json!(u64::MAX)] {
            assert_eq!(check_class_label(&ok), Ok(()), "{ok}");
        }
        assert_eq!(check_class_label(&json!(1.5)), Err(MlError::BadClassLabel { got: "float" }));
        assert_eq!(check_class_label(&json!({"a": 1})), Err(MlError::BadClassLabel { got: "object" }));
        assert_eq!(check_class_label(&json!(null)), Err(MlError::BadClassLabel { got: "null" }));
        assert_eq!(regression_target(&json!(2)), Ok(2.0));
        assert_eq!(regression_target(&json!("2")), Err(MlError::BadTarget { got: "string" }));
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
        for (x, y) in [([0.0, 0.0], json!("a")), ([2.0, 2.0], json!("b"))].iter().cycle().take(20) {
            scaler.transform_into(x, &mut xs);
            m.learn(&xs, y, 0.1, 0.0);
        }
        let before = m.predict_proba(&scaler, &[2.0, 2.0]);
        m.add_class(json!("c"));
        let after = m.predict_proba(&scaler, &[2.0, 2.0]);
        assert_eq!(after.len(), 3);
        // Same ranking of a and b as before; c is at sigmoid(0) = 0.5 before normalising.
        assert!(after[1] > after[0]);
        assert!((after[1] / after[0] - before[1] / before[0]).abs() < 1e-9);
        assert!((after.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
