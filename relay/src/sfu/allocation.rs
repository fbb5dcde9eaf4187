//! Which simulcast layer each of a subscriber's video subscriptions gets, from the estimate of
//! what its link carries (mediasoup's and LiveKit's "stream allocator").
//!
//! What cannot adapt comes off the estimate first: audio. What is left goes to the video
//! subscriptions in the order given (screen shares, then the active speaker, then the rest),
//! each the best of its layers that fits in what remains (a video without simulcast has one).
//! A video that does not fit even at its lowest layer is paused, after [`PAUSE_AFTER`] of not
//! fitting on a congested link (an estimate dips for a moment after a loss, one that has not
//! grown yet says nothing, and a pause costs a keyframe), and comes back like a move up: when
//! its lowest layer fits with headroom after the dwell. Then:
//!
//! - **down at once**: a subscription whose layer no longer fits is moved down at the next
//!   decision, so that a link that shrank stops queueing within a fraction of a second. But
//!   where everything sent is more than the estimate and the link shows no queue and no
//!   loss, the estimate has just not grown yet (it starts at a guess and grows to about 1.5
//!   times what was delivered), and what is sent stays: a fresh subscriber of a 1.2 Mbit/s
//!   layer was moved down on the starting 1 Mbit/s before any measurement, and the layer it
//!   left was turned off at the publisher;
//! - **up only when proven, and not too soon**: an estimate only grows to about 1.5 times what
//!   was delivered, so a subscriber held on a low layer cannot learn by itself that a better
//!   one would fit. When the next layer up does not fit, the allocator asks for a probe at the
//!   rate that would carry it; the probe's result raises the estimate if the path has room, and
//!   the next decision moves up. A move up needs the better layer to fit with
//!   [`UP_HEADROOM`] to spare (or within what is sent now, which the link carries: where a
//!   video before another takes the room the other had, the other is paused at once), and
//!   waits [`UP_DWELL`] after the last move; a move up that had to be taken back within
//!   [`FAILED_UP`] doubles that wait (up to [`MAX_UP_DWELL`]), so that
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

/// While a video is paused for its link, the allocator looks again this often, feedback or
/// not (the probe controller spaces the probes it asks for).
pub const LOOK_AGAIN_WHILE_PAUSED: Duration = Duration::from_secs(1);
/// A video is paused only after this long without room for its lowest layer.
pub const PAUSE_AFTER: Duration = Duration::from_secs(1);

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

/// What is sent now, as room a video may move up into without headroom, is taken to be this
/// much larger: two cameras of the same rate measure a few percent apart from one window to
/// the next, and one would otherwise never take the other's place.
const SWAP_SLACK: f64 = 1.1;

/// A probe asks for this much more than the layers it is for need, so that a result just at
/// their rate is not too tight to move up with (above [`UP_HEADROOM`]).
const PROBE_MARGIN: f64 = 1.25;

/// Probes go no higher than this many times what the layers could use at best…
const PROBE_LIMIT_FACTOR: f64 = 2.0;

/// …nor lower than this (before the layers' rates are known).
const MIN_PROBE_LIMIT: f64 = 1_000_000.0;

/// One video subscription as the allocator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    /// Each layer's rate, bit/s, lowest first; None for a layer that is not flowing.
    pub rates: Vec<Option<f64>>,
    /// The layer it is set to now; None while paused for want of room.
    pub current: Option<u8>,
    /// The best layer it may have (what its element shows; the top without a limit).
    pub max: u8,
}

impl Demand {
    fn rate(&self, layer: u8) -> Option<f64> {
        self.rates.get(usize::from(layer)).copied().flatten()
    }

    /// The flowing layers it may have, lowest first.
    fn flowing(&self) -> impl DoubleEndedIterator<Item = u8> + '_ {
        (0..=self.max).filter(|&l| self.rate(l).is_some())
    }

    /// The best flowing layer it may have whose rate fits in `budget`.
    fn best_within(&self, budget: f64) -> Option<u8> {
        self.flowing()
            .rev()
            .find(|&l| self.rate(l).is_some_and(|r| r <= budget))
    }

    /// What `layer` costs (nothing for a paused one).
    fn cost(&self, layer: Option<u8>) -> f64 {
        layer.and_then(|l| self.rate(l)).unwrap_or(0.0)
    }
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    /// The layer for each demand, in order; None: pause it.
    pub targets: Vec<Option<u8>>,
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
    /// Since when some video has had no room for its lowest layer.
    short_since: Option<Instant>,
    /// The link has never pushed back: an estimate below what is sent is the starting
    /// guess, or what grew from it, and not a measure of the link.
    untested: bool,
    /// The order changed since the last decision ([`Allocator::reorder`]).
    reordered: bool,
}

impl Allocator {
    /// Whether the subscriber's link has never pushed back (no queue, no loss) since it
    /// joined. Until it does, nothing is moved down for an estimate below what is sent.
    pub fn set_untested(&mut self, untested: bool) {
        self.untested = untested;
    }

    /// The order of what it decides on changed (another dominant speaker): the next
    /// decision may give a video the room of those after it at once, whatever the wait after
    /// the last move (which is for moving up into room the link has not carried yet).
    pub fn reorder(&mut self) {
        self.reordered = true;
        self.last_decision = None;
    }

    /// Whether a decision is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.last_decision
            .is_none_or(|at| now.saturating_duration_since(at) >= INTERVAL)
    }

    /// Share `estimate` (bit/s) among `demands` after `fixed` (bit/s of what cannot adapt);
    /// `congested` where the link pushed back lately (a queue or loss): only then is a video
    /// paused.
    pub fn decide(
        &mut self,
        now: Instant,
        estimate: f64,
        fixed: f64,
        congested: bool,
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
        let mut short = false;
        // What is sent now. Where it is more than the estimate and the link never pushed
        // back, the estimate has not grown to it yet: nothing is moved down for it. (Once
        // it has, a link whose queue stands full shows loss under 10% and no growing delay,
        // and is not congested, though the estimate measured it.)
        let sent = fixed
            + demands
                .iter()
                .map(|d| d.cost(d.current.map(|c| c.min(d.max))))
                .sum::<f64>();
        let stale = self.untested && sent > estimate;
        // Room the link carries now needs no headroom: a video may move up into what one
        // after it gives up (the dominant speaker's, paused, into another camera's).
        let carried = (sent * SWAP_SLACK).min(estimate);
        // How far a video may move up now: with headroom, or into what the link carries
        // after the wait; only into what it carries where just the order changed.
        let up_budget = if may_go_up {
            Some((estimate / UP_HEADROOM).max(carried))
        } else {
            self.reordered.then_some(carried)
        };
        self.reordered = false;
        // A video before took room that those after it had.
        let mut taken = false;
        for d in demands {
            let Some(lowest) = d.flowing().next() else {
                // Nothing flows: nothing to decide.
                decision.targets.push(d.current.map(|c| c.min(d.max)));
                continue;
            };
            let best = d.best_within(estimate - allocated);
            let with_headroom = up_budget.and_then(|b| d.best_within(b - allocated));
            let target = match (d.current, best) {
                (Some(current), best) if stale && best.is_none_or(|b| b < current) => {
                    Some(current.min(d.max))
                }
                (Some(_), None) => {
                    // No room even for the lowest on a link that pushes back: held there for
                    // a while, then paused; at once where a video before it took the room.
                    short = congested || taken;
                    let paused = taken
                        || self
                            .short_since
                            .is_some_and(|at| now.saturating_duration_since(at) >= PAUSE_AFTER);
                    (!paused).then_some(lowest)
                }
                (Some(current), Some(best)) if best < current => Some(best),
                // Up only as far as fits with headroom; never down for want of it.
                (Some(current), Some(best)) if up_budget.is_some() => Some(
                    with_headroom
                        .unwrap_or(lowest)
                        .max(current.min(d.max))
                        .min(best),
                ),
                (Some(current), Some(_)) => Some(current.min(d.max)),
                // Paused: back like a move up, when the lowest fits with headroom.
                (None, _) if up_budget.is_some() => with_headroom,
                (None, _) => None,
            };
            taken |= d.cost(target) > d.cost(d.current);
            allocated += d.cost(target);
            best_total += d
                .flowing()
                .next_back()
                .and_then(|l| d.rate(l))
                .unwrap_or(0.0);
            // The next flowing layer up that did not fit: what a probe would be for.
            let above = target.map_or(0, |t| t + 1);
            if let Some(next) = (above..=d.max).find(|&l| d.rate(l).is_some()) {
                wanted_more += d.cost(Some(next)) - d.cost(target);
            }
            decision.targets.push(target);
        }
        if !short {
            self.short_since = None;
        } else if self.short_since.is_none() {
            self.short_since = Some(now);
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
            current: Some(current),
            max: 2,
        }
    }

    #[test]
    fn the_best_layer_that_fits_after_what_cannot_adapt() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        // 2.2 Mbit/s less 100 kbit/s of audio: the top layer for the first, then what is left.
        let d = a.decide(t0, 2_200_000.0, 100_000.0, true, &[demand(2), demand(2)]);
        assert_eq!(d.targets, vec![Some(2), Some(1)]);
        // Nothing fits: the lowest, for a while.
        let d = a.decide(t0, 50_000.0, 0.0, true, &[demand(0)]);
        assert_eq!(d.targets, vec![Some(0)]);
        // A layer that is not flowing is skipped; an element that shows little caps it.
        let mut paused = demand(0);
        paused.rates[1] = None;
        paused.max = 1;
        let d = a.decide(t0, 2_200_000.0, 0.0, true, &[paused]);
        assert_eq!(d.targets, vec![Some(0)]);
    }

    #[test]
    fn an_estimate_that_has_not_grown_yet_moves_nothing_down_until_the_link_pushes_back() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        a.set_untested(true);
        // The starting guess, 1 Mbit/s, under the top layer: nothing was cut, so it stays,
        // also where the delay saw a queue for a moment.
        for i in 0..8 {
            let congested = i == 4;
            let d = a.decide(t0 + i * INTERVAL, 1_000_000.0, 0.0, congested, &[demand(2)]);
            assert_eq!(d.targets, vec![Some(2)]);
        }
        // The estimator cut the estimate for a queue: down at once.
        a.set_untested(false);
        let d = a.decide(t0 + 8 * INTERVAL, 1_000_000.0, 0.0, true, &[demand(2)]);
        assert_eq!(d.targets, vec![Some(1)]);
        // A link that pushed back once is measured: its estimate moves layers down even
        // where it shows nothing now.
        let d = a.decide(t0 + 9 * INTERVAL, 200_000.0, 0.0, false, &[demand(1)]);
        assert_eq!(d.targets, vec![Some(0)]);
    }

    #[test]
    fn a_video_first_in_order_takes_the_room_of_one_after_it() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        // Two cameras of 600 kbit/s and room for one: the second is shown, the first (the
        // dominant speaker now) paused. It takes the second's room, though that leaves less
        // than the headroom a move up into new room needs, and the second is paused at once.
        let camera = |current| Demand {
            rates: vec![Some(600_000.0)],
            current,
            max: 0,
        };
        let d = a.decide(t0, 655_000.0, 0.0, false, &[camera(None), camera(Some(0))]);
        assert_eq!(d.targets, vec![Some(0), None]);
        // Without another video to give room, the same estimate does not resume it.
        let mut alone = Allocator::default();
        let d = alone.decide(t0, 655_000.0, 0.0, false, &[camera(None)]);
        assert_eq!(d.targets, vec![None]);
        // Right after a move, only a change of order lets one take another's room; and
        // then not room the link has not carried.
        let t1 = t0 + INTERVAL;
        let d = a.decide(t1, 655_000.0, 0.0, false, &[camera(Some(0)), camera(None)]);
        assert_eq!(d.targets, vec![Some(0), None]);
        let d = a.decide(
            t1 + INTERVAL,
            655_000.0,
            0.0,
            false,
            &[camera(None), camera(Some(0))],
        );
        assert_eq!(
            d.targets,
            vec![None, Some(0)],
            "no change of order: the wait holds"
        );
        a.reorder();
        let d = a.decide(
            t1 + 2 * INTERVAL,
            655_000.0,
            0.0,
            false,
            &[camera(None), camera(Some(0))],
        );
        assert_eq!(d.targets, vec![Some(0), None]);
        let mut capped = Allocator::default();
        capped.decide(t0, 400_000.0, 0.0, true, &[demand(2)]);
        capped.reorder();
        let d = capped.decide(t0 + INTERVAL, 400_000.0, 40_000.0, false, &[demand(0)]);
        assert_eq!(
            d.targets,
            vec![Some(0)],
            "a change of order is no move up into new room"
        );
    }

    #[test]
    fn paused_when_the_lowest_does_not_fit_for_a_while_and_back_like_a_move_up() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        // Audio takes most of 200 kbit/s: the first video (a screen share, say) keeps its
        // lowest, the second has no room but is held on its lowest for PAUSE_AFTER.
        let two = [demand(0), demand(0)];
        // Where the link shows no queue and no loss, the estimate may just not have grown
        // yet: nothing is paused, however long.
        let mut calm = Allocator::default();
        for i in 0..12 {
            let d = calm.decide(t0 + i * INTERVAL, 200_000.0, 40_000.0, false, &two);
            assert_eq!(d.targets, vec![Some(0), Some(0)]);
        }
        let d = a.decide(t0, 200_000.0, 40_000.0, true, &two);
        assert_eq!(d.targets, vec![Some(0), Some(0)]);
        let d = a.decide(t0 + PAUSE_AFTER / 2, 200_000.0, 40_000.0, true, &two);
        assert_eq!(d.targets, vec![Some(0), Some(0)]);
        // Room again within it: the wait starts over.
        let t1 = t0 + PAUSE_AFTER * 3 / 4;
        let d = a.decide(t1, 400_000.0, 40_000.0, true, &two);
        assert_eq!(d.targets, vec![Some(0), Some(0)]);
        let t2 = t1 + INTERVAL;
        a.decide(t2, 200_000.0, 40_000.0, true, &two);
        let d = a.decide(t2 + PAUSE_AFTER - INTERVAL, 200_000.0, 40_000.0, true, &two);
        assert_eq!(d.targets, vec![Some(0), Some(0)]);
        let t3 = t2 + PAUSE_AFTER;
        let d = a.decide(t3, 200_000.0, 40_000.0, true, &two);
        assert_eq!(d.targets, vec![Some(0), None]);
        // Paused, it costs nothing; it asks for no probe until the dwell, then for one that
        // would carry its lowest layer (and the first's next one up).
        let paused = [
            demand(0),
            Demand {
                current: None,
                ..demand(0)
            },
        ];
        let d = a.decide(t3 + INTERVAL, 200_000.0, 40_000.0, true, &paused);
        assert_eq!((d.targets, d.probe), (vec![Some(0), None], None));
        let t4 = t3 + UP_DWELL;
        let d = a.decide(t4, 200_000.0, 40_000.0, true, &paused);
        assert_eq!(d.targets, vec![Some(0), None]);
        let probe = d.probe.expect("a probe");
        assert!(
            (probe - (40_000.0 + H + Q) * PROBE_MARGIN).abs() < 1.0,
            "{probe}"
        );
        // Its lowest fits, but not with headroom: still paused.
        let d = a.decide(t4 + INTERVAL, 40_000.0 + 2.0 * Q, 40_000.0, true, &paused);
        assert_eq!(d.targets, vec![Some(0), None]);
        // With it: back on its lowest, after the first, which comes first, took a better one.
        let estimate = (40_000.0 + Q + H) * UP_HEADROOM;
        let d = a.decide(t4 + 2 * INTERVAL, estimate, 40_000.0, true, &paused);
        assert_eq!(d.targets, vec![Some(1), Some(0)]);
    }

    #[test]
    fn down_at_once_up_after_the_dwell_and_a_probe_for_what_does_not_fit() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        assert!(a.due(t0));
        let d = a.decide(t0, 2_000_000.0, 0.0, true, &[demand(2)]);
        assert_eq!((d.targets, d.probe), (vec![Some(2)], None));
        // Probes stop at twice the best the layers could use.
        assert_eq!(d.probe_limit, 2.0 * F);
        assert!(!a.due(t0 + INTERVAL / 2));
        // The link shrinks to 400 kbit/s: down to the lowest at once.
        let t1 = t0 + INTERVAL;
        let d = a.decide(t1, 400_000.0, 0.0, true, &[demand(2)]);
        assert_eq!(d.targets, vec![Some(0)]);
        // The estimate grows back, but not for the dwell after that move: no move, no probe.
        let t2 = t1 + UP_DWELL - Duration::from_millis(1);
        let d = a.decide(t2, 2_000_000.0, 0.0, true, &[demand(0)]);
        assert_eq!((d.targets, d.probe), (vec![Some(0)], None));
        // After it, the layer that fits.
        let d = a.decide(t1 + UP_DWELL, 2_000_000.0, 0.0, true, &[demand(0)]);
        assert_eq!(d.targets, vec![Some(2)]);
        // Held on the lowest by an estimate that only knows what it carried: a probe toward
        // what the next layer up would need, with the margin.
        let t3 = t1 + 3 * UP_DWELL;
        let d = a.decide(t3, 220_000.0, 0.0, true, &[demand(0)]);
        assert_eq!(d.targets, vec![Some(0)]);
        let probe = d.probe.expect("a probe");
        assert!((probe - H * PROBE_MARGIN).abs() < 1.0, "{probe}");
        assert_eq!(d.probe_limit, MIN_PROBE_LIMIT.max(2.0 * F));
        // On the top layer there is nothing to probe for.
        let d = a.decide(t3 + INTERVAL, 3_000_000.0, 0.0, true, &[demand(2)]);
        assert_eq!((d.targets, d.probe), (vec![Some(2)], None));
    }

    #[test]
    fn up_only_with_headroom_and_later_after_a_move_up_that_failed() {
        let t0 = Instant::now();
        let mut a = Allocator::default();
        // H fits the estimate but not with headroom: stays on Q, and probes for H.
        let d = a.decide(t0, H * 1.1, 0.0, true, &[demand(0)]);
        assert_eq!(d.targets, vec![Some(0)]);
        assert!(d.probe.is_some());
        let d = a.decide(t0 + INTERVAL, H * 1.2, 0.0, true, &[demand(0)]);
        assert_eq!(d.targets, vec![Some(1)]);
        // Taken back 2 s later: failed, so the next move up waits twice as long.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(
            a.decide(t1, Q * 1.5, 0.0, true, &[demand(1)]).targets,
            vec![Some(0)]
        );
        let d = a.decide(t1 + UP_DWELL, H * 1.2, 0.0, true, &[demand(0)]);
        assert_eq!((d.targets, d.probe), (vec![Some(0)], None));
        let t2 = t1 + 2 * UP_DWELL;
        assert_eq!(
            a.decide(t2, H * 1.2, 0.0, true, &[demand(0)]).targets,
            vec![Some(1)]
        );
        // Failing again doubles it again; a move down long after a move up does not.
        let t3 = t2 + Duration::from_secs(1);
        assert_eq!(
            a.decide(t3, Q * 1.5, 0.0, true, &[demand(1)]).targets,
            vec![Some(0)]
        );
        let early = a.decide(t3 + 3 * UP_DWELL, H * 1.2, 0.0, true, &[demand(0)]);
        assert_eq!(early.targets, vec![Some(0)]);
        let t4 = t3 + 4 * UP_DWELL;
        assert_eq!(
            a.decide(t4, H * 1.2, 0.0, true, &[demand(0)]).targets,
            vec![Some(1)]
        );
        let t5 = t4 + FAILED_UP;
        assert_eq!(
            a.decide(t5, Q * 1.5, 0.0, true, &[demand(1)]).targets,
            vec![Some(0)]
        );
        let again = a.decide(t5 + UP_DWELL, H * 1.2, 0.0, true, &[demand(0)]);
        assert_eq!(again.targets, vec![Some(1)]);
    }
}
