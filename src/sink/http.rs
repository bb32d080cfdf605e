//! The sink's HTTP API (axum): health, stats, predictions, one record, Prometheus metrics.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::core::SinkCore;
use crate::ml::MetricSummary;

/// The state handlers share with the consumer.
pub type Shared = Arc<Mutex<SinkCore>>;

/// The routes.
pub fn router(core: Shared) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/stats", get(stats))
        .route("/predict", post(predict))
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

async fn predict(State(core): State<Shared>, body: Bytes) -> Response {
    let doc: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("body is not valid JSON: {e}")),
    };
    match lock(&core).predict(&doc) {
        Ok(p) => Json(p).into_response(),
        Err(reason) => bad_request(reason),
    }
}

async fn record(State(core): State<Shared>, Path((collection, key)): Path<(String, String)>) -> Response {
    match lock(&core).record(&collection, &key) {
        Some(r) => Json(r).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": "no such record"}))).into_response(),
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
    metric("sink_model_trained_total", "counter", "Samples the model learned.", s.model.trained as f64);
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
    for (window, summary) in [("progressive", &s.model.progressive), ("rolling_1000", &s.model.rolling_1000)] {
        for (key, value) in summary_fields(summary) {
            metric(
                &format!("sink_model_{window}_{key}"),
                "gauge",
                &format!("{window} {key} of the live model."),
                value,
            );
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
