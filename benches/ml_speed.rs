//! Speed of every model kind against River 0.26.1: streams each committed quality stream
//! through `predict_then_learn` (progressive validation, as River's figures were timed) and
//! prints samples per second and the ratio to River's seconds per sample recorded in
//! `tests/data/river_figures.json` (median of several runs each side).
//!
//! `cargo bench --bench ml_speed` (add `-- <stream>` to run one stream). Under `cargo test`
//! (no `--bench` argument) it only checks, in a second, that every kind runs on one stream.

#[path = "../tests/ml_data/mod.rs"]
mod ml_data;

use std::hint::black_box;
use std::time::Instant;

use ml_data::{Stream, load, river_figures};
use mongo_cdc::ml::{ModelKind, OnlineLearner, build};
use serde_json::Value;

/// Runs per stream and kind; the median is reported.
const RUNS: usize = 5;

/// Seconds per sample of one pass of `s` through a fresh model of `kind`.
fn one_pass(kind: ModelKind, s: &Stream) -> f64 {
    let mut model = build(s.task, kind, s.schema.clone(), &Value::Null).expect("defaults are valid");
    let start = Instant::now();
    for (x, y) in &s.rows {
        black_box(model.predict_then_learn(black_box(x), y).expect("a valid sample"));
    }
    start.elapsed().as_secs_f64() / s.rows.len() as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        let s = load("breast_cancer");
        for kind in [ModelKind::Linear, ModelKind::HoeffdingTree, ModelKind::AdaptiveForest] {
            let rate = 1.0 / one_pass(kind, &s);
            println!(
                "ml_speed smoke check: {} {rate:.0} samples/s; run `cargo bench --bench ml_speed` for figures",
                kind.name()
            );
        }
        return;
    }
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let figures = river_figures();
    let streams = figures["streams"].as_object().expect("streams");
    println!(
        "{:<14} {:<16} {:>8} {:>14} {:>12} {:>10}",
        "stream", "kind", "rows", "samples/s", "River s/s", "speed-up"
    );
    let mut ratios: Vec<(ModelKind, f64)> = Vec::new();
    for (name, entry) in streams {
        if only.as_ref().is_some_and(|o| o != name) {
            continue;
        }
        let s = load(name);
        for kind in [ModelKind::Linear, ModelKind::HoeffdingTree, ModelKind::AdaptiveForest] {
            let ours = median((0..RUNS).map(|_| one_pass(kind, &s)).collect());
            let river = entry["models"][kind.name()]["seconds_per_sample"].as_f64().expect("River's timing");
            let ratio = river / ours;
            ratios.push((kind, ratio));
            println!(
                "{name:<14} {:<16} {:>8} {:>14.0} {:>12.0} {:>9.1}x",
                kind.name(),
                s.rows.len(),
                1.0 / ours,
                1.0 / river,
                ratio
            );
        }
    }
    for kind in [ModelKind::Linear, ModelKind::HoeffdingTree, ModelKind::AdaptiveForest] {
        let r: Vec<f64> = ratios.iter().filter(|(k, _)| *k == kind).map(|(_, r)| *r).collect();
        if !r.is_empty() {
            println!(
                "{:<16} median speed-up over River {:.1}x (min {:.1}x)",
                kind.name(),
                median(r.clone()),
                r.iter().copied().fold(f64::INFINITY, f64::min)
            );
        }
    }
}
