//! Which simulcast layer each of a subscriber's video subscriptions gets, from the estimate of
//! what its link carries (mediasoup's and LiveKit's "stream allocator").
//!
//! What cannot adapt comes off the estimate first: audio, and video without layers. What is
//! left goes to the simulcast subscriptions in order, each the best of its layers that fits in
//! what remains (at least its lowest, until pausing exists). Then:
//!
//! - **down at once**: a subscription whose layer no longer fits is moved down at the next
//!   decision, so that a link that shrank stops queueing within a fraction of a second;
//! - **up only when proven, and not too soon**: an estimate only grows to about 1.5 times what
//!   was delivered, so a subscriber held on a low layer cannot learn by itself that a better
//!   one would fit. When the next layer up does not fit, the allocator asks for a probe at the
//!   rate that would carry it; the probe's result raises the estimate if the path has room, and
//!   the next decision moves up. A move up needs the better layer to fit with
//!   [`UP_HEADROOM`] to spare, and waits [`UP_DWELL`] after the last move; a move up that had
//!   to be taken back within [`FAILED_UP`] doubles that wait (up to [`MAX_UP_DWELL`]), so that
//!   a link whose estimate keeps overshooting costs a freeze a minute at most, not one every
//!   few seconds.
//!
//! Probes are limited to twice what the subscriber's layers could use at best: room above
//! that would go unused, and a burst of many megabits a second into a lossy or shaped link
//! costs the media packets around it.
//!
//! Sans-IO: the worker gathers the rates and the estimate, applies the targets, and sends the
//! probe.

use std::time::{Duration, Instant};

/// Decisions are made at most this often per subscriber (on its feedback, every 50-100 ms).
pub const INTERVAL: Duration = Duration::from_millis(250);

/// After any move, a move up (or a probe for one) waits this long.
pub const UP_DWELL: Duration = Duration::from_secs(4);

/// A move up that is taken back within this long failed…
pub const FAILED_UP: Duration = Duration::from_secs(10);

/// …and doubles the wait before the next, up to this.
pub const MAX_UP_DWELL: Duration = Duration::from_secs(64);

/// A better layer is moved to only where the estimate covers it with this share to spare: an
/// estimate just at a layer's rate leaves nothing for its keyframes and retransmissions.
pub const UP_HEADROOM: f64 = 1.15;

/// A probe asks for this much more than the layers it is for need, so that a result just at
/// their rate is not too tight to move up with (above [`UP_HEADROOM`]).
const PROBE_MARGIN: f64 = 1.25;

/// Probes go no higher than this many times what the layers could use at best…
const PROBE_LIMIT_FACTOR: f64 = 2.0;

/// …nor lower than this (before the layers' rates are known).
const MIN_PROBE_LIMIT: f64 = 1_000_000.0;

/// One simulcast subscription as the allocator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    /// Each layer's rate, bit/s, lowest first; None for a layer that is not flowing.
    pub rates: Vec<Option<f64>>,
    /// The layer it is set to now.
    pub current: u8,
    /// The best layer it may have (what its element shows; the top without a limit).
    pub max: u8,
}

impl Demand {
    fn rate(&self, layer: u8) -> Option<f64> {
        self.rates.get(usize::from(layer)).copied().flatten()
    }

    /// The best flowing layer at or below `max` whose rate fits in `budget`; else the lowest
    /// flowing layer; else the current one (nothing flows: nothing to decide).
    fn best_within(&self, budget: f64) -> u8 {
        let flowing = || (0..=self.max).filter(|&l| self.rate(l).is_some());
        flowing()
            .rev()
            .find(|&l| self.rate(l).is_some_and(|r| r <= budget))
            .or_else(|| flowing().next())
            .unwrap_or(self.current)
    }
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    /// The layer for each demand, in order.
    pub targets: Vec<u8>,
    /// A probe toward this rate, bit/s, for a move up that does not fit yet.
    pub probe: Option<f64>,
    /// The most any probe should ask for, bit/s.
    pub probe_limit: f64,
}

/// The allocation state of one subscriber.
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    last_decision: Option<Instant>,
    last_move: Option<Instant>,
    last_up: Option<Instant>,
    /// The wait before a move up: [`UP_DWELL`], longer after moves up that failed.
    up_dwell: Option<Duration>,
}

impl Allocator {
    /// Whether a decision is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.last_decision
            .is_none_or(|at| now.saturating_duration_since(at) >= INTERVAL)
    }

    /// Share `estimate` (bit/s) among `demands` after `fixed` (bit/s of what cannot adapt).
    pub fn decide(
        &mut self,
        now: Instant,
        estimate: f64,
        fixed: f64,
        demands: &[Demand],
    ) -> Decision {
        self.last_decision = Some(now);
        let dwell = self.up_dwell.unwrap_or(UP_DWELL);
        let may_go_up = self
            .last_move
            .is_none_or(|at| now.saturating_duration_since(at) >= dwell);
        let mut allocated = fixed;
        let mut best_total = fixed;
        let mut decision = Decision::default();
        let mut wanted_more = 0.0;
        for d in demands {
            let best = d.best_within(estimate - allocated);
            let target = if best < d.current {
                best
            } else if may_go_up {
                // Up only as far as fits with headroom; never down for want of it.
                d.best_within(estimate / UP_HEADROOM - allocated)
                    .max(d.current.min(d.max))
                    .min(best)
            } else {
                d.current.min(d.max)
            };
            allocated += d.rate(target).unwrap_or(0.0);
            best_total += (0..=d.max).rev().find_map(|l| d.rate(l)).unwrap_or(0.0);
            // The next flowing layer up that did not fit: what a probe would be for.
            if let Some(next) = (target + 1..=d.max).find(|&l| d.rate(l).is_some()) {
                wanted_more += d.rate(next).unwrap_or(0.0) - d.rate(target).unwrap_or(0.0);
            }
            decision.targets.push(target);
        }
        decision.probe_limit = (PROBE_LIMIT_FACTOR * best_total).max(MIN_PROBE_LIMIT);
        let moved = |up: bool| {
            decision.targets.iter().zip(demands).any(|(t, d)| {
                if up {
                    *t > d.current
                } else {
                    *t < d.current
                }
            })
        };
        let (up, down) = (moved(true), moved(false));
        if down {
            // Taken back soon after a move up: that move failed, and the next waits longer.
            let failed = self
                .last_up
                .is_some_and(|at| now.saturating_duration_since(at) < FAILED_UP);
            self.up_dwell = Some(if failed {
                (dwell * 2).min(MAX_UP_DWELL)
            } else {
                UP_DWELL
            });
        }
        if up {
            self.last_up = Some(now);
        }
        if up || down {
            self.last_move = Some(now);
        } else if may_go_up && wanted_more > 0.0 {
            decision.probe = Some((allocated + wanted_more) * PROBE_MARGIN);
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: f64 = 150_000.0;
    const H: f64 = 450_000.0;
    const F: f64 = 1_500_000.0;

    fn demand(current: u8) -> Demand {
        Demand {
            rates: vec![Some(Q), Some(H), Some(F)],
            current,
            max: 2,
        }
    }

    #[test]
    fn the_best_layer_that_fits_after_what_cannot_adapt() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        // 2.2 Mbit/s less 100 kbit/s of audio: the top layer for the first, then what is left.
        let d = a.decide(t0, 2_200_000.0, 100_000.0, &[demand(2), demand(2)]);
        assert_eq!(d.targets, vec![2, 1]);
        // Nothing fits: the lowest, never nothing.
        let d = a.decide(t0, 50_000.0, 0.0, &[demand(0)]);
        assert_eq!(d.targets, vec![0]);
        // A layer that is not flowing is skipped; an element that shows little caps it.
        let mut paused = demand(0);
        paused.rates[1] = None;
        paused.max = 1;
        let d = a.decide(t0, 2_200_000.0, 0.0, &[paused]);
        assert_eq!(d.targets, vec![0]);
    }

    #[test]
    fn down_at_once_up_after_the_dwell_and_a_probe_for_what_does_not_fit() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        assert!(a.due(t0));
        let d = a.decide(t0, 2_000_000.0, 0.0, &[demand(2)]);
        assert_eq!((d.targets, d.probe), (vec![2], None));
        // Probes stop at twice the best the layers could use.
        assert_eq!(d.probe_limit, 2.0 * F);
        assert!(!a.due(t0 + INTERVAL / 2));
        // The link shrinks to 400 kbit/s: down to the lowest at once.
        let t1 = t0 + INTERVAL;
        let d = a.decide(t1, 400_000.0, 0.0, &[demand(2)]);
        assert_eq!(d.targets, vec![0]);
        // The estimate grows back, but not for the dwell after that move: no move, no probe.
        let t2 = t1 + UP_DWELL - Duration::from_millis(1);
        let d = a.decide(t2, 2_000_000.0, 0.0, &[demand(0)]);
        assert_eq!((d.targets, d.probe), (vec![0], None));
        // After it, the layer that fits.
        let d = a.decide(t1 + UP_DWELL, 2_000_000.0, 0.0, &[demand(0)]);
        assert_eq!(d.targets, vec![2]);
        // Held on the lowest by an estimate that only knows what it carried: a probe toward
        // what the next layer up would need, with the margin.
        let t3 = t1 + 3 * UP_DWELL;
        let d = a.decide(t3, 220_000.0, 0.0, &[demand(0)]);
        assert_eq!(d.targets, vec![0]);
        let probe = d.probe.expect("a probe");
        assert!((probe - H * PROBE_MARGIN).abs() < 1.0, "{probe}");
        assert_eq!(d.probe_limit, MIN_PROBE_LIMIT.max(2.0 * F));
        // On the top layer there is nothing to probe for.
        let d = a.decide(t3 + INTERVAL, 3_000_000.0, 0.0, &[demand(2)]);
        assert_eq!((d.targets, d.probe), (vec![2], None));
    }

    #[test]
    fn up_only_with_headroom_and_later_after_a_move_up_that_failed() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        // H fits the estimate but not with headroom: stays on Q, and probes for H.
        let d = a.decide(t0, H * 1.1, 0.0, &[demand(0)]);
        assert_eq!(d.targets, vec![0]);
        assert!(d.probe.is_some());
        let d = a.decide(t0 + INTERVAL, H * 1.2, 0.0, &[demand(0)]);
        assert_eq!(d.targets, vec![1]);
        // Taken back 2 s later: failed, so the next move up waits twice as long.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(a.decide(t1, Q * 1.5, 0.0, &[demand(1)]).targets, vec![0]);
        let d = a.decide(t1 + UP_DWELL, H * 1.2, 0.0, &[demand(0)]);
        assert_eq!((d.targets, d.probe), (vec![0], None));
        let t2 = t1 + 2 * UP_DWELL;
        assert_eq!(a.decide(t2, H * 1.2, 0.0, &[demand(0)]).targets, vec![1]);
        // Failing again doubles it again; a move down long after a move up does not.
        let t3 = t2 + Duration::from_secs(1);
        assert_eq!(a.decide(t3, Q * 1.5, 0.0, &[demand(1)]).targets, vec![0]);
        let early = a.decide(t3 + 3 * UP_DWELL, H * 1.2, 0.0, &[demand(0)]);
        assert_eq!(early.targets, vec![0]);
        let t4 = t3 + 4 * UP_DWELL;
        assert_eq!(a.decide(t4, H * 1.2, 0.0, &[demand(0)]).targets, vec![1]);
        let t5 = t4 + FAILED_UP;
        assert_eq!(a.decide(t5, Q * 1.5, 0.0, &[demand(1)]).targets, vec![0]);
        let again = a.decide(t5 + UP_DWELL, H * 1.2, 0.0, &[demand(0)]);
        assert_eq!(again.targets, vec![1]);
    }
}
