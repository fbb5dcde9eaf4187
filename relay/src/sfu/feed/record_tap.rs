//! A recorder's tap on a feed, on the feed's own core: which recording the feed's packets go
//! to and, for a simulcast feed, which layer.
//!
//! A recording follows the best layer that flows (the publisher may have turned its top
//! layers off for its own uplink), and moves to another only at a keyframe of it, so that
//! the file never holds a frame its decoder cannot use.

use std::time::{Duration, Instant};

use crate::record::timeline::Track;

use super::layer::Layer;

/// A layer that sent nothing for this long is not flowing.
pub const FLOWING: Duration = Duration::from_secs(1);

/// A recording's tap on a feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordTap {
    /// The recording (file).
    pub recording: u64,
    /// The feed's track in it.
    pub track: Track,
    /// Packets handed over so far: numbering them lets the recorder count what its queue
    /// dropped.
    pub handed: u64,
    /// The layer followed; None until a keyframe of one.
    pub layer: Option<u8>,
}

impl RecordTap {
    /// A tap of recording `recording`'s `track`.
    pub fn new(recording: u64, track: Track) -> Self {
        RecordTap {
            recording,
            track,
            handed: 0,
            layer: None,
        }
    }

    /// Whether a packet of `layer` goes to the recorder: one of the layer followed, or the
    /// first of a keyframe of the best layer flowing (`best`), which is followed from then
    /// on. A feed of one layer always.
    pub fn takes(&mut self, layers: usize, layer: u8, best: u8, keyframe: bool) -> bool {
        if layers <= 1 {
            self.layer = Some(0);
            return true;
        }
        if layer == best && keyframe && self.layer != Some(best) {
            self.layer = Some(best);
            return true;
        }
        self.layer == Some(layer)
    }

    /// Whether the tap waits for a keyframe of `best` (to start, or to move to it).
    pub fn wants_keyframe_of(&self, best: u8) -> bool {
        self.layer != Some(best)
    }
}

/// The best layer that flows at `now`, among those dynacast has not turned off (`off`, bit
/// `i`: layer `i`); the lowest when none does.
pub fn best_flowing(layers: &[Layer], off: u8, now: Instant) -> u8 {
    layers
        .iter()
        .enumerate()
        .rev()
        .find(|(i, l)| off & (1 << i) == 0 && l.last_packet_at.is_some_and(|at| now < at + FLOWING))
        .map_or(0, |(i, _)| i as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulcast_tap_starts_and_moves_at_a_keyframe_of_the_best_layer() {
        let mut t = RecordTap::new(1, Track::Video);
        assert!(!t.takes(3, 2, 2, false), "no keyframe yet");
        assert!(!t.takes(3, 0, 2, true), "a keyframe of another layer");
        assert!(t.takes(3, 2, 2, true));
        assert!(t.takes(3, 2, 2, false));
        assert!(!t.takes(3, 1, 2, false));
        // The top layer stopped: the middle one is best; its packets go only from its
        // keyframe on, and the top's, should any still come, no longer.
        assert!(t.wants_keyframe_of(1));
        assert!(t.takes(3, 2, 1, false), "still followed until the switch");
        assert!(!t.takes(3, 1, 1, false));
        assert!(t.takes(3, 1, 1, true));
        assert!(!t.takes(3, 2, 1, false));
        assert!(!t.wants_keyframe_of(1));
    }

    #[test]
    fn a_single_stream_always_goes() {
        let mut t = RecordTap::new(1, Track::Audio);
        assert!(t.takes(1, 0, 0, false));
        assert!(!t.wants_keyframe_of(0));
    }

    #[test]
    fn the_best_flowing_layer_skips_stopped_and_switched_off_ones() {
        let now = Instant::now();
        let mut layers: Vec<Layer> = (0..3).map(|_| Layer::declared(None, None)).collect();
        assert_eq!(best_flowing(&layers, 0, now), 0);
        for l in &mut layers {
            l.last_packet_at = Some(now);
        }
        assert_eq!(best_flowing(&layers, 0, now), 2);
        assert_eq!(best_flowing(&layers, 0b100, now), 1);
        layers[1].last_packet_at = Some(now - FLOWING);
        assert_eq!(best_flowing(&layers, 0b100, now), 0);
    }
}
