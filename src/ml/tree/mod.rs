//! The Hoeffding tree family (VFDT): River 0.26's `HoeffdingTreeClassifier` (Gaussian
//! splitter, information gain, naive Bayes adaptive leaves) and `HoeffdingTreeRegressor`
//! (TEBST splitter, variance reduction, adaptive linear-model leaves), with nominal multiway
//! and binary splits for `Cat` columns.
//!
//! Written here rather than on a crate. Evaluated: `irithyll` 10 (with `irithyll-core` 1.0),
//! whose Hoeffding classifier bins numeric columns into histograms, splits on thresholds only
//! (no nominal multiway splits), needs the class count up front and has no naive Bayes leaves,
//! and whose regressor is a gradient-boosting tree; `rill-ml` 1.5.6 has no trees. Neither
//! reproduces River's rules, which the figures in `tests/data/river_figures.json` hold us to.
//!
//! River's rules kept: a leaf tries to split each time it has seen `grace_period` more weight
//! than at its last attempt (its initial weight from the split that made it counts); a
//! classification leaf that is pure does not try, one whose majority class holds more than
//! `max_share_to_split` of its weight proposes only "no split"; the split is made when the
//! best candidate beats the second by more than the Hoeffding bound (classification: merit
//! difference; regression: merit ratio below `1 - bound`) or the bound is below `tau`;
//! choosing "no split" clears the leaf's observers (River deactivates the leaf and its size
//! manager re-activates it at once, empty). Left out: River's memory management (its byte
//! limits are never reached on these streams) and the TEBST pruning of poor split points.

mod leaf;
mod splitter;

use serde::{Deserialize, Serialize};

use super::rng::Rng;
use super::sample::{Feature, Schema};
use super::stats::{Var, hoeffding_bound};
use super::{ClassProbs, Family, MlError, ModelKind, Supervised, Task};
use leaf::{Leaf, LeafModel, LeafStats, Target};
use splitter::{ChildStats, SplitKind, Splitter, Suggestion, info_gain_range};

/// How a leaf predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeafPrediction {
    /// Majority class (classification).
    Mc,
    /// Naive Bayes (classification).
    Nb,
    /// Naive Bayes when it has been right at least as often as the majority class
    /// (classification; River's default).
    Nba,
    /// Target mean (regression).
    Mean,
    /// Linear model (regression).
    Model,
    /// Linear model or mean, whichever has the smaller decayed squared error (regression;
    /// River's default).
    Adaptive,
}

/// Hyper-parameters of a Hoeffding tree; every default is River 0.26's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeParams {
    /// Weight a leaf must see between split attempts. Default 200.
    #[serde(default = "default_grace_period")]
    pub grace_period: u32,
    /// Significance of the Hoeffding bound. Default 1e-7.
    #[serde(default = "default_delta")]
    pub delta: f64,
    /// Tie threshold: split anyway once the bound is below it. Default 0.05.
    #[serde(default = "default_tau")]
    pub tau: f64,
    /// Maximum depth; unlimited by default.
    #[serde(default)]
    pub max_depth: Option<u32>,
    /// How leaves predict: `nba` (default), `nb` or `mc` for classification; `adaptive`
    /// (default), `model` or `mean` for regression.
    #[serde(default)]
    pub leaf_prediction: Option<LeafPrediction>,
    /// Candidate thresholds per numeric column (classification's Gaussian splitter). Default 10.
    #[serde(default = "default_n_splits")]
    pub n_splits: u32,
    /// Classification: a split needs two branches with more than this fraction of the weight.
    /// Default 0.01.
    #[serde(default = "default_min_branch_fraction")]
    pub min_branch_fraction: f64,
    /// Classification: a leaf whose majority class exceeds this share does not split.
    /// Default 0.99.
    #[serde(default = "default_max_share_to_split")]
    pub max_share_to_split: f64,
    /// Regression: decay of the running errors `adaptive` compares. Default 0.95.
    #[serde(default = "default_model_selector_decay")]
    pub model_selector_decay: f64,
    /// Regression: minimum weight in each branch of a split. Default 5.
    #[serde(default = "default_min_samples_split")]
    pub min_samples_split: u32,
    /// Regression: SGD step of the leaf linear models. Default 0.01.
    #[serde(default = "default_leaf_learning_rate")]
    pub leaf_learning_rate: f64,
    /// Nominal columns: binary splits only (one category against the rest). Default false.
    #[serde(default)]
    pub binary_split: bool,
}

fn default_grace_period() -> u32 {
    200
}
fn default_delta() -> f64 {
    1e-7
}
fn default_tau() -> f64 {
    0.05
}
fn default_n_splits() -> u32 {
    10
}
fn default_min_branch_fraction() -> f64 {
    0.01
}
fn default_max_share_to_split() -> f64 {
    0.99
}
fn default_model_selector_decay() -> f64 {
    0.95
}
fn default_min_samples_split() -> u32 {
    5
}
fn default_leaf_learning_rate() -> f64 {
    0.01
}

impl Default for TreeParams {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("every field has a default")
    }
}

impl TreeParams {
    /// Check every value and resolve the task's defaults.
    pub(crate) fn resolve(&self, task: Task, max_features: Option<usize>) -> Result<Config, MlError> {
        use MlError::Param;
        if self.grace_period == 0 {
            return Err(Param { param: "grace_period", reason: "must be at least 1" });
        }
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(Param { param: "delta", reason: "must be in (0, 1)" });
        }
        if !(self.tau >= 0.0 && self.tau.is_finite()) {
            return Err(Param { param: "tau", reason: "must be a finite number, 0 or above" });
        }
        if self.max_depth == Some(0) {
            return Err(Param { param: "max_depth", reason: "must be at least 1" });
        }
        if self.n_splits == 0 {
            return Err(Param { param: "n_splits", reason: "must be at least 1" });
        }
        if !(0.0..0.5).contains(&self.min_branch_fraction) {
            return Err(Param { param: "min_branch_fraction", reason: "must be in [0, 0.5)" });
        }
        if !(self.max_share_to_split > 0.0 && self.max_share_to_split <= 1.0) {
            return Err(Param { param: "max_share_to_split", reason: "must be in (0, 1]" });
        }
        if !(self.model_selector_decay > 0.0 && self.model_selector_decay <= 1.0) {
            return Err(Param { param: "model_selector_decay", reason: "must be in (0, 1]" });
        }
        if !(self.leaf_learning_rate > 0.0 && self.leaf_learning_rate.is_finite()) {
            return Err(Param { param: "leaf_learning_rate", reason: "must be a finite number above 0" });
        }
        use LeafPrediction::*;
        let leaf_prediction = match (task, self.leaf_prediction) {
            (Task::Classification, None) => Nba,
            (Task::Regression, None) => Adaptive,
            (Task::Classification, Some(p @ (Mc | Nb | Nba)))
            | (Task::Regression, Some(p @ (Mean | Model | Adaptive))) => p,
            (Task::Classification, Some(_)) => {
                return Err(Param {
                    param: "leaf_prediction",
                    reason: "must be \"nba\", \"nb\" or \"mc\" for classification",
                });
            }
            (Task::Regression, Some(_)) => {
                return Err(Param {
                    param: "leaf_prediction",
                    reason: "must be \"adaptive\", \"model\" or \"mean\" for regression",
                });
            }
        };
        Ok(Config { params: *self, leaf_prediction, max_features })
    }
}

/// Resolved parameters, as the tree runs with them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Config {
    params: TreeParams,
    leaf_prediction: LeafPrediction,
    /// Columns each leaf observes, drawn at random (a forest's trees); `None` for all.
    max_features: Option<usize>,
}

impl Config {
    fn model_selector_decay(&self) -> f64 {
        self.params.model_selector_decay
    }

    fn leaf_learning_rate(&self) -> f64 {
        self.params.leaf_learning_rate
    }
}

/// A node of the arena.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Node {
    Leaf(Box<Leaf>),
    /// `x[feature] <= threshold` goes to `children[0]`.
    Numeric {
        feature: u32,
        threshold: f64,
        children: [u32; 2],
    },
    /// `x[feature] == value` goes to `children[0]`.
    NominalBinary {
        feature: u32,
        value: u32,
        children: [u32; 2],
    },
    /// `x[feature] == values[i]` goes to `children[i]`; a category first seen after the split
    /// gets a new leaf while learning and follows the heaviest child while predicting.
    NominalMulti {
        feature: u32,
        values: Vec<u32>,
        children: Vec<u32>,
    },
}

/// Where a sample's walk ends.
enum Stop {
    Leaf(usize),
    /// At a multiway branch that has no child for the sample's category.
    Unseen(usize),
}

/// A Hoeffding tree: nodes in an arena (index 0 is the root once there is one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TreeCore {
    cfg: Config,
    task: Task,
    /// Which columns are nominal, and how many are numeric (the leaf models' width).
    nominal: Vec<bool>,
    n_numeric: usize,
    nodes: Vec<Node>,
}

impl TreeCore {
    pub fn new(cfg: Config, task: Task, schema: &Schema) -> Self {
        let nominal = (0..schema.len()).map(|i| schema.is_nominal(i)).collect();
        Self { cfg, task, nominal, n_numeric: schema.n_numeric(), nodes: Vec::new() }
    }

    /// A fresh tree with the same configuration.
    pub fn fresh(&self) -> Self {
        Self { nodes: Vec::new(), ..self.clone() }
    }

    fn new_leaf(&self, depth: u32, stats: LeafStats) -> Leaf {
        Leaf::new(depth, stats, self.nominal.len(), self.cfg.max_features.is_some())
    }

    fn empty_stats(&self) -> LeafStats {
        match self.task {
            Task::Classification => LeafStats::Classes(Vec::new()),
            Task::Regression => LeafStats::Target {
                stats: Var::default(),
                model: LeafModel::new(self.n_numeric),
                fmse_mean: 0.0,
                fmse_model: 0.0,
            },
        }
    }

    /// Follow `x` down; with `until_leaf` an unseen category takes the heaviest branch.
    fn walk(&self, x: &[Feature], until_leaf: bool) -> Stop {
        let mut i = 0;
        loop {
            i = match &self.nodes[i] {
                Node::Leaf(_) => return Stop::Leaf(i),
                Node::Numeric { feature, threshold, children } => match x[*feature as usize] {
                    Feature::Num(v) if v <= *threshold => children[0],
                    _ => children[1],
                },
                Node::NominalBinary { feature, value, children } => match x[*feature as usize] {
                    Feature::Cat(v) if v == *value => children[0],
                    _ => children[1],
                },
                Node::NominalMulti { feature, values, children } => {
                    let Feature::Cat(v) = x[*feature as usize] else { unreachable!("checked sample") };
                    match values.iter().position(|&c| c == v) {
                        Some(k) => children[k],
                        None if until_leaf => self.most_common_child(children),
                        None => return Stop::Unseen(i),
                    }
                }
            } as usize;
        }
    }

    /// The child with the most weight below it (the first on a tie), as River's
    /// `most_common_path`.
    fn most_common_child(&self, children: &[u32]) -> u32 {
        let mut best = (children[0], self.subtree_weight(children[0] as usize));
        for &c in &children[1..] {
            let w = self.subtree_weight(c as usize);
            if w > best.1 {
                best = (c, w);
            }
        }
        best.0
    }

    fn subtree_weight(&self, i: usize) -> f64 {
        match &self.nodes[i] {
            Node::Leaf(l) => l.weight(),
            Node::Numeric { children, .. } | Node::NominalBinary { children, .. } => {
                children.iter().map(|&c| self.subtree_weight(c as usize)).sum()
            }
            Node::NominalMulti { children, .. } => children.iter().map(|&c| self.subtree_weight(c as usize)).sum(),
        }
    }

    fn leaf(&self, x: &[Feature]) -> Option<&Leaf> {
        if self.nodes.is_empty() {
            return None;
        }
        let Stop::Leaf(i) = self.walk(x, true) else { unreachable!("until_leaf ends at a leaf") };
        match &self.nodes[i] {
            Node::Leaf(l) => Some(l),
            _ => unreachable!(),
        }
    }

    /// Probabilities of classes `0..n_classes` (zero where the leaf knows nothing).
    pub fn predict_proba(&self, x: &[Feature], n_classes: usize) -> ClassProbs {
        let mut p = match self.leaf(x) {
            Some(l) => l.predict_proba(x, &self.cfg),
            None => ClassProbs::new(),
        };
        p.resize(n_classes.max(p.len()), 0.0);
        p
    }

    /// The regression prediction (0 before any sample).
    pub fn predict_value(&self, x: &[Feature]) -> f64 {
        self.leaf(x).map_or(0.0, |l| l.predict_value(x, &self.cfg))
    }

    /// Learn `x` with `target` and weight `w`; `rng` draws a forest leaf's columns.
    pub fn learn(&mut self, x: &[Feature], target: Target, w: f64, rng: Option<&mut Rng>) {
        if self.nodes.is_empty() {
            let root = self.new_leaf(0, self.empty_stats());
            self.nodes.push(Node::Leaf(Box::new(root)));
        }
        match self.walk(x, false) {
            Stop::Leaf(i) => {
                let cfg = self.cfg;
                let Node::Leaf(leaf) = &mut self.nodes[i] else { unreachable!() };
                leaf.learn(x, target, w, &cfg, &self.nominal, rng);
                if !leaf.active {
                    return;
                }
                if cfg.params.max_depth.is_some_and(|d| leaf.depth >= d) {
                    leaf.active = false;
                    leaf.clear_splitters();
                    return;
                }
                let weight = leaf.weight();
                if weight - leaf.last_attempt >= f64::from(cfg.params.grace_period) {
                    self.attempt_split(i);
                    if let Node::Leaf(leaf) = &mut self.nodes[i] {
                        leaf.last_attempt = weight;
                    }
                }
            }
            Stop::Unseen(i) => {
                let Node::NominalMulti { feature, .. } = &self.nodes[i] else { unreachable!() };
                let Feature::Cat(v) = x[*feature as usize] else { unreachable!("checked sample") };
                let depth = self.depth_below(i);
                let mut leaf = self.new_leaf(depth, self.empty_stats());
                leaf.learn(x, target, w, &self.cfg, &self.nominal, rng);
                let child = self.nodes.len() as u32;
                self.nodes.push(Node::Leaf(Box::new(leaf)));
                if let Node::NominalMulti { values, children, .. } = &mut self.nodes[i] {
                    values.push(v);
                    children.push(child);
                }
            }
        }
    }

    /// The depth of a branch's children: one more than any of its child leaves' parent.
    fn depth_below(&self, branch: usize) -> u32 {
        let mut stack = vec![(branch, 0u32)];
        // A branch stores no depth; its leaves do, so walk down to the nearest one.
        while let Some((i, up)) = stack.pop() {
            match &self.nodes[i] {
                Node::Leaf(l) => return l.depth - up + 1,
                Node::Numeric { children, .. } | Node::NominalBinary { children, .. } => {
                    stack.push((children[0] as usize, up + 1))
                }
                Node::NominalMulti { children, .. } => stack.push((children[0] as usize, up + 1)),
            }
        }
        0
    }

    /// River's `_attempt_to_split` for the leaf at `i`.
    fn attempt_split(&mut self, i: usize) {
        let Node::Leaf(leaf) = &self.nodes[i] else { return };
        let p = &self.cfg.params;
        let total = leaf.weight();
        let mut suggestions: Vec<Option<Suggestion>> = vec![None];
        let bound = match &leaf.stats {
            LeafStats::Classes(counts) => {
                if leaf.n_classes_present() < 2 {
                    return;
                }
                let max = counts.iter().copied().fold(0.0, f64::max);
                if !(max > 0.0 && max / total > p.max_share_to_split) {
                    for (j, s) in leaf.splitters.iter().enumerate() {
                        let Some(s) = s else { continue };
                        let j = j as u32;
                        suggestions.push(match s {
                            Splitter::Gaussian(s) => s.best_split(counts, j, p.n_splits, p.min_branch_fraction),
                            Splitter::NominalClasses(s) => {
                                s.best_split(counts, j, p.binary_split, p.min_branch_fraction)
                            }
                            _ => unreachable!("classification splitters"),
                        });
                    }
                }
                hoeffding_bound(info_gain_range(leaf.n_classes_present()), p.delta, total)
            }
            LeafStats::Target { stats, .. } => {
                let min = f64::from(p.min_samples_split);
                for (j, s) in leaf.splitters.iter().enumerate() {
                    let Some(s) = s else { continue };
                    let j = j as u32;
                    suggestions.push(match s {
                        Splitter::Tebst(s) => s.best_split(stats, j, min),
                        Splitter::NominalTarget(s) => s.best_split(stats, j, p.binary_split, min),
                        _ => unreachable!("regression splitters"),
                    });
                }
                hoeffding_bound(1.0, p.delta, total)
            }
        };
        let merit = |s: &Option<Suggestion>| s.as_ref().map_or(f64::NEG_INFINITY, |s| s.merit);
        // Stable, as Python's sort: on equal merits the later column wins, "no split" loses.
        suggestions.sort_by(|a, b| merit(a).total_cmp(&merit(b)));
        let n = suggestions.len();
        let should_split = if n < 2 {
            n > 0
        } else {
            let (best, second) = (merit(&suggestions[n - 1]), merit(&suggestions[n - 2]));
            match self.task {
                Task::Classification => best - second > bound || bound < p.tau,
                Task::Regression => best > 0.0 && (second / best < 1.0 - bound || bound < p.tau),
            }
        };
        if !should_split {
            return;
        }
        match suggestions.pop().flatten() {
            None => {
                if let Node::Leaf(leaf) = &mut self.nodes[i] {
                    leaf.clear_splitters();
                }
            }
            Some(s) => self.split(i, s),
        }
    }

    /// Replace the leaf at `i` by a branch whose children start from the split's statistics.
    fn split(&mut self, i: usize, s: Suggestion) {
        let Node::Leaf(parent) = &self.nodes[i] else { return };
        let depth = parent.depth + 1;
        let parent_target = match &parent.stats {
            LeafStats::Target { model, fmse_mean, fmse_model, .. } => Some((model.clone(), *fmse_mean, *fmse_model)),
            LeafStats::Classes(_) => None,
        };
        let stats: Vec<LeafStats> = match s.children {
            ChildStats::Classes(c) => c.into_iter().map(LeafStats::Classes).collect(),
            ChildStats::Target(t) => {
                let (model, fmse_mean, fmse_model) = parent_target.expect("a regression leaf");
                // River's children copy the parent's leaf model and its running errors.
                t.into_iter()
                    .map(|stats| LeafStats::Target { stats, model: model.clone(), fmse_mean, fmse_model })
                    .collect()
            }
        };
        let first = self.nodes.len() as u32;
        let children: Vec<u32> = (first..first + stats.len() as u32).collect();
        for st in stats {
            let leaf = self.new_leaf(depth, st);
            self.nodes.push(Node::Leaf(Box::new(leaf)));
        }
        self.nodes[i] = match s.kind {
            SplitKind::Numeric(threshold) => {
                Node::Numeric { feature: s.feature, threshold, children: [children[0], children[1]] }
            }
            SplitKind::NominalBinary(value) => {
                Node::NominalBinary { feature: s.feature, value, children: [children[0], children[1]] }
            }
            SplitKind::NominalMulti(values) => Node::NominalMulti { feature: s.feature, values, children },
        };
    }

    /// Number of leaves.
    pub fn n_leaves(&self) -> usize {
        self.nodes.iter().filter(|n| matches!(n, Node::Leaf(_))).count()
    }

    /// True if every node index, column and vector fits (a checkpoint's check).
    pub fn fits(&self, schema: &Schema, task: Task, n_classes: usize) -> bool {
        let n = self.nodes.len() as u32;
        let cols = schema.len();
        let col_ok = |f: u32, nominal: bool| (f as usize) < cols && schema.is_nominal(f as usize) == nominal;
        self.task == task
            && self.nominal.len() == cols
            && self.n_numeric == schema.n_numeric()
            && (0..cols).all(|i| self.nominal[i] == schema.is_nominal(i))
            && self.nodes.iter().all(|node| match node {
                Node::Leaf(l) => {
                    let stats_ok = match (&l.stats, task) {
                        (LeafStats::Classes(c), Task::Classification) => c.len() <= n_classes,
                        (LeafStats::Target { model, .. }, Task::Regression) => model.n_weights() == self.n_numeric,
                        _ => false,
                    };
                    stats_ok
                        && l.splitters.len() == cols
                        && l.features.as_ref().is_none_or(|f| f.iter().all(|&j| (j as usize) < cols))
                        && l.splitters.iter().enumerate().all(|(j, s)| match s {
                            None => true,
                            Some(Splitter::Gaussian(g)) => {
                                task == Task::Classification && !schema.is_nominal(j) && g.n_classes() <= n_classes
                            }
                            Some(Splitter::NominalClasses(g)) => {
                                task == Task::Classification && schema.is_nominal(j) && g.n_classes() <= n_classes
                            }
                            Some(Splitter::Tebst(_)) => task == Task::Regression && !schema.is_nominal(j),
                            Some(Splitter::NominalTarget(_)) => task == Task::Regression && schema.is_nominal(j),
                        })
                }
                Node::Numeric { feature, children, .. } => {
                    col_ok(*feature, false) && children.iter().all(|&c| c < n && c > 0)
                }
                Node::NominalBinary { feature, children, .. } => {
                    col_ok(*feature, true) && children.iter().all(|&c| c < n && c > 0)
                }
                Node::NominalMulti { feature, values, children } => {
                    col_ok(*feature, true)
                        && values.len() == children.len()
                        && !children.is_empty()
                        && children.iter().all(|&c| c < n && c > 0)
                }
            })
            && self.is_a_tree()
    }

    /// Every node but the root is the child of exactly one branch, so walks end.
    fn is_a_tree(&self) -> bool {
        let mut parents = vec![0u32; self.nodes.len()];
        for node in &self.nodes {
            let children: &[u32] = match node {
                Node::Leaf(_) => &[],
                Node::Numeric { children, .. } | Node::NominalBinary { children, .. } => children,
                Node::NominalMulti { children, .. } => children,
            };
            for &c in children {
                parents[c as usize] += 1;
            }
        }
        parents.iter().enumerate().all(|(i, &p)| if i == 0 { p == 0 } else { p == 1 }) && self.children_after_parents()
    }

    /// Children are always pushed after their parent, which rules out cycles.
    fn children_after_parents(&self) -> bool {
        self.nodes.iter().enumerate().all(|(i, node)| match node {
            Node::Leaf(_) => true,
            Node::Numeric { children, .. } | Node::NominalBinary { children, .. } => {
                children.iter().all(|&c| c as usize > i)
            }
            Node::NominalMulti { children, .. } => children.iter().all(|&c| c as usize > i),
        })
    }
}

/// The Hoeffding tree family's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    core: TreeCore,
}

impl Supervised<Tree> {
    /// A fresh Hoeffding tree for `task` over `schema`.
    pub fn with_params(task: Task, schema: Schema, params: TreeParams) -> Result<Self, MlError> {
        let cfg = params.resolve(task, None)?;
        let core = TreeCore::new(cfg, task, &schema);
        Ok(Self::from_parts(task, schema, Tree { core }))
    }
}

impl Tree {
    /// Number of leaves.
    pub fn n_leaves(&self) -> usize {
        self.core.n_leaves()
    }
}

impl Family for Tree {
    const KIND: ModelKind = ModelKind::HoeffdingTree;

    fn predict_proba(&self, x: &[Feature], n_classes: usize) -> ClassProbs {
        self.core.predict_proba(x, n_classes)
    }

    fn predict_value(&self, x: &[Feature]) -> f64 {
        self.core.predict_value(x)
    }

    fn learn_class(&mut self, x: &[Feature], class: usize, _n_classes: usize) {
        self.core.learn(x, Target::Class(class), 1.0, None);
    }

    fn learn_value(&mut self, x: &[Feature], y: f64) {
        self.core.learn(x, Target::Value(y), 1.0, None);
    }

    fn fits(&self, schema: &Schema, task: Task, n_classes: usize) -> bool {
        self.core.cfg.max_features.is_none()
            && self.core.cfg.params.resolve(task, None).is_ok()
            && self.core.fits(schema, task, n_classes)
    }
}

pub(crate) use leaf::{Target as LearnTarget, argmax};

#[cfg(test)]
mod tests {
    use super::super::{Column, OnlineLearner};
    use super::*;
    use serde_json::json;

    /// A deterministic, irregular sequence in [0, 1).
    fn noise(i: usize) -> f64 {
        ((i as f64 * 0.618_033_988_75).sin() * 43_758.545_3).fract().abs()
    }

    #[test]
    fn a_numeric_threshold_is_found_and_classified() {
        let schema = Schema::numeric(2).unwrap();
        let mut m = Supervised::<Tree>::with_params(Task::Classification, schema, TreeParams::default()).unwrap();
        for i in 0..3_000 {
            let (a, b) = (noise(i), noise(i + 1));
            m.predict_then_learn(&[Feature::Num(a), Feature::Num(b)], &json!(a > 0.6)).unwrap();
        }
        assert!(m.family().n_leaves() >= 2);
        let Node::Numeric { feature, threshold, .. } = &m.family().core.nodes[0] else { panic!("no split") };
        assert_eq!(*feature, 0);
        assert!((threshold - 0.6).abs() < 0.1, "{threshold}");
        assert_eq!(m.predict(&[Feature::Num(0.9), Feature::Num(0.1)]).unwrap().prediction, json!(true));
        assert_eq!(m.predict(&[Feature::Num(0.2), Feature::Num(0.9)]).unwrap().prediction, json!(false));
    }

    #[test]
    fn a_nominal_column_splits_multiway_and_unseen_categories_get_a_leaf() {
        let schema = Schema::new(vec![Column::nominal("colour"), Column::numeric("noise")]).unwrap();
        let mut m = Supervised::<Tree>::with_params(Task::Classification, schema, TreeParams::default()).unwrap();
        for i in 0..2_000 {
            let c = (i % 3) as u32;
            m.predict_then_learn(&[Feature::Cat(c), Feature::Num(noise(i))], &json!(["r", "g", "b"][c as usize]))
                .unwrap();
        }
        let Node::NominalMulti { values, .. } = &m.family().core.nodes[0] else { panic!("no multiway split") };
        assert_eq!(values, &vec![0, 1, 2]);
        assert_eq!(m.predict(&[Feature::Cat(2), Feature::Num(0.5)]).unwrap().prediction, json!("b"));
        // A fourth category: predicted through the heaviest branch, then learned in a new leaf.
        assert!(m.predict(&[Feature::Cat(3), Feature::Num(0.5)]).is_ok());
        m.learn(&[Feature::Cat(3), Feature::Num(0.5)], &json!("r")).unwrap();
        let Node::NominalMulti { values, .. } = &m.family().core.nodes[0] else { panic!() };
        assert_eq!(values, &vec![0, 1, 2, 3]);
        assert_eq!(m.predict(&[Feature::Cat(3), Feature::Num(0.5)]).unwrap().prediction, json!("r"));
    }

    #[test]
    fn regression_tree_learns_a_step() {
        let schema = Schema::numeric(2).unwrap();
        let mut m = Supervised::<Tree>::with_params(Task::Regression, schema, TreeParams::default()).unwrap();
        for i in 0..4_000 {
            let (a, b) = (noise(i), noise(i + 7));
            let y = if a > 0.5 { 10.0 } else { -10.0 } + b;
            m.predict_then_learn(&[Feature::Num(a), Feature::Num(b)], &json!(y)).unwrap();
        }
        assert!(m.family().n_leaves() >= 2);
        let y = m.predict(&[Feature::Num(0.9), Feature::Num(0.5)]).unwrap().prediction.as_f64().unwrap();
        assert!((y - 10.5).abs() < 1.5, "{y}");
        let y = m.predict(&[Feature::Num(0.1), Feature::Num(0.5)]).unwrap().prediction.as_f64().unwrap();
        assert!((y + 9.5).abs() < 1.5, "{y}");
    }

    #[test]
    fn max_depth_stops_growth() {
        let schema = Schema::numeric(1).unwrap();
        let params = TreeParams { max_depth: Some(1), grace_period: 50, ..TreeParams::default() };
        let mut m = Supervised::<Tree>::with_params(Task::Classification, schema, params).unwrap();
        for i in 0..5_000 {
            let a = noise(i);
            let class = (a * 8.0) as i64 % 2;
            m.learn(&[Feature::Num(a)], &json!(class)).unwrap();
        }
        assert!(m.family().n_leaves() <= 2, "{}", m.family().n_leaves());
    }
}
