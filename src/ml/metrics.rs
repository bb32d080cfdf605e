//! Progressive-validation metrics: exact figures over every sample since the start and over
//! the last [`ROLLING_WINDOW`] samples.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::scaler::Moments;

/// How many of the latest samples the rolling figures cover.
pub const ROLLING_WINDOW: usize = 1000;

/// Probabilities are clipped to `[LOG_LOSS_EPS, 1 - LOG_LOSS_EPS]` before taking logs.
pub const LOG_LOSS_EPS: f64 = 1e-15;

/// Figures for one span of samples; `None` (JSON null) where undefined, e.g. before any sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum MetricSummary {
    /// Classification figures.
    Classification {
        /// Fraction of samples whose predicted class was the true one.
        accuracy: Option<f64>,
        /// Mean negative log of the probability given to the true class.
        log_loss: Option<f64>,
    },
    /// Regression figures.
    Regression {
        /// Mean absolute error.
        mae: Option<f64>,
        /// Root mean squared error.
        rmse: Option<f64>,
        /// Coefficient of determination; undefined while the targets have no variance.
        r2: Option<f64>,
    },
}

/// The last [`ROLLING_WINDOW`] samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Window<T> {
    buf: VecDeque<T>,
    /// Samples pushed since the running sums were last re-added from scratch.
    since_resum: usize,
}

impl<T: Copy> Window<T> {
    fn new() -> Self {
        Self { buf: VecDeque::with_capacity(ROLLING_WINDOW), since_resum: 0 }
    }

    /// Add `v`, returning the sample it pushes out once the window is full.
    #[inline]
    fn push(&mut self, v: T) -> Option<T> {
        let evicted = if self.buf.len() == ROLLING_WINDOW { self.buf.pop_front() } else { None };
        self.buf.push_back(v);
        self.since_resum += 1;
        evicted
    }

    /// True once per [`ROLLING_WINDOW`] pushes: the moment to re-add the running sums from
    /// scratch, so rounding from subtracting evicted samples never builds up (one pass per
    /// window, a constant cost per sample).
    #[inline]
    fn resum_due(&mut self) -> bool {
        let due = self.since_resum >= ROLLING_WINDOW;
        if due {
            self.since_resum = 0;
        }
        due
    }

    /// True if the window is within bounds (a loaded checkpoint's check).
    fn is_consistent(&self) -> bool {
        self.buf.len() <= ROLLING_WINDOW
    }
}

fn ratio(sum: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| sum / n as f64)
}

/// Accuracy and log loss, progressive and rolling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics {
    n: u64,
    correct: u64,
    loss_sum: f64,
    window: Window<(bool, f64)>,
    window_correct: usize,
    window_loss: f64,
}

impl Default for ClassificationMetrics {
    fn default() -> Self {
        Self { n: 0, correct: 0, loss_sum: 0.0, window: Window::new(), window_correct: 0, window_loss: 0.0 }
    }
}

impl ClassificationMetrics {
    /// Record one prediction: whether it was right, and the probability it gave the truth.
    #[inline]
    pub fn update(&mut self, correct: bool, p_truth: f64) {
        let loss = -p_truth.clamp(LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS).ln();
        self.n += 1;
        self.correct += u64::from(correct);
        self.loss_sum += loss;
        if let Some((c, l)) = self.window.push((correct, loss)) {
            self.window_correct -= usize::from(c);
            self.window_loss -= l;
        }
        self.window_correct += usize::from(correct);
        self.window_loss += loss;
        if self.window.resum_due() {
            self.window_loss = self.window.buf.iter().map(|&(_, l)| l).sum();
        }
    }

    /// True if the window and its running counts agree (a loaded checkpoint's check).
    pub fn is_consistent(&self) -> bool {
        self.window.is_consistent()
            && self.window_correct == self.window.buf.iter().filter(|s| s.0).count()
            && self.correct <= self.n
    }

    /// Figures over every sample.
    pub fn progressive(&self) -> MetricSummary {
        let n = self.n;
        MetricSummary::Classification { accuracy: ratio(self.correct as f64, n), log_loss: ratio(self.loss_sum, n) }
    }

    /// Figures over the last [`ROLLING_WINDOW`] samples.
    pub fn rolling(&self) -> MetricSummary {
        let n = self.window.buf.len() as u64;
        MetricSummary::Classification {
            accuracy: ratio(self.window_correct as f64, n),
            log_loss: ratio(self.window_loss, n),
        }
    }
}

/// Sums behind MAE, RMSE and R² for one span of samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct ErrorSums {
    abs: f64,
    sq: f64,
    y: Moments,
}

impl ErrorSums {
    #[inline]
    fn add(&mut self, y: f64, err: f64) {
        self.abs += err.abs();
        self.sq += err * err;
        self.y.add(y);
    }

    #[inline]
    fn remove(&mut self, y: f64, err: f64) {
        self.abs -= err.abs();
        self.sq -= err * err;
        self.y.remove(y);
    }

    fn summary(&self) -> MetricSummary {
        let n = self.y.n;
        MetricSummary::Regression {
            mae: ratio(self.abs, n),
            rmse: ratio(self.sq, n).map(f64::sqrt),
            r2: (self.y.m2 > 0.0).then(|| 1.0 - self.sq / self.y.m2),
        }
    }
}

/// MAE, RMSE and R², progressive and rolling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    all: ErrorSums,
    window: Window<(f64, f64)>,
    recent: ErrorSums,
}

impl Default for RegressionMetrics {
    fn default() -> Self {
        Self { all: ErrorSums::default(), window: Window::new(), recent: ErrorSums::default() }
    }
}

impl RegressionMetrics {
    /// Record one prediction `y_hat` of the true `y`.
    #[inline]
    pub fn update(&mut self, y: f64, y_hat: f64) {
        let err = y - y_hat;
        self.all.add(y, err);
        if let Some((old_y, old_err)) = self.window.push((y, err)) {
            self.recent.remove(old_y, old_err);
        }
        self.recent.add(y, err);
        if self.window.resum_due() {
            let mut fresh = ErrorSums::default();
            self.window.buf.iter().for_each(|&(y, e)| fresh.add(y, e));
            self.recent = fresh;
        }
    }

    /// True if the window and its running sums agree (a loaded checkpoint's check).
    pub fn is_consistent(&self) -> bool {
        self.window.is_consistent() && self.recent.y.n == self.window.buf.len() as u64
    }

    /// Figures over every sample.
    pub fn progressive(&self) -> MetricSummary {
        self.all.summary()
    }

    /// Figures over the last [`ROLLING_WINDOW`] samples.
    pub fn rolling(&self) -> MetricSummary {
        self.recent.summary()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() <= 1e-9 * (1.0 + b.abs()))
    }

    /// A deterministic, irregular sequence in [0, 1).
    fn noise(i: usize) -> f64 {
        ((i as f64 * 0.618_033_988_75).sin() * 43_758.545_3).fract().abs()
    }

    #[test]
    fn rolling_classification_figures_are_exact() {
        let mut m = ClassificationMetrics::default();
        let mut seen = Vec::new();
        for i in 0..2_537 {
            let (correct, p) = (noise(i) > 0.3, 0.01 + 0.98 * noise(i + 7));
            m.update(correct, p);
            seen.push((correct, -p.ln()));
        }
        let last = &seen[seen.len() - ROLLING_WINDOW..];
        let n = ROLLING_WINDOW as f64;
        let MetricSummary::Classification { accuracy, log_loss } = m.rolling() else { panic!() };
        assert_eq!(accuracy, Some(last.iter().filter(|s| s.0).count() as f64 / n));
        assert!(close(log_loss, last.iter().map(|s| s.1).sum::<f64>() / n));
        let MetricSummary::Classification { accuracy, .. } = m.progressive() else { panic!() };
        assert_eq!(accuracy, Some(seen.iter().filter(|s| s.0).count() as f64 / seen.len() as f64));
    }

    #[test]
    fn rolling_regression_figures_are_exact() {
        let mut m = RegressionMetrics::default();
        let mut seen = Vec::new();
        for i in 0..3_456 {
            // A drifting level, so the window's targets differ from the whole stream's.
            let y = 1e4 + i as f64 + 50.0 * noise(i);
            let y_hat = y + 20.0 * (noise(i + 3) - 0.5);
            m.update(y, y_hat);
            seen.push((y, y_hat));
        }
        let last = &seen[seen.len() - ROLLING_WINDOW..];
        let n = ROLLING_WINDOW as f64;
        let mae = last.iter().map(|(y, p)| (y - p).abs()).sum::<f64>() / n;
        let mse = last.iter().map(|(y, p)| (y - p).powi(2)).sum::<f64>() / n;
        let mean = last.iter().map(|(y, _)| y).sum::<f64>() / n;
        let sst = last.iter().map(|(y, _)| (y - mean).powi(2)).sum::<f64>();
        let MetricSummary::Regression { mae: a, rmse: b, r2: c } = m.rolling() else { panic!() };
        assert!(close(a, mae));
        assert!(close(b, mse.sqrt()));
        assert!(close(c, 1.0 - mse * n / sst));
    }

    #[test]
    fn empty_and_constant_spans_are_null() {
        let m = RegressionMetrics::default();
        assert_eq!(m.progressive(), MetricSummary::Regression { mae: None, rmse: None, r2: None });
        let mut m = RegressionMetrics::default();
        m.update(3.0, 1.0);
        m.update(3.0, 5.0);
        assert_eq!(m.rolling(), MetricSummary::Regression { mae: Some(2.0), rmse: Some(2.0), r2: None });
    }

    #[test]
    fn log_loss_clips_probabilities() {
        let mut m = ClassificationMetrics::default();
        m.update(false, 0.0);
        let MetricSummary::Classification { log_loss, .. } = m.progressive() else { panic!() };
        assert!(close(log_loss, -(LOG_LOSS_EPS.ln())));
    }
}
