//! The forest's seeded pseudo-random numbers, small enough to live in a checkpoint.
//!
//! Hand-written (xoshiro256**, seeded through SplitMix64) rather than `rand`: the generator's
//! whole state must serialise with the model so a restored forest draws exactly the numbers the
//! original would have, and `rand`'s `StdRng` neither serialises nor promises the same stream
//! across versions.

use serde::{Deserialize, Serialize};

/// xoshiro256** (Blackman & Vigna).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng([u64; 4]);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Self([next(), next(), next(), next()])
    }

    /// False for the all-zero state, from which xoshiro only ever draws zeros (a
    /// checkpoint's check).
    pub fn is_usable(&self) -> bool {
        self.0 != [0; 4]
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`n > 0`), by Lemire's multiply-shift (bias below 2^-32 for small n).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// A Poisson draw with mean `rate`, by Knuth's product of uniforms as River's
    /// `utils.random.poisson` does.
    pub fn poisson(&mut self, rate: f64) -> u32 {
        let limit = (-rate).exp();
        let mut k = 0;
        let mut p = 1.0;
        while p > limit {
            k += 1;
            p *= self.next_f64();
        }
        k - 1
    }

    /// `k` distinct indices out of `0..n`, sorted (a partial Fisher-Yates shuffle).
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<u32> {
        let mut all: Vec<u32> = (0..n as u32).collect();
        let k = k.min(n);
        for i in 0..k {
            let j = i + self.below(n - i);
            all.swap(i, j);
        }
        all.truncate(k);
        all.sort_unstable();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_has_the_right_mean_and_samples_are_distinct() {
        let mut r = Rng::new(42);
        let n = 20_000;
        let mean = (0..n).map(|_| f64::from(r.poisson(6.0))).sum::<f64>() / f64::from(n);
        assert!((mean - 6.0).abs() < 0.1, "{mean}");
        let s = r.sample(10, 3);
        assert_eq!(s.len(), 3);
        assert!(s.windows(2).all(|w| w[0] < w[1]) && s.iter().all(|&i| i < 10));
        assert_eq!(Rng::new(7), Rng::new(7));
        assert_ne!(Rng::new(7).next_u64(), Rng::new(8).next_u64());
    }
}
