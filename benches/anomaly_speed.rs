//! Speed of the anomaly models on the orders stream (`tests/data/orders_anomaly.csv`): each
//! order scored, then learned, as the sink does. Prints `anomaly_per_s` per kind, its ratio to
//! a baseline measured in the same run (the linear classifier's predict-then-learn on the same
//! two columns), and the speed-up over River 0.26.1's `MinMaxScaler | HalfSpaceTrees` (seconds
//! per sample in `tests/data/anomaly_figures.json`, from `scripts/anomaly_quality.py`).
//!
//! `cargo bench --bench anomaly_speed` (part of `make bench`) also writes the figures to
//! `bench/anomaly.json`. Under `cargo test` it only checks that both kinds run.

use std::hint::black_box;
use std::time::Instant;

use mongo_cdc::ml::{
    AnomalyDetector, AnomalyKind, Column, Feature, ModelKind, OnlineLearner, Schema, Task, Threshold, build,
};
use serde_json::{Value, json};

const RUNS: usize = 5;

fn rows() -> Vec<([Feature; 2], bool)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/orders_anomaly.csv"))
        .expect("tests/data/orders_anomaly.csv");
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let n = |i: usize| f[i].parse::<f64>().expect("a number");
            ([Feature::Num(n(0)), Feature::Num(n(1))], f[2] == "1")
        })
        .collect()
}

fn schema() -> Schema {
    Schema::new(vec![Column::numeric("price"), Column::numeric("quantity")]).expect("a schema")
}

fn anomaly_pass(kind: AnomalyKind, rows: &[([Feature; 2], bool)]) -> f64 {
    let mut m = AnomalyDetector::new(kind, schema(), &Value::Null, Threshold::default(), None).expect("defaults");
    let start = Instant::now();
    for (x, _) in rows {
        black_box(m.score_then_learn(black_box(x)).expect("a valid sample"));
    }
    rows.len() as f64 / start.elapsed().as_secs_f64()
}

fn baseline_pass(rows: &[([Feature; 2], bool)]) -> f64 {
    let mut m = build(Task::Classification, ModelKind::Linear, schema(), &Value::Null).expect("defaults");
    let start = Instant::now();
    for (x, y) in rows {
        black_box(m.predict_then_learn(black_box(x), &json!(*y)).expect("a valid sample"));
    }
    rows.len() as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rows = rows();
    let bench = std::env::args().any(|a| a == "--bench");
    let runs = if bench { RUNS } else { 1 };
    let figures: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/anomaly_figures.json"))
            .expect("tests/data/anomaly_figures.json"),
    )
    .expect("JSON");
    let river_per_s = 1.0 / figures["river_hst_seconds_per_sample"].as_f64().expect("River's seconds per sample");
    let baseline = median((0..runs).map(|_| baseline_pass(&rows)).collect());
    println!("{:<18} {:>14} {:>16} {:>16}", "kind", "anomaly_per_s", "vs baseline", "vs River HST");
    println!("{:<18} {:>14.0} {:>16} {:>16}", "baseline (linear)", baseline, "1.00x", "");
    let mut kinds = serde_json::Map::new();
    for kind in [AnomalyKind::HalfSpaceTrees, AnomalyKind::RandomCutForest] {
        let per_s = median((0..runs).map(|_| anomaly_pass(kind, &rows)).collect());
        println!("{:<18} {:>14.0} {:>15.2}x {:>15.1}x", kind.name(), per_s, per_s / baseline, per_s / river_per_s);
        kinds.insert(
            kind.name().into(),
            json!({"anomaly_per_s": per_s.round(), "vs_baseline": per_s / baseline, "vs_river_hst": per_s / river_per_s}),
        );
    }
    println!("River {} MinMaxScaler | HalfSpaceTrees: {river_per_s:.0} samples/s (recorded)", figures["river"]);
    if bench {
        let rcf = kinds["random_cut_forest"]["vs_river_hst"].as_f64().unwrap_or(0.0);
        let date = std::process::Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output();
        let results = json!({
            "date": date.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default(),
            "orders": rows.len(),
            "runs": runs,
            "baseline_linear_per_s": baseline.round(),
            "river": figures["river"],
            "river_hst_per_s": river_per_s.round(),
            "kinds": kinds,
            "goal": "random_cut_forest >= 10x River's HalfSpaceTrees",
            "goal_met": rcf >= 10.0,
        });
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/anomaly.json");
        std::fs::write(path, serde_json::to_string_pretty(&results).expect("JSON") + "\n")
            .expect("write bench/anomaly.json");
        println!("results: {path}");
    }
}
