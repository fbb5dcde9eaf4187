//! The delay-based congestion detector: is the queue on the path growing, steady or
//! draining? libwebrtc's trendline filter (goog_cc `TrendlineEstimator`), with its constants.
//!
//! Each group delta adds (arrival delta - send delta) to an accumulated delay, which is
//! smoothed; the slope of the smoothed delay against arrival time over the last
//! [`WINDOW`] groups is the trend. The trend, scaled by the number of samples, is compared with
//! an adaptive threshold: above it for longer than [`OVERUSE_TIME`] (and still rising) is
//! overuse, below its negative is underuse (a queue draining). The threshold follows the
//! trend slowly, up faster than down, so that a path with steady jitter does not look
//! congested, while a real queue building up still crosses it.

use super::inter_arrival::GroupDelta;

/// Groups in the regression.
pub const WINDOW: usize = 20;
/// Smoothing of the accumulated delay.
const SMOOTHING: f64 = 0.9;
/// Gain applied to the trend before comparing it with the threshold.
const THRESHOLD_GAIN: f64 = 4.0;
/// The scaling by sample count saturates here.
const MIN_DELTAS: u32 = 60;
/// How long (ms) the trend must stay above the threshold to count as overuse.
const OVERUSE_TIME_MS: f64 = 10.0;
/// Threshold adaptation rates when the trend is above / below it.
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
/// The threshold does not chase a trend this far beyond it (a sudden spike).
const MAX_ADAPT_OFFSET_MS: f64 = 15.0;
/// Initial threshold and its bounds.
const INITIAL_THRESHOLD: f64 = 12.5;
const MIN_THRESHOLD: f64 = 6.0;
const MAX_THRESHOLD: f64 = 600.0;

/// What the path's delay says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BandwidthUsage {
    /// No queue building up.
    Normal,
    /// A queue is growing: sending faster than the path carries.
    Overusing,
    /// A queue is draining.
    Underusing,
}

/// The trendline detector of one transport.
#[derive(Debug)]
pub struct Trendline {
    deltas: u32,
    first_arrival_ms: Option<f64>,
    accumulated_delay: f64,
    smoothed_delay: f64,
    /// (arrival ms since the first, smoothed delay) of the last [`WINDOW`] groups, in no
    /// order (a least-squares fit does not need one): `len` of them, the next written at
    /// `next`. Kept inline: each subscriber's detector is cold when its feedback comes.
    history: [(f64, f64); WINDOW],
    len: usize,
    next: usize,
    threshold: f64,
    last_threshold_update_ms: Option<f64>,
    previous_trend: f64,
    time_over_using: Option<f64>,
    overuse_count: u32,
    usage: BandwidthUsage,
}

impl Default for Trendline {
    fn default() -> Self {
        Trendline {
            deltas: 0,
            first_arrival_ms: None,
            accumulated_delay: 0.0,
            smoothed_delay: 0.0,
            history: [(0.0, 0.0); WINDOW],
            len: 0,
            next: 0,
            threshold: INITIAL_THRESHOLD,
            last_threshold_update_ms: None,
            previous_trend: 0.0,
            time_over_using: None,
            overuse_count: 0,
            usage: BandwidthUsage::Normal,
        }
    }
}

impl Trendline {
    /// The state after the latest group.
    pub fn usage(&self) -> BandwidthUsage {
        self.usage
    }

    /// Take one group delta; returns the state it leaves.
    pub fn handle_delta(&mut self, d: &GroupDelta) -> BandwidthUsage {
        let delay = d.arrival_delta_ms - d.send_delta_ms;
        self.deltas = (self.deltas + 1).min(1000);
        let first = *self.first_arrival_ms.get_or_insert(d.arrival_ms);
        self.accumulated_delay += delay;
        self.smoothed_delay =
            SMOOTHING * self.smoothed_delay + (1.0 - SMOOTHING) * self.accumulated_delay;
        self.history[self.next] = (d.arrival_ms - first, self.smoothed_delay);
        self.next = (self.next + 1) % WINDOW;
        self.len = (self.len + 1).min(WINDOW);
        let trend = if self.len == WINDOW {
            slope(&self.history).unwrap_or(self.previous_trend)
        } else {
            self.previous_trend
        };
        self.detect(trend, d.send_delta_ms, d.arrival_ms);
        self.usage
    }

    fn detect(&mut self, trend: f64, send_delta_ms: f64, now_ms: f64) {
        if self.deltas < 2 {
            self.usage = BandwidthUsage::Normal;
            return;
        }
        let modified = f64::from(self.deltas.min(MIN_DELTAS)) * trend * THRESHOLD_GAIN;
        if modified > self.threshold {
            let over = match self.time_over_using {
                None => send_delta_ms / 2.0,
                Some(t) => t + send_delta_ms,
            };
            self.time_over_using = Some(over);
            self.overuse_count += 1;
            if over > OVERUSE_TIME_MS && self.overuse_count > 1 && trend >= self.previous_trend {
                self.time_over_using = Some(0.0);
                self.overuse_count = 0;
                self.usage = BandwidthUsage::Overusing;
            }
        } else if modified < -self.threshold {
            self.time_over_using = None;
            self.overuse_count = 0;
            self.usage = BandwidthUsage::Underusing;
        } else {
            self.time_over_using = None;
            self.overuse_count = 0;
            self.usage = BandwidthUsage::Normal;
        }
        self.previous_trend = trend;
        self.update_threshold(modified, now_ms);
    }

    fn update_threshold(&mut self, modified: f64, now_ms: f64) {
        let last = *self.last_threshold_update_ms.get_or_insert(now_ms);
        if modified.abs() > self.threshold + MAX_ADAPT_OFFSET_MS {
            self.last_threshold_update_ms = Some(now_ms);
            return;
        }
        let k = if modified.abs() < self.threshold {
            K_DOWN
        } else {
            K_UP
        };
        let elapsed = (now_ms - last).clamp(0.0, 100.0);
        self.threshold += k * (modified.abs() - self.threshold) * elapsed;
        self.threshold = self.threshold.clamp(MIN_THRESHOLD, MAX_THRESHOLD);
        self.last_threshold_update_ms = Some(now_ms);
    }
}

/// Least-squares slope of y against x; None when every x is the same.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den != 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Groups every `interval` ms whose arrival spacing exceeds their send spacing by `growth`
    /// ms each (a queue growing by that much per group).
    fn run(
        t: &mut Trendline,
        groups: usize,
        interval: f64,
        growth: f64,
        start_ms: f64,
    ) -> Vec<BandwidthUsage> {
        (0..groups)
            .map(|i| {
                t.handle_delta(&GroupDelta {
                    send_delta_ms: interval,
                    arrival_delta_ms: interval + growth,
                    arrival_ms: start_ms + (i as f64 + 1.0) * (interval + growth),
                    size: 1200,
                })
            })
            .collect()
    }

    #[test]
    fn a_steady_path_is_normal() {
        let mut t = Trendline::default();
        let states = run(&mut t, 200, 10.0, 0.0, 0.0);
        assert!(states.iter().all(|s| *s == BandwidthUsage::Normal));
    }

    #[test]
    fn a_growing_queue_is_overuse_and_a_draining_one_underuse() {
        let mut t = Trendline::default();
        run(&mut t, 50, 10.0, 0.0, 0.0);
        // 1 ms more delay per 10 ms group: a queue filling at 10% over capacity.
        let states = run(&mut t, 60, 10.0, 1.0, 500.0);
        let first = states
            .iter()
            .position(|s| *s == BandwidthUsage::Overusing)
            .expect("overuse detected");
        assert!(first < 30, "detected after {first} groups");
        // The queue drains: 1 ms less per group.
        let states = run(&mut t, 60, 10.0, -1.0, 1200.0);
        assert!(states.contains(&BandwidthUsage::Underusing));
        // Then steady again.
        let states = run(&mut t, 100, 10.0, 0.0, 2000.0);
        assert_eq!(states.last(), Some(&BandwidthUsage::Normal));
    }

    #[test]
    fn jitter_without_a_trend_is_not_overuse() {
        let mut t = Trendline::default();
        let mut at = 0.0;
        let mut states = Vec::new();
        for i in 0..500 {
            // ±4 ms of alternating jitter around a steady path.
            let jitter = if i % 2 == 0 { 4.0 } else { -4.0 };
            at += 10.0 + jitter;
            states.push(t.handle_delta(&GroupDelta {
                send_delta_ms: 10.0,
                arrival_delta_ms: 10.0 + jitter,
                arrival_ms: at,
                size: 1200,
            }));
        }
        assert!(!states.contains(&BandwidthUsage::Overusing));
    }

    #[test]
    fn slope_of_a_line() {
        let pts: Vec<(f64, f64)> = (0..5).map(|i| (i as f64, 3.0 * i as f64 + 1.0)).collect();
        assert!((slope(&pts).unwrap() - 3.0).abs() < 1e-12);
        let flat: Vec<(f64, f64)> = (0..5).map(|_| (1.0, 2.0)).collect();
        assert_eq!(slope(&flat), None);
    }
}
