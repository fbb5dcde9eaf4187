//! When each frame of a recorded feed happened, on one timeline for its audio and its video,
//! and the order they go into the file.
//!
//! A feed's audio and video are separate RTP streams, each stamping its own timestamps from a
//! random start. What ties them together is the publisher's sender reports: each says which
//! RTP timestamp of its stream goes with which instant of the publisher's (NTP) clock, the
//! same clock for both. So a frame's time is the instant its timestamp maps to through its
//! stream's reports (as a player does for lip sync, RFC 3550 §6.4.1), filtered so that a
//! report's own error shows as no jump ([`super::stream_clock`]); a stream switched to another
//! simulcast layer maps through that layer's reports.
//!
//! A stream with no report yet holds its frames for [`HOLD`]: browsers send their first within
//! a second. After that its frames are placed by their arrival (shifted onto the publisher's
//! clock where the other stream has taught the offset between the two clocks), which is as
//! good as the network's jitter.
//!
//! Frames come out of order across streams (a video frame waits for its repairs while the
//! audio goes on, a stream waits for its report), and a WebM file holds them in time order:
//! frames wait [`INTERLEAVE`] behind the newest, and behind any still waiting, before they are
//! given out.
//!
//! Sans-IO: `handle_frame` in, `poll_frame` out, `now` passed in.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::frames::Frame;
use super::stream_clock::StreamClock;

/// How long a stream's frames wait for its first sender report.
pub const HOLD: Duration = Duration::from_millis(1500);

/// How far behind the newest frame a frame is given out: more than a video frame waits for
/// its repairs ([`super::frames::MAX_WAIT`]).
pub const INTERLEAVE: Duration = Duration::from_millis(700);

/// Which stream of a recorded feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Track {
    /// The video.
    Video,
    /// The audio.
    Audio,
}

/// A sender report of the stream a frame came on: the NTP time (RFC 3550 64-bit format) and
/// the RTP timestamp that goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport {
    /// The publisher's clock.
    pub ntp: u64,
    /// The stream's timestamp at that instant.
    pub rtp: u32,
}

/// A frame and where it goes in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedFrame {
    /// Its stream.
    pub track: Track,
    /// Nanoseconds from the start of the file.
    pub ns: u64,
    /// The frame.
    pub frame: Frame,
}

#[derive(Debug)]
struct Waiting {
    arrived: Instant,
    clock_rate: u32,
    frame: Frame,
}

/// What the timeline counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clock {
    /// The publisher's clock, through sender reports.
    Publisher,
    /// The relay's, by arrival (no stream had a report in time).
    Arrival,
}

/// One recorded feed's timeline.
#[derive(Debug)]
pub struct Timeline {
    /// Arrival times count from here.
    epoch: Instant,
    /// Chosen by the first frame placed.
    clock: Option<Clock>,
    /// The publisher's NTP time minus the arrival time (ns), from the first frame that had both.
    offset: Option<i128>,
    /// Frames of each stream waiting for its first report.
    waiting: [VecDeque<Waiting>; 2],
    /// Each stream's mapping to the publisher's clock.
    clocks: [StreamClock; 2],
    /// Placed frames by time (and order of placing, for equal times).
    placed: BTreeMap<(i128, u64), TimedFrame>,
    placed_count: u64,
    /// The latest time placed: frames [`INTERLEAVE`] behind it go out.
    newest: Option<i128>,
    /// The time of the file's first frame.
    zero: Option<i128>,
    /// The last time given out, per stream (times never go back within one).
    last_out: [Option<u64>; 2],
}

impl Timeline {
    /// A timeline whose arrival times count from `now`.
    pub fn new(now: Instant) -> Self {
        Timeline {
            epoch: now,
            clock: None,
            offset: None,
            waiting: Default::default(),
            clocks: Default::default(),
            placed: BTreeMap::new(),
            placed_count: 0,
            newest: None,
            zero: None,
            last_out: [None; 2],
        }
    }

    /// A complete frame of `track`, which arrived at `now`, with the latest sender report of
    /// the stream it came on, if any.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        track: Track,
        clock_rate: u32,
        report: Option<SenderReport>,
        frame: Frame,
    ) {
        let i = track as usize;
        if let Some(r) = report {
            self.clocks[i].handle_report(r, clock_rate.max(1));
        }
        self.waiting[i].push_back(Waiting {
            arrived: now,
            clock_rate: clock_rate.max(1),
            frame,
        });
        self.place(now);
    }

    /// The next frame for the file, in time order.
    pub fn poll_frame(&mut self, now: Instant) -> Option<TimedFrame> {
        self.place(now);
        let (&(t, _), _) = self.placed.first_key_value()?;
        if t + INTERLEAVE.as_nanos() as i128 > self.horizon()? {
            return None;
        }
        self.pop()
    }

    /// How far frames may go out to: [`INTERLEAVE`] behind the newest placed, and behind
    /// where a frame still waiting for a report will go at the earliest (by its arrival: its
    /// report can put it earlier only by the network's delay, far less than the interleave).
    fn horizon(&self) -> Option<i128> {
        let mut horizon = self.newest?;
        for w in self.waiting.iter().filter_map(|w| w.front()) {
            let arrival = now_ns(self.epoch, w.arrived);
            let on_timeline = match (self.clock, self.offset) {
                (Some(Clock::Publisher), Some(o)) => arrival + o,
                _ => arrival,
            };
            horizon = horizon.min(on_timeline);
        }
        Some(horizon)
    }

    /// Everything still held, in time order (the recording stops).
    pub fn finish(&mut self) -> Vec<TimedFrame> {
        // Whatever still waits for a report goes by its arrival.
        let far = self.epoch + Duration::from_secs(1 << 20);
        self.place(far);
        std::iter::from_fn(|| self.pop()).collect()
    }

    /// When a frame waiting for a report is placed by its arrival instead.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.waiting
            .iter()
            .filter_map(|w| w.front().map(|f| f.arrived + HOLD))
            .min()
    }

    /// The time of the last frame given out, from the start of the file.
    pub fn end_ns(&self) -> u64 {
        self.last_out.iter().flatten().copied().max().unwrap_or(0)
    }

    fn pop(&mut self) -> Option<TimedFrame> {
        let ((t, _), mut f) = self.placed.pop_first()?;
        let zero = *self.zero.get_or_insert(t);
        let i = f.track as usize;
        let ns = (t - zero).max(0) as u64;
        // A frame placed behind one already out (a stream that started by arrival and then
        // got its report) goes at the same time: a file's times never go back.
        let ns = self.last_out[i].map_or(ns, |last| ns.max(last));
        self.last_out[i] = Some(ns);
        f.ns = ns;
        Some(f)
    }

    /// Give every waiting frame that can be placed its time.
    fn place(&mut self, now: Instant) {
        for i in 0..2 {
            self.place_stream(i, now, false);
        }
    }

    /// Stream `track` was replaced (another simulcast layer or codec): what waits of the old
    /// one is placed by its arrival, and the new one maps through its own reports.
    pub fn reset_stream(&mut self, now: Instant, track: Track) {
        self.place_stream(track as usize, now, true);
        self.clocks[track as usize].reset();
    }

    /// Place stream `i`'s waiting frames that can be (all of them with `force`).
    fn place_stream(&mut self, i: usize, now: Instant, force: bool) {
        while let Some(w) = self.waiting[i].front() {
            let reported = self.clocks[i].has_report();
            if !reported && !force && now < w.arrived + HOLD {
                break;
            }
            let w = self.waiting[i].pop_front().expect("front");
            let arrival = now_ns(self.epoch, w.arrived);
            let mapped = self.clocks[i].map(w.frame.timestamp, w.clock_rate);
            let clock = *self.clock.get_or_insert(if mapped.is_some() {
                Clock::Publisher
            } else {
                Clock::Arrival
            });
            if let Some(m) = mapped {
                self.offset.get_or_insert(m - arrival);
            }
            let t = match (clock, mapped, self.offset) {
                (Clock::Publisher, Some(m), _) => m,
                (Clock::Publisher, None, Some(o)) => arrival + o,
                (Clock::Arrival, Some(m), Some(o)) => m - o,
                (_, _, _) => arrival,
            };
            self.newest = Some(self.newest.map_or(t, |n| n.max(t)));
            let track = if i == 0 { Track::Video } else { Track::Audio };
            self.placed.insert(
                (t, self.placed_count),
                TimedFrame {
                    track,
                    ns: 0,
                    frame: w.frame,
                },
            );
            self.placed_count += 1;
        }
    }
}

fn now_ns(epoch: Instant, at: Instant) -> i128 {
    at.saturating_duration_since(epoch).as_nanos() as i128
}

/// An NTP time (RFC 3550's 32.32 fixed point) in nanoseconds.
pub fn ntp_ns(ntp: u64) -> i128 {
    let secs = (ntp >> 32) as i128;
    let frac = (ntp & 0xffff_ffff) as i128;
    secs * 1_000_000_000 + ((frac * 1_000_000_000) >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ts: u32) -> Frame {
        Frame {
            timestamp: ts,
            keyframe: true,
            data: vec![0; 10],
            size: None,
            config: None,
            splits: Vec::new(),
        }
    }

    /// NTP time of `ms` milliseconds after an arbitrary instant of the publisher's clock.
    fn ntp(ms: u64) -> u64 {
        let ns = 3_900_000_000u64 * 1_000_000_000 + ms * 1_000_000;
        let secs = ns / 1_000_000_000;
        let frac = ((ns % 1_000_000_000) << 32) / 1_000_000_000;
        (secs << 32) | frac
    }

    fn drain(t: &mut Timeline, now: Instant) -> Vec<(Track, u64)> {
        std::iter::from_fn(|| t.poll_frame(now))
            .map(|f| (f.track, f.ns / 1_000_000))
            .collect()
    }

    #[test]
    fn audio_and_video_line_up_through_their_reports_whatever_their_arrival() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0);
        // Both captured at publisher time 1000 ms + k * 100 ms. Video stamps from 90_000 at
        // 90 kHz, audio from 5_000 at 48 kHz; video arrives 250 ms late (repairs).
        let video = SenderReport {
            ntp: ntp(1000),
            rtp: 90_000,
        };
        let audio = SenderReport {
            ntp: ntp(1000),
            rtp: 5_000,
        };
        let mut out = Vec::new();
        for k in 0..20u32 {
            let now = t0 + Duration::from_millis(100 * u64::from(k));
            t.handle_frame(
                now,
                Track::Audio,
                48_000,
                Some(audio),
                frame(5_000 + k * 4_800),
            );
            if k >= 3 {
                let v = k - 3;
                let late = now + Duration::from_millis(50);
                t.handle_frame(
                    late,
                    Track::Video,
                    90_000,
                    Some(video),
                    frame(90_000 + v * 9_000),
                );
            }
            out.extend(drain(&mut t, now + Duration::from_millis(60)));
        }
        out.extend(t.finish().into_iter().map(|f| (f.track, f.ns / 1_000_000)));
        // Each instant's audio and video at the same time in the file, in order.
        let times = |track| -> Vec<u64> {
            out.iter()
                .filter(|(k, _)| *k == track)
                .map(|(_, ms)| *ms)
                .collect()
        };
        assert_eq!(
            times(Track::Audio),
            (0..20).map(|k| k * 100).collect::<Vec<_>>()
        );
        assert_eq!(
            times(Track::Video),
            (0..17).map(|k| k * 100).collect::<Vec<_>>()
        );
        assert!(out.windows(2).all(|w| w[0].1 <= w[1].1), "in time order");
    }

    #[test]
    fn a_stream_without_a_report_waits_then_goes_by_arrival_shifted_by_the_other() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0);
        let audio = SenderReport {
            ntp: ntp(0),
            rtp: 0,
        };
        // Audio every 20 ms with a report; video every 100 ms with none.
        let mut out = Vec::new();
        for ms in (0..4000u64).step_by(20) {
            let now = t0 + Duration::from_millis(ms);
            t.handle_frame(
                now,
                Track::Audio,
                48_000,
                Some(audio),
                frame(ms as u32 * 48),
            );
            if ms % 100 == 0 {
                t.handle_frame(now, Track::Video, 90_000, None, frame(ms as u32 * 90));
            }
            out.extend(drain(&mut t, now));
        }
        assert_eq!(t.poll_timeout().map(|d| d > t0), Some(true));
        let video: Vec<u64> = out
            .iter()
            .filter(|(k, _)| *k == Track::Video)
            .map(|(_, ms)| *ms)
            .collect();
        // Placed by arrival, on the audio's timeline (arrival and capture coincide here),
        // and the audio waited for them: the file's order is the time order.
        assert!(video.len() >= 15, "{} video frames out", video.len());
        assert_eq!(&video[..3], &[0, 100, 200]);
        assert!(out.windows(2).all(|w| w[0].1 <= w[1].1), "in time order");
    }

    #[test]
    fn with_no_report_at_all_the_timeline_is_the_arrival() {
        let t0 = Instant::now();
        let mut t = Timeline::new(t0);
        t.handle_frame(t0, Track::Audio, 48_000, None, frame(0));
        let later = t0 + Duration::from_millis(40);
        t.handle_frame(later, Track::Audio, 48_000, None, frame(960));
        assert_eq!(t.poll_frame(later), None, "held for a report");
        assert_eq!(t.poll_timeout(), Some(t0 + HOLD));
        let out: Vec<_> = t.finish().into_iter().map(|f| f.ns / 1_000_000).collect();
        assert_eq!(out, [0, 40]);
        assert_eq!(t.end_ns(), 40_000_000);
    }
}
