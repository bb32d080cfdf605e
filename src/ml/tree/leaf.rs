//! A Hoeffding tree's leaf: its statistics, its splitters, and how it predicts (majority
//! class, naive Bayes, or naive Bayes adaptive; target mean, linear model, or adaptive).

use serde::{Deserialize, Serialize};

use super::super::ClassProbs;
use super::super::rng::Rng;
use super::super::sample::Feature;
use super::super::stats::Var;
use super::splitter::{GaussianSplitter, NominalClassSplitter, NominalTargetSplitter, Splitter, TebstSplitter};
use super::{Config, LeafPrediction};

/// River's default gradient clip for the leaf models.
const CLIP_GRADIENT: f64 = 1e12;

/// What the leaf has seen of the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum LeafStats {
    /// Weight of each class.
    Classes(Vec<f64>),
    /// Target statistics, the linear leaf model and the running errors of the mean and the
    /// model (`adaptive` picks the smaller).
    Target { stats: Var, model: LeafModel, fmse_mean: f64, fmse_model: f64 },
}

/// River's `LinearRegression` in a leaf: plain SGD on the raw numeric columns (no scaling,
/// as River's default leaf model), step 0.01 for the weights and the intercept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct LeafModel {
    weights: Vec<f64>,
    intercept: f64,
}

impl LeafModel {
    pub fn new(n_numeric: usize) -> Self {
        Self { weights: vec![0.0; n_numeric], intercept: 0.0 }
    }

    #[inline]
    fn predict(&self, x: &[Feature]) -> f64 {
        let mut sum = 0.0;
        for (w, v) in self.weights.iter().zip(x.iter().filter_map(|f| f.num())) {
            sum += w * v;
        }
        sum + self.intercept
    }

    /// One SGD step with sample weight `w`, which scales the loss gradient as in River.
    #[inline]
    fn learn(&mut self, x: &[Feature], y: f64, w: f64, lr: f64) {
        let g = (2.0 * (self.predict(x) - y) * w).clamp(-CLIP_GRADIENT, CLIP_GRADIENT);
        self.intercept -= lr * g;
        for (wi, v) in self.weights.iter_mut().zip(x.iter().filter_map(|f| f.num())) {
            *wi -= lr * g * v;
        }
    }

    pub fn n_weights(&self) -> usize {
        self.weights.len()
    }
}

/// A target to learn: a class index or a number.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    Class(usize),
    Value(f64),
}

/// One leaf.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Leaf {
    pub depth: u32,
    /// The leaf's weight when it last tried to split (its initial weight at first).
    pub last_attempt: f64,
    pub stats: LeafStats,
    /// One observer per column (in column order), created on the column's first value; all
    /// cleared when a split attempt decides not to split on anything (River deactivates the
    /// leaf, then at once re-activates it with empty observers).
    pub splitters: Vec<Option<Splitter>>,
    /// False once the leaf is at the maximum depth: it stops observing and splitting.
    pub active: bool,
    /// The columns this leaf observes, for a forest's random subspaces: drawn on the first
    /// sample learned (`Some(empty)` until then); `None` observes every column.
    pub features: Option<Vec<u32>>,
    /// Naive Bayes adaptive: weight the majority class and naive Bayes got right.
    pub mc_correct: f64,
    pub nb_correct: f64,
}

impl Leaf {
    pub fn new(depth: u32, stats: LeafStats, n_columns: usize, random_subspace: bool) -> Self {
        let last_attempt = stats_weight(&stats);
        Self {
            depth,
            last_attempt,
            stats,
            splitters: vec![None; n_columns],
            active: true,
            features: random_subspace.then(Vec::new),
            mc_correct: 0.0,
            nb_correct: 0.0,
        }
    }

    /// The total weight seen (including what the leaf started with).
    pub fn weight(&self) -> f64 {
        stats_weight(&self.stats)
    }

    /// Forget the observers (a split attempt that chose not to split).
    pub fn clear_splitters(&mut self) {
        self.splitters.iter_mut().for_each(|s| *s = None);
    }

    /// Learn `x` with `target` and weight `w`.
    pub fn learn(
        &mut self,
        x: &[Feature],
        target: Target,
        w: f64,
        cfg: &Config,
        nominal: &[bool],
        rng: Option<&mut Rng>,
    ) {
        match (target, &mut self.stats) {
            (Target::Class(c), LeafStats::Classes(_)) => {
                if self.active && cfg.leaf_prediction == LeafPrediction::Nba {
                    let mc = argmax(&self.majority_class());
                    if self.weight() == 0.0 || mc == Some(c) {
                        self.mc_correct += w;
                    }
                    let nb = self.naive_bayes(x);
                    if !nb.is_empty() && argmax(&nb) == Some(c) {
                        self.nb_correct += w;
                    }
                }
                let LeafStats::Classes(counts) = &mut self.stats else { unreachable!() };
                if counts.len() <= c {
                    counts.resize(c + 1, 0.0);
                }
                counts[c] += w;
            }
            (Target::Value(y), LeafStats::Target { stats, model, fmse_mean, fmse_model }) => {
                let decay = cfg.model_selector_decay();
                *fmse_mean = decay * *fmse_mean + (y - stats.mean).powi(2);
                *fmse_model = decay * *fmse_model + (y - model.predict(x)).powi(2);
                stats.update(y, w);
            }
            _ => unreachable!("the tree follows the task"),
        }
        if self.active {
            self.update_splitters(x, target, w, cfg, nominal, rng);
        }
        if let (Target::Value(y), LeafStats::Target { model, .. }) = (target, &mut self.stats) {
            model.learn(x, y, w, cfg.leaf_learning_rate());
        }
    }

    fn update_splitters(
        &mut self,
        x: &[Feature],
        target: Target,
        w: f64,
        cfg: &Config,
        nominal: &[bool],
        rng: Option<&mut Rng>,
    ) {
        if let (Some(features), Some(rng)) = (&mut self.features, rng)
            && features.is_empty()
        {
            let n = self.splitters.len();
            *features = rng.sample(n, cfg.max_features.unwrap_or(n));
        }
        let update = |slot: &mut Option<Splitter>, j: usize| {
            let s = slot.get_or_insert_with(|| match (target, nominal[j]) {
                (Target::Class(_), false) => Splitter::Gaussian(GaussianSplitter::default()),
                (Target::Class(_), true) => Splitter::NominalClasses(NominalClassSplitter::default()),
                (Target::Value(_), false) => Splitter::Tebst(TebstSplitter::default()),
                (Target::Value(_), true) => Splitter::NominalTarget(NominalTargetSplitter::default()),
            });
            match (s, x[j], target) {
                (Splitter::Gaussian(s), Feature::Num(v), Target::Class(c)) => s.update(v, c, w),
                (Splitter::NominalClasses(s), Feature::Cat(v), Target::Class(c)) => s.update(v, c, w),
                (Splitter::Tebst(s), Feature::Num(v), Target::Value(y)) => s.update(v, y, w),
                (Splitter::NominalTarget(s), Feature::Cat(v), Target::Value(y)) => s.update(v, y, w),
                _ => unreachable!("samples are checked against the schema"),
            }
        };
        match &self.features {
            Some(features) => {
                for &j in features {
                    update(&mut self.splitters[j as usize], j as usize);
                }
            }
            None => {
                for (j, slot) in self.splitters.iter_mut().enumerate() {
                    update(slot, j);
                }
            }
        }
    }

    /// Class weights normalised to sum to 1 (left as they are while they sum to 0).
    pub fn majority_class(&self) -> ClassProbs {
        let LeafStats::Classes(counts) = &self.stats else { return ClassProbs::new() };
        let total: f64 = counts.iter().sum();
        let mut p: ClassProbs = counts.iter().copied().collect();
        if total > 0.0 {
            p.iter_mut().for_each(|v| *v /= total);
        }
        p
    }

    /// River's `do_naive_bayes_prediction`: the class prior times each observed column's
    /// likelihood, normalised. Classes the leaf has no weight for get 0 (River would give them
    /// a log-vote of 0, as if certain, which only arises from splits and is not kept here).
    /// Empty when the leaf has no weight.
    pub fn naive_bayes(&self, x: &[Feature]) -> ClassProbs {
        let LeafStats::Classes(counts) = &self.stats else { return ClassProbs::new() };
        let total: f64 = counts.iter().sum();
        if total == 0.0 {
            return ClassProbs::new();
        }
        let mut votes: ClassProbs = ClassProbs::from_elem(f64::NEG_INFINITY, counts.len());
        for (c, &weight) in counts.iter().enumerate() {
            if weight <= 0.0 {
                continue;
            }
            let mut vote = (weight / total).ln();
            for (j, s) in self.splitters.iter().enumerate() {
                match (s, x[j]) {
                    (Some(Splitter::Gaussian(s)), Feature::Num(v)) => {
                        let lp = s.log_proba(v, c);
                        if lp > f64::NEG_INFINITY {
                            vote += lp;
                        }
                    }
                    (Some(Splitter::NominalClasses(s)), Feature::Cat(v)) => {
                        let p = s.proba(v, c);
                        if p > 0.0 {
                            vote += p.ln();
                        }
                    }
                    _ => {}
                }
            }
            votes[c] = vote;
        }
        let max = votes.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + votes.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        votes.iter_mut().for_each(|v| *v = (*v - lse).exp());
        votes
    }

    /// Class probabilities by the configured rule.
    pub fn predict_proba(&self, x: &[Feature], cfg: &Config) -> ClassProbs {
        let nb = match cfg.leaf_prediction {
            LeafPrediction::Nb => self.active,
            LeafPrediction::Nba => self.active && self.nb_correct >= self.mc_correct,
            _ => false,
        };
        if nb { self.naive_bayes(x) } else { self.majority_class() }
    }

    /// The regression prediction by the configured rule.
    pub fn predict_value(&self, x: &[Feature], cfg: &Config) -> f64 {
        let LeafStats::Target { stats, model, fmse_mean, fmse_model } = &self.stats else { return 0.0 };
        match cfg.leaf_prediction {
            LeafPrediction::Mean => stats.mean,
            LeafPrediction::Model => model.predict(x),
            _ if fmse_mean < fmse_model => stats.mean,
            _ => model.predict(x),
        }
    }

    /// Classes with weight (River's purity test counts them).
    pub fn n_classes_present(&self) -> usize {
        match &self.stats {
            LeafStats::Classes(c) => c.iter().filter(|&&w| w > 0.0).count(),
            LeafStats::Target { .. } => 0,
        }
    }
}

fn stats_weight(stats: &LeafStats) -> f64 {
    match stats {
        LeafStats::Classes(c) => c.iter().sum(),
        LeafStats::Target { stats, .. } => stats.n,
    }
}

/// Index of the largest value (the first on a tie), if any.
#[inline]
pub(crate) fn argmax(p: &[f64]) -> Option<usize> {
    p.iter()
        .enumerate()
        .fold(None, |best: Option<(usize, f64)>, (i, &v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((i, v)),
        })
        .map(|(i, _)| i)
}
