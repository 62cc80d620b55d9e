//! An upper bound on every worker's sampling weight, kept in O(1) per change.
//!
//! Rejection sampling ([`crate::Candidates::sample_distinct_weighted`]) accepts a drawn
//! worker with probability `weight ÷ bound`, so the bound must never be below a weight, and
//! should not be far above the largest one: a bound that only grows (one brief huge claim)
//! would push every later pick into the O(n) scan. Weights are counted per power-of-two
//! bucket; the bound is the upper edge of the highest non-empty bucket, so it is within 2× of
//! the largest weight and falls as soon as that worker leaves or is reweighed.

/// Buckets cover weights 2⁻⁶⁴ to 2⁶⁴ (anything outside is clamped into the end buckets).
const BUCKETS: usize = 128;
const OFFSET: i32 = 64;

/// Counts of weights per power-of-two bucket.
#[derive(Debug, Clone)]
pub(crate) struct WeightBound {
    counts: [u32; BUCKETS],
    top: Option<u8>,
}

impl Default for WeightBound {
    fn default() -> Self {
        Self {
            counts: [0; BUCKETS],
            top: None,
        }
    }
}

/// The bucket of a weight: `floor(log2 w)` shifted, from the float's exponent bits (no
/// `log2` call). `None` for 0, negative or NaN weights (never accepted anyway).
#[inline]
pub(crate) fn bucket_of(w: f64) -> Option<u8> {
    if w.is_nan() || w <= 0.0 {
        return None;
    }
    if w.is_infinite() {
        return Some((BUCKETS - 1) as u8);
    }
    // Subnormals have exponent bits 0: they land in the lowest bucket, whose edge is above them.
    let exp = ((w.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    Some((exp + OFFSET).clamp(0, BUCKETS as i32 - 1) as u8)
}

/// The upper edge of a bucket: every weight in it is below this.
#[inline]
fn edge(b: u8) -> f64 {
    if usize::from(b) == BUCKETS - 1 {
        return f64::INFINITY;
    }
    2f64.powi(i32::from(b) - OFFSET + 1)
}

impl WeightBound {
    /// Moves one weight from bucket `from` to bucket `to` (either may be `None`: added,
    /// removed, or zero).
    #[inline]
    pub(crate) fn shift(&mut self, from: Option<u8>, to: Option<u8>) {
        if from == to {
            return;
        }
        if let Some(b) = to {
            self.counts[usize::from(b)] += 1;
            if self.top.is_none_or(|t| b > t) {
                self.top = Some(b);
            }
        }
        if let Some(b) = from {
            let c = &mut self.counts[usize::from(b)];
            *c = c.saturating_sub(1);
            if *c == 0 && self.top == Some(b) {
                // At most BUCKETS steps: constant time.
                self.top = (0..b).rev().find(|&i| self.counts[usize::from(i)] > 0);
            }
        }
    }

    /// A bound on every counted weight (0 when none is counted).
    #[inline]
    pub(crate) fn bound(&self) -> f64 {
        self.top.map_or(0.0, edge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_within_twice_the_largest_weight_and_falls_when_it_leaves() {
        let mut b = WeightBound::default();
        let small = bucket_of(2.4);
        b.shift(None, small);
        b.shift(None, small);
        assert_eq!(b.bound(), 4.0);
        let huge = bucket_of(1.15 * f64::from(u32::MAX));
        b.shift(None, huge);
        assert!(b.bound() >= 1.15 * f64::from(u32::MAX));
        b.shift(huge, None);
        assert_eq!(b.bound(), 4.0, "the bound falls back");
        b.shift(small, bucket_of(0.3));
        assert_eq!(b.bound(), 4.0, "one weight still in the top bucket");
        b.shift(small, None);
        assert_eq!(b.bound(), 0.5);
    }

    #[test]
    fn every_weight_is_below_its_bucket_edge() {
        for w in [
            1e-300, 1e-20, 0.12, 0.5, 1.0, 1.99, 2.0, 3.7, 4.0, 1e12, 1e30, 1e300,
        ] {
            let b = bucket_of(w).unwrap_or(0);
            assert!(w < edge(b) || edge(b).is_infinite(), "{w}");
            let clamped = b == 0 || edge(b).is_infinite();
            assert!(
                clamped || w >= edge(b) / 2.0,
                "{w} is within 2× of the edge"
            );
        }
        assert_eq!(bucket_of(0.0), None);
        assert_eq!(bucket_of(f64::NAN), None);
        assert_eq!(bucket_of(-1.0), None);
    }
}
