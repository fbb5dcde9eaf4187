//! The rate at which the receiver got what was sent: bytes acknowledged by feedback over a
//! sliding window of arrival time. The delay-based rate is cut relative to it and never grows
//! far beyond it.

use std::collections::VecDeque;

/// The window: long enough to hold a few frames of a slow stream, short enough to follow a
/// capacity change within a second.
pub const WINDOW_US: i64 = 500_000;

/// Arrivals in the window.
#[derive(Debug, Default)]
pub struct AckedBitrate {
    /// (arrival µs on the receiver's clock, bytes), in arrival order as reported.
    packets: VecDeque<(i64, usize)>,
    bytes: usize,
    /// The latest arrival seen (feedback may report packets out of arrival order).
    newest: Option<i64>,
    /// The arrivals that are the window's earliest once those reported before them leave it,
    /// with their place in the order reported: (place, arrival µs, bytes), place and arrival
    /// increasing. Its front is the earliest arrival in the window, without a walk over the
    /// window at each feedback (a hundred subscribers' feedback comes 1,700 times a second).
    earliest: VecDeque<(u64, i64, usize)>,
    /// Packets taken and dropped from the window so far: the places of the first and of the
    /// next.
    dropped: u64,
    taken: u64,
}

impl AckedBitrate {
    /// A packet of `size` bytes arrived at `arrival_us`.
    pub fn handle_packet(&mut self, arrival_us: i64, size: usize) {
        self.packets.push_back((arrival_us, size));
        self.bytes += size;
        while self
            .earliest
            .back()
            .is_some_and(|&(_, at, _)| at >= arrival_us)
        {
            self.earliest.pop_back();
        }
        self.earliest.push_back((self.taken, arrival_us, size));
        self.taken += 1;
        let newest = self.newest.map_or(arrival_us, |n| n.max(arrival_us));
        self.newest = Some(newest);
        while let Some(&(at, size)) = self.packets.front() {
            if newest - at <= WINDOW_US {
                break;
            }
            self.packets.pop_front();
            self.bytes -= size;
            if self
                .earliest
                .front()
                .is_some_and(|&(place, _, _)| place == self.dropped)
            {
                self.earliest.pop_front();
            }
            self.dropped += 1;
        }
    }

    /// Bits per second over the window; None until it spans at least a tenth of a window.
    /// The earliest packet's bytes are not counted: they arrived at the span's start, not
    /// within it (n packets are n - 1 intervals apart).
    pub fn bitrate(&self) -> Option<f64> {
        let &(_, first, first_bytes) = self.earliest.front()?;
        let span = self.newest? - first;
        if span < WINDOW_US / 10 {
            return None;
        }
        Some((self.bytes - first_bytes) as f64 * 8.0 * 1e6 / span as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_over_the_window() {
        let mut a = AckedBitrate::default();
        assert_eq!(a.bitrate(), None);
        // 1000 bytes every 10 ms: 800 kbit/s.
        for i in 0..200 {
            a.handle_packet(i * 10_000, 1000);
        }
        let r = a.bitrate().unwrap();
        assert!((r - 800_000.0).abs() / 800_000.0 < 0.03, "{r}");
        // Halved: 1000 bytes every 20 ms; after a window the rate follows.
        for i in 0..50 {
            a.handle_packet(2_000_000 + i * 20_000, 1000);
        }
        let r = a.bitrate().unwrap();
        assert!((r - 400_000.0).abs() / 400_000.0 < 0.05, "{r}");
    }

    /// Six packets over a window of a stream of 12 a second: five intervals between them. The
    /// first one's bytes arrived before the span starts; counted, they overstated the rate by
    /// a fifth, and a cut to 85% of it stayed above the link.
    #[test]
    fn a_slow_stream_is_not_overstated_by_its_first_packet() {
        let mut a = AckedBitrate::default();
        // 1000 bytes every 100 ms: 80 kbit/s.
        for i in 0..30 {
            a.handle_packet(i * 100_000, 1000);
        }
        let r = a.bitrate().unwrap();
        assert!((r - 80_000.0).abs() / 80_000.0 < 0.01, "{r}");
    }

    proptest::proptest! {
        /// Whatever the order feedback reports arrivals in, the rate is the window's bytes
        /// but the earliest arrival's over the span from it to the newest.
        #[test]
        fn the_span_starts_at_the_earliest_arrival_in_the_window(
            steps in proptest::collection::vec((-30_000i64..60_000, 1usize..1500), 1..400),
        ) {
            let mut a = AckedBitrate::default();
            let mut at = 1_000_000i64;
            for (step, size) in steps {
                at += step;
                a.handle_packet(at, size);
                let first = a.packets.iter().map(|p| p.0).min().unwrap();
                // Of the packets that arrived then, the last reported is the one kept.
                let first_bytes = a.packets.iter().rev().find(|p| p.0 == first).unwrap().1;
                let span = a.newest.unwrap() - first;
                let expected = (span >= WINDOW_US / 10)
                    .then(|| (a.bytes - first_bytes) as f64 * 8.0 * 1e6 / span as f64);
                proptest::prop_assert_eq!(a.bitrate(), expected);
            }
        }
    }
}
