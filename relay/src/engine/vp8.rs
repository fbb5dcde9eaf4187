//! The VP8 RTP payload descriptor (RFC 7741 §4.2) and the start of the VP8 frame behind it:
//! what a forwarder switching between simulcast layers needs to read and rewrite.
//!
//! ```text
//!  X|R|N|S|R|PID           N: non-reference frame, S: start of a partition, PID: its index
//!  I|L|T|K| RSV            (if X) which optional fields follow
//!  M| PictureID (7 or 15)  (if I) M set: 15 bits
//!  TL0PICIDX               (if L)
//!  TID|Y| KEYIDX           (if T or K)
//! ```
//!
//! A frame is a keyframe when its first packet (S set, PID 0) starts with a VP8 frame tag
//! whose P bit is 0 (RFC 6386 §9.1). PictureID and TL0PICIDX are rewritten in place (same
//! width), so a subscriber that is switched between layers sees one continuous sequence of
//! pictures.

/// What the payload descriptor of one packet says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// The descriptor's length: the VP8 payload starts here.
    pub len: usize,
    /// N: the frame is not used as a reference.
    pub non_reference: bool,
    /// S: the packet starts a partition.
    pub start_of_partition: bool,
    /// PID: the partition index.
    pub partition_index: u8,
    /// PictureID and whether it is 15 bits wide (else 7).
    pub picture_id: Option<(u16, bool)>,
    /// TL0PICIDX.
    pub tl0_pic_idx: Option<u8>,
    /// TID: the temporal layer.
    pub temporal_id: Option<u8>,
    /// Y: layer sync.
    pub layer_sync: bool,
    /// Whether this packet begins a keyframe (the first packet of the frame, with the frame
    /// tag's P bit clear).
    pub keyframe: bool,
}

impl Vp8Descriptor {
    /// Whether the packet is the first of its frame.
    pub fn starts_frame(&self) -> bool {
        self.start_of_partition && self.partition_index == 0
    }
}

/// Read the descriptor at the start of an RTP payload; None when it is cut short or has no
/// payload after it.
pub fn parse(payload: &[u8]) -> Option<Vp8Descriptor> {
    let first = *payload.first()?;
    let mut d = Vp8Descriptor {
        len: 1,
        non_reference: first & 0x20 != 0,
        start_of_partition: first & 0x10 != 0,
        partition_index: first & 0x07,
        picture_id: None,
        tl0_pic_idx: None,
        temporal_id: None,
        layer_sync: false,
        keyframe: false,
    };
    if first & 0x80 != 0 {
        let ext = *payload.get(1)?;
        d.len = 2;
        if ext & 0x80 != 0 {
            let b = *payload.get(d.len)?;
            if b & 0x80 != 0 {
                let low = *payload.get(d.len + 1)?;
                d.picture_id = Some((u16::from(b & 0x7f) << 8 | u16::from(low), true));
                d.len += 2;
            } else {
                d.picture_id = Some((u16::from(b), false));
                d.len += 1;
            }
        }
        if ext & 0x40 != 0 {
            d.tl0_pic_idx = Some(*payload.get(d.len)?);
            d.len += 1;
        }
        if ext & 0x30 != 0 {
            let b = *payload.get(d.len)?;
            if ext & 0x20 != 0 {
                d.temporal_id = Some(b >> 6);
                d.layer_sync = b & 0x20 != 0;
            }
            d.len += 1;
        }
    }
    let frame = payload.get(d.len..).filter(|f| !f.is_empty())?;
    d.keyframe = d.starts_frame() && frame[0] & 0x01 == 0;
    Some(d)
}

/// The picture size (width, height) a packet that begins a keyframe gives, after its 3-byte
/// frame tag and the start code `9d 01 2a` (RFC 6386 §9.1); the 2-bit scaling fields are
/// not part of it.
pub fn keyframe_size(payload: &[u8], d: &Vp8Descriptor) -> Option<(u16, u16)> {
    if !d.keyframe {
        return None;
    }
    let frame = payload.get(d.len..d.len + 10)?;
    if frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    (width > 0 && height > 0).then_some((width, height))
}

/// Write `picture_id` (masked to the field's width) and `tl0_pic_idx` over the fields `d` says
/// `payload` has; fields it lacks are left alone.
pub fn rewrite(payload: &mut [u8], d: &Vp8Descriptor, picture_id: u16, tl0_pic_idx: u8) {
    let mut at = 2;
    if let Some((_, wide)) = d.picture_id {
        if wide {
            payload[at] = 0x80 | ((picture_id >> 8) as u8 & 0x7f);
            payload[at + 1] = picture_id as u8;
            at += 2;
        } else {
            payload[at] = picture_id as u8 & 0x7f;
            at += 1;
        }
    }
    if d.tl0_pic_idx.is_some() {
        payload[at] = tl0_pic_idx;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_optional_field() {
        // X, S, PID 0; I L T K; 15-bit PictureID 0x1234; TL0PICIDX 9; TID 2, Y, KEYIDX 3;
        // then a keyframe tag (P bit clear).
        let p = [0x90, 0xf0, 0x92, 0x34, 9, 0b1010_0011, 0x10, 0x02, 0x00];
        let d = parse(&p).unwrap();
        assert_eq!(d.len, 6);
        assert_eq!(d.picture_id, Some((0x1234, true)));
        assert_eq!(d.tl0_pic_idx, Some(9));
        assert_eq!(d.temporal_id, Some(2));
        assert!(d.layer_sync && d.start_of_partition && d.keyframe && !d.non_reference);
        // 7-bit PictureID, no other field, an inter frame (P bit set).
        let p = [0xb0, 0x80, 0x05, 0x11];
        let d = parse(&p).unwrap();
        assert_eq!((d.len, d.picture_id), (3, Some((5, false))));
        assert!(d.non_reference && !d.keyframe);
        // No extension at all.
        let d = parse(&[0x10, 0x00]).unwrap();
        assert_eq!((d.len, d.picture_id, d.keyframe), (1, None, true));
        // Not the first partition: never a keyframe start.
        let d = parse(&[0x11, 0x00]).unwrap();
        assert!(!d.keyframe);
    }

    #[test]
    fn the_size_of_a_keyframe() {
        // Descriptor with a 15-bit PictureID, then a keyframe's tag, start code and 1280x720
        // with scaling bits set in both (which are not part of the size).
        let p = [
            0x90, 0x80, 0x80, 0x01, 0x50, 0x2a, 0x01, 0x9d, 0x01, 0x2a, 0x00, 0x45, 0xd0, 0x82,
        ];
        let d = parse(&p).unwrap();
        assert_eq!(keyframe_size(&p, &d), Some((1280, 720)));
        // Cut short, or without the start code: no size.
        let cut = &p[..p.len() - 1];
        assert_eq!(keyframe_size(cut, &parse(cut).unwrap()), None);
        let mut wrong = p;
        wrong[7] = 0;
        assert_eq!(keyframe_size(&wrong, &d), None);
        // An inter frame has none.
        let inter = [0x10, 0x01, 0, 0, 0x9d, 0x01, 0x2a, 0, 5, 0, 5];
        assert_eq!(keyframe_size(&inter, &parse(&inter).unwrap()), None);
    }

    #[test]
    fn short_input_is_refused() {
        for p in [
            &[][..],
            &[0x80],
            &[0x80, 0x80],
            &[0x80, 0x80, 0x80],
            &[0x80, 0x40],
            &[0x80, 0x20],
            &[0x10],
            &[0x90, 0xf0, 0x92, 0x34, 9, 0xa3],
        ] {
            assert_eq!(parse(p), None, "{p:?}");
        }
    }

    #[test]
    fn rewritten_in_place() {
        let mut p = [0x90, 0xc0, 0x92, 0x34, 9, 0x00, 0xaa];
        let d = parse(&p).unwrap();
        rewrite(&mut p, &d, 0x7ffe, 200);
        let again = parse(&p).unwrap();
        assert_eq!(again.picture_id, Some((0x7ffe, true)));
        assert_eq!(again.tl0_pic_idx, Some(200));
        assert_eq!(&p[5..], &[0x00, 0xaa]);
        let mut p = [0x90, 0x80, 0x05, 0x01];
        let d = parse(&p).unwrap();
        rewrite(&mut p, &d, 0x1ff, 0);
        assert_eq!(parse(&p).unwrap().picture_id, Some((0x7f, false)));
    }
}
