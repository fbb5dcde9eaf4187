//! The template dependency structure (§A.8.2): the templates, decode targets and chains
//! a keyframe's packet carries, and how it is read.

use super::bits::Bits;
use super::*;

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
    pub(super) template_id_offset: u8,
    pub(super) decode_targets: u8,
    pub(super) chains: u8,
    pub(super) templates: Bounded<Template, MAX_TEMPLATES>,
    /// Per decode target, the chain protecting it; empty without chains.
    pub(super) protected_by: Bounded<u8, MAX_DECODE_TARGETS>,
    /// Per decode target, the highest layers of the templates it has a frame of (§A.8.2
    /// `decode_target_layers`).
    pub(super) decode_target_layers: Bounded<Layer, MAX_DECODE_TARGETS>,
    /// Per spatial layer, if the structure gives them.
    pub(super) resolutions: Bounded<Resolution, MAX_SPATIAL_LAYERS>,
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

/// `template_dependency_structure()` (§A.8.2).
pub(super) fn read_structure(r: &mut Bits) -> Result<Structure, DescriptorError> {
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
pub(super) fn read_dtis(r: &mut Bits, count: u8) -> Result<Dtis, DescriptorError> {
    let mut dtis = Dtis::new();
    for _ in 0..count {
        dtis.push(Dti::from_bits(r.bits(2)?));
    }
    Ok(dtis)
}

/// `frame_fdiffs()`: each diff minus one in 4, 8 or 12 bits, after a 2-bit size (0 ends).
pub(super) fn read_frame_diffs(r: &mut Bits) -> Result<FrameDiffs, DescriptorError> {
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
