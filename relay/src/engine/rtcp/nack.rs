//! Generic NACK (RFC 4585 §6.2.1): transport-layer feedback that names lost packets by a
//! packet id (PID) and a bitmask of the 16 after it (BLP).

/// RTCP packet type of transport-layer feedback (RFC 4585 §6.1).
pub const PT_RTPFB: u8 = 205;
/// Its format for a generic NACK.
pub const FMT_NACK: u8 = 1;

/// One FCI entry: packet `pid` and, for each bit `i` set in `blp`, packet `pid + i + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NackEntry {
    /// A lost packet.
    pub pid: u16,
    /// Which of the 16 following packets are lost too.
    pub blp: u16,
}

impl NackEntry {
    /// Every sequence number the entry names, in increasing order.
    pub fn sequences(self) -> impl Iterator<Item = u16> {
        std::iter::once(self.pid).chain(
            (0..16)
                .filter(move |i| self.blp & (1 << i) != 0)
                .map(move |i| self.pid.wrapping_add(i + 1)),
        )
    }
}

/// The media SSRC and the entries of a NACK packet (header included, padding excluded by the
/// caller); None if it is too short or its FCI is not whole entries.
pub fn parse(packet: &[u8]) -> Option<(u32, impl Iterator<Item = NackEntry> + '_)> {
    let media = packet.get(8..12)?;
    let media_ssrc = u32::from_be_bytes([media[0], media[1], media[2], media[3]]);
    let fci = &packet[12..];
    if !fci.len().is_multiple_of(4) {
        return None;
    }
    Some((
        media_ssrc,
        fci.chunks_exact(4).map(|e| NackEntry {
            pid: u16::from_be_bytes([e[0], e[1]]),
            blp: u16::from_be_bytes([e[2], e[3]]),
        }),
    ))
}

/// Append a NACK packet from `sender_ssrc` about `media_ssrc` to `out`. At most 255 entries
/// fit one packet (its length field); the rest are left for the caller's next packet, and the
/// number written is returned.
pub fn write(
    sender_ssrc: u32,
    media_ssrc: u32,
    entries: &[(u16, u16)],
    out: &mut Vec<u8>,
) -> usize {
    let n = entries.len().min(255);
    let words = (2 + n) as u16;
    out.extend_from_slice(&[0x80 | FMT_NACK, PT_RTPFB]);
    out.extend_from_slice(&words.to_be_bytes());
    out.extend_from_slice(&sender_ssrc.to_be_bytes());
    out.extend_from_slice(&media_ssrc.to_be_bytes());
    for &(pid, blp) in &entries[..n] {
        out.extend_from_slice(&pid.to_be_bytes());
        out.extend_from_slice(&blp.to_be_bytes());
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
    use webrtc_util::marshal::{Marshal, Unmarshal};

    #[test]
    fn what_we_write_the_rtcp_crate_reads_and_back() {
        let mut raw = Vec::new();
        assert_eq!(write(1, 2, &[(100, 0b101), (65_535, 0x8000)], &mut raw), 2);
        let theirs = TransportLayerNack::unmarshal(&mut bytes::Bytes::from(raw.clone())).unwrap();
        assert_eq!(theirs.sender_ssrc, 1);
        assert_eq!(theirs.media_ssrc, 2);
        assert_eq!(
            theirs.nacks,
            vec![
                NackPair {
                    packet_id: 100,
                    lost_packets: 0b101
                },
                NackPair {
                    packet_id: 65_535,
                    lost_packets: 0x8000
                },
            ]
        );
        let again = theirs.marshal().unwrap();
        assert_eq!(&again[..], &raw[..]);
        let (media, entries) = parse(&raw).unwrap();
        assert_eq!(media, 2);
        let seqs: Vec<u16> = entries.flat_map(NackEntry::sequences).collect();
        assert_eq!(seqs, vec![100, 101, 103, 65_535, 15]);
    }

    #[test]
    fn short_or_ragged_packets_are_refused() {
        assert!(parse(&[0x81, 205, 0, 1, 0, 0, 0, 1]).is_none());
        assert!(parse(&[0x81, 205, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, 9]).is_none());
        assert_eq!(
            parse(&[0x81, 205, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2])
                .unwrap()
                .1
                .count(),
            0
        );
    }

    #[test]
    fn at_most_255_entries_per_packet() {
        let entries = vec![(0u16, 0u16); 300];
        let mut raw = Vec::new();
        assert_eq!(write(1, 2, &entries, &mut raw), 255);
        assert_eq!(raw.len(), 12 + 4 * 255);
        assert_eq!(u16::from_be_bytes([raw[2], raw[3]]), 257);
    }
}
