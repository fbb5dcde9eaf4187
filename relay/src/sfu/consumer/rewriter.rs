//! Sequence and timestamp rewriting of one subscriber's stream.
//!
//! The subscriber must see one continuous stream even when the publisher's stream is replaced
//! (new SSRC after renegotiation, encoder restart with a sequence jump, or a pause). On such a
//! switch the rewriter re-anchors: the next outgoing sequence number follows the last one sent,
//! and the timestamp advances by the wall time that passed, in the feed's clock rate. Between
//! switches the mapping is a fixed offset, so reordering and loss upstream are preserved
//! exactly as they happened.

use std::collections::VecDeque;
use std::time::Instant;

/// A jump of more than this many sequence numbers on the same SSRC is an encoder restart,
/// not loss (loss bursts are far shorter; reordering far shorter still).
const RESTART_SEQ_JUMP: i32 = 3000;

/// How far behind the highest outgoing sequence number a late packet may still be sent. Older
/// ones are dropped: the subscriber's jitter buffer has given up on them, and the rewriter could
/// no longer tell whether their number was already used.
pub const REORDER_WINDOW: u16 = 128;

/// Maps a publisher's sequence numbers and timestamps into a subscriber's continuous stream.
///
/// Under SRTP an outgoing (SSRC, sequence number) pair, with its rollover counter, is the
/// packet index that keys the cipher: AES-GCM with a repeated index under one key reuses its
/// nonce. So the rewriter never emits an outgoing sequence number twice: a packet older than
/// the current anchor is dropped (its number could fall on one already sent before the
/// re-anchor, as mediasoup's SeqManager also reasons), and a window of the last
/// [`REORDER_WINDOW`] numbers sent catches duplicates and anything older.
#[derive(Debug, Clone)]
pub struct Rewriter {
    anchored: Option<Anchor>,
    resync: bool,
    /// Highest outgoing sequence number sent, extended past 16 bits so it never wraps, and
    /// its timestamp.
    highest_out: u64,
    last_out_ts: u32,
    last_sent_at: Option<Instant>,
    /// Bit `i` set: `highest_out - i` was sent.
    sent: u128,
    /// Bit `i` set: `highest_out - i` went out with the marker bit set by the relay (the end
    /// of what an SVC subscriber gets of a picture, whether or not the publisher's packet had
    /// it). A repair must carry it too: as a plain retransmission it must be the packet sent,
    /// byte for byte, and on the RTX stream it still ends the subscriber's picture.
    marked: u128,
    /// The first outgoing number (extended) that NACKs are answered for ([`Self::forget_sent`]).
    repairable_from: u64,
    /// The outgoing timestamp the next re-anchor should give its packet
    /// ([`Self::anchor_timestamp`]).
    next_anchor_ts: Option<u32>,
    /// The offsets in force before the anchor's current one, oldest first: (first incoming
    /// number it applied to, offset), both extended. Each packet [`Self::skip`]ped closes
    /// its gap by lowering the offset from the next packet on; late packets and NACKs for
    /// packets sent under an earlier offset are mapped with the one in force where they fall.
    earlier: VecDeque<(u64, u64)>,
}

/// Offsets remembered besides the current one: one per packet skipped at most, so that
/// everything within the reorder window maps (512 bytes, only for a subscriber whose packets
/// are skipped).
const MAX_EARLIER_OFFSETS: usize = REORDER_WINDOW as usize;

/// The incoming packet behind an outgoing sequence number ([`Rewriter::original`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Original {
    /// The publisher's SSRC.
    pub ssrc: u32,
    /// The publisher's sequence number.
    pub sequence: u16,
    /// Added to the publisher's timestamp to give the subscriber's.
    pub ts_offset: u32,
    /// Whether the relay set the marker bit on it ([`Rewriter::mark`]); None where it is
    /// older than [`REORDER_WINDOW`] numbers, which are not remembered.
    pub marked: Option<bool>,
}

/// Where the current stream of incoming packets is mapped. Incoming numbers are extended
/// past 16 bits (unwrapped against the highest, as the outgoing ones are), so that "older
/// than the anchor" and "from before a skip" stay true however many packets the anchor
/// lasts: compared as 16-bit differences they turned after 32,768 packets (3.5 minutes of
/// 1.5 Mbit/s video), and every packet then seemed to predate the anchor.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    in_ssrc: u32,
    /// Added to an extended incoming number to give the extended outgoing one (wrapping).
    seq_offset: u64,
    ts_offset: u32,
    /// The incoming number the anchor was made at: anything older predates it.
    first_in: u64,
    /// The outgoing number it was given.
    first_out: u64,
    highest_in: u64,
    /// The first incoming number `seq_offset` applies to.
    offset_from: u64,
}

impl Anchor {
    /// `seq` extended: the number nearest the highest incoming one with these low 16 bits.
    fn extend(&self, seq: u16) -> u64 {
        let delta = seq.wrapping_sub(self.highest_in as u16) as i16;
        self.highest_in.wrapping_add_signed(i64::from(delta))
    }
}

impl Rewriter {
    /// `initial_seq` and `initial_ts` are where the subscriber's stream starts (random, as
    /// RFC 3550 recommends).
    pub fn new(initial_seq: u16, initial_ts: u32) -> Self {
        Rewriter {
            anchored: None,
            resync: false,
            // One below the first number, kept well above zero so it never underflows.
            highest_out: (1 << 32) + u64::from(initial_seq) - 1,
            last_out_ts: initial_ts,
            last_sent_at: None,
            sent: 0,
            marked: 0,
            repairable_from: 0,
            next_anchor_ts: None,
            earlier: VecDeque::new(),
        }
    }

    /// Give the packet of the next re-anchor outgoing timestamp `ts`, where that is after the
    /// last one sent: a switch between simulcast layers, which the sender reports align,
    /// keeps the subscriber's timeline exact instead of advancing it by the wall time
    /// between packets.
    pub fn anchor_timestamp(&mut self, ts: u32) {
        self.next_anchor_ts = Some(ts);
    }

    /// Answer no NACK for anything sent so far. A plain retransmission goes out under the
    /// number and index it was first sent with, so it must be that packet byte for byte; once
    /// the subscriber's packets change form (its answer dropped RTX, or an extension), the
    /// earlier ones can no longer be rebuilt as they were sent.
    pub fn forget_sent(&mut self) {
        self.repairable_from = self.highest_out + 1;
    }

    /// Ask for a re-anchor at the next packet (the feed restarted).
    pub fn request_resync(&mut self) {
        self.resync = true;
    }

    /// Outgoing sequence number and timestamp for an incoming packet, or None when the packet
    /// must not be sent: it predates the current anchor, or its outgoing number was sent
    /// already or lies beyond the reorder window.
    pub fn rewrite(
        &mut self,
        now: Instant,
        in_ssrc: u32,
        in_seq: u16,
        in_ts: u32,
        clock_rate: u32,
    ) -> Option<(u16, u32)> {
        let needs_anchor = match self.anchored {
            None => true,
            Some(a) => {
                let jump = in_seq.wrapping_sub(a.highest_in as u16) as i16 as i32;
                self.resync || a.in_ssrc != in_ssrc || jump.abs() > RESTART_SEQ_JUMP
            }
        };
        if needs_anchor {
            let hint = self
                .next_anchor_ts
                .take()
                .filter(|ts| ts.wrapping_sub(self.last_out_ts) as i32 > 0);
            let next_ts = match (self.last_sent_at, hint) {
                (Some(_), Some(ts)) => ts,
                // Advance by the real time that passed, at least one tick so the new
                // stream's first frame never shares the old one's last timestamp.
                (Some(at), None) => {
                    let elapsed = now.saturating_duration_since(at).as_secs_f64();
                    let ticks = (elapsed * clock_rate as f64).round() as u32;
                    self.last_out_ts.wrapping_add(ticks.max(1))
                }
                (None, _) => self.last_out_ts,
            };
            // Extended like the outgoing numbers: well above zero, never wrapping.
            let first_in = (1 << 32) + u64::from(in_seq);
            let first_out = self.highest_out + 1;
            self.anchored = Some(Anchor {
                in_ssrc,
                seq_offset: first_out.wrapping_sub(first_in),
                ts_offset: next_ts.wrapping_sub(in_ts),
                first_in,
                first_out,
                highest_in: first_in,
                offset_from: first_in,
            });
            self.earlier.clear();
            self.resync = false;
        }
        // Just set above when it was None.
        let a = self.anchored.as_mut().expect("anchored");
        let in_ext = a.extend(in_seq);
        if in_ext < a.first_in {
            return None;
        }
        let offset = if in_ext >= a.offset_from {
            a.seq_offset
        } else {
            // Late, from before a skip: the offset in force where it falls, unless that puts
            // it on a number a later stretch took (it was skipped itself).
            let offset = self
                .earlier
                .iter()
                .rev()
                .find(|(from, _)| in_ext >= *from)?
                .1;
            if offset_of_out(a, &self.earlier, in_ext.wrapping_add(offset)) != Some(offset) {
                return None;
            }
            offset
        };
        let out_ext = in_ext.wrapping_add(offset);
        let out_ts = in_ts.wrapping_add(a.ts_offset);
        if out_ext > self.highest_out {
            // A jump of more than RESTART_SEQ_JUMP re-anchored above, and a skip never moves
            // the offset further; still, a number half-way round or more would fall on one
            // already sent (the subscriber's SRTP index comes from the 16 bits), so it is
            // never sent.
            let shift = out_ext - self.highest_out;
            if shift >= 0x8000 {
                return None;
            }
            self.sent = if shift >= 128 { 0 } else { self.sent << shift };
            self.sent |= 1;
            self.marked = if shift >= 128 {
                0
            } else {
                self.marked << shift
            };
            self.highest_out = out_ext;
            a.highest_in = in_ext;
            self.last_out_ts = out_ts;
            self.last_sent_at = Some(now);
        } else {
            let behind = self.highest_out - out_ext;
            if behind >= u64::from(REORDER_WINDOW) || self.sent & (1 << behind) != 0 {
                return None;
            }
            self.sent |= 1 << behind;
        }
        Some((out_ext as u16, out_ts))
    }

    /// Outgoing number `out_seq`, just given by [`Self::rewrite`], goes out with a marker bit
    /// the relay set.
    pub fn mark(&mut self, out_seq: u16) {
        let behind = (self.highest_out as u16).wrapping_sub(out_seq);
        if behind < REORDER_WINDOW {
            self.marked |= 1 << behind;
        }
    }

    /// Incoming packet `in_seq` of the anchored stream is not sent, on purpose (the
    /// subscriber does not get its layer): the packets after it take its number, so that the
    /// subscriber sees no gap to ask for. A late one (behind packets already mapped) can only
    /// leave a gap: its number is never used, and a NACK for it is not answered.
    pub fn skip(&mut self, in_ssrc: u32, in_seq: u16) {
        let Some(a) = self.anchored.as_mut() else {
            return;
        };
        let in_ext = a.extend(in_seq);
        // A skipped packet further ahead than a restart's jump is the stream restarting: the
        // next packet sent re-anchors, so the offset stays. (Taken as a skip, two such jumps
        // would carry the next number half-way round, onto numbers already sent.)
        if self.resync
            || a.in_ssrc != in_ssrc
            || in_ext <= a.highest_in
            || in_ext - a.highest_in > RESTART_SEQ_JUMP as u64
        {
            return;
        }
        // Packets between the highest mapped and this one keep the numbers they would have
        // had (they are missing so far); from the next one on, one less.
        if a.offset_from != in_ext {
            if self.earlier.len() == MAX_EARLIER_OFFSETS {
                self.earlier.pop_front();
            }
            self.earlier.push_back((a.offset_from, a.seq_offset));
        }
        a.seq_offset = a.seq_offset.wrapping_sub(1);
        a.offset_from = in_ext + 1;
        a.highest_in = in_ext;
    }

    /// Where an outgoing packet came from, to answer a NACK for it: the incoming SSRC and
    /// sequence number, and the offset to add to the incoming timestamp. None unless it was
    /// sent under the current anchor (and, within the reorder window, actually sent).
    pub fn original(&self, out_seq: u16) -> Option<Original> {
        self.original_of(out_seq, true)
    }

    /// [`Rewriter::original`] of a number under the current anchor whether or not a packet
    /// went out with it: a packet of a layer the subscriber switched to that came before the
    /// switch's late first packet (a repair) has its number, and the subscriber asks for it.
    /// Only for a repair on the RTX stream, which numbers its packets anew (sent as the
    /// original it would seal a new packet under a number that may yet be used), and only of
    /// a stream whose every packet the subscriber gets: under SVC a number may be one that a
    /// frame of another decode target, dropped when it came late, would have had.
    pub fn mapped(&self, out_seq: u16) -> Option<Original> {
        self.original_of(out_seq, false)
    }

    fn original_of(&self, out_seq: u16, only_sent: bool) -> Option<Original> {
        let a = self.anchored?;
        let behind = (self.highest_out as u16).wrapping_sub(out_seq) as i16;
        let out_ext = self.highest_out.checked_sub(u64::try_from(behind).ok()?)?;
        if out_ext < a.first_out {
            return None;
        }
        let offset = offset_of_out(&a, &self.earlier, out_ext)?;
        let behind = behind as u16;
        if only_sent && behind < REORDER_WINDOW && self.sent & (1 << behind) == 0 {
            return None;
        }
        if out_ext < self.repairable_from {
            return None;
        }
        Some(Original {
            ssrc: a.in_ssrc,
            sequence: out_ext.wrapping_sub(offset) as u16,
            ts_offset: a.ts_offset,
            marked: (behind < REORDER_WINDOW).then(|| self.marked & (1 << behind) != 0),
        })
    }

    /// The highest outgoing sequence number sent, if any was.
    pub fn highest_sent(&self) -> Option<u16> {
        self.last_sent_at.map(|_| self.highest_out as u16)
    }

    /// The last outgoing timestamp and when it was sent (for sender reports).
    pub fn last_sent(&self) -> Option<(u32, Instant)> {
        self.last_sent_at.map(|at| (self.last_out_ts, at))
    }
}

/// The offset of the newest stretch of outgoing numbers that `out_ext` (extended) falls in:
/// the current one of `a`, or one of those before it.
fn offset_of_out(a: &Anchor, earlier: &VecDeque<(u64, u64)>, out_ext: u64) -> Option<u64> {
    std::iter::once((a.offset_from, a.seq_offset))
        .chain(earlier.iter().rev().copied())
        .find(|(from, offset)| out_ext >= from.wrapping_add(*offset))
        .map(|(_, offset)| offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::time::Duration;

    #[test]
    fn continuous_across_ssrc_change_and_restart() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(1000, 50_000);
        // First packet anchors at the initial values.
        assert_eq!(r.rewrite(t0, 1, 200, 9000, 90_000), Some((1000, 50_000)));
        assert_eq!(r.rewrite(t0, 1, 201, 9000, 90_000), Some((1001, 50_000)));
        // Reordered/late packet keeps its place and does not move the high-water mark.
        assert_eq!(r.rewrite(t0, 1, 203, 12000, 90_000), Some((1003, 53_000)));
        assert_eq!(r.rewrite(t0, 1, 202, 12000, 90_000), Some((1002, 53_000)));
        assert_eq!(r.last_sent(), Some((53_000, t0)));

        // Publisher restarts with a new SSRC 100 ms later: continues at 1004, ts + 9000.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(r.rewrite(t1, 2, 7, 123, 90_000), Some((1004, 62_000)));
        assert_eq!(r.rewrite(t1, 2, 8, 3123, 90_000), Some((1005, 65_000)));

        // Same SSRC but a huge sequence jump (encoder restart): re-anchored too.
        let t2 = t1 + Duration::from_millis(10);
        assert_eq!(r.rewrite(t2, 2, 40_000, 0, 90_000), Some((1006, 65_900)));

        // Explicit resync (feed stopped and came back).
        r.request_resync();
        let t3 = t2 + Duration::from_secs(1);
        assert_eq!(r.rewrite(t3, 2, 40_001, 0, 90_000), Some((1007, 155_900)));
    }

    #[test]
    fn a_late_packet_from_before_a_resync_is_not_sent_under_a_used_number() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(1000, 0);
        assert_eq!(r.rewrite(t0, 1, 200, 0, 90_000).map(|o| o.0), Some(1000));
        assert_eq!(r.rewrite(t0, 1, 201, 0, 90_000).map(|o| o.0), Some(1001));
        r.request_resync();
        assert_eq!(r.rewrite(t0, 1, 203, 0, 90_000).map(|o| o.0), Some(1002));
        // 202 would map onto 1001, already sealed with other content.
        assert_eq!(r.rewrite(t0, 1, 202, 0, 90_000), None);
        assert_eq!(r.rewrite(t0, 1, 204, 0, 90_000).map(|o| o.0), Some(1003));
    }

    #[test]
    fn a_timestamp_given_for_the_next_anchor_is_used_when_it_moves_forward() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(0, 1000);
        assert_eq!(r.rewrite(t0, 1, 10, 50, 90_000), Some((0, 1000)));
        // Another layer: exactly where the hint puts it, not by the wall time.
        r.anchor_timestamp(4000);
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(r.rewrite(t1, 2, 70, 9_000, 90_000), Some((1, 4000)));
        assert_eq!(r.rewrite(t1, 2, 71, 12_000, 90_000), Some((2, 7000)));
        // A hint that would go back is ignored: the wall time decides.
        r.anchor_timestamp(6000);
        let t2 = t1 + Duration::from_millis(10);
        assert_eq!(r.rewrite(t2, 1, 11, 0, 90_000), Some((3, 7900)));
    }

    #[test]
    fn nothing_sent_before_forget_sent_is_answered() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(65_534, 0);
        for in_seq in 10..14 {
            r.rewrite(t0, 1, in_seq, 0, 90_000);
        }
        assert!(r.original(1).is_some());
        r.forget_sent();
        // 65534, 65535, 0 and 1 were sent in the old form; across the wrap.
        for out_seq in [65_534, 65_535, 0, 1] {
            assert_eq!(r.original(out_seq), None, "{out_seq}");
        }
        assert_eq!(r.rewrite(t0, 1, 14, 0, 90_000), Some((2, 0)));
        assert_eq!(r.original(2).map(|o| o.sequence), Some(14));
        assert_eq!(r.original(1), None);
    }

    #[test]
    fn duplicates_and_packets_past_the_window_are_dropped() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(0, 0);
        assert_eq!(r.rewrite(t0, 1, 10, 0, 8000).map(|o| o.0), Some(0));
        assert_eq!(r.rewrite(t0, 1, 10, 0, 8000), None);
        assert_eq!(r.rewrite(t0, 1, 12, 0, 8000).map(|o| o.0), Some(2));
        assert_eq!(r.rewrite(t0, 1, 11, 0, 8000).map(|o| o.0), Some(1));
        assert_eq!(r.rewrite(t0, 1, 11, 0, 8000), None);
        let far = 12 + REORDER_WINDOW + 5;
        assert!(r.rewrite(t0, 1, far, 0, 8000).is_some());
        // Not sent yet, but older than the window allows.
        assert_eq!(r.rewrite(t0, 1, 13, 0, 8000), None);
    }

    #[test]
    fn originals_of_what_was_sent_under_the_current_anchor() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(1000, 5000);
        assert_eq!(r.original(1000), None);
        r.rewrite(t0, 7, 200, 100, 90_000);
        r.rewrite(t0, 7, 202, 100, 90_000);
        let o = r.original(1002).unwrap();
        assert_eq!(
            (o.ssrc, o.sequence, 100u32.wrapping_add(o.ts_offset)),
            (7, 202, 5000)
        );
        assert_eq!(r.original(1000).map(|o| o.sequence), Some(200));
        // 1001 was never sent (201 is lost upstream), 1003 not yet, 999 before the anchor.
        assert_eq!(r.original(1001), None);
        assert_eq!(r.original(1003), None);
        assert_eq!(r.original(999), None);
        // After a re-anchor, what was sent before it is no longer this stream's.
        r.rewrite(t0, 8, 50, 0, 90_000);
        assert_eq!(r.original(1002), None);
        assert_eq!(
            r.original(1003).map(|o| (o.ssrc, o.sequence)),
            Some((8, 50))
        );
        // Older than the window: known only by arithmetic, the cache says the rest.
        for i in 1..=200u16 {
            r.rewrite(t0, 8, 50 + i, 0, 90_000);
        }
        assert_eq!(r.original(1004).map(|o| o.sequence), Some(51));
    }

    #[test]
    fn a_marker_the_relay_set_is_remembered_within_the_window() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(1000, 0);
        for seq in 0..3u16 {
            let (out, _) = r.rewrite(t0, 7, seq, 0, 90_000).unwrap();
            if seq == 1 {
                r.mark(out);
            }
        }
        let marked = |r: &Rewriter, out| r.original(out).unwrap().marked;
        assert_eq!(marked(&r, 1000), Some(false));
        assert_eq!(marked(&r, 1001), Some(true));
        assert_eq!(marked(&r, 1002), Some(false));
        // A late packet's number, marked behind the highest.
        r.rewrite(t0, 7, 4, 0, 90_000).unwrap();
        let (late, _) = r.rewrite(t0, 7, 3, 0, 90_000).unwrap();
        r.mark(late);
        assert_eq!(
            (marked(&r, 1003), marked(&r, 1004)),
            (Some(true), Some(false))
        );
        // Out of the window: not known either way.
        for seq in 5..(5 + REORDER_WINDOW) {
            r.rewrite(t0, 7, seq, 0, 90_000).unwrap();
        }
        assert_eq!(marked(&r, 1003), None);
        assert_eq!(marked(&r, 1003 + REORDER_WINDOW), Some(false));
    }

    #[test]
    fn skipped_packets_leave_no_gap_and_nacks_map_to_what_was_sent() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(1000, 0);
        let out = |r: &mut Rewriter, seq| r.rewrite(t0, 1, seq, 0, 90_000).map(|o| o.0);
        assert_eq!(out(&mut r, 10), Some(1000));
        r.skip(1, 11);
        r.skip(1, 12);
        assert_eq!(out(&mut r, 13), Some(1001));
        // 14 is missing so far; 15 is skipped; 16 follows 14's number.
        r.skip(1, 15);
        assert_eq!(out(&mut r, 16), Some(1003));
        // 14 arrives late: the number kept for it.
        assert_eq!(out(&mut r, 14), Some(1002));
        // A skipped packet arriving late leaves a hole: 17 and 19 sent, 18 late and skipped.
        assert_eq!(out(&mut r, 17), Some(1004));
        assert_eq!(out(&mut r, 19), Some(1006));
        r.skip(1, 18);
        assert_eq!(out(&mut r, 20), Some(1007));
        let originals: Vec<Option<u16>> = (1000..=1007)
            .map(|o| r.original(o).map(|o| o.sequence))
            .collect();
        assert_eq!(
            originals,
            [
                Some(10),
                Some(13),
                Some(14),
                Some(16),
                Some(17),
                None,
                Some(19),
                Some(20)
            ]
        );
        // A re-anchor forgets the old offsets.
        r.request_resync();
        r.skip(1, 21);
        assert_eq!(out(&mut r, 22), Some(1008));
        assert_eq!(r.original(1007), None);
    }

    #[test]
    fn a_stream_goes_on_past_half_the_sequence_space() {
        // 70,000 packets under one anchor (7.5 minutes of 1.5 Mbit/s video), one of them
        // skipped near the start: each is sent, and NACKs for the last ones find them.
        let t0 = Instant::now();
        let mut r = Rewriter::new(1000, 0);
        let mut expected = 1000u16;
        for i in 0..70_000u32 {
            let seq = (5 + i) as u16;
            if i == 3 {
                r.skip(1, seq);
                continue;
            }
            let out = r.rewrite(t0, 1, seq, 0, 90_000).map(|o| o.0);
            assert_eq!(out, Some(expected), "packet {i}");
            expected = expected.wrapping_add(1);
        }
        let last = expected.wrapping_sub(1);
        for back in [0u16, 1, 100, 127, 300] {
            let original = r.original(last.wrapping_sub(back)).map(|o| o.sequence);
            assert_eq!(
                original,
                Some((5 + 69_999 - u32::from(back)) as u16),
                "{back} back"
            );
        }
        // A late packet from before the anchor is still refused.
        let mut r = Rewriter::new(1000, 0);
        assert_eq!(r.rewrite(t0, 1, 500, 0, 90_000).map(|o| o.0), Some(1000));
        assert_eq!(r.rewrite(t0, 1, 499, 0, 90_000), None);
    }

    #[test]
    fn skips_far_ahead_never_bring_back_a_number_already_sent() {
        // Two skips of 32,767 each would put the next packet's number 65,534 ahead: the same
        // 16-bit numbers as those just sent, and so their SRTP indexes.
        let t0 = Instant::now();
        let mut r = Rewriter::new(1000, 0);
        let mut sent = HashSet::new();
        for seq in 0..4u16 {
            let out = r.rewrite(t0, 1, seq, 0, 90_000).map(|o| o.0);
            assert_eq!(out, Some(1000 + seq));
            sent.insert(1000 + seq);
        }
        r.skip(1, 32_770);
        r.skip(1, 1);
        for seq in 2..6u16 {
            if let Some((out, _)) = r.rewrite(t0, 1, seq, 0, 90_000) {
                assert!(sent.insert(out), "{out} sent twice");
            }
        }
        // One far skip, then a packet 3,000 further: never more than half the number space
        // ahead of the highest number sent.
        let mut r = Rewriter::new(1000, 0);
        assert_eq!(r.rewrite(t0, 1, 0, 0, 90_000).map(|o| o.0), Some(1000));
        r.skip(1, 32_767);
        let out = r.rewrite(t0, 1, 35_767, 0, 90_000).map(|o| o.0);
        if let Some(out) = out {
            let ahead = out.wrapping_sub(1000);
            assert!(ahead < 0x8000, "{out} is {ahead} ahead");
        }
    }

    #[test]
    fn sequence_wraps() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(65_535, 0);
        assert_eq!(r.rewrite(t0, 1, 10, 0, 48_000).map(|o| o.0), Some(65_535));
        assert_eq!(r.rewrite(t0, 1, 11, 0, 48_000).map(|o| o.0), Some(0));
        assert_eq!(r.rewrite(t0, 1, 12, 0, 48_000).map(|o| o.0), Some(1));
    }

    /// What a feed can do to a subscriber's stream.
    #[derive(Debug, Clone)]
    enum Step {
        /// The next packet is `delta` after the previous one (negative: reordered, 0: a
        /// duplicate, large: an encoder restart), from SSRC `ssrc`.
        Packet { delta: i32, ssrc: u32 },
        /// As `Packet`, but not sent to this subscriber (another layer of an SVC stream).
        Skip { delta: i32 },
        /// The feed restarted (renegotiation, pause).
        Resync,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            8 => (-40i32..40, Just(1u32)).prop_map(|(delta, ssrc)| Step::Packet { delta, ssrc }),
            1 => (prop_oneof![-40_000i32..-3000, 3000i32..40_000], 1u32..3)
                .prop_map(|(delta, ssrc)| Step::Packet { delta, ssrc }),
            2 => (-5i32..5).prop_map(|delta| Step::Skip { delta }),
            1 => (prop_oneof![-40_000i32..-3000, 3000i32..40_000])
                .prop_map(|delta| Step::Skip { delta }),
            1 => Just(Step::Resync),
        ]
    }

    proptest! {
        /// Packets in order, some skipped: the subscriber's numbers are consecutive, and
        /// each maps back to the packet sent under it.
        #[test]
        fn skips_in_order_leave_no_gaps(
            initial in any::<u16>(),
            first in any::<u16>(),
            sent in prop::collection::vec(any::<bool>(), 1..600),
        ) {
            let t0 = Instant::now();
            let mut r = Rewriter::new(initial, 0);
            let mut expected = initial;
            let mut anchored = false;
            let mut outs = Vec::new();
            for (i, send) in sent.into_iter().enumerate() {
                let seq = first.wrapping_add(i as u16);
                if send || !anchored {
                    let out = r.rewrite(t0, 1, seq, 0, 90_000).map(|o| o.0);
                    prop_assert_eq!(out, Some(expected));
                    outs.push((expected, seq));
                    expected = expected.wrapping_add(1);
                    anchored = true;
                } else {
                    r.skip(1, seq);
                }
            }
            for (out, seq) in outs.iter().rev().take(usize::from(REORDER_WINDOW)) {
                prop_assert_eq!(r.original(*out).map(|o| o.sequence), Some(*seq));
            }
        }
    }

    proptest! {
        /// For any input (wraps, reordering, duplicates, restarts, resyncs) no outgoing
        /// number is ever emitted twice, nothing older than the reorder window below the
        /// highest number sent goes out, and a re-anchored stream continues above everything
        /// sent before.
        #[test]
        fn outgoing_numbers_are_unique(
            initial in any::<u16>(),
            first in any::<u16>(),
            steps in prop::collection::vec(step(), 1..400),
        ) {
            let t0 = Instant::now();
            let mut r = Rewriter::new(initial, 0);
            let mut seq = first;
            let mut ssrc = 1;
            // Outgoing numbers extended to 64 bits by unwrapping against the highest.
            let mut highest: Option<u64> = None;
            let mut seen = HashSet::new();
            let mut anchor_pending = true;
            for (i, s) in steps.into_iter().enumerate() {
                let now = t0 + Duration::from_millis(i as u64);
                match s {
                    Step::Resync => {
                        r.request_resync();
                        anchor_pending = true;
                        continue;
                    }
                    Step::Skip { delta } => {
                        seq = seq.wrapping_add(delta as u16);
                        r.skip(ssrc, seq);
                        continue;
                    }
                    Step::Packet { delta, ssrc: s } => {
                        seq = seq.wrapping_add(delta as u16);
                        if s != ssrc {
                            anchor_pending = true;
                        }
                        ssrc = s;
                    }
                }
                let Some((out, _)) = r.rewrite(now, ssrc, seq, 0, 90_000) else {
                    continue;
                };
                // A NACK for it finds this packet.
                prop_assert_eq!(r.original(out).map(|o| (o.ssrc, o.sequence)), Some((ssrc, seq)));
                let ext = match highest {
                    None => (1 << 32) + u64::from(out),
                    Some(h) => h.wrapping_add_signed(i64::from(out.wrapping_sub(h as u16) as i16)),
                };
                prop_assert!(seen.insert(ext), "{out} emitted twice");
                if let Some(h) = highest {
                    prop_assert!(ext + u64::from(REORDER_WINDOW) > h, "{out} older than the window");
                    if anchor_pending {
                        prop_assert!(ext > h, "a new anchor went below what was sent");
                    }
                }
                anchor_pending = false;
                highest = Some(highest.map_or(ext, |h| h.max(ext)));
            }
        }
    }
}
