//! The sink's HTTP API (axum): health, stats, the models and their predictions, alerts (anomaly, rule, schema, drift), the inferred schemas,
//! one record, Prometheus metrics. The figures come from the view the consumer publishes
//! ([`Board`]); only a prediction and a record read the state itself, briefly.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::core::{PredictError, SinkCore};
use super::stats::Board;

/// The state handlers share with the consumer.
pub type Shared = Arc<Mutex<SinkCore>>;

/// What the handlers read: the state (for predictions and records) and the published view.
#[derive(Clone)]
pub struct Api {
    core: Shared,
    board: Board,
}

/// The routes.
pub fn router(core: Shared, board: Board) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/stats", get(stats))
        .route("/predict", post(predict))
        .route("/models", get(models))
        .route("/models/{name}/predict", post(predict_with))
        .route("/alerts", get(alerts))
        .route("/schema", get(schema))
        .route("/records/{collection}/{key}", get(record))
        .route("/metrics", get(metrics))
        .with_state(Api { core, board })
}

/// Lock the core (recovering from a poisoned lock: the data is still the best we have).
pub fn lock(core: &Shared) -> std::sync::MutexGuard<'_, SinkCore> {
    core.lock().unwrap_or_else(|p| p.into_inner())
}

async fn stats(State(api): State<Api>) -> Response {
    Json(&api.board.view().stats).into_response()
}

fn bad_request(reason: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": reason.into()}))).into_response()
}

fn not_found(reason: impl Into<String>) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": reason.into()}))).into_response()
}

async fn predict(State(api): State<Api>, body: Bytes) -> Response {
    predict_body(&api.core, None, &body)
}

async fn predict_with(State(api): State<Api>, Path(name): Path<String>, body: Bytes) -> Response {
    predict_body(&api.core, Some(&name), &body)
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

async fn models(State(api): State<Api>) -> Response {
    Json(&api.board.view().models).into_response()
}

async fn schema(State(api): State<Api>) -> Response {
    let schemas = lock(&api.core).schemas().clone();
    Json(schemas.collections).into_response()
}

async fn alerts(State(api): State<Api>) -> Response {
    Json(&api.board.view().alerts).into_response()
}

async fn record(State(api): State<Api>, Path((collection, key)): Path<(String, String)>) -> Response {
    match lock(&api.core).record(&collection, &key) {
        // The per-model fingerprints are the sink's business.
        Some(r) => Json(json!({"doc": r.doc, "version": r.version, "last_id": r.last_id, "ts_ms": r.ts_ms,
                               "cluster_time": r.position}))
        .into_response(),
        None => not_found("no such record"),
    }
}

/// Prometheus text (the `prometheus` crate), from the published view and the lag histogram.
async fn metrics(State(api): State<Api>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], api.board.render()).into_response()
}
