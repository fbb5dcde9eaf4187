//! Telling a simulcast layer the publisher stopped from one that is only slow.
//!
//! Chromium turns its best layers off the moment its own estimate falls, and a subscriber on
//! such a layer sees nothing until it is moved to another layer and gets that layer's
//! keyframe. Time alone decides late: a layer counts as stalled after
//! [`super::layer::STALLED_AFTER`] without a packet, long enough for a camera at a low frame
//! rate. The other layers say it sooner: they carry the same pictures, so a layer that missed
//! [`FRAMES_BEHIND`] of the frames another layer sent since its own last packet has stopped,
//! whatever the frame rate. Losing every packet of that many frames of one layer only, while
//! the others arrive, does not happen on a lossy link either.

use std::time::{Duration, Instant};

use crate::control::MAX_LAYERS;

/// Frames another layer started since a layer's last packet, past which it stopped.
pub const FRAMES_BEHIND: u32 = 3;

/// …and no sooner than this after its last packet: a layer a publisher sends at a lower
/// frame rate than the others (a `maxFramerate` on one encoding) is not stopped between two
/// of its frames.
pub const MIN_SILENCE: Duration = Duration::from_millis(80);

/// The frames each layer of a feed started, and where the others stood at each layer's last
/// packet.
#[derive(Debug, Clone, Default)]
pub struct FrameCounts {
    /// Frames started per layer (a timestamp newer than the layer's last).
    started: [u32; MAX_LAYERS],
    /// Each layer's newest timestamp.
    newest: [Option<u32>; MAX_LAYERS],
    /// `started` as it was at each layer's last packet, and when that was.
    at_last_packet: [([u32; MAX_LAYERS], Option<Instant>); MAX_LAYERS],
}

impl FrameCounts {
    /// A packet of `layer` with RTP `timestamp` arrived at `now`. A repair carries an older
    /// timestamp and starts no frame.
    pub fn handle_packet(&mut self, now: Instant, layer: u8, timestamp: u32) {
        let l = usize::from(layer);
        if l >= MAX_LAYERS {
            return;
        }
        let newer = self.newest[l].is_none_or(|n| (timestamp.wrapping_sub(n) as i32) > 0);
        if newer {
            self.newest[l] = Some(timestamp);
            self.started[l] = self.started[l].wrapping_add(1);
        }
        self.at_last_packet[l] = (self.started, Some(now));
    }

    /// Whether `layer`, which has sent before, stopped while others went on.
    pub fn stopped(&self, now: Instant, layer: u8) -> bool {
        let l = usize::from(layer);
        let Some((seen, Some(at))) = self.at_last_packet.get(l).copied() else {
            return false;
        };
        now.saturating_duration_since(at) >= MIN_SILENCE
            && (0..MAX_LAYERS)
                .filter(|&k| k != l)
                .any(|k| self.started[k].wrapping_sub(seen[k]) >= FRAMES_BEHIND)
    }

    /// Forget everything (the feed restarted or was renegotiated).
    pub fn reset(&mut self) {
        *self = FrameCounts::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: Duration = Duration::from_millis(33);
    const TICKS: u32 = 2970;

    /// Frame `n` of each layer in `layers`, one packet each, at `t0 + n` frames.
    fn frame(f: &mut FrameCounts, t0: Instant, n: u32, layers: &[u8]) -> Instant {
        let now = t0 + FRAME * n;
        for &l in layers {
            // Unrelated random bases per layer, as Chromium's.
            let base = [1_000u32, u32::MAX - 5_000, 77][usize::from(l)];
            f.handle_packet(now, l, base.wrapping_add(n * TICKS));
        }
        now
    }

    #[test]
    fn a_layer_is_stopped_once_another_sent_three_frames_without_it() {
        let (t0, mut f) = (Instant::now(), FrameCounts::default());
        for n in 0..10 {
            frame(&mut f, t0, n, &[0, 1, 2]);
        }
        // Layer 2 is turned off; 0 and 1 go on (across layer 1's timestamp wrap).
        for n in 10..12 {
            let now = frame(&mut f, t0, n, &[0, 1]);
            assert!(!f.stopped(now, 2), "frame {n}");
        }
        let now = frame(&mut f, t0, 12, &[0, 1]);
        assert!(f.stopped(now, 2));
        assert!(!f.stopped(now, 0) && !f.stopped(now, 1));
        // ~100 ms after its last packet, where time alone waits 300 ms.
        assert!(now - (t0 + FRAME * 9) < Duration::from_millis(120));
        // Back: not stopped.
        let now = frame(&mut f, t0, 13, &[0, 1, 2]);
        assert!(!f.stopped(now, 2));
    }

    #[test]
    fn repairs_start_no_frame_and_a_slow_layer_is_not_stopped() {
        let (t0, mut f) = (Instant::now(), FrameCounts::default());
        for n in 0..10 {
            frame(&mut f, t0, n, &[0, 1]);
        }
        // Many repairs of old packets of layer 0 count as no frame.
        for _ in 0..10 {
            f.handle_packet(t0 + FRAME * 10, 0, 1_000 + 3 * TICKS);
        }
        assert!(!f.stopped(t0 + FRAME * 10, 1));
        // Layer 1 at a third of the frame rate is behind by at most two between its frames,
        // and never silent for the minimum while it is.
        let mut f = FrameCounts::default();
        for n in 0..30 {
            let layers: &[u8] = if n % 3 == 0 { &[0, 1] } else { &[0] };
            let now = frame(&mut f, t0, n, layers);
            assert!(!f.stopped(now, 1), "frame {n}");
        }
        // Three frames behind but within the minimum silence: a layer at a quarter of the
        // rate of a fast one.
        let mut f = FrameCounts::default();
        f.handle_packet(t0, 1, 0);
        for n in 1..=3u32 {
            f.handle_packet(t0 + Duration::from_millis(15) * n, 0, n * 100);
        }
        assert!(!f.stopped(t0 + Duration::from_millis(45), 1));
        assert!(f.stopped(t0 + MIN_SILENCE, 1));
    }

    #[test]
    fn a_layer_that_never_sent_is_not_stopped() {
        let (t0, mut f) = (Instant::now(), FrameCounts::default());
        for n in 0..10 {
            frame(&mut f, t0, n, &[0]);
        }
        assert!(!f.stopped(t0 + FRAME * 10, 2));
        assert!(!f.stopped(t0 + FRAME * 10, 9));
        // A layer past the last is ignored, not a panic.
        f.handle_packet(t0, 9, 0);
        assert!(!f.stopped(t0 + FRAME * 20, 9));
    }
}
