//! One-way latency distribution of the packets a run delivered, kept in an HDR histogram
//! (microseconds, 3 significant digits) per receiving peer and merged at the end.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies recorded by one receiver, or merged from several.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

/// Percentiles of a [`Latency`], in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Packets recorded.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

impl Latency {
    /// Longest latency kept apart; longer ones are recorded as this (a minute).
    const MAX_US: u64 = 60_000_000;

    /// An empty distribution.
    pub fn new() -> Latency {
        Latency {
            // Valid bounds (low 1 ≥ 1, high ≥ 2·low, 3 digits ≤ 5) cannot fail.
            hist: Histogram::new_with_bounds(1, Self::MAX_US, 3).expect("histogram bounds"),
        }
    }

    /// Record one packet's latency in nanoseconds.
    pub fn record_ns(&mut self, ns: u64) {
        self.hist
            .saturating_record((ns / 1000).clamp(1, Self::MAX_US));
    }

    /// Add another receiver's distribution.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    /// Percentiles of a server's own delay histogram (its buckets' upper bounds).
    pub fn summary_of(h: &relay::stats::DelayHistogram) -> LatencySummary {
        let q = |p: f64| h.quantile(p) as f64;
        LatencySummary {
            count: h.count(),
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: q(1.0),
        }
    }

    /// Percentiles.
    pub fn summary(&self) -> LatencySummary {
        if self.hist.is_empty() {
            return LatencySummary::default();
        }
        let q = |p: f64| self.hist.value_at_quantile(p) as f64;
        LatencySummary {
            count: self.hist.len(),
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: self.hist.max() as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        // 1..=1000 µs, split over two receivers.
        for us in 1..=1000u64 {
            if us % 2 == 0 { &mut a } else { &mut b }.record_ns(us * 1000);
        }
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() <= 1.0, "{s:?}");
        assert!((s.p99_us - 990.0).abs() <= 1.0, "{s:?}");
        assert!((s.p999_us - 999.0).abs() <= 1.0, "{s:?}");
        assert!((s.max_us - 1000.0).abs() <= 1.0, "{s:?}");
    }

    #[test]
    fn a_servers_histogram_reads_as_the_same_summary() {
        let mut h = relay::stats::DelayHistogram::default();
        h.record(100, 99);
        h.record(5_000, 1);
        let s = Latency::summary_of(&h);
        assert_eq!(s.count, 100);
        // Buckets are reported by their upper bounds: 100 µs lies in 96..=103, 5,000 µs in
        // 4,608..=5,119.
        assert_eq!(s.p50_us, 103.0);
        assert_eq!(s.p99_us, 103.0);
        assert_eq!(s.max_us, 5_119.0);
        assert_eq!(
            Latency::summary_of(&Default::default()),
            LatencySummary::default()
        );
    }

    #[test]
    fn empty_and_extreme_values() {
        assert_eq!(Latency::new().summary(), LatencySummary::default());
        let mut l = Latency::new();
        l.record_ns(0);
        l.record_ns(u64::MAX);
        let s = l.summary();
        assert_eq!(s.count, 2);
        assert!(s.max_us >= 59_000_000.0);
    }
}
