//! How long packets spend inside the relay: a fixed-size log-linear histogram of delays in
//! microseconds, cheap enough to update for every forwarded copy.
//!
//! The I/O layer measures the delay (from the kernel's receipt of an ingress datagram to the
//! kernel's acceptance of the copies made from it) and records it here; the histogram only
//! counts. Buckets are exact below 16 µs and then split each power of two into eight, so a
//! quantile read from it is at most 12.5% above the true value. Counts only grow, so the
//! delays of a time window are the difference of two snapshots ([`DelayHistogram::since`]).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Values below this have a bucket each.
const LINEAR: u64 = 16;
/// log2 of [`LINEAR`].
const LINEAR_BITS: u32 = 4;
/// Sub-buckets per power of two above [`LINEAR`] (as a power of two).
const SUB_BITS: u32 = 3;
/// Buckets stop at 2^24 µs: the last one holds everything from 15.7 s up.
const MAX_BITS: u32 = 24;
/// Number of buckets.
const BUCKETS: usize = LINEAR as usize + (((MAX_BITS - LINEAR_BITS) as usize) << SUB_BITS);

/// Counts of delays in microseconds, by log-linear bucket.
#[derive(Clone, PartialEq, Eq)]
pub struct DelayHistogram {
    counts: Box<[u64; BUCKETS]>,
}

impl Default for DelayHistogram {
    fn default() -> Self {
        DelayHistogram {
            counts: Box::new([0; BUCKETS]),
        }
    }
}

impl std::fmt::Debug for DelayHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayHistogram")
            .field("count", &self.count())
            .field("p50_us", &self.quantile(0.5))
            .field("p99_us", &self.quantile(0.99))
            .field("max_us", &self.quantile(1.0))
            .finish()
    }
}

/// The bucket that holds `us`.
fn bucket_of(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let octave = 63 - us.leading_zeros();
    if octave >= MAX_BITS {
        return BUCKETS - 1;
    }
    let sub = (us >> (octave - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    LINEAR as usize + (((octave - LINEAR_BITS) as usize) << SUB_BITS) + sub as usize
}

/// The smallest value in bucket `index`.
fn lower_bound(index: usize) -> u64 {
    if index < LINEAR as usize {
        return index as u64;
    }
    let above = index - LINEAR as usize;
    let octave = (above >> SUB_BITS) as u32 + LINEAR_BITS;
    let sub = (above & ((1 << SUB_BITS) - 1)) as u64;
    (1 << octave) + (sub << (octave - SUB_BITS))
}

/// The largest value in bucket `index` (the last bucket has none; its lower bound is used).
fn upper_bound(index: usize) -> u64 {
    if index + 1 >= BUCKETS {
        lower_bound(index)
    } else {
        lower_bound(index + 1) - 1
    }
}

impl DelayHistogram {
    /// Count `n` delays of `us` microseconds.
    pub fn record(&mut self, us: u64, n: u64) {
        let slot = &mut self.counts[bucket_of(us)];
        *slot = slot.saturating_add(n);
    }

    /// Delays counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The delay (µs) that a fraction `q` of the counted ones do not exceed, as the upper
    /// bound of its bucket; 0 when nothing was counted.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        // The rank of the q-th value, 1-based; at least the first.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper_bound(i);
            }
        }
        upper_bound(BUCKETS - 1)
    }

    /// Add another histogram's counts (another core's).
    pub fn merge(&mut self, other: &DelayHistogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    /// The histogram as Prometheus reads one: for each of `bounds` (µs), moved up to the
    /// upper bound of the bucket that holds it so that the counts are exact, that bound and
    /// how many values do not exceed it; the last pair is the total at the largest bound.
    pub fn cumulative(&self, bounds: &[u64]) -> Vec<(u64, u64)> {
        let mut out = Vec::with_capacity(bounds.len());
        for &b in bounds {
            let last = bucket_of(b);
            let below: u64 = self.counts[..=last].iter().sum();
            out.push((upper_bound(last), below));
        }
        out
    }

    /// An estimate of the values' sum (µs): each counted at the middle of its bucket.
    pub fn sum_estimate(&self) -> u64 {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, &c)| c.saturating_mul((lower_bound(i) + upper_bound(i)) / 2))
            .fold(0u64, u64::saturating_add)
    }

    /// What was counted after `earlier`, a snapshot of the same histogram.
    pub fn since(&self, earlier: &DelayHistogram) -> DelayHistogram {
        let mut out = self.clone();
        for (a, b) in out.counts.iter_mut().zip(earlier.counts.iter()) {
            *a = a.saturating_sub(*b);
        }
        out
    }
}

/// Serialized as `[[lower_bound_us, count], …]` for the buckets that counted something.
impl Serialize for DelayHistogram {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            self.counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| (lower_bound(i), *c)),
        )
    }
}

impl<'de> Deserialize<'de> for DelayHistogram {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(u64, u64)>::deserialize(deserializer)?;
        let mut h = DelayHistogram::default();
        for (us, count) in pairs {
            h.record(us, count);
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        assert_eq!(BUCKETS, 176);
        for i in 0..BUCKETS - 1 {
            assert_eq!(upper_bound(i) + 1, lower_bound(i + 1), "bucket {i}");
            assert_eq!(bucket_of(lower_bound(i)), i);
            assert_eq!(bucket_of(upper_bound(i)), i);
            // Relative width stays within 1/8 above the linear part.
            let (lo, hi) = (lower_bound(i), upper_bound(i));
            assert!(hi - lo <= lo / 8, "bucket {i}: {lo}..={hi}");
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn cumulative_counts_are_exact_at_bucket_bounds() {
        let mut h = DelayHistogram::default();
        h.record(5, 2);
        h.record(100, 3);
        h.record(1000, 1);
        h.record(20_000, 4);
        let c = h.cumulative(&[10, 100, 1000, 10_000, 100_000]);
        assert_eq!(c[0], (10, 2));
        // 100 lands in a bucket that ends at 103: the bound says so, and the count is exact.
        assert_eq!(c[1], (upper_bound(bucket_of(100)), 5));
        assert!(c[1].0 >= 100 && c[1].0 < 110);
        assert_eq!(c[2].1, 6);
        assert_eq!(c[3].1, 6);
        assert_eq!(c[4].1, 10);
        let sum = h.sum_estimate();
        let exact = 5 * 2 + 100 * 3 + 1000 + 20_000 * 4;
        assert!(sum.abs_diff(exact) * 10 < exact, "{sum} for {exact}");
        assert_eq!(bucket_of(1 << MAX_BITS), BUCKETS - 1);
        assert_eq!(bucket_of(lower_bound(BUCKETS - 1) - 1), BUCKETS - 2);
    }

    #[test]
    fn quantiles_are_within_a_bucket_of_the_truth() {
        let mut h = DelayHistogram::default();
        assert_eq!(h.quantile(0.99), 0);
        for us in 1..=10_000u64 {
            h.record(us, 1);
        }
        assert_eq!(h.count(), 10_000);
        for (q, truth) in [
            (0.5, 5_000u64),
            (0.99, 9_900),
            (0.999, 9_990),
            (1.0, 10_000),
        ] {
            let got = h.quantile(q);
            assert!(
                got >= truth && got <= truth + truth / 8,
                "q{q}: {got} for {truth}"
            );
        }
        assert_eq!(h.quantile(0.0), 1);
    }

    #[test]
    fn windows_are_differences_and_cores_merge() {
        let mut h = DelayHistogram::default();
        h.record(100, 1_000);
        let before = h.clone();
        h.record(3_000, 10);
        let window = h.since(&before);
        assert_eq!(window.count(), 10);
        assert!(window.quantile(0.5) >= 3_000);
        let mut all = before.clone();
        all.merge(&window);
        assert_eq!(all, h);
    }

    #[test]
    fn serializes_sparse_and_reads_back() {
        let mut h = DelayHistogram::default();
        h.record(7, 2);
        h.record(1_000, 5);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, "[[7,2],[960,5]]");
        let back: DelayHistogram = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
        assert!(serde_json::from_str::<DelayHistogram>("[[1,2,3]]").is_err());
        assert!(serde_json::from_str::<DelayHistogram>("{}").is_err());
    }
}
