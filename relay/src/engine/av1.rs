//! AV1 for a recorder: the RTP payload (the AV1 RTP specification, v1.0, §4) back into the
//! "low overhead bitstream format" a file holds (every OBU with its size field), and the
//! sequence header's facts a WebM track needs (its size, and the `av1C` configuration record of
//! the AV1-in-Matroska specification).
//!
//! ```text
//! aggregation header: Z|Y|W W|N|- - -   Z: the first element continues the last packet's OBU,
//!                                       Y: the last element goes on in the next packet,
//!                                       W: elements (0: each has a leb128 length; 1-3: all
//!                                          but the last have one), N: a new coded video
//!                                          sequence starts (a keyframe)
//! ```

/// OBU types (AV1 §6.2.2).
const OBU_SEQUENCE_HEADER: u8 = 1;
const OBU_TEMPORAL_DELIMITER: u8 = 2;
const OBU_TILE_LIST: u8 = 8;

/// What a packet's aggregation header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aggregation {
    /// Z: the first element continues an OBU of the previous packet.
    pub continues: bool,
    /// Y: the last element goes on in the next packet.
    pub goes_on: bool,
    /// W: the number of elements, 0 when each carries its length.
    pub elements: u8,
    /// N: the first packet of a coded video sequence.
    pub new_sequence: bool,
}

/// The aggregation header of a payload.
pub fn aggregation(payload: &[u8]) -> Option<Aggregation> {
    let b = *payload.first()?;
    Some(Aggregation {
        continues: b & 0x80 != 0,
        goes_on: b & 0x40 != 0,
        elements: (b >> 4) & 0x03,
        new_sequence: b & 0x08 != 0,
    })
}

/// A temporal unit's payloads, in order, as the OBUs a file holds: fragments joined, each OBU
/// with its size field, temporal delimiters and tile lists left out (the AV1-in-Matroska
/// specification). None when the payloads do not fit together (a fragment missing).
pub fn temporal_unit(payloads: &[&[u8]]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut fragment: Option<Vec<u8>> = None;
    for payload in payloads {
        let agg = aggregation(payload)?;
        let elements = split_elements(&payload[1..], agg.elements)?;
        let last = elements.len().checked_sub(1)?;
        for (i, element) in elements.into_iter().enumerate() {
            let mut obu = match (i == 0 && agg.continues, fragment.take()) {
                (true, Some(mut head)) => {
                    head.extend_from_slice(element);
                    head
                }
                (true, None) | (false, Some(_)) => return None,
                (false, None) => element.to_vec(),
            };
            if i == last && agg.goes_on {
                fragment = Some(std::mem::take(&mut obu));
            } else {
                write_obu(&obu, &mut out)?;
            }
        }
    }
    fragment.is_none().then_some(out)
}

/// The OBU elements of a payload after its aggregation header.
fn split_elements(mut rest: &[u8], count: u8) -> Option<Vec<&[u8]>> {
    let mut elements = Vec::new();
    while !rest.is_empty() {
        let sized = count == 0 || elements.len() + 1 < usize::from(count);
        let len = if sized {
            let (len, n) = leb128(rest)?;
            rest = &rest[n..];
            usize::try_from(len).ok()?
        } else {
            rest.len()
        };
        let element = rest.get(..len)?;
        rest = &rest[len..];
        elements.push(element);
        if count != 0 && elements.len() == usize::from(count) {
            break;
        }
    }
    (!elements.is_empty()).then_some(elements)
}

/// One OBU as the file holds it.
fn write_obu(obu: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let header = *obu.first()?;
    let kind = (header >> 3) & 0x0f;
    if kind == OBU_TEMPORAL_DELIMITER || kind == OBU_TILE_LIST {
        return Some(());
    }
    let header_len = 1 + usize::from(header & 0x04 != 0);
    let headers = obu.get(..header_len)?;
    if header & 0x02 != 0 {
        // It carries its size already: keep it as it says.
        let (size, n) = leb128(&obu[header_len..])?;
        let end = header_len + n + usize::try_from(size).ok()?;
        out.extend_from_slice(obu.get(..end)?);
        return Some(());
    }
    out.push(header | 0x02);
    out.extend_from_slice(&headers[1..]);
    write_leb128((obu.len() - header_len) as u64, out);
    out.extend_from_slice(&obu[header_len..]);
    Some(())
}

/// A leb128 number and its length in bytes (at most 8).
fn leb128(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in data.iter().take(8).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn write_leb128(mut value: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// What a sequence header says that a file's track needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceHeader {
    /// seq_profile.
    pub profile: u8,
    /// seq_level_idx of the first operating point.
    pub level: u8,
    /// seq_tier of the first operating point.
    pub tier: u8,
    /// high_bitdepth.
    pub high_bitdepth: bool,
    /// twelve_bit.
    pub twelve_bit: bool,
    /// mono_chrome.
    pub monochrome: bool,
    /// subsampling_x, subsampling_y.
    pub subsampling: (bool, bool),
    /// chroma_sample_position.
    pub chroma_sample_position: u8,
    /// The largest frame size.
    pub size: (u16, u16),
    /// The sequence header OBU itself, with its size field.
    pub obu: Vec<u8>,
}

impl SequenceHeader {
    /// The `av1C` configuration record (AV1-in-ISOBMFF §2.3, which Matroska's CodecPrivate
    /// takes), with the sequence header as its configuration OBU.
    pub fn av1c(&self) -> Vec<u8> {
        let mut c = vec![
            0x81, // marker, version 1
            self.profile << 5 | (self.level & 0x1f),
            self.tier << 7
                | u8::from(self.high_bitdepth) << 6
                | u8::from(self.twelve_bit) << 5
                | u8::from(self.monochrome) << 4
                | u8::from(self.subsampling.0) << 3
                | u8::from(self.subsampling.1) << 2
                | (self.chroma_sample_position & 0x03),
            0, // no initial presentation delay
        ];
        c.extend_from_slice(&self.obu);
        c
    }
}

/// The sequence header among a temporal unit's OBUs (as [`temporal_unit`] writes them).
pub fn find_sequence_header(unit: &[u8]) -> Option<SequenceHeader> {
    let mut rest = unit;
    while !rest.is_empty() {
        let header = rest[0];
        let header_len = 1 + usize::from(header & 0x04 != 0);
        let (size, n) = leb128(rest.get(header_len..)?)?;
        let start = header_len + n;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        let body = rest.get(start..end)?;
        if (header >> 3) & 0x0f == OBU_SEQUENCE_HEADER {
            let mut s = sequence_header(body)?;
            s.obu = rest[..end].to_vec();
            return Some(s);
        }
        rest = &rest[end..];
    }
    None
}

/// Read a sequence header OBU's payload (AV1 §5.5).
fn sequence_header(body: &[u8]) -> Option<SequenceHeader> {
    let mut r = Bits { data: body, at: 0 };
    let profile = r.read(3)? as u8;
    r.read(1)?; // still_picture
    let reduced = r.read(1)? == 1;
    let (mut level, mut tier) = (0, 0);
    if reduced {
        level = r.read(5)? as u8;
    } else {
        let mut decoder_model = false;
        let mut buffer_delay_bits = 0;
        if r.read(1)? == 1 {
            // timing_info
            r.read(32)?;
            r.read(32)?;
            if r.read(1)? == 1 {
                r.uvlc()?;
            }
            decoder_model = r.read(1)? == 1;
            if decoder_model {
                buffer_delay_bits = r.read(5)? as usize + 1;
                r.read(32)?;
                r.read(10)?; // two 5-bit lengths
            }
        }
        let initial_display_delay = r.read(1)? == 1;
        let points = r.read(5)? + 1;
        for i in 0..points {
            r.read(12)?; // operating_point_idc
            let l = r.read(5)? as u8;
            let t = if l > 7 { r.read(1)? as u8 } else { 0 };
            if i == 0 {
                (level, tier) = (l, t);
            }
            if decoder_model && r.read(1)? == 1 {
                r.read(buffer_delay_bits)?;
                r.read(buffer_delay_bits)?;
                r.read(1)?;
            }
            if initial_display_delay && r.read(1)? == 1 {
                r.read(4)?;
            }
        }
    }
    let width_bits = r.read(4)? as usize + 1;
    let height_bits = r.read(4)? as usize + 1;
    let width = r.read(width_bits)? + 1;
    let height = r.read(height_bits)? + 1;
    if !reduced && r.read(1)? == 1 {
        r.read(7)?; // frame id lengths
    }
    r.read(3)?; // use_128x128_superblock, enable_filter_intra, enable_intra_edge_filter
    if !reduced {
        r.read(4)?; // interintra, masked compound, warped motion, dual filter
        let order_hint = r.read(1)? == 1;
        if order_hint {
            r.read(2)?; // jnt_comp, ref_frame_mvs
        }
        let screen_content = if r.read(1)? == 1 { 2 } else { r.read(1)? };
        if screen_content > 0 && r.read(1)? == 0 {
            r.read(1)?; // seq_force_integer_mv
        }
        if order_hint {
            r.read(3)?;
        }
    }
    r.read(3)?; // superres, cdef, restoration
                // color_config
    let high_bitdepth = r.read(1)? == 1;
    let twelve_bit = profile == 2 && high_bitdepth && r.read(1)? == 1;
    let monochrome = profile != 1 && r.read(1)? == 1;
    let (mut primaries, mut transfer, mut matrix) = (2, 2, 2);
    if r.read(1)? == 1 {
        primaries = r.read(8)?;
        transfer = r.read(8)?;
        matrix = r.read(8)?;
    }
    let (mut subsampling, mut position) = ((true, true), 0);
    if monochrome {
        r.read(1)?;
    } else if primaries == 1 && transfer == 13 && matrix == 0 {
        subsampling = (false, false);
    } else {
        r.read(1)?; // color_range
        subsampling = match profile {
            0 => (true, true),
            1 => (false, false),
            _ if twelve_bit => {
                let x = r.read(1)? == 1;
                (x, x && r.read(1)? == 1)
            }
            _ => (true, false),
        };
        if subsampling == (true, true) {
            position = r.read(2)? as u8;
        }
    }
    Some(SequenceHeader {
        profile,
        level,
        tier,
        high_bitdepth,
        twelve_bit,
        monochrome,
        subsampling,
        chroma_sample_position: position,
        size: (u16::try_from(width).ok()?, u16::try_from(height).ok()?),
        obu: Vec::new(),
    })
}

struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u64;
        for _ in 0..n {
            let byte = self.data.get(self.at / 8)?;
            v = v << 1 | u64::from(byte >> (7 - self.at % 8) & 1);
            self.at += 1;
        }
        u32::try_from(v).ok()
    }

    /// uvlc() (AV1 §4.10.3).
    fn uvlc(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.read(1)? == 0 {
            zeros += 1;
            if zeros >= 32 {
                return Some(u32::MAX);
            }
        }
        Some(self.read(zeros)?.saturating_add((1u32 << zeros) - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sequence header as libaom writes one for 1280x720, 8-bit 4:2:0, profile 0, level 8
    /// (4.0): no timing info, one operating point, 16-bit size fields.
    fn sequence_header_body() -> Vec<u8> {
        let mut bits = String::new();
        bits += "000"; // seq_profile
        bits += "0"; // still_picture
        bits += "0"; // reduced_still_picture_header
        bits += "0"; // timing_info_present_flag
        bits += "0"; // initial_display_delay_present_flag
        bits += "00000"; // operating_points_cnt_minus_1
        bits += "000000000000"; // operating_point_idc
        bits += "01000"; // seq_level_idx 8
        bits += "0"; // seq_tier (level > 7)
        bits += "1111"; // frame_width_bits_minus_1: 16 bits
        bits += "1111";
        bits += &format!("{:016b}", 1279);
        bits += &format!("{:016b}", 719);
        bits += "0"; // frame_id_numbers_present_flag
        bits += "000"; // 128x128, filter intra, intra edge
        bits += "0000"; // interintra, masked, warped, dual filter
        bits += "1"; // enable_order_hint
        bits += "00"; // jnt_comp, ref_frame_mvs
        bits += "1"; // seq_choose_screen_content_tools: SELECT
        bits += "1"; // seq_choose_integer_mv
        bits += "110"; // order_hint_bits_minus_1
        bits += "000"; // superres, cdef, restoration
        bits += "0"; // high_bitdepth
        bits += "0"; // mono_chrome
        bits += "0"; // color_description_present_flag
        bits += "0"; // color_range
        bits += "10"; // chroma_sample_position
        bits += "1"; // film_grain_params_present
        while !bits.len().is_multiple_of(8) {
            bits.push('0');
        }
        (0..bits.len() / 8)
            .map(|i| u8::from_str_radix(&bits[i * 8..i * 8 + 8], 2).unwrap())
            .collect()
    }

    #[test]
    fn a_sequence_header_gives_the_size_and_the_configuration_record() {
        let body = sequence_header_body();
        // As RTP carries it: no size field.
        let rtp_obu: Vec<u8> = [&[OBU_SEQUENCE_HEADER << 3][..], &body].concat();
        let frame_obu: Vec<u8> = [&[6 << 3, 0xaa, 0xbb][..]].concat();
        // One packet, two elements (W = 2): the first with its length, the last without.
        let mut payload = vec![0b0010_1000];
        payload.push(rtp_obu.len() as u8);
        payload.extend_from_slice(&rtp_obu);
        payload.extend_from_slice(&frame_obu);
        assert!(aggregation(&payload).unwrap().new_sequence);
        let unit = temporal_unit(&[&payload]).expect("one whole unit");
        // Each OBU now has its size field.
        assert_eq!(unit[0], OBU_SEQUENCE_HEADER << 3 | 0x02);
        assert_eq!(usize::from(unit[1]), body.len());
        assert_eq!(&unit[unit.len() - 4..], &[6 << 3 | 0x02, 2, 0xaa, 0xbb]);
        let s = find_sequence_header(&unit).expect("a sequence header");
        assert_eq!(s.size, (1280, 720));
        assert_eq!((s.profile, s.level, s.tier), (0, 8, 0));
        assert_eq!(s.subsampling, (true, true));
        assert_eq!(s.chroma_sample_position, 2);
        let c = s.av1c();
        assert_eq!(&c[..4], &[0x81, 0x08, 0x0e, 0x00]);
        assert_eq!(&c[4..], &unit[..2 + body.len()]);
    }

    #[test]
    fn fragments_join_across_packets_and_delimiters_go() {
        let obu: Vec<u8> = [&[6 << 3][..], &[7; 300]].concat();
        // A temporal delimiter first (dropped), then the frame over two packets.
        let mut head = vec![0b0100_0000, 1, 2 << 3];
        let (a, b) = obu.split_at(100);
        write_leb128(a.len() as u64, &mut head);
        head.extend_from_slice(a);
        let mut tail = vec![0b1000_0000];
        write_leb128(b.len() as u64, &mut tail);
        tail.extend_from_slice(b);
        let unit = temporal_unit(&[&head, &tail]).expect("joined");
        let mut expected = vec![6 << 3 | 0x02];
        write_leb128(300, &mut expected);
        expected.extend_from_slice(&[7; 300]);
        assert_eq!(unit, expected);
        // Without its first part, the fragment is refused.
        assert_eq!(temporal_unit(&[&tail]), None);
        // Without its last part too.
        assert_eq!(temporal_unit(&[&head]), None);
    }
}
