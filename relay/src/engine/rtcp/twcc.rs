//! Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01
//! §3.1), read side: what a subscriber says about the packets the relay sent it, for the
//! relay's estimate of that subscriber's bandwidth. ([`crate::engine::twcc`] writes it, toward
//! publishers.)
//!
//! After the RTCP header and the two SSRCs: a base sequence number and a count of packets, a
//! 24-bit signed reference time in 64 ms units with an 8-bit feedback counter, packet status
//! chunks (run length, or vectors of 14 one-bit or 7 two-bit symbols) covering `count`
//! packets, then one receive delta per packet that arrived, in 250 µs units: one byte
//! (0..=63.75 ms) for a "small" symbol, two bytes signed for a "large" one.

/// Its format in transport-layer feedback (PT 205).
pub const FMT_TWCC: u8 = 15;

/// Packets one message may describe here; a count above it is refused as unreasonable (a
/// browser reports every 50-100 ms, a few hundred packets at most).
pub const MAX_PACKETS: u16 = 4096;

const DELTA_UNIT_US: i64 = 250;
const REFERENCE_UNIT_US: i64 = 64_000;

const SYMBOL_NOT_RECEIVED: u8 = 0;
const SYMBOL_SMALL: u8 = 1;
const SYMBOL_LARGE: u8 = 2;

/// The fixed part of a feedback message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TwccHeader {
    /// Who sent the feedback.
    pub sender_ssrc: u32,
    /// The media source it names (informative: the feedback covers the whole transport).
    pub media_ssrc: u32,
    /// The transport-wide sequence number of the first packet described.
    pub base_sequence: u16,
    /// Packets described.
    pub count: u16,
    /// Counts messages, so that a lost one can be noticed.
    pub feedback_count: u8,
}

/// What the feedback says of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketStatus {
    /// Its transport-wide sequence number.
    pub sequence: u16,
    /// When it arrived, in µs on the receiver's clock (reference time plus the deltas up to
    /// it); None when it did not arrive (yet).
    pub arrival_us: Option<i64>,
}

/// Read a feedback message (header included; padding excluded by the caller, as the compound
/// walk does) into `out` (cleared first), one entry per packet described, in sequence order.
/// None, with `out` left empty, when it is not well formed: too short, a count over
/// [`MAX_PACKETS`], chunks that do not cover the count, deltas missing, a reserved symbol.
pub fn parse(packet: &[u8], out: &mut Vec<PacketStatus>) -> Option<TwccHeader> {
    out.clear();
    let parsed = parse_into(packet, out);
    if parsed.is_none() {
        out.clear();
    }
    parsed
}

fn parse_into(packet: &[u8], out: &mut Vec<PacketStatus>) -> Option<TwccHeader> {
    let fixed = packet.get(..20)?;
    let word = |i: usize| u32::from_be_bytes([fixed[i], fixed[i + 1], fixed[i + 2], fixed[i + 3]]);
    let header = TwccHeader {
        sender_ssrc: word(4),
        media_ssrc: word(8),
        base_sequence: u16::from_be_bytes([fixed[12], fixed[13]]),
        count: u16::from_be_bytes([fixed[14], fixed[15]]),
        feedback_count: fixed[19],
    };
    if header.count > MAX_PACKETS {
        return None;
    }
    // 24-bit two's complement, sign-extended.
    let reference = (word(16) as i32) >> 8;
    let mut rest = &packet[20..];

    // The chunks: symbols for `count` packets (a chunk may describe more; the excess is
    // padding and ignored).
    let count = header.count as usize;
    let mut sequence = header.base_sequence;
    while out.len() < count {
        let (chunk, tail) = rest.split_first_chunk::<2>()?;
        rest = tail;
        let chunk = u16::from_be_bytes(*chunk);
        let mut push = |symbol: u8| -> Option<()> {
            if out.len() < count {
                if symbol > SYMBOL_LARGE {
                    return None;
                }
                // The symbol rides in `arrival_us` until the deltas are read.
                out.push(PacketStatus {
                    sequence,
                    arrival_us: (symbol != SYMBOL_NOT_RECEIVED).then_some(symbol as i64),
                });
                sequence = sequence.wrapping_add(1);
            }
            Some(())
        };
        if chunk & 0x8000 == 0 {
            // Run length: 2-bit symbol, 13-bit length.
            let symbol = ((chunk >> 13) & 0x3) as u8;
            for _ in 0..(chunk & 0x1fff) {
                push(symbol)?;
            }
        } else if chunk & 0x4000 == 0 {
            // Status vector of 14 one-bit symbols.
            for k in (0..14).rev() {
                push(((chunk >> k) & 0x1) as u8)?;
            }
        } else {
            // Status vector of 7 two-bit symbols.
            for k in (0..7).rev() {
                push(((chunk >> (2 * k)) & 0x3) as u8)?;
            }
        }
    }

    // The deltas, one per arrived packet, accumulated from the reference time.
    let mut at_us = reference as i64 * REFERENCE_UNIT_US;
    for status in out.iter_mut() {
        let Some(symbol) = status.arrival_us else {
            continue;
        };
        let delta = if symbol == SYMBOL_SMALL as i64 {
            let (d, tail) = rest.split_first()?;
            rest = tail;
            *d as i64
        } else {
            let (d, tail) = rest.split_first_chunk::<2>()?;
            rest = tail;
            i16::from_be_bytes(*d) as i64
        };
        at_us += delta * DELTA_UNIT_US;
        status.arrival_us = Some(at_us);
    }
    Some(header)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::engine::twcc::TwccReceiver;

    fn feedback(arrivals: &[(u16, u64)]) -> Vec<u8> {
        let t0 = Instant::now();
        let mut r = TwccReceiver::new();
        for &(seq, ms) in arrivals {
            r.handle_packet(t0 + Duration::from_millis(ms), seq);
        }
        let mut out = Vec::new();
        let last = arrivals.iter().map(|a| a.1).max().unwrap_or(0);
        assert!(r.poll_feedback(t0 + Duration::from_millis(last + 100), 1, 2, &mut out));
        // The writer pads; the compound walk hands parsers the packet without its padding.
        if out[0] & 0x20 != 0 {
            let pad = *out.last().unwrap() as usize;
            out.truncate(out.len() - pad);
        }
        out
    }

    #[test]
    fn reads_back_what_the_relay_writes_with_losses_and_large_gaps() {
        // 65534.. across the wrap; 2 and 3 lost; a 300 ms pause needs a two-byte delta.
        let sent: Vec<(u16, u64)> = vec![
            (65_534, 10),
            (65_535, 12),
            (0, 15),
            (1, 15),
            (4, 20),
            (5, 320),
            (6, 321),
        ];
        let packet = feedback(&sent);
        let mut got = Vec::new();
        let h = parse(&packet, &mut got).expect("well formed");
        assert_eq!((h.sender_ssrc, h.media_ssrc), (1, 2));
        assert_eq!((h.base_sequence, h.count), (65_534, 9));
        assert_eq!(h.feedback_count, 0);
        let seqs: Vec<u16> = got.iter().map(|s| s.sequence).collect();
        assert_eq!(seqs, [65_534, 65_535, 0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(got[4].arrival_us, None);
        assert_eq!(got[5].arrival_us, None);
        // Arrival times relative to each other, exact to the 250 µs unit.
        let first = got[0].arrival_us.unwrap();
        let rel: Vec<Option<i64>> = got
            .iter()
            .map(|s| s.arrival_us.map(|a| a - first))
            .collect();
        assert_eq!(
            rel,
            [
                Some(0),
                Some(2_000),
                Some(5_000),
                Some(5_000),
                None,
                None,
                Some(10_000),
                Some(310_000),
                Some(311_000)
            ]
        );
    }

    #[test]
    fn every_chunk_kind_and_a_negative_reference() {
        // Base 10, count 28, reference -1 (0xffffff: 64 ms before the receiver's zero),
        // feedback count 9.
        let mut p = vec![0x8f, 205, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 10, 0, 28];
        p.extend_from_slice(&[0xff, 0xff, 0xff, 9]);
        // A run of 7 small; a one-bit vector of 14 (received, lost, …); a two-bit vector of
        // 7: large, lost, small, then lost.
        p.extend_from_slice(&(0x2000u16 | 7).to_be_bytes());
        p.extend_from_slice(&0b1010_1010_1010_1010u16.to_be_bytes());
        p.extend_from_slice(&0xe100u16.to_be_bytes());
        // Deltas: 1 unit for each of the run, 2 for each received of the one-bit vector, then
        // -4 (two bytes) and 3.
        p.extend(std::iter::repeat_n(1u8, 7));
        p.extend(std::iter::repeat_n(2u8, 7));
        p.extend_from_slice(&(-4i16).to_be_bytes());
        p.push(3);
        let mut got = Vec::new();
        let h = parse(&p, &mut got).expect("well formed");
        assert_eq!(h.feedback_count, 9);
        assert_eq!(got.len(), 28);
        assert_eq!((got[0].sequence, got[27].sequence), (10, 37));
        let base = -REFERENCE_UNIT_US;
        let at = |i: usize| got[i].arrival_us.map(|a| a - base);
        assert_eq!(at(0), Some(250));
        assert_eq!(at(6), Some(1_750));
        assert_eq!(at(7), Some(2_250));
        assert_eq!(at(8), None);
        assert_eq!(at(19), Some(5_250));
        assert_eq!(at(20), None);
        assert_eq!(
            at(21),
            Some(4_250),
            "a negative delta: reordered on the way"
        );
        assert_eq!(at(22), None);
        assert_eq!(at(23), Some(5_000));
        assert_eq!(at(27), None);
        assert_eq!(got.iter().filter(|s| s.arrival_us.is_some()).count(), 16);
    }

    #[test]
    fn malformed_messages_are_refused_and_leave_nothing() {
        let good = feedback(&[(1, 0), (2, 1), (3, 2)]);
        let mut got = vec![PacketStatus {
            sequence: 0,
            arrival_us: None,
        }];
        assert!(parse(&good[..19], &mut got).is_none());
        assert!(got.is_empty());
        // Deltas cut short.
        assert!(parse(&good[..good.len() - 1], &mut got).is_none());
        assert!(got.is_empty());
        // Chunks that do not cover the count.
        let mut more = good.clone();
        more[14..16].copy_from_slice(&200u16.to_be_bytes());
        assert!(parse(&more, &mut got).is_none());
        // An unreasonable count.
        let mut huge = good.clone();
        huge[14..16].copy_from_slice(&(MAX_PACKETS + 1).to_be_bytes());
        assert!(parse(&huge, &mut got).is_none());
        // The reserved symbol (3) in a run.
        let mut reserved = vec![
            0x8f, 205, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0,
        ];
        reserved.extend_from_slice(&(0x6000u16 | 1).to_be_bytes());
        assert!(parse(&reserved, &mut got).is_none());
        assert!(parse(&good, &mut got).is_some());
        assert_eq!(got.len(), 3);
    }
}
