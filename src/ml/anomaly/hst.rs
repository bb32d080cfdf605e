//! Half-space trees (Tan, Ting & Liu, 2011) as River's `anomaly.HalfSpaceTrees`, behind an
//! online min-max scaler as River's `preprocessing.MinMaxScaler`: random axis-aligned splits
//! of [0, 1]^d (padded by 15 %), mass counted per node over tumbling windows; a point falling
//! where the previous window's mass was small is unusual.

use serde::{Deserialize, Serialize};

use super::super::rng::Rng;

/// Hyper-parameters, River's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HstParams {
    /// Trees in the ensemble.
    pub n_trees: usize,
    /// Depth of every tree.
    pub height: u32,
    /// Samples per mass window.
    pub window_size: u64,
    /// Seed of the random splits.
    pub seed: u64,
}

impl Default for HstParams {
    fn default() -> Self {
        Self { n_trees: 10, height: 8, window_size: 250, seed: 42 }
    }
}

/// One node of a complete binary tree, stored in heap order (children of `i`: `2i+1`, `2i+2`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Node {
    /// Split column (unused at leaves).
    feature: u32,
    /// Left if the scaled value is below it.
    threshold: f64,
    /// Mass of the window in progress.
    l_mass: u32,
    /// Mass of the last complete window.
    r_mass: u32,
}

/// The model: scaler, trees and window counter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HalfSpaceTrees {
    params: HstParams,
    /// Per column: the smallest and largest value seen.
    min: Vec<f64>,
    max: Vec<f64>,
    trees: Vec<Vec<Node>>,
    counter: u64,
    first_window: bool,
    #[serde(skip)]
    scaled: Vec<f64>,
}

impl HalfSpaceTrees {
    /// A fresh model over `dims` numeric columns.
    pub fn new(dims: usize, params: HstParams) -> Self {
        let mut rng = Rng::new(params.seed);
        let internal = (1usize << params.height) - 1;
        let size = (1usize << (params.height + 1)) - 1;
        let trees = (0..params.n_trees)
            .map(|_| {
                let mut nodes = vec![Node { feature: 0, threshold: 0.0, l_mass: 0, r_mass: 0 }; size];
                let mut limits = vec![(0.0f64, 1.0f64); dims];
                grow(&mut nodes, 0, internal, &mut limits, &mut rng);
                nodes
            })
            .collect();
        Self {
            params,
            min: vec![f64::INFINITY; dims],
            max: vec![f64::NEG_INFINITY; dims],
            trees,
            counter: 0,
            first_window: true,
            scaled: Vec::with_capacity(dims),
        }
    }

    /// The hyper-parameters.
    pub fn params(&self) -> &HstParams {
        &self.params
    }

    fn scale(&mut self, x: &[f64]) {
        self.scaled.clear();
        for (i, &v) in x.iter().enumerate() {
            let (lo, hi) = (self.min[i], self.max[i]);
            let span = hi - lo;
            self.scaled.push(if span > 0.0 && span.is_finite() { (v - lo) / span } else { 0.0 });
        }
    }

    /// The score of `x` in [0, 1] (higher is more unusual), and each column's share of the
    /// trees' decisive splits; 0 during the first window.
    pub fn score(&mut self, x: &[f64], attribution: &mut Vec<f64>) -> f64 {
        attribution.clear();
        attribution.resize(x.len(), 0.0);
        if self.first_window {
            return 0.0;
        }
        self.scale(x);
        let size_limit = 0.1 * self.params.window_size as f64;
        let internal = (1usize << self.params.height) - 1;
        let mut score = 0.0;
        for t in &self.trees {
            let mut i = 0;
            let mut depth = 0;
            loop {
                let node = &t[i];
                score += f64::from(node.r_mass) * f64::from(1u32 << depth);
                if f64::from(node.r_mass) < size_limit || i >= internal {
                    // The split that led here isolated the point: blame its feature.
                    if i > 0 {
                        attribution[t[(i - 1) / 2].feature as usize] += 1.0;
                    }
                    break;
                }
                i = 2 * i + if self.scaled[node.feature as usize] < node.threshold { 1 } else { 2 };
                depth += 1;
            }
        }
        let max_score = self.params.n_trees as f64
            * self.params.window_size as f64
            * ((1u64 << (self.params.height + 1)) - 1) as f64;
        1.0 - score / max_score
    }

    /// Learn `x`: the scaler first, then the trees' window mass.
    pub fn learn(&mut self, x: &[f64]) {
        for (i, &v) in x.iter().enumerate() {
            self.min[i] = self.min[i].min(v);
            self.max[i] = self.max[i].max(v);
        }
        self.scale(x);
        let internal = (1usize << self.params.height) - 1;
        for t in &mut self.trees {
            let mut i = 0;
            loop {
                t[i].l_mass += 1;
                if i >= internal {
                    break;
                }
                i = 2 * i + if self.scaled[t[i].feature as usize] < t[i].threshold { 1 } else { 2 };
            }
        }
        self.counter += 1;
        if self.counter == self.params.window_size {
            for node in self.trees.iter_mut().flatten() {
                node.r_mass = node.l_mass;
                node.l_mass = 0;
            }
            self.first_window = false;
            self.counter = 0;
        }
    }
}

/// Fill node `i` and below (River's `make_padded_tree`, padding 0.15).
fn grow(nodes: &mut [Node], i: usize, internal: usize, limits: &mut [(f64, f64)], rng: &mut Rng) {
    if i >= internal {
        return;
    }
    let on = rng.below(limits.len());
    let (a, b) = limits[on];
    let pad = 0.15 * (b - a);
    let at = a + pad + rng.next_f64() * ((b - pad) - (a + pad));
    nodes[i].feature = on as u32;
    nodes[i].threshold = at;
    limits[on] = (a, at);
    grow(nodes, 2 * i + 1, internal, limits, rng);
    limits[on] = (at, b);
    grow(nodes, 2 * i + 2, internal, limits, rng);
    limits[on] = (a, b);
}
