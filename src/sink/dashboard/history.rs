//! The sink's recent past for the dashboard's time series: one sample per second of the
//! published view (events per second, lag, records, each model's rolling quality and drift
//! detections), the last ten minutes, served by `/history`. Kept in memory only: it is a
//! picture of the last minutes, not state the sink needs after a restart.

use std::collections::VecDeque;

use serde::Serialize;

use super::SAMPLE_EVERY;
use crate::ml::MetricSummary;
use crate::sink::stats::View;

/// Samples kept: ten minutes at one a second.
pub const CAPACITY: usize = 600;

/// One model at one sample.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSample {
    /// The model's name.
    pub name: String,
    /// The figure drawn: `accuracy` for classification, `mae` for regression.
    pub metric: &'static str,
    /// Its value over the last 1,000 samples scored (null before any).
    pub value: Option<f64>,
    /// Samples learned.
    pub trained: u64,
    /// Drift detections so far; a rise from one sample to the next marks an alert there.
    pub drift_detections: u64,
}

/// The sink at one second.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// When the sample was taken, ms since the epoch.
    pub t_ms: i64,
    /// Events applied so far.
    pub events_applied: u64,
    /// Events applied per second since the previous sample (null for the first).
    pub events_per_s: Option<f64>,
    /// Lag from commit to applied of the events applied since the previous sample: median,
    /// ms (null when none was).
    pub lag_p50_ms: Option<i64>,
    /// The same, 99th percentile.
    pub lag_p99_ms: Option<i64>,
    /// Live records held.
    pub records: u64,
    /// Every model, in configuration order.
    pub models: Vec<ModelSample>,
    /// When the view sampled was published: rates divide by the time between views, so a
    /// view up to one publishing interval old does not skew them.
    #[serde(skip)]
    view_ms: i64,
}

/// The last [`CAPACITY`] samples, oldest first.
#[derive(Debug, Serialize)]
pub struct History {
    interval_ms: u64,
    capacity: usize,
    samples: VecDeque<Sample>,
}

impl Default for History {
    fn default() -> Self {
        Self { interval_ms: SAMPLE_EVERY.as_millis() as u64, capacity: CAPACITY, samples: VecDeque::new() }
    }
}

impl History {
    /// Add a sample of `view`, taken at `now_ms`, with the lags observed since the previous.
    pub fn push(&mut self, view: &View, lags: &mut [i64], now_ms: i64) {
        lags.sort_unstable();
        let at = |q: f64| (!lags.is_empty()).then(|| lags[((lags.len() - 1) as f64 * q).round() as usize]);
        let stats = &view.stats;
        let events = stats.counters.events_applied;
        let events_per_s = self.samples.back().map(|prev| {
            let dt = (view.at_ms - prev.view_ms) as f64 / 1000.0;
            // The same view again (nothing was published meanwhile): nothing was applied.
            if dt > 0.0 { events.saturating_sub(prev.events_applied) as f64 / dt } else { 0.0 }
        });
        let models = view
            .models
            .iter()
            .map(|m| {
                let (metric, value) = match m.stats.supervised().map(|s| &s.rolling_1000) {
                    Some(MetricSummary::Classification { accuracy, .. }) => ("accuracy", *accuracy),
                    Some(MetricSummary::Regression { mae, .. }) => ("mae", *mae),
                    None => ("anomaly_alerts", None),
                };
                ModelSample {
                    name: m.name.clone(),
                    metric,
                    value,
                    trained: m.stats.trained(),
                    drift_detections: m.stats.supervised().and_then(|s| s.drift.as_ref()).map_or(0, |d| d.detections),
                }
            })
            .collect();
        if self.samples.len() >= CAPACITY {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            t_ms: now_ms,
            events_applied: events,
            events_per_s,
            lag_p50_ms: at(0.5),
            lag_p99_ms: at(0.99),
            records: stats.records,
            models,
            view_ms: view.at_ms,
        });
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> &VecDeque<Sample> {
        &self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::{ModelKind, Task};
    use crate::sink::core::SinkCore;
    use crate::sink::features::FeatureSpec;
    use crate::sink::spec::ModelSpec;

    #[test]
    fn samples_give_rates_and_each_models_quality_within_a_bounded_ring() {
        let spec = ModelSpec::single(
            Task::Classification,
            ModelKind::Linear,
            vec![FeatureSpec::parse("x").unwrap()],
            "y".into(),
            vec![],
        );
        let mut core = SinkCore::new(vec![spec], 100).unwrap();
        let mut h = History::default();
        let mut view = View::of(&core);
        view.at_ms = 10_000;
        h.push(&view, &mut [], 10_100);
        for i in 0..30 {
            let body = format!(
                r#"{{"id":"e{i}","op":"c","key":"k{i}","after":{{"x":{i},"y":{}}},"source":{{"db":"d","collection":"c","cluster_time":{{"t":{},"i":1}}}},"ts_ms":1}}"#,
                i % 2 == 0,
                i + 1
            );
            core.apply_bytes(body.as_bytes());
        }
        let mut view = View::of(&core);
        view.at_ms = 11_500;
        let mut lags: Vec<i64> = (1..=100).rev().collect();
        h.push(&view, &mut lags, 11_600);
        // Idle: the same view, sampled again.
        h.push(&view, &mut [], 12_600);
        let s = h.samples();
        assert_eq!(s[0].events_per_s, None);
        assert_eq!(s[1].events_per_s, Some(20.0), "30 events over the 1.5 s between the views");
        assert_eq!(s[2].events_per_s, Some(0.0));
        assert_eq!((s[1].t_ms, s[1].events_applied, s[1].records), (11_600, 30, 30));
        assert_eq!((s[1].lag_p50_ms, s[1].lag_p99_ms), (Some(51), Some(99)), "of the lags since the previous sample");
        assert_eq!((s[2].lag_p50_ms, s[2].lag_p99_ms), (None, None));
        let m = &s[1].models[0];
        assert_eq!((m.name.as_str(), m.metric, m.trained, m.drift_detections), ("default", "accuracy", 30, 0));
        assert!(m.value.is_some());
        for t in 0..CAPACITY as i64 {
            h.push(&view, &mut [], 20_000 + t);
        }
        assert_eq!(h.samples().len(), CAPACITY);
        assert_eq!(h.samples()[0].t_ms, 20_000);
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!((json["interval_ms"].as_u64(), json["capacity"].as_u64()), (Some(1000), Some(CAPACITY as u64)));
        assert!(json["samples"][0].get("view_ms").is_none());
    }
}
