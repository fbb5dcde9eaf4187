//! The Dependency Descriptor RTP header extension (AV1 RTP payload format, Appendix A): for each
//! packet, which frame it carries, the frame's spatial and temporal layer, how each decode target
//! needs it, which frames it refers to and the last frame of each chain.
//!
//! Why the relay reads it: forwarding AV1 with spatial and temporal layers (SVC) in one RTP
//! stream, the relay must drop, per subscriber, the layers that subscriber does not get, and it
//! must know where a subscriber may be switched up, all without decoding (the payload may even be
//! encrypted end to end). The descriptor says both in the header; no crate parses it, so it is
//! read here, sans-IO and without allocating except for a structure a packet carries.
//!
//! ```text
//!  S|E| template id (6) | frame_number (16)        always: the first 3 bytes
//!  D|A|T|F|C                                       only if the element is longer than 3 bytes
//!  template dependency structure                   if D
//!  active_decode_targets_bitmask (one bit per DT)  if A
//!  custom DTIs, frame diffs, chain diffs           if T, F, C (else the template's)
//!  zero padding to the element's end
//! ```
//!
//! The template dependency structure comes with the first packet of a coded video sequence (a
//! keyframe) and describes every template; later packets name one of them by id. So the caller
//! keeps the last structure it was given ([`Descriptor::structure`]) and reads later packets
//! against it ([`parse`]). Bit layout and names follow the specification's §A.8.2
//! (<https://aomediacodec.github.io/av1-rtp-spec/#a82-syntax>).

use std::fmt;
use std::ops::{Deref, DerefMut};

/// The extension's URI in SDP (`a=extmap`).
pub const URI: &str =
    "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension";

/// Templates in a structure: template ids are 6 bits, so a 65th could never be named.
pub const MAX_TEMPLATES: usize = 64;
/// Decode targets in a structure: `dt_cnt_minus_one` is 5 bits.
pub const MAX_DECODE_TARGETS: usize = 32;
/// Chains in a structure: there are never more chains than decode targets (`chain_cnt` is
/// read as `ns(DtCnt + 1)`).
pub const MAX_CHAINS: usize = MAX_DECODE_TARGETS;
/// Spatial layers: AV1's `spatial_id` is 2 bits.
pub const MAX_SPATIAL_LAYERS: usize = 4;
/// Temporal layers: AV1's `temporal_id` is 3 bits.
pub const MAX_TEMPORAL_LAYERS: usize = 8;
/// Frame diffs of one frame or template. The specification sets no bound; an AV1 frame refers
/// to at most 7 frames and libwebrtc's receiver drops a frame that lists more than 5, so 16
/// (as many as H.264 allows) refuses nothing a sender means.
pub const MAX_FRAME_DIFFS: usize = 16;

/// Why a descriptor was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// The element ends before the fields it announces (or is shorter than the 3 mandatory
    /// bytes).
    #[error("dependency descriptor cut short")]
    TooShort,
    /// The packet carries no template dependency structure and none was known: its frame
    /// cannot be described (a keyframe's first packet was lost or is still to come).
    #[error("dependency descriptor without a known template dependency structure")]
    NoStructure,
    /// The frame's template id is not one of the structure's: the packet belongs to another
    /// structure (whose packet was lost or delayed), or is malformed.
    #[error("frame dependency template id {0} is not in the structure")]
    UnknownTemplate(u8),
    /// A structure with more templates than template ids can name.
    #[error("more than {MAX_TEMPLATES} frame dependency templates")]
    TooManyTemplates,
    /// A structure with a spatial id above 3 or a temporal id above 7.
    #[error("a template's spatial or temporal id is out of range")]
    TooManyLayers,
    /// A frame or template with more than [`MAX_FRAME_DIFFS`] frame diffs.
    #[error("more than {MAX_FRAME_DIFFS} frame diffs")]
    TooManyFrameDiffs,
}

/// How a frame matters to one decode target (Table A.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dti {
    /// Not part of the decode target: a subscriber to it does not get the frame.
    #[default]
    NotPresent = 0,
    /// Part of it, but no later frame of the decode target refers to it: may be dropped.
    Discardable = 1,
    /// Part of it, and every later frame of the decode target is decodable if this one is:
    /// a subscriber may start on the decode target here.
    Switch = 2,
    /// Part of it, neither discardable nor a switch point.
    Required = 3,
}

impl Dti {
    /// The 2-bit value's meaning.
    fn from_bits(v: u32) -> Dti {
        match v & 3 {
            0 => Dti::NotPresent,
            1 => Dti::Discardable,
            2 => Dti::Switch,
            _ => Dti::Required,
        }
    }
}

/// Up to `N` values kept inline, so that reading a descriptor allocates nothing and no count
/// read from the wire can make it grow past `N`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Bounded<T, const N: usize> {
    len: u8,
    items: [T; N],
}

impl<T: Copy + Default, const N: usize> Bounded<T, N> {
    fn new() -> Self {
        const { assert!(N <= u8::MAX as usize, "the count is a u8") };
        Bounded {
            len: 0,
            items: [T::default(); N],
        }
    }

    /// Append `v`; false (and nothing appended) when full.
    fn push(&mut self, v: T) -> bool {
        let Some(slot) = self.items.get_mut(usize::from(self.len)) else {
            return false;
        };
        *slot = v;
        self.len += 1;
        true
    }
}

impl<T: Copy + Default, const N: usize> Default for Bounded<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> Deref for Bounded<T, N> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // `push` keeps len at most N, so the range is always there.
        self.items.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl<T, const N: usize> DerefMut for Bounded<T, N> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.items
            .get_mut(..usize::from(self.len))
            .unwrap_or(&mut [])
    }
}

impl<T: fmt::Debug, const N: usize> fmt::Debug for Bounded<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// One DTI per decode target.
pub type Dtis = Bounded<Dti, MAX_DECODE_TARGETS>;
/// Differences between a frame's number and the numbers of the frames it refers to (each at
/// least 1, modulo 2^16).
pub type FrameDiffs = Bounded<u16, MAX_FRAME_DIFFS>;
/// Per chain, the difference between a frame's number and the number of the previous frame in
/// that chain (0: no previous frame is needed).
pub type ChainDiffs = Bounded<u8, MAX_CHAINS>;

/// A spatial and temporal layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Layer {
    /// The spatial (or quality) layer, 0 the lowest.
    pub spatial_id: u8,
    /// The temporal layer, 0 the lowest.
    pub temporal_id: u8,
}

/// The largest picture a spatial layer renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resolution {
    /// Width in pixels (1..=65536).
    pub width: u32,
    /// Height in pixels (1..=65536).
    pub height: u32,
}

/// A frame dependency template: what the frames that name it have in common.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Template {
    /// The frames' spatial layer.
    pub spatial_id: u8,
    /// The frames' temporal layer.
    pub temporal_id: u8,
    /// Their DTI for each decode target.
    pub dtis: Dtis,
    /// Their frame diffs (1..=16 each).
    pub frame_diffs: FrameDiffs,
    /// Their chain diffs (0..=15 each), one per chain.
    pub chain_diffs: ChainDiffs,
}

/// A template dependency structure: the templates, decode targets and chains of a coded video
/// sequence, sent once in a keyframe's packet and kept by the caller for the packets after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structure {
    template_id_offset: u8,
    decode_targets: u8,
    chains: u8,
    templates: Bounded<Template, MAX_TEMPLATES>,
    /// Per decode target, the chain protecting it; empty without chains.
    protected_by: Bounded<u8, MAX_DECODE_TARGETS>,
    /// Per decode target, the highest layers of the templates it has a frame of (§A.8.2
    /// `decode_target_layers`).
    decode_target_layers: Bounded<Layer, MAX_DECODE_TARGETS>,
    /// Per spatial layer, if the structure gives them.
    resolutions: Bounded<Resolution, MAX_SPATIAL_LAYERS>,
}

impl Structure {
    /// The template id of the first template; ids count on from it, modulo 64. A new structure
    /// usually moves it, so that packets of the old one are recognised as such.
    pub fn template_id_offset(&self) -> u8 {
        self.template_id_offset
    }

    /// The number of decode targets (1..=32).
    pub fn decode_targets(&self) -> usize {
        usize::from(self.decode_targets)
    }

    /// The number of chains (0..=decode targets).
    pub fn chains(&self) -> usize {
        usize::from(self.chains)
    }

    /// The templates, in template index order.
    pub fn templates(&self) -> &[Template] {
        &self.templates
    }

    /// The template a frame's template id names, if it is one of this structure's.
    pub fn template(&self, template_id: u8) -> Option<&Template> {
        let index = template_id.wrapping_sub(self.template_id_offset) & 63;
        self.templates.get(usize::from(index))
    }

    /// The chain protecting decode target `dt`: while it is intact, a subscriber may be
    /// switched to `dt` (§A.7). None without chains.
    pub fn protected_by(&self, dt: usize) -> Option<usize> {
        self.protected_by.get(dt).map(|&c| usize::from(c))
    }

    /// The layers decode target `dt` gives: the highest spatial and temporal ids of the
    /// templates it has frames of. How a forwarder matches a subscriber's wanted layers to a
    /// decode target.
    pub fn decode_target_layer(&self, dt: usize) -> Option<Layer> {
        self.decode_target_layers.get(dt).copied()
    }

    /// The largest picture of each spatial layer, if the structure gives them.
    pub fn resolutions(&self) -> &[Resolution] {
        &self.resolutions
    }
}

/// What one packet's descriptor says of its frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The packet begins a frame.
    pub start_of_frame: bool,
    /// The packet ends a frame (more frames of the same picture may follow in other spatial
    /// layers).
    pub end_of_frame: bool,
    /// The template the frame names.
    pub template_id: u8,
    /// The frame's number, the same in all its packets, increasing in decode order, wrapping.
    pub frame_number: u16,
    /// The frame's spatial layer (from its template).
    pub spatial_id: u8,
    /// The frame's temporal layer (from its template).
    pub temporal_id: u8,
    /// Whether `dtis` were sent with this packet rather than taken from the template.
    pub custom_dtis: bool,
    /// The frame's DTI for each decode target of the structure.
    pub dtis: Dtis,
    /// Whether `frame_diffs` were sent with this packet.
    pub custom_frame_diffs: bool,
    /// The frame's frame diffs (1..=4096 each when sent, 1..=16 from a template).
    pub frame_diffs: FrameDiffs,
    /// Whether `chain_diffs` were sent with this packet.
    pub custom_chain_diffs: bool,
    /// The frame's chain diffs, one per chain of the structure.
    pub chain_diffs: ChainDiffs,
    /// The decode targets the sender produces (bit i for decode target i), when this packet
    /// says: sent explicitly, or all of them when the packet carries a structure. None: as the
    /// last packet that said (§A.4).
    pub active_decode_targets: Option<u32>,
    /// The largest picture of the frame's spatial layer, if the structure gives it.
    pub resolution: Option<Resolution>,
    /// The structure this packet carried, for the caller to keep and read later packets with.
    pub structure: Option<Box<Structure>>,
}

impl Descriptor {
    /// The frame's DTI for decode target `dt` (not present for a target the structure lacks).
    pub fn dti(&self, dt: usize) -> Dti {
        self.dtis.get(dt).copied().unwrap_or_default()
    }

    /// Whether a subscriber to decode target `dt` needs this frame: it is forwarded to them
    /// only if so.
    pub fn needed_by(&self, dt: usize) -> bool {
        self.dti(dt) != Dti::NotPresent
    }

    /// Whether a subscriber may be switched to decode target `dt` at this frame (if the frame
    /// itself is decodable, every later frame of `dt` will be).
    pub fn is_switch_point(&self, dt: usize) -> bool {
        self.dti(dt) == Dti::Switch
    }

    /// The numbers of the frames this frame refers to.
    pub fn referenced_frames(&self) -> impl Iterator<Item = u16> + '_ {
        self.frame_diffs
            .iter()
            .map(|&d| self.frame_number.wrapping_sub(d))
    }
}

/// Read a descriptor (the extension element's value, `data.len()` its length). A packet that
/// carries no structure is read against `latest`, the last one the caller kept; one that
/// carries a structure is read against it, and returns it in [`Descriptor::structure`].
pub fn parse(data: &[u8], latest: Option<&Structure>) -> Result<Descriptor, DescriptorError> {
    let mut r = Bits::new(data);
    let start_of_frame = r.bit()?;
    let end_of_frame = r.bit()?;
    let template_id = r.bits(6)? as u8;
    let frame_number = r.bits(16)? as u16;

    let (mut carried, mut active) = (None, None);
    let (mut custom_dtis, mut custom_frame_diffs, mut custom_chain_diffs) = (false, false, false);
    if data.len() > 3 {
        let has_structure = r.bit()?;
        let has_active = r.bit()?;
        custom_dtis = r.bit()?;
        custom_frame_diffs = r.bit()?;
        custom_chain_diffs = r.bit()?;
        if has_structure {
            let s = read_structure(&mut r)?;
            active = Some(all_targets(s.decode_targets));
            carried = Some(Box::new(s));
        }
        if has_active {
            let s = carried
                .as_deref()
                .or(latest)
                .ok_or(DescriptorError::NoStructure)?;
            active = Some(r.bits(u32::from(s.decode_targets))?);
        }
    }

    let s = carried
        .as_deref()
        .or(latest)
        .ok_or(DescriptorError::NoStructure)?;
    let template = s
        .template(template_id)
        .ok_or(DescriptorError::UnknownTemplate(template_id))?;
    let dtis = if custom_dtis {
        read_dtis(&mut r, s.decode_targets)?
    } else {
        template.dtis
    };
    let frame_diffs = if custom_frame_diffs {
        read_frame_diffs(&mut r)?
    } else {
        template.frame_diffs
    };
    let chain_diffs = if custom_chain_diffs {
        let mut diffs = ChainDiffs::new();
        for _ in 0..s.chains {
            // At most MAX_CHAINS: a structure has no more.
            diffs.push(r.bits(8)? as u8);
        }
        diffs
    } else {
        template.chain_diffs
    };
    let (spatial_id, temporal_id) = (template.spatial_id, template.temporal_id);
    let resolution = s.resolutions.get(usize::from(spatial_id)).copied();
    // What follows is zero padding, which receivers ignore.
    Ok(Descriptor {
        start_of_frame,
        end_of_frame,
        template_id,
        frame_number,
        spatial_id,
        temporal_id,
        custom_dtis,
        dtis,
        custom_frame_diffs,
        frame_diffs,
        custom_chain_diffs,
        chain_diffs,
        active_decode_targets: active,
        resolution,
        structure: carried,
    })
}

/// The bitmask with every one of `count` (1..=32) decode targets active.
fn all_targets(count: u8) -> u32 {
    u32::MAX >> (32 - u32::from(count.clamp(1, 32)))
}

/// `template_dependency_structure()` (§A.8.2).
fn read_structure(r: &mut Bits) -> Result<Structure, DescriptorError> {
    let template_id_offset = r.bits(6)? as u8;
    // 1..=32.
    let decode_targets = r.bits(5)? as u8 + 1;
    let mut templates = read_template_layers(r)?;
    for t in templates.iter_mut() {
        t.dtis = read_dtis(r, decode_targets)?;
    }
    for t in templates.iter_mut() {
        while r.bit()? {
            if !t.frame_diffs.push(r.bits(4)? as u16 + 1) {
                return Err(DescriptorError::TooManyFrameDiffs);
            }
        }
    }
    // At most decode_targets, so within MAX_CHAINS.
    let chains = r.ns(decode_targets + 1)?;
    let mut protected_by = Bounded::new();
    if chains > 0 {
        for _ in 0..decode_targets {
            protected_by.push(r.ns(chains)?);
        }
        for t in templates.iter_mut() {
            for _ in 0..chains {
                t.chain_diffs.push(r.bits(4)? as u8);
            }
        }
    }
    let mut decode_target_layers = Bounded::new();
    for dt in 0..usize::from(decode_targets) {
        let mut layer = Layer::default();
        for t in templates.iter() {
            if t.dtis.get(dt).is_some_and(|&d| d != Dti::NotPresent) {
                layer.spatial_id = layer.spatial_id.max(t.spatial_id);
                layer.temporal_id = layer.temporal_id.max(t.temporal_id);
            }
        }
        decode_target_layers.push(layer);
    }
    let mut resolutions = Bounded::new();
    if r.bit()? {
        // The last template has the highest spatial id: layers only ever go up.
        let top = templates.last().map_or(0, |t| t.spatial_id);
        for _ in 0..=top {
            let width = r.bits(16)? + 1;
            let height = r.bits(16)? + 1;
            // At most MAX_SPATIAL_LAYERS, checked while reading the layers.
            resolutions.push(Resolution { width, height });
        }
    }
    Ok(Structure {
        template_id_offset,
        decode_targets,
        chains,
        templates,
        protected_by,
        decode_target_layers,
        resolutions,
    })
}

/// `template_layers()`: the templates' spatial and temporal ids, each template's given by how
/// it differs from the one before.
fn read_template_layers(r: &mut Bits) -> Result<Bounded<Template, MAX_TEMPLATES>, DescriptorError> {
    let mut templates = Bounded::<Template, MAX_TEMPLATES>::new();
    let mut layer = Layer::default();
    loop {
        let template = Template {
            spatial_id: layer.spatial_id,
            temporal_id: layer.temporal_id,
            ..Template::default()
        };
        if !templates.push(template) {
            return Err(DescriptorError::TooManyTemplates);
        }
        match r.bits(2)? {
            // The next template has the same layers.
            0 => {}
            // The next temporal layer.
            1 => layer.temporal_id += 1,
            // The next spatial layer, from temporal layer 0.
            2 => {
                layer.spatial_id += 1;
                layer.temporal_id = 0;
            }
            // No more templates.
            _ => return Ok(templates),
        }
        if usize::from(layer.spatial_id) >= MAX_SPATIAL_LAYERS
            || usize::from(layer.temporal_id) >= MAX_TEMPORAL_LAYERS
        {
            return Err(DescriptorError::TooManyLayers);
        }
    }
}

/// One 2-bit DTI per decode target (`count` at most MAX_DECODE_TARGETS).
fn read_dtis(r: &mut Bits, count: u8) -> Result<Dtis, DescriptorError> {
    let mut dtis = Dtis::new();
    for _ in 0..count {
        dtis.push(Dti::from_bits(r.bits(2)?));
    }
    Ok(dtis)
}

/// `frame_fdiffs()`: each diff minus one in 4, 8 or 12 bits, after a 2-bit size (0 ends).
fn read_frame_diffs(r: &mut Bits) -> Result<FrameDiffs, DescriptorError> {
    let mut diffs = FrameDiffs::new();
    loop {
        let size = r.bits(2)?;
        if size == 0 {
            return Ok(diffs);
        }
        // At most 4095 + 1.
        let diff = r.bits(4 * size)? as u16 + 1;
        if !diffs.push(diff) {
            return Err(DescriptorError::TooManyFrameDiffs);
        }
    }
}

/// A reader of bits, most significant first; every read past the end is [`TooShort`].
///
/// [`TooShort`]: DescriptorError::TooShort
struct Bits<'a> {
    data: &'a [u8],
    /// The byte being read, at most `data.len()`.
    byte: usize,
    /// The next bit in it, 0..=7 from the most significant.
    bit: u8,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bits {
            data,
            byte: 0,
            bit: 0,
        }
    }

    fn bit(&mut self) -> Result<bool, DescriptorError> {
        let b = self.data.get(self.byte).ok_or(DescriptorError::TooShort)?;
        let v = b >> (7 - self.bit) & 1;
        if self.bit == 7 {
            (self.byte, self.bit) = (self.byte + 1, 0);
        } else {
            self.bit += 1;
        }
        Ok(v == 1)
    }

    /// `f(n)`, `n` at most 32.
    fn bits(&mut self, n: u32) -> Result<u32, DescriptorError> {
        (0..n).try_fold(0, |v: u32, _| Ok(v << 1 | u32::from(self.bit()?)))
    }

    /// `ns(n)`: a value below `n` in one bit fewer than `n` needs for its small values, one
    /// more bit for the others (0..=4 of n = 5: 00, 01, 10, 110, 111). No bits for n of 0 or 1.
    fn ns(&mut self, n: u8) -> Result<u8, DescriptorError> {
        if n <= 1 {
            return Ok(0);
        }
        let n = u32::from(n);
        // n's bit length, 2..=8; n lies in [2^(w-1), 2^w).
        let w = u32::BITS - n.leading_zeros();
        // The count of short codes, 1..=2^(w-1).
        let m = (1 << w) - n;
        let v = self.bits(w - 1)?;
        if v < m {
            return Ok(v as u8);
        }
        let extra = self.bits(1)?;
        // At most n - 1.
        Ok(((v << 1) - m + extra) as u8)
    }
}

#[cfg(test)]
mod tests {
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

    /// A template as the specification's tables write it: DTIs as `-`, `D`, `S`, `R`.
    struct T {
        s: u8,
        t: u8,
        dtis: &'static str,
        fdiffs: &'static [u16],
        chains: &'static [u8],
    }

    const fn t(
        s: u8,
        t: u8,
        dtis: &'static str,
        fdiffs: &'static [u16],
        chains: &'static [u8],
    ) -> T {
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
            let mut w = BitWriter::default();
            w.put(24, 0x80_0001);
            w.put(5, 0b10000);
            w.put(6, 0);
            w.put(5, 0);
            for _ in 0..count {
                w.put(2, idc);
            }
            w.put(2, 3);
            w.put(32, 0);
            assert_eq!(parse(&w.bytes, None), Err(DescriptorError::TooManyLayers));
        }
        // Exactly 4 spatial and 8 temporal layers are fine.
        for (idc, count) in [(2, 3), (1, 7)] {
            let mut w = BitWriter::default();
            w.put(24, 0x80_0001);
            w.put(5, 0b10000);
            w.put(6, 0);
            w.put(5, 0);
            for _ in 0..count {
                w.put(2, idc);
            }
            w.put(2, 3);
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
            0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
            24, 25, 26, 27, 28, 29, 30, 31,
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

    /// Writes the seed corpus of the fuzz target `dependency_descriptor` (one length byte,
    /// a descriptor with its structure of that length, then one read against it):
    /// `cargo test -p relay --lib write_seed_corpus -- --ignored`.
    #[test]
    #[ignore]
    fn write_seed_corpus() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus/dependency_descriptor");
        std::fs::create_dir_all(&dir).unwrap();
        let l1t3 = packet(true, false, 10, 0xfffe, with_structure(&L1T3));
        let l3t3 = packet(true, true, 0, 100, with_structure(&L3T3_KEY));
        let custom = P {
            active: Some((0b011, 3)),
            dtis: Some("-SR"),
            fdiffs: Some(&[3, 20, 4096]),
            chains: Some(&[200]),
            ..P::default()
        };
        let seeds = [
            ("l1t3_key", l1t3.clone(), vec![]),
            (
                "l1t3_delta",
                l1t3.clone(),
                packet(false, true, 13, 0xffff, P::default()),
            ),
            ("l1t3_custom", l1t3, packet(true, true, 12, 1, custom)),
            (
                "l3t3_key_delta",
                l3t3,
                packet(true, true, 13, 108, P::default()),
            ),
            ("chromium_l3t3", hex(CHROMIUM_L3T3_KEY), hex("88017640fc")),
        ];
        for (name, first, second) in seeds {
            let mut data = vec![first.len() as u8];
            data.extend(first);
            data.extend(second);
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
}
