//! One subscriber's view of one feed: SSRC, sequence and timestamp rewriting, and what the
//! sender reports toward that subscriber need.
//!
//! The subscriber must see one continuous stream even when the publisher's stream is replaced
//! (new SSRC after renegotiation, encoder restart with a sequence jump, or a pause). On such a
//! switch the rewriter re-anchors: the next outgoing sequence number follows the last one sent,
//! and the timestamp advances by the wall time that passed, in the feed's clock rate. Between
//! switches the mapping is a fixed offset, so reordering and loss upstream are preserved
//! exactly as they happened.

use std::time::Instant;

use crate::ids::{ParticipantKey, Ssrc};

/// A jump of more than this many sequence numbers on the same SSRC is an encoder restart,
/// not loss (loss bursts are far shorter; reordering far shorter still).
const RESTART_SEQ_JUMP: i32 = 3000;

/// Maps a publisher's sequence numbers and timestamps into a subscriber's continuous stream.
#[derive(Debug, Clone)]
pub struct Rewriter {
    anchored: Option<Anchor>,
    resync: bool,
    /// Highest outgoing sequence number sent and its timestamp.
    last_out_seq: u16,
    last_out_ts: u32,
    last_sent_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    in_ssrc: u32,
    seq_offset: u16,
    ts_offset: u32,
    highest_in_seq: u16,
}

impl Rewriter {
    /// `initial_seq` and `initial_ts` are where the subscriber's stream starts (random, as
    /// RFC 3550 recommends).
    pub fn new(initial_seq: u16, initial_ts: u32) -> Self {
        Rewriter {
            anchored: None,
            resync: false,
            last_out_seq: initial_seq.wrapping_sub(1),
            last_out_ts: initial_ts,
            last_sent_at: None,
        }
    }

    /// Ask for a re-anchor at the next packet (the feed restarted).
    pub fn request_resync(&mut self) {
        self.resync = true;
    }

    /// Outgoing sequence number and timestamp for an incoming packet.
    pub fn rewrite(
        &mut self,
        now: Instant,
        in_ssrc: u32,
        in_seq: u16,
        in_ts: u32,
        clock_rate: u32,
    ) -> (u16, u32) {
        let needs_anchor = match self.anchored {
            None => true,
            Some(a) => {
                let jump = in_seq.wrapping_sub(a.highest_in_seq) as i16 as i32;
                self.resync || a.in_ssrc != in_ssrc || jump.abs() > RESTART_SEQ_JUMP
            }
        };
        if needs_anchor {
            let next_seq = self.last_out_seq.wrapping_add(1);
            let next_ts = match self.last_sent_at {
                // Advance by the real time that passed, at least one tick so the new
                // stream's first frame never shares the old one's last timestamp.
                Some(at) => {
                    let elapsed = now.saturating_duration_since(at).as_secs_f64();
                    let ticks = (elapsed * clock_rate as f64).round() as u32;
                    self.last_out_ts.wrapping_add(ticks.max(1))
                }
                None => self.last_out_ts,
            };
            self.anchored = Some(Anchor {
                in_ssrc,
                seq_offset: next_seq.wrapping_sub(in_seq),
                ts_offset: next_ts.wrapping_sub(in_ts),
                highest_in_seq: in_seq,
            });
            self.resync = false;
        }
        // Just set above when it was None.
        let a = self.anchored.as_mut().expect("anchored");
        let out_seq = in_seq.wrapping_add(a.seq_offset);
        let out_ts = in_ts.wrapping_add(a.ts_offset);
        let newer = (in_seq.wrapping_sub(a.highest_in_seq) as i16) >= 0;
        if newer || needs_anchor {
            a.highest_in_seq = in_seq;
            self.last_out_seq = out_seq;
            self.last_out_ts = out_ts;
            self.last_sent_at = Some(now);
        }
        (out_seq, out_ts)
    }

    /// The last outgoing timestamp and when it was sent (for sender reports).
    pub fn last_sent(&self) -> Option<(u32, Instant)> {
        self.last_sent_at.map(|at| (self.last_out_ts, at))
    }
}

/// A subscription of one participant to one feed.
#[derive(Debug, Clone)]
pub struct Consumer {
    /// The subscriber.
    pub subscriber: ParticipantKey,
    /// The SSRC the subscriber receives this feed with.
    pub ssrc: Ssrc,
    /// Sequence and timestamp mapping.
    pub rewriter: Rewriter,
    /// RTP packets sent (for SR).
    pub packets_sent: u32,
    /// Payload octets sent (for SR).
    pub octets_sent: u32,
    /// Value for the MID header extension in this subscriber's packets.
    pub mid: Option<Vec<u8>>,
}

impl Consumer {
    /// A new subscription starting at a random sequence number and timestamp.
    pub fn new(subscriber: ParticipantKey, ssrc: Ssrc, initial_seq: u16, initial_ts: u32) -> Self {
        Consumer {
            subscriber,
            ssrc,
            rewriter: Rewriter::new(initial_seq, initial_ts),
            packets_sent: 0,
            octets_sent: 0,
            mid: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn continuous_across_ssrc_change_and_restart() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(1000, 50_000);
        // First packet anchors at the initial values.
        assert_eq!(r.rewrite(t0, 1, 200, 9000, 90_000), (1000, 50_000));
        assert_eq!(r.rewrite(t0, 1, 201, 9000, 90_000), (1001, 50_000));
        // Reordered/late packet keeps its place and does not move the high-water mark.
        assert_eq!(r.rewrite(t0, 1, 203, 12000, 90_000), (1003, 53_000));
        assert_eq!(r.rewrite(t0, 1, 202, 12000, 90_000), (1002, 53_000));
        assert_eq!(r.last_sent(), Some((53_000, t0)));

        // Publisher restarts with a new SSRC 100 ms later: continues at 1004, ts + 9000.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(r.rewrite(t1, 2, 7, 123, 90_000), (1004, 62_000));
        assert_eq!(r.rewrite(t1, 2, 8, 3123, 90_000), (1005, 65_000));

        // Same SSRC but a huge sequence jump (encoder restart): re-anchored too.
        let t2 = t1 + Duration::from_millis(10);
        assert_eq!(r.rewrite(t2, 2, 40_000, 0, 90_000), (1006, 65_900));

        // Explicit resync (feed stopped and came back).
        r.request_resync();
        let t3 = t2 + Duration::from_secs(1);
        assert_eq!(r.rewrite(t3, 2, 40_001, 0, 90_000), (1007, 155_900));
    }

    #[test]
    fn sequence_wraps() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(65_535, 0);
        assert_eq!(r.rewrite(t0, 1, 10, 0, 48_000).0, 65_535);
        assert_eq!(r.rewrite(t0, 1, 11, 0, 48_000).0, 0);
        assert_eq!(r.rewrite(t0, 1, 12, 0, 48_000).0, 1);
    }
}
