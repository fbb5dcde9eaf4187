//! Synthetic media the load generator sends: video-like streams (a frame every 1/fps, frames
//! split into packets of a fixed size, a keyframe burst every few seconds) and audio-like ones
//! (one small packet every 20 ms).
//!
//! Every packet ends with a [`Probe`]: stream id, index in the stream and send time on the
//! process's monotonic clock. Receivers in the same process read it back to measure loss and
//! one-way latency without keeping a copy of what was sent. The probe sits at the end of the
//! payload, so it is found whatever the server does to the RTP header (SSRC, sequence and
//! timestamp rewriting, header extensions) and whatever codec prefix the payload starts with.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::jsep::MediaKind;

/// Bytes a probe takes at the end of a payload.
pub const PROBE_LEN: usize = 24;
const PROBE_MAGIC: u32 = 0x5741_4970;

/// What a packet says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The stream it belongs to (unique in the run).
    pub stream: u32,
    /// Its index in the stream, from 0.
    pub index: u64,
    /// When it was sent, on [`clock_ns`].
    pub sent_ns: u64,
}

impl Probe {
    /// Write the probe into the last [`PROBE_LEN`] bytes of `payload` (which must be at least
    /// that long).
    pub fn write(&self, payload: &mut [u8]) {
        let at = payload.len() - PROBE_LEN;
        let tail = &mut payload[at..];
        tail[..4].copy_from_slice(&PROBE_MAGIC.to_be_bytes());
        tail[4..8].copy_from_slice(&self.stream.to_be_bytes());
        tail[8..16].copy_from_slice(&self.index.to_be_bytes());
        tail[16..24].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    /// The probe at the end of a decrypted RTP packet's payload (after any padding), if there
    /// is one.
    pub fn read(rtp: &[u8]) -> Option<Probe> {
        let first = *rtp.first()?;
        let padding = if first & 0x20 != 0 {
            usize::from(*rtp.last()?)
        } else {
            0
        };
        let end = rtp.len().checked_sub(padding)?;
        let tail = rtp.get(end.checked_sub(PROBE_LEN)?.max(12)..end)?;
        if tail.len() != PROBE_LEN || tail[..4] != PROBE_MAGIC.to_be_bytes() {
            return None;
        }
        // Lengths are fixed by the slice above.
        let u32_at = |i: usize| u32::from_be_bytes(tail[i..i + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |i: usize| u64::from_be_bytes(tail[i..i + 8].try_into().unwrap_or([0; 8]));
        Some(Probe {
            stream: u32_at(4),
            index: u64_at(8),
            sent_ns: u64_at(16),
        })
    }
}

/// The process's clock origin: a monotonic instant and the wall-clock time read with it.
fn epoch() -> &'static (Instant, std::time::SystemTime) {
    static EPOCH: OnceLock<(Instant, std::time::SystemTime)> = OnceLock::new();
    EPOCH.get_or_init(|| (Instant::now(), std::time::SystemTime::now()))
}

/// Nanoseconds since the first call in this process, on the monotonic clock. Senders and
/// receivers share it, so a difference is a one-way latency.
pub fn clock_ns() -> u64 {
    epoch().0.elapsed().as_nanos() as u64
}

/// A kernel receive timestamp (wall clock) on the [`clock_ns`] scale; None before the epoch.
/// Assumes the wall clock is not stepped during a run (it is not slewed by much in seconds).
pub fn wall_to_clock_ns(t: std::time::SystemTime) -> Option<u64> {
    t.duration_since(epoch().1)
        .ok()
        .map(|d| d.as_nanos() as u64)
}

/// The shape of the media each publisher sends.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct MediaProfile {
    /// Average video bit rate (payload), bits per second.
    pub video_bitrate: u64,
    /// Video frames per second.
    pub fps: u32,
    /// Video RTP payload bytes per full packet.
    pub packet_size: usize,
    /// A keyframe every this many seconds.
    pub keyframe_interval_s: f64,
    /// A keyframe is this many times a delta frame.
    pub keyframe_factor: u32,
    /// Whether an audio stream goes with the video.
    pub audio: bool,
    /// Audio payload bytes per 20 ms packet.
    pub audio_packet_size: usize,
    /// Pace video at this multiple of its bit rate, as a browser's pacer does (Chrome's
    /// factor is 2.5); 0 sends each frame as one burst.
    pub pacing: f64,
}

impl Default for MediaProfile {
    fn default() -> Self {
        MediaProfile {
            video_bitrate: 1_500_000,
            fps: 30,
            packet_size: 1200,
            keyframe_interval_s: 2.0,
            keyframe_factor: 8,
            audio: true,
            audio_packet_size: 120,
            pacing: 0.0,
        }
    }
}

impl MediaProfile {
    /// Bytes of a delta frame and of a keyframe, so that the average over a keyframe interval
    /// is the configured bit rate.
    pub fn frame_bytes(&self) -> (usize, usize) {
        let frames = (self.keyframe_interval_s * f64::from(self.fps)).max(1.0);
        let interval_bytes = self.video_bitrate as f64 / 8.0 * self.keyframe_interval_s;
        let delta = interval_bytes / (frames - 1.0 + f64::from(self.keyframe_factor));
        let delta = (delta as usize).max(PROBE_LEN + 11);
        (delta, delta * self.keyframe_factor as usize)
    }

    /// Average packets per second of one video stream.
    pub fn video_packet_rate(&self) -> f64 {
        let (delta, key) = self.frame_bytes();
        let per = |b: usize| b.div_ceil(self.packet_size) as f64;
        let frames = (self.keyframe_interval_s * f64::from(self.fps)).max(1.0);
        (per(delta) * (frames - 1.0) + per(key)) / self.keyframe_interval_s
    }
}

/// One outgoing stream: RTP headers, frame schedule and probes.
#[derive(Debug)]
pub struct StreamSource {
    /// Stream id written into probes.
    pub stream: u32,
    /// Audio or video.
    pub kind: MediaKind,
    /// SSRC.
    pub ssrc: u32,
    /// Whether every receiver is offered its packets (a simulcast layer below the top one is
    /// not: each receiver gets one layer), for the loss figure.
    pub offered: bool,
    profile: MediaProfile,
    payload_type: u8,
    seq: u16,
    ts: u32,
    index: u64,
    frame: u64,
    next_due: Instant,
    /// Paced packets not yet sent, and when the first of them is due.
    paced: std::collections::VecDeque<Vec<u8>>,
    paced_due: Instant,
}

impl StreamSource {
    /// A stream of `kind` whose first frame is due at `start`.
    pub fn new(stream: u32, kind: MediaKind, profile: MediaProfile, start: Instant) -> Self {
        StreamSource {
            stream,
            kind,
            ssrc: rand::random::<u32>() | 1,
            offered: true,
            profile,
            payload_type: match kind {
                MediaKind::Audio => 111,
                MediaKind::Video => 96,
            },
            seq: rand::random(),
            ts: rand::random(),
            index: 0,
            frame: 0,
            next_due: start,
            paced: std::collections::VecDeque::new(),
            paced_due: start,
        }
    }

    /// Restart the schedule: the next frame is due at `start`.
    pub fn schedule_from(&mut self, start: Instant) {
        self.next_due = start;
    }

    /// Frames between keyframes.
    fn keyframe_period(&self) -> u64 {
        (self.profile.keyframe_interval_s * f64::from(self.profile.fps)).max(1.0) as u64
    }

    /// Place this stream's keyframes `fraction` (0..1) of a keyframe interval later than a
    /// stream that starts with one. Independent publishers do not make keyframes in step; a
    /// run whose publishers all did would measure a burst of every keyframe at once.
    pub fn shift_keyframes(&mut self, fraction: f64) {
        let period = self.keyframe_period();
        let shift = (fraction.clamp(0.0, 1.0) * period as f64) as u64 % period;
        // The next frame is a keyframe when the counter is a multiple of the period.
        self.frame = (period - shift) % period;
    }

    /// When the next frame, or the next paced packet, is due.
    pub fn due(&self) -> Instant {
        if self.paced.is_empty() {
            self.next_due
        } else {
            self.next_due.min(self.paced_due)
        }
    }

    /// The packets due at `now`: a new frame whole (unpaced), or the paced packets whose turn
    /// has come, their probes stamped as they leave.
    pub fn take_due(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let pace = self.profile.pacing * self.profile.video_bitrate as f64 / 8.0;
        if self.kind == MediaKind::Audio || pace <= 0.0 {
            return if self.next_due <= now {
                self.next_frame()
            } else {
                Vec::new()
            };
        }
        if self.next_due <= now {
            let frame_at = self.next_due;
            if self.paced.is_empty() {
                self.paced_due = frame_at;
            }
            let frame = self.next_frame();
            self.paced.extend(frame);
        }
        let mut out = Vec::new();
        while self.paced_due <= now {
            let Some(mut packet) = self.paced.pop_front() else {
                break;
            };
            if let Some(mut probe) = Probe::read(&packet) {
                probe.sent_ns = clock_ns();
                probe.write(&mut packet[12..]);
            }
            self.paced_due += Duration::from_secs_f64(packet.len() as f64 / pace);
            out.push(packet);
        }
        out
    }

    fn frame_interval(&self) -> Duration {
        match self.kind {
            MediaKind::Audio => Duration::from_millis(20),
            MediaKind::Video => Duration::from_secs_f64(1.0 / f64::from(self.profile.fps)),
        }
    }

    /// The packets of the next frame (marshalled RTP, probes stamped now), and advance the
    /// schedule by one frame.
    pub fn next_frame(&mut self) -> Vec<Vec<u8>> {
        let (sizes, keyframe) = match self.kind {
            MediaKind::Audio => (vec![self.profile.audio_packet_size.max(PROBE_LEN)], false),
            MediaKind::Video => {
                let keyframe = self.frame.is_multiple_of(self.keyframe_period());
                let (delta, key) = self.profile.frame_bytes();
                let mut left = if keyframe { key } else { delta };
                let mut sizes = Vec::new();
                while left > 0 {
                    let n = left.min(self.profile.packet_size);
                    sizes.push(n.max(PROBE_LEN + 11));
                    left -= n;
                }
                (sizes, keyframe)
            }
        };
        let count = sizes.len();
        let mut packets = Vec::with_capacity(count);
        for (i, size) in sizes.into_iter().enumerate() {
            let mut p = vec![0u8; 12 + size];
            p[0] = 0x80;
            p[1] = self.payload_type | if i + 1 == count { 0x80 } else { 0 };
            p[2..4].copy_from_slice(&self.seq.to_be_bytes());
            p[4..8].copy_from_slice(&self.ts.to_be_bytes());
            p[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
            if self.kind == MediaKind::Video {
                vp8_prefix(&mut p[12..], i == 0, keyframe);
            }
            Probe {
                stream: self.stream,
                index: self.index,
                sent_ns: clock_ns(),
            }
            .write(&mut p[12..]);
            packets.push(p);
            self.seq = self.seq.wrapping_add(1);
            self.index += 1;
        }
        self.ts = self.ts.wrapping_add(match self.kind {
            MediaKind::Audio => 960,
            MediaKind::Video => 90_000 / self.profile.fps,
        });
        self.frame += 1;
        self.next_due += self.frame_interval();
        packets
    }
}

/// A VP8 payload descriptor (RFC 7741: S bit on a frame's first packet, partition 0) and, on
/// a frame's first packet, a frame header whose P bit and start code tell keyframes apart, so
/// a server that looks for keyframes finds them.
fn vp8_prefix(payload: &mut [u8], first: bool, keyframe: bool) {
    if !first {
        return;
    }
    payload[0] = 0x10;
    // Frame tag: P bit (bit 0) clear on keyframes, show_frame (bit 4) set.
    payload[1] = if keyframe { 0x10 } else { 0x11 };
    if keyframe {
        // Start code, then 1280x720.
        payload[4..11].copy_from_slice(&[0x9d, 0x01, 0x2a, 0x00, 0x05, 0xd0, 0x02]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_read_back_from_the_payload_tail() {
        let mut s = StreamSource::new(7, MediaKind::Video, MediaProfile::default(), Instant::now());
        let frame = s.next_frame();
        let (_, key) = MediaProfile::default().frame_bytes();
        assert_eq!(frame.len(), key.div_ceil(1200));
        for (i, p) in frame.iter().enumerate() {
            let probe = Probe::read(p).unwrap();
            assert_eq!(probe.stream, 7);
            assert_eq!(probe.index, i as u64);
        }
        // The keyframe's first packet carries a VP8 keyframe header, the marker is on the last.
        assert_eq!(&frame[0][12..14], &[0x10, 0x10]);
        assert_eq!(frame.last().unwrap()[1] & 0x80, 0x80);
        assert_eq!(frame[0][1] & 0x80, 0);
    }

    #[test]
    fn padding_and_garbage_are_handled() {
        let mut p = vec![0u8; 12 + 40];
        p[0] = 0x80;
        let probe = Probe {
            stream: 1,
            index: 2,
            sent_ns: 3,
        };
        probe.write(&mut p[12..]);
        // Add 4 bytes of padding.
        p[0] |= 0x20;
        p.extend_from_slice(&[0, 0, 0, 4]);
        assert_eq!(Probe::read(&p), Some(probe));
        assert_eq!(Probe::read(&[0x80; 20]), None);
        assert_eq!(Probe::read(&[0xa0, 0, 0, 255]), None);
        assert_eq!(Probe::read(&[]), None);
    }

    #[test]
    fn video_averages_the_configured_rate() {
        let profile = MediaProfile::default();
        let mut s = StreamSource::new(1, MediaKind::Video, profile, Instant::now());
        let bytes: usize = (0..60)
            .flat_map(|_| s.next_frame())
            .map(|p| p.len() - 12)
            .sum();
        let bits_per_s = bytes as f64 * 8.0 / profile.keyframe_interval_s;
        assert!((bits_per_s / 1.5e6 - 1.0).abs() < 0.05, "{bits_per_s}");
        let rate = profile.video_packet_rate();
        assert!(rate > 150.0 && rate < 200.0, "{rate}");
    }

    #[test]
    fn the_clock_moves_forward() {
        let a = clock_ns();
        std::thread::sleep(Duration::from_millis(2));
        assert!(clock_ns() >= a + 2_000_000);
    }

    #[test]
    fn shifted_keyframes_fall_where_asked() {
        let profile = MediaProfile::default();
        let key_packets = profile.frame_bytes().1.div_ceil(profile.packet_size);
        // Frames (of the first 120, 60 per keyframe interval) that are keyframes.
        let keyframes = |fraction: f64| -> Vec<usize> {
            let mut s = StreamSource::new(1, MediaKind::Video, profile, Instant::now());
            s.shift_keyframes(fraction);
            (0..120)
                .filter(|_| s.next_frame().len() == key_packets)
                .collect()
        };
        assert_eq!(keyframes(0.0), [0, 60]);
        assert_eq!(keyframes(0.25), [15, 75]);
        assert_eq!(keyframes(0.5), [30, 90]);
        assert_eq!(keyframes(0.99), [59, 119]);
        assert_eq!(keyframes(1.0), [0, 60]);
    }

    #[test]
    fn pacing_spreads_a_keyframe_at_the_pacing_rate() {
        let profile = MediaProfile {
            pacing: 2.5,
            ..MediaProfile::default()
        };
        let t0 = Instant::now();
        let mut s = StreamSource::new(1, MediaKind::Video, profile, t0);
        // The first frame is a keyframe (~40 packets); only the first leaves at once.
        let first = s.take_due(t0);
        assert_eq!(first.len(), 1);
        let (_, key) = profile.frame_bytes();
        let rate = 2.5 * 1_500_000.0 / 8.0;
        let mut sent = first.len();
        let mut t = t0;
        while sent < key.div_ceil(1200) {
            t += Duration::from_millis(1);
            let got = s.take_due(t);
            // At 468,750 bytes/s a 1212-byte packet leaves every ~2.6 ms.
            assert!(got.len() <= 1, "{} at once", got.len());
            sent += got.len();
        }
        let spread = (t - t0).as_secs_f64();
        let expected = (key + 12 * key.div_ceil(1200)) as f64 / rate;
        assert!(
            (spread - expected).abs() < 0.01 + expected * 0.05,
            "keyframe spread over {spread:.3} s, expected ~{expected:.3} s"
        );
    }
}
