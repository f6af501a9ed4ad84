//! Statistics over rounds: medians with distribution-free 95% intervals,
//! paired ratios with a seeded bootstrap interval, and latency percentiles.
//!
//! A row's samples are its per-round values (one per round, every row
//! measured once per round in a shuffled order), so drift and neighbours on
//! a shared host hit every row alike. A ratio is taken per round (the two
//! rows of the same round) and summarised by the median of these paired
//! ratios; its interval comes from resampling whole rounds with replacement,
//! which keeps the pairing. The bootstrap's generator is seeded from the two
//! rows' names, so the same measurements always give the same intervals.

use serde::Serialize;

/// Resamples of the bootstrap.
pub const BOOTSTRAP_RESAMPLES: usize = 4000;

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

/// P(X <= k) for X ~ Binomial(n, 1/2).
fn binomial_half_cdf(n: usize, k: usize) -> f64 {
    // Summed in log space: n is at most a few thousand rounds.
    let ln_half_n = -(n as f64) * std::f64::consts::LN_2;
    let mut ln_choose = 0.0_f64; // ln C(n, 0)
    let mut total = 0.0;
    for i in 0..=k.min(n) {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        total += (ln_choose + ln_half_n).exp();
    }
    total.min(1.0)
}

/// A median with its 95% confidence interval `[low, high]`: the
/// distribution-free interval from order statistics (the `k`-th smallest and
/// `k`-th largest sample, with the largest `k` for which a Binomial(n, 1/2)
/// puts at most 2.5% below `k`). It assumes only that the rounds are
/// independent draws; with fewer than 6 samples it is the whole range, whose
/// coverage is then below 95%.
pub fn median_ci95(xs: &[f64]) -> (f64, [f64; 2]) {
    let v = sorted(xs);
    let n = v.len();
    if n == 0 {
        return (f64::NAN, [f64::NAN, f64::NAN]);
    }
    // The largest 0-based rank k with P(Bin(n, 1/2) <= k) <= 2.5%; none
    // for n <= 5, and then the whole range.
    let k = (0..n / 2)
        .take_while(|&k| binomial_half_cdf(n, k) <= 0.025)
        .last()
        .unwrap_or(0);
    let lo = v[k];
    let hi = v[n - 1 - k];
    (median_of_sorted(&v), [lo, hi])
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
/// in the same round): the median of the per-round ratios, and a percentile
/// bootstrap interval from [`BOOTSTRAP_RESAMPLES`] resamples of whole rounds
/// drawn with `rng`. Rounds where either value is not a positive finite
/// number are left out.
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
    let n = ratios.len();
    let mut medians = Vec::with_capacity(BOOTSTRAP_RESAMPLES);
    let mut sample = vec![0.0; n];
    for _ in 0..BOOTSTRAP_RESAMPLES {
        for s in sample.iter_mut() {
            *s = ratios[rng.below(n)];
        }
        sample.sort_by(f64::total_cmp);
        medians.push(median_of_sorted(&sample));
    }
    medians.sort_by(f64::total_cmp);
    RatioEstimate {
        ratio: median(&ratios),
        ci95: [
            percentile_of_sorted(&medians, 0.025),
            percentile_of_sorted(&medians, 0.975),
        ],
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
    fn median_ci_uses_the_binomial_order_statistics() {
        // n = 10: P(Bin <= 1) = 11/1024 <= 2.5% < P(Bin <= 2) = 56/1024,
        // so the interval is the 2nd smallest to the 2nd largest.
        let xs: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(median_ci95(&xs), (5.5, [2.0, 9.0]));
        // n = 5: no rank qualifies; the whole range.
        assert_eq!(median_ci95(&[5.0, 1.0, 3.0, 2.0, 4.0]), (3.0, [1.0, 5.0]));
        // n = 100: ranks 40 and 61 (1-based), the textbook values.
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(median_ci95(&xs).1, [40.0, 61.0]);
        assert!(median_ci95(&[]).0.is_nan());
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
