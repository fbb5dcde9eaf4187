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

/// Length of a valid RTP header at the start of `packet`, including CSRCs and the header
/// extension; None if the header is malformed.
///
/// RFC 8285 extension elements are walked too and must each lie inside the extension block.
/// This runs on SRTP packets before decryption (the header is in the clear), so that nothing
/// downstream ever parses a header whose declared lengths run past the packet.
pub fn header_len(packet: &[u8]) -> Option<usize> {
    if packet.len() < FIXED_HEADER_LEN || packet[0] >> 6 != 2 {
        return None;
    }
    let extension = packet[0] & 0x10 != 0;
    let csrc_count = (packet[0] & 0x0f) as usize;
    let mut len = FIXED_HEADER_LEN + 4 * csrc_count;
    if extension {
        let ext = packet.get(len..len + 4)?;
        let profile = u16::from_be_bytes([ext[0], ext[1]]);
        let words = u16::from_be_bytes([ext[2], ext[3]]) as usize;
        let block = packet.get(len + 4..len + 4 + 4 * words)?;
        if !extension_elements_fit(profile, block) {
            return None;
        }
        len += 4 + 4 * words;
    }
    (len <= packet.len()).then_some(len)
}

/// Whether every RFC 8285 element of an extension block lies inside it.
fn extension_elements_fit(profile: u16, block: &[u8]) -> bool {
    let mut i = 0;
    if profile == 0xbede {
        while i < block.len() {
            let b = block[i];
            if b == 0 {
                i += 1; // padding
                continue;
            }
            if b >> 4 == 15 {
                return true; // reserved id: the rest is ignored
            }
            let len = (b & 0x0f) as usize + 1;
            if i + 1 + len > block.len() {
                return false;
            }
            i += 1 + len;
        }
    } else if profile & 0xfff0 == 0x1000 {
        while i < block.len() {
            if block[i] == 0 {
                i += 1;
                continue;
            }
            let Some(&len) = block.get(i + 1) else {
                return false;
            };
            if i + 2 + len as usize > block.len() {
                return false;
            }
            i += 2 + len as usize;
        }
    }
    true
}

/// The value of RFC 8285 header-extension element `id` (one-byte or two-byte form), if the
/// packet carries it and its header is well formed.
pub fn extension(packet: &[u8], id: u8) -> Option<&[u8]> {
    extension_range(packet, id).map(|r| &packet[r])
}

/// Where in `packet` the value of extension element `id` lies.
fn extension_range(packet: &[u8], id: u8) -> Option<std::ops::Range<usize>> {
    header_len(packet)?;
    if packet[0] & 0x10 == 0 || id == 0 {
        return None;
    }
    let start = FIXED_HEADER_LEN + 4 * (packet[0] & 0x0f) as usize;
    let profile = u16::from_be_bytes([packet[start], packet[start + 1]]);
    let words = u16::from_be_bytes([packet[start + 2], packet[start + 3]]) as usize;
    // header_len checked that the block and every element in it lie inside the packet.
    let block_at = start + 4;
    let block = &packet[block_at..block_at + 4 * words];
    let mut i = 0;
    while i < block.len() {
        if block[i] == 0 {
            i += 1;
            continue;
        }
        let (element, len, value_at) = if profile == 0xbede {
            if block[i] >> 4 == 15 {
                return None;
            }
            (block[i] >> 4, (block[i] & 0x0f) as usize + 1, i + 1)
        } else if profile & 0xfff0 == 0x1000 {
            (block[i], block[i + 1] as usize, i + 2)
        } else {
            return None;
        };
        if element == id {
            block.get(value_at..value_at + len)?;
            return Some(block_at + value_at..block_at + value_at + len);
        }
        i = value_at + len;
    }
    None
}

/// Give a packet the relay's numbers in place: its payload type becomes `payload_type`, and
/// each header-extension element's id `i` becomes `ids[i]`; an element whose new id is 0 is
/// erased (its bytes become padding, which every reader skips). False, changing nothing, if the
/// header does not parse or the one-byte form would need an id above 14.
pub fn renumber(packet: &mut [u8], payload_type: u8, ids: &[u8; 256]) -> bool {
    if header_len(packet).is_none() || payload_type > 127 {
        return false;
    }
    if packet[0] & 0x10 != 0 {
        let start = FIXED_HEADER_LEN + 4 * (packet[0] & 0x0f) as usize;
        let profile = u16::from_be_bytes([packet[start], packet[start + 1]]);
        let words = u16::from_be_bytes([packet[start + 2], packet[start + 3]]) as usize;
        let block = &mut packet[start + 4..start + 4 + 4 * words];
        let one_byte = profile == 0xbede;
        if !one_byte && profile & 0xfff0 != 0x1000 {
            // An extension block of another profile is left alone: nothing reads it.
        } else if one_byte && !renumber_elements(block, ids, true, true) {
            return false;
        } else {
            renumber_elements(block, ids, one_byte, false);
        }
    }
    packet[1] = (packet[1] & 0x80) | payload_type;
    true
}

/// Walk an extension block's elements (header_len checked they fit), renumbering them, or
/// with `check` only seeing whether every new id fits the one-byte form.
fn renumber_elements(block: &mut [u8], ids: &[u8; 256], one_byte: bool, check: bool) -> bool {
    let mut i = 0;
    while i < block.len() {
        if block[i] == 0 {
            i += 1;
            continue;
        }
        let (id, end) = if one_byte {
            if block[i] >> 4 == 15 {
                return true;
            }
            (block[i] >> 4, i + 2 + (block[i] & 0x0f) as usize)
        } else {
            (block[i], i + 2 + block[i + 1] as usize)
        };
        let new = ids[usize::from(id)];
        if check {
            if new > 14 {
                return false;
            }
        } else if new == 0 {
            block[i..end].fill(0);
        } else if one_byte {
            block[i] = (new << 4) | (block[i] & 0x0f);
        } else {
            block[i] = new;
        }
        i = end;
    }
    true
}

/// The transport-wide sequence number carried in extension element `id`, if any.
pub fn transport_sequence(packet: &[u8], id: u8) -> Option<u16> {
    match extension(packet, id)? {
        [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

/// Parse and validate the header of a plaintext RTP packet (header and padding).
pub fn parse(packet: &[u8]) -> Option<RtpHeader> {
    let header_len = header_len(packet)?;
    let padding = packet[0] & 0x20 != 0;
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

/// Copy `packet` into `out` with the RFC 8285 one-byte header-extension element `id` set to
/// `value` (added if absent, replaced if present), keeping every other element. SFUs need this
/// for the MID extension: each subscriber's m-section has its own mid.
///
/// Returns false (and leaves `out` empty) when the packet uses an unknown extension profile,
/// or the value does not fit one element (1..=16 bytes); the caller then forwards the packet
/// as it is.
pub fn with_extension(packet: &[u8], id: u8, value: &[u8], out: &mut Vec<u8>) -> bool {
    with_extensions(packet, &[(id, value)], out)
}

/// [`with_extension`] for several elements at once: each `(id, value)` is set, in the order
/// given, after the packet's other elements, in the packet's form (one-byte, or two-byte). False
/// (and `out` empty) if any id is outside 1..=14 or appears twice, or any value is empty or
/// longer than 16 bytes.
pub fn with_extensions(packet: &[u8], elements: &[(u8, &[u8])], out: &mut Vec<u8>) -> bool {
    with_extensions_at(packet, elements, out).is_some()
}

/// [`with_extensions`], returning where in `out` the last element's value starts (None where
/// it returns false): the relay writes a packet's transport-wide number there when the packet
/// leaves its pacer, without walking the header again.
pub fn with_extensions_at(
    packet: &[u8],
    elements: &[(u8, &[u8])],
    out: &mut Vec<u8>,
) -> Option<usize> {
    write_with_extensions(packet, elements, out).map(|w| w.value_at)
}

/// Where [`write_with_extensions`] put things in its copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Where the last element's value starts.
    pub value_at: usize,
    /// The copy's header length (where its payload starts).
    pub header_len: usize,
}

/// [`with_extensions_at`], returning the copy's header length as well: a caller that
/// rewrites the payload (a VP8 descriptor) finds it without walking the header again.
pub fn write_with_extensions(
    packet: &[u8],
    elements: &[(u8, &[u8])],
    out: &mut Vec<u8>,
) -> Option<Written> {
    let written = write_extensions(packet, elements, out);
    if written.is_none() {
        out.clear();
    }
    written
}

/// The packet's header read as [`header_len`] reads it, in the one walk that copies its
/// elements: every copy to a subscriber goes through here, and the walk to check them
/// before the walk to copy them cost about 60 instructions a copy (`benches/callgrind.sh`:
/// header_rewrite 844 → 785, a copy at fan-out 100 5,566 → 5,512).
fn write_extensions(packet: &[u8], elements: &[(u8, &[u8])], out: &mut Vec<u8>) -> Option<Written> {
    out.clear();
    let mut ids = 0u16;
    for &(id, value) in elements {
        if !(1..=14).contains(&id) || value.is_empty() || value.len() > 16 || ids & 1 << id != 0 {
            return None;
        }
        ids |= 1 << id;
    }
    if packet.len() < FIXED_HEADER_LEN || packet[0] >> 6 != 2 {
        return None;
    }
    let fixed = FIXED_HEADER_LEN + 4 * (packet[0] & 0x0f) as usize;
    let has_extension = packet[0] & 0x10 != 0;
    let (profile, block, header_len) = if has_extension {
        let ext = packet.get(fixed..fixed + 4)?;
        let words = u16::from_be_bytes([ext[2], ext[3]]) as usize;
        let end = fixed + 4 + 4 * words;
        let profile = u16::from_be_bytes([ext[0], ext[1]]);
        (Some(profile), packet.get(fixed + 4..end)?, end)
    } else if fixed <= packet.len() {
        (None, &[][..], fixed)
    } else {
        return None;
    };
    // A packet in the two-byte form (RFC 8285 §4.3: what a browser sends when an element is
    // longer than 16 bytes, as the AV1 dependency descriptor's structure is) stays in it.
    let two_byte = match profile {
        None | Some(0xbede) => false,
        Some(p) if p & 0xfff0 == 0x1000 => true,
        Some(_) => return None,
    };
    // Written straight into `out` (a pooled buffer): fixed header, extension header with its
    // length patched in at the end, the kept elements, ours, padding, payload.
    out.extend_from_slice(&packet[..fixed]);
    out[0] |= 0x10;
    match profile {
        Some(p) if two_byte => out.extend_from_slice(&[(p >> 8) as u8, p as u8, 0, 0]),
        _ => out.extend_from_slice(&[0xbe, 0xde, 0, 0]),
    }
    let elements_start = out.len();
    let mut i = 0;
    while i < block.len() {
        let b = block[i];
        if b == 0 {
            i += 1;
            continue;
        }
        let (id, end) = if two_byte {
            (b, i + 2 + usize::from(*block.get(i + 1)?))
        } else if b >> 4 == 15 {
            // A reserved id: the rest of the block is ignored (RFC 8285 §4.2).
            break;
        } else {
            (b >> 4, i + 2 + usize::from(b & 0x0f))
        };
        // An element that runs past its block: the header is malformed.
        let element = block.get(i..end)?;
        if id > 14 || ids & 1 << id == 0 {
            out.extend_from_slice(element);
        }
        i = end;
    }
    let mut last = out.len();
    for &(id, value) in elements {
        if two_byte {
            out.extend_from_slice(&[id, value.len() as u8]);
        } else {
            out.push(id << 4 | (value.len() - 1) as u8);
        }
        last = out.len();
        out.extend_from_slice(value);
    }
    while !(out.len() - elements_start).is_multiple_of(4) {
        out.push(0);
    }
    let words = ((out.len() - elements_start) / 4) as u16;
    out[elements_start - 2..elements_start].copy_from_slice(&words.to_be_bytes());
    let copy_header_len = out.len();
    out.extend_from_slice(&packet[header_len..]);
    Some(Written {
        value_at: last,
        header_len: copy_header_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet with extension elements in the one-byte (or two-byte) form.
    fn with_elements(two_byte: bool, elements: &[(u8, &[u8])]) -> Vec<u8> {
        let mut p = vec![0x80, 98, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        if two_byte {
            let mut block = Vec::new();
            for (id, v) in elements {
                block.extend_from_slice(&[*id, v.len() as u8]);
                block.extend_from_slice(v);
            }
            block.resize(block.len().div_ceil(4) * 4, 0);
            p[0] |= 0x10;
            p.extend_from_slice(&[0x10, 0x00]);
            p.extend_from_slice(&((block.len() / 4) as u16).to_be_bytes());
            p.extend_from_slice(&block);
        } else {
            let mut out = Vec::new();
            assert!(with_extensions(&p, elements, &mut out));
            p = out;
        }
        p.extend_from_slice(&[7; 20]);
        p
    }

    fn table(pairs: &[(u8, u8)]) -> [u8; 256] {
        let mut t = [0u8; 256];
        for &(from, to) in pairs {
            t[usize::from(from)] = to;
        }
        t
    }

    #[test]
    fn renumbering_maps_the_payload_type_and_ids_and_erases_the_rest() {
        for two_byte in [false, true] {
            let mut p = with_elements(two_byte, &[(4, b"m0"), (3, &[0, 9]), (9, &[1, 2, 3])]);
            let payload = p[p.len() - 20..].to_vec();
            // The publisher's mid is 4 and its transport-wide sequence 3; the relay's are 1 and
            // 3; its element 9 means nothing to the relay.
            assert!(renumber(&mut p, 96, &table(&[(4, 1), (3, 3)])));
            let h = parse(&p).unwrap();
            assert_eq!(h.payload_type, 96);
            assert_eq!(extension(&p, 1), Some(&b"m0"[..]), "two-byte {two_byte}");
            assert_eq!(transport_sequence(&p, 3), Some(9));
            assert_eq!(extension(&p, 4), None);
            assert_eq!(extension(&p, 9), None);
            assert_eq!(&p[p.len() - 20..], &payload[..]);
            assert_eq!(header_len(&p), Some(h.header_len));
        }
    }

    #[test]
    fn renumbering_keeps_the_marker_and_refuses_ids_the_one_byte_form_cannot_hold() {
        let mut p = with_elements(false, &[(4, b"m0")]);
        p[1] |= 0x80;
        let before = p.clone();
        assert!(!renumber(&mut p, 96, &table(&[(4, 20)])));
        assert_eq!(p, before);
        assert!(!renumber(&mut p, 200, &table(&[(4, 1)])));
        assert!(renumber(&mut p, 111, &table(&[(4, 1)])));
        assert_eq!(p[1], 0x80 | 111);
        // The two-byte form takes any id.
        let mut p = with_elements(true, &[(4, b"m0")]);
        assert!(renumber(&mut p, 96, &table(&[(4, 20)])));
        assert_eq!(extension(&p, 20), Some(&b"m0"[..]));
        // Without extensions, only the payload type changes; a bad header, nothing.
        let mut p = vec![0x80, 98, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 5];
        assert!(renumber(&mut p, 96, &[0; 256]));
        assert_eq!(p[1], 96);
        assert!(!renumber(&mut [0x80, 98, 0], 96, &[0; 256]));
    }

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
    fn the_last_elements_value_is_found_where_it_was_written() {
        let mut packet = vec![0x80, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        packet.extend_from_slice(&[0xaa; 20]);
        let mut out = Vec::new();
        let at = with_extensions_at(&packet, &[(1, b"0"), (5, &[0, 0])], &mut out).unwrap();
        assert_eq!(transport_sequence(&out, 5), Some(0));
        out[at..at + 2].copy_from_slice(&0xbeef_u16.to_be_bytes());
        assert_eq!(transport_sequence(&out, 5), Some(0xbeef));
        assert_eq!(extension(&out, 1), Some(&b"0"[..]));
        assert_eq!(&out[out.len() - 20..], &[0xaa; 20][..]);
        // Refused: nothing written, no position.
        assert_eq!(with_extensions_at(&packet, &[(15, b"0")], &mut out), None);
        assert!(out.is_empty());
    }

    #[test]
    fn a_two_byte_header_stays_two_byte_with_its_long_elements() {
        // A 20-byte element (as a dependency descriptor with its structure) and a 1-byte one,
        // in the two-byte form, then padding.
        let mut packet = vec![0x90, 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0x10, 0x00, 0, 7];
        packet.extend_from_slice(&[8, 20]);
        packet.extend(1..=20u8);
        packet.extend_from_slice(&[1, 1, b'9', 0, 0, 0]);
        packet.extend_from_slice(&[0xaa; 30]);
        assert_eq!(header_len(&packet), Some(44));
        let mut out = Vec::new();
        let at = with_extensions_at(&packet, &[(1, b"0"), (3, &[0, 0])], &mut out).unwrap();
        assert_eq!(&out[12..14], &[0x10, 0x00]);
        assert_eq!(
            extension(&out, 8),
            Some(&(1..=20u8).collect::<Vec<_>>()[..])
        );
        assert_eq!(extension(&out, 1), Some(&b"0"[..]));
        assert_eq!(transport_sequence(&out, 3), Some(0));
        out[at..at + 2].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(transport_sequence(&out, 3), Some(7));
        let h = parse(&out).unwrap();
        assert_eq!(&out[h.header_len..], &[0xaa; 30][..]);
        // An unknown profile is refused.
        packet[12..14].copy_from_slice(&[0x12, 0x34]);
        assert!(!with_extensions(&packet, &[(1, b"0")], &mut out));
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

    #[test]
    fn mid_is_replaced_added_and_others_kept() {
        use webrtc_util::marshal::{Marshal, Unmarshal};
        let ext = |id, v: &'static [u8]| rtp::header::Extension {
            id,
            payload: bytes::Bytes::from_static(v),
        };
        let pkt = rtp::packet::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: 96,
                sequence_number: 7,
                ssrc: 9,
                extension: true,
                extension_profile: 0xbede,
                extensions: vec![ext(3, &[1, 2, 3]), ext(1, b"0"), ext(5, &[9, 9])],
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(&[7; 33]),
        };
        let raw = pkt.marshal().unwrap();
        let mut out = Vec::new();
        assert!(with_extension(&raw, 1, b"12", &mut out));
        let back = rtp::packet::Packet::unmarshal(&mut bytes::Bytes::from(out.clone())).unwrap();
        let get = |id| back.header.get_extension(id);
        assert_eq!(get(1).as_deref(), Some(&b"12"[..]));
        assert_eq!(get(3).as_deref(), Some(&[1, 2, 3][..]));
        assert_eq!(get(5).as_deref(), Some(&[9, 9][..]));
        assert_eq!(back.payload, pkt.payload);
        assert_eq!(parse(&out).unwrap().payload_len, 33);

        // Added to a packet without extensions.
        let plain = [0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 0xaa, 0xbb];
        assert!(with_extension(&plain, 1, b"x", &mut out));
        assert_eq!(&out[12..20], &[0xbe, 0xde, 0, 1, 0x10, b'x', 0, 0]);
        assert_eq!(&out[20..], &[0xaa, 0xbb]);
        assert_eq!(out[0], 0x90);

        // Oversized values are refused.
        assert!(!with_extension(&plain, 1, &[0; 17], &mut out));
        assert!(out.is_empty());
        // In the two-byte form, the element is replaced in that form.
        let two = [
            0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 0x10, 0, 0, 1, 1, 1, 7, 0,
        ];
        assert!(with_extension(&two, 1, b"x", &mut out));
        assert_eq!(&out[12..20], &[0x10, 0, 0, 1, 1, 1, b'x', 0]);
    }

    #[test]
    fn several_elements_are_set_at_once() {
        let mut out = Vec::new();
        // An element with id 1 is replaced, id 3 kept, id 12 added.
        let raw = [
            0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 0xbe, 0xde, 0, 2, 0x10, b'a', 0x31, 7, 8, 0, 0,
            0, 0xaa,
        ];
        assert_eq!(header_len(&raw), Some(24));
        assert!(with_extensions(
            &raw,
            &[(1, b"xy"), (12, &[1, 2, 3])],
            &mut out
        ));
        assert_eq!(extension(&out, 1), Some(&b"xy"[..]));
        assert_eq!(extension(&out, 3), Some(&[7, 8][..]));
        assert_eq!(extension(&out, 12), Some(&[1, 2, 3][..]));
        assert_eq!(out.last(), Some(&0xaa));
        assert_eq!(parse(&out).unwrap().payload_len, 1);
        // The same as setting them one after the other.
        let mut step = Vec::new();
        assert!(with_extension(&raw, 1, b"xy", &mut step));
        let mut two = Vec::new();
        assert!(with_extension(&step, 12, &[1, 2, 3], &mut two));
        assert_eq!(out, two);
        // A repeated or out-of-range id is refused, leaving nothing.
        assert!(!with_extensions(&raw, &[(1, b"x"), (1, b"y")], &mut out));
        assert!(out.is_empty());
        assert!(!with_extensions(&raw, &[(15, b"x")], &mut out));
        assert!(!with_extensions(&raw, &[(0, b"x")], &mut out));
    }

    #[test]
    fn extensions_are_found_in_both_forms() {
        use bytes::Bytes;
        use webrtc_util::marshal::Marshal;
        let ext = |id: u8, payload: &[u8]| rtp::header::Extension {
            id,
            payload: Bytes::copy_from_slice(payload),
        };
        for profile in [0xbede, 0x1000] {
            let packet = rtp::packet::Packet {
                header: rtp::header::Header {
                    version: 2,
                    extension: true,
                    extension_profile: profile,
                    extensions: vec![ext(1, b"0"), ext(3, &[0x12, 0x34]), ext(5, &[9])],
                    payload_type: 96,
                    sequence_number: 7,
                    ssrc: 0x1111,
                    ..Default::default()
                },
                payload: Bytes::from_static(&[0; 20]),
            };
            let raw = packet.marshal().unwrap();
            assert_eq!(transport_sequence(&raw, 3), Some(0x1234), "{profile:#x}");
            assert_eq!(extension(&raw, 5), Some(&[9][..]));
            assert_eq!(extension(&raw, 4), None);
        }
        let plain = rtp::packet::Packet {
            header: rtp::header::Header {
                version: 2,
                ..Default::default()
            },
            payload: Bytes::from_static(&[0; 4]),
        };
        assert_eq!(extension(&plain.marshal().unwrap(), 3), None);
    }

    #[test]
    fn extension_elements_must_fit_their_block() {
        // One-byte profile, one word: element id 1 claiming 16 bytes (found by fuzzing: a
        // general-purpose parser read past the packet on this).
        let mut p = vec![
            0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xbe, 0xde, 0, 1, 0x1f, 0, 0, 0,
        ];
        assert_eq!(header_len(&p), None);
        p[16] = 0x12; // id 1, 3 bytes: fits exactly
        assert_eq!(header_len(&p), Some(20));
        p[16] = 0x00; // padding only
        assert_eq!(header_len(&p), Some(20));
        // Two-byte profile: id 1 with 3 bytes fits a 1-word block only if 2 + 3 <= 4.
        let mut q = vec![
            0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0x10, 0x00, 0, 1, 1, 3, 0, 0,
        ];
        assert_eq!(header_len(&q), None);
        q[17] = 2;
        assert_eq!(header_len(&q), Some(20));
        q.truncate(19);
        assert_eq!(header_len(&q), None);
    }
}
