//! How one stream's RTP timestamps map to its publisher's clock, from the stream's sender
//! reports, steadily.
//!
//! Each report pairs an instant of the publisher's (NTP) clock with an RTP timestamp: their
//! difference is the stream's offset. Taken report by report, it moves by the report's own
//! error: aiortc stamps a report with the time it sends it and the timestamp of the last frame
//! it sent, up to a frame interval earlier (33 ms of video), and a file whose video jumps that
//! much at every report has frames out of step with their neighbours. That error only ever
//! makes the offset larger, so the least offset of the last [`WINDOW`] reports is the best
//! estimate (the way NTP filters its samples), and it follows the drift between the two clocks
//! as old reports leave the window. The offset in use moves toward it by at most [`SLEW`] a
//! frame, so a correction never shows as a jump. A browser that stamps its reports exactly
//! (Chromium does) gives the same offset in every report.

use std::collections::VecDeque;

use super::timeline::{ntp_ns, SenderReport};

/// Reports the estimate is taken from.
pub const WINDOW: usize = 8;

/// The most the offset in use moves from one frame to the next, in nanoseconds.
pub const SLEW: i128 = 1_000_000;

/// One stream's timestamp-to-clock mapping.
#[derive(Debug, Default)]
pub struct StreamClock {
    /// The highest extended timestamp seen.
    highest: Option<i64>,
    /// The publisher's time minus the timestamp's, per report, latest last.
    offsets: VecDeque<i128>,
    /// The last report taken: each is taken once.
    last: Option<SenderReport>,
    /// The offset in use.
    applied: Option<i128>,
}

impl StreamClock {
    /// Take a report of the stream (one already taken is ignored).
    pub fn handle_report(&mut self, r: SenderReport, clock_rate: u32) {
        if self.last == Some(r) {
            return;
        }
        self.last = Some(r);
        let ext = self.extended(r.rtp);
        self.offsets
            .push_back(ntp_ns(r.ntp) - ticks_ns(ext, clock_rate));
        if self.offsets.len() > WINDOW {
            self.offsets.pop_front();
        }
    }

    /// The publisher's time (ns) of timestamp `ts`; None before the first report.
    pub fn map(&mut self, ts: u32, clock_rate: u32) -> Option<i128> {
        let target = *self.offsets.iter().min()?;
        let ext = self.extended(ts);
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        let applied = match self.applied {
            None => target,
            Some(a) => a + (target - a).clamp(-SLEW, SLEW),
        };
        self.applied = Some(applied);
        Some(applied + ticks_ns(ext, clock_rate))
    }

    /// Whether a report has been taken.
    pub fn has_report(&self) -> bool {
        !self.offsets.is_empty()
    }

    /// The stream was replaced (another simulcast layer, another codec): its timestamps start
    /// from another base, and its reports are another stream's.
    pub fn reset(&mut self) {
        *self = StreamClock::default();
    }

    /// `ts` extended to 64 bits, nearest the highest seen.
    fn extended(&self, ts: u32) -> i64 {
        let Some(highest) = self.highest else {
            return i64::from(ts);
        };
        let delta = ts.wrapping_sub(highest as u32) as i32;
        highest + i64::from(delta)
    }
}

/// `ticks` of a `clock_rate` clock in nanoseconds.
fn ticks_ns(ticks: i64, clock_rate: u32) -> i128 {
    i128::from(ticks) * 1_000_000_000 / i128::from(clock_rate.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NTP time of `ms` milliseconds of the publisher's clock.
    fn ntp(ms: u64) -> u64 {
        let ns = 3_900_000_000u64 * 1_000_000_000 + ms * 1_000_000;
        ((ns / 1_000_000_000) << 32) | (((ns % 1_000_000_000) << 32) / 1_000_000_000)
    }

    const BASE_MS: i128 = 3_900_000_000 * 1000;

    /// Milliseconds from the base, to the nearest (NTP fractions are not whole nanoseconds).
    fn ms(ns: i128) -> i128 {
        (ns + 500_000) / 1_000_000 - BASE_MS
    }

    #[test]
    fn reports_late_by_up_to_a_frame_give_steady_times_that_settle_on_the_truth() {
        // 30 fps video stamped from 1000 at 90 kHz, frame k captured at k * 33.3 ms. Reports
        // each second name the last frame sent with the time they are sent: 0-30 ms late.
        let mut c = StreamClock::default();
        let late = [25u64, 3, 30, 12, 0, 18, 27, 9];
        let mut times = Vec::new();
        for k in 0..240u32 {
            if k % 30 == 0 {
                let second = u64::from(k / 30);
                let rtp = 1000 + k * 3000;
                c.handle_report(
                    SenderReport {
                        ntp: ntp(second * 1000 + late[second as usize % late.len()]),
                        rtp,
                    },
                    90_000,
                );
            }
            times.push(c.map(1000 + k * 3000, 90_000).expect("reported"));
        }
        // Never a jump: consecutive frames 33.3 ms apart, give or take the slew.
        for w in times.windows(2) {
            let step = w[1] - w[0];
            assert!(
                (32_333_333..=34_333_334).contains(&step),
                "a step of {step} ns"
            );
        }
        // The first report was 25 ms late; by the fifth (an exact one) the times are true.
        assert_eq!(ms(times[0]), 25);
        assert_eq!(ms(times[239]), (239 * 1000 + 15) / 30);
    }

    #[test]
    fn timestamps_extend_across_the_wrap_and_before_the_report() {
        let mut c = StreamClock::default();
        assert_eq!(c.map(5, 48_000), None, "no report yet");
        c.handle_report(
            SenderReport {
                ntp: ntp(500),
                rtp: u32::MAX - 959,
            },
            48_000,
        );
        assert_eq!(ms(c.map(u32::MAX - 959 - 960, 48_000).unwrap()), 480);
        assert_eq!(ms(c.map(960, 48_000).unwrap()), 540, "past the wrap");
        assert!(c.has_report());
        c.reset();
        assert!(!c.has_report());
    }
}
