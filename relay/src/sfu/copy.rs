//! A subscriber's copy of a forwarded packet: what makes it the subscriber's (its SSRC and
//! numbers, its header extensions, its VP8 picture numbers) is decided when the packet is
//! forwarded, in the order packets arrive; the bytes are written then, or, when the
//! subscriber's pacer holds the copy, when it leaves.
//!
//! A copy that waits holds a reference to the feed's cached packet, which every subscriber
//! shares, and about a hundred bytes of its own, rather than a 2 KiB buffer: a keyframe paced
//! out to hundreds of subscribers would otherwise keep hundreds of copies of itself.

use std::sync::Arc;

use crate::engine::rtp;
use crate::engine::vp8::{self, Vp8Descriptor};
use crate::sfu::participant::{Outgoing, OutgoingKind};

/// What turns a feed's packet into one subscriber's copy of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// The subscriber's SSRC for the feed.
    pub ssrc: u32,
    /// The copy's sequence number.
    pub sequence: u16,
    /// The copy's timestamp.
    pub timestamp: u32,
    /// Set the marker bit (the end of what this subscriber gets of an SVC picture).
    pub marker: bool,
    /// The MID extension's id, where the copy carries the subscriber's MID for the feed (the
    /// MID itself is passed to [`Rewrite::write`]: the consumer's, not a copy of it, unless the
    /// copy waits).
    pub mid: Option<u8>,
    /// The playout-delay extension's id, and its value.
    pub playout_delay: Option<(u8, [u8; 3])>,
    /// The transport-wide number's extension id: the element is written, zero, and the number
    /// set when the copy leaves.
    pub transport_wide: Option<u8>,
    /// The packet's VP8 descriptor and the subscriber's picture id and TL0PICIDX for it (a
    /// simulcast subscriber's pictures are numbered on across layer switches).
    pub vp8: Option<(Vp8Descriptor, u16, u8)>,
}

impl Rewrite {
    /// Write the copy of `packet` into `out`, with `mid` as its MID. Returns where its transport-wide number's value
    /// lies, if it has one. The extensions are set where the packet's extension profile
    /// allows; otherwise the copy carries the packet's own (a browser's packets always allow).
    pub fn write(&self, packet: &[u8], mid: Option<&[u8]>, out: &mut Vec<u8>) -> Option<usize> {
        let mut elements: [(u8, &[u8]); 3] = [(0, &[]); 3];
        let mut n = 0;
        if let (Some(id), Some(mid)) = (self.mid, mid) {
            elements[n] = (id, mid);
            n += 1;
        }
        if let Some((id, delay)) = &self.playout_delay {
            elements[n] = (*id, delay);
            n += 1;
        }
        // Last, so that where its value lies is what writing the elements returns.
        if let Some(id) = self.transport_wide {
            elements[n] = (id, &[0, 0]);
            n += 1;
        }
        let written = (n > 0)
            .then(|| rtp::write_with_extensions(packet, &elements[..n], out))
            .flatten();
        if written.is_none() {
            out.clear();
            out.extend_from_slice(packet);
        }
        rtp::rewrite(out, self.ssrc, self.sequence, self.timestamp);
        if self.marker {
            out[1] |= 0x80;
        }
        if let Some((d, picture_id, tl0)) = &self.vp8 {
            // The copy's extensions differ from the original's, so its payload starts
            // elsewhere; the payload itself is the same.
            let payload_at = written
                .map(|w| w.header_len)
                .or_else(|| rtp::header_len(out));
            if let Some(at) = payload_at {
                vp8::rewrite(&mut out[at..], d, *picture_id, *tl0);
            }
        }
        written
            .map(|w| w.value_at)
            .filter(|_| self.transport_wide.is_some())
    }

    /// The copy of `packet` with `mid`, written into `buffer` (a pooled buffer), ready to leave.
    pub fn outgoing(&self, packet: &[u8], mid: Option<&[u8]>, mut buffer: Vec<u8>) -> Outgoing {
        let transport_wide = self.write(packet, mid, &mut buffer);
        Outgoing {
            packet: buffer,
            transport_wide,
            kind: OutgoingKind::Media,
        }
    }

    /// The most bytes the copy of `packet` with `mid` takes: what a pacer counts a copy as before it is
    /// written (its extension header, each element's header and value, and padding).
    pub fn size_hint(&self, packet: &[u8], mid: Option<&[u8]>) -> usize {
        let elements = self.mid.zip(mid).map_or(0, |(_, m)| 2 + m.len())
            + self.playout_delay.map_or(0, |_| 2 + 3)
            + self.transport_wide.map_or(0, |_| 2 + 2);
        match elements {
            0 => packet.len(),
            n => packet.len() + 4 + n + 3,
        }
    }
}

/// What waits in a subscriber's pacer.
#[derive(Debug)]
pub enum Paced {
    /// A packet written already: audio, repairs, probes, and copies of packets the feed does
    /// not cache.
    Built(Outgoing),
    /// A copy of the feed's cached packet `packet`, written when it leaves.
    Copy {
        /// The feed's packet, shared with the cache and the other subscribers' copies.
        packet: Arc<Vec<u8>>,
        /// The subscriber's MID for the feed, shared with its consumer.
        mid: Option<Arc<[u8]>>,
        /// What makes it this subscriber's.
        rewrite: Rewrite,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 packet with a one-byte extension block holding element 5 (two bytes), a
    /// descriptor with a 15-bit picture id and TL0PICIDX, and a payload.
    fn vp8_packet() -> Vec<u8> {
        let mut p = vec![0x90, 96, 0, 7, 0, 0, 0, 9, 0, 0, 0, 1];
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x51, 0xaa, 0xbb, 0]);
        // X, then I and L; picture id 0x8123 (wide), TL0PICIDX 4.
        p.extend_from_slice(&[0x90, 0xc0, 0x81, 0x23, 4]);
        p.extend_from_slice(&[0x10, 0x02, 0x9d, 0x01, 0x2a]);
        p
    }

    fn rewrite(d: Vp8Descriptor) -> Rewrite {
        Rewrite {
            ssrc: 0x0102_0304,
            sequence: 1000,
            timestamp: 90_000,
            marker: true,
            mid: Some(1),
            playout_delay: Some((2, [0, 0, 10])),
            transport_wide: Some(3),
            vp8: Some((d, 0x0456, 9)),
        }
    }

    #[test]
    fn a_copy_is_the_packet_with_the_subscribers_numbers_and_extensions() {
        let packet = vp8_packet();
        let h = rtp::parse(&packet).unwrap();
        let d = vp8::parse(&packet[h.header_len..]).unwrap();
        let r = rewrite(d);
        let mut out = Vec::new();
        let at = r.write(&packet, Some(b"3"), &mut out).unwrap();
        let got = rtp::parse(&out).unwrap();
        assert_eq!(
            (got.ssrc, got.sequence, got.timestamp, got.marker),
            (0x0102_0304, 1000, 90_000, true)
        );
        assert_eq!(rtp::extension(&out, 1), Some(&b"3"[..]));
        assert_eq!(rtp::extension(&out, 2), Some(&[0, 0, 10][..]));
        assert_eq!(rtp::extension(&out, 3), Some(&[0, 0][..]));
        assert_eq!(rtp::extension(&out, 5), Some(&[0xaa, 0xbb][..]));
        assert_eq!(&out[at..at + 2], &[0, 0]);
        let e = vp8::parse(&out[got.header_len..]).unwrap();
        assert_eq!(
            (e.picture_id, e.tl0_pic_idx),
            (Some((0x0456, true)), Some(9))
        );
        // The payload after the descriptor is the packet's.
        assert_eq!(
            &out[got.header_len + e.len..],
            &packet[h.header_len + d.len..]
        );
        assert!(out.len() <= r.size_hint(&packet, Some(b"3")));
    }

    #[test]
    fn without_extensions_a_copy_keeps_the_packets_own() {
        let packet = vp8_packet();
        let r = Rewrite {
            mid: None,
            playout_delay: None,
            transport_wide: None,
            vp8: None,
            marker: false,
            ..rewrite(vp8::parse(&packet[20..]).unwrap())
        };
        let mut out = Vec::new();
        assert_eq!(r.write(&packet, Some(b"3"), &mut out), None);
        assert_eq!(out[2..12], [3, 232, 0, 1, 95, 144, 1, 2, 3, 4]);
        assert_eq!(out[12..], packet[12..]);
        assert_eq!(r.size_hint(&packet, Some(b"3")), packet.len());
    }
}
