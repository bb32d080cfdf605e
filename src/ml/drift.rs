//! Concept-drift detectors over a stream of numbers: ADWIN and Page-Hinkley, with River
//! 0.26's defaults and detection indices.
//!
//! Written here rather than taken from a crate. Evaluated: `rill-ml` 1.5.6, whose ADWIN keeps
//! every value of a window capped at 1,000 (no exponential histogram, no `clock`, no
//! `min_window_length`) and so detects at other indices than River; and `irithyll-core` 1.0,
//! whose ADWIN has the exponential histogram but another minimum window, no grace period
//! and no River-style reset after a detection. Neither reproduces River's indices, which
//! `tests/data/drift_streams.json` pins (`scripts/ml_quality.py` records them), and both would
//! pull in a large crate for a hundred lines.

use serde::{Deserialize, Serialize};

/// River's `drift.ADWIN` (Bifet & Gavaldà 2007, the ADWIN2 exponential histogram), step for
/// step as River 0.26's Rust core computes it, including its float arithmetic order, so the
/// detection indices are River's. Like River's Python wrapper, the detector starts afresh on
/// the update after a detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adwin {
    delta: f64,
    clock: u32,
    max_buckets: usize,
    min_window_length: f64,
    grace_period: f64,
    state: AdwinState,
    drift_detected: bool,
    /// Window mean just before the last detection's cut, and just after.
    #[serde(default)]
    last_cut: Option<(f64, f64)>,
}

/// The window: buckets of 2^level values each, per level oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct AdwinState {
    total: f64,
    /// Sum of squared deviations from the window mean (River calls it the variance).
    variance: f64,
    width: f64,
    tick: u64,
    /// `levels[i]` holds `(sum, squared deviations)` of buckets of 2^i values, oldest first.
    levels: Vec<Vec<(f64, f64)>>,
}

impl Default for Adwin {
    fn default() -> Self {
        Self::new(0.002)
    }
}

impl Adwin {
    /// River's defaults with significance `delta`: clock 32, max_buckets 5,
    /// min_window_length 5, grace_period 10.
    pub fn new(delta: f64) -> Self {
        Self::with_params(delta, 32, 5, 5, 10)
    }

    /// Every parameter of River's `ADWIN`.
    pub fn with_params(delta: f64, clock: u32, max_buckets: usize, min_window_length: u32, grace_period: u32) -> Self {
        Self {
            delta,
            clock: clock.max(1),
            max_buckets: max_buckets.max(1),
            min_window_length: f64::from(min_window_length),
            grace_period: f64::from(grace_period),
            state: AdwinState::default(),
            drift_detected: false,
            last_cut: None,
        }
    }

    /// The significance level.
    pub fn delta(&self) -> f64 {
        self.delta
    }

    /// Number of values in the window.
    pub fn width(&self) -> f64 {
        self.state.width
    }

    /// Mean of the window, 0 when empty.
    pub fn estimation(&self) -> f64 {
        if self.state.width > 0.0 { self.state.total / self.state.width } else { 0.0 }
    }

    /// True if the last update detected a change.
    pub fn drift_detected(&self) -> bool {
        self.drift_detected
    }

    /// For the last detection: the window mean before the cut (with the new value) and after
    /// it. The mean after is the recent one, so `after > before` means the values went up.
    pub fn last_cut(&self) -> Option<(f64, f64)> {
        self.last_cut
    }

    /// Add `x`; true if a change is detected.
    pub fn update(&mut self, x: f64) -> bool {
        if self.drift_detected {
            self.state = AdwinState::default();
            self.last_cut = None;
        }
        self.insert(x);
        let before = self.estimation();
        self.drift_detected = self.detect_change();
        if self.drift_detected {
            self.last_cut = Some((before, self.estimation()));
        }
        self.drift_detected
    }

    fn insert(&mut self, x: f64) {
        let s = &mut self.state;
        if s.levels.is_empty() {
            s.levels.push(Vec::with_capacity(self.max_buckets + 1));
        }
        s.levels[0].push((x, 0.0));
        s.width += 1.0;
        let mut incremental = 0.0;
        if s.width > 1.0 {
            let d = x - s.total / (s.width - 1.0);
            incremental = (s.width - 1.0) * d * d / s.width;
        }
        s.variance += incremental;
        s.total += x;
        self.compress();
    }

    /// Merge the two oldest buckets of every full level into one of the next level.
    fn compress(&mut self) {
        let cap = self.max_buckets + 1;
        let levels = &mut self.state.levels;
        let mut i = 0;
        while levels[i].len() == cap {
            let n = (1u64 << i) as f64;
            let ((t0, v0), (t1, v1)) = (levels[i][0], levels[i][1]);
            let (mu0, mu1) = (t0 / n, t1 / n);
            let merged = (t0 + t1, v0 + v1 + n * 0.5 * (mu0 - mu1) * (mu0 - mu1));
            if i + 1 == levels.len() {
                levels.push(Vec::with_capacity(cap));
            }
            levels[i].drain(..2);
            levels[i + 1].push(merged);
            if levels[i + 1].len() < cap {
                break;
            }
            i += 1;
        }
    }

    /// Drop the oldest bucket.
    fn delete_oldest(&mut self) {
        let s = &mut self.state;
        let last = s.levels.len() - 1;
        let n = (1u64 << last) as f64;
        let (u, v) = s.levels[last][0];
        let mu = u / n;
        s.width -= n;
        s.total -= u;
        let mu_window = s.total / s.width;
        s.variance -= v + n * s.width * (mu - mu_window) * (mu - mu_window) / (n + s.width);
        s.levels[last].remove(0);
        if s.levels[last].is_empty() {
            s.levels.pop();
        }
    }

    /// Every `clock` values past the grace period, test each cut of the window (oldest
    /// buckets first) and drop the oldest bucket while some cut's means differ.
    fn detect_change(&mut self) -> bool {
        self.state.tick += 1;
        if !self.state.tick.is_multiple_of(u64::from(self.clock)) || self.state.width <= self.grace_period {
            return false;
        }
        let mut detected = false;
        'shrink: loop {
            let s = &self.state;
            let (mut n0, mut n1, mut u0, mut u1) = (0.0, s.width, 0.0, s.total);
            for i in (0..s.levels.len()).rev() {
                let size = (1u64 << i) as f64;
                let level = &s.levels[i];
                for (k, &(t, _)) in level.iter().enumerate() {
                    n0 += size;
                    n1 -= size;
                    u0 += t;
                    u1 -= t;
                    if i == 0 && k == level.len() - 1 {
                        break 'shrink;
                    }
                    let delta_mean = u0 / n0 - u1 / n1;
                    if n1 >= self.min_window_length
                        && n0 >= self.min_window_length
                        && self.cut(n0, n1, delta_mean)
                        && s.width > 0.0
                    {
                        detected = true;
                        self.delete_oldest();
                        continue 'shrink;
                    }
                }
            }
            break;
        }
        detected
    }

    /// ADWIN2's test with Bernstein's bound, as River computes it.
    fn cut(&self, n0: f64, n1: f64, delta_mean: f64) -> bool {
        let s = &self.state;
        let delta_prime = (2.0 * s.width.ln() / self.delta).ln();
        let m_recip = 1.0 / (n0 - self.min_window_length + 1.0) + 1.0 / (n1 - self.min_window_length + 1.0);
        let epsilon = (2.0 * m_recip * (s.variance / s.width) * delta_prime).sqrt() + 2.0 / 3.0 * delta_prime * m_recip;
        delta_mean.abs() > epsilon
    }

    /// True if the parameters are usable and the window is well formed (a checkpoint's check).
    fn is_consistent(&self) -> bool {
        let s = &self.state;
        self.delta > 0.0
            && self.delta < 1.0
            && self.clock > 0
            && self.max_buckets > 0
            && s.levels.iter().all(|l| l.len() <= self.max_buckets)
            && s.width >= 0.0
    }
}

/// River's `drift.PageHinkley` with its defaults (min_instances 30, delta 0.005,
/// threshold 50, alpha 1 - 1e-4, both directions). Like River, it starts afresh on the update
/// after a detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageHinkley {
    min_instances: u64,
    delta: f64,
    threshold: f64,
    alpha: f64,
    n: u64,
    mean: f64,
    sum_increase: f64,
    sum_decrease: f64,
    min_increase: f64,
    max_decrease: f64,
    drift_detected: bool,
    /// Which way the last detection went: true for an increase.
    #[serde(default)]
    last_increase: bool,
}

impl Default for PageHinkley {
    fn default() -> Self {
        Self::new(30, 0.005, 50.0, 1.0 - 0.0001)
    }
}

impl PageHinkley {
    /// A detector with River's parameters.
    pub fn new(min_instances: u64, delta: f64, threshold: f64, alpha: f64) -> Self {
        let mut d = Self {
            min_instances,
            delta,
            threshold,
            alpha,
            n: 0,
            mean: 0.0,
            sum_increase: 0.0,
            sum_decrease: 0.0,
            min_increase: 0.0,
            max_decrease: 0.0,
            drift_detected: false,
            last_increase: false,
        };
        d.reset();
        d
    }

    fn reset(&mut self) {
        self.n = 0;
        self.mean = 0.0;
        self.sum_increase = 0.0;
        self.sum_decrease = 0.0;
        // River starts at +inf; f64::MAX compares the same with any finite sum and, unlike
        // infinity, survives JSON (serde_json writes non-finite numbers as null).
        self.min_increase = f64::MAX;
        // River starts the maximum at -1, not -inf; kept for identical indices.
        self.max_decrease = -1.0;
        self.drift_detected = false;
    }

    /// True if the last update detected a change.
    pub fn drift_detected(&self) -> bool {
        self.drift_detected
    }

    /// True if the last detection was of an increase (false for a decrease).
    pub fn last_was_increase(&self) -> bool {
        self.last_increase
    }

    /// Add `x`; true if a change is detected.
    pub fn update(&mut self, x: f64) -> bool {
        if self.drift_detected {
            self.reset();
        }
        self.n += 1;
        self.mean += 1.0 / self.n as f64 * (x - self.mean);
        let dev = x - self.mean;
        self.sum_increase = self.alpha * self.sum_increase + dev - self.delta;
        self.sum_decrease = self.alpha * self.sum_decrease + dev + self.delta;
        if self.sum_increase < self.min_increase {
            self.min_increase = self.sum_increase;
        }
        if self.sum_decrease > self.max_decrease {
            self.max_decrease = self.sum_decrease;
        }
        if self.n >= self.min_instances {
            let up = self.sum_increase - self.min_increase > self.threshold;
            let down = self.max_decrease - self.sum_decrease > self.threshold;
            self.drift_detected = up || down;
            if self.drift_detected {
                self.last_increase = up;
            }
        }
        self.drift_detected
    }
}

/// Which detector to use, with its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "detector", deny_unknown_fields)]
pub enum DetectorConfig {
    /// [`Adwin`] with significance `delta` (River's default 0.002) and River's other defaults.
    Adwin {
        /// Significance level in (0, 1).
        #[serde(default = "default_adwin_delta")]
        delta: f64,
    },
    /// [`PageHinkley`] with River's defaults, `threshold` adjustable (default 50).
    PageHinkley {
        /// Detection threshold on the cumulative deviation; above 0.
        #[serde(default = "default_ph_threshold")]
        threshold: f64,
    },
}

fn default_adwin_delta() -> f64 {
    0.002
}

fn default_ph_threshold() -> f64 {
    50.0
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self::Adwin { delta: default_adwin_delta() }
    }
}

impl DetectorConfig {
    /// A fresh detector, or which parameter is out of range.
    pub fn build(self) -> Result<DriftDetector, super::MlError> {
        use super::MlError::Param;
        match self {
            Self::Adwin { delta } if delta > 0.0 && delta < 1.0 => Ok(DriftDetector::Adwin(Adwin::new(delta))),
            Self::Adwin { .. } => Err(Param { param: "delta", reason: "must be in (0, 1)" }),
            Self::PageHinkley { threshold } if threshold > 0.0 && threshold.is_finite() => {
                Ok(DriftDetector::PageHinkley(PageHinkley { threshold, ..PageHinkley::default() }))
            }
            Self::PageHinkley { .. } => Err(Param { param: "threshold", reason: "must be a finite number above 0" }),
        }
    }
}

/// One of the detectors, as a model wrapper holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftDetector {
    /// ADWIN.
    Adwin(Adwin),
    /// Page-Hinkley.
    PageHinkley(PageHinkley),
}

impl DriftDetector {
    /// Add `x`; true if a change is detected.
    pub fn update(&mut self, x: f64) -> bool {
        match self {
            Self::Adwin(d) => d.update(x),
            Self::PageHinkley(d) => d.update(x),
        }
    }

    /// True if the last detection was an increase of the values (for an error stream: the
    /// model got worse). ADWIN compares the window's mean before and after its cut.
    pub fn last_was_increase(&self) -> bool {
        match self {
            Self::Adwin(d) => d.last_cut().is_some_and(|(before, after)| after > before),
            Self::PageHinkley(d) => d.last_was_increase(),
        }
    }

    /// True if the detector's state is usable (a checkpoint's check).
    pub(super) fn is_consistent(&self) -> bool {
        match self {
            Self::Adwin(d) => d.is_consistent(),
            Self::PageHinkley(d) => d.threshold > 0.0 && d.alpha > 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// A stream's name, values, and the indices where River's ADWIN and Page-Hinkley fired.
    type Stream = (String, Vec<f64>, Vec<usize>, Vec<usize>);

    /// The streams `scripts/ml_quality.py` fed River 0.26.1's detectors, with the indices at
    /// which they fired.
    fn streams() -> Vec<Stream> {
        let text = include_str!("../../tests/data/drift_streams.json");
        let v: Value = serde_json::from_str(text).unwrap();
        let idx = |v: &Value| v.as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as usize).collect();
        v.as_object()
            .unwrap()
            .iter()
            .map(|(name, s)| {
                let values = s["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
                (name.clone(), values, idx(&s["adwin"]), idx(&s["page_hinkley"]))
            })
            .collect()
    }

    fn detections(values: &[f64], mut update: impl FnMut(f64) -> bool) -> Vec<usize> {
        values.iter().enumerate().filter_map(|(i, &x)| update(x).then_some(i)).collect()
    }

    #[test]
    fn adwin_fires_at_rivers_indices() {
        let all = streams();
        assert!(all.len() >= 5);
        for (name, values, adwin, _) in &all {
            let mut d = Adwin::default();
            assert_eq!(&detections(values, |x| d.update(x)), adwin, "stream {name}");
        }
    }

    #[test]
    fn page_hinkley_fires_at_rivers_indices() {
        for (name, values, _, ph) in &streams() {
            let mut d = PageHinkley::default();
            assert_eq!(&detections(values, |x| d.update(x)), ph, "stream {name}");
        }
    }

    #[test]
    fn adwin_window_statistics_are_exact_before_any_cut() {
        let mut d = Adwin::default();
        for x in [1.0, 2.0, 3.0, 4.0, 5.0] {
            assert!(!d.update(x));
        }
        assert_eq!((d.width(), d.estimation()), (5.0, 3.0));
        assert!((d.state.variance - 10.0).abs() < 1e-12);
        // 100 values: buckets merge, the window keeps every one of them.
        for _ in 0..95 {
            d.update(1.0);
        }
        assert_eq!(d.width(), 100.0);
        assert!(d.state.levels.iter().all(|l| l.len() <= 5));
    }

    #[test]
    fn adwin_reports_the_direction_of_a_change() {
        let mut d = Adwin::default();
        let mut fired = None;
        for i in 0..4_000 {
            let x = if i < 2_000 { 0.1 } else { 0.9 };
            if d.update(x + 0.01 * f64::from(i % 7)) {
                fired = Some(i);
                break;
            }
        }
        assert!(fired.is_some_and(|i| i >= 2_000), "{fired:?}");
        let (before, after) = d.last_cut().unwrap();
        assert!(after > before);
        assert!(DriftDetector::Adwin(d).last_was_increase());
    }

    #[test]
    fn detectors_round_trip_and_continue_identically() {
        for fresh in [DriftDetector::Adwin(Adwin::default()), DriftDetector::PageHinkley(PageHinkley::default())] {
            let text = serde_json::to_string(&fresh).unwrap();
            assert_eq!(serde_json::from_str::<DriftDetector>(&text).unwrap(), fresh, "{text}");
        }
        let mut a = DriftDetector::Adwin(Adwin::default());
        let mut p = DriftDetector::PageHinkley(PageHinkley::default());
        for i in 0..500 {
            let x = f64::from(i % 13) / 13.0;
            a.update(x);
            p.update(x);
        }
        for d in [a, p] {
            let mut back: DriftDetector = serde_json::from_value(serde_json::to_value(&d).unwrap()).unwrap();
            assert_eq!(back, d);
            let mut d = d;
            for i in 0..3_000 {
                let x = if i > 1_000 { 5.0 } else { 0.0 };
                assert_eq!(back.update(x), d.update(x));
            }
        }
    }

    #[test]
    fn detector_configs_are_validated() {
        assert!(DetectorConfig::default().build().is_ok());
        let bad = DetectorConfig::Adwin { delta: 1.5 }.build();
        assert_eq!(bad, Err(crate::ml::MlError::Param { param: "delta", reason: "must be in (0, 1)" }));
        assert!(DetectorConfig::PageHinkley { threshold: 0.0 }.build().is_err());
        let c: DetectorConfig = serde_json::from_value(serde_json::json!({"detector": "page_hinkley"})).unwrap();
        assert_eq!(c, DetectorConfig::PageHinkley { threshold: 50.0 });
    }
}
