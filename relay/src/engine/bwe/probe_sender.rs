//! Sending one probe cluster: padding packets spread at the cluster's rate.
//!
//! A cluster's packets must leave at its rate, not at once: the probe estimator divides the
//! bytes by the time between the first and the last send, and compares it with the time
//! between their arrivals. So each packet is due when the bytes before it, at the cluster's
//! rate, have taken their time; the caller sends what is due and waits for the next.

use std::time::{Duration, Instant};

use super::probe::ProbeCluster;

/// Padding in one padding-only probe packet: the most an RTP padding count (one byte) can
/// say. Probes go as retransmissions of recent packets where there are some (about 1200
/// bytes each: a cluster of them is long enough that a shaper's burst allowance does not
/// pass for the path's rate), as padding where not.
pub const PADDING: usize = 255;

/// The cluster being sent.
#[derive(Debug, Clone)]
pub struct ProbeSender {
    cluster: ProbeCluster,
    started: Instant,
    bytes: usize,
    packets: u32,
}

impl ProbeSender {
    /// Start sending `cluster` at `now`.
    pub fn new(now: Instant, cluster: ProbeCluster) -> Self {
        ProbeSender {
            cluster,
            started: now,
            bytes: 0,
            packets: 0,
        }
    }

    /// The cluster's id, for the estimator.
    pub fn cluster(&self) -> u32 {
        self.cluster.id
    }

    /// Whether all of it was sent.
    pub fn done(&self) -> bool {
        self.bytes >= self.cluster.bytes && self.packets >= self.cluster.packets
    }

    /// When the next packet is due; None once done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.done() {
            return None;
        }
        let secs = self.bytes as f64 * 8.0 / self.cluster.bitrate.max(1.0);
        Some(self.started + Duration::from_secs_f64(secs))
    }

    /// Whether a packet is due at `now` (report it with [`ProbeSender::handle_sent`]).
    pub fn poll_packet(&self, now: Instant) -> bool {
        self.poll_timeout().is_some_and(|at| at <= now)
    }

    /// A packet of the cluster, `size` bytes on the wire, was sent.
    pub fn handle_sent(&mut self, size: usize) {
        self.bytes += size;
        self.packets += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKET_SIZE: usize = 300;

    #[test]
    fn packets_leave_at_the_clusters_rate() {
        let t0 = Instant::now();
        // 2 Mbit/s, 20 packets' worth: one every 1.152 ms.
        let cluster = ProbeCluster {
            id: 7,
            bitrate: 2_000_000.0,
            bytes: 20 * PACKET_SIZE,
            packets: 5,
            duration: Duration::from_millis(15),
        };
        let mut s = ProbeSender::new(t0, cluster);
        assert_eq!(s.cluster(), 7);
        assert!(s.poll_packet(t0));
        s.handle_sent(PACKET_SIZE);
        assert!(!s.poll_packet(t0));
        let gap = Duration::from_secs_f64(PACKET_SIZE as f64 * 8.0 / 2_000_000.0);
        assert_eq!(s.poll_timeout(), Some(t0 + gap));
        // Late by three packets' time: those three go at once, then the pace again.
        let late = t0 + gap * 3;
        let mut sent = 0;
        while s.poll_packet(late) {
            s.handle_sent(PACKET_SIZE);
            sent += 1;
        }
        assert_eq!(sent, 3);
        let mut at = late;
        while let Some(next) = s.poll_timeout() {
            at = next;
            assert!(s.poll_packet(at));
            s.handle_sent(PACKET_SIZE);
        }
        assert!(s.done());
        // The last of 20 left 19 packets' time after the first.
        let span = at.duration_since(t0).as_secs_f64();
        assert!((span - 19.0 * gap.as_secs_f64()).abs() < 1e-6, "{span}");
    }
}
