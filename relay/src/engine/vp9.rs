//! The VP9 RTP payload descriptor (RFC 9628 §4.2) and the size a keyframe gives: what a
//! recorder needs to turn VP9 packets back into the frames a VP9 decoder reads.
//!
//! ```text
//!  I|P|L|F|B|E|V|Z        B: a layer frame starts, E: it ends, P: inter-picture predicted
//!  M| PictureID (7/15)    (if I)
//!  TID|U|SID|D            (if L)   D: depends on the layer below; then TL0PICIDX (if not F)
//!  P_DIFF|N               (if F and P) up to 3
//!  scalability structure  (if V)   N_S|Y|G, sizes (if Y), picture group (if G)
//! ```

/// What the payload descriptor of one packet says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp9Descriptor {
    /// The descriptor's length: the VP9 payload starts here.
    pub len: usize,
    /// P: the layer frame refers to an earlier picture (not a keyframe).
    pub inter_picture: bool,
    /// B: the packet starts a layer frame.
    pub begins_frame: bool,
    /// E: the packet ends a layer frame.
    pub ends_frame: bool,
    /// The spatial layer (0 without a layer index).
    pub spatial_id: u8,
    /// D: the layer frame depends on the spatial layer below it in the same picture.
    pub inter_layer: bool,
    /// The largest picture size the scalability structure gives, if it came with one.
    pub size: Option<(u16, u16)>,
}

impl Vp9Descriptor {
    /// Whether the packet starts a picture: its first layer frame's first packet.
    pub fn starts_picture(&self) -> bool {
        self.begins_frame && self.spatial_id == 0
    }

    /// Whether the packet starts a keyframe: a picture whose base layer refers to nothing.
    pub fn starts_keyframe(&self) -> bool {
        self.starts_picture() && !self.inter_picture
    }
}

/// Read the descriptor at the start of an RTP payload; None when it is cut short or has no
/// payload after it.
pub fn parse(payload: &[u8]) -> Option<Vp9Descriptor> {
    let first = *payload.first()?;
    let flag = |bit: u8| first & (0x80 >> bit) != 0;
    let (i, p, l, f, b, e, v) = (
        flag(0),
        flag(1),
        flag(2),
        flag(3),
        flag(4),
        flag(5),
        flag(6),
    );
    let mut at = 1;
    let byte = |at: usize| payload.get(at).copied();
    if i {
        at += if byte(at)? & 0x80 != 0 { 2 } else { 1 };
    }
    let (mut spatial_id, mut inter_layer) = (0, false);
    if l {
        spatial_id = (byte(at)? >> 1) & 0x07;
        inter_layer = byte(at)? & 0x01 != 0;
        at += if f { 1 } else { 2 };
    }
    if f && p {
        for _ in 0..3 {
            let diff = byte(at)?;
            at += 1;
            if diff & 0x01 == 0 {
                break;
            }
        }
    }
    let mut size = None;
    if v {
        let ss = byte(at)?;
        at += 1;
        let layers = usize::from(ss >> 5) + 1;
        if ss & 0x10 != 0 {
            for _ in 0..layers {
                let w = u16::from_be_bytes([byte(at)?, byte(at + 1)?]);
                let h = u16::from_be_bytes([byte(at + 2)?, byte(at + 3)?]);
                at += 4;
                if w > 0 && h > 0 {
                    size = Some((w, h));
                }
            }
        }
        if ss & 0x08 != 0 {
            let pictures = byte(at)?;
            at += 1;
            for _ in 0..pictures {
                let refs = usize::from((byte(at)? >> 2) & 0x03);
                at += 1 + refs;
            }
        }
    }
    payload.get(at..).filter(|rest| !rest.is_empty())?;
    Some(Vp9Descriptor {
        len: at,
        inter_picture: p,
        begins_frame: b,
        ends_frame: e,
        spatial_id,
        inter_layer,
        size,
    })
}

/// The size (width, height) a keyframe's uncompressed header gives (VP9 bitstream §6.2):
/// frame marker, profile, frame type, sync code, colour configuration, then the size.
pub fn keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    let mut r = Bits { data: frame, at: 0 };
    if r.read(2)? != 2 {
        return None; // frame marker
    }
    let profile = r.read(1)? | r.read(1)? << 1;
    if profile == 3 {
        r.read(1)?;
    }
    if r.read(1)? == 1 {
        return None; // show_existing_frame
    }
    if r.read(1)? != 0 {
        return None; // not a keyframe
    }
    r.read(2)?; // show_frame, error_resilient_mode
    if r.read(24)? != 0x49_83_42 {
        return None;
    }
    if profile >= 2 {
        r.read(1)?; // ten_or_twelve_bit
    }
    let color_space = r.read(3)?;
    if color_space != 7 {
        r.read(1)?; // color_range
        if profile == 1 || profile == 3 {
            r.read(3)?; // subsampling_x, subsampling_y, reserved
        }
    } else if profile == 1 || profile == 3 {
        r.read(1)?;
    }
    // 1 to 65536 each; a size past what a track header takes (16 bits) is not given.
    let width = u16::try_from(r.read(16)? + 1).ok()?;
    let height = u16::try_from(r.read(16)? + 1).ok()?;
    Some((width, height))
}

struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = self.data.get(self.at / 8)?;
            v = v << 1 | u32::from(byte >> (7 - self.at % 8) & 1);
            self.at += 1;
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_of_a_keyframe_with_its_scalability_structure() {
        // I (15-bit id), L, B, V; not flexible: TL0PICIDX follows the layer index. SS: three
        // spatial layers with sizes, no picture group.
        let mut p = vec![0b1010_1010, 0x80 | 0x12, 0x34, 0b0000_0000, 7];
        p.push(0b0101_0000); // N_S 2, Y
        for (w, h) in [(320u16, 180u16), (640, 360), (1280, 720)] {
            p.extend_from_slice(&w.to_be_bytes());
            p.extend_from_slice(&h.to_be_bytes());
        }
        p.extend_from_slice(&[0x82, 0x49, 0x83, 0x42]);
        let d = parse(&p).expect("parses");
        assert_eq!(d.len, p.len() - 4);
        assert!(d.starts_keyframe());
        assert_eq!(d.size, Some((1280, 720)));
        // A cut descriptor is refused, as is one with nothing after it.
        assert_eq!(parse(&p[..7]), None);
        assert_eq!(parse(&p[..d.len]), None);
    }

    #[test]
    fn descriptor_of_a_flexible_mode_inter_frame_of_an_upper_layer() {
        // I (7-bit), P, L, F, E; SID 1; two P_DIFFs.
        let p = [0b1111_0100, 0x05, 0b0010_0010, 0x03, 0x04, 0xaa];
        let d = parse(&p).expect("parses");
        assert_eq!(d.len, 5);
        assert_eq!(d.spatial_id, 1);
        assert!(d.ends_frame && !d.begins_frame && d.inter_picture);
        assert!(!d.starts_picture());
    }

    #[test]
    fn size_from_a_keyframe_header() {
        // Profile 0 keyframe: marker 10, profile 00, show_existing 0, type 0, show 1, er 0,
        // sync code, colour space 0 (3 bits), range 0, then 1279 and 719 in 16 bits each.
        let mut bits = String::from("10000010");
        bits += "010010011000001101000010";
        bits += "0000";
        bits += &format!("{:016b}{:016b}", 1279, 719);
        while !bits.len().is_multiple_of(8) {
            bits.push('0');
        }
        let bytes: Vec<u8> = (0..bits.len() / 8)
            .map(|i| u8::from_str_radix(&bits[i * 8..i * 8 + 8], 2).unwrap())
            .collect();
        assert_eq!(keyframe_size(&bytes), Some((1280, 720)));
        assert_eq!(keyframe_size(&bytes[..6]), None);
    }
}
