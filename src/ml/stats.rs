//! Weighted running statistics the trees are built from: River's `stats.Var` (with its
//! `+=` and `-=` for merging and splitting) and `proba.Gaussian`, in River's arithmetic.

use serde::{Deserialize, Serialize};

/// `ln(2 pi) / 2`.
const HALF_LOG_TAU: f64 = 0.918_938_533_204_672_7;

/// Weighted count, mean and sum of squared deviations, like River's `stats.Var` (the sample
/// variance, `ddof = 1`). Serialised as `[n, mean, s]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "(f64, f64, f64)", into = "(f64, f64, f64)")]
pub struct Var {
    /// Total weight.
    pub n: f64,
    /// Weighted mean.
    pub mean: f64,
    /// Weighted sum of squared deviations from the mean.
    pub s: f64,
}

impl From<(f64, f64, f64)> for Var {
    fn from((n, mean, s): (f64, f64, f64)) -> Self {
        Self { n, mean, s }
    }
}

impl From<Var> for (f64, f64, f64) {
    fn from(v: Var) -> Self {
        (v.n, v.mean, v.s)
    }
}

impl Var {
    /// Fold in `x` with weight `w` (River's `Var.update`).
    #[inline]
    pub fn update(&mut self, x: f64, w: f64) {
        let old = self.mean;
        self.n += w;
        self.mean += w / self.n * (x - self.mean);
        self.s += w * (x - old) * (x - self.mean);
    }

    /// Sample variance, 0 below two units of weight.
    #[inline]
    pub fn variance(&self) -> f64 {
        if self.n > 1.0 { self.s / (self.n - 1.0) } else { 0.0 }
    }

    /// `self + other`, the statistics of both sets together (River's `Var.__iadd__`).
    #[inline]
    pub fn merged(&self, other: &Var) -> Var {
        if other.n == 0.0 {
            return *self;
        }
        if self.n == 0.0 {
            return *other;
        }
        let s = self.s + other.s + (self.mean - other.mean).powi(2) * self.n * other.n / (self.n + other.n);
        let n = self.n + other.n;
        let mean = (self.n * self.mean + other.n * other.mean) / n;
        Var { n, mean, s }
    }

    /// `self - other` for `other` a subset of `self` (River's `Var.__isub__`).
    #[inline]
    pub fn minus(&self, other: &Var) -> Var {
        let n = self.n - other.n;
        if n <= 0.0 {
            return Var::default();
        }
        let mean = (self.n * self.mean - other.n * other.mean) / n;
        let s = self.s - other.s - (mean - other.mean).powi(2) * n * other.n / (n + other.n);
        Var { n, mean, s }
    }
}

/// The normal distribution fitted to weighted values, River's `proba.Gaussian`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Gaussian(pub Var);

impl Gaussian {
    /// Fold in `x` with weight `w`.
    #[inline]
    pub fn update(&mut self, x: f64, w: f64) {
        self.0.update(x, w);
    }

    /// Total weight seen.
    #[inline]
    pub fn weight(&self) -> f64 {
        self.0.n
    }

    /// Standard deviation (sample, `ddof = 1`).
    #[inline]
    pub fn sigma(&self) -> f64 {
        self.0.variance().sqrt()
    }

    /// P(X <= x); 0 while the deviation is 0, as River returns on its division by zero.
    #[inline]
    pub fn cdf(&self, x: f64) -> f64 {
        let sigma = self.sigma();
        if sigma == 0.0 {
            return 0.0;
        }
        0.5 * (1.0 + libm::erf((x - self.0.mean) / sigma / std::f64::consts::SQRT_2))
    }

    /// ln of the density at `x`; `-inf` below two units of weight or with no spread.
    #[inline]
    pub fn log_pdf(&self, x: f64) -> f64 {
        if self.0.n > 1.0 {
            let variance = self.0.s / (self.0.n - 1.0);
            if variance > 0.0 {
                return (x - self.0.mean).powi(2) / (-2.0 * variance) - HALF_LOG_TAU - 0.5 * variance.ln();
            }
        }
        f64::NEG_INFINITY
    }
}

/// The Hoeffding bound: with probability `1 - delta`, the mean of `n` values of range `range`
/// is within this of its expectation.
#[inline]
pub fn hoeffding_bound(range: f64, delta: f64, n: f64) -> f64 {
    (range * range * (1.0 / delta).ln() / (2.0 * n)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    #[test]
    fn weighted_var_matches_the_batch_formula_and_merges() {
        let data = [(1.0, 2.0), (4.0, 1.0), (-2.0, 3.0), (7.5, 1.0), (0.5, 6.0)];
        let mut v = Var::default();
        data.iter().for_each(|&(x, w)| v.update(x, w));
        let n: f64 = data.iter().map(|d| d.1).sum();
        let mean = data.iter().map(|d| d.0 * d.1).sum::<f64>() / n;
        let s: f64 = data.iter().map(|d| d.1 * (d.0 - mean).powi(2)).sum();
        assert!(close(v.n, n, 1e-15) && close(v.mean, mean, 1e-14) && close(v.s, s, 1e-13));
        assert!(close(v.variance(), s / (n - 1.0), 1e-13));
        let (mut a, mut b) = (Var::default(), Var::default());
        data[..2].iter().for_each(|&(x, w)| a.update(x, w));
        data[2..].iter().for_each(|&(x, w)| b.update(x, w));
        let m = a.merged(&b);
        assert!(close(m.mean, v.mean, 1e-13) && close(m.s, v.s, 1e-12));
        let back = v.minus(&a);
        assert!(close(back.n, b.n, 1e-15) && close(back.mean, b.mean, 1e-12) && close(back.s, b.s, 1e-10));
    }

    #[test]
    fn gaussian_estimator_matches_the_normal_distribution() {
        let mut g = Gaussian::default();
        assert_eq!(g.log_pdf(0.0), f64::NEG_INFINITY);
        assert_eq!(g.cdf(1.0), 0.0);
        for x in [1.0, 2.0, 3.0, 4.0, 5.0] {
            g.update(x, 1.0);
        }
        // mean 3, sample variance 2.5
        let sd = 2.5f64.sqrt();
        assert!(close(g.sigma(), sd, 1e-15));
        assert!(close(g.cdf(3.0), 0.5, 1e-15));
        // Values from the standard normal table: Phi(1) = 0.8413447460685429.
        assert!(close(g.cdf(3.0 + sd), 0.841_344_746_068_542_9, 1e-15));
        let pdf = (-0.5f64).exp() / (sd * (2.0 * std::f64::consts::PI).sqrt());
        assert!(close(g.log_pdf(3.0 + sd), pdf.ln(), 1e-14));
    }

    #[test]
    fn hoeffding_bound_shrinks_with_n() {
        // River's formula: sqrt(R^2 ln(1/delta) / 2n); R = 1, delta = 1e-7, n = 200.
        let b = hoeffding_bound(1.0, 1e-7, 200.0);
        assert!(close(b, (1e7f64.ln() / 400.0).sqrt(), 1e-15));
        assert!(close(b, 0.200_736_740_850_786_47, 1e-14), "{b}");
        assert!(hoeffding_bound(1.0, 1e-7, 800.0) < b);
        assert!(hoeffding_bound(2f64.log2().max(3f64.log2()), 1e-7, 200.0) > b);
    }
}
