//! Which layers of a simulcast feed its publisher should send (LiveKit's "dynacast"): a layer
//! no subscriber receives costs the publisher its encoder time and its uplink for nothing.
//!
//! Every core with subscribers of the feed says which layers they want (the best each
//! subscription's view allows unless it is hidden, its target, and the layer it is on, which
//! must go on until the switch); the feed's own core
//! keeps the union, and every layer below the best one wanted stays on too, as LiveKit's
//! dynacast keeps them: a subscriber moving up goes through them, and one turned off costs
//! the time the publisher's encoder takes to start it again (a subscriber behind a link that
//! widened took 6 s instead of 1 s to reach the middle layer while it was off). A layer
//! wanted is turned on at once: a subscriber waits for it. A layer no
//! longer wanted is turned off only after [`OFF_AFTER`], so that a subscriber moving down and
//! back up, or one resizing its element, does not make the publisher stop and restart an
//! encoding (each restart is a keyframe). The lowest layer always stays on: a new subscriber
//! starts from it at once, and the allocator measures every link against its rate.
//!
//! Sans-IO: the worker reports what is wanted and polls for changes to send the publisher.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A layer nobody wants is turned off after this long.
pub const OFF_AFTER: Duration = Duration::from_secs(3);

/// How often each core looks at what its subscribers want.
pub const INTERVAL: Duration = Duration::from_millis(500);

/// The layers a simulcast feed's publisher is asked to send, as a bit mask (bit `i`: layer
/// `i`).
#[derive(Debug, Clone)]
pub struct Dynacast {
    layers: usize,
    /// What each core's subscribers want.
    wanted: HashMap<usize, u8>,
    /// Since when each layer that is on has been wanted by nobody.
    unwanted_since: [Option<Instant>; 8],
    /// What the publisher should send now.
    active: u8,
    /// What it was last told, if anything.
    told: Option<u8>,
}

impl Dynacast {
    /// A feed of `layers` layers, all on (as a browser starts them).
    pub fn new(layers: usize) -> Self {
        let layers = layers.min(8);
        Dynacast {
            layers,
            wanted: HashMap::new(),
            unwanted_since: [None; 8],
            active: all(layers),
            told: None,
        }
    }

    /// Core `core`'s subscribers want `mask` (0 when it has none left).
    pub fn handle_wanted(&mut self, core: usize, mask: u8) {
        if mask == 0 {
            self.wanted.remove(&core);
        } else {
            self.wanted.insert(core, mask);
        }
    }

    /// Forget what cores for which `keep` is false wanted (they have no subscribers left).
    pub fn retain_cores(&mut self, keep: impl Fn(usize) -> bool) {
        self.wanted.retain(|core, _| keep(*core));
    }

    /// The layers on, and whether that changed since the publisher was last told: then it is
    /// to be told (once).
    pub fn poll(&mut self, now: Instant) -> Option<u8> {
        let union = self.wanted.values().fold(1u8, |m, w| m | w) & all(self.layers);
        // Everything up to the best layer wanted.
        let union = all(8 - union.leading_zeros() as usize) & all(self.layers);
        for layer in 0..self.layers {
            let bit = 1 << layer;
            if union & bit != 0 {
                self.active |= bit;
                self.unwanted_since[layer] = None;
            } else if self.active & bit != 0 {
                let since = *self.unwanted_since[layer].get_or_insert(now);
                if now.saturating_duration_since(since) >= OFF_AFTER {
                    self.active &= !bit;
                    self.unwanted_since[layer] = None;
                }
            }
        }
        if self.told == Some(self.active) {
            return None;
        }
        // Nothing to say while every layer is on and nobody was told otherwise.
        if self.told.is_none() && self.active == all(self.layers) {
            return None;
        }
        self.told = Some(self.active);
        Some(self.active)
    }

    /// The layers the publisher is asked to send now.
    pub fn active(&self) -> u8 {
        self.active
    }

    /// The publisher renegotiated: its browser sends every layer again, and must be told
    /// anew what to turn off.
    pub fn reset(&mut self) {
        self.active = all(self.layers);
        self.told = None;
        self.unwanted_since = [None; 8];
    }
}

fn all(layers: usize) -> u8 {
    ((1u16 << layers) - 1) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_at_once_off_after_a_while_and_the_lowest_always() {
        let t0 = Instant::now();
        let mut d = Dynacast::new(3);
        // All on, nobody told anything yet.
        assert_eq!(d.poll(t0), None);
        // One core's subscribers want layer 1: layer 2 goes off after OFF_AFTER, layer 0
        // never.
        d.handle_wanted(0, 0b010);
        assert_eq!(d.poll(t0), None);
        assert_eq!(d.poll(t0 + OFF_AFTER - INTERVAL), None);
        assert_eq!(d.poll(t0 + OFF_AFTER), Some(0b011));
        assert_eq!(d.poll(t0 + OFF_AFTER + INTERVAL), None, "told once");
        // Another core wants layer 2: on at once.
        let t1 = t0 + 2 * OFF_AFTER;
        d.handle_wanted(3, 0b100);
        assert_eq!(d.poll(t1), Some(0b111));
        // Wanted again within OFF_AFTER after being dropped: never turned off.
        d.handle_wanted(3, 0);
        assert_eq!(d.poll(t1 + INTERVAL), None);
        d.handle_wanted(3, 0b100);
        assert_eq!(d.poll(t1 + OFF_AFTER), None);
        assert_eq!(d.active(), 0b111);
        // Nobody left (core 3's replica went away without a word): all but the lowest go off.
        d.handle_wanted(0, 0);
        d.retain_cores(|core| core == 0);
        let t2 = t1 + 2 * OFF_AFTER;
        assert_eq!(d.poll(t2), None);
        assert_eq!(d.poll(t2 + OFF_AFTER), Some(0b001));
        // Only the top layer wanted: the one below it comes on with it, and stays.
        d.handle_wanted(0, 0b100);
        assert_eq!(d.poll(t2 + 2 * OFF_AFTER), Some(0b111));
        assert_eq!(d.poll(t2 + 4 * OFF_AFTER), None);
        d.handle_wanted(0, 0);
        // A renegotiation starts every layer again: told once more when one goes off.
        d.reset();
        assert_eq!(d.poll(t2 + 2 * OFF_AFTER), None);
        assert_eq!(d.poll(t2 + 3 * OFF_AFTER), Some(0b001));
    }
}
