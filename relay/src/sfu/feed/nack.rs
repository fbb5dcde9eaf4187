//! Loss detection on a publisher's stream and the generic NACKs (RFC 4585 §6.2.1) that ask for
//! the missing packets again.
//!
//! A gap in the sequence numbers puts each missing number on a list. It is asked for at the
//! next poll, then again every retry interval (about one round trip: an earlier retry would
//! cross the repair on its way), until it arrives, has been asked for [`MAX_TRIES`] times, or
//! is older than [`MAX_AGE`], past which no jitter buffer still waits for it. A jump too long
//! to be loss is an encoder restart and asks for nothing.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How often one packet is asked for at most.
pub const MAX_TRIES: u8 = 10;

/// How long after it went missing a packet is still worth asking for.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// Retry interval while no round-trip time is known.
pub const DEFAULT_RETRY: Duration = Duration::from_millis(100);

/// At most this many packets are tracked as missing; beyond it the oldest are given up.
pub const MAX_MISSING: usize = 512;

/// A forward jump longer than this is a restart, not loss.
const MAX_GAP: u64 = 3000;

/// What an arriving packet was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The newest so far (possibly after a gap, now on the missing list).
    New,
    /// One that was missing: a repair or a late packet that fills a gap.
    Recovered {
        /// Whether it had been asked for.
        requested: bool,
    },
    /// Seen before, or older than anything tracked.
    Old,
}

#[derive(Debug, Clone, Copy)]
struct Missing {
    /// Extended sequence number.
    seq: u64,
    since: Instant,
    /// When it was last asked for, and how often.
    asked: Option<Instant>,
    tries: u8,
}

/// The NACK state of one publisher stream.
#[derive(Debug, Clone)]
pub struct NackGenerator {
    /// Highest sequence number seen, extended past 16 bits; None before the first packet.
    highest: Option<u64>,
    /// In increasing sequence order.
    missing: VecDeque<Missing>,
    retry: Duration,
    rtt: Option<Duration>,
}

impl Default for NackGenerator {
    fn default() -> Self {
        NackGenerator {
            highest: None,
            missing: VecDeque::new(),
            retry: DEFAULT_RETRY,
            rtt: None,
        }
    }
}

impl NackGenerator {
    /// Account for packet `seq` arriving at `now`.
    pub fn handle_packet(&mut self, now: Instant, seq: u16) -> Arrival {
        let Some(highest) = self.highest else {
            self.highest = Some((1 << 32) + u64::from(seq));
            return Arrival::New;
        };
        let delta = seq.wrapping_sub(highest as u16) as i16;
        let ext = highest.wrapping_add_signed(i64::from(delta));
        if delta > 0 {
            let gap = ext - highest - 1;
            if gap > MAX_GAP {
                self.missing.clear();
            } else {
                if self.missing.len() + gap as usize > MAX_MISSING {
                    self.missing.clear();
                }
                for s in (highest + 1)..ext.min(highest + 1 + MAX_MISSING as u64) {
                    self.missing.push_back(Missing {
                        seq: s,
                        since: now,
                        asked: None,
                        tries: 0,
                    });
                }
            }
            self.highest = Some(ext);
            return Arrival::New;
        }
        match self
            .missing
            .binary_search_by_key(&ext, |m| m.seq)
            .ok()
            .and_then(|i| self.missing.remove(i))
        {
            Some(m) => Arrival::Recovered {
                requested: m.tries > 0,
            },
            None => Arrival::Old,
        }
    }

    /// Set the retry interval from a measured round-trip time: a quarter more than it, and
    /// at least 10 ms. A repair comes back a little later than one round trip (the publisher
    /// paces it), and a publisher ignores a request repeated within its own estimate of the
    /// round trip, so a retry at exactly one round trip would cross the repair or be ignored.
    pub fn set_rtt(&mut self, rtt: Duration) {
        self.retry = (rtt + rtt / 4).max(Duration::from_millis(10));
        self.rtt = Some(rtt);
    }

    /// How long after it went missing a packet comes back when either the first request or
    /// its repair was lost: one retry interval, then a round trip (the retry interval stands
    /// in for the round trip while none is measured).
    pub fn repair_time(&self) -> Duration {
        self.retry + self.rtt.unwrap_or(self.retry)
    }

    /// When [`NackGenerator::poll_nacks`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.missing
            .iter()
            .map(|m| match m.asked {
                None => m.since,
                Some(at) => (at + self.retry).min(m.since + MAX_AGE),
            })
            .min()
    }

    /// The sequence numbers to ask for now, appended to `out`; gives up on those asked for
    /// too often or too old.
    pub fn poll_nacks(&mut self, now: Instant, out: &mut Vec<u16>) {
        let retry = self.retry;
        self.missing.retain_mut(|m| {
            if now.saturating_duration_since(m.since) >= MAX_AGE || m.tries >= MAX_TRIES {
                return false;
            }
            if m.asked.is_none_or(|at| now >= at + retry) {
                m.asked = Some(now);
                m.tries += 1;
                out.push(m.seq as u16);
            }
            true
        });
    }

    /// Forget the stream (renegotiated with a new SSRC).
    pub fn reset(&mut self) {
        self.highest = None;
        self.missing.clear();
    }

    /// Packets on the missing list.
    pub fn missing(&self) -> usize {
        self.missing.len()
    }
}

/// Pack sequence numbers into generic NACK entries (PID, BLP): each entry covers its PID and
/// the 16 numbers after it. `seqs` must be in increasing order (modulo wrap) as
/// [`NackGenerator::poll_nacks`] gives them.
pub fn pack(seqs: &[u16], out: &mut Vec<(u16, u16)>) {
    for &s in seqs {
        if let Some((pid, blp)) = out.last_mut() {
            let d = s.wrapping_sub(*pid);
            if (1..=16).contains(&d) {
                *blp |= 1 << (d - 1);
                continue;
            }
        }
        out.push((s, 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nacks(g: &mut NackGenerator, now: Instant) -> Vec<u16> {
        let mut out = vec![];
        g.poll_nacks(now, &mut out);
        out
    }

    #[test]
    fn a_second_round_of_repair_takes_a_retry_and_a_round_trip() {
        let mut g = NackGenerator::default();
        assert_eq!(g.repair_time(), DEFAULT_RETRY * 2);
        g.set_rtt(Duration::from_millis(104));
        assert_eq!(g.repair_time(), Duration::from_millis(130 + 104));
    }

    #[test]
    fn a_gap_is_asked_for_at_once_then_every_retry_until_it_arrives() {
        let t0 = Instant::now();
        let mut g = NackGenerator::default();
        assert_eq!(g.handle_packet(t0, 10), Arrival::New);
        assert_eq!(g.poll_timeout(), None);
        assert_eq!(g.handle_packet(t0, 13), Arrival::New);
        assert_eq!(g.poll_timeout(), Some(t0));
        assert_eq!(nacks(&mut g, t0), vec![11, 12]);
        assert_eq!(g.poll_timeout(), Some(t0 + DEFAULT_RETRY));
        assert!(nacks(&mut g, t0 + Duration::from_millis(50)).is_empty());
        let t1 = t0 + DEFAULT_RETRY;
        assert_eq!(nacks(&mut g, t1), vec![11, 12]);
        assert_eq!(
            g.handle_packet(t1, 12),
            Arrival::Recovered { requested: true }
        );
        assert_eq!(nacks(&mut g, t1 + DEFAULT_RETRY), vec![11]);
        // A duplicate and a packet from long ago are old.
        assert_eq!(g.handle_packet(t1, 12), Arrival::Old);
        assert_eq!(g.handle_packet(t1, 2), Arrival::Old);
    }

    #[test]
    fn reordering_fills_the_gap_before_anything_is_asked() {
        let t0 = Instant::now();
        let mut g = NackGenerator::default();
        g.handle_packet(t0, 1);
        g.handle_packet(t0, 3);
        assert_eq!(
            g.handle_packet(t0, 2),
            Arrival::Recovered { requested: false }
        );
        assert_eq!(g.poll_timeout(), None);
    }

    #[test]
    fn gives_up_after_max_tries_or_max_age() {
        let t0 = Instant::now();
        let mut g = NackGenerator::default();
        g.set_rtt(Duration::from_millis(10));
        g.handle_packet(t0, 1);
        g.handle_packet(t0, 3);
        let mut asked = 0;
        let mut t = t0;
        while let Some(at) = g.poll_timeout() {
            t = at;
            asked += nacks(&mut g, t).len();
            assert!(asked <= MAX_TRIES as usize);
        }
        assert_eq!(asked, MAX_TRIES as usize);
        assert!(t < t0 + MAX_AGE);

        let mut g = NackGenerator::default();
        g.set_rtt(Duration::from_millis(320));
        g.handle_packet(t0, 1);
        g.handle_packet(t0, 3);
        let mut tries = 0;
        while let Some(at) = g.poll_timeout() {
            tries += nacks(&mut g, at).len();
        }
        // Every 400 ms (a quarter over the round trip): at 0, 400 and 800 ms; at 1 s it is
        // too old.
        assert_eq!(tries, 3);
    }

    #[test]
    fn wrap_and_restart() {
        let t0 = Instant::now();
        let mut g = NackGenerator::default();
        g.handle_packet(t0, 65_534);
        g.handle_packet(t0, 1);
        assert_eq!(nacks(&mut g, t0), vec![65_535, 0]);
        // An encoder restart far ahead: not loss, and the old list goes.
        g.handle_packet(t0, 30_000);
        assert_eq!(g.missing(), 0);
        assert_eq!(g.poll_timeout(), None);
    }

    #[test]
    fn the_list_is_bounded() {
        let t0 = Instant::now();
        let mut g = NackGenerator::default();
        g.handle_packet(t0, 0);
        g.handle_packet(t0, 2000);
        assert!(g.missing() <= MAX_MISSING);
        g.handle_packet(t0, 2400);
        assert!(g.missing() <= MAX_MISSING);
    }

    #[test]
    fn packing_into_pid_and_blp() {
        let mut out = vec![];
        pack(&[65_535, 0, 3, 16, 17, 40], &mut out);
        // 65535 covers 0 (bit 0), 3 (bit 3) and 15 after it; 16 is 17 after 65535.
        assert_eq!(out, vec![(65_535, 0b1001), (16, 0b1), (40, 0)]);
    }
}
