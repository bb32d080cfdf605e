//! Running mean and variance (Welford): the online standard scaler for features, and the
//! one-quantity [`Moments`] behind the target scaling and the metrics.

use serde::{Deserialize, Serialize};

/// Standardises features with their running mean and population variance, like River's
/// `preprocessing.StandardScaler`: [`update`](Self::update) with a sample, then transform it.
/// A feature whose variance is still zero transforms to 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "ScalerState", into = "ScalerState")]
pub struct StandardScaler {
    count: u64,
    mean: Vec<f64>,
    var: Vec<f64>,
    /// `1 / sqrt(var)`, or 0 where the variance is 0; cached so a prediction only multiplies.
    inv_std: Vec<f64>,
}

/// What a checkpoint holds; the cache is rebuilt on load.
#[derive(Serialize, Deserialize)]
struct ScalerState {
    count: u64,
    mean: Vec<f64>,
    var: Vec<f64>,
}

impl From<ScalerState> for StandardScaler {
    fn from(s: ScalerState) -> Self {
        let inv_std = s.var.iter().map(|&v| inv_std(v)).collect();
        Self { count: s.count, mean: s.mean, var: s.var, inv_std }
    }
}

impl From<StandardScaler> for ScalerState {
    fn from(s: StandardScaler) -> Self {
        Self { count: s.count, mean: s.mean, var: s.var }
    }
}

fn inv_std(var: f64) -> f64 {
    if var > 0.0 { 1.0 / var.sqrt() } else { 0.0 }
}

impl StandardScaler {
    /// A scaler for `n_features` features that has seen nothing.
    pub fn new(n_features: usize) -> Self {
        Self { count: 0, mean: vec![0.0; n_features], var: vec![0.0; n_features], inv_std: vec![0.0; n_features] }
    }

    /// True if the statistics are for `n_features` features (a loaded checkpoint's check).
    pub fn fits(&self, n_features: usize) -> bool {
        self.mean.len() == n_features && self.var.len() == n_features && self.inv_std.len() == n_features
    }

    /// Number of samples seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Running mean of each feature.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// Running population variance of each feature.
    pub fn variance(&self) -> &[f64] {
        &self.var
    }

    /// `1 / sqrt(variance)` of each feature, 0 where the variance is 0.
    pub fn inv_std(&self) -> &[f64] {
        &self.inv_std
    }

    /// Write the standardised `x` into `out` (both as long as the scaler).
    pub fn transform_into(&self, x: &[f64], out: &mut [f64]) {
        for (((o, &xi), &m), &s) in out.iter_mut().zip(x).zip(&self.mean).zip(&self.inv_std) {
            *o = (xi - m) * s;
        }
    }

    /// `w · transform(x)` without materialising the transformed vector.
    #[inline]
    pub fn dot_transformed(&self, w: &[f64], x: &[f64]) -> f64 {
        let mut sum = 0.0;
        for (((&wi, &xi), &m), &s) in w.iter().zip(x).zip(&self.mean).zip(&self.inv_std) {
            sum += wi * ((xi - m) * s);
        }
        sum
    }

    /// Fold `x` into the running statistics.
    pub fn update(&mut self, x: &[f64]) {
        self.count += 1;
        let inv_n = 1.0 / self.count as f64;
        for (((&xi, m), v), s) in x.iter().zip(&mut self.mean).zip(&mut self.var).zip(&mut self.inv_std) {
            let old_mean = *m;
            *m += (xi - old_mean) * inv_n;
            // River's form of Welford's update, which keeps the variance itself rather than M2.
            *v += ((xi - old_mean) * (xi - *m) - *v) * inv_n;
            *s = inv_std(*v);
        }
    }
}

/// Running count, mean and sum of squared deviations of one quantity (Welford), with removal
/// so it can follow a sliding window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    /// Values seen.
    pub n: u64,
    /// Their mean.
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
}

impl Moments {
    /// Fold `x` in.
    #[inline]
    pub fn add(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Take `x` back out; it must have been added.
    #[inline]
    pub fn remove(&mut self, x: f64) {
        self.n -= 1;
        if self.n == 0 {
            *self = Self::default();
            return;
        }
        let d = x - self.mean;
        self.mean -= d / self.n as f64;
        self.m2 = (self.m2 - d * (x - self.mean)).max(0.0);
    }

    /// Sample standard deviation (`n - 1` divisor, as River's `stats.Var`), 0 below two values.
    #[inline]
    pub fn sample_std(&self) -> f64 {
        if self.n > 1 { (self.m2 / (self.n - 1) as f64).sqrt() } else { 0.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12 * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn running_mean_and_variance_match_the_batch_formulas() {
        let rows = [[1.0, 10.0, 5.0], [2.0, 20.0, 5.0], [4.0, -30.0, 5.0], [7.0, 0.5, 5.0]];
        let mut s = StandardScaler::new(3);
        for r in &rows {
            s.update(r);
        }
        for j in 0..3 {
            let n = rows.len() as f64;
            let mean = rows.iter().map(|r| r[j]).sum::<f64>() / n;
            let var = rows.iter().map(|r| (r[j] - mean).powi(2)).sum::<f64>() / n;
            assert!(close(s.mean()[j], mean), "mean {j}");
            assert!(close(s.variance()[j], var), "var {j}");
        }
        let mut out = [0.0; 3];
        s.transform_into(&[4.0, 0.5, 5.0], &mut out);
        let mean0 = 3.5;
        let sd0 = ((2.5f64.powi(2) + 1.5f64.powi(2) + 0.5f64.powi(2) + 3.5f64.powi(2)) / 4.0).sqrt();
        assert!(close(out[0], (4.0 - mean0) / sd0));
        // The constant feature has zero variance and transforms to 0.
        assert_eq!(out[2], 0.0);
        assert!(close(s.dot_transformed(&[1.0, 1.0, 1.0], &[4.0, 0.5, 5.0]), out.iter().sum()));
    }

    #[test]
    fn first_sample_transforms_to_zero() {
        let mut s = StandardScaler::new(2);
        s.update(&[3.0, -1.0]);
        let mut out = [9.0; 2];
        s.transform_into(&[3.0, -1.0], &mut out);
        assert_eq!(out, [0.0, 0.0]);
    }

    #[test]
    fn serde_round_trip_rebuilds_the_cache() {
        let mut s = StandardScaler::new(2);
        s.update(&[1.0, 2.0]);
        s.update(&[3.0, 2.0]);
        let back: StandardScaler = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
