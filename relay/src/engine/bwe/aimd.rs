//! The delay-based rate: additive increase near the link's known capacity, multiplicative
//! increase away from it, a cut to 85% of what was delivered when the trendline says a queue
//! is growing. libwebrtc's `AimdRateControl`, with its constants.

use std::time::{Duration, Instant};

use super::trendline::BandwidthUsage;

/// On overuse the rate goes to this share of the delivered rate.
const BETA: f64 = 0.85;

/// The most one decrease takes off the rate.
const MAX_CUT: f64 = 0.5;
/// Multiplicative increase per second away from the known capacity.
const INCREASE_PER_SECOND: f64 = 1.08;
/// Increases never take the rate past this multiple of what was delivered (plus 10 kbit/s):
/// the estimate cannot claim much more than the path has shown.
const THROUGHPUT_HEADROOM: f64 = 1.5;
/// Assumed frame rate and packet size for the additive increase (about one packet per
/// response time).
const FRAME_INTERVAL: Duration = Duration::from_micros(33_333);
const PACKET_BITS: f64 = 1200.0 * 8.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Hold,
    Increase,
    Decrease,
}

/// The capacity the path showed when it last became congested, with its spread, in kbit/s.
#[derive(Debug, Clone, Copy, Default)]
struct LinkCapacity {
    estimate: Option<f64>,
    deviation: f64,
}

impl LinkCapacity {
    fn on_overuse(&mut self, kbps: f64) {
        const ALPHA: f64 = 0.05;
        let estimate = match self.estimate {
            None => kbps,
            Some(e) => (1.0 - ALPHA) * e + ALPHA * kbps,
        };
        let error = estimate - kbps;
        self.deviation = ((1.0 - ALPHA) * self.deviation
            + ALPHA * error * error / estimate.max(1.0))
        .clamp(0.4, 2.5);
        self.estimate = Some(estimate);
    }

    fn bounds(&self) -> Option<(f64, f64)> {
        let e = self.estimate?;
        let spread = 3.0 * (self.deviation * e).sqrt();
        Some(((e - spread).max(0.0), e + spread))
    }

    fn reset(&mut self) {
        *self = LinkCapacity {
            estimate: None,
            deviation: 0.4,
        };
    }
}

/// The delay-based rate of one transport.
#[derive(Debug)]
pub struct AimdRateControl {
    bitrate: f64,
    min: f64,
    max: f64,
    state: State,
    initialized: bool,
    capacity: LinkCapacity,
    last_change: Option<Instant>,
    last_throughput: Option<f64>,
    rtt: Duration,
}

impl AimdRateControl {
    /// Starting at `start` bit/s, never below `min` nor above `max`.
    pub fn new(start: f64, min: f64, max: f64) -> Self {
        AimdRateControl {
            bitrate: start.clamp(min, max),
            min,
            max,
            state: State::Hold,
            initialized: false,
            capacity: LinkCapacity {
                estimate: None,
                deviation: 0.4,
            },
            last_change: None,
            last_throughput: None,
            rtt: Duration::from_millis(200),
        }
    }

    /// The current rate, bit/s.
    pub fn bitrate(&self) -> f64 {
        self.bitrate
    }

    /// The rate as a limit: none until the delay has said something (an overuse, or a probe
    /// set it), so that the start value is not taken for a measurement.
    pub fn limit(&self) -> f64 {
        if self.initialized {
            self.bitrate
        } else {
            f64::INFINITY
        }
    }

    /// The round trip, for the additive increase's response time.
    pub fn set_rtt(&mut self, rtt: Duration) {
        self.rtt = rtt;
    }

    /// Move to `bitrate` (a successful probe measured it): the capacity learnt so far no
    /// longer holds.
    pub fn set_estimate(&mut self, now: Instant, bitrate: f64) {
        self.bitrate = bitrate.clamp(self.min, self.max);
        self.initialized = true;
        self.capacity.reset();
        self.last_change = Some(now);
    }

    /// The detector's state at `now`, with the rate the receiver acknowledged lately (bit/s),
    /// if known. Returns the new rate.
    pub fn update(&mut self, now: Instant, usage: BandwidthUsage, throughput: Option<f64>) -> f64 {
        if let Some(t) = throughput {
            self.last_throughput = Some(t);
        }
        let throughput = self.last_throughput;
        if !self.initialized && usage != BandwidthUsage::Overusing {
            return self.bitrate;
        }
        match usage {
            BandwidthUsage::Normal if self.state == State::Hold => {
                self.last_change = Some(now);
                self.state = State::Increase;
            }
            BandwidthUsage::Overusing => self.state = State::Decrease,
            BandwidthUsage::Underusing => self.state = State::Hold,
            BandwidthUsage::Normal => {}
        }
        match self.state {
            State::Hold => {}
            State::Increase => {
                let kbps = throughput.map(|t| t / 1000.0);
                if let (Some(k), Some((_, upper))) = (kbps, self.capacity.bounds()) {
                    if k > upper {
                        self.capacity.reset();
                    }
                }
                let limit =
                    throughput.map_or(f64::INFINITY, |t| THROUGHPUT_HEADROOM * t + 10_000.0);
                if self.bitrate < limit {
                    let increased = if self.capacity.estimate.is_some() {
                        self.bitrate + self.additive_increase(now)
                    } else {
                        self.bitrate + self.multiplicative_increase(now)
                    };
                    self.bitrate = increased.min(limit);
                }
                self.last_change = Some(now);
            }
            State::Decrease => {
                let delivered = throughput.unwrap_or(self.bitrate);
                let mut decreased = delivered * BETA;
                if decreased > 5_000.0 {
                    decreased -= 5_000.0;
                }
                if decreased > self.bitrate {
                    if let Some(e) = self.capacity.estimate {
                        decreased = BETA * e * 1000.0;
                    }
                }
                // Never more than half at once once the rate was set by a first cut (before
                // it, the rate is the starting guess): a delivered rate measured over a window that
                // held few packets (feedback that was lost, a stream that just started) can
                // be far below what the path carries, and taking it at its word dropped a
                // subscriber at 5% loss from 850 kbit/s to the 50 kbit/s floor in one step.
                // A real drop is followed within a few hundred milliseconds by the next cut.
                let decreased = if self.initialized {
                    decreased.max(MAX_CUT * self.bitrate)
                } else {
                    decreased
                };
                if decreased < self.bitrate {
                    self.bitrate = decreased;
                }
                if let Some((lower, _)) = self.capacity.bounds() {
                    if delivered / 1000.0 < lower {
                        self.capacity.reset();
                    }
                }
                self.initialized = true;
                self.capacity.on_overuse(delivered / 1000.0);
                self.state = State::Hold;
                self.last_change = Some(now);
            }
        }
        self.bitrate = self.bitrate.clamp(self.min, self.max);
        self.bitrate
    }

    fn elapsed(&self, now: Instant) -> Duration {
        self.last_change
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at))
    }

    fn multiplicative_increase(&self, now: Instant) -> f64 {
        let secs = self.elapsed(now).min(Duration::from_secs(1)).as_secs_f64();
        (self.bitrate * (INCREASE_PER_SECOND.powf(secs) - 1.0)).max(1_000.0)
    }

    /// About one packet per response time (a round trip plus 100 ms).
    fn additive_increase(&self, now: Instant) -> f64 {
        let frame_bits = self.bitrate * FRAME_INTERVAL.as_secs_f64();
        let packets_per_frame = (frame_bits / PACKET_BITS).ceil().max(1.0);
        let packet_bits = frame_bits / packets_per_frame;
        let response = (self.rtt + Duration::from_millis(100)).as_secs_f64();
        let per_second = (packet_bits / response).max(4_000.0);
        per_second * self.elapsed(now).as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BandwidthUsage::*;

    #[test]
    fn overuse_cuts_to_85_percent_of_what_was_delivered() {
        let t0 = Instant::now();
        let mut a = AimdRateControl::new(2_000_000.0, 50_000.0, 10_000_000.0);
        // Nothing changes before the first overuse (the start value is a guess).
        assert_eq!(a.update(t0, Normal, Some(1_000_000.0)), 2_000_000.0);
        let r = a.update(t0, Overusing, Some(1_000_000.0));
        assert!((r - (850_000.0 - 5_000.0)).abs() < 1.0, "{r}");
        // Held while the queue drains, then increased.
        assert_eq!(
            a.update(t0 + Duration::from_millis(100), Underusing, None),
            r
        );
        let later = a.update(t0 + Duration::from_millis(200), Normal, Some(840_000.0));
        assert_eq!(later, r, "the first normal only starts the increase");
        let later = a.update(t0 + Duration::from_millis(1200), Normal, Some(840_000.0));
        assert!(later > r, "increasing: {later}");
        // Once set, one overuse takes at most half, however little the window delivered.
        let cut = a.update(t0 + Duration::from_millis(1300), Overusing, Some(20_000.0));
        assert_eq!(cut, later * MAX_CUT);
    }

    #[test]
    fn increases_are_multiplicative_far_from_capacity_and_bounded_by_throughput() {
        let t0 = Instant::now();
        let mut a = AimdRateControl::new(500_000.0, 50_000.0, 10_000_000.0);
        a.set_estimate(t0, 500_000.0);
        a.update(t0, Normal, Some(2_000_000.0));
        let mut now = t0;
        for _ in 0..10 {
            now += Duration::from_secs(1);
            a.update(now, Normal, Some(2_000_000.0));
        }
        // 8% a second for 10 s.
        let expected = 500_000.0 * 1.08f64.powi(10);
        assert!(
            (a.bitrate() - expected).abs() / expected < 0.01,
            "{}",
            a.bitrate()
        );
        // Not increased while above 1.5x the delivered rate (plus 10 kbit/s).
        let before = a.bitrate();
        for _ in 0..30 {
            now += Duration::from_secs(1);
            a.update(now, Normal, Some(400_000.0));
        }
        assert_eq!(a.bitrate(), before);
        // Below it, increased up to it and no further.
        for _ in 0..30 {
            now += Duration::from_secs(1);
            a.update(now, Normal, Some(800_000.0));
        }
        assert!((a.bitrate() - (1.5 * 800_000.0 + 10_000.0)).abs() < 1.0);
    }

    #[test]
    fn near_a_known_capacity_the_increase_is_additive() {
        let t0 = Instant::now();
        let mut a = AimdRateControl::new(1_000_000.0, 50_000.0, 10_000_000.0);
        a.set_rtt(Duration::from_millis(100));
        a.update(t0, Overusing, Some(1_000_000.0));
        let after_cut = a.bitrate();
        let mut now = t0;
        a.update(now, Normal, Some(900_000.0));
        for _ in 0..10 {
            now += Duration::from_secs(1);
            a.update(now, Normal, Some(900_000.0));
        }
        // About one 1200-byte packet per 200 ms response time: ~48 kbit/s a second.
        let gained = a.bitrate() - after_cut;
        assert!((300_000.0..600_000.0).contains(&gained), "gained {gained}");
    }
}
