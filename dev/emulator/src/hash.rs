//! Stateless deterministic randomness.
//!
//! Every synthetic value is a pure function of (seed, ids, date): there is no RNG state to carry
//! between requests, so any page of any report can be produced independently, in any order, on
//! any thread, and always with the same bytes. The mixer is SplitMix64's finaliser (fast, and
//! good enough statistically for synthetic marketing data).

/// SplitMix64's output function: a bijective 64-bit mixer.
#[inline]
pub const fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A hash chain: `H::new(seed).with(a).with(b)` is a well-mixed function of (seed, a, b), and
/// the order of the inputs matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct H(pub u64);

impl H {
    /// Starts a chain from a seed.
    #[inline]
    pub const fn new(seed: u64) -> Self {
        H(mix(seed ^ 0x6D69_2D65_6D75_6C61))
    }

    /// Extends the chain with one more input.
    #[inline]
    pub const fn with(self, v: u64) -> Self {
        H(mix(self.0 ^ mix(v)))
    }

    /// Extends the chain with a (possibly negative) day number.
    #[inline]
    pub const fn with_i(self, v: i64) -> Self {
        self.with(v as u64)
    }

    /// Uniform integer in `0..n` (Lemire's multiply-shift; `n` = 0 gives 0).
    #[inline]
    pub const fn below(self, n: u64) -> u64 {
        ((self.0 as u128 * n as u128) >> 64) as u64
    }

    /// Uniform integer in `lo..=hi`.
    #[inline]
    pub const fn range(self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `per_mille` / 1000.
    #[inline]
    pub const fn chance(self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// A uniformly chosen element of a non-empty slice (the first element of an empty one is
    /// never asked for: every caller passes a static, non-empty table).
    #[inline]
    pub fn pick<T: Copy>(self, items: &[T]) -> Option<T> {
        items.get(self.below(items.len() as u64) as usize).copied()
    }
}

/// `numer / denom` rounded up or down at random with the exact probability of the fraction, so
/// small expected values (0.3 conversions a day) stay unbiased in sums instead of always 0.
#[inline]
pub fn round_prob(numer: u128, denom: u128, h: H) -> u64 {
    if denom == 0 {
        return 0;
    }
    let whole = numer / denom;
    let frac = numer % denom;
    let r = (u128::from(h.0) * denom) >> 64;
    u64::try_from(whole + u128::from(r < frac)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_is_order_sensitive_and_stable() {
        let a = H::new(42).with(1).with(2);
        let b = H::new(42).with(2).with(1);
        assert_ne!(a, b);
        assert_eq!(a, H::new(42).with(1).with(2));
        assert_ne!(H::new(42).with(1), H::new(43).with(1));
    }

    #[test]
    fn below_stays_in_range_and_round_prob_is_unbiased() {
        let mut sum = 0u64;
        for i in 0..10_000u64 {
            let h = H::new(7).with(i);
            assert!(h.below(10) < 10);
            sum += round_prob(3, 10, h);
        }
        // Expected 3,000; allow a generous band.
        assert!((2_700..3_300).contains(&sum), "sum {sum}");
    }
}
