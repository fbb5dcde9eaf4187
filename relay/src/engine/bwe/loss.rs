//! The loss-based rate: up while the receiver loses under 2% of packets, held between 2% and
//! 10%, cut by half the loss above it (libwebrtc's classic `SendSideBandwidthEstimation`
//! rules), and over 30% cut to most of what the receiver acknowledged ([`HEAVY_LOSS`]). Delay
//! reacts first on a path with a queue; loss is what is left on a path that drops without
//! queueing (a policer, a lossy radio link), or on one whose queue stays full.

use std::time::{Duration, Instant};

/// Loss at or below this lets the rate grow.
const LOW_LOSS: f64 = 0.02;
/// Loss above this cuts the rate.
const HIGH_LOSS: f64 = 0.10;
/// At most one cut per this plus a round trip, so that one burst of loss cuts once.
const DECREASE_INTERVAL: Duration = Duration::from_millis(300);
/// How long a window of high loss keeps the path marked lossy.
pub const LOSSY_HOLD: Duration = Duration::from_secs(3);
/// Packets needed before a loss fraction means anything…
const MIN_PACKETS: u32 = 20;

/// …and the time they must span, unless there are [`ENOUGH_PACKETS`]. A receiver's loss
/// reports (RTCP, which libwebrtc's rules were made for) cover about a second; a verdict on
/// every 20 packets judged random loss by windows so short that, at 5% loss, one in thirteen
/// lost over 10% and cut the rate, which then crept down (850 to 400 kbit/s in seconds on a
/// link that carried far more). With 100 packets, one window in seventy does.
const MIN_SPAN: Duration = Duration::from_secs(1);

/// A window this full is judged however short it is: a fast stream losing heavily is cut as
/// often as [`DECREASE_INTERVAL`] allows.
const ENOUGH_PACKETS: u32 = 100;

/// A cut for loss goes no lower than this share of the rate the receiver acknowledged (the
/// share the delay-based rate is cut to on a growing queue).
const ACKED_FLOOR: f64 = 0.85;

/// Loss above this is no lossy radio link's: a full queue or a policer drops what the path
/// cannot carry, and the path carries about what the receiver acknowledged. A cut then goes
/// to [`ACKED_FLOOR`] of that at once: taking half the loss off the rate each round trip (the
/// rule for random loss) took 1 Mbit/s down to a 120 kbit/s link in over five seconds, the
/// link's queue full and most of every keyframe lost all along.
const HEAVY_LOSS: f64 = 0.3;

/// The loss-based rate of one transport.
#[derive(Debug)]
pub struct LossBasedRate {
    bitrate: f64,
    min: f64,
    max: f64,
    received: u32,
    lost: u32,
    /// When the packets counted so far started coming.
    window_start: Option<Instant>,
    last_increase: Option<Instant>,
    last_decrease: Option<Instant>,
    /// When a window last lost more than [`HIGH_LOSS`].
    last_high_loss: Option<Instant>,
    rtt: Duration,
}

impl LossBasedRate {
    /// Starting at `start` bit/s within `min..=max`.
    pub fn new(start: f64, min: f64, max: f64) -> Self {
        LossBasedRate {
            bitrate: start.clamp(min, max),
            min,
            max,
            received: 0,
            lost: 0,
            window_start: None,
            last_increase: None,
            last_decrease: None,
            last_high_loss: None,
            rtt: Duration::from_millis(200),
        }
    }

    /// The current rate, bit/s.
    pub fn bitrate(&self) -> f64 {
        self.bitrate
    }

    /// The round trip, which spaces cuts.
    pub fn set_rtt(&mut self, rtt: Duration) {
        self.rtt = rtt;
    }

    /// Follow a rate set elsewhere (the delay-based rate or a probe) where it is lower, so that
    /// growing from here starts from what the path carries.
    pub fn cap(&mut self, bitrate: f64) {
        self.bitrate = self.bitrate.min(bitrate).max(self.min);
    }

    /// Whether the receiver lost more than 10% of a window within [`LOSSY_HOLD`] of `now`: a
    /// path that loses that much is not to be probed upward, whatever a probe's few packets
    /// measured (random loss leaves some short windows clean).
    pub fn lossy(&self, now: Instant) -> bool {
        self.last_high_loss
            .is_some_and(|at| now.saturating_duration_since(at) < LOSSY_HOLD)
    }

    /// Start from `bitrate` where it is higher (a probe showed the path carries it).
    pub fn raise_to(&mut self, bitrate: f64) {
        self.bitrate = self.bitrate.max(bitrate).min(self.max);
    }

    /// Packets newly reported by one feedback at `now`: `received` arrived, `lost` did not;
    /// `acked` is the rate the receiver acknowledged lately. Returns the rate. It grows only
    /// while under 1.5 times the acknowledged rate (plus 10 kbit/s), as the delay-based rate
    /// does: a stream that sends little has not shown the path carries more.
    pub fn update(&mut self, now: Instant, received: u32, lost: u32, acked: Option<f64>) -> f64 {
        self.received += received;
        self.lost += lost;
        let total = self.received + self.lost;
        let start = *self.window_start.get_or_insert(now);
        let long_enough = now.saturating_duration_since(start) >= MIN_SPAN;
        if total < MIN_PACKETS || (total < ENOUGH_PACKETS && !long_enough) {
            return self.bitrate;
        }
        self.window_start = Some(now);
        let loss = f64::from(self.lost) / f64::from(total);
        if loss > HIGH_LOSS {
            self.last_high_loss = Some(now);
        }
        self.received = 0;
        self.lost = 0;
        if loss <= LOW_LOSS {
            // 8% a second, measured from the last increase.
            let secs = self.last_increase.map_or(0.0, |at| {
                now.saturating_duration_since(at).as_secs_f64().min(1.0)
            });
            let limit = acked.map_or(f64::INFINITY, |a| 1.5 * a + 10_000.0);
            if self.bitrate < limit {
                self.bitrate = (self.bitrate * 1.08f64.powf(secs) + 1_000.0 * secs).min(limit);
            }
            self.last_increase = Some(now);
        } else if loss > HIGH_LOSS {
            let due = self
                .last_decrease
                .is_none_or(|at| now.saturating_duration_since(at) >= DECREASE_INTERVAL + self.rtt);
            if due {
                // Not below most of what got through: a link that delivered `acked` while
                // dropping the rest carries about that (a policer, a full queue). Each
                // report of a burst sent at the starting guess would otherwise cut again,
                // 1 Mbit/s to 75 kbit/s in four seconds on a link carrying 250.
                let floor = acked.map_or(0.0, |a| ACKED_FLOOR * a).min(self.bitrate);
                let mut cut = self.bitrate * (1.0 - 0.5 * loss);
                // Without an acknowledged rate (what arrived spans too little time, as after
                // an outage) only the rule for random loss applies: the floor would be zero.
                if loss > HEAVY_LOSS && acked.is_some() {
                    cut = cut.min(floor);
                }
                self.bitrate = cut.max(floor);
                self.last_decrease = Some(now);
            }
            self.last_increase = Some(now);
        } else {
            self.last_increase = Some(now);
        }
        self.bitrate = self.bitrate.clamp(self.min, self.max);
        self.bitrate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_loss_grows_high_loss_cuts_once_per_interval() {
        let t0 = Instant::now();
        let mut l = LossBasedRate::new(1_000_000.0, 10_000.0, 10_000_000.0);
        // Too few packets, or a window too short and not full: no verdict.
        assert_eq!(l.update(t0, 10, 5, None), 1_000_000.0);
        assert_eq!(l.update(t0, 30, 5, None), 1_000_000.0);
        // 20% loss over a second (the earlier packets count too): cut by half of it.
        let cut = l.update(t0 + MIN_SPAN, 40, 10, None);
        assert!((cut - 900_000.0).abs() < 1.0, "{cut}");
        // Another bad window, full though short, within 300 ms + RTT: no second cut.
        let t1 = t0 + MIN_SPAN + Duration::from_millis(100);
        assert_eq!(l.update(t1, 80, 20, None), cut);
        // 5%: held.
        assert_eq!(l.update(t1 + Duration::from_millis(500), 95, 5, None), cut);
        // 1% for a second: +8% (and 1 kbit/s).
        let up = l.update(t1 + Duration::from_millis(1500), 99, 1, None);
        assert!((up - (cut * 1.08 + 1_000.0)).abs() < 1.0, "{up}");
        // Not above 1.5x what was acknowledged.
        let held = l.update(t1 + Duration::from_millis(2500), 100, 0, Some(500_000.0));
        assert_eq!(held, up, "{held}");
        l.cap(300_000.0);
        assert_eq!(l.bitrate(), 300_000.0);
        let capped = l.update(t1 + Duration::from_millis(3500), 100, 0, Some(200_000.0));
        assert!((capped - 310_000.0).abs() < 1.0, "{capped}");
    }

    #[test]
    fn a_cut_keeps_most_of_what_got_through() {
        // Sent at the starting 1 Mbit/s into a link that carries 250 kbit/s and drops the
        // rest: report after report of the same burst says 60-90% lost, while what arrives
        // comes at the link's rate.
        let t0 = Instant::now();
        let mut l = LossBasedRate::new(1_000_000.0, 10_000.0, 10_000_000.0);
        let mut rate = 1_000_000.0;
        for i in 1..=10u64 {
            rate = l.update(t0 + Duration::from_millis(600 * i), 20, 80, Some(256_000.0));
        }
        assert!((rate - 0.85 * 256_000.0).abs() < 1.0, "{rate}");
        // A cut never raises the rate, though.
        let mut low = LossBasedRate::new(100_000.0, 10_000.0, 10_000_000.0);
        let cut = low.update(t0 + MIN_SPAN, 50, 50, Some(256_000.0));
        assert_eq!(cut, 100_000.0);
        // Over 30% lost with no acknowledged rate to go by (a few arrivals after an outage):
        // half the loss off, not down to the minimum.
        let mut outage = LossBasedRate::new(1_000_000.0, 10_000.0, 10_000_000.0);
        let cut = outage.update(t0 + MIN_SPAN, 20, 80, None);
        assert!((cut - 600_000.0).abs() < 1.0, "{cut}");
    }

    #[test]
    fn five_percent_random_loss_in_short_windows_does_not_creep_down() {
        let t0 = Instant::now();
        let mut l = LossBasedRate::new(800_000.0, 10_000.0, 10_000_000.0);
        // 80 packets a second, reported every 50 ms, 3 of them lost in one report in
        // every 20 (5%): each report alone is 75% loss, the second they make up is 5%.
        let mut rate = 800_000.0;
        for i in 1..=200u32 {
            let lost = if i % 20 == 0 { 3 } else { 0 };
            let received = 4 - lost.min(4);
            rate = l.update(
                t0 + Duration::from_millis(50 * u64::from(i)),
                received,
                lost,
                None,
            );
        }
        assert!(rate >= 800_000.0, "{rate}");
    }
}
