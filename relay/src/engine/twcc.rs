//! Transport-wide congestion control feedback, receive side
//! (draft-holmer-rmcat-transport-wide-cc-extensions-01).
//!
//! A publisher's browser numbers every packet it sends on the transport (all its streams, one
//! sequence) in a header extension, and estimates the bandwidth toward the relay from when the
//! relay says each packet arrived. Without that feedback Chromium's estimator assumes the worst
//! and starves its encoder. [`TwccReceiver`] records arrivals and writes the feedback packets:
//! every [`FEEDBACK_INTERVAL`] while anything new arrived, so audio-only publishers get it too.
//!
//! Feedback is a transport-layer RTCP feedback message (PT 205, FMT 15): a base sequence number
//! and a count, a reference time in 64 ms units, then run-length or status-vector chunks saying
//! which packets arrived, then one receive delta per arrived packet in 250 µs units (one byte
//! when 0..=63.75 ms, two bytes signed otherwise).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The header extension's URI in SDP.
pub const URI: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// How often feedback is sent while packets arrive: often enough that Chromium's probes (a
/// few tens of milliseconds) are answered within one interval, cheap at ~20 small packets/s.
pub const FEEDBACK_INTERVAL: Duration = Duration::from_millis(50);

/// Packets one feedback message describes at most: with two-byte deltas it stays under
/// ~1,000 bytes, well inside an MTU after SRTCP. More are sent in further messages.
const MAX_STATUSES: i64 = 400;

/// Arrivals kept after they were reported, so that a packet arriving late (reordered) within
/// this many sequence numbers is reported again in context instead of staying "lost".
const HISTORY: i64 = 512;

/// A gap larger than this (seconds of loss, a sender restarting its numbering, or garbage) is
/// not reported packet by packet: reporting restarts at the new number. It bounds the window
/// (~40 KiB at most per transport).
const MAX_GAP: i64 = 2048;

const DELTA_UNIT_US: i64 = 250;
const REFERENCE_UNIT_US: i64 = 64_000;

/// RTCP transport-layer feedback (RFC 4585) with the transport-wide CC format.
const PT_RTPFB: u8 = 205;
const FMT_TWCC: u8 = 15;

const SYMBOL_NOT_RECEIVED: u8 = 0;
const SYMBOL_SMALL: u8 = 1;
const SYMBOL_LARGE: u8 = 2;

/// Arrival times of one transport's packets and the feedback owed for them.
#[derive(Debug)]
pub struct TwccReceiver {
    /// Arrival of each sequence number from `window_start` on (None: not arrived), covering
    /// what is not reported yet and [`HISTORY`] before it. A ring reused packet after packet.
    window: VecDeque<Option<Instant>>,
    /// The unwrapped sequence number of `window[0]`.
    window_start: i64,
    /// The highest sequence number seen, unwrapped.
    highest: Option<i64>,
    /// The first sequence number the next feedback starts at.
    next_base: i64,
    /// Counts feedback messages (wrapping), so the sender can tell one was lost.
    feedback_count: u8,
    /// Reference times count from here.
    epoch: Option<Instant>,
    /// When the last feedback went out.
    last_feedback: Option<Instant>,
    /// Something arrived that no feedback has described yet.
    unreported: bool,
    /// The last message could not hold everything due: the rest is due at once.
    continued: bool,
    /// Scratch for building a message, kept to save allocations.
    symbols: Vec<u8>,
    deltas: Vec<i16>,
}

impl Default for TwccReceiver {
    fn default() -> Self {
        Self::new()
    }
}

impl TwccReceiver {
    /// A receiver that has seen nothing.
    pub fn new() -> Self {
        TwccReceiver {
            window: VecDeque::new(),
            window_start: 0,
            highest: None,
            next_base: 0,
            feedback_count: 0,
            epoch: None,
            last_feedback: None,
            unreported: false,
            continued: false,
            symbols: Vec::new(),
            deltas: Vec::new(),
        }
    }

    fn arrival(&self, seq: i64) -> Option<Instant> {
        let i = usize::try_from(seq - self.window_start).ok()?;
        *self.window.get(i)?
    }

    /// The first packet from `seq` on that arrived.
    fn first_arrival_from(&self, seq: i64) -> Option<(i64, Instant)> {
        let skip = usize::try_from(seq - self.window_start).unwrap_or(0);
        self.window
            .iter()
            .enumerate()
            .skip(skip)
            .find_map(|(i, at)| Some((self.window_start + i as i64, (*at)?)))
    }

    fn restart_at(&mut self, seq: i64) {
        self.window.clear();
        // Room for the history and a few intervals of packets, taken once: after that the
        // ring is reused without allocating.
        self.window.reserve(2 * HISTORY as usize);
        self.window_start = seq;
        self.next_base = seq;
        self.highest = Some(seq);
    }

    /// A packet with transport-wide sequence number `seq` arrived at `now`.
    pub fn handle_packet(&mut self, now: Instant, seq: u16) {
        let seq = match self.highest {
            None => {
                self.epoch = Some(now);
                self.restart_at(seq as i64);
                seq as i64
            }
            Some(highest) => {
                let seq = unwrap(highest, seq);
                if (seq - highest).abs() > MAX_GAP {
                    // Not a gap worth describing packet by packet: start over from here.
                    self.restart_at(seq);
                }
                seq
            }
        };
        if seq > self.highest.unwrap_or(seq) {
            self.highest = Some(seq);
        }
        if seq < self.next_base {
            if self.next_base - seq > HISTORY || self.arrival(seq).is_some() {
                return; // too late to matter, or a duplicate
            }
            // Reported as lost already: report again from here.
            self.next_base = seq;
        }
        if seq < self.window_start {
            // Within HISTORY of what is reported next (checked above): the window grows back.
            for _ in seq..self.window_start {
                self.window.push_front(None);
            }
            self.window_start = seq;
        }
        let i = (seq - self.window_start) as usize;
        if i >= self.window.len() {
            self.window.resize(i + 1, None);
        }
        if self.window[i].is_none() {
            self.window[i] = Some(now);
            self.unreported = true;
        }
        // Bounded by HISTORY + what is not reported yet (itself bounded by MAX_GAP).
        while self.window_start < self.next_base - HISTORY {
            self.window.pop_front();
            self.window_start += 1;
        }
    }

    /// When feedback is due next: [`FEEDBACK_INTERVAL`] after the last one, once something
    /// new arrived.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.unreported {
            return None;
        }
        let (_, first) = self.first_arrival_from(self.next_base)?;
        Some(match self.last_feedback {
            Some(at) if self.continued => at,
            Some(at) => (at + FEEDBACK_INTERVAL).max(first),
            None => first + FEEDBACK_INTERVAL,
        })
    }

    /// Write the next feedback message into `out` (cleared first) if one is due at `now`;
    /// call until it returns false, since a long run of packets takes several.
    pub fn poll_feedback(
        &mut self,
        now: Instant,
        sender_ssrc: u32,
        media_ssrc: u32,
        out: &mut Vec<u8>,
    ) -> bool {
        if self.poll_timeout().is_none_or(|due| due > now) {
            return false;
        }
        let (Some(highest), Some(epoch)) = (self.highest, self.epoch) else {
            return false;
        };
        // The message starts right after the last one, with the packets lost since (as
        // libwebrtc's receiver does): a sender whose packets arrive one per interval must see
        // the ones lost in between. The reference time is the first arrival's.
        let base = self.next_base;
        let Some((_, first_arrival)) = self.first_arrival_from(base) else {
            self.unreported = false;
            return false;
        };
        let since = |at: Instant| at.saturating_duration_since(epoch).as_micros() as i64;
        let reference_units = since(first_arrival) / REFERENCE_UNIT_US;
        let mut previous_us = reference_units * REFERENCE_UNIT_US;

        let mut symbols = std::mem::take(&mut self.symbols);
        let mut deltas = std::mem::take(&mut self.deltas);
        symbols.clear();
        deltas.clear();
        let mut end = base;
        while end <= highest && end - base < MAX_STATUSES {
            match self.arrival(end) {
                None => symbols.push(SYMBOL_NOT_RECEIVED),
                Some(at) => {
                    let at_us = since(at);
                    let delta = (at_us - previous_us).div_euclid(DELTA_UNIT_US);
                    let Ok(delta16) = i16::try_from(delta) else {
                        break; // starts the next message
                    };
                    symbols.push(if (0..=255).contains(&delta) {
                        SYMBOL_SMALL
                    } else {
                        SYMBOL_LARGE
                    });
                    deltas.push(delta16);
                    // The sender adds up the quantised deltas; so does this side.
                    previous_us += delta * DELTA_UNIT_US;
                }
            }
            end += 1;
        }
        // Trailing packets that did not arrive are left for the next message (where one of
        // them may have arrived by then), unless nothing in this one did: a run of losses
        // longer than a message is reported as it stands.
        if !deltas.is_empty() {
            while symbols.last() == Some(&SYMBOL_NOT_RECEIVED) {
                symbols.pop();
                end -= 1;
            }
        }

        out.clear();
        out.extend_from_slice(&[0x80 | FMT_TWCC, PT_RTPFB, 0, 0]);
        out.extend_from_slice(&sender_ssrc.to_be_bytes());
        out.extend_from_slice(&media_ssrc.to_be_bytes());
        out.extend_from_slice(&(base as u16).to_be_bytes());
        out.extend_from_slice(&(symbols.len() as u16).to_be_bytes());
        let reference = (reference_units as u32) & 0x00ff_ffff;
        out.extend_from_slice(&((reference << 8) | self.feedback_count as u32).to_be_bytes());
        write_chunks(&symbols, out);
        for (symbol, delta) in symbols
            .iter()
            .filter(|s| **s != SYMBOL_NOT_RECEIVED)
            .zip(&deltas)
        {
            if *symbol == SYMBOL_SMALL {
                out.push(*delta as u8);
            } else {
                out.extend_from_slice(&delta.to_be_bytes());
            }
        }
        // Padded to 32 bits the RFC 3550 way: P bit, the count in the last byte.
        let padding = (4 - out.len() % 4) % 4;
        if padding > 0 {
            out.resize(out.len() + padding - 1, 0);
            out.push(padding as u8);
            out[0] |= 0x20;
        }
        let words = (out.len() / 4 - 1) as u16;
        out[2..4].copy_from_slice(&words.to_be_bytes());

        self.symbols = symbols;
        self.deltas = deltas;
        self.feedback_count = self.feedback_count.wrapping_add(1);
        self.next_base = end;
        self.last_feedback = Some(now);
        self.unreported = self.first_arrival_from(end).is_some();
        self.continued = self.unreported;
        true
    }
}

/// The sequence number closest to `highest` whose low 16 bits are `seq`.
fn unwrap(highest: i64, seq: u16) -> i64 {
    let diff = (seq as i64 - (highest & 0xffff) + 0x8000).rem_euclid(0x10000) - 0x8000;
    highest + diff
}

/// Packet status chunks for `symbols`: a run-length chunk for a run of 7 or more alike, else
/// a status vector (14 one-bit symbols when none is a large delta, else 7 two-bit ones).
fn write_chunks(symbols: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < symbols.len() {
        let run = symbols[i..]
            .iter()
            .take(0x1fff)
            .take_while(|s| **s == symbols[i])
            .count();
        let chunk: u16 = if run >= 7 {
            let chunk = ((symbols[i] as u16) << 13) | run as u16;
            i += run;
            chunk
        } else {
            let next14 = &symbols[i..symbols.len().min(i + 14)];
            if next14.iter().all(|s| *s != SYMBOL_LARGE) {
                let mut chunk = 0x8000;
                for (k, s) in next14.iter().enumerate() {
                    chunk |= (*s as u16) << (13 - k);
                }
                i += next14.len();
                chunk
            } else {
                let next7 = &symbols[i..symbols.len().min(i + 7)];
                let mut chunk = 0xc000;
                for (k, s) in next7.iter().enumerate() {
                    chunk |= (*s as u16) << (12 - 2 * k);
                }
                i += next7.len();
                chunk
            }
        };
        out.extend_from_slice(&chunk.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::Bytes;
    use rtcp::transport_feedbacks::transport_layer_cc::{
        PacketStatusChunk, SymbolTypeTcc, TransportLayerCc,
    };
    use webrtc_util::marshal::Unmarshal;

    const MS: Duration = Duration::from_millis(1);

    /// What a feedback message says, read back by the `rtcp` crate (an independent parser):
    /// (base, [(sequence number, arrival in µs from the reference time) or not received]).
    fn read(packet: &[u8]) -> (u16, u8, Vec<(u16, Option<i64>)>) {
        assert_eq!(packet.len() % 4, 0);
        let mut buf = Bytes::copy_from_slice(packet);
        let fb = TransportLayerCc::unmarshal(&mut buf).expect("parses");
        let mut statuses = Vec::new();
        for chunk in &fb.packet_chunks {
            match chunk {
                PacketStatusChunk::RunLengthChunk(r) => {
                    for _ in 0..r.run_length {
                        statuses.push(r.packet_status_symbol);
                    }
                }
                PacketStatusChunk::StatusVectorChunk(v) => statuses.extend(v.symbol_list.iter()),
            }
        }
        statuses.truncate(fb.packet_status_count as usize);
        let mut deltas = fb.recv_deltas.iter();
        let mut t = 0;
        let out = statuses
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let seq = fb.base_sequence_number.wrapping_add(i as u16);
                match s {
                    SymbolTypeTcc::PacketNotReceived => (seq, None),
                    _ => {
                        t += deltas.next().expect("a delta per arrival").delta;
                        (seq, Some(t))
                    }
                }
            })
            .collect();
        assert!(deltas.next().is_none(), "no delta left over");
        (fb.base_sequence_number, fb.fb_pkt_count, out)
    }

    fn drain(r: &mut TwccReceiver, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while r.poll_feedback(now, 1, 2, &mut buf) {
            out.push(buf.clone());
        }
        out
    }

    #[test]
    fn in_order_arrivals_are_reported_every_interval() {
        let t0 = Instant::now();
        let mut r = TwccReceiver::new();
        assert_eq!(r.poll_timeout(), None, "nothing to report");
        for i in 0..10u16 {
            r.handle_packet(t0 + MS * (i as u32 * 5), 100 + i);
        }
        assert_eq!(r.poll_timeout(), Some(t0 + FEEDBACK_INTERVAL));
        assert!(drain(&mut r, t0 + 49 * MS).is_empty(), "not due yet");
        let sent = drain(&mut r, t0 + FEEDBACK_INTERVAL);
        assert_eq!(sent.len(), 1);
        let (base, count, statuses) = read(&sent[0]);
        assert_eq!((base, count), (100, 0));
        let times: Vec<i64> = statuses.iter().map(|(_, t)| t.unwrap()).collect();
        // Relative to the first arrival (the reference time is its 64 ms floor, at 0 here).
        assert_eq!(times, (0..10).map(|i| i * 5000).collect::<Vec<_>>());
        assert_eq!(r.poll_timeout(), None, "all reported");

        // The next one starts where this ended and counts up.
        r.handle_packet(t0 + 60 * MS, 110);
        assert_eq!(r.poll_timeout(), Some(t0 + 2 * FEEDBACK_INTERVAL));
        let sent = drain(&mut r, t0 + 100 * MS);
        let (base, count, statuses) = read(&sent[0]);
        assert_eq!((base, count, statuses.len()), (110, 1, 1));
    }

    #[test]
    fn losses_are_reported_and_late_arrivals_reported_again() {
        let t0 = Instant::now();
        let mut r = TwccReceiver::new();
        for seq in [0u16, 1, 2, 5, 6, 20] {
            r.handle_packet(t0 + MS * seq as u32, seq);
        }
        let (_, _, statuses) = read(&drain(&mut r, t0 + 50 * MS)[0]);
        let received: Vec<u16> = statuses
            .iter()
            .filter(|(_, t)| t.is_some())
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(statuses.len(), 21);
        assert_eq!(received, vec![0, 1, 2, 5, 6, 20]);
        // 3 arrives late: the next message starts there, 4 still missing, 5 and 6 again.
        r.handle_packet(t0 + 60 * MS, 3);
        r.handle_packet(t0 + 61 * MS, 3); // duplicate
        let sent = drain(&mut r, t0 + 100 * MS);
        assert_eq!(sent.len(), 1);
        let (base, _, statuses) = read(&sent[0]);
        assert_eq!(base, 3);
        assert_eq!(statuses.len(), 18);
        assert_eq!(
            statuses[0].1,
            Some(60_000),
            "60 ms after the 0 ms reference"
        );
        assert_eq!(statuses[1], (4, None));
        // An arrival before the one reported before it is a negative (large) delta.
        assert_eq!(statuses[2].1, Some(5_000));
    }

    /// Packets lost after the last one a message reported and before the next arrival are
    /// reported lost by the next message, which starts right after its predecessor: a sender
    /// whose packets arrive one per interval (a thin link) must see what its link drops.
    #[test]
    fn losses_between_two_messages_start_the_next_one() {
        let t0 = Instant::now();
        let mut r = TwccReceiver::new();
        for seq in 0u16..3 {
            r.handle_packet(t0 + MS * seq as u32, seq);
        }
        let (base, _, statuses) = read(&drain(&mut r, t0 + 50 * MS)[0]);
        assert_eq!((base, statuses.len()), (0, 3));
        // 3 to 7 lost, 8 arrives (16 ms after the reference, its arrival floored to 64 ms).
        r.handle_packet(t0 + 80 * MS, 8);
        let (base, _, statuses) = read(&drain(&mut r, t0 + 100 * MS)[0]);
        assert_eq!(base, 3);
        assert_eq!(
            statuses,
            vec![
                (3, None),
                (4, None),
                (5, None),
                (6, None),
                (7, None),
                (8, Some(16_000))
            ]
        );
        // A run of losses longer than a message takes: reported lost in whole messages, then
        // the arrival after them.
        r.handle_packet(t0 + 200 * MS, 1000);
        let sent = drain(&mut r, t0 + 200 * MS);
        let mut next = 9u16;
        let mut received = Vec::new();
        for packet in &sent {
            let (base, _, statuses) = read(packet);
            assert_eq!(base, next);
            next = base + statuses.len() as u16;
            received.extend(
                statuses
                    .iter()
                    .filter(|(_, t)| t.is_some())
                    .map(|(s, _)| *s),
            );
        }
        assert_eq!((next, received), (1001, vec![1000]));
    }

    #[test]
    fn sequence_numbers_wrap() {
        let t0 = Instant::now();
        let mut r = TwccReceiver::new();
        for (i, seq) in [65533u16, 65534, 65535, 0, 1].into_iter().enumerate() {
            r.handle_packet(t0 + MS * i as u32, seq);
        }
        let (base, _, statuses) = read(&drain(&mut r, t0 + 50 * MS)[0]);
        assert_eq!(base, 65533);
        assert_eq!(
            statuses.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![65533, 65534, 65535, 0, 1]
        );
        assert!(statuses.iter().all(|(_, t)| t.is_some()));
    }

    #[test]
    fn reordering_gives_negative_deltas_and_long_gaps_large_ones() {
        let t0 = Instant::now();
        let mut r = TwccReceiver::new();
        r.handle_packet(t0 + 10 * MS, 2);
        r.handle_packet(t0 + 11 * MS, 1);
        r.handle_packet(t0 + 12 * MS, 0);
        r.handle_packet(t0 + 500 * MS, 3); // 488 ms later: a two-byte delta
        let sent = drain(&mut r, t0 + 500 * MS);
        let (_, _, statuses) = read(&sent[0]);
        let times: Vec<i64> = statuses.iter().map(|(_, t)| t.unwrap()).collect();
        // Times count from the first arrival (packet 2, at 10 ms); the reference is packet 0's
        // arrival floored to 64 ms, 0 here.
        assert_eq!(times, vec![2_000, 1_000, 0, 490_000]);
    }

    #[test]
    fn a_long_run_takes_several_messages_and_deltas_over_8s_split_them() {
        let t0 = Instant::now();
        let mut r = TwccReceiver::new();
        for i in 0..1000u16 {
            if i % 10 != 3 {
                r.handle_packet(t0 + MS * i as u32 / 10, i);
            }
        }
        let sent = drain(&mut r, t0 + 100 * MS);
        assert_eq!(sent.len(), 3);
        let mut next = 0u16;
        for packet in &sent {
            assert!(packet.len() <= 1000, "{} bytes", packet.len());
            let (base, _, statuses) = read(packet);
            assert_eq!(base, next);
            next = base + statuses.len() as u16;
        }
        assert_eq!(next, 1000);

        // 10 s between two packets does not fit a delta: two messages.
        let mut r = TwccReceiver::new();
        r.handle_packet(t0, 0);
        r.handle_packet(t0 + Duration::from_secs(10), 1);
        let sent = drain(&mut r, t0 + Duration::from_secs(10));
        assert_eq!(sent.len(), 2);
        let (b0, _, s0) = read(&sent[0]);
        let (b1, c1, s1) = read(&sent[1]);
        assert_eq!((b0, s0.len(), b1, s1.len(), c1), (0, 1, 1, 1, 1));
    }

    #[test]
    fn state_stays_bounded_whatever_arrives() {
        let t0 = Instant::now();
        let mut r = TwccReceiver::new();
        let mut seq: u16 = 0;
        for i in 0..200_000u32 {
            // Jumps, repeats and reordering, reported every 50 ms of virtual time.
            seq = seq.wrapping_add(match i % 7 {
                0 => 30_000,
                1 => 65_535,
                _ => 3,
            });
            let now = t0 + MS * i;
            r.handle_packet(now, seq);
            let mut buf = Vec::new();
            while r.poll_feedback(now, 1, 2, &mut buf) {
                read(&buf);
            }
            assert!(r.window.len() as i64 <= HISTORY + MAX_GAP + 1);
        }
    }

    #[test]
    fn chunks_encode_runs_and_vectors() {
        // 20 arrivals in a row: one run-length chunk.
        let mut out = Vec::new();
        write_chunks(&[SYMBOL_SMALL; 20], &mut out);
        assert_eq!(out, [0x20, 20]);
        // Mixed, no large delta: a one-bit vector of 14.
        out.clear();
        write_chunks(&[1, 0, 1, 1, 0, 0, 1], &mut out);
        assert_eq!(out, [0b1010_1100, 0b1000_0000]);
        // With a large delta: a two-bit vector of 7.
        out.clear();
        write_chunks(&[1, 2, 0], &mut out);
        assert_eq!(out, [0b1101_1000, 0]);
    }
}
