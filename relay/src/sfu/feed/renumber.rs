//! A publisher's own numbers for payload types and header extensions, turned into the relay's
//! as its packets arrive.
//!
//! A browser answers the relay's offer and so takes the relay's numbers. A publisher that made
//! the offer itself (a WHIP encoder) chose its own, and the answer had to keep them. Renumbered
//! once on the way in, in place, its packets carry the relay's numbers everywhere after: to
//! subscribers of every kind, to other cores and to the recorder, which so never learn the
//! difference.

use crate::control::Renumbering;
use crate::engine::rtp;

/// No relay payload type for this one of the publisher's.
const NONE: u8 = 0xff;

/// The tables of one publisher's [`Renumbering`].
#[derive(Debug, Clone)]
pub struct Renumber {
    /// The relay's payload type for each of the publisher's, or [`NONE`].
    payload_types: [u8; 128],
    /// The relay's id for each of the publisher's extension ids; 0 erases the element.
    ids: [u8; 256],
    /// The publisher's id for each of the relay's.
    publisher_ids: [u8; 256],
}

impl Renumber {
    /// Tables for `r`; pairs out of range (a payload type over 127, an id of 0) are ignored.
    pub fn new(r: &Renumbering) -> Self {
        let mut t = Renumber {
            payload_types: [NONE; 128],
            ids: [0; 256],
            publisher_ids: [0; 256],
        };
        for &(theirs, ours) in &r.payload_types {
            if theirs < 128 && ours < 128 {
                t.payload_types[usize::from(theirs)] = ours;
            }
        }
        for &(theirs, ours) in &r.extensions {
            if theirs != 0 && ours != 0 {
                t.ids[usize::from(theirs)] = ours;
                t.publisher_ids[usize::from(ours)] = theirs;
            }
        }
        t
    }

    /// Renumber a decrypted packet in place. False, changing nothing, where its payload type
    /// is not one the publisher declared, or its header does not parse.
    pub fn apply(&self, packet: &mut [u8]) -> bool {
        let Some(&pt) = packet.get(1) else {
            return false;
        };
        let ours = self.payload_types[usize::from(pt & 0x7f)];
        ours != NONE && rtp::renumber(packet, ours, &self.ids)
    }

    /// The publisher's id for the relay's extension id `ours`: what its packets carry before
    /// they are renumbered (read in the clear before decryption, as a simulcast layer's rid).
    pub fn publisher_id(&self, ours: u8) -> Option<u8> {
        Some(self.publisher_ids[usize::from(ours)]).filter(|&id| id != 0)
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
        assert_eq!(r.publisher_id(1), Some(4));
        assert_eq!(r.publisher_id(7), None);
        // 98 was never declared: refused, untouched.
        let mut q = p.clone();
        q[1] = 98;
        let before = q.clone();
        assert!(!r.apply(&mut q));
        assert_eq!(q, before);
        assert!(!r.apply(&mut [0x80]));
    }
}
