//! Quality of every model kind against River 0.26.1 on the same rows, streamed in file order
//! with progressive validation (predict, score, then learn), defaults everywhere.
//!
//! `scripts/ml_quality.py` writes `tests/data/*.csv` (header: column names, `:cat` marking a
//! nominal column whose values are category ids; label last) and records River's figures in
//! `tests/data/river_figures.json`. The linear model on numeric columns reproduces River's
//! numbers (first two tests); every kind must score at least River's twin on every stream
//! (accuracy for classes, MAE for numbers; forests by their mean over ten seeds); and drift
//! monitoring must detect SEA's change no later than River's ADWIN, never before it or on the
//! stationary stream, and recover with `reset`.
//!
//! | stream (rows)       | linear: ours / River | hoeffding_tree: ours / River | adaptive_forest (10 seeds): ours / River |
//! |---------------------|----------------------|------------------------------|------------------------------------------|
//! | breast_cancer (569) | acc 0.9438 / 0.9367  | acc 0.9332 / 0.9332          | acc 0.9364 / 0.9385                      |
//! | wine (178, 3 cl.)   | acc 0.9270 / 0.9326  | acc 0.9270 / 0.9270          | acc 0.8180 / 0.8270                      |
//! | agrawal (5000, cat) | acc 0.6580 / 0.6582  | acc 0.7928 / 0.7928          | acc 0.7333 / 0.7381                      |
//! | sea (5000)          | acc 0.9358 / 0.9360  | acc 0.9022 / 0.9022          | acc 0.9290 / 0.9289                      |
//! | hyperplane (5000)   | acc 0.9240 / 0.9242  | acc 0.8874 / 0.8874          | acc 0.8055 / 0.8098                      |
//! | diabetes (442)      | MAE 48.142 / 48.142  | MAE 65.778 / 65.778          | MAE 56.667 / 57.266                      |
//! | friedman (5000)     | MAE 2.1709 / 2.1709  | MAE 2.0800 / 2.0800          | MAE 1.9373 / 1.9273                      |
//!
//! The Hoeffding trees give River's figures exactly. The linear model's one-sample gaps are
//! River's first prediction, a guess of class 0 made before any label (ours is null), and on
//! wine River's one-vs-rest from the start (our log loss there is 0.713 against 0.878). The
//! forests cannot share River's random draws: their means over ten seeds are within two
//! standard errors of River's (a forest moves by up to 0.06 accuracy from one seed to the next).
//!
//! Run with `cargo test --release --test ml_quality -- --nocapture` to see the figures.

mod ml_data;

use ml_data::{Stream, load, river_figures};
use mongo_cdc::ml::{
    AnyModel, DriftAction, DriftMonitor, LinearModel, MetricSummary, ModelConfig, ModelKind, MonitorConfig,
    OnlineLearner, Task, build,
};
use serde_json::{Value, json};

/// River 0.26.1's figures on the same rows (`scripts/ml_quality.py`).
const RIVER_ACCURACY: f64 = 0.9367;
const RIVER_LOG_LOSS: f64 = 0.230_556_104_752_014_27;
const RIVER_MAE: f64 = 53.911_694;
const RIVER_RMSE: f64 = 69.246_946;
/// River's `TargetStandardScaler(StandardScaler | LinearRegression)`, what our regression
/// defaults compute.
const RIVER_SCALED_TARGET_MAE: f64 = 48.141_975;
const RIVER_SCALED_TARGET_RMSE: f64 = 59.707_891;

/// The figures the issue asks the defaults to reach.
const MIN_ACCURACY: f64 = 0.937;
const MAX_MAE: f64 = 53.9;

/// Stream the rows through `model` in file order and return its progressive figures.
fn stream(mut model: impl OnlineLearner, s: &Stream) -> MetricSummary {
    for (x, y) in &s.rows {
        model.predict_then_learn(x, y).unwrap();
    }
    assert_eq!(model.trained(), s.rows.len() as u64);
    model.stats().progressive
}

fn linear(config: ModelConfig, s: &Stream) -> MetricSummary {
    stream(LinearModel::new(config, s.schema.clone()).unwrap(), s)
}

fn classify(config: ModelConfig) -> (f64, f64) {
    let s = load("breast_cancer");
    assert_eq!(s.rows.len(), 569);
    match linear(config, &s) {
        MetricSummary::Classification { accuracy: Some(a), log_loss: Some(l) } => (a, l),
        other => panic!("unexpected figures {other:?}"),
    }
}

fn regress(config: ModelConfig) -> (f64, f64) {
    let s = load("diabetes");
    assert_eq!(s.rows.len(), 442);
    match linear(config, &s) {
        MetricSummary::Regression { mae: Some(mae), rmse: Some(rmse), .. } => (mae, rmse),
        other => panic!("unexpected figures {other:?}"),
    }
}

#[test]
fn defaults_reach_rivers_figures() {
    let (accuracy, log_loss) = classify(ModelConfig::new(Task::Classification));
    let (mae, rmse) = regress(ModelConfig::new(Task::Regression));
    println!(
        "breast_cancer  accuracy {accuracy:.4}  log_loss {log_loss:.4}  (River {RIVER_ACCURACY}, {RIVER_LOG_LOSS:.4})"
    );
    println!(
        "diabetes       MAE {mae:.4}  RMSE {rmse:.4}  (River {RIVER_MAE}, {RIVER_RMSE}; \
         with TargetStandardScaler {RIVER_SCALED_TARGET_MAE}, {RIVER_SCALED_TARGET_RMSE})"
    );
    assert!(accuracy >= MIN_ACCURACY, "accuracy {accuracy} < {MIN_ACCURACY}");
    assert!(mae <= MAX_MAE, "MAE {mae} > {MAX_MAE}");
    assert!((mae - RIVER_SCALED_TARGET_MAE).abs() < 1e-6, "MAE {mae} vs River {RIVER_SCALED_TARGET_MAE}");
    assert!((rmse - RIVER_SCALED_TARGET_RMSE).abs() < 1e-6, "RMSE {rmse} vs River {RIVER_SCALED_TARGET_RMSE}");
}

/// With the target left unscaled the regressor is River's plain `LinearRegression`, so both
/// models must reproduce River's figures to rounding: this checks the arithmetic.
#[test]
fn river_settings_give_rivers_numbers() {
    let (_, log_loss) = classify(ModelConfig::new(Task::Classification));
    assert!((log_loss - RIVER_LOG_LOSS).abs() < 1e-12, "log loss {log_loss} vs River {RIVER_LOG_LOSS}");
    let (mae, rmse) = regress(ModelConfig { scale_target: false, ..ModelConfig::new(Task::Regression) });
    println!("diabetes, River's plain settings  MAE {mae:.6}  RMSE {rmse:.6}");
    assert!((mae - RIVER_MAE).abs() < 1e-6, "MAE {mae} vs River {RIVER_MAE}");
    assert!((rmse - RIVER_RMSE).abs() < 1e-6, "RMSE {rmse} vs River {RIVER_RMSE}");
}

const KINDS: [ModelKind; 3] = [ModelKind::Linear, ModelKind::HoeffdingTree, ModelKind::AdaptiveForest];

/// Our figures for `kind` on `s`: one run, or for a forest one per River seed. Each entry is
/// (accuracy, log loss) or (MAE, RMSE).
fn our_figures(kind: ModelKind, s: &Stream, river: &Value) -> Vec<(f64, f64)> {
    let seeds: Vec<Value> = match river["seeds"].as_array() {
        Some(seeds) => seeds.iter().map(|seed| json!({ "seed": seed })).collect(),
        None => vec![Value::Null],
    };
    seeds
        .iter()
        .map(|params| match stream(build(s.task, kind, s.schema.clone(), params).unwrap(), s) {
            MetricSummary::Classification { accuracy: Some(a), log_loss: Some(l) } => (a, l),
            MetricSummary::Regression { mae: Some(m), rmse: Some(r), .. } => (m, r),
            other => panic!("unexpected figures {other:?}"),
        })
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Variance of the mean of `v` (sample variance over n).
fn var_of_mean(v: &[f64]) -> f64 {
    let m = mean(v);
    v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0) / v.len() as f64
}

/// How far below River's mean a forest's mean may fall: two standard errors of the
/// difference of the two means over the seeds (the draws of two generators cannot be
/// matched; a forest's figure moves by up to 0.06 accuracy from one seed to another).
fn seed_noise(ours: &[f64], river: &Value, key: &str) -> f64 {
    let Some(theirs) = river["per_seed"][key].as_array() else { return 0.0 };
    let theirs: Vec<f64> = theirs.iter().map(|v| v.as_f64().unwrap()).collect();
    2.0 * (var_of_mean(ours) + var_of_mean(&theirs)).sqrt()
}

#[test]
fn every_kind_matches_or_beats_river_on_every_stream() {
    let figures = river_figures();
    let streams = figures["streams"].as_object().expect("streams");
    assert!(streams.len() >= 7, "{} streams", streams.len());
    let mut failures = Vec::new();
    for (name, entry) in streams {
        let s = load(name);
        assert_eq!(s.rows.len() as u64, entry["rows"].as_u64().unwrap(), "{name}");
        let n = s.rows.len() as f64;
        for kind in KINDS {
            let river = &entry["models"][kind.name()];
            let f = |k: &str| river[k].as_f64().unwrap_or_else(|| panic!("{name} {kind:?} {k}"));
            let runs = our_figures(kind, &s, river);
            let (first, second): (Vec<f64>, Vec<f64>) = runs.iter().copied().unzip();
            let (a, b) = (mean(&first), mean(&second));
            let k = kind.name();
            let seeds = if runs.len() > 1 { format!(" (mean of {} seeds)", runs.len()) } else { String::new() };
            if s.task == Task::Classification {
                let (ra, rl) = (f("accuracy"), f("log_loss"));
                println!("{name:<14} {k:<16} accuracy {a:.4} (River {ra:.4})  log_loss {b:.4} (River {rl:.4}){seeds}");
                let guess = if river["first_prediction_correct"] == true { 1.0 / n } else { 0.0 };
                let noise = seed_noise(&first, river, "accuracy");
                let ok = a >= ra - guess - noise - 1e-9 || (a >= ra - 1.0 / n - 1e-9 && b < rl);
                if !ok {
                    failures.push(format!("{name} {k}: accuracy {a} < River {ra} (log loss {b} vs {rl})"));
                }
            } else {
                let (rm, rr) = (f("mae"), f("rmse"));
                println!("{name:<14} {k:<16} MAE {a:.4} (River {rm:.4})  RMSE {b:.4} (River {rr:.4}){seeds}");
                if a > rm * (1.0 + 1e-9) + seed_noise(&first, river, "mae") {
                    failures.push(format!("{name} {k}: MAE {a} > River {rm}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// SEA with one abrupt change of function, and the same generator without it: a Hoeffding
/// tree under drift monitoring (ADWIN, defaults), as River's twin in `scripts/ml_quality.py`.
fn watch(name: &str, action: DriftAction) -> (Vec<u64>, f64) {
    let s = load(name);
    let config = MonitorConfig { action, ..MonitorConfig::default() };
    let mut m =
        DriftMonitor::new(Task::Classification, ModelKind::HoeffdingTree, s.schema.clone(), Value::Null, config)
            .unwrap();
    let drift_at = 5_000;
    let (mut detections, mut correct_after) = (Vec::new(), 0);
    for (i, (x, y)) in s.rows.iter().enumerate() {
        let (p, event) = m.predict_then_learn_watched(x, y).unwrap();
        if i >= drift_at && p.prediction == *y {
            correct_after += 1;
        }
        // Zero-based index of the sample, as River's figures count.
        detections.extend(event.map(|e| e.seen - 1));
    }
    (detections, f64::from(correct_after) / (s.rows.len() - drift_at) as f64)
}

#[test]
fn drift_is_detected_no_later_than_river_and_reset_recovers() {
    let figures = river_figures();
    let river = &figures["drift"]["sea_drift"];
    let drift_at = river["drift_at"].as_u64().unwrap();
    let river_index = river["first_increase_detection"].as_u64().expect("River detected the change");
    let (detections, kept) = watch("sea_drift", DriftAction::Alert);
    let (_, reset) = watch("sea_drift", DriftAction::Reset);
    println!(
        "sea_drift: first detection {:?} (River {river_index}); accuracy after the change {kept:.4} \
         (River {:.4}), with reset {reset:.4} (River {:.4})",
        detections.first(),
        river["accuracy_after_change"].as_f64().unwrap(),
        river["accuracy_after_change_with_reset"].as_f64().unwrap(),
    );
    let first = *detections.first().expect("the change was detected");
    assert!(first >= drift_at, "alert at {first}, before the change at {drift_at}");
    assert!(first <= river_index, "detected at {first}, River at {river_index}");
    assert!(reset > kept, "with reset {reset} <= without {kept}");

    let (stationary, _) = watch("sea_stationary", DriftAction::Alert);
    assert!(stationary.is_empty(), "alerts on the stationary stream at {stationary:?}");
    assert!(figures["drift"]["sea_stationary"]["first_increase_detection"].is_null());
}

/// The factory's models round-trip through JSON text mid-stream and continue identically (the
/// `float_roundtrip` feature of serde_json makes every f64 come back bit for bit).
#[test]
fn checkpoints_of_every_kind_continue_on_a_real_stream() {
    let s = load("agrawal");
    for kind in KINDS {
        let mut m: AnyModel = build(Task::Classification, kind, s.schema.clone(), &Value::Null).unwrap();
        let (head, tail) = s.rows.split_at(2_500);
        for (x, y) in head {
            m.predict_then_learn(x, y).unwrap();
        }
        let text = serde_json::to_string(&m).unwrap();
        println!("agrawal {:<16} checkpoint after 2,500 samples: {} bytes", kind.name(), text.len());
        let mut back: AnyModel = serde_json::from_str(&text).unwrap();
        for (x, y) in tail {
            assert_eq!(back.predict_then_learn(x, y).unwrap(), m.predict_then_learn(x, y).unwrap(), "{kind:?}");
        }
        assert_eq!(back.stats().progressive, m.stats().progressive);
    }
}
