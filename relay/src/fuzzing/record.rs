//! Fuzz targets of the recorder: the VP9 payload descriptor, AV1's payload and sequence
//! header, and a recorded feed's packets made into frames on one timeline.

use std::time::{Duration, Instant};

use crate::engine::vp9;
use crate::record::frames::Codec;
use crate::record::recording::{FeedRecording, RecordPacket};
use crate::record::timeline::{SenderReport, Track};

/// The VP9 payload descriptor and a keyframe's header: what parses leaves a payload after it,
/// and a keyframe's size is never zero.
pub fn vp9(data: &[u8]) {
    if let Some(d) = vp9::parse(data) {
        assert!(d.len < data.len());
        assert!(d.size.is_none_or(|(w, h)| w > 0 && h > 0));
    }
    if let Some((w, h)) = vp9::keyframe_size(data) {
        assert!(w > 0 && h > 0);
    }
}

/// AV1 payloads: the input split into packets by its first byte's bits, made into a temporal
/// unit; what comes out reads back as OBUs, and a sequence header in it reads without a panic.
pub fn av1(data: &[u8]) {
    let Some((&cuts, rest)) = data.split_first() else {
        return;
    };
    let mut payloads = Vec::new();
    let mut start = 0;
    for i in 0..8 {
        let end = if cuts & (1 << i) != 0 {
            (rest.len() * (i + 1) / 8).max(start)
        } else {
            continue;
        };
        payloads.push(&rest[start..end]);
        start = end;
    }
    payloads.push(&rest[start..]);
    if let Some(unit) = crate::engine::av1::temporal_unit(&payloads) {
        if let Some(s) = crate::engine::av1::find_sequence_header(&unit) {
            assert!(s.size.0 > 0 && s.size.1 > 0);
            assert_eq!(&s.av1c()[4..], &s.obu[..]);
        }
    }
    let _ = crate::engine::av1::find_sequence_header(rest);
}

/// A recorded feed: a sequence of packets, each
/// `[flags][codec][seq: 2][ts: 4][len][payload…]`. Codec (video): 0 VP8, 1 VP9, 2 AV1 (modulo
/// 3). Flags: bit 0 audio (else video), bit 1 unused, bit 2 marker, bit 3 with a sender report (its NTP time from the timestamp), bit 4
/// simulcast layer 1 (else 0), bits 5–6 time passes first (0, 20 ms, 200 ms, 1 s), bit 7 a
/// packet number skipped (what the queue dropped). Whatever comes, each stream's frames come
/// out in time order, the video from a keyframe.
pub fn record(data: &[u8]) {
    let t0 = Instant::now();
    let mut now = t0;
    let mut r = FeedRecording::new(t0, true, true);
    let mut handed = [0u64; 2];
    let mut last = [None::<u64>; 2];
    let mut video_started = false;
    let mut check = |f: crate::record::timeline::TimedFrame| {
        let i = f.track as usize;
        assert!(
            last[i].is_none_or(|l| f.ns >= l),
            "a stream's times go back"
        );
        last[i] = Some(f.ns);
        if f.track == Track::Video && !video_started {
            assert!(f.frame.keyframe, "the video starts at a keyframe");
            video_started = true;
        }
    };
    let mut rest = data;
    while rest.len() >= 9 {
        let (flags, codec) = (rest[0], rest[1]);
        let seq = u16::from_be_bytes([rest[2], rest[3]]);
        let ts = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let len = usize::from(rest[8]).min(rest.len() - 9);
        let payload = rest[9..9 + len].to_vec();
        rest = &rest[9 + len..];
        now += [0, 20, 200, 1000].map(Duration::from_millis)[usize::from(flags >> 5 & 3)];
        let track = if flags & 1 != 0 {
            Track::Audio
        } else {
            Track::Video
        };
        let i = track as usize;
        handed[i] += 1 + u64::from(flags >> 7);
        let codec = match (track, codec % 3) {
            (Track::Audio, _) => Codec::Opus,
            (Track::Video, 0) => Codec::Vp8,
            (Track::Video, 1) => Codec::Vp9,
            (Track::Video, _) => Codec::Av1,
        };
        r.handle_packet(RecordPacket {
            recording: 1,
            track,
            handed: handed[i],
            arrived: now,
            layer: flags >> 4 & 1,
            codec,
            sequence: seq,
            timestamp: ts,
            marker: flags & 4 != 0,
            clock_rate: if track == Track::Audio {
                48_000
            } else {
                90_000
            },
            report: (flags & 8 != 0).then_some(SenderReport {
                ntp: (u64::from(ts) << 24) | 0xe000_0000_0000_0000,
                rtp: ts,
            }),
            payload,
        });
        while let Some(f) = r.poll_frame(now) {
            check(f);
        }
        let _ = r.poll_keyframe_request();
        let _ = r.poll_timeout();
    }
    for f in r.finish(now + Duration::from_secs(5)) {
        check(f);
    }
}
