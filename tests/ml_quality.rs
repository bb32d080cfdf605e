//! Quality of the default online models on scikit-learn's bundled `breast_cancer` and
//! `diabetes` datasets, streamed in file order with progressive validation (predict, score,
//! then learn), against River 0.26.1 on the same rows.
//!
//! `scripts/ml_quality.py` writes `tests/data/*.csv` and prints River's figures. Defaults
//! everywhere (ours: [`ModelConfig::new`]):
//!
//! | dataset       | model                                                     | figures                      |
//! |---------------|-----------------------------------------------------------|------------------------------|
//! | breast_cancer | River `StandardScaler \| LogisticRegression`              | accuracy 0.9367, log loss 0.2306 |
//! | breast_cancer | mongo-cdc classification                                  | accuracy 0.9438, log loss 0.2306 |
//! | diabetes      | River `StandardScaler \| LinearRegression`                | MAE 53.91, RMSE 69.25        |
//! | diabetes      | River `TargetStandardScaler(StandardScaler \| LinearRegression)` | MAE 48.14, RMSE 59.71 |
//! | diabetes      | mongo-cdc regression                                      | MAE 48.14, RMSE 59.71        |
//!
//! Our classifier gives River's probabilities (the log losses agree to 1e-12); its accuracy is
//! higher only because a class discovered online is never predicted before it has been seen
//! (River's binary model predicted the unseen class 1 five times in the first 19 rows, all
//! wrong), while our first prediction, made before any class is known, is null and counts as
//! wrong. Our regressor standardises its target online, as River's `TargetStandardScaler` does;
//! with that off it reproduces River's plain figures (second test).
//! Run with `cargo test --release --test ml_quality -- --nocapture` to see the figures.

use mongo_cdc::ml::{MetricSummary, ModelConfig, OnlineModel, Task};
use serde_json::Value;

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

/// Rows of `tests/data/<name>`: all columns but the last are features, the last is the target.
fn load(name: &str) -> Vec<(Vec<f64>, f64)> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .skip(1)
        .map(|line| {
            let mut values: Vec<f64> =
                line.split(',').map(|v| v.parse().unwrap_or_else(|e| panic!("{path}: {v}: {e}"))).collect();
            let target = values.pop().expect("an empty row");
            (values, target)
        })
        .collect()
}

/// Stream `rows` through a fresh model in file order and return its progressive figures.
fn stream(config: ModelConfig, rows: &[(Vec<f64>, f64)], label: impl Fn(f64) -> Value) -> MetricSummary {
    let mut model = OnlineModel::new(config, rows[0].0.len()).unwrap();
    for (x, y) in rows {
        model.predict_then_learn(x, &label(*y)).unwrap();
    }
    assert_eq!(model.trained(), rows.len() as u64);
    model.stats().progressive
}

fn classify(config: ModelConfig) -> (f64, f64) {
    let rows = load("breast_cancer.csv");
    assert_eq!(rows.len(), 569);
    match stream(config, &rows, |y| Value::from(y as i64)) {
        MetricSummary::Classification { accuracy: Some(a), log_loss: Some(l) } => (a, l),
        other => panic!("unexpected figures {other:?}"),
    }
}

fn regress(config: ModelConfig) -> (f64, f64) {
    let rows = load("diabetes.csv");
    assert_eq!(rows.len(), 442);
    match stream(config, &rows, Value::from) {
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
