//! RFC 7983 demultiplexing of one UDP 5-tuple into STUN, DTLS, RTP and RTCP.
//!
//! With BUNDLE and rtcp-mux every protocol of a participant shares one port, so the first byte
//! (and for RTP/RTCP the second) decides where a datagram goes. This module only classifies; it
//! never looks further into the packet.

/// What a datagram is, by its first bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PacketKind {
    /// First byte 0..=3 (RFC 7983 §7).
    Stun,
    /// First byte 20..=63.
    Dtls,
    /// First byte 128..=191 and a payload type outside the RTCP range.
    Rtp,
    /// First byte 128..=191 and second byte 192..=223 (RFC 5761 §4).
    Rtcp,
    /// Anything else (ZRTP, TURN channels, garbage, empty).
    Unknown,
}

/// Classify a datagram per RFC 7983 and RFC 5761.
pub fn classify(datagram: &[u8]) -> PacketKind {
    let Some(&first) = datagram.first() else {
        return PacketKind::Unknown;
    };
    match first {
        0..=3 => PacketKind::Stun,
        20..=63 => PacketKind::Dtls,
        128..=191 => match datagram.get(1) {
            // RTCP packet types 192..=223 occupy the whole byte (no marker bit), so they never
            // collide with the dynamic RTP payload types 96..=127 once the marker is set.
            Some(192..=223) => PacketKind::Rtcp,
            Some(_) => PacketKind::Rtp,
            None => PacketKind::Unknown,
        },
        _ => PacketKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7983_ranges() {
        assert_eq!(classify(&[0x00, 0x01]), PacketKind::Stun);
        assert_eq!(classify(&[0x03]), PacketKind::Stun);
        assert_eq!(classify(&[4]), PacketKind::Unknown);
        assert_eq!(classify(&[16]), PacketKind::Unknown); // ZRTP
        assert_eq!(classify(&[20]), PacketKind::Dtls);
        assert_eq!(classify(&[22, 0xfe, 0xfd]), PacketKind::Dtls);
        assert_eq!(classify(&[63]), PacketKind::Dtls);
        assert_eq!(classify(&[64]), PacketKind::Unknown); // TURN channel
        assert_eq!(classify(&[0x80, 96]), PacketKind::Rtp);
        assert_eq!(classify(&[0x80, 96 | 0x80]), PacketKind::Rtp); // marker set
        assert_eq!(classify(&[0x80, 200]), PacketKind::Rtcp); // SR
        assert_eq!(classify(&[0x81, 206]), PacketKind::Rtcp); // PSFB
        assert_eq!(classify(&[0x80]), PacketKind::Unknown);
        assert_eq!(classify(&[192, 0]), PacketKind::Unknown);
        assert_eq!(classify(&[]), PacketKind::Unknown);
    }
}
