//! The bridge's metrics (Prometheus, registered once, here) and health, and the small HTTP
//! server that serves them on `CDC_HTTP_ADDR`: `/health` and `/metrics`.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::event::ClusterTime;

/// Everything the bridge counts, and the state `/health` reports.
pub struct BridgeMetrics {
    registry: Registry,
    /// Messages published and confirmed, by collection and op.
    pub published: IntCounterVec,
    /// Messages sent but unconfirmed when a session failed; they are published again.
    pub republished: IntCounter,
    /// Messages the broker nacked.
    pub nacks: IntCounter,
    /// Messages the broker returned as unroutable.
    pub returns: IntCounter,
    /// Seconds from sending a message to its confirm.
    pub confirm_latency: Histogram,
    /// Checkpoint writes.
    pub checkpoint_writes: IntCounter,
    checkpoint_age: Gauge,
    source_lag: Gauge,
    /// Rows sent so far by the running snapshot, by collection.
    pub snapshot_rows: IntGaugeVec,
    /// Documents the running snapshot's collection held when it began (estimated).
    pub snapshot_estimate: IntGaugeVec,
    /// 1 while a snapshot runs.
    pub snapshot_running: IntGauge,
    oplog_headroom: Gauge,
    /// Events too large to publish, skipped (`CDC_OVERSIZE=skip`, or beyond truncation).
    pub oversize_skipped: IntCounter,
    /// Events published without the parts that did not fit (`CDC_OVERSIZE=truncate`).
    pub oversize_truncated: IntCounter,
    /// Messages waiting in `<exchange>.unrouted` (no binding matched them).
    pub unrouted: IntGauge,
    last_checkpoint_ms: AtomicI64,
    last_change_ms: AtomicI64,
    checkpoint_at: AtomicU64,
    headroom_s: AtomicI64,
    headroom_known: AtomicBool,
    up: AtomicBool,
    down_reason: Mutex<String>,
    headroom_warn: Duration,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl BridgeMetrics {
    /// A fresh set; `headroom_warn` is `CDC_OPLOG_HEADROOM_WARN`.
    pub fn new(headroom_warn: Duration) -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = Gauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("registered once");
            g
        };
        let int_gauge_vec = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["collection"]).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("registered once");
            g
        };
        let published = IntCounterVec::new(
            Opts::new("cdc_events_published_total", "Messages published and confirmed, by collection and op."),
            &["collection", "op"],
        )
        .expect("valid metric");
        registry.register(Box::new(published.clone())).expect("registered once");
        let confirm_latency = Histogram::with_opts(
            HistogramOpts::new(
                "cdc_confirm_latency_seconds",
                "Seconds from sending a message to the broker's confirm.",
            )
            .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")),
        )
        .expect("valid metric");
        registry.register(Box::new(confirm_latency.clone())).expect("registered once");
        let snapshot_running = IntGauge::new("cdc_snapshot_running", "1 while a snapshot runs.").expect("valid metric");
        registry.register(Box::new(snapshot_running.clone())).expect("registered once");
        let unrouted = IntGauge::new(
            "cdc_unrouted_messages",
            "Messages in <exchange>.unrouted: no binding matched them (0 without RABBITMQ_EXCHANGE).",
        )
        .expect("valid metric");
        registry.register(Box::new(unrouted.clone())).expect("registered once");
        Self {
            published,
            republished: counter(
                "cdc_messages_republished_total",
                "Messages sent but unconfirmed when a session failed; they are published again.",
            ),
            nacks: counter("cdc_nacks_total", "Messages the broker nacked."),
            returns: counter("cdc_returns_total", "Messages the broker returned as unroutable."),
            confirm_latency,
            checkpoint_writes: counter("cdc_checkpoint_writes_total", "Checkpoint writes."),
            checkpoint_age: gauge("cdc_checkpoint_age_seconds", "Seconds since the checkpoint was last written."),
            source_lag: gauge(
                "cdc_source_lag_seconds",
                "Now minus the wall time of the last change published (grows while the database is quiet).",
            ),
            snapshot_rows: int_gauge_vec("cdc_snapshot_rows", "Rows the running snapshot has sent, by collection."),
            snapshot_estimate: int_gauge_vec(
                "cdc_snapshot_documents_estimated",
                "Documents the collection held when its snapshot began (estimated).",
            ),
            snapshot_running,
            oplog_headroom: gauge(
                "cdc_oplog_headroom_seconds",
                "Seconds between the oldest oplog entry and the checkpoint: how long until the checkpoint falls off.",
            ),
            oversize_skipped: counter("cdc_oversize_skipped_total", "Events too large to publish, skipped."),
            oversize_truncated: counter(
                "cdc_oversize_truncated_total",
                "Events published without the parts that did not fit.",
            ),
            unrouted,
            registry,
            last_checkpoint_ms: AtomicI64::new(0),
            last_change_ms: AtomicI64::new(0),
            checkpoint_at: AtomicU64::new(0),
            headroom_s: AtomicI64::new(0),
            headroom_known: AtomicBool::new(false),
            up: AtomicBool::new(false),
            down_reason: Mutex::new("starting".into()),
            headroom_warn,
        }
    }

    /// A checkpoint at cluster time `at` (if known) was written.
    pub fn checkpoint_written(&self, at: Option<ClusterTime>) {
        self.checkpoint_writes.inc();
        self.last_checkpoint_ms.store(now_ms(), Ordering::Relaxed);
        if let Some(at) = at {
            self.checkpoint_at.store((u64::from(at.t) << 32) | u64::from(at.i), Ordering::Relaxed);
        }
    }

    /// The cluster time of the last checkpoint written, if known.
    pub fn checkpoint_time(&self) -> Option<ClusterTime> {
        let v = self.checkpoint_at.load(Ordering::Relaxed);
        (v != 0).then_some(ClusterTime { t: (v >> 32) as u32, i: v as u32 })
    }

    /// A streamed change with wall time `ts_ms` was confirmed.
    pub fn change_published(&self, ts_ms: i64) {
        self.last_change_ms.fetch_max(ts_ms, Ordering::Relaxed);
    }

    /// The stream is open and the broker connected.
    pub fn set_up(&self) {
        self.up.store(true, Ordering::Relaxed);
    }

    /// The stream or the broker is gone, for `reason`.
    pub fn set_down(&self, reason: impl Into<String>) {
        self.up.store(false, Ordering::Relaxed);
        *self.down_reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.into();
    }

    /// The oplog headroom, measured now (`None`: the oplog cannot be read).
    pub fn set_headroom(&self, seconds: Option<i64>) {
        match seconds {
            Some(s) => {
                self.headroom_s.store(s, Ordering::Relaxed);
                self.headroom_known.store(true, Ordering::Relaxed);
                self.oplog_headroom.set(s as f64);
            }
            None => self.headroom_known.store(false, Ordering::Relaxed),
        }
    }

    /// `/health`: 503 with the reason unless the stream is open and the broker connected;
    /// `degraded` (still 200) when the checkpoint is near the oplog's end.
    fn health(&self) -> (StatusCode, serde_json::Value) {
        if !self.up.load(Ordering::Relaxed) {
            let reason = self.down_reason.lock().unwrap_or_else(|p| p.into_inner()).clone();
            return (StatusCode::SERVICE_UNAVAILABLE, json!({"status": "down", "reason": reason}));
        }
        let warn = self.headroom_warn.as_secs() as i64;
        if self.headroom_known.load(Ordering::Relaxed) {
            let headroom = self.headroom_s.load(Ordering::Relaxed);
            if headroom < warn {
                let reason = format!(
                    "the checkpoint is {headroom} s from falling off the oplog (CDC_OPLOG_HEADROOM_WARN is {warn} s)"
                );
                return (StatusCode::OK, json!({"status": "degraded", "reason": reason, "oplog_headroom_s": headroom}));
            }
        }
        (StatusCode::OK, json!({"status": "ok"}))
    }

    /// The Prometheus text, with the time-based gauges brought up to date.
    fn render(&self) -> String {
        let now = now_ms();
        let since = |ms: i64| if ms == 0 { f64::NAN } else { (now - ms) as f64 / 1000.0 };
        self.checkpoint_age.set(since(self.last_checkpoint_ms.load(Ordering::Relaxed)));
        self.source_lag.set(since(self.last_change_ms.load(Ordering::Relaxed)));
        let mut out = Vec::new();
        // Encoding our own registry into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Serve `/health` and `/metrics` on `addr` until `stop`.
pub async fn serve(
    addr: SocketAddr,
    metrics: std::sync::Arc<BridgeMetrics>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| e.to_string())?;
    let app = Router::new()
        .route(
            "/health",
            get(|State(m): State<std::sync::Arc<BridgeMetrics>>| async move {
                let (status, body) = m.health();
                (status, axum::Json(body)).into_response()
            }),
        )
        .route(
            "/metrics",
            get(|State(m): State<std::sync::Arc<BridgeMetrics>>| async move {
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render()).into_response()
            }),
        )
        .with_state(metrics);
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
    }))
}
