//! Where an H.264 keyframe starts in RTP (RFC 6184), and the picture size its sequence
//! parameter set gives: what a forwarder switching a subscriber between simulcast layers
//! needs to know of an H.264 payload, and nothing more.
//!
//! A keyframe is an IDR picture (NAL unit type 5), which Chromium sends after its parameter
//! sets (SPS 7, PPS 8), alone, aggregated in a STAP-A (24) or fragmented in FU-As (28). The
//! first packet of a keyframe is the one with the SPS, or with the IDR's first fragment when
//! no SPS precedes it.

/// NAL unit types that begin a keyframe.
const IDR: u8 = 5;
const SPS: u8 = 7;
const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// The picture size (width, height) in the sequence parameter set an RTP payload carries,
/// alone or in a STAP-A; None where it has none or it does not parse.
pub fn keyframe_size(payload: &[u8]) -> Option<(u16, u16)> {
    let header = *payload.first()?;
    match header & 0x1f {
        SPS => sps_size(&payload[1..]),
        STAP_A => {
            let mut rest = &payload[1..];
            while let [hi, lo, tail @ ..] = rest {
                let len = usize::from(u16::from_be_bytes([*hi, *lo]));
                let unit = tail.get(..len)?;
                if unit.first().is_some_and(|h| h & 0x1f == SPS) {
                    return sps_size(&unit[1..]);
                }
                rest = &tail[len..];
            }
            None
        }
        _ => None,
    }
}

/// Profiles whose SPS carries the chroma format, bit depths and scaling matrices (H.264
/// §7.3.2.1.1).
const HIGH_PROFILES: [u8; 12] = [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134];

/// The cropped picture size a sequence parameter set (after its NAL header) gives (H.264
/// §7.3.2.1.1 and §7.4.2.1.1); None where it is cut short or out of range.
fn sps_size(sps: &[u8]) -> Option<(u16, u16)> {
    let rbsp = unescape(sps);
    let mut r = Bits::new(&rbsp);
    let profile = r.bits(8)? as u8;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    let mut separate_planes = false;
    if HIGH_PROFILES.contains(&profile) || profile == 135 {
        chroma_format = r.ue()?;
        if chroma_format > 3 {
            return None;
        }
        if chroma_format == 3 {
            separate_planes = r.bit()?;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? {
            let lists = if chroma_format == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        2 => {}
        _ => return None,
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()? + 1;
    let height_units = r.ue()? + 1;
    let frame_mbs_only = r.bit()?;
    if !frame_mbs_only {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut left, mut right, mut top, mut bottom) = (0, 0, 0, 0);
    if r.bit()? {
        (left, right, top, bottom) = (r.ue()?, r.ue()?, r.ue()?, r.ue()?);
    }
    // Cropping is in chroma samples (§7.4.2.1.1, Table 6-1), and in field pairs for fields.
    let field_factor: u32 = if frame_mbs_only { 1 } else { 2 };
    let (unit_x, unit_y): (u32, u32) = match (chroma_format, separate_planes) {
        (0, _) | (3, true) => (1, field_factor),
        (1, _) => (2, 2 * field_factor),
        (2, _) => (2, field_factor),
        _ => (1, field_factor),
    };
    let width = u64::from(width_mbs) * 16;
    let height = u64::from(height_units) * 16 * u64::from(field_factor);
    let crop_x = u64::from(unit_x) * (u64::from(left) + u64::from(right));
    let crop_y = u64::from(unit_y) * (u64::from(top) + u64::from(bottom));
    let width = u16::try_from(width.checked_sub(crop_x)?).ok()?;
    let height = u16::try_from(height.checked_sub(crop_y)?).ok()?;
    (width > 0 && height > 0).then_some((width, height))
}

/// Read past a scaling list of `size` entries (§7.3.2.1.1.1).
fn skip_scaling_list(r: &mut Bits, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()? + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// The RBSP of a NAL unit: without the emulation prevention bytes (the 3 of `00 00 03`).
fn unescape(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// A reader of bits, most significant first, and of Exp-Golomb codes (§9.1).
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits { data, at: 0 }
    }

    fn bit(&mut self) -> Option<bool> {
        let byte = self.data.get(self.at / 8)?;
        let bit = byte >> (7 - self.at % 8) & 1;
        self.at += 1;
        Some(bit == 1)
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0, |v, _| Some(v << 1 | u32::from(self.bit()?)))
    }

    /// ue(v); values past 32 bits are refused (no field read here is that large).
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while !self.bit()? {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        u32::try_from((1u64 << zeros) - 1 + u64::from(rest)).ok()
    }

    /// se(v).
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// Whether an RTP payload begins a keyframe.
pub fn starts_keyframe(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        IDR | SPS => true,
        STAP_A => {
            // Units of a 16-bit length, then the unit; one cut short ends the walk.
            let mut rest = &payload[1..];
            while let [hi, lo, tail @ ..] = rest {
                let len = usize::from(u16::from_be_bytes([*hi, *lo]));
                let Some(unit) = tail.get(..len) else {
                    return false;
                };
                if let Some(&h) = unit.first() {
                    if matches!(h & 0x1f, IDR | SPS) {
                        return true;
                    }
                }
                rest = &tail[len..];
            }
            false
        }
        // The FU header: S bit, then the fragmented unit's type.
        FU_A => payload
            .get(1)
            .is_some_and(|&fu| fu & 0x80 != 0 && fu & 0x1f == IDR),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_units_aggregates_and_fragments() {
        // NRI 3 and the type, as Chromium sends them.
        assert!(starts_keyframe(&[0x67, 0x42, 0xc0, 0x1f])); // SPS
        assert!(starts_keyframe(&[0x65, 0x88])); // IDR slice
        assert!(!starts_keyframe(&[0x41, 0x9a])); // non-IDR slice
        assert!(!starts_keyframe(&[0x68, 0xce])); // PPS alone
        assert!(!starts_keyframe(&[]));
        // STAP-A with a PPS, then an SPS.
        assert!(starts_keyframe(&[0x78, 0, 2, 0x68, 0xce, 0, 2, 0x67, 0x42]));
        // STAP-A with a non-IDR slice only, and one whose length runs past the end.
        assert!(!starts_keyframe(&[0x78, 0, 2, 0x41, 0x9a]));
        assert!(!starts_keyframe(&[0x78, 0, 9, 0x67, 0x42]));
        // FU-A: the first fragment of an IDR slice, a later one, a first of a non-IDR.
        assert!(starts_keyframe(&[0x7c, 0x85, 0x88]));
        assert!(!starts_keyframe(&[0x7c, 0x05, 0x88]));
        assert!(!starts_keyframe(&[0x7c, 0x81, 0x9a]));
        assert!(!starts_keyframe(&[0x7c]));
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn the_size_in_sequence_parameter_sets_from_x264() {
        // libx264 (through PyAV): constrained baseline 320x180 (cropped from 12 macroblock
        // rows), high 1280x720, high 1920x1080 (cropped from 1088), high 4:4:4 640x360. Each
        // has emulation prevention bytes.
        let cases = [
            (
                "6742c00dd901419f9e10000003001000000303c8f142a480",
                (320, 180),
            ),
            (
                "6764001facb200a00b7420000003002000000791e30649",
                (1280, 720),
            ),
            (
                "67640028acb200f0044fcb08000003000800000301e478c19240",
                (1920, 1080),
            ),
            (
                "67f4001e919640280bfe2610000003001000000303c8f162e480",
                (640, 360),
            ),
        ];
        for (sps, size) in cases {
            let sps = hex(sps);
            assert_eq!(keyframe_size(&sps), Some(size), "{sps:02x?}");
            // In a STAP-A after a PPS.
            let mut stap = vec![0x78, 0, 2, 0x68, 0xce];
            stap.extend_from_slice(&(sps.len() as u16).to_be_bytes());
            stap.extend_from_slice(&sps);
            assert_eq!(keyframe_size(&stap), Some(size));
            // Cut anywhere before the size: nothing.
            assert_eq!(keyframe_size(&sps[..6]), None);
        }
        assert_eq!(keyframe_size(&[0x65, 0x88]), None);
        assert_eq!(keyframe_size(&[]), None);
    }
}
