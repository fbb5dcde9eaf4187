//! How long a subscriber should hold frames for repairs, told to it with the playout-delay
//! header extension.
//!
//! A subscriber's jitter buffer is sized from what it sees: its own jitter and, once it NACKs,
//! about one of its own round trips to the relay. That is enough for a repair that comes at
//! the first request, and too little for every other case:
//!
//! - A packet lost on the *publisher's* link is repaired by the relay asking the publisher,
//!   which takes the publisher's round trip (twice when the first request or repair is lost
//!   too) before the subscriber gets it; a subscriber close to the relay renders past the gap
//!   meanwhile and freezes. While the relay asks a feed's publisher for packets, that feed's
//!   subscribers get a minimum delay of that time (the feed's [`RepairWait`]).
//! - A packet lost on the *subscriber's* link whose repair is lost too comes a second round
//!   trip later, past what the subscriber waits; at 5% loss that is one repair in twenty, a
//!   freeze every few seconds. While a subscriber asks the relay for packets, it gets a minimum
//!   delay of two of its round trips (the consumer's [`RepairWait`], [`subscriber_repair_time`]).
//!
//! When the requests stop, the minimum goes back to zero and the subscriber's own estimate
//! takes over again.

use std::time::{Duration, Instant};

use crate::engine::playout_delay::PlayoutDelay;

/// After the last request for a repair, how long subscribers keep the longer delay: losses
/// come in bursts and Chromium moves its delay by at most about 100 ms a second, so dropping
/// it at the first quiet second would only make the next loss a freeze.
pub const HOLD: Duration = Duration::from_secs(10);

/// The longest minimum delay asked for: past it the relay no longer asks for a repair
/// either ([`super::feed::nack::MAX_AGE`]).
pub const MAX_WAIT: Duration = super::feed::nack::MAX_AGE;

/// A subscriber notices a lost packet only when the next one comes, which for the last
/// packet of a frame is one frame later (33 ms at 30 frames a second).
const NOTICE_TIME: Duration = Duration::from_millis(40);

/// How long after it went missing a packet lost on a subscriber's link reaches it when the
/// first repair is lost too, for a subscriber `rtt` away: the gap noticed, a round trip for
/// the first request and its repair, another after the subscriber's retry interval (its own
/// estimate of the round trip, as Chromium does).
pub fn subscriber_repair_time(rtt: Duration) -> Duration {
    NOTICE_TIME + 2 * rtt
}

/// The maximum delay sent with every minimum: Chromium's own default, so that the extension
/// moves only the minimum.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// When the last request for a repair was made: by the relay to a feed's publisher, or by a
/// subscriber to the relay.
#[derive(Debug, Clone, Default)]
pub struct RepairWait {
    last_request: Option<Instant>,
}

impl RepairWait {
    /// Lost packets were asked for at `now`.
    pub fn handle_request(&mut self, now: Instant) {
        self.last_request = Some(now);
    }

    /// The playout delay for packets forwarded at `now`, when a repair takes up to
    /// `repair_time`: that long while repairs were asked for within [`HOLD`], else no
    /// minimum.
    pub fn playout_delay(&self, now: Instant, repair_time: Duration) -> PlayoutDelay {
        let repairing = self
            .last_request
            .is_some_and(|at| now.saturating_duration_since(at) < HOLD);
        let min = if repairing {
            repair_time.min(MAX_WAIT)
        } else {
            Duration::ZERO
        };
        PlayoutDelay::new(min, MAX_DELAY)
    }

    /// Forget past requests (the stream was renegotiated).
    pub fn reset(&mut self) {
        self.last_request = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPAIR: Duration = Duration::from_millis(236);

    #[test]
    fn no_minimum_until_a_repair_is_asked_for() {
        let t0 = Instant::now();
        let w = RepairWait::default();
        let d = w.playout_delay(t0, REPAIR);
        assert_eq!(d.min(), Duration::ZERO);
        // Never both zero: that would switch Chromium to rendering without a buffer.
        assert_eq!(d.max(), MAX_DELAY);
    }

    #[test]
    fn the_repair_time_is_held_for_a_while_after_the_last_request() {
        let t0 = Instant::now();
        let mut w = RepairWait::default();
        w.handle_request(t0);
        assert_eq!(
            w.playout_delay(t0, REPAIR).min(),
            Duration::from_millis(240)
        );
        let t1 = t0 + Duration::from_secs(6);
        w.handle_request(t1);
        assert_eq!(
            w.playout_delay(t1 + HOLD - Duration::from_millis(1), REPAIR)
                .min(),
            Duration::from_millis(240)
        );
        assert_eq!(w.playout_delay(t1 + HOLD, REPAIR).min(), Duration::ZERO);
        // A slow path is capped where repairs stop being asked for.
        w.handle_request(t1);
        assert_eq!(w.playout_delay(t1, Duration::from_secs(3)).min(), MAX_WAIT);
        w.reset();
        assert_eq!(w.playout_delay(t1, REPAIR).min(), Duration::ZERO);
    }
}
