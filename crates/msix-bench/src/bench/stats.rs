//! Statistics over rounds: medians and ratios with seeded block-bootstrap
//! 95% intervals, and latency percentiles.
//!
//! A row's samples are its per-round values (one per round, every row
//! measured once per round in a shuffled order), so drift and neighbours on
//! a shared host hit every row alike. A ratio is taken per round (the two
//! rows of the same round) and summarised by the median of these paired
//! ratios. Consecutive rounds are not independent on a shared host (its
//! load drifts over seconds: the two halves of one run can differ by tens
//! of percent), so intervals come from a circular block bootstrap: each
//! resample strings together [`BLOCKS`] runs of consecutive rounds drawn at
//! random, which keeps the pairing and carries the drift within the run
//! into the interval (an interval over independent rounds would be several
//! times narrower and state orders that the next run reverses). The
//! generator is seeded from the rows' names, so the same measurements
//! always give the same intervals.

use serde::Serialize;

/// Resamples of the bootstrap.
pub const BOOTSTRAP_RESAMPLES: usize = 4000;
/// Blocks per resample: a block is a tenth of the run's rounds.
pub const BLOCKS: usize = 10;

/// SplitMix64: a small, fast, seedable generator (reproducible shuffles and
/// bootstrap resamples; nothing here needs cryptographic quality).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator seeded from `text` (FNV-1a of its bytes) mixed with `seed`.
    pub fn from_text(seed: u64, text: &str) -> Rng {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h ^ seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0; the modulo bias is below 2^-40 for the
    /// sizes used here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

fn median_of_sorted(v: &[f64]) -> f64 {
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The median (NaN for no finite sample).
pub fn median(xs: &[f64]) -> f64 {
    median_of_sorted(&sorted(xs))
}

/// Rounds per block for `n` rounds: a tenth, at least one.
pub fn block_len(n: usize) -> usize {
    n.div_ceil(BLOCKS).max(1)
}

/// Percentile interval `[2.5%, 97.5%]` of the median over
/// [`BOOTSTRAP_RESAMPLES`] circular block resamples of `xs` (in round
/// order).
fn block_bootstrap_median_ci95(xs: &[f64], rng: &mut Rng) -> [f64; 2] {
    let n = xs.len();
    if n == 0 {
        return [f64::NAN, f64::NAN];
    }
    let b = block_len(n);
    let mut medians = Vec::with_capacity(BOOTSTRAP_RESAMPLES);
    let mut sample = Vec::with_capacity(n);
    for _ in 0..BOOTSTRAP_RESAMPLES {
        sample.clear();
        while sample.len() < n {
            let start = rng.below(n);
            for k in 0..b.min(n - sample.len()) {
                sample.push(xs[(start + k) % n]);
            }
        }
        sample.sort_by(f64::total_cmp);
        medians.push(median_of_sorted(&sample));
    }
    medians.sort_by(f64::total_cmp);
    [
        percentile_of_sorted(&medians, 0.025),
        percentile_of_sorted(&medians, 0.975),
    ]
}

/// A median with its 95% interval `[low, high]` (circular block bootstrap
/// over the values in round order, drawn with `rng`). Non-finite values
/// are left out.
pub fn median_ci95(xs: &[f64], rng: &mut Rng) -> (f64, [f64; 2]) {
    let v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    (median(&v), block_bootstrap_median_ci95(&v, rng))
}

/// A ratio and its 95% interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RatioEstimate {
    /// The median of the per-round ratios.
    pub ratio: f64,
    /// The bootstrap 95% interval `[low, high]` (2.5th and 97.5th
    /// percentiles of the resampled medians).
    pub ci95: [f64; 2],
}

impl RatioEstimate {
    /// Whether the interval lies wholly above 1 (`Some(true)`: the
    /// numerator is larger), wholly below (`Some(false)`), or contains 1
    /// (`None`: the order is not established).
    pub fn order(&self) -> Option<bool> {
        if self.ci95[0] > 1.0 {
            Some(true)
        } else if self.ci95[1] < 1.0 {
            Some(false)
        } else {
            None
        }
    }

    /// Half the interval's width relative to the ratio (0.1 = ±10%).
    pub fn relative_half_width(&self) -> f64 {
        (self.ci95[1] - self.ci95[0]) / 2.0 / self.ratio
    }
}

/// The ratio `num / den` over paired rounds (`num[r]` and `den[r]` measured
/// in the same round): the median of the per-round ratios, with a circular
/// block bootstrap interval over the rounds drawn with `rng`. Rounds where
/// either value is not a positive finite number are left out.
pub fn paired_ratio(num: &[f64], den: &[f64], rng: &mut Rng) -> RatioEstimate {
    let ratios: Vec<f64> = num
        .iter()
        .zip(den)
        .filter(|(a, b)| a.is_finite() && b.is_finite() && **a > 0.0 && **b > 0.0)
        .map(|(a, b)| a / b)
        .collect();
    if ratios.is_empty() {
        return RatioEstimate {
            ratio: f64::NAN,
            ci95: [f64::NAN, f64::NAN],
        };
    }
    RatioEstimate {
        ratio: median(&ratios),
        ci95: block_bootstrap_median_ci95(&ratios, rng),
    }
}

/// Linear-interpolated percentile `q` (0..=1) of sorted values.
fn percentile_of_sorted(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// The nearest-rank percentile `q` (0 < q <= 1) of `xs`: the smallest
/// sample with at least a fraction `q` of the samples at or below it (p99
/// of 200 samples is the second largest). `None` without samples.
pub fn percentile(xs: &[f64], q: f64) -> Option<f64> {
    let v = sorted(xs);
    if v.is_empty() {
        return None;
    }
    let rank = (q * v.len() as f64).ceil().max(1.0) as usize;
    Some(v[rank.min(v.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_sequence_and_shuffle() {
        let mut a = Rng::from_text(15, "fast+srcmask/qemu-like");
        let mut b = Rng::from_text(15, "fast+srcmask/qemu-like");
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let mut c = Rng::from_text(15, "fast/qemu-like");
        assert_ne!(xs[0], c.next_u64(), "another pair, another stream");
        let mut p: Vec<usize> = (0..12).collect();
        Rng::new(3).shuffle(&mut p);
        let mut q: Vec<usize> = (0..12).collect();
        Rng::new(3).shuffle(&mut q);
        assert_eq!(p, q);
        let mut sorted_p = p.clone();
        sorted_p.sort();
        assert_eq!(sorted_p, (0..12).collect::<Vec<_>>(), "a permutation");
    }

    #[test]
    fn median_ci_brackets_the_median_and_widens_with_drift_within_the_run() {
        let flat: Vec<f64> = (0..100).map(|i| 100.0 + f64::from(i % 7)).collect();
        let (m, ci) = median_ci95(&flat, &mut Rng::new(4));
        assert!(ci[0] <= m && m <= ci[1], "{m} {ci:?}");
        assert!(ci[1] - ci[0] <= 3.0, "{ci:?}");
        // The same values, but the host got slower halfway through: blocks
        // of consecutive rounds keep that, and the interval covers both.
        let drift: Vec<f64> = (0..100)
            .map(|i| 100.0 + f64::from(i % 7) + if i < 50 { 0.0 } else { 20.0 })
            .collect();
        let (_, wide) = median_ci95(&drift, &mut Rng::new(4));
        assert!(wide[1] - wide[0] > 10.0, "{wide:?}");
        assert_eq!(block_len(40), 4);
        assert_eq!(block_len(400), 40);
        assert_eq!(block_len(3), 1);
        assert!(median_ci95(&[], &mut Rng::new(1)).0.is_nan());
    }

    #[test]
    fn paired_ratio_is_reproducible_and_brackets_the_ratio() {
        // The denominator drifts round to round; the numerator is twice it
        // with 5% noise: the pairing cancels the drift.
        let mut noise = Rng::new(9);
        let den: Vec<f64> = (0..40).map(|r| 1000.0 * (1.0 + r as f64 / 10.0)).collect();
        let num: Vec<f64> = den
            .iter()
            .map(|d| 2.0 * d * (0.95 + 0.1 * (noise.below(1000) as f64 / 1000.0)))
            .collect();
        let a = paired_ratio(&num, &den, &mut Rng::from_text(15, "x"));
        let b = paired_ratio(&num, &den, &mut Rng::from_text(15, "x"));
        assert_eq!(a, b, "seeded: the same output");
        assert!(a.ci95[0] <= a.ratio && a.ratio <= a.ci95[1], "{a:?}");
        assert!((1.9..=2.1).contains(&a.ratio), "{a:?}");
        assert!(a.relative_half_width() < 0.05, "{a:?}");
        assert_eq!(a.order(), Some(true));
        let flipped = paired_ratio(&den, &num, &mut Rng::new(1));
        assert_eq!(flipped.order(), Some(false));
    }

    #[test]
    fn an_interval_containing_one_establishes_no_order() {
        let den = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        let num = [0.8, 1.2, 0.9, 1.1, 0.95, 1.05];
        let r = paired_ratio(&num, &den, &mut Rng::new(2));
        assert!(r.ci95[0] < 1.0 && r.ci95[1] > 1.0, "{r:?}");
        assert_eq!(r.order(), None);
        let none = paired_ratio(&[1.0], &[0.0], &mut Rng::new(2));
        assert!(none.ratio.is_nan(), "a zero denominator is left out");
    }

    #[test]
    fn nearest_rank_percentiles() {
        let xs: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&xs, 0.5), Some(100.0));
        assert_eq!(percentile(&xs, 0.99), Some(198.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
