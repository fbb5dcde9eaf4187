//! Payload types and header-extension ids turned from one numbering into another, in place.
//!
//! A browser answers the relay's offer and so takes the relay's numbers. A peer that made the
//! offer itself chose its own, and the answer had to keep them. A publisher's packets (a WHIP
//! encoder's) are renumbered once on the way in, so they carry the relay's numbers everywhere
//! after: to subscribers of every kind, to other cores and to the recorder. A subscriber's (a
//! WHEP player's) are renumbered from the relay's numbers on the way out, last.

use crate::control::Renumbering;
use crate::engine::rtp;

/// No payload type to turn this one into.
const NONE: u8 = 0xff;

/// The tables of a [`Renumbering`].
#[derive(Debug, Clone)]
pub struct Renumber {
    /// The new payload type for each old one, or [`NONE`].
    payload_types: [u8; 128],
    /// The new id for each old extension id; 0 erases the element.
    ids: [u8; 256],
    /// The old id for each new one.
    old_ids: [u8; 256],
}

impl Renumber {
    /// Tables for `r`; pairs out of range (a payload type over 127, an id of 0) are ignored.
    pub fn new(r: &Renumbering) -> Self {
        let mut t = Renumber {
            payload_types: [NONE; 128],
            ids: [0; 256],
            old_ids: [0; 256],
        };
        for &(from, to) in &r.payload_types {
            if from < 128 && to < 128 {
                t.payload_types[usize::from(from)] = to;
            }
        }
        for &(from, to) in &r.extensions {
            if from != 0 && to != 0 {
                t.ids[usize::from(from)] = to;
                t.old_ids[usize::from(to)] = from;
            }
        }
        t
    }

    /// Renumber a plain (unencrypted) packet in place. False, changing nothing, where its
    /// payload type has no new number, or its header does not parse.
    pub fn apply(&self, packet: &mut [u8]) -> bool {
        let Some(&pt) = packet.get(1) else {
            return false;
        };
        let ours = self.payload_types[usize::from(pt & 0x7f)];
        ours != NONE && rtp::renumber(packet, ours, &self.ids)
    }

    /// The old id of the new extension id `new`: for a publisher, what its packets carry
    /// before they are renumbered (read in the clear before decryption, as a simulcast
    /// layer's rid).
    pub fn old_id(&self, new: u8) -> Option<u8> {
        Some(self.old_ids[usize::from(new)]).filter(|&id| id != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_take_the_relay_numbers_and_unknown_payload_types_are_refused() {
        // An encoder that sends H.264 as 96 with RTX 97, its mid as extension 4 and its
        // transport-wide sequence as 5; the relay's numbers are 102/103, 1 and 3.
        let r = Renumber::new(&Renumbering {
            payload_types: vec![(96, 102), (97, 103), (200, 1)],
            extensions: vec![(4, 1), (5, 3), (0, 7)],
        });
        let mut p = Vec::new();
        let plain = [0x80, 0x80 | 96, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        assert!(rtp::with_extensions(
            &plain,
            &[(4, b"v"), (5, &[1, 2]), (6, &[9])],
            &mut p
        ));
        p.extend_from_slice(&[0xaa; 10]);
        assert!(r.apply(&mut p));
        let h = rtp::parse(&p).unwrap();
        assert_eq!((h.payload_type, h.marker), (102, true));
        assert_eq!(rtp::extension(&p, 1), Some(&b"v"[..]));
        assert_eq!(rtp::transport_sequence(&p, 3), Some(0x0102));
        assert_eq!(rtp::extension(&p, 6), None);
        assert_eq!(r.old_id(1), Some(4));
        assert_eq!(r.old_id(7), None);
        // 98 was never declared: refused, untouched.
        let mut q = p.clone();
        q[1] = 98;
        let before = q.clone();
        assert!(!r.apply(&mut q));
        assert_eq!(q, before);
        assert!(!r.apply(&mut [0x80]));
    }
}
