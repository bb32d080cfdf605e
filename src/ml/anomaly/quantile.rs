//! A running quantile by the P² algorithm (Jain & Chlamtac, 1985): five markers, constant
//! memory. River's `stats.Quantile`, step for step, which its `anomaly.QuantileFilter` uses.

use serde::{Deserialize, Serialize};

/// The running `q`-quantile of the values seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantile {
    q: f64,
    desired: [f64; 5],
    marker: [f64; 5],
    position: [i64; 5],
    heights: Vec<f64>,
    sorted: bool,
}

impl Quantile {
    /// A fresh estimator of the `q`-quantile, `q` in (0, 1).
    pub fn new(q: f64) -> Self {
        Self {
            q,
            desired: [0.0, q / 2.0, q, (1.0 + q) / 2.0, 1.0],
            marker: [1.0, 1.0 + 2.0 * q, 1.0 + 4.0 * q, 3.0 + 2.0 * q, 5.0],
            position: [1, 2, 3, 4, 5],
            heights: Vec::with_capacity(5),
            sorted: false,
        }
    }

    /// Add a value.
    pub fn update(&mut self, x: f64) {
        if self.heights.len() != 5 {
            self.heights.push(x);
            return;
        }
        if !self.sorted {
            self.heights.sort_by(f64::total_cmp);
            self.sorted = true;
        }
        let k = self.find_k(x);
        for (i, p) in self.position.iter_mut().enumerate() {
            if i >= k {
                *p += 1;
            }
        }
        for (m, d) in self.marker.iter_mut().zip(self.desired) {
            *m += d;
        }
        self.adjust();
    }

    /// The estimate; `None` before any value.
    pub fn get(&self) -> Option<f64> {
        if self.sorted {
            return Some(self.heights[2]);
        }
        if self.heights.is_empty() {
            return None;
        }
        let mut h = self.heights.clone();
        h.sort_by(f64::total_cmp);
        let n = h.len();
        let at = ((n as f64 * self.q) as usize).min(n - 1);
        Some(h[at])
    }

    fn find_k(&mut self, x: f64) -> usize {
        let h = &mut self.heights;
        if x < h[0] {
            h[0] = x;
            return 1;
        }
        for i in 1..5 {
            if h[i - 1] <= x && x < h[i] {
                return i;
            }
        }
        if h[4] < x {
            h[4] = x;
        }
        4
    }

    fn adjust(&mut self) {
        for i in 1..4 {
            let n = self.position[i];
            let q = self.heights[i];
            let d = self.marker[i] - n as f64;
            if (d >= 1.0 && self.position[i + 1] - n > 1) || (d <= -1.0 && self.position[i - 1] - n < -1) {
                let d: i64 = if d > 0.0 { 1 } else { -1 };
                let (qp1, qm1) = (self.heights[i + 1], self.heights[i - 1]);
                let (np1, nm1) = (self.position[i + 1] as f64, self.position[i - 1] as f64);
                let (df, nf) = (d as f64, n as f64);
                let outer = df / (np1 - nm1);
                let left = (nf - nm1 + df) * (qp1 - q) / (np1 - nf);
                let right = (np1 - nf - df) * (q - qm1) / (nf - nm1);
                let qn = q + outer * (left + right);
                self.heights[i] = if qm1 < qn && qn < qp1 {
                    qn
                } else {
                    let j = (i as i64 + d) as usize;
                    q + df * (self.heights[j] - q) / (self.position[j] - n) as f64
                };
                self.position[i] = n + d;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_a_uniform_stream() {
        let mut q = Quantile::new(0.99);
        assert_eq!(q.get(), None);
        for i in 0..10_000u64 {
            q.update(((i * 7919) % 10_000) as f64 / 10_000.0);
        }
        let got = q.get().unwrap();
        assert!((got - 0.99).abs() < 0.01, "{got}");
        let mut m = Quantile::new(0.5);
        for x in [5.0, 1.0, 3.0] {
            m.update(x);
        }
        assert_eq!(m.get(), Some(3.0));
    }
}
