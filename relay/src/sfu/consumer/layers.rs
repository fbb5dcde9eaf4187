//! Which simulcast layer of a feed one subscriber receives.
//!
//! A subscriber can only start decoding a layer at one of its keyframes, so a switch is
//! decided at once but made at the next keyframe of a layer that is closer to the target:
//! until then the current layer goes on. Nothing is sent before the first keyframe, of the
//! target or of any layer below it (a subscriber that waited for the target alone would see
//! nothing while the publisher does not send it). A feed without simulcast has one layer and
//! never switches.
//!
//! A subscription can also be paused: its element is hidden, or its link cannot carry even
//! the lowest layer. Nothing is sent then, and it starts again at a keyframe, as at first.

/// The layer choice of one subscription.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    /// The layer being forwarded; None until the first keyframe.
    current: Option<u8>,
    /// The layer wanted.
    target: u8,
    /// Switches made.
    switches: u32,
    /// The best layer it may have, where something capped it.
    max: Option<u8>,
    /// The size the subscriber shows the video at, where it said.
    shown_at: Option<(u32, u32)>,
    /// The subscriber's element is hidden.
    hidden: bool,
    /// Its link cannot carry the lowest layer.
    starved: bool,
    /// Times it was paused.
    pauses: u32,
}

pub use crate::control::Pause;

/// What to do with a packet of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// Not the subscriber's layer: dropped.
    Drop,
    /// The current layer's: sent.
    Send,
    /// The first packet of the layer switched to: sent, after the subscriber's stream has
    /// been re-anchored on it.
    Switch,
}

impl Layers {
    /// A subscription that wants `target` (0 for a feed without simulcast).
    pub fn new(target: u8) -> Self {
        Layers {
            target,
            ..Layers::default()
        }
    }

    /// Want `layer` from now on.
    pub fn set_target(&mut self, layer: u8) {
        self.target = layer;
    }

    /// Cap the layers at `layer`: the target comes down to it at once.
    pub fn set_max(&mut self, layer: u8) {
        self.max = Some(layer);
        self.target = self.target.min(layer);
    }

    /// The cap, if any.
    pub fn max(&self) -> Option<u8> {
        self.max
    }

    /// The subscriber hides the video, or shows it at `size` (width, height; None: not
    /// known).
    pub fn set_view(&mut self, hidden: bool, size: Option<(u32, u32)>) {
        let before = self.paused();
        self.hidden = hidden;
        self.shown_at = size;
        self.pause_changed(before);
    }

    /// The size the subscriber shows the video at, where it said.
    pub fn shown_at(&self) -> Option<(u32, u32)> {
        self.shown_at
    }

    /// Whether its link can carry none of the layers.
    pub fn set_starved(&mut self, starved: bool) {
        let before = self.paused();
        self.starved = starved;
        self.pause_changed(before);
    }

    /// Whether its link can carry none of the layers.
    pub fn starved(&self) -> bool {
        self.starved
    }

    /// Why nothing is sent, if it is paused (hidden first: it stays paused while hidden
    /// whatever the link).
    pub fn paused(&self) -> Option<Pause> {
        if self.hidden {
            Some(Pause::Hidden)
        } else if self.starved {
            Some(Pause::Bandwidth)
        } else {
            None
        }
    }

    /// Times it was paused so far.
    pub fn pauses(&self) -> u32 {
        self.pauses
    }

    /// A paused subscription starts again from a keyframe.
    fn pause_changed(&mut self, before: Option<Pause>) {
        if self.paused().is_some() {
            self.current = None;
            self.pauses += u32::from(before.is_none());
        }
    }

    /// The layer wanted.
    pub fn target(&self) -> u8 {
        self.target
    }

    /// The layer forwarded, if any has started yet.
    pub fn current(&self) -> Option<u8> {
        self.current
    }

    /// Switches made so far.
    pub fn switches(&self) -> u32 {
        self.switches
    }

    /// The layer a keyframe is awaited from, to ask the publisher for one: the target, while
    /// something else (or nothing) is forwarded.
    pub fn awaiting_keyframe(&self) -> Option<u8> {
        (self.paused().is_none() && self.current != Some(self.target)).then_some(self.target)
    }

    /// A packet of `layer` that starts a keyframe or not; `current_stopped` when the layer
    /// being forwarded has sent nothing for a while (the publisher turned it off): then a
    /// keyframe of any layer up to the target is taken, since waiting for a better one is
    /// waiting with a frozen picture.
    pub fn handle_packet(&mut self, layer: u8, keyframe: bool, current_stopped: bool) -> Forward {
        if self.paused().is_some() {
            return Forward::Drop;
        }
        let Some(current) = self.current else {
            if keyframe && layer <= self.target {
                self.current = Some(layer);
                return Forward::Switch;
            }
            return Forward::Drop;
        };
        if layer == current {
            return Forward::Send;
        }
        let closer = if current_stopped {
            layer <= self.target
        } else if self.target > current {
            layer > current && layer <= self.target
        } else {
            layer < current && layer >= self.target
        };
        if keyframe && closer {
            self.current = Some(layer);
            self.switches += 1;
            return Forward::Switch;
        }
        Forward::Drop
    }

    /// Start again from nothing (the feed restarted): wait for a keyframe.
    pub fn reset(&mut self) {
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn starts_at_a_keyframe_at_or_below_the_target_and_climbs_to_it() {
        let mut l = Layers::new(2);
        assert_eq!(l.awaiting_keyframe(), Some(2));
        assert_eq!(l.handle_packet(2, false, false), Forward::Drop);
        // Layer 0's keyframe comes first: better than nothing.
        assert_eq!(l.handle_packet(0, true, false), Forward::Switch);
        assert_eq!(l.handle_packet(0, false, false), Forward::Send);
        assert_eq!(l.handle_packet(2, false, false), Forward::Drop);
        assert_eq!(l.handle_packet(1, false, false), Forward::Drop);
        // Then layer 2's.
        assert_eq!(l.handle_packet(2, true, false), Forward::Switch);
        assert_eq!(l.current(), Some(2));
        assert_eq!(l.awaiting_keyframe(), None);
        assert_eq!(l.handle_packet(0, false, false), Forward::Drop);
        assert_eq!(l.handle_packet(0, true, false), Forward::Drop);
        assert_eq!(l.switches(), 1);
    }

    #[test]
    fn a_switch_down_waits_for_a_keyframe_of_a_lower_layer() {
        let mut l = Layers::new(2);
        assert_eq!(l.handle_packet(2, true, false), Forward::Switch);
        l.set_target(0);
        assert_eq!(l.awaiting_keyframe(), Some(0));
        // Until then the current layer goes on.
        assert_eq!(l.handle_packet(2, false, false), Forward::Send);
        assert_eq!(l.handle_packet(0, false, false), Forward::Drop);
        assert_eq!(l.handle_packet(1, true, false), Forward::Switch);
        assert_eq!(l.handle_packet(2, true, false), Forward::Drop);
        assert_eq!(l.handle_packet(0, true, false), Forward::Switch);
        assert_eq!(l.current(), Some(0));
        assert_eq!(l.switches(), 2);
        // On the target, whose layer then stops: a keyframe of a lower one is taken, which
        // is not while the current layer flows.
        l.set_target(2);
        assert_eq!(l.handle_packet(2, true, false), Forward::Switch);
        assert_eq!(l.handle_packet(1, true, false), Forward::Drop);
        assert_eq!(l.handle_packet(1, true, true), Forward::Switch);
        assert_eq!(l.current(), Some(1));
        // Never above the target, stopped or not.
        l.set_target(0);
        assert_eq!(l.handle_packet(2, true, true), Forward::Drop);
        assert_eq!(l.handle_packet(0, true, false), Forward::Switch);
        // A cap brings the target down, never up.
        l.set_target(2);
        l.set_max(1);
        assert_eq!((l.target(), l.max()), (1, Some(1)));
        l.set_max(2);
        assert_eq!(l.target(), 1);
        l.set_target(0);
        // A restart waits for a keyframe again.
        l.reset();
        assert_eq!(l.handle_packet(0, false, false), Forward::Drop);
        assert_eq!(l.handle_packet(0, true, false), Forward::Switch);
    }

    #[test]
    fn paused_sends_nothing_and_starts_again_at_a_keyframe() {
        let mut l = Layers::new(1);
        assert_eq!(l.handle_packet(1, true, false), Forward::Switch);
        l.set_view(true, None);
        assert_eq!(l.paused(), Some(Pause::Hidden));
        assert_eq!(
            l.awaiting_keyframe(),
            None,
            "no keyframe is wanted while paused"
        );
        assert_eq!(l.handle_packet(1, true, false), Forward::Drop);
        // Starved as well: hidden is the reason while it lasts.
        l.set_starved(true);
        assert_eq!(l.paused(), Some(Pause::Hidden));
        l.set_view(false, Some((320, 180)));
        assert_eq!(
            (l.paused(), l.shown_at()),
            (Some(Pause::Bandwidth), Some((320, 180)))
        );
        l.set_starved(false);
        assert_eq!(l.paused(), None);
        assert_eq!(l.awaiting_keyframe(), Some(1));
        assert_eq!(l.handle_packet(1, false, false), Forward::Drop);
        assert_eq!(l.handle_packet(1, true, false), Forward::Switch);
        assert_eq!(l.handle_packet(1, false, false), Forward::Send);
        assert_eq!(l.pauses(), 1, "hidden then starved is one pause");
        l.set_view(true, Some((320, 180)));
        assert_eq!((l.paused(), l.pauses()), (Some(Pause::Hidden), 2));
    }

    proptest! {
        /// Whatever the packets and targets, a layer is entered only at a keyframe, never
        /// above the target it was entered for, and only the current layer is sent.
        #[test]
        fn only_keyframes_enter_a_layer(
            events in proptest::collection::vec((0u8..3, any::<bool>(), proptest::option::of(0u8..3)), 1..200)
        ) {
            let mut l = Layers::new(2);
            for (layer, keyframe, retarget) in events {
                if let Some(t) = retarget {
                    l.set_target(t);
                }
                let before = l.current();
                match l.handle_packet(layer, keyframe, false) {
                    Forward::Drop => prop_assert_eq!(l.current(), before),
                    Forward::Send => {
                        prop_assert_eq!(before, Some(layer));
                    }
                    Forward::Switch => {
                        prop_assert!(keyframe);
                        prop_assert_eq!(l.current(), Some(layer));
                        prop_assert_ne!(before, Some(layer));
                        prop_assert!(before.is_some() || layer <= l.target());
                    }
                }
            }
        }
    }
}
