//! Layer dropping for a feed whose spatial and temporal layers travel in one stream (VP9 and
//! AV1 SVC), from the dependency descriptor each of its packets carries.
//!
//! Simulcast sends a subscriber one of several streams and switches between them at
//! keyframes; SVC sends one stream in which each frame belongs to a spatial and a temporal
//! layer, and a subscriber is sent the frames its *decode target* (a set of layers, such as
//! "640x360 at 30 fps") needs and none of the others. The descriptor says, for every frame
//! and every decode target of its structure, whether the target needs the frame and whether
//! it may start there, so the relay never reads the codec's own headers (which end-to-end
//! encryption would hide).
//!
//! - [`SvcStream`], on the feed's core: reads each packet's descriptor against the latest
//!   structure and sums it up as an [`SvcFrame`], small and `Copy` so that it crosses cores
//!   with the packet.
//! - [`SvcSelector`], per subscriber: which decode target it is on, and whether each packet
//!   goes to it. It moves to another decode target only at a frame that is a switch point
//!   for it and decodable (every frame it refers to was sent to this subscriber), so the
//!   subscriber's decoder never waits for a frame it will not get.
//!
//! Sans-IO and allocation-free per packet.

use crate::engine::dependency_descriptor::{self, DescriptorError, Structure};
use crate::engine::rtp;

/// Frames a subscriber was sent, remembered for the decodability check: references reach
/// back further than this only across a keyframe interval, which a switch point renews.
const FRAME_WINDOW: u16 = 128;

/// What the relay needs to know of one packet's frame to forward it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SvcFrame {
    /// The frame's number (the same in all its packets).
    pub frame_number: u16,
    /// The packet begins the frame.
    pub start_of_frame: bool,
    /// The packet ends the frame.
    pub end_of_frame: bool,
    /// The frame's spatial layer.
    pub spatial_id: u8,
    /// The frame's temporal layer.
    pub temporal_id: u8,
    /// Bit `dt`: decode target `dt` needs the frame.
    pub needed_by: u32,
    /// Bit `dt`: a subscriber may start on decode target `dt` at this frame.
    pub switch_for: u32,
    /// The frames it refers to, `references` of them.
    pub referenced: [u16; 4],
    /// How many of `referenced` are set (a frame referring to more is never a switch point
    /// for the relay).
    pub references: u8,
    /// Which structure the frame was read against (counts up with each new one).
    pub structure: u32,
    /// For each spatial and temporal layer (index `4 * spatial + temporal`), the decode
    /// target that gives the most within them: what a subscriber capped there gets.
    pub decode_target_for: [u8; 16],
    /// The spatial layers there are, and the picture size of each where the structure gives
    /// it: what a subscriber's element is matched with.
    pub spatial_layers: u8,
    /// The temporal layers there are (the same in every spatial layer in the modes browsers
    /// encode).
    pub temporal_layers: u8,
    /// (width, height) per spatial layer; zero where not given.
    pub sizes: [(u16, u16); 4],
}

impl SvcFrame {
    /// The decode target that gives the most within spatial layer `spatial` and temporal
    /// layer `temporal` (3 for all of them).
    pub fn decode_target(&self, spatial: u8, temporal: u8) -> u8 {
        self.decode_target_for[usize::from(spatial.min(3)) * 4 + usize::from(temporal.min(3))]
    }

    /// The spatial layers' sizes, where known, lowest first.
    pub fn layer_sizes(&self) -> impl Iterator<Item = Option<(u16, u16)>> + '_ {
        self.sizes
            .iter()
            .take(usize::from(self.spatial_layers.min(4)))
            .map(|&s| (s != (0, 0)).then_some(s))
    }
}

impl SvcFrame {
    /// The frames it refers to.
    pub fn referenced_frames(&self) -> &[u16] {
        &self.referenced[..usize::from(self.references.min(4))]
    }
}

/// The descriptors of one SVC feed, on the feed's core.
#[derive(Debug, Default)]
pub struct SvcStream {
    structure: Option<Box<Structure>>,
    /// Counts structures seen, so that subscribers notice a new one.
    generation: u32,
    /// The structure's [`SvcFrame::decode_target_for`], layers and sizes.
    decode_target_for: [u8; 16],
    spatial_layers: u8,
    temporal_layers: u8,
    sizes: [(u16, u16); 4],
}

impl SvcStream {
    /// The structure in force, if one has been seen.
    pub fn structure(&self) -> Option<&Structure> {
        self.structure.as_deref()
    }

    /// Which structure is in force (see [`SvcFrame::structure`]).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Read the descriptor in extension `id` of `packet` (plaintext RTP). None where the
    /// packet carries none; an error where it does not parse (no structure known yet, or one
    /// that was lost): such a packet cannot be placed in any decode target.
    pub fn handle_packet(
        &mut self,
        packet: &[u8],
        id: u8,
    ) -> Option<Result<SvcFrame, DescriptorError>> {
        let value = rtp::extension(packet, id)?;
        Some(self.read(value))
    }

    fn read(&mut self, value: &[u8]) -> Result<SvcFrame, DescriptorError> {
        let mut d = dependency_descriptor::parse(value, self.structure.as_deref())?;
        if let Some(s) = d.structure.take() {
            self.decode_target_for = decode_targets_by_layers(&s);
            let count = |layer: fn(&dependency_descriptor::Template) -> u8| {
                s.templates()
                    .iter()
                    .map(|t| layer(t) + 1)
                    .max()
                    .unwrap_or(1)
                    .min(4)
            };
            self.spatial_layers = count(|t| t.spatial_id);
            self.temporal_layers = count(|t| t.temporal_id);
            self.sizes = [(0, 0); 4];
            for (slot, r) in self.sizes.iter_mut().zip(s.resolutions()) {
                let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
                *slot = (clamp(r.width), clamp(r.height));
            }
            self.structure = Some(s);
            self.generation = self.generation.wrapping_add(1);
        }
        let mut frame = SvcFrame {
            frame_number: d.frame_number,
            start_of_frame: d.start_of_frame,
            end_of_frame: d.end_of_frame,
            spatial_id: d.spatial_id,
            temporal_id: d.temporal_id,
            needed_by: 0,
            switch_for: 0,
            referenced: [0; 4],
            references: 0,
            structure: self.generation,
            decode_target_for: self.decode_target_for,
            spatial_layers: self.spatial_layers,
            temporal_layers: self.temporal_layers,
            sizes: self.sizes,
        };
        for dt in 0..d.dtis.len().min(32) {
            if d.needed_by(dt) {
                frame.needed_by |= 1 << dt;
            }
            if d.is_switch_point(dt) {
                frame.switch_for |= 1 << dt;
            }
        }
        let mut references = 0;
        for f in d.referenced_frames() {
            match frame.referenced.get_mut(references) {
                Some(slot) => *slot = f,
                // More references than kept: never a place to switch at.
                None => {
                    frame.switch_for = 0;
                    break;
                }
            }
            references += 1;
        }
        frame.references = references as u8;
        Ok(frame)
    }
}

/// For each spatial and temporal layer (up to 4 of each, index `4 * spatial + temporal`),
/// the decode target of `s` with the highest layers at or below both: spatial first, then
/// temporal. Layers no decode target stays within get the lowest decode target.
fn decode_targets_by_layers(s: &Structure) -> [u8; 16] {
    let mut best = [0u8; 16];
    for (i, slot) in best.iter_mut().enumerate() {
        let (spatial, temporal) = (i / 4, i % 4);
        let mut chosen: Option<(u8, u8, u8)> = None;
        for dt in 0..s.decode_targets().min(32) {
            let Some(layer) = s.decode_target_layer(dt) else {
                continue;
            };
            if usize::from(layer.spatial_id) > spatial || usize::from(layer.temporal_id) > temporal
            {
                continue;
            }
            let key = (layer.spatial_id, layer.temporal_id, dt as u8);
            if chosen.is_none_or(|c| (key.0, key.1) > (c.0, c.1)) {
                chosen = Some(key);
            }
        }
        *slot = chosen.map_or(0, |c| c.2);
    }
    best
}

/// What to do with one packet for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvcForward {
    /// Send it.
    Send,
    /// Send it: the subscriber is on another decode target from this frame on.
    Switch,
    /// Not for this subscriber.
    Drop,
}

/// One subscriber's decode target of an SVC feed.
#[derive(Debug, Clone)]
pub struct SvcSelector {
    /// The decode target it gets, once it started on one.
    current: Option<u8>,
    /// The decode target it should get.
    target: u8,
    /// Where set, the target follows the stream's structure: the best decode target within
    /// these spatial and temporal layers ([`SvcFrame::decode_target`]).
    cap: Option<(u8, u8)>,
    /// The layers `current` stands for, where it was chosen by `cap`.
    current_layers: Option<(u8, u8)>,
    /// The structure `current` belongs to.
    structure: u32,
    /// Frame numbers sent to it: bit `i` is `newest - i`.
    sent: u128,
    newest: Option<u16>,
    /// The frame being forwarded or dropped, and which (all its packets go the same way).
    frame: Option<(u16, bool)>,
    switches: u32,
}

impl SvcSelector {
    /// A subscriber that should get decode target `target`.
    pub fn new(target: u8) -> Self {
        SvcSelector {
            current: None,
            target,
            cap: None,
            current_layers: None,
            structure: 0,
            sent: 0,
            newest: None,
            frame: None,
            switches: 0,
        }
    }

    /// The decode target it gets, if it started on one.
    pub fn current(&self) -> Option<u8> {
        self.current
    }

    /// The decode target it should get.
    pub fn target(&self) -> u8 {
        self.target
    }

    /// Moves between decode targets so far (not counting the first).
    pub fn switches(&self) -> u32 {
        self.switches
    }

    /// The spatial and temporal layers of the decode target it gets, where a cap chose it
    /// (capped by the layers there are).
    pub fn current_layers(&self) -> Option<(u8, u8)> {
        self.current_layers.filter(|_| self.current.is_some())
    }

    /// Aim for decode target `dt`: taken at its next switch point that is decodable.
    pub fn set_target(&mut self, dt: u8) {
        self.target = dt;
        self.cap = None;
    }

    /// Aim for the best decode target within spatial layer `spatial` and temporal layer
    /// `temporal` (3 for all of them), whichever it is in the structure in force.
    pub fn set_cap(&mut self, spatial: u8, temporal: u8) {
        self.cap = Some((spatial.min(3), temporal.min(3)));
    }

    /// Whether the move it waits for needs a keyframe: it has no decode target yet, or its
    /// target is in another spatial layer (in k-SVC a spatial layer's delta frames refer only
    /// to its own, which a subscriber on another was not sent). A move between temporal
    /// layers of one spatial layer is taken at the next frame of the lower one.
    pub fn needs_keyframe(&self, frame: &SvcFrame) -> bool {
        let target = self
            .cap
            .map_or(self.target, |(s, t)| frame.decode_target(s, t));
        if self.current == Some(target) {
            return false;
        }
        match (self.current_layers(), self.cap) {
            (Some((spatial, _)), Some((cap, _))) => {
                spatial != cap.min(frame.spatial_layers.saturating_sub(1))
            }
            _ => true,
        }
    }

    /// Whether a packet of `frame` sent to this subscriber ends its picture: the end of the
    /// frame of the highest spatial layer it gets. It then carries the RTP marker bit, which
    /// the publisher set only at the end of the whole picture (its top spatial layer): a
    /// decoder waits for it before it decodes what it has of the picture.
    pub fn ends_picture(&self, frame: &SvcFrame) -> bool {
        let top = frame.spatial_layers.saturating_sub(1);
        frame.end_of_frame
            && self
                .cap
                .is_some_and(|(cap, _)| frame.spatial_id == cap.min(top))
    }

    /// Whether it waits for a switch point of its target (the publisher may be asked for a
    /// keyframe, which is one for every decode target).
    pub fn waiting(&self) -> bool {
        self.current != Some(self.target)
    }

    /// Start over (the feed restarted): wait for a switch point again.
    pub fn reset(&mut self) {
        self.current = None;
        self.sent = 0;
        self.newest = None;
        self.frame = None;
    }

    /// A packet of `frame`: whether this subscriber gets it.
    pub fn handle_packet(&mut self, frame: &SvcFrame) -> SvcForward {
        if let Some((number, send)) = self.frame {
            if number == frame.frame_number && !frame.start_of_frame {
                return if send {
                    SvcForward::Send
                } else {
                    SvcForward::Drop
                };
            }
        }
        let mut forward = SvcForward::Send;
        if let Some((spatial, temporal)) = self.cap {
            self.target = frame.decode_target(spatial, temporal);
        }
        if frame.structure != self.structure && self.current.is_some() {
            // A new structure: its decode targets are numbered anew, and its frames refer to
            // none before it. Its first frame is a keyframe, a switch point for every target.
            self.reset();
        }
        let target = u32::from(self.target);
        if self.current != Some(self.target)
            && frame.start_of_frame
            && target < 32
            && frame.switch_for & (1 << target) != 0
            && self.decodable(frame)
        {
            if self.current.is_some() {
                self.switches += 1;
            }
            self.current = Some(self.target);
            self.current_layers = self.cap.map(|(s, t)| {
                (
                    s.min(frame.spatial_layers.saturating_sub(1)),
                    t.min(frame.temporal_layers.saturating_sub(1)),
                )
            });
            self.structure = frame.structure;
            forward = SvcForward::Switch;
        }
        let send = self
            .current
            .is_some_and(|dt| dt < 32 && frame.needed_by & (1 << dt) != 0);
        self.frame = Some((frame.frame_number, send));
        if !send {
            return SvcForward::Drop;
        }
        self.mark_sent(frame.frame_number);
        forward
    }

    /// Whether every frame `frame` refers to was sent to this subscriber.
    fn decodable(&self, frame: &SvcFrame) -> bool {
        frame.referenced_frames().iter().all(|&f| self.was_sent(f))
    }

    fn was_sent(&self, number: u16) -> bool {
        let Some(newest) = self.newest else {
            return false;
        };
        let back = newest.wrapping_sub(number);
        back < FRAME_WINDOW && self.sent & (1 << back) != 0
    }

    fn mark_sent(&mut self, number: u16) {
        match self.newest {
            None => {
                self.newest = Some(number);
                self.sent = 1;
            }
            Some(newest) => {
                let ahead = number.wrapping_sub(newest) as i16;
                if ahead > 0 {
                    let shift = ahead as u32;
                    self.sent = if shift >= 128 { 0 } else { self.sent << shift };
                    self.sent |= 1;
                    self.newest = Some(number);
                } else {
                    let back = ahead.unsigned_abs();
                    if back < FRAME_WINDOW {
                        self.sent |= 1 << back;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two spatial layers, k-SVC (as Chromium's L2T1_KEY): decode target 0 is the low layer,
    /// 1 the high one. A keyframe's low frame is needed by both and starts both; its high
    /// frame refers to it. After it, each layer refers only to its own previous frame.
    fn picture(n: u16, key: bool) -> [SvcFrame; 2] {
        let low = 2 * n;
        let high = low + 1;
        let frame = |number, spatial_id, needed_by, switch_for, refs: &[u16]| {
            let mut referenced = [0; 4];
            referenced[..refs.len()].copy_from_slice(refs);
            SvcFrame {
                frame_number: number,
                start_of_frame: true,
                end_of_frame: true,
                spatial_id,
                temporal_id: 0,
                needed_by,
                switch_for,
                referenced,
                references: refs.len() as u8,
                structure: 1,
                decode_target_for: [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
                spatial_layers: 2,
                temporal_layers: 1,
                sizes: [(0, 0); 4],
            }
        };
        if key {
            [
                frame(low, 0, 0b11, 0b11, &[]),
                frame(high, 1, 0b10, 0b10, &[low]),
            ]
        } else {
            [
                frame(low, 0, 0b01, 0b01, &[low - 2]),
                frame(high, 1, 0b10, 0b10, &[high - 2]),
            ]
        }
    }

    /// Which of the pictures' frames the selector sends, as (frame number, switch).
    fn run<P: IntoIterator<Item = SvcFrame>>(
        s: &mut SvcSelector,
        pictures: impl Iterator<Item = P>,
    ) -> Vec<(u16, bool)> {
        let mut sent = Vec::new();
        for p in pictures {
            for f in p {
                match s.handle_packet(&f) {
                    SvcForward::Send => sent.push((f.frame_number, false)),
                    SvcForward::Switch => sent.push((f.frame_number, true)),
                    SvcForward::Drop => {}
                }
            }
        }
        sent
    }

    #[test]
    fn a_subscriber_gets_the_frames_of_its_decode_target_from_a_switch_point_on() {
        let mut low = SvcSelector::new(0);
        let mut high = SvcSelector::new(1);
        // Joining mid-stream: nothing until the keyframe (deltas refer to frames not sent).
        let pictures = || (1..3).map(|n| picture(n, false)).chain([picture(3, true)]);
        assert_eq!(run(&mut low, pictures()), [(6, true)]);
        assert_eq!(run(&mut high, pictures()), [(6, true), (7, false)]);
        let later = || (4..6).map(|n| picture(n, false));
        assert_eq!(run(&mut low, later()), [(8, false), (10, false)]);
        assert_eq!(run(&mut high, later()), [(9, false), (11, false)]);
        assert_eq!((low.current(), high.current()), (Some(0), Some(1)));
        assert_eq!(low.switches() + high.switches(), 0);
    }

    #[test]
    fn a_switch_waits_for_a_frame_the_subscriber_can_decode() {
        let mut s = SvcSelector::new(1);
        run(&mut s, [picture(1, true), picture(2, false)].into_iter());
        // Down to the low layer: its delta frames are switch points, but refer to low frames
        // this subscriber was not sent. Only the next keyframe will do.
        s.set_target(0);
        assert!(s.waiting());
        assert_eq!(
            run(&mut s, (3..5).map(|n| picture(n, false))),
            [(7, false), (9, false)]
        );
        assert_eq!(run(&mut s, [picture(5, true)].into_iter()), [(10, true)]);
        assert_eq!((s.current(), s.switches()), (Some(0), 1));
        assert_eq!(run(&mut s, [picture(6, false)].into_iter()), [(12, false)]);
        // Up again: the high layer's delta refers to high frames not sent either.
        s.set_target(1);
        assert_eq!(run(&mut s, [picture(7, false)].into_iter()), [(14, false)]);
        assert_eq!(
            run(&mut s, [picture(8, true)].into_iter()),
            [(16, true), (17, false)]
        );
        assert!(!s.waiting());
    }

    #[test]
    fn a_frames_packets_all_go_the_same_way_and_a_new_structure_starts_over() {
        let mut s = SvcSelector::new(0);
        let [key, _] = picture(1, true);
        assert_eq!(s.handle_packet(&key), SvcForward::Switch);
        let rest = SvcFrame {
            start_of_frame: false,
            ..key
        };
        assert_eq!(s.handle_packet(&rest), SvcForward::Send);
        let [_, high] = picture(1, true);
        let high_rest = SvcFrame {
            start_of_frame: false,
            ..high
        };
        assert_eq!(s.handle_packet(&high), SvcForward::Drop);
        assert_eq!(s.handle_packet(&high_rest), SvcForward::Drop);
        // A new structure numbers its decode targets anew: wait for its keyframe.
        let [delta, _] = picture(2, false);
        let newer = SvcFrame {
            structure: 2,
            ..delta
        };
        assert_eq!(s.handle_packet(&newer), SvcForward::Drop);
        assert!(s.waiting());
        let [key, _] = picture(3, true);
        let key = SvcFrame {
            structure: 2,
            ..key
        };
        assert_eq!(s.handle_packet(&key), SvcForward::Switch);
    }

    /// One spatial and three temporal layers (as libwebrtc's L1T3): pictures go T0, T2, T1,
    /// T2; decode target 0 is T0, 1 adds T1, 2 adds T2. A T0 frame starts every target and
    /// refers to the last T0, a T1 one starts targets 1 and 2 and refers to the T0 before it,
    /// a T2 one starts nothing and refers to the frame before it.
    fn l1t3(n: u16) -> SvcFrame {
        let (temporal_id, needed_by, switch_for, back) = match n % 4 {
            0 => (0, 0b111, 0b111, 4),
            2 => (1, 0b110, 0b110, 2),
            _ => (2, 0b100, 0, 1),
        };
        let mut referenced = [0; 4];
        referenced[0] = n.wrapping_sub(back);
        SvcFrame {
            frame_number: n,
            start_of_frame: true,
            end_of_frame: true,
            spatial_id: 0,
            temporal_id,
            needed_by,
            switch_for,
            referenced,
            references: u8::from(n >= back),
            structure: 1,
            decode_target_for: [0, 1, 2, 2, 0, 1, 2, 2, 0, 1, 2, 2, 0, 1, 2, 2],
            spatial_layers: 1,
            temporal_layers: 3,
            sizes: [(0, 0); 4],
        }
    }

    #[test]
    fn temporal_layers_are_dropped_and_taken_back_without_a_keyframe() {
        let mut s = SvcSelector::new(0);
        s.set_cap(0, 3);
        let frames = |from: u16, to: u16| (from..to).map(|n| [l1t3(n)]);
        let sent = |v: Vec<(u16, bool)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(sent(run(&mut s, frames(0, 6))), [0, 1, 2, 3, 4, 5]);
        assert_eq!(s.current_layers(), Some((0, 2)));
        // Down to T0: no keyframe wanted; from the next T0 on, only T0 frames.
        s.set_cap(0, 0);
        assert!(!s.needs_keyframe(&l1t3(6)));
        assert_eq!(sent(run(&mut s, frames(6, 13))), [6, 7, 8, 12]);
        assert_eq!((s.current_layers(), s.switches()), (Some((0, 0)), 1));
        // Up to T1: at the next T1 frame, which refers to a T0 this subscriber was sent.
        s.set_cap(0, 1);
        assert!(!s.needs_keyframe(&l1t3(13)));
        assert_eq!(sent(run(&mut s, frames(13, 19))), [14, 16, 18]);
        assert_eq!(s.current_layers(), Some((0, 1)));
        // All of them again.
        s.set_cap(0, 3);
        assert_eq!(sent(run(&mut s, frames(19, 24))), [20, 21, 22, 23]);
        assert_eq!((s.current_layers(), s.switches()), (Some((0, 2)), 3));
    }

    #[test]
    fn a_move_to_another_spatial_layer_needs_a_keyframe() {
        let mut s = SvcSelector::new(0);
        s.set_cap(1, 3);
        run(&mut s, [picture(1, true), picture(2, false)].into_iter());
        assert_eq!(s.current_layers(), Some((1, 0)));
        s.set_cap(0, 3);
        assert!(s.needs_keyframe(&picture(3, false)[0]));
        // A cap above the layers there are is the top one: nothing to wait for.
        s.set_cap(3, 3);
        assert!(!s.needs_keyframe(&picture(3, false)[0]));
    }

    proptest::proptest! {
        /// Whatever the frames say and whatever the targets: a frame goes to a subscriber
        /// only if its decode target needs it; it moves to another decode target only at a
        /// frame that starts a switch point for it, all of whose references it was sent; all
        /// of a frame's packets go the same way.
        #[test]
        fn only_needed_frames_and_only_decodable_switches(
            frames in proptest::collection::vec(
                (0u16..6, proptest::bool::ANY, 0u32..8, 0u32..8, 0usize..3, 0u8..3, 0u8..3),
                1..300,
            ),
        ) {
            let mut s = SvcSelector::new(0);
            let mut number = 0u16;
            let mut sent = std::collections::HashSet::new();
            let mut last: Option<(u16, bool)> = None;
            for (step, start, needed_by, switch_for, refs, target, structure) in frames {
                number = number.wrapping_add(step);
                s.set_target(target);
                let mut referenced = [0; 4];
                for (i, r) in referenced.iter_mut().enumerate().take(refs) {
                    *r = number.wrapping_sub(1 + i as u16);
                }
                let f = SvcFrame {
                    frame_number: number,
                    start_of_frame: start,
                    end_of_frame: true,
                    spatial_id: 0,
                    temporal_id: 0,
                    needed_by,
                    switch_for,
                    referenced,
                    references: refs as u8,
                    structure: u32::from(structure),
                    decode_target_for: [0; 16],
                    spatial_layers: 1,
                    temporal_layers: 1,
                    sizes: [(0, 0); 4],
                };
                let before = s.current();
                let out = s.handle_packet(&f);
                let went = out != SvcForward::Drop;
                // The rest of a frame goes as its first packet did (its descriptors say the
                // same in every packet of a real stream; here they need not).
                let rest_of_frame = !start && last.is_some_and(|(n, _)| n == number);
                if let (Some((_, was)), true) = (last, rest_of_frame) {
                    proptest::prop_assert_eq!(went, was);
                }
                last = Some((number, went));
                if out == SvcForward::Switch {
                    proptest::prop_assert!(start);
                    proptest::prop_assert!(switch_for & 1 << target != 0);
                    proptest::prop_assert_eq!(s.current(), Some(target));
                    if before.is_some() && s.current() != before {
                        proptest::prop_assert!(
                            f.referenced_frames().iter().all(|r| sent.contains(r))
                        );
                    }
                }
                if went {
                    let dt = s.current().expect("sent only once on a decode target");
                    proptest::prop_assert!(rest_of_frame || needed_by & 1 << dt != 0);
                    sent.insert(number);
                }
            }
        }
    }

    /// One template (spatial 0, temporal 0) that is a switch point for the one decode
    /// target, no chains, no resolutions: written bit by bit from §A.8.2.
    const KEY: [u8; 6] = [0xc0, 0x00, 0x01, 0x80, 0x00, 0xe0];

    #[test]
    fn the_stream_reads_packets_against_the_structure_a_keyframe_brought() {
        let mut stream = SvcStream::default();
        // Before any structure, a packet cannot be placed.
        assert_eq!(
            stream.read(&[0xc0, 0x00, 0x02]),
            Err(DescriptorError::NoStructure)
        );
        let key = stream.read(&KEY).expect("a structure");
        assert_eq!(stream.generation(), 1);
        assert_eq!(stream.structure().map(|s| s.decode_targets()), Some(1));
        assert_eq!(
            (
                key.frame_number,
                key.needed_by,
                key.switch_for,
                key.structure
            ),
            (1, 1, 1, 1)
        );
        let next = stream.read(&[0xc0, 0x00, 0x02]).expect("read against it");
        assert_eq!(
            (next.frame_number, next.needed_by, next.structure),
            (2, 1, 1)
        );
        assert!(next.referenced_frames().is_empty());
        // A template the structure does not have.
        assert_eq!(
            stream.read(&[0xc5, 0x00, 0x03]),
            Err(DescriptorError::UnknownTemplate(5))
        );
        // In a packet's extension.
        let mut packet = vec![0x90, 45, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7];
        packet.extend_from_slice(&[0x10, 0x00, 0, 2, 9, 3, 0xc0, 0x00, 0x04, 0, 0, 0]);
        packet.extend_from_slice(&[0xaa; 10]);
        let f = stream
            .handle_packet(&packet, 9)
            .expect("carries one")
            .unwrap();
        assert_eq!(f.frame_number, 4);
        assert!(stream.handle_packet(&packet, 8).is_none());
    }
}
