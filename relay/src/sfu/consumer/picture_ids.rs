//! Continuous VP8 picture numbering for one subscriber across simulcast layer switches.
//!
//! Each layer numbers its pictures (PictureID, 15 bits) and its base-layer pictures
//! (TL0PICIDX, 8 bits) on its own. A decoder that sees the numbers jump at a switch takes the
//! gap for lost pictures (Chromium then asks for a keyframe it does not need). So at each
//! switch, which happens at a keyframe of the new layer, the new layer's numbers are mapped to
//! continue from the last ones sent: offsets fixed at the switch, applied to every later
//! picture of that layer, reordered ones included.

use crate::engine::vp8::Vp8Descriptor;

const PICTURE_ID_MOD: u16 = 1 << 15;

#[derive(Debug, Clone, Copy)]
struct Mapping {
    /// The layer's SSRC.
    ssrc: u32,
    picture_offset: u16,
    tl0_offset: u8,
}

/// The picture numbering of one subscriber's stream of one feed.
#[derive(Debug, Clone, Default)]
pub struct PictureIds {
    mapping: Option<Mapping>,
    /// The highest picture and base-layer index sent, as the subscriber saw them.
    last: Option<(u16, u8)>,
}

impl PictureIds {
    /// The numbers to write into a packet of layer `ssrc` whose descriptor is `d`: the
    /// layer's own, mapped. A packet of another layer than the last one starts a new
    /// mapping that continues from the last numbers sent (the caller switches only at
    /// keyframes). None when the descriptor carries no PictureID (nothing to rewrite).
    pub fn map(&mut self, ssrc: u32, d: &Vp8Descriptor) -> Option<(u16, u8)> {
        let (picture, wide) = d.picture_id?;
        let modulus = if wide { PICTURE_ID_MOD } else { 1 << 7 };
        let tl0 = d.tl0_pic_idx.unwrap_or(0);
        let mapping = match self.mapping {
            Some(m) if m.ssrc == ssrc => m,
            _ => {
                let (next_picture, next_tl0) = match self.last {
                    Some((p, t)) => ((p % modulus + 1) % modulus, t.wrapping_add(1)),
                    None => (picture, tl0),
                };
                let m = Mapping {
                    ssrc,
                    picture_offset: (picture + modulus - next_picture % modulus) % modulus,
                    tl0_offset: tl0.wrapping_sub(next_tl0),
                };
                self.mapping = Some(m);
                m
            }
        };
        let out_picture = (picture + modulus - mapping.picture_offset % modulus) % modulus;
        let out_tl0 = tl0.wrapping_sub(mapping.tl0_offset);
        // The last number may be of the other width (a sender may switch between 7 and 15
        // bits): compared in this packet's.
        let newer = self.last.is_none_or(|(p, _)| {
            let ahead = (out_picture + modulus - p % modulus) % modulus;
            ahead != 0 && ahead < modulus / 2
        });
        if newer {
            self.last = Some((out_picture, out_tl0));
        }
        Some((out_picture, out_tl0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::vp8;

    fn descriptor(picture: u16, tl0: u8) -> Vp8Descriptor {
        let p = [
            0x90,
            0xc0,
            0x80 | (picture >> 8) as u8,
            picture as u8,
            tl0,
            0x00,
        ];
        vp8::parse(&p).unwrap()
    }

    #[test]
    fn a_switch_continues_the_numbers() {
        let mut ids = PictureIds::default();
        // Layer A: pictures 100..=102, base indexes 7..=9: passed through as they are.
        for (i, pic) in (100..=102).enumerate() {
            assert_eq!(
                ids.map(1, &descriptor(pic, 7 + i as u8)),
                Some((pic, 7 + i as u8))
            );
        }
        // Switch to layer B at its picture 5000, base index 250: continues at 103 and 10.
        assert_eq!(ids.map(2, &descriptor(5000, 250)), Some((103, 10)));
        assert_eq!(ids.map(2, &descriptor(5001, 251)), Some((104, 11)));
        // A late packet of B's earlier picture maps the same way, and does not move "last".
        assert_eq!(ids.map(2, &descriptor(5000, 250)), Some((103, 10)));
        // Back to A (at its picture 110): continues after the last sent.
        assert_eq!(ids.map(1, &descriptor(110, 13)), Some((105, 12)));
    }

    #[test]
    fn across_the_wraps() {
        let mut ids = PictureIds::default();
        assert_eq!(ids.map(1, &descriptor(32_766, 254)), Some((32_766, 254)));
        assert_eq!(ids.map(1, &descriptor(32_767, 255)), Some((32_767, 255)));
        assert_eq!(ids.map(1, &descriptor(0, 0)), Some((0, 0)));
        // A switch right after the wrap continues from there.
        assert_eq!(ids.map(2, &descriptor(77, 40)), Some((1, 1)));
        assert_eq!(ids.map(2, &descriptor(78, 41)), Some((2, 2)));
    }

    /// Found by the worker fuzz target: a 15-bit number, then a 7-bit one, underflowed.
    #[test]
    fn the_width_may_change_between_packets() {
        let mut ids = PictureIds::default();
        assert_eq!(ids.map(1, &descriptor(30_000, 1)), Some((30_000, 1)));
        let narrow = vp8::parse(&[0x90, 0x80, 0x05, 0x11]).unwrap();
        assert_eq!(narrow.picture_id, Some((5, false)));
        let (p, _) = ids.map(1, &narrow).unwrap();
        assert!(p < 128);
        let (p, _) = ids.map(2, &narrow).unwrap();
        // The 7-bit continuation of 30000: 30000 mod 128 is 48.
        assert_eq!(p, 49);
        assert!(ids.map(2, &descriptor(30_001, 2)).is_some());
    }

    #[test]
    fn no_picture_id_nothing_to_map() {
        let mut ids = PictureIds::default();
        let d = vp8::parse(&[0x10, 0x00]).unwrap();
        assert_eq!(ids.map(1, &d), None);
    }
}
