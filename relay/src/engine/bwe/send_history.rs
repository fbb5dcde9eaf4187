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

/// How long a sent packet is remembered at least: several times as long as feedback takes to
/// come (every 50-100 ms, plus the way back).
pub const KEEP: Duration = Duration::from_secs(1);
/// Packets remembered at first: a second of a 2 Mbit/s subscriber's video and audio. 4 KiB,
/// taken at its first packet.
pub const HISTORY_START: usize = 256;
/// Packets remembered at most: a second at 1,000 packets/s (8 Mbit/s of video). 16 KiB. The
/// history doubles toward this only while the packet it would forget was sent less than
/// [`KEEP`] ago, so a subscriber of a few hundred packets a second keeps the 4 KiB it started
/// with and never allocates again.
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

/// The packets sent on one transport in the last [`KEEP`], or the last [`HISTORY`] of them if
/// fewer, and perhaps a few more.
#[derive(Debug, Default)]
pub struct SendHistory {
    /// `packets[i]` is sequence number `first + i`.
    packets: VecDeque<Sent>,
    /// Packets kept before the oldest goes: [`HISTORY_START`], doubled up to [`HISTORY`] while
    /// that would forget a packet sent less than [`KEEP`] ago.
    limit: usize,
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
        if self.limit == 0 {
            self.limit = HISTORY_START;
            self.packets.reserve_exact(HISTORY_START);
        }
        let epoch = *self.epoch.get_or_insert(now);
        // Seconds and microseconds apart: no 128-bit arithmetic on the per-copy path.
        let since = now.saturating_duration_since(epoch);
        let at_us = since.as_secs() * 1_000_000 + u64::from(since.subsec_micros());
        if self.packets.len() >= self.limit {
            // At the bound the oldest goes whatever its age: no need to read it (a cache line
            // apart from the newest, on the per-copy path).
            let grow = self.limit < HISTORY
                && self.packets.front().is_some_and(|oldest| {
                    at_us.saturating_sub(oldest.at_us) < KEEP.as_micros() as u64
                });
            if grow {
                self.limit = (self.limit * 2).min(HISTORY);
                self.packets.reserve_exact(self.limit - self.packets.len());
            } else {
                self.packets.pop_front();
                self.first += 1;
            }
        }
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

    /// Sends `n` packets `gap` apart from `t0`; returns when the last left.
    fn send_every(h: &mut SendHistory, t0: Instant, gap: Duration, n: u32) -> Instant {
        let mut at = t0;
        for i in 0..n {
            at = t0 + gap * i;
            h.handle_sent(at, 1200, None);
        }
        at
    }

    /// Which of `sequences` feedback still finds.
    fn found(h: &mut SendHistory, sequences: &[i64]) -> Vec<i64> {
        let statuses: Vec<PacketStatus> = sequences
            .iter()
            .map(|&s| status(s as u16, Some(1)))
            .collect();
        let mut out = Vec::new();
        h.handle_feedback(&statuses, &mut out);
        out.iter().map(|r| r.sequence).collect()
    }

    #[test]
    fn a_subscriber_of_200_packets_a_second_keeps_a_second_in_the_room_it_started_with() {
        let mut h = SendHistory::default();
        // Ten seconds at 200 packets/s.
        send_every(&mut h, Instant::now(), Duration::from_millis(5), 2000);
        assert_eq!(h.limit, HISTORY_START);
        assert!(
            h.packets.capacity() < 2 * HISTORY_START,
            "{}",
            h.packets.capacity()
        );
        // The last second's packets are there, the one sent 1.3 s before the last is not.
        assert_eq!(found(&mut h, &[1745, 1800, 1999]), [1745, 1800, 1999]);
        assert!(found(&mut h, &[1739]).is_empty());
    }

    #[test]
    fn a_faster_subscriber_keeps_a_second_up_to_the_bound() {
        // 1,000 packets/s: the history grows to hold a second.
        let mut h = SendHistory::default();
        send_every(&mut h, Instant::now(), Duration::from_millis(1), 3000);
        assert_eq!(h.limit, HISTORY);
        assert_eq!(found(&mut h, &[2000, 2999]), [2000, 2999]);
        // 4,000 packets/s: no more than the bound, so a quarter of a second.
        let mut h = SendHistory::default();
        send_every(&mut h, Instant::now(), Duration::from_micros(250), 8000);
        assert_eq!((h.limit, h.packets.len()), (HISTORY, HISTORY));
        assert_eq!(found(&mut h, &[8000 - HISTORY as i64, 7999]), [6976, 7999]);
        assert!(found(&mut h, &[6975]).is_empty());
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
