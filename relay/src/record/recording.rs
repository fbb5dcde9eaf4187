//! One recorded feed on its way to its file: the packets of its video and its audio made into
//! frames ([`super::frames`]), placed on one timeline ([`super::timeline`]), given out in the
//! order the file takes them.
//!
//! Sans-IO: [`FeedRecording::handle_packet`] in, [`FeedRecording::poll_frame`] and
//! [`FeedRecording::poll_keyframe_request`] out, `now` passed in.

use std::time::Instant;

use super::frames::{Codec, FrameAssembler};
use super::timeline::{SenderReport, TimedFrame, Timeline, Track};

/// A packet of a recorded stream, as a core hands it to the recorder: the header fields that
/// matter, the payload (a copy: the core's buffer goes on to subscribers), and the stream's
/// latest sender report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordPacket {
    /// The recording (file) it is for.
    pub recording: u64,
    /// Its stream in that file.
    pub track: Track,
    /// Counts the packets the core handed over for this stream (from 1): a gap is what the
    /// queue to the recorder dropped.
    pub handed: u64,
    /// When it arrived at the relay.
    pub arrived: Instant,
    /// The simulcast layer it belongs to (0 without simulcast): the recorder follows one
    /// layer at a time, switching at a keyframe.
    pub layer: u8,
    /// Its payload format (from its payload type).
    pub codec: Codec,
    /// RTP sequence number.
    pub sequence: u16,
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP marker bit.
    pub marker: bool,
    /// The codec's clock.
    pub clock_rate: u32,
    /// The latest sender report of its stream.
    pub report: Option<SenderReport>,
    /// The RTP payload (no header, no padding).
    pub payload: Vec<u8>,
}

/// A recorded feed's video and audio.
#[derive(Debug)]
pub struct FeedRecording {
    /// The video's frames, the layer they are of, and its clock.
    video: Option<(FrameAssembler, u8, u32)>,
    audio: Option<(FrameAssembler, u32)>,
    timeline: Timeline,
    /// The last `handed` count of each track, for what the queue dropped.
    handed: [u64; 2],
    /// Packets the queue to the recorder dropped.
    pub dropped: u64,
    /// A video keyframe has been given out: the file's video starts there.
    video_started: bool,
    /// Video frames that came out in time before the first keyframe (a stream whose
    /// timestamps went back): not given out.
    early_frames: u64,
}

impl FeedRecording {
    /// A recording of a video (if `video`) and Opus audio (if `audio`), starting now.
    pub fn new(now: Instant, video: bool, audio: bool) -> Self {
        FeedRecording {
            video: video.then(|| (FrameAssembler::new(Codec::Vp8), 0, 90_000)),
            audio: audio.then(|| (FrameAssembler::new(Codec::Opus), 48_000)),
            timeline: Timeline::new(now),
            handed: [0; 2],
            dropped: 0,
            video_started: false,
            early_frames: 0,
        }
    }

    /// A packet from a core.
    pub fn handle_packet(&mut self, p: RecordPacket) {
        let i = p.track as usize;
        if p.handed > self.handed[i] + 1 {
            self.dropped += p.handed - self.handed[i] - 1;
        }
        self.handed[i] = self.handed[i].max(p.handed);
        let (assembler, clock_rate) = match (p.track, &mut self.video, &mut self.audio) {
            (Track::Video, Some((a, layer, rate)), _) => {
                if *layer != p.layer || a.codec() != p.codec {
                    // Another simulcast layer or codec: another stream, from its keyframe
                    // on. What the old one still held is given out first.
                    Self::drain(&mut self.timeline, Track::Video, *rate, a, p.arrived);
                    self.timeline.reset_stream(p.arrived, Track::Video);
                    *a = FrameAssembler::new(p.codec);
                    *layer = p.layer;
                }
                (a, rate)
            }
            (Track::Audio, _, Some((a, rate))) => (a, rate),
            _ => return,
        };
        *clock_rate = p.clock_rate;
        assembler.handle_packet(p.arrived, p.sequence, p.timestamp, p.marker, &p.payload);
        let rate = *clock_rate;
        while let Some(frame) = assembler.poll_frame(p.arrived) {
            self.timeline
                .handle_frame(p.arrived, p.track, rate, p.report, frame);
        }
    }

    /// How many packets of each track the cores handed over in all (the recording stops):
    /// those that never came were dropped by the queue.
    pub fn handle_handed(&mut self, handed: [u64; 2]) {
        for (i, n) in handed.into_iter().enumerate() {
            self.dropped += n.saturating_sub(self.handed[i]);
            self.handed[i] = self.handed[i].max(n);
        }
    }

    /// The next frame for the file.
    pub fn poll_frame(&mut self, now: Instant) -> Option<TimedFrame> {
        if let Some((a, _, rate)) = &mut self.video {
            Self::drain(&mut self.timeline, Track::Video, *rate, a, now);
        }
        if let Some((a, rate)) = &mut self.audio {
            Self::drain(&mut self.timeline, Track::Audio, *rate, a, now);
        }
        loop {
            let f = self.timeline.poll_frame(now)?;
            if let Some(f) = self.starting_at_a_keyframe(f) {
                return Some(f);
            }
        }
    }

    /// `f`, unless it is video before the first keyframe given out.
    fn starting_at_a_keyframe(&mut self, f: TimedFrame) -> Option<TimedFrame> {
        if f.track == Track::Video && !self.video_started {
            if !f.frame.keyframe {
                self.early_frames += 1;
                return None;
            }
            self.video_started = true;
        }
        Some(f)
    }

    /// Whether the video needs a keyframe (it lost a frame for good).
    pub fn poll_keyframe_request(&mut self) -> bool {
        self.video
            .as_mut()
            .is_some_and(|(a, _, _)| a.poll_keyframe_request())
    }

    /// When [`FeedRecording::poll_frame`] may have something without a new packet.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let video = self.video.as_ref().and_then(|(a, _, _)| a.poll_timeout());
        let audio = self.audio.as_ref().and_then(|(a, _)| a.poll_timeout());
        [video, audio, self.timeline.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Everything still held, in order (the recording stops at `now`).
    pub fn finish(&mut self, now: Instant) -> Vec<TimedFrame> {
        let mut out: Vec<TimedFrame> = std::iter::from_fn(|| self.poll_frame(now)).collect();
        for f in self.timeline.finish() {
            out.extend(self.starting_at_a_keyframe(f));
        }
        out
    }

    /// Frames lost for good (given up for a missing packet, or dropped until a keyframe).
    pub fn frames_lost(&self) -> u64 {
        let video = self.video.as_ref().map_or(0, |(a, _, _)| a.frames_lost);
        let audio = self.audio.as_ref().map_or(0, |(a, _)| a.frames_lost);
        video + audio + self.early_frames
    }

    /// The video's codec now.
    pub fn video_codec(&self) -> Option<Codec> {
        self.video.as_ref().map(|(a, _, _)| a.codec())
    }

    /// The time of the last frame given out, from the start of the file.
    pub fn end_ns(&self) -> u64 {
        self.timeline.end_ns()
    }

    fn drain(
        timeline: &mut Timeline,
        track: Track,
        rate: u32,
        a: &mut FrameAssembler,
        now: Instant,
    ) {
        while let Some(frame) = a.poll_frame(now) {
            timeline.handle_frame(now, track, rate, None, frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn packet(
        track: Track,
        handed: u64,
        at: Instant,
        layer: u8,
        seq: u16,
        ts: u32,
        payload: Vec<u8>,
    ) -> RecordPacket {
        RecordPacket {
            recording: 1,
            track,
            handed,
            arrived: at,
            layer,
            codec: if track == Track::Video {
                Codec::Vp8
            } else {
                Codec::Opus
            },
            sequence: seq,
            timestamp: ts,
            marker: true,
            clock_rate: if track == Track::Video {
                90_000
            } else {
                48_000
            },
            report: Some(SenderReport {
                ntp: 1 << 40,
                rtp: 0,
            }),
            payload,
        }
    }

    /// A one-packet VP8 frame: a keyframe (with its start code and size) or a delta.
    fn vp8_frame(keyframe: bool) -> Vec<u8> {
        let mut p = vec![0x10];
        if keyframe {
            p.extend_from_slice(&[0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
        } else {
            p.extend_from_slice(&[0x01, 0x00, 0x00, 0xaa]);
        }
        p
    }

    #[test]
    fn video_and_audio_come_out_in_time_order_from_the_first_keyframe() {
        let t0 = Instant::now();
        let mut r = FeedRecording::new(t0, true, true);
        let mut out = Vec::new();
        let mut handed = [0u64; 2];
        for k in 0..100u32 {
            let at = t0 + Duration::from_millis(20 * u64::from(k));
            handed[1] += 1;
            r.handle_packet(packet(
                Track::Audio,
                handed[1],
                at,
                0,
                k as u16,
                k * 960,
                vec![1; 30],
            ));
            if k % 2 == 0 && k > 0 {
                handed[0] += 1;
                let key = k == 10;
                r.handle_packet(packet(
                    Track::Video,
                    handed[0],
                    at,
                    0,
                    handed[0] as u16,
                    k * 1800,
                    vp8_frame(key),
                ));
            }
            out.extend(std::iter::from_fn(|| r.poll_frame(at)));
        }
        out.extend(r.finish(t0 + Duration::from_secs(2)));
        let video: Vec<&TimedFrame> = out.iter().filter(|f| f.track == Track::Video).collect();
        assert!(
            video[0].frame.keyframe,
            "the first video frame is a keyframe"
        );
        assert_eq!(video[0].frame.size, Some((640, 360)));
        assert_eq!(
            video[0].ns, 200_000_000,
            "k = 10, 200 ms after the first audio"
        );
        assert_eq!(video.len(), 45);
        assert_eq!(out.iter().filter(|f| f.track == Track::Audio).count(), 100);
        assert!(out.windows(2).all(|w| w[0].ns <= w[1].ns));
        assert_eq!(r.dropped, 0);
        assert_eq!(r.end_ns(), 99 * 20_000_000);
    }

    #[test]
    fn what_the_queue_dropped_is_counted_and_a_switched_layer_starts_at_its_keyframe() {
        let t0 = Instant::now();
        let mut r = FeedRecording::new(t0, true, false);
        r.handle_packet(packet(Track::Video, 1, t0, 0, 100, 0, vp8_frame(true)));
        r.handle_packet(packet(Track::Video, 4, t0, 0, 101, 3000, vp8_frame(false)));
        assert_eq!(r.dropped, 2);
        // Layer 1 (its own sequence numbers): a delta frame first is not written.
        r.handle_packet(packet(Track::Video, 5, t0, 1, 7000, 6000, vp8_frame(false)));
        r.handle_packet(packet(Track::Video, 6, t0, 1, 7001, 9000, vp8_frame(true)));
        // The cores handed over three more that never came (the queue dropped the tail).
        r.handle_handed([9, 0]);
        assert_eq!(r.dropped, 5);
        let out = r.finish(t0);
        let stamps: Vec<(u32, bool)> = out
            .iter()
            .map(|f| (f.frame.timestamp, f.frame.keyframe))
            .collect();
        assert_eq!(stamps, [(0, true), (3000, false), (9000, true)]);
    }
}
