//! What the sink shows people: a snapshot of its figures that the consumer publishes (so
//! `/stats`, `/models`, `/alerts` and `/metrics` never wait on the state the consumer is
//! applying to, nor on a checkpoint's fsync), and the Prometheus text made from it.

use std::sync::{Arc, Mutex};

use prometheus::{Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};
use serde::Serialize;
use tokio::sync::watch;

use super::analytics::AnalyticsView;
use super::core::{Alert, SinkCore, Stats};
use super::learner::ModelReport;
use crate::ml::MetricSummary;

/// One published view of the sink.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    /// `/stats`.
    pub stats: Stats,
    /// `/models`.
    pub models: Vec<ModelReport>,
    /// `/alerts`, newest last.
    pub alerts: Vec<Alert>,
    /// `/analytics`.
    pub analytics: AnalyticsView,
    /// When it was taken, ms since the epoch (rates over time divide by it).
    pub at_ms: i64,
}

impl View {
    /// The view of `core` now.
    pub fn of(core: &SinkCore) -> Self {
        Self {
            stats: core.stats(),
            models: core.models(),
            alerts: core.alerts().iter().cloned().collect(),
            analytics: core.analytics().view(),
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        }
    }
}

/// The latest [`View`], and the metrics the consumer observes as it goes.
#[derive(Clone)]
pub struct Board {
    view: watch::Sender<Arc<View>>,
    lag: Histogram,
    registry: Registry,
    /// Lags (ms) observed since the dashboard's history last took them ([`Board::take_lags`]).
    fresh_lags: Arc<Mutex<Vec<i64>>>,
}

/// Lags kept between two takes: a second of the fastest drain measured (~20,000 events/s)
/// several times over; past that, the first ones stand for the rest.
const FRESH_LAGS_MAX: usize = 100_000;

impl Board {
    /// A board showing `core` as it is now.
    pub fn new(core: &SinkCore) -> Self {
        let registry = Registry::new();
        let lag = Histogram::with_opts(
            HistogramOpts::new("sink_lag_seconds", "Seconds from the change's commit to the sink applying it.")
                .buckets(prometheus::exponential_buckets(0.001, 2.0, 16).expect("valid buckets")),
        )
        .expect("valid metric");
        registry.register(Box::new(lag.clone())).expect("registered once");
        Self { view: watch::channel(Arc::new(View::of(core))).0, lag, registry, fresh_lags: Arc::default() }
    }

    /// Publish what `core` holds now.
    pub fn publish(&self, core: &SinkCore) {
        self.view.send_replace(Arc::new(View::of(core)));
    }

    /// The latest published view.
    pub fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// An event committed `lag_ms` ago was applied.
    pub fn observe_lag(&self, lag_ms: i64) {
        self.lag.observe(lag_ms.max(0) as f64 / 1000.0);
        let mut fresh = self.fresh_lags.lock().unwrap_or_else(|p| p.into_inner());
        if fresh.len() < FRESH_LAGS_MAX {
            fresh.push(lag_ms.max(0));
        }
    }

    /// The lags (ms) observed since the last call.
    pub fn take_lags(&self) -> Vec<i64> {
        std::mem::take(&mut *self.fresh_lags.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The Prometheus text: the lag histogram, and the view's figures as counters and gauges.
    pub fn render(&self) -> String {
        let view = self.view();
        let s = &view.stats;
        let registry = Registry::new();
        let counter = |name: &str, help: &str, v: u64| {
            let c = IntCounter::new(name, help).expect("valid metric");
            c.inc_by(v);
            registry.register(Box::new(c)).expect("registered once");
        };
        let gauge = |name: &str, help: &str, v: f64| {
            let g = Gauge::new(name, help).expect("valid metric");
            g.set(v);
            registry.register(Box::new(g)).expect("registered once");
        };
        let c = &s.counters;
        counter("sink_events_applied_total", "Events applied to the records.", c.events_applied);
        counter("sink_duplicates_skipped_total", "Events skipped as already applied.", c.duplicates_skipped);
        counter("sink_stale_skipped_total", "Events skipped as older than the record.", c.stale_skipped);
        counter("sink_dead_lettered_total", "Messages sent to the dead-letter queue.", c.dead_lettered);
        counter(
            "sink_unchanged_skipped_total",
            "Events applied without teaching any model: nothing a model learns from changed.",
            c.unchanged_skipped,
        );
        counter(
            "sink_reconciled_deletes_total",
            "Records removed at a snapshot's end: not delivered by it, untouched since.",
            c.reconciled_deletes,
        );
        counter("sink_snapshot_controls_total", "Snapshot control messages applied.", c.snapshot_controls);
        counter("sink_drift_alerts_total", "Drift detections, all models.", c.drift_alerts);
        let by_kind = IntCounterVec::new(Opts::new("sink_alerts_total", "Alerts raised, by kind."), &["kind"])
            .expect("valid metric");
        for (kind, n) in [
            ("anomaly", c.anomaly_alerts),
            ("rule", c.rule_alerts),
            ("schema", c.schema_alerts),
            ("drift", c.drift_alerts),
        ] {
            by_kind.with_label_values(&[kind]).inc_by(n);
        }
        registry.register(Box::new(by_kind)).expect("registered once");
        counter("sink_model_trained_total", "Samples the default model learned.", s.model.stats.trained());
        gauge("sink_records", "Live records held.", s.records as f64);
        let default = s.model.stats.supervised();
        for (window, summary) in
            default.map(|m| [("progressive", &m.progressive), ("rolling_1000", &m.rolling_1000)]).into_iter().flatten()
        {
            for (key, value) in summary_fields(summary) {
                gauge(&format!("sink_model_{window}_{key}"), &format!("{window} {key} of the default model."), value);
            }
        }
        // Every model, labelled by name.
        let per_model_counter = |name: &str, help: &str, f: &dyn Fn(&ModelReport) -> Option<u64>| {
            let v = IntCounterVec::new(Opts::new(name, help), &["model"]).expect("valid metric");
            for (model, report) in &s.models {
                if let Some(x) = f(report) {
                    v.with_label_values(&[model.as_str()]).inc_by(x);
                }
            }
            registry.register(Box::new(v)).expect("registered once");
        };
        per_model_counter("sink_models_trained_total", "Samples each model learned.", &|m| Some(m.stats.trained()));
        per_model_counter(
            "sink_models_unchanged_skipped_total",
            "Events each model skipped because what it learns from them had not changed.",
            &|m| Some(m.unchanged_skipped),
        );
        per_model_counter("sink_models_drift_alerts_total", "Drift detections of each model.", &|m| {
            m.stats.supervised().and_then(|s| s.drift.as_ref()).map(|d| d.detections)
        });
        for window in ["progressive", "rolling_1000"] {
            for key in ["accuracy", "log_loss", "mae", "rmse", "r2"] {
                let v = GaugeVec::new(
                    Opts::new(format!("sink_models_{window}_{key}"), format!("{window} {key} of each model.")),
                    &["model"],
                )
                .expect("valid metric");
                let mut any = false;
                for (model, report) in &s.models {
                    let Some(m) = report.stats.supervised() else { continue };
                    let summary = if window == "progressive" { &m.progressive } else { &m.rolling_1000 };
                    if let Some((_, value)) = summary_fields(summary).into_iter().find(|(k, _)| *k == key) {
                        v.with_label_values(&[model.as_str()]).set(value);
                        any = true;
                    }
                }
                if any {
                    registry.register(Box::new(v)).expect("registered once");
                }
            }
        }
        analytics_metrics(&view.analytics, &registry);
        let mut families = self.registry.gather();
        families.extend(registry.gather());
        let mut out = Vec::new();
        // Encoding our own registries into a Vec cannot fail.
        let _ = prometheus::TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

fn summary_fields(summary: &MetricSummary) -> Vec<(&'static str, f64)> {
    let fields = match *summary {
        MetricSummary::Classification { accuracy, log_loss } => vec![("accuracy", accuracy), ("log_loss", log_loss)],
        MetricSummary::Regression { mae, rmse, r2 } => vec![("mae", mae), ("rmse", rmse), ("r2", r2)],
    };
    fields.into_iter().filter_map(|(k, v)| Some((k, v?))).collect()
}

/// The streaming analytics: events by op since the state began, late events per aggregate,
/// and every count of each aggregate's current window.
fn analytics_metrics(view: &AnalyticsView, registry: &Registry) {
    let by_op = IntCounterVec::new(
        Opts::new("sink_analytics_events_total", "Events counted by the analytics (applied, not skipped), by op."),
        &["op"],
    )
    .expect("valid metric");
    for (op, n) in view.totals() {
        by_op.with_label_values(&[op]).inc_by(n);
    }
    let late = IntCounterVec::new(
        Opts::new("sink_analytics_late_total", "Events too late for their window, not added, by aggregate."),
        &["aggregate"],
    )
    .expect("valid metric");
    for (aggregate, n) in view.late() {
        late.with_label_values(&[aggregate]).inc_by(n);
    }
    let current = GaugeVec::new(
        Opts::new("sink_analytics_window_events", "Events in the current window of each aggregate, by group and op."),
        &["aggregate", "collection", "group", "op"],
    )
    .expect("valid metric");
    for c in view.current_counts() {
        current.with_label_values(&[c.aggregate, c.collection, c.group, c.op]).set(c.count as f64);
    }
    for m in [Box::new(by_op) as Box<dyn prometheus::core::Collector>, Box::new(late), Box::new(current)] {
        registry.register(m).expect("registered once");
    }
}
