//! Which of a subscriber's NACKs the relay answers, and the subscriber's retransmission
//! stream.
//!
//! A receiver asks again when a repair does not come within its own retry interval; a request
//! repeated well within one round trip crosses the repair already on its way, so it is
//! ignored, and no packet is sent more than [`MAX_RESENDS`] times (a subscriber on a link
//! losing most of its packets must not multiply the relay's output).
//!
//! "Well within": a repeat is ignored for 3/4 of the round trip, not all of it. A receiver
//! retries after its own estimate of the round trip, which is about the relay's, so its second
//! request for a repair that was itself lost arrives about one round trip after the relay's
//! resend, as often a little before as after; a gate of a whole round trip would turn away
//! half of those and make each such repair wait one more round.

use std::time::{Duration, Instant};

/// Times one packet is sent again at most.
pub const MAX_RESENDS: u8 = 3;

/// Round-trip time assumed until the subscriber's receiver reports give one.
pub const DEFAULT_RTT: Duration = Duration::from_millis(100);

/// Resends remembered: NACKs for a number this far behind the newest reuse its entry.
const TRACKED: usize = 256;

#[derive(Debug, Clone, Copy)]
struct Resent {
    seq: u16,
    at: Instant,
    count: u8,
}

/// The retransmission state of one subscription.
#[derive(Debug, Clone)]
pub struct Retransmits {
    /// The subscriber's RTX SSRC; None when it did not negotiate RTX (repairs then go out as
    /// the original packet, on the media SSRC).
    pub rtx_ssrc: Option<u32>,
    /// Next sequence number of the RTX stream.
    rtx_seq: u16,
    /// Empty until the first NACK.
    resent: Vec<Option<Resent>>,
    rtt: Duration,
}

impl Retransmits {
    /// A subscription with `rtx_ssrc` (if negotiated) whose RTX stream starts at `rtx_seq`.
    pub fn new(rtx_ssrc: Option<u32>, rtx_seq: u16) -> Self {
        Retransmits {
            rtx_ssrc,
            rtx_seq,
            resent: Vec::new(),
            rtt: DEFAULT_RTT,
        }
    }

    /// A round-trip time measured from the subscriber's receiver reports.
    pub fn set_rtt(&mut self, rtt: Duration) {
        self.rtt = rtt;
    }

    /// The round-trip time in use.
    pub fn rtt(&self) -> Duration {
        self.rtt
    }

    /// Whether outgoing packet `seq` may be sent again now; records it if so.
    pub fn allow(&mut self, now: Instant, seq: u16) -> bool {
        if self.resent.is_empty() {
            self.resent = vec![None; TRACKED];
        }
        let slot = &mut self.resent[seq as usize % TRACKED];
        match slot {
            Some(r) if r.seq == seq => {
                if r.count >= MAX_RESENDS || now.saturating_duration_since(r.at) < self.rtt * 3 / 4
                {
                    return false;
                }
                r.at = now;
                r.count += 1;
            }
            _ => {
                *slot = Some(Resent {
                    seq,
                    at: now,
                    count: 1,
                })
            }
        }
        true
    }

    /// The sequence number for the next packet on the RTX stream.
    pub fn next_rtx_seq(&mut self) -> u16 {
        let s = self.rtx_seq;
        self.rtx_seq = s.wrapping_add(1);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_one_rtt_are_ignored_and_resends_are_bounded() {
        let t0 = Instant::now();
        let mut r = Retransmits::new(Some(9), 100);
        assert!(r.allow(t0, 5));
        assert!(!r.allow(t0 + Duration::from_millis(74), 5));
        assert!(r.allow(t0 + DEFAULT_RTT * 3 / 4, 5));
        assert!(r.allow(t0 + 2 * DEFAULT_RTT, 5));
        // The fourth time, however long after, is refused.
        assert!(!r.allow(t0 + Duration::from_secs(5), 5));
        // Another packet is on its own.
        assert!(r.allow(t0, 6));
        r.set_rtt(Duration::from_millis(20));
        assert!(!r.allow(t0 + Duration::from_millis(14), 6));
        assert!(r.allow(t0 + Duration::from_millis(15), 6));
    }

    #[test]
    fn a_number_that_comes_round_again_is_a_new_packet() {
        let t0 = Instant::now();
        let mut r = Retransmits::new(None, 0);
        for _ in 0..MAX_RESENDS {
            assert!(r.allow(t0 + Duration::from_secs(1), 3));
            r.set_rtt(Duration::ZERO);
        }
        assert!(!r.allow(t0 + Duration::from_secs(1), 3));
        // 65539 mod 65536 later: same slot, different number.
        assert!(r.allow(t0, 3 + TRACKED as u16));
    }

    #[test]
    fn the_rtx_stream_numbers_wrap() {
        let mut r = Retransmits::new(Some(1), 65_535);
        assert_eq!(r.next_rtx_seq(), 65_535);
        assert_eq!(r.next_rtx_seq(), 0);
    }
}
