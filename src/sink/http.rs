//! The sink's HTTP API (axum): health, stats, the models and their predictions, drift alerts,
//! one record, Prometheus metrics.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::core::{PredictError, SinkCore};
use crate::ml::MetricSummary;

/// The state handlers share with the consumer.
pub type Shared = Arc<Mutex<SinkCore>>;

/// The routes.
pub fn router(core: Shared) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/stats", get(stats))
        .route("/predict", post(predict))
        .route("/models", get(models))
        .route("/models/{name}/predict", post(predict_with))
        .route("/alerts", get(alerts))
        .route("/records/{collection}/{key}", get(record))
        .route("/metrics", get(metrics))
        .with_state(core)
}

/// Lock the core (recovering from a poisoned lock: the data is still the best we have).
pub fn lock(core: &Shared) -> std::sync::MutexGuard<'_, SinkCore> {
    core.lock().unwrap_or_else(|p| p.into_inner())
}

async fn stats(State(core): State<Shared>) -> Response {
    Json(lock(&core).stats()).into_response()
}

fn bad_request(reason: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": reason.into()}))).into_response()
}

fn not_found(reason: impl Into<String>) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": reason.into()}))).into_response()
}

async fn predict(State(core): State<Shared>, body: Bytes) -> Response {
    predict_body(&core, None, &body)
}

async fn predict_with(State(core): State<Shared>, Path(name): Path<String>, body: Bytes) -> Response {
    predict_body(&core, Some(&name), &body)
}

fn predict_body(core: &Shared, model: Option<&str>, body: &[u8]) -> Response {
    let doc: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("body is not valid JSON: {e}")),
    };
    match lock(core).predict(model, &doc) {
        Ok(p) => Json(p).into_response(),
        Err(PredictError::UnknownModel(name)) => not_found(format!("no model named `{name}`")),
        Err(PredictError::BadDocument(reason)) => bad_request(reason),
    }
}

async fn models(State(core): State<Shared>) -> Response {
    Json(lock(&core).models()).into_response()
}

async fn alerts(State(core): State<Shared>) -> Response {
    Json(lock(&core).alerts()).into_response()
}

async fn record(State(core): State<Shared>, Path((collection, key)): Path<(String, String)>) -> Response {
    match lock(&core).record(&collection, &key) {
        // The per-model fingerprints are the sink's business.
        Some(r) => Json(json!({"doc": r.doc, "version": r.version, "last_id": r.last_id, "ts_ms": r.ts_ms,
                               "cluster_time": r.cluster_time}))
        .into_response(),
        None => not_found("no such record"),
    }
}

/// Prometheus text format, written by hand: it is a dozen lines from a snapshot of `/stats`,
/// and a metrics registry would duplicate counters the checkpoint already keeps.
async fn metrics(State(core): State<Shared>) -> Response {
    let s = lock(&core).stats();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    metric("sink_events_applied_total", "counter", "Events applied to the records.", s.counters.events_applied as f64);
    metric(
        "sink_duplicates_skipped_total",
        "counter",
        "Events skipped as already applied.",
        s.counters.duplicates_skipped as f64,
    );
    metric(
        "sink_stale_skipped_total",
        "counter",
        "Events skipped as older than the record.",
        s.counters.stale_skipped as f64,
    );
    metric(
        "sink_dead_lettered_total",
        "counter",
        "Messages sent to the dead-letter queue.",
        s.counters.dead_lettered as f64,
    );
    metric(
        "sink_unchanged_skipped_total",
        "counter",
        "Snapshot rows identical to the record held, applied without training.",
        s.counters.unchanged_skipped as f64,
    );
    metric(
        "sink_reconciled_deletes_total",
        "counter",
        "Records removed at a snapshot's end: not delivered by it, untouched since.",
        s.counters.reconciled_deletes as f64,
    );
    metric(
        "sink_snapshot_controls_total",
        "counter",
        "Snapshot control messages applied.",
        s.counters.snapshot_controls as f64,
    );
    metric("sink_drift_alerts_total", "counter", "Drift detections, all models.", s.counters.drift_alerts as f64);
    metric("sink_model_trained_total", "counter", "Samples the default model learned.", s.model.stats.trained as f64);
    metric("sink_records", "gauge", "Live records held.", s.records as f64);
    if let Some(lag) = &s.lag_ms {
        metric("sink_lag_p50_ms", "gauge", "Median ms from commit to applied, last 10k events.", lag.p50 as f64);
        metric(
            "sink_lag_p99_ms",
            "gauge",
            "99th percentile ms from commit to applied, last 10k events.",
            lag.p99 as f64,
        );
    }
    for (window, summary) in
        [("progressive", &s.model.stats.progressive), ("rolling_1000", &s.model.stats.rolling_1000)]
    {
        for (key, value) in summary_fields(summary) {
            metric(
                &format!("sink_model_{window}_{key}"),
                "gauge",
                &format!("{window} {key} of the default model."),
                value,
            );
        }
    }
    // Every model, labelled by name.
    let mut family = |name: &str, kind: &str, help: &str, values: Vec<(&str, f64)>| {
        if values.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (model, v) in values {
            let _ = writeln!(out, "{name}{{model=\"{}\"}} {v}", model.replace('\\', "\\\\").replace('"', "\\\""));
        }
    };
    let per_model = |f: &dyn Fn(&super::learner::ModelReport) -> Option<f64>| {
        s.models.iter().filter_map(|(name, m)| Some((name.as_str(), f(m)?))).collect::<Vec<_>>()
    };
    family(
        "sink_models_trained_total",
        "counter",
        "Samples each model learned.",
        per_model(&|m| Some(m.stats.trained as f64)),
    );
    family(
        "sink_models_unchanged_skipped_total",
        "counter",
        "Events each model skipped because what it learns from them had not changed.",
        per_model(&|m| Some(m.unchanged_skipped as f64)),
    );
    family(
        "sink_models_drift_alerts_total",
        "counter",
        "Drift detections of each model.",
        per_model(&|m| m.stats.drift.as_ref().map(|d| d.detections as f64)),
    );
    for window in ["progressive", "rolling_1000"] {
        for key in ["accuracy", "log_loss", "mae", "rmse", "r2"] {
            let values = per_model(&|m| {
                let summary = if window == "progressive" { &m.stats.progressive } else { &m.stats.rolling_1000 };
                summary_fields(summary).into_iter().find(|(k, _)| *k == key).map(|(_, v)| v)
            });
            family(&format!("sink_models_{window}_{key}"), "gauge", &format!("{window} {key} of each model."), values);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

fn summary_fields(summary: &MetricSummary) -> Vec<(&'static str, f64)> {
    let fields = match *summary {
        MetricSummary::Classification { accuracy, log_loss } => vec![("accuracy", accuracy), ("log_loss", log_loss)],
        MetricSummary::Regression { mae, rmse, r2 } => vec![("mae", mae), ("rmse", rmse), ("r2", r2)],
    };
    fields.into_iter().filter_map(|(k, v)| Some((k, v?))).collect()
}
