//! The RTP retransmission payload format (RFC 4588 §4): a lost packet sent again on a stream
//! of its own, with the original sequence number (OSN) in the first two bytes of the payload.
//!
//! A retransmission on its own SSRC and sequence space keeps the original stream's loss
//! statistics honest and, under SRTP, never repeats a packet index. Publishers repair toward
//! the relay this way, and the relay repairs toward subscribers the same way.

use super::rtp;

/// What a packet on a retransmission stream turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwrapped {
    /// A retransmission of packet `original_sequence`, rebuilt in the output buffer.
    Repair {
        /// The sequence number the packet had on the original stream.
        original_sequence: u16,
    },
    /// Nothing but padding: a bandwidth probe, which carries no media.
    Probe,
}

/// Rebuild the original packet from a retransmission `packet`: payload type `original_pt`,
/// SSRC `original_ssrc`, the OSN as its sequence number, the payload after the OSN. Header
/// extensions, CSRCs, marker and timestamp are kept; padding is dropped. None if `packet` is
/// not a valid RTP packet.
pub fn unwrap(
    packet: &[u8],
    original_pt: u8,
    original_ssrc: u32,
    out: &mut Vec<u8>,
) -> Option<Unwrapped> {
    out.clear();
    let h = rtp::parse(packet)?;
    if h.payload_len < 2 {
        // No OSN: padding only (RFC 4588 §4 leaves such packets to probing).
        return Some(Unwrapped::Probe);
    }
    let payload = &packet[h.header_len..h.header_len + h.payload_len];
    let osn = u16::from_be_bytes([payload[0], payload[1]]);
    out.extend_from_slice(&packet[..h.header_len]);
    out.extend_from_slice(&payload[2..]);
    out[0] &= !0x20;
    out[1] = (out[1] & 0x80) | (original_pt & 0x7f);
    rtp::rewrite(out, original_ssrc, osn, h.timestamp);
    Some(Unwrapped::Repair {
        original_sequence: osn,
    })
}

/// Write `original` (a packet [`rtp::parse`] accepts) as a retransmission into `out`: payload
/// type `rtx_pt`, SSRC `rtx_ssrc`, sequence number `rtx_sequence`, its sequence number
/// prepended to the payload. Padding is dropped. False if `original` is not valid RTP.
pub fn wrap(
    original: &[u8],
    rtx_pt: u8,
    rtx_ssrc: u32,
    rtx_sequence: u16,
    out: &mut Vec<u8>,
) -> bool {
    out.clear();
    let Some(h) = rtp::parse(original) else {
        return false;
    };
    out.extend_from_slice(&original[..h.header_len]);
    out.extend_from_slice(&h.sequence.to_be_bytes());
    out.extend_from_slice(&original[h.header_len..h.header_len + h.payload_len]);
    out[0] &= !0x20;
    out[1] = (out[1] & 0x80) | (rtx_pt & 0x7f);
    rtp::rewrite(out, rtx_ssrc, rtx_sequence, h.timestamp);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// V=2, X=1, marker, PT 96, seq 0x1234, ts 0x01020304, SSRC 0xaabbccdd, a one-byte
    /// extension block with element 1 = "0", payload 0x10 0x20 0x30.
    const ORIGINAL: [u8; 23] = [
        0x90, 0xe0, 0x12, 0x34, 0x01, 0x02, 0x03, 0x04, 0xaa, 0xbb, 0xcc, 0xdd, 0xbe, 0xde, 0x00,
        0x01, 0x10, b'0', 0x00, 0x00, 0x10, 0x20, 0x30,
    ];

    #[test]
    fn wrap_then_unwrap_gives_the_original_back() {
        let mut rtx = Vec::new();
        assert!(wrap(&ORIGINAL, 97, 0x0102_0304, 7, &mut rtx));
        let h = rtp::parse(&rtx).unwrap();
        assert_eq!(
            (h.payload_type, h.ssrc, h.sequence, h.timestamp, h.marker),
            (97, 0x0102_0304, 7, 0x0102_0304, true)
        );
        // RFC 4588 §4: the OSN leads the payload, then the original payload.
        assert_eq!(&rtx[h.header_len..], &[0x12, 0x34, 0x10, 0x20, 0x30]);
        let mut back = Vec::new();
        assert_eq!(
            unwrap(&rtx, 96, 0xaabb_ccdd, &mut back),
            Some(Unwrapped::Repair {
                original_sequence: 0x1234
            })
        );
        assert_eq!(back, ORIGINAL);
    }

    #[test]
    fn padding_is_dropped_and_padding_only_is_a_probe() {
        // The original with 4 bytes of padding (P bit, last byte = 4).
        let mut padded = ORIGINAL.to_vec();
        padded[0] |= 0x20;
        padded.extend_from_slice(&[0, 0, 0, 4]);
        let mut rtx = Vec::new();
        assert!(wrap(&padded, 97, 5, 1, &mut rtx));
        assert_eq!(rtx[0] & 0x20, 0);
        let mut back = Vec::new();
        unwrap(&rtx, 96, 0xaabb_ccdd, &mut back).unwrap();
        assert_eq!(back, ORIGINAL);

        // What Chromium probes with: a header and 255 bytes of padding, no OSN.
        let mut probe = vec![0xa0, 97, 0, 9, 0, 0, 0, 1, 0, 0, 0, 5];
        probe.extend_from_slice(&[0; 254]);
        probe.push(255);
        assert_eq!(unwrap(&probe, 96, 1, &mut back), Some(Unwrapped::Probe));
    }

    #[test]
    fn malformed_packets_are_refused() {
        let mut out = Vec::new();
        assert_eq!(unwrap(&ORIGINAL[..10], 96, 1, &mut out), None);
        assert!(!wrap(&ORIGINAL[..15], 97, 1, 1, &mut out));
        // Padding longer than the payload.
        let mut bad = ORIGINAL.to_vec();
        bad[0] |= 0x20;
        *bad.last_mut().unwrap() = 200;
        assert_eq!(unwrap(&bad, 96, 1, &mut out), None);
    }
}
