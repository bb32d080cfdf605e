//! Attribute observers ("splitters") that a leaf keeps per column, and the split criteria
//! that score their candidate splits: River's `GaussianSplitter` and `NominalSplitterClassif`
//! with information gain for classes, `TEBSTSplitter` and `NominalSplitterReg` with variance
//! reduction for numbers.

use serde::{Deserialize, Serialize};

use super::super::stats::{Gaussian, Var};

/// How a candidate split divides a leaf.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum SplitKind {
    /// `x <= threshold` goes left (child 0).
    Numeric(f64),
    /// `x == value` goes to child 0, anything else to child 1.
    NominalBinary(u32),
    /// One child per category, in this (ascending) order.
    NominalMulti(Vec<u32>),
}

/// The statistics each child of a split starts from.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum ChildStats {
    /// Class weights per child.
    Classes(Vec<Vec<f64>>),
    /// Target statistics per child.
    Target(Vec<Var>),
}

/// A candidate split of one column and its merit.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Suggestion {
    pub merit: f64,
    pub feature: u32,
    pub kind: SplitKind,
    pub children: ChildStats,
}

/// One column's observer in a leaf.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Splitter {
    /// Numeric column, classification.
    Gaussian(GaussianSplitter),
    /// Nominal column, classification.
    NominalClasses(NominalClassSplitter),
    /// Numeric column, regression.
    Tebst(TebstSplitter),
    /// Nominal column, regression.
    NominalTarget(NominalTargetSplitter),
}

/// Entropy (bits) of a weight distribution, River's `InfoGainSplitCriterion.compute_entropy`.
#[inline]
fn entropy(dist: &[f64]) -> f64 {
    let mut e = 0.0;
    let mut sum = 0.0;
    for &d in dist {
        if d > 0.0 {
            e -= d * d.log2();
            sum += d;
        }
    }
    if sum > 0.0 { (e + sum * sum.log2()) / sum } else { 0.0 }
}

/// Information gain of splitting `pre` into `post`; `-inf` unless at least two children hold
/// more than `min_branch_fraction` of the weight.
pub(super) fn info_gain(pre: &[f64], post: &[Vec<f64>], min_branch_fraction: f64) -> f64 {
    let sums: Vec<f64> = post.iter().map(|d| d.iter().sum()).collect();
    let total: f64 = sums.iter().sum();
    let big = if total > 0.0 { sums.iter().filter(|&&s| s / total > min_branch_fraction).count() } else { 0 };
    if big < 2 {
        return f64::NEG_INFINITY;
    }
    let post_entropy = post.iter().zip(&sums).map(|(d, &s)| s * entropy(d)).sum::<f64>() / total;
    entropy(pre) - post_entropy
}

/// The range of information gain for `n_classes` classes: log2 of at least 2.
pub(super) fn info_gain_range(n_classes: usize) -> f64 {
    (n_classes.max(2) as f64).log2()
}

/// Variance reduction of splitting `pre` into `post`; 0 unless every child has at least
/// `min_samples` weight (River's `VarianceReductionSplitCriterion`).
pub(super) fn variance_reduction(pre: &Var, post: &[Var], min_samples: f64) -> f64 {
    if post.iter().any(|p| p.n < min_samples) {
        return 0.0;
    }
    let mut vr = pre.variance();
    for p in post {
        vr -= p.n / pre.n * p.variance();
    }
    vr
}

/// Per class: the Gaussian of the column's values, and their minimum and maximum.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct GaussianSplitter {
    /// Indexed by class; `None` for a class not seen with this column.
    per_class: Vec<Option<(Gaussian, f64, f64)>>,
}

impl GaussianSplitter {
    pub fn update(&mut self, x: f64, class: usize, w: f64) {
        if self.per_class.len() <= class {
            self.per_class.resize(class + 1, None);
        }
        match &mut self.per_class[class] {
            Some((g, lo, hi)) => {
                *lo = lo.min(x);
                *hi = hi.max(x);
                g.update(x, w);
            }
            slot @ None => {
                let mut g = Gaussian::default();
                g.update(x, w);
                *slot = Some((g, x, x));
            }
        }
    }

    /// ln p(x | class), `-inf` where unknown.
    #[inline]
    pub fn log_proba(&self, x: f64, class: usize) -> f64 {
        match self.per_class.get(class) {
            Some(Some((g, _, _))) => g.log_pdf(x),
            _ => f64::NEG_INFINITY,
        }
    }

    /// The best of `n_splits` evenly spaced thresholds between the smallest and largest value.
    pub fn best_split(&self, pre: &[f64], feature: u32, n_splits: u32, min_branch_fraction: f64) -> Option<Suggestion> {
        let seen = self.per_class.iter().flatten();
        let lo = seen.clone().map(|e| e.1).fold(f64::INFINITY, f64::min);
        let hi = seen.map(|e| e.2).fold(f64::NEG_INFINITY, f64::max);
        if lo == f64::INFINITY {
            return None;
        }
        let bin = (hi - lo) / (f64::from(n_splits) + 1.0);
        let mut best: Option<Suggestion> = None;
        for i in 0..n_splits {
            let t = lo + bin * f64::from(i + 1);
            if !(lo < t && t < hi) {
                continue;
            }
            let (mut left, mut right) = (vec![0.0; self.per_class.len()], vec![0.0; self.per_class.len()]);
            for (c, e) in self.per_class.iter().enumerate() {
                let Some((g, min, max)) = e else { continue };
                let n = g.weight();
                if t < *min {
                    right[c] = n;
                } else if t >= *max {
                    left[c] = n;
                } else {
                    left[c] = g.cdf(t) * n;
                    right[c] = n - left[c];
                }
            }
            let post = vec![left, right];
            let merit = info_gain(pre, &post, min_branch_fraction);
            if merit > best.as_ref().map_or(f64::NEG_INFINITY, |b| b.merit) {
                best = Some(Suggestion {
                    merit,
                    feature,
                    kind: SplitKind::Numeric(t),
                    children: ChildStats::Classes(post),
                });
            }
        }
        best
    }

    pub fn n_classes(&self) -> usize {
        self.per_class.len()
    }
}

/// Per category (ascending ids): the weight of each class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct NominalClassSplitter {
    values: Vec<u32>,
    counts: Vec<Vec<f64>>,
    /// Weight of each class over all categories.
    class_totals: Vec<f64>,
}

impl NominalClassSplitter {
    pub fn update(&mut self, value: u32, class: usize, w: f64) {
        let i = match self.values.binary_search(&value) {
            Ok(i) => i,
            Err(i) => {
                self.values.insert(i, value);
                self.counts.insert(i, Vec::new());
                i
            }
        };
        let row = &mut self.counts[i];
        if row.len() <= class {
            row.resize(class + 1, 0.0);
        }
        row[class] += w;
        if self.class_totals.len() <= class {
            self.class_totals.resize(class + 1, 0.0);
        }
        self.class_totals[class] += w;
    }

    /// p(value | class), 0 where unknown.
    #[inline]
    pub fn proba(&self, value: u32, class: usize) -> f64 {
        let Ok(i) = self.values.binary_search(&value) else { return 0.0 };
        let count = self.counts[i].get(class).copied().unwrap_or(0.0);
        let total = self.class_totals.get(class).copied().unwrap_or(0.0);
        if count > 0.0 && total > 0.0 { count / total } else { 0.0 }
    }

    /// The multiway split (unless `binary_only`), then each category against the rest where
    /// strictly better.
    pub fn best_split(
        &self,
        pre: &[f64],
        feature: u32,
        binary_only: bool,
        min_branch_fraction: f64,
    ) -> Option<Suggestion> {
        let mut best: Option<Suggestion> = None;
        if !binary_only {
            let post = self.counts.clone();
            let merit = info_gain(pre, &post, min_branch_fraction);
            best = Some(Suggestion {
                merit,
                feature,
                kind: SplitKind::NominalMulti(self.values.clone()),
                children: ChildStats::Classes(post),
            });
        }
        let width = self.class_totals.len();
        for (i, &v) in self.values.iter().enumerate() {
            let mut eq = vec![0.0; width];
            let mut rest = vec![0.0; width];
            for (j, row) in self.counts.iter().enumerate() {
                let target = if i == j { &mut eq } else { &mut rest };
                row.iter().enumerate().for_each(|(c, w)| target[c] += w);
            }
            let post = vec![eq, rest];
            let merit = info_gain(pre, &post, min_branch_fraction);
            if best.as_ref().is_none_or(|b| merit > b.merit) {
                best = Some(Suggestion {
                    merit,
                    feature,
                    kind: SplitKind::NominalBinary(v),
                    children: ChildStats::Classes(post),
                });
            }
        }
        best
    }

    pub fn n_classes(&self) -> usize {
        self.class_totals.len()
    }
}

/// River's `TEBSTSplitter`: target statistics per distinct value of the column rounded to
/// one decimal, in ascending order. River keeps them in an unbalanced binary search tree; a
/// sorted vector holds the same sums (the values are few once rounded) with one binary search
/// per update, and scanning it in order gives the tree's in-order candidates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct TebstSplitter {
    values: Vec<f64>,
    stats: Vec<Var>,
}

impl TebstSplitter {
    pub fn update(&mut self, x: f64, y: f64, w: f64) {
        // + 0.0 turns -0.0 into 0.0, one value as in Python.
        let v = round1(x) + 0.0;
        let i = match self.values.binary_search_by(|a| a.total_cmp(&v)) {
            Ok(i) => i,
            Err(i) => {
                self.values.insert(i, v);
                self.stats.insert(i, Var::default());
                i
            }
        };
        self.stats[i].update(y, w);
    }

    /// The best threshold among the values seen: `x <= value` goes left.
    pub fn best_split(&self, pre: &Var, feature: u32, min_samples: f64) -> Option<Suggestion> {
        let mut best: Option<Suggestion> = None;
        let mut left = Var::default();
        for (v, s) in self.values.iter().zip(&self.stats) {
            left = left.merged(s);
            let right = pre.minus(&left);
            let post = [left, right];
            let merit = variance_reduction(pre, &post, min_samples);
            if merit > best.as_ref().map_or(f64::NEG_INFINITY, |b| b.merit) {
                best = Some(Suggestion {
                    merit,
                    feature,
                    kind: SplitKind::Numeric(*v),
                    children: ChildStats::Target(post.to_vec()),
                });
            }
        }
        best
    }
}

/// `x` rounded to one decimal as Python's `round(x, 1)` does: to the nearest of the decimals
/// `k / 10`, ties (in the exact binary value) to even `k`.
fn round1(x: f64) -> f64 {
    let t = x * 10.0;
    let f = t.floor();
    let frac = t - f;
    // Far from a tie the product's rounding cannot change which neighbour is nearer.
    if (frac - 0.5).abs() > 1e-6 || !t.is_finite() {
        let k = if frac < 0.5 { f } else { f + 1.0 };
        return k / 10.0;
    }
    // Near a tie, let the exact decimal expansion decide (Rust's formatting rounds the exact
    // value half to even, as Python does).
    format!("{x:.1}").parse().unwrap_or(x)
}

/// Per category (ascending ids): target statistics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct NominalTargetSplitter {
    values: Vec<u32>,
    stats: Vec<Var>,
}

impl NominalTargetSplitter {
    pub fn update(&mut self, value: u32, y: f64, w: f64) {
        let i = match self.values.binary_search(&value) {
            Ok(i) => i,
            Err(i) => {
                self.values.insert(i, value);
                self.stats.insert(i, Var::default());
                i
            }
        };
        self.stats[i].update(y, w);
    }

    /// The multiway split (with more than two categories, unless `binary_only`), then each
    /// category against the rest where strictly better.
    pub fn best_split(&self, pre: &Var, feature: u32, binary_only: bool, min_samples: f64) -> Option<Suggestion> {
        let mut best: Option<Suggestion> = None;
        if !binary_only && self.values.len() > 2 {
            let merit = variance_reduction(pre, &self.stats, min_samples);
            best = Some(Suggestion {
                merit,
                feature,
                kind: SplitKind::NominalMulti(self.values.clone()),
                children: ChildStats::Target(self.stats.clone()),
            });
        }
        for (v, s) in self.values.iter().zip(&self.stats) {
            let post = [*s, pre.minus(s)];
            let merit = variance_reduction(pre, &post, min_samples);
            if merit > best.as_ref().map_or(f64::NEG_INFINITY, |b| b.merit) {
                best = Some(Suggestion {
                    merit,
                    feature,
                    kind: SplitKind::NominalBinary(*v),
                    children: ChildStats::Target(post.to_vec()),
                });
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_and_info_gain_follow_river() {
        assert!((entropy(&[5.0, 5.0]) - 1.0).abs() < 1e-12);
        assert_eq!(entropy(&[3.0, 0.0]), 0.0);
        // A perfect split of a balanced binary leaf gains one bit.
        assert!((info_gain(&[5.0, 5.0], &[vec![5.0, 0.0], vec![0.0, 5.0]], 0.01) - 1.0).abs() < 1e-12);
        // One child with almost all the weight is not a split.
        assert_eq!(info_gain(&[500.0, 500.0], &[vec![500.0, 499.0], vec![0.0, 1.0]], 0.01), f64::NEG_INFINITY);
        assert_eq!(info_gain_range(1), 1.0);
        assert_eq!(info_gain_range(4), 2.0);
    }

    #[test]
    fn gaussian_splitter_proposes_the_separating_threshold() {
        let mut s = GaussianSplitter::default();
        for i in 0..100 {
            let x = f64::from(i) / 100.0;
            s.update(x, 0, 1.0);
            s.update(x + 2.0, 1, 1.0);
        }
        let best = s.best_split(&[100.0, 100.0], 3, 10, 0.01).unwrap();
        let SplitKind::Numeric(t) = best.kind else { panic!() };
        assert!(t > 0.99 && t < 2.0, "{t}");
        assert!(best.merit > 0.99, "{}", best.merit);
        assert_eq!(best.feature, 3);
        assert!(s.log_proba(0.5, 0) > s.log_proba(0.5, 1));
        assert_eq!(s.log_proba(0.5, 7), f64::NEG_INFINITY);
    }

    #[test]
    fn nominal_splitters_prefer_the_informative_grouping() {
        let mut s = NominalClassSplitter::default();
        for i in 0..300u32 {
            let v = i % 3;
            s.update(v, usize::from(v == 2), 1.0);
        }
        let best = s.best_split(&[200.0, 100.0], 0, false, 0.01).unwrap();
        // Multiway and "2 vs rest" are equally pure; the multiway comes first and the binary
        // must be strictly better to replace it.
        assert_eq!(best.kind, SplitKind::NominalMulti(vec![0, 1, 2]));
        assert!((best.merit - entropy(&[200.0, 100.0])).abs() < 1e-12);
        assert!((s.proba(2, 1) - 1.0).abs() < 1e-15 && s.proba(5, 0) == 0.0);
        let binary = s.best_split(&[200.0, 100.0], 0, true, 0.01).unwrap();
        assert_eq!(binary.kind, SplitKind::NominalBinary(2));

        let mut r = NominalTargetSplitter::default();
        let mut pre = Var::default();
        for i in 0..300u32 {
            let y = if i % 3 == 1 { 10.0 } else { 0.0 } + f64::from(i % 7) * 0.01;
            r.update(i % 3, y, 1.0);
            pre.update(y, 1.0);
        }
        let best = r.best_split(&pre, 0, false, 5.0).unwrap();
        assert_eq!(best.kind, SplitKind::NominalBinary(1));
    }

    #[test]
    fn tebst_rounds_like_python_and_finds_the_step() {
        assert_eq!(round1(0.25), 0.2);
        assert_eq!(round1(0.35), 0.3); // 0.35 is 0.34999... in binary
        assert_eq!(round1(0.15), 0.1);
        assert_eq!(round1(-0.06), -0.1);
        assert_eq!(round1(2.675), 2.7);
        let mut s = TebstSplitter::default();
        let mut pre = Var::default();
        for i in 0..200 {
            let x = f64::from(i) / 200.0;
            let y = if x <= 0.5 { 1.0 } else { 5.0 };
            s.update(x, y, 1.0);
            pre.update(y, 1.0);
        }
        let best = s.best_split(&pre, 0, 5.0).unwrap();
        assert_eq!(best.kind, SplitKind::Numeric(0.5));
        // Rounding puts 0.45..0.55 in one bucket, so the split cannot be pure: variance 4.0
        // before, about 0.65 after.
        assert!(best.merit > 3.3, "{}", best.merit);
        // A child under min_samples scores 0, not -inf, as in River.
        assert_eq!(variance_reduction(&pre, &[pre, Var::default()], 5.0), 0.0);
    }
}
