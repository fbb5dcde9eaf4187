//! What the relay sent on one transport, by transport-wide sequence number: when and how much,
//! so that a subscriber's feedback (which names packets by number and says when they arrived)
//! becomes send-time/arrival-time pairs for the estimator.
//!
//! The relay numbers its own packets, one counter per subscriber transport, so numbers are
//! dense and the history is a ring indexed by the counter; the 16-bit numbers in feedback are
//! unwrapped against the newest sent.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::engine::rtcp::twcc::PacketStatus;

/// Packets remembered: a second at 1,000 packets/s (8 Mbit/s of video), several times as long
/// as feedback takes to come (every 50-100 ms). 16 KiB per subscriber, taken at its first
/// packet so that sending never allocates after.
pub const HISTORY: usize = 1024;

/// A sent packet, as the estimator sees it once feedback names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketResult {
    /// Its transport-wide sequence number, unwrapped.
    pub sequence: i64,
    /// When the relay sent it.
    pub sent_at: Instant,
    /// Its size on the wire, bytes.
    pub size: usize,
    /// When it arrived, µs on the receiver's clock; None if reported lost.
    pub arrival_us: Option<i64>,
    /// The probe cluster it belonged to, if any.
    pub probe: Option<u32>,
}

/// 16 bytes: the send time as microseconds since the history's first packet rather than an
/// `Instant` (16 bytes of its own), as the history is kept for every subscriber.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// Microseconds after [`SendHistory::epoch`].
    at_us: u64,
    size: u16,
    /// The probe cluster, 0 for none.
    probe: u32,
    /// Reported as arrived already: later reports of it change nothing.
    acked: bool,
    /// Reported at all (as lost or arrived), for loss accounting.
    reported: bool,
}

/// The last [`HISTORY`] packets sent on one transport.
#[derive(Debug, Default)]
pub struct SendHistory {
    /// `packets[i]` is sequence number `first + i`.
    packets: VecDeque<Sent>,
    first: i64,
    /// When the first packet was sent: what the send times count from.
    epoch: Option<Instant>,
}

impl SendHistory {
    /// The sequence number the next packet gets (its low 16 bits go in the header extension).
    pub fn next_sequence(&self) -> i64 {
        self.first + self.packets.len() as i64
    }

    /// A packet of `size` bytes left at `now` with the next sequence number, which is
    /// returned.
    pub fn handle_sent(&mut self, now: Instant, size: usize, probe: Option<u32>) -> i64 {
        let sequence = self.next_sequence();
        if self.packets.capacity() == 0 {
            self.packets.reserve_exact(HISTORY);
        }
        if self.packets.len() == HISTORY {
            self.packets.pop_front();
            self.first += 1;
        }
        let epoch = *self.epoch.get_or_insert(now);
        // Seconds and microseconds apart: no 128-bit arithmetic on the per-copy path.
        let since = now.saturating_duration_since(epoch);
        let at_us = since.as_secs() * 1_000_000 + u64::from(since.subsec_micros());
        self.packets.push_back(Sent {
            at_us,
            size: size.min(usize::from(u16::MAX)) as u16,
            probe: probe.unwrap_or(0),
            acked: false,
            reported: false,
        });
        sequence
    }

    /// The unwrapped number closest to the newest sent whose low 16 bits are `seq`.
    fn unwrap(&self, seq: u16) -> i64 {
        let newest = self.next_sequence() - 1;
        let diff = (i64::from(seq) - (newest & 0xffff) + 0x8000).rem_euclid(0x10000) - 0x8000;
        newest + diff
    }

    /// Turn one feedback message's statuses into results, appended to `out`: packets reported
    /// arrived for the first time, and packets reported lost for the first time. Numbers the
    /// history does not hold (never sent, or too old) are skipped.
    pub fn handle_feedback(&mut self, statuses: &[PacketStatus], out: &mut Vec<PacketResult>) {
        let Some(epoch) = self.epoch else {
            // Nothing sent yet: nothing to name.
            return;
        };
        for status in statuses {
            let sequence = self.unwrap(status.sequence);
            let Some(i) = usize::try_from(sequence - self.first).ok() else {
                continue;
            };
            let Some(sent) = self.packets.get_mut(i) else {
                continue;
            };
            if sent.acked || (sent.reported && status.arrival_us.is_none()) {
                continue;
            }
            sent.reported = true;
            sent.acked = status.arrival_us.is_some();
            out.push(PacketResult {
                sequence,
                sent_at: epoch + Duration::from_micros(sent.at_us),
                size: usize::from(sent.size),
                arrival_us: status.arrival_us,
                probe: (sent.probe != 0).then_some(sent.probe),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(sequence: u16, arrival_us: Option<i64>) -> PacketStatus {
        PacketStatus {
            sequence,
            arrival_us,
        }
    }

    #[test]
    fn feedback_names_packets_across_the_wrap_once_each() {
        let t0 = Instant::now();
        let mut h = SendHistory::default();
        for i in 0..65_540u32 {
            let at = t0 + Duration::from_micros(u64::from(i));
            assert_eq!(
                h.handle_sent(at, 1000 + (i % 7) as usize, None),
                i64::from(i)
            );
        }
        let mut out = Vec::new();
        // 65535 and 0..=2 (65536..=65538 unwrapped), one lost.
        h.handle_feedback(
            &[
                status(65_535, Some(10)),
                status(0, None),
                status(1, Some(30)),
                status(2, Some(40)),
            ],
            &mut out,
        );
        let seqs: Vec<i64> = out.iter().map(|r| r.sequence).collect();
        assert_eq!(seqs, [65_535, 65_536, 65_537, 65_538]);
        assert_eq!(out[1].arrival_us, None);
        assert_eq!(out[2].sent_at, t0 + Duration::from_micros(65_537));
        assert_eq!(out[2].size, 1000 + (65_537 % 7) as usize);
        // Reported again: only the one that was lost and now arrived counts.
        out.clear();
        h.handle_feedback(&[status(0, Some(20)), status(1, Some(30))], &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].sequence, out[0].arrival_us), (65_536, Some(20)));
        // Lost again after arriving, or lost twice: nothing.
        out.clear();
        h.handle_feedback(
            &[status(0, None), status(3, None), status(3, None)],
            &mut out,
        );
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn what_was_never_sent_or_is_forgotten_is_skipped() {
        let t0 = Instant::now();
        let mut h = SendHistory::default();
        let mut out = Vec::new();
        h.handle_feedback(&[status(0, Some(1))], &mut out);
        assert!(out.is_empty(), "nothing sent yet");
        for _ in 0..HISTORY + 10 {
            h.handle_sent(t0, 100, Some(4));
        }
        h.handle_feedback(&[status(5, Some(1)), status(20, Some(2))], &mut out);
        assert_eq!(out.len(), 1, "5 is gone from the history, 20 is there");
        assert_eq!(out[0].probe, Some(4));
        // A number ahead of what was sent.
        out.clear();
        h.handle_feedback(&[status((HISTORY + 20) as u16, Some(3))], &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn send_times_come_back_to_the_microsecond_in_sixteen_bytes_each() {
        assert_eq!(std::mem::size_of::<Sent>(), 16);
        let t0 = Instant::now();
        let mut h = SendHistory::default();
        let sent: Vec<Instant> = (0..3u64)
            .map(|i| t0 + Duration::from_nanos(1_500_250 * i + 999))
            .collect();
        for at in &sent {
            h.handle_sent(*at, 1200, None);
        }
        let mut out = Vec::new();
        h.handle_feedback(
            &[status(0, Some(1)), status(1, Some(2)), status(2, None)],
            &mut out,
        );
        assert_eq!(out.len(), 3);
        for (r, at) in out.iter().zip(&sent) {
            assert!(
                *at - r.sent_at < Duration::from_micros(1),
                "{:?}",
                *at - r.sent_at
            );
        }
        // Differences between send times, which the estimator uses, keep their microseconds.
        assert_eq!(
            out[2].sent_at - out[1].sent_at,
            Duration::from_micros(1_500)
        );
    }
}
