use super::*;

/// Writes bits most significant first, as the sender does.
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    bits: usize,
}

impl BitWriter {
    fn put(&mut self, n: u32, v: u32) {
        for i in (0..n).rev() {
            if self.bits.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if v >> i & 1 == 1 {
                *self.bytes.last_mut().unwrap() |= 0x80 >> (self.bits % 8);
            }
            self.bits += 1;
        }
    }

    fn flag(&mut self, b: bool) {
        self.put(1, u32::from(b));
    }

    /// `write_ns(n, v)` of §A.8.2.
    fn ns(&mut self, n: u32, v: u32) {
        assert!(v < n);
        if n == 1 {
            return;
        }
        let w = u32::BITS - n.leading_zeros();
        let m = (1 << w) - n;
        if v < m {
            self.put(w - 1, v);
        } else {
            self.put(w, v + m);
        }
    }
}

/// The start of a descriptor (frame 1, start and end of frame) whose structure has one
/// decode target and `count + 1` templates, each a layer above the one before: `idc` 1 a
/// temporal layer, 2 a spatial one. The templates' DTIs and the rest are the caller's.
fn stacked_templates(idc: u32, count: u32) -> BitWriter {
    let mut w = BitWriter::default();
    w.put(24, 0x80_0001);
    w.put(5, 0b10000);
    w.put(6, 0);
    w.put(5, 0);
    for _ in 0..count {
        w.put(2, idc);
    }
    w.put(2, 3);
    w
}

/// A template as the specification's tables write it: DTIs as `-`, `D`, `S`, `R`.
struct T {
    s: u8,
    t: u8,
    dtis: &'static str,
    fdiffs: &'static [u16],
    chains: &'static [u8],
}

const fn t(s: u8, t: u8, dtis: &'static str, fdiffs: &'static [u16], chains: &'static [u8]) -> T {
    T {
        s,
        t,
        dtis,
        fdiffs,
        chains,
    }
}

struct S {
    offset: u8,
    protected_by: &'static [u8],
    chains: u8,
    templates: &'static [T],
    resolutions: &'static [(u32, u32)],
}

fn dti_of(c: char) -> Dti {
    match c {
        '-' => Dti::NotPresent,
        'D' => Dti::Discardable,
        'S' => Dti::Switch,
        'R' => Dti::Required,
        _ => panic!("DTI {c}"),
    }
}

fn dti_bits(c: char) -> u32 {
    dti_of(c) as u32
}

impl S {
    fn decode_targets(&self) -> u32 {
        self.templates[0].dtis.len() as u32
    }

    fn write(&self, w: &mut BitWriter) {
        w.put(6, u32::from(self.offset));
        w.put(5, self.decode_targets() - 1);
        for pair in self.templates.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let idc = if (b.s, b.t) == (a.s, a.t) {
                0
            } else if (b.s, b.t) == (a.s, a.t + 1) {
                1
            } else {
                assert_eq!((b.s, b.t), (a.s + 1, 0));
                2
            };
            w.put(2, idc);
        }
        w.put(2, 3);
        for t in self.templates {
            for c in t.dtis.chars() {
                w.put(2, dti_bits(c));
            }
        }
        for t in self.templates {
            for &d in t.fdiffs {
                w.flag(true);
                w.put(4, u32::from(d) - 1);
            }
            w.flag(false);
        }
        w.ns(self.decode_targets() + 1, u32::from(self.chains));
        if self.chains > 0 {
            for &c in self.protected_by {
                w.ns(u32::from(self.chains), u32::from(c));
            }
            for t in self.templates {
                assert_eq!(t.chains.len(), usize::from(self.chains));
                for &c in t.chains {
                    w.put(4, u32::from(c));
                }
            }
        }
        w.flag(!self.resolutions.is_empty());
        for &(width, height) in self.resolutions {
            w.put(16, width - 1);
            w.put(16, height - 1);
        }
    }

    /// Check a parsed structure against this description, field by field.
    fn check(&self, got: &Structure) {
        assert_eq!(got.template_id_offset(), self.offset);
        assert_eq!(got.decode_targets() as u32, self.decode_targets());
        assert_eq!(got.chains(), usize::from(self.chains));
        assert_eq!(got.templates().len(), self.templates.len());
        for (i, (g, w)) in got.templates().iter().zip(self.templates).enumerate() {
            assert_eq!((g.spatial_id, g.temporal_id), (w.s, w.t), "template {i}");
            let dtis: Vec<Dti> = w.dtis.chars().map(dti_of).collect();
            assert_eq!(&g.dtis[..], &dtis[..], "template {i}");
            assert_eq!(&g.frame_diffs[..], w.fdiffs, "template {i}");
            assert_eq!(&g.chain_diffs[..], w.chains, "template {i}");
        }
        for dt in 0..got.decode_targets() {
            let expected = self.protected_by.get(dt).map(|&c| usize::from(c));
            assert_eq!(got.protected_by(dt), expected);
        }
        let resolutions: Vec<(u32, u32)> = got
            .resolutions()
            .iter()
            .map(|r| (r.width, r.height))
            .collect();
        assert_eq!(resolutions, self.resolutions);
    }
}

/// What a packet carries beyond the mandatory fields.
#[derive(Default)]
struct P {
    structure: Option<&'static S>,
    active: Option<(u32, u32)>,
    dtis: Option<&'static str>,
    fdiffs: Option<&'static [u16]>,
    chains: Option<&'static [u8]>,
}

fn packet(sof: bool, eof: bool, id: u8, frame: u16, p: P) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.flag(sof);
    w.flag(eof);
    w.put(6, u32::from(id));
    w.put(16, u32::from(frame));
    let extended = p.structure.is_some()
        || p.active.is_some()
        || p.dtis.is_some()
        || p.fdiffs.is_some()
        || p.chains.is_some();
    if extended {
        w.flag(p.structure.is_some());
        w.flag(p.active.is_some());
        w.flag(p.dtis.is_some());
        w.flag(p.fdiffs.is_some());
        w.flag(p.chains.is_some());
        if let Some(s) = p.structure {
            s.write(&mut w);
        }
        if let Some((mask, count)) = p.active {
            w.put(count, mask);
        }
        for c in p.dtis.unwrap_or("").chars() {
            w.put(2, dti_bits(c));
        }
        if let Some(fdiffs) = p.fdiffs {
            for &d in fdiffs {
                let v = u32::from(d) - 1;
                let size = if v < 16 {
                    1
                } else if v < 256 {
                    2
                } else {
                    3
                };
                w.put(2, size);
                w.put(4 * size, v);
            }
            w.put(2, 0);
        }
        for &c in p.chains.unwrap_or(&[]) {
            w.put(8, u32::from(c));
        }
    }
    w.bytes
}

/// libwebrtc's L1T3 (`ScalabilityStructureL1T3`, what Chromium sends with libaom): decode
/// targets 7.5, 15 and 30 fps, one chain through the base layer.
const L1T3: S = S {
    offset: 10,
    protected_by: &[0, 0, 0],
    chains: 1,
    templates: &[
        t(0, 0, "SSS", &[], &[0]),
        t(0, 0, "SSS", &[4], &[4]),
        t(0, 1, "-DS", &[2], &[2]),
        t(0, 2, "--D", &[1], &[1]),
        t(0, 2, "--D", &[1], &[3]),
    ],
    resolutions: &[(1280, 720)],
};

/// libwebrtc's L3T3 k-SVC (`ScalabilityStructureL3T3Key`): spatial layers share only the
/// keyframe; decode target 3s + t is spatial layer s at temporal layer t, chain s through
/// layer s's base frames.
const L3T3_KEY: S = S {
    offset: 0,
    protected_by: &[0, 0, 0, 1, 1, 1, 2, 2, 2],
    chains: 3,
    templates: &[
        t(0, 0, "SSSSSSSSS", &[], &[0, 0, 0]),
        t(0, 0, "SSS------", &[12], &[12, 11, 10]),
        t(0, 1, "-DS------", &[6], &[6, 5, 4]),
        t(0, 2, "--D------", &[3], &[3, 2, 1]),
        t(0, 2, "--D------", &[3], &[9, 8, 7]),
        t(1, 0, "---SSSSSS", &[1], &[1, 1, 1]),
        t(1, 0, "---SSS---", &[12], &[1, 12, 11]),
        t(1, 1, "----DS---", &[6], &[7, 6, 5]),
        t(1, 2, "-----D---", &[3], &[4, 3, 2]),
        t(1, 2, "-----D---", &[3], &[10, 9, 8]),
        t(2, 0, "------SSS", &[1], &[2, 1, 1]),
        t(2, 0, "------SSS", &[12], &[2, 1, 12]),
        t(2, 1, "-------DS", &[6], &[8, 7, 6]),
        t(2, 2, "--------D", &[3], &[5, 4, 3]),
        t(2, 2, "--------D", &[3], &[11, 10, 9]),
    ],
    resolutions: &[(320, 180), (640, 360), (1280, 720)],
};

/// libwebrtc's L3T3 full SVC, as the capture in `descriptors_chromium_sent` has it.
const L3T3_FULL: S = S {
    offset: 0,
    protected_by: &[0, 0, 0, 1, 1, 1, 2, 2, 2],
    chains: 3,
    templates: &[
        t(0, 0, "SSSRRRRRR", &[12], &[12, 11, 10]),
        t(0, 0, "SSSSSSSSS", &[], &[0, 0, 0]),
        t(0, 1, "-DS-RR-RR", &[6], &[6, 5, 4]),
        t(0, 2, "--D--R--R", &[3], &[3, 2, 1]),
        t(0, 2, "--D--R--R", &[3], &[9, 8, 7]),
        t(1, 0, "---SSSRRR", &[12, 1], &[1, 1, 1]),
        t(1, 0, "---SSSSSS", &[1], &[1, 1, 1]),
        t(1, 1, "----DS-RR", &[6, 1], &[7, 6, 5]),
        t(1, 2, "-----D--R", &[3, 1], &[4, 3, 2]),
        t(1, 2, "-----D--R", &[3, 1], &[10, 9, 8]),
        t(2, 0, "------SSS", &[12, 1], &[2, 1, 1]),
        t(2, 0, "------SSS", &[1], &[2, 1, 1]),
        t(2, 1, "-------DS", &[6, 1], &[8, 7, 6]),
        t(2, 2, "--------D", &[3, 1], &[5, 4, 3]),
        t(2, 2, "--------D", &[3, 1], &[11, 10, 9]),
    ],
    resolutions: &[(120, 67), (240, 135), (480, 270)],
};

fn with_structure(s: &'static S) -> P {
    P {
        structure: Some(s),
        ..P::default()
    }
}

#[test]
fn non_symmetric_values_as_the_specification_tabulates_them() {
    // §A.8.2, n = 5: 00, 01, 10, 110, 111.
    for (v, code) in [(0, "00"), (1, "01"), (2, "10"), (3, "110"), (4, "111")] {
        let mut w = BitWriter::default();
        for c in code.chars() {
            w.flag(c == '1');
        }
        assert_eq!(Bits::new(&w.bytes).ns(5), Ok(v), "{code}");
        let mut again = BitWriter::default();
        again.ns(5, u32::from(v));
        assert_eq!((again.bytes, again.bits), (w.bytes, code.len()));
    }
    // Every value of every range a structure uses, each followed by a marker bit that
    // must come next.
    for n in 1..=33u8 {
        for v in 0..n {
            let mut w = BitWriter::default();
            w.ns(u32::from(n), u32::from(v));
            w.put(3, 0b101);
            let mut r = Bits::new(&w.bytes);
            assert_eq!(r.ns(n), Ok(v), "ns({n}) = {v}");
            assert_eq!(r.bits(3), Ok(0b101), "ns({n}) = {v}");
        }
    }
    // One value only: no bits.
    assert_eq!(Bits::new(&[]).ns(1), Ok(0));
}

#[test]
fn an_l1t3_keyframe_then_frames_read_against_its_structure() {
    let key = packet(true, false, 10, 0xfffe, with_structure(&L1T3));
    let d = parse(&key, None).unwrap();
    let s = d.structure.as_deref().unwrap();
    L1T3.check(s);
    let layers: Vec<_> = (0..3)
        .map(|dt| s.decode_target_layer(dt).unwrap())
        .map(|l| (l.spatial_id, l.temporal_id))
        .collect();
    assert_eq!(layers, [(0, 0), (0, 1), (0, 2)]);
    assert_eq!(s.decode_target_layer(3), None);
    assert_eq!(s.protected_by(3), None);
    assert!((d.start_of_frame, d.end_of_frame) == (true, false));
    assert_eq!((d.template_id, d.frame_number), (10, 0xfffe));
    assert_eq!((d.spatial_id, d.temporal_id), (0, 0));
    assert_eq!(&d.dtis[..], &[Dti::Switch; 3]);
    assert!((0..3).all(|dt| d.needed_by(dt) && d.is_switch_point(dt)));
    assert!(!d.needed_by(3) && !d.is_switch_point(3));
    assert!(d.frame_diffs.is_empty());
    assert_eq!(&d.chain_diffs[..], &[0]);
    // A structure makes every decode target active.
    assert_eq!(d.active_decode_targets, Some(0b111));
    assert_eq!(
        d.resolution,
        Some(Resolution {
            width: 1280,
            height: 720
        })
    );
    assert!(!d.custom_dtis && !d.custom_frame_diffs && !d.custom_chain_diffs);

    // The next frame, temporal layer 2 (template index 3), 3 bytes only.
    let next = packet(false, true, 13, 0xffff, P::default());
    assert_eq!(next, [0x4d, 0xff, 0xff]);
    let d = parse(&next, Some(s)).unwrap();
    assert!((d.start_of_frame, d.end_of_frame) == (false, true));
    assert_eq!((d.template_id, d.frame_number), (13, 0xffff));
    assert_eq!((d.spatial_id, d.temporal_id), (0, 2));
    assert_eq!(
        &d.dtis[..],
        &[Dti::NotPresent, Dti::NotPresent, Dti::Discardable]
    );
    assert!(!d.needed_by(0) && !d.needed_by(1) && d.needed_by(2));
    assert!(!d.is_switch_point(2));
    assert_eq!(&d.frame_diffs[..], &[1]);
    assert_eq!(d.referenced_frames().collect::<Vec<_>>(), [0xfffe]);
    assert_eq!(&d.chain_diffs[..], &[1]);
    assert_eq!(d.active_decode_targets, None);
    assert_eq!(d.structure, None);

    // Temporal layer 1 across the wrap of frame numbers, with its DTIs, diffs and chain
    // sent explicitly, and the 30 fps decode target switched off.
    let custom = packet(
        true,
        true,
        12,
        1,
        P {
            active: Some((0b011, 3)),
            dtis: Some("-SR"),
            fdiffs: Some(&[3, 20, 4096]),
            chains: Some(&[200]),
            ..P::default()
        },
    );
    let d = parse(&custom, Some(s)).unwrap();
    assert_eq!((d.spatial_id, d.temporal_id), (0, 1));
    assert!(d.custom_dtis && d.custom_frame_diffs && d.custom_chain_diffs);
    assert_eq!(&d.dtis[..], &[Dti::NotPresent, Dti::Switch, Dti::Required]);
    assert!(d.is_switch_point(1) && !d.is_switch_point(2) && d.needed_by(2));
    assert_eq!(&d.frame_diffs[..], &[3, 20, 4096]);
    assert_eq!(
        d.referenced_frames().collect::<Vec<_>>(),
        [0xfffe, 0xffed, 0xf001]
    );
    assert_eq!(&d.chain_diffs[..], &[200]);
    assert_eq!(d.active_decode_targets, Some(0b011));
    assert_eq!(d.structure, None);

    // Only the active decode targets, over the template's values.
    let active = packet(
        false,
        false,
        11,
        2,
        P {
            active: Some((0b001, 3)),
            ..P::default()
        },
    );
    let d = parse(&active, Some(s)).unwrap();
    assert_eq!(d.active_decode_targets, Some(0b001));
    assert_eq!(&d.frame_diffs[..], &[4]);
    assert_eq!(&d.chain_diffs[..], &[4]);
}

#[test]
fn an_l3t3_k_svc_structure() {
    let key = packet(true, true, 0, 100, with_structure(&L3T3_KEY));
    let d = parse(&key, None).unwrap();
    let s = d.structure.as_deref().unwrap();
    L3T3_KEY.check(s);
    for dt in 0..9 {
        let layer = s.decode_target_layer(dt).unwrap();
        assert_eq!(
            (layer.spatial_id, layer.temporal_id),
            (dt as u8 / 3, dt as u8 % 3),
            "decode target {dt}"
        );
    }
    assert_eq!(d.active_decode_targets, Some(0x1ff));
    assert!((0..9).all(|dt| d.is_switch_point(dt)));
    assert_eq!(d.resolution.map(|r| (r.width, r.height)), Some((320, 180)));

    // A base frame of spatial layer 1 (template index 6), a switch point for its own
    // decode targets only; then a frame of the top temporal layer of spatial layer 2.
    let d = parse(&packet(true, true, 6, 104, P::default()), Some(s)).unwrap();
    assert_eq!((d.spatial_id, d.temporal_id), (1, 0));
    assert_eq!(d.resolution.map(|r| (r.width, r.height)), Some((640, 360)));
    assert!((3..6).all(|dt| d.is_switch_point(dt)));
    assert!((0..3).chain(6..9).all(|dt| !d.needed_by(dt)));
    assert_eq!(&d.chain_diffs[..], &[1, 12, 11]);
    let d = parse(&packet(true, true, 13, 108, P::default()), Some(s)).unwrap();
    assert_eq!((d.spatial_id, d.temporal_id), (2, 2));
    assert_eq!(d.resolution.map(|r| (r.width, r.height)), Some((1280, 720)));
    assert!(d.needed_by(8) && !d.is_switch_point(8));
    assert!((0..8).all(|dt| !d.needed_by(dt)));
    assert_eq!(d.referenced_frames().collect::<Vec<_>>(), [105]);
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// See `descriptors_chromium_sent`.
const CHROMIUM_L3T3_KEY: &str =
    "c1017280081485214eafffaaaa863cf0430c10c302afc0aaa0063c00430010c002a000a8000600\
     0040001d954926e082b04a0941b820ac1282503157f974000ca864330e222222eca8655304224230\
     eca877530077004200ef008601df010d";

#[test]
fn descriptors_chromium_sent() {
    // From a capture of Chromium sending AV1 L3T3 (full SVC), as LiveKit's tests keep it
    // (pkg/sfu/rtpextension/dependencydescriptor): a keyframe's descriptor with its
    // structure, then descriptors of the frames after it. The structure is libwebrtc's
    // L3T3: the specification's example A.10.2.2 with decode target 3s + t for spatial
    // layer s at temporal layer t, and render sizes 120x67, 240x135 and 480x270.
    let key = hex(CHROMIUM_L3T3_KEY);
    let d = parse(&key, None).unwrap();
    assert!(d.start_of_frame && d.end_of_frame);
    assert_eq!((d.template_id, d.frame_number), (1, 0x0172));
    let s = d.structure.as_deref().unwrap();
    L3T3_FULL.check(s);
    // The test's writer makes the same bytes of the same structure.
    assert_eq!(
        packet(true, true, 1, 0x172, with_structure(&L3T3_FULL)),
        key
    );
    for dt in 0..9 {
        let layer = s.decode_target_layer(dt).unwrap();
        assert_eq!(
            (layer.spatial_id, layer.temporal_id),
            (dt as u8 / 3, dt as u8 % 3)
        );
    }
    assert_eq!((d.spatial_id, d.temporal_id), (0, 0));
    assert!((0..9).all(|dt| d.is_switch_point(dt)));
    assert!(d.frame_diffs.is_empty());
    assert_eq!(&d.chain_diffs[..], &[0, 0, 0]);
    assert_eq!(d.active_decode_targets, Some(0x1ff));
    assert_eq!(d.resolution.map(|r| (r.width, r.height)), Some((120, 67)));

    // The frames after it, with the top spatial layer's decode targets inactive (0x3f),
    // then without the bitmask: each refers to frames just before it.
    for (bytes, sof, eof, frame, layer, refs, active) in [
        (
            "86017340fc",
            true,
            false,
            0x173,
            (1, 0),
            &[0x172][..],
            Some(0x3f),
        ),
        (
            "46017340fc",
            false,
            true,
            0x173,
            (1, 0),
            &[0x172],
            Some(0x3f),
        ),
        (
            "c3017540fc",
            true,
            true,
            0x175,
            (0, 2),
            &[0x172],
            Some(0x3f),
        ),
        (
            "88017640fc",
            true,
            false,
            0x176,
            (1, 2),
            &[0x173, 0x175],
            Some(0x3f),
        ),
        ("0b0174", false, false, 0x174, (2, 0), &[0x173], None),
        ("c30175", true, true, 0x175, (0, 2), &[0x172], None),
    ] {
        let d = parse(&hex(bytes), Some(s)).unwrap();
        assert_eq!((d.start_of_frame, d.end_of_frame), (sof, eof), "{bytes}");
        assert_eq!(d.frame_number, frame, "{bytes}");
        assert_eq!((d.spatial_id, d.temporal_id), layer, "{bytes}");
        assert_eq!(d.referenced_frames().collect::<Vec<_>>(), refs, "{bytes}");
        assert_eq!(d.active_decode_targets, active, "{bytes}");
        // Needed by the decode targets of its spatial layer and those above, from its
        // temporal layer up.
        for dt in 0..9 {
            let needed = dt / 3 >= layer.0 && dt % 3 >= layer.1;
            assert_eq!(d.needed_by(usize::from(dt)), needed, "{bytes} {dt}");
        }
    }
}

#[test]
fn without_a_structure_nothing_is_described() {
    let next = packet(true, true, 13, 7, P::default());
    assert_eq!(parse(&next, None), Err(DescriptorError::NoStructure));
    let active = packet(
        true,
        true,
        13,
        7,
        P {
            active: Some((1, 3)),
            ..P::default()
        },
    );
    assert_eq!(parse(&active, None), Err(DescriptorError::NoStructure));
}

#[test]
fn a_template_id_outside_the_structure_is_refused() {
    let key = packet(true, true, 10, 1, with_structure(&L1T3));
    let d = parse(&key, None).unwrap();
    let s = d.structure.as_deref().unwrap();
    // Ids 10..=14 name templates; 9 and 15 are outside, as is 9 with the structure in
    // the same packet.
    for id in [9, 15, 63, 0] {
        let p = packet(true, true, id, 2, P::default());
        assert_eq!(
            parse(&p, Some(s)),
            Err(DescriptorError::UnknownTemplate(id))
        );
    }
    let p = packet(true, true, 9, 1, with_structure(&L1T3));
    assert_eq!(parse(&p, None), Err(DescriptorError::UnknownTemplate(9)));
    // Ids wrap: with an offset of 62, ids 62, 63, 0, 1 and 2 are the templates.
    static WRAPPED: S = S { offset: 62, ..L1T3 };
    let key = packet(true, true, 62, 1, with_structure(&WRAPPED));
    let d = parse(&key, None).unwrap();
    let s = d.structure.as_deref().unwrap();
    let d = parse(&packet(false, false, 2, 2, P::default()), Some(s)).unwrap();
    assert_eq!(d.temporal_id, 2);
    assert_eq!(&d.chain_diffs[..], &[3]);
    let p = packet(false, false, 3, 2, P::default());
    assert_eq!(parse(&p, Some(s)), Err(DescriptorError::UnknownTemplate(3)));
}

#[test]
fn a_new_structure_replaces_the_one_given() {
    let old = parse(&packet(true, true, 10, 1, with_structure(&L1T3)), None).unwrap();
    let key = packet(true, true, 0, 2, with_structure(&L3T3_KEY));
    let d = parse(&key, old.structure.as_deref()).unwrap();
    L3T3_KEY.check(d.structure.as_deref().unwrap());
    assert_eq!(d.dtis.len(), 9);
}

#[test]
fn every_cut_of_a_descriptor_is_refused() {
    let latest = parse(&packet(true, true, 10, 1, with_structure(&L1T3)), None).unwrap();
    let latest = latest.structure.as_deref();
    let custom = P {
        active: Some((0b101, 3)),
        dtis: Some("SDR"),
        fdiffs: Some(&[1, 17, 300]),
        chains: Some(&[9]),
        ..P::default()
    };
    let cases = [
        (packet(true, false, 10, 5, with_structure(&L1T3)), None),
        (packet(true, false, 0, 5, with_structure(&L3T3_KEY)), None),
        (packet(true, false, 12, 5, custom), latest),
    ];
    for (whole, latest) in cases {
        assert!(parse(&whole, latest).is_ok());
        for len in 0..whole.len() {
            let cut = &whole[..len];
            match parse(cut, latest) {
                // Three bytes are a whole descriptor: the mandatory fields alone.
                Ok(d) => assert!(len == 3 && latest.is_some() && !d.custom_dtis),
                Err(e) => assert!(
                    matches!(e, DescriptorError::TooShort | DescriptorError::NoStructure),
                    "{len}: {e:?}"
                ),
            }
        }
    }
}

#[test]
fn zero_padding_is_ignored() {
    let key = packet(true, true, 0, 2, with_structure(&L3T3_KEY));
    let d = parse(&key, None).unwrap();
    let mut padded = key.clone();
    padded.extend([0; 4]);
    assert_eq!(parse(&padded, None), Ok(d.clone()));
    // A fourth byte of zeros announces nothing.
    let s = d.structure.as_deref();
    let short = packet(false, false, 5, 3, P::default());
    let mut padded = short.clone();
    padded.push(0);
    assert_eq!(parse(&padded, s), parse(&short, s));
}

#[test]
fn structures_beyond_the_limits_are_refused() {
    // 65 templates of the same layer.
    let mut w = BitWriter::default();
    w.put(24, 0x80_0001);
    w.put(5, 0b10000);
    w.put(6, 0);
    w.put(5, 0);
    for _ in 0..64 {
        w.put(2, 0);
    }
    w.put(2, 3);
    w.put(8, 0);
    assert_eq!(
        parse(&w.bytes, None),
        Err(DescriptorError::TooManyTemplates)
    );
    // A fifth spatial layer, a ninth temporal layer.
    for (idc, count) in [(2, 4), (1, 8)] {
        let mut w = stacked_templates(idc, count);
        w.put(32, 0);
        assert_eq!(parse(&w.bytes, None), Err(DescriptorError::TooManyLayers));
    }
    // Exactly 4 spatial and 8 temporal layers are fine.
    for (idc, count) in [(2, 3), (1, 7)] {
        let mut w = stacked_templates(idc, count);
        // DTIs, no fdiffs, no chains (ns(2): 1 bit), no resolutions.
        w.put(2 * (count + 1), 0);
        w.put(count + 1, 0);
        w.put(2, 0);
        let s = parse(&w.bytes, None).unwrap().structure.unwrap();
        assert_eq!(s.templates().len(), count as usize + 1);
    }
    // 17 frame diffs for one frame, in a template and sent with the packet.
    const MANY: [u16; 17] = [1; 17];
    static MANY_FDIFFS: S = S {
        offset: 0,
        protected_by: &[],
        chains: 0,
        templates: &[t(0, 0, "S", &MANY, &[])],
        resolutions: &[],
    };
    let p = packet(true, true, 0, 1, with_structure(&MANY_FDIFFS));
    assert_eq!(parse(&p, None), Err(DescriptorError::TooManyFrameDiffs));
    let latest = parse(&packet(true, true, 10, 1, with_structure(&L1T3)), None).unwrap();
    let p = packet(
        true,
        true,
        10,
        1,
        P {
            fdiffs: Some(&MANY),
            ..P::default()
        },
    );
    assert_eq!(
        parse(&p, latest.structure.as_deref()),
        Err(DescriptorError::TooManyFrameDiffs)
    );
    let p = packet(
        true,
        true,
        10,
        1,
        P {
            fdiffs: Some(&MANY[..16]),
            ..P::default()
        },
    );
    assert!(parse(&p, latest.structure.as_deref()).is_ok());
}

#[test]
fn thirty_two_decode_targets_and_chains() {
    const DTIS: &str = "SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS";
    const CHAINS: [u8; 32] = [15; 32];
    const PROTECTED: [u8; 32] = [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
        25, 26, 27, 28, 29, 30, 31,
    ];
    static WIDE: S = S {
        offset: 5,
        protected_by: &PROTECTED,
        chains: 32,
        templates: &[t(0, 0, DTIS, &[], &CHAINS)],
        resolutions: &[(65536, 1)],
    };
    let p = packet(
        true,
        true,
        5,
        1,
        P {
            structure: Some(&WIDE),
            active: Some((0x8000_0001, 32)),
            ..P::default()
        },
    );
    let d = parse(&p, None).unwrap();
    WIDE.check(d.structure.as_deref().unwrap());
    assert_eq!(d.active_decode_targets, Some(0x8000_0001));
    assert_eq!(d.chain_diffs.len(), 32);
    assert!(d.is_switch_point(31));
    let p = packet(true, true, 5, 1, with_structure(&WIDE));
    assert_eq!(
        parse(&p, None).unwrap().active_decode_targets,
        Some(u32::MAX)
    );
}
