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

mod bits;
mod bounded;
mod structure;
#[cfg(test)]
mod tests;

pub use bounded::Bounded;
pub use structure::{Layer, Resolution, Structure, Template};

use bits::Bits;
use structure::{read_dtis, read_frame_diffs, read_structure};

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

/// One DTI per decode target.
pub type Dtis = Bounded<Dti, MAX_DECODE_TARGETS>;
/// Differences between a frame's number and the numbers of the frames it refers to (each at
/// least 1, modulo 2^16).
pub type FrameDiffs = Bounded<u16, MAX_FRAME_DIFFS>;
/// Per chain, the difference between a frame's number and the number of the previous frame in
/// that chain (0: no previous frame is needed).
pub type ChainDiffs = Bounded<u8, MAX_CHAINS>;

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
