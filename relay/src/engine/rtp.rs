//! RTP fixed-header access and in-place rewriting (RFC 3550 §5.1).
//!
//! The relay touches only the fixed header of a forwarded packet: SSRC, sequence number and
//! timestamp are rewritten in place, the rest (CSRCs, header extensions, payload) is carried as
//! is. Validation is strict enough that the offsets used for rewriting are always inside the
//! buffer.

/// Bytes in the fixed RTP header.
pub const FIXED_HEADER_LEN: usize = 12;

/// The fields of an RTP header the relay routes and rewrites by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit.
    pub marker: bool,
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Length of the header including CSRCs and extensions: where the payload starts.
    pub header_len: usize,
    /// Payload length, without padding.
    pub payload_len: usize,
}

/// SSRC of an RTP packet, readable before decryption (it is not encrypted in SRTP).
pub fn peek_ssrc(packet: &[u8]) -> Option<u32> {
    let b = packet.get(8..12)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Parse and validate the header of a plaintext RTP packet.
pub fn parse(packet: &[u8]) -> Option<RtpHeader> {
    if packet.len() < FIXED_HEADER_LEN || packet[0] >> 6 != 2 {
        return None;
    }
    let padding = packet[0] & 0x20 != 0;
    let extension = packet[0] & 0x10 != 0;
    let csrc_count = (packet[0] & 0x0f) as usize;
    let mut header_len = FIXED_HEADER_LEN + 4 * csrc_count;
    if extension {
        let ext = packet.get(header_len..header_len + 4)?;
        let words = u16::from_be_bytes([ext[2], ext[3]]) as usize;
        header_len += 4 + 4 * words;
    }
    if header_len > packet.len() {
        return None;
    }
    let mut payload_len = packet.len() - header_len;
    if padding {
        let pad = *packet.last()? as usize;
        if pad == 0 || pad > payload_len {
            return None;
        }
        payload_len -= pad;
    }
    Some(RtpHeader {
        marker: packet[1] & 0x80 != 0,
        payload_type: packet[1] & 0x7f,
        sequence: u16::from_be_bytes([packet[2], packet[3]]),
        timestamp: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
        ssrc: u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
        header_len,
        payload_len,
    })
}

/// Rewrite SSRC, sequence number and timestamp of a packet that [`parse`] accepted.
pub fn rewrite(packet: &mut [u8], ssrc: u32, sequence: u16, timestamp: u32) {
    packet[2..4].copy_from_slice(&sequence.to_be_bytes());
    packet[4..8].copy_from_slice(&timestamp.to_be_bytes());
    packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_rtp_crate_writes() {
        use webrtc_util::marshal::Marshal;
        let pkt = rtp::packet::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: true,
                payload_type: 96,
                sequence_number: 65535,
                timestamp: 0xdead_beef,
                ssrc: 0x1234_5678,
                csrc: vec![1, 2],
                extension: true,
                extension_profile: 0xbede,
                extensions: vec![rtp::header::Extension {
                    id: 3,
                    payload: bytes::Bytes::from_static(&[1, 2, 3]),
                }],
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(&[9; 50]),
        };
        let raw = pkt.marshal().unwrap();
        let h = parse(&raw).unwrap();
        assert!(h.marker);
        assert_eq!(h.payload_type, 96);
        assert_eq!(h.sequence, 65535);
        assert_eq!(h.timestamp, 0xdead_beef);
        assert_eq!(h.ssrc, 0x1234_5678);
        assert_eq!(h.payload_len, 50);
        assert_eq!(&raw[h.header_len..], &[9; 50][..]);
        assert_eq!(peek_ssrc(&raw), Some(0x1234_5678));

        let mut raw = raw.to_vec();
        rewrite(&mut raw, 7, 8, 9);
        let h2 = parse(&raw).unwrap();
        assert_eq!((h2.ssrc, h2.sequence, h2.timestamp), (7, 8, 9));
        assert_eq!(h2.header_len, h.header_len);
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(parse(&[0x80; 11]), None);
        assert_eq!(parse(&[0x40; 12]), None); // version 1
        let mut csrc = vec![0x8f, 96];
        csrc.resize(12, 0);
        assert_eq!(parse(&csrc), None); // 15 CSRCs announced, none present
        let mut ext = vec![0x90, 96];
        ext.resize(16, 0);
        ext[14] = 0xff; // extension length beyond the packet
        assert_eq!(parse(&ext), None);
        let mut pad = vec![0xa0, 96];
        pad.resize(13, 0);
        pad[12] = 5; // more padding than payload
        assert_eq!(parse(&pad), None);
    }
}
