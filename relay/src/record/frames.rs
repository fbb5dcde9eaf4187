//! Whole frames from one stream's RTP packets, for a recorder: packets put back in order,
//! payload headers taken off, each frame given out once it is complete.
//!
//! A file cannot hold a frame with a hole in it, and a decoder cannot use the frames after a
//! lost one until the next keyframe. So a frame whose packets do not all come within
//! [`MAX_WAIT`] (repairs included) is given up, and with it every frame until the next
//! keyframe, which is asked for ([`FrameAssembler::poll_keyframe_request`]). Audio frames are
//! one packet each and stand alone: a lost one is a short silence. Of a VP9 picture's spatial
//! layers (SVC), only the top one and those it depends on are kept: each layer frame is shown,
//! and a player would show all of them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::engine::{av1, vp8, vp9};

/// How long a frame with a missing packet is waited for: the packets a relay asks again for
/// (NACK) come within a few round trips.
pub const MAX_WAIT: Duration = Duration::from_millis(500);

/// Packets held at most while waiting: a second of 720p video at its keyframe's size.
const MAX_HELD: usize = 2048;

/// What the payloads carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// VP8 (RFC 7741): frames over several packets, the last one marked.
    Vp8,
    /// VP9 (RFC 9628): a picture's layer frames over several packets, the last one marked.
    Vp9,
    /// AV1 (the AV1 RTP specification): a temporal unit's OBUs over several packets, the last
    /// one marked.
    Av1,
    /// Opus (RFC 7587): one frame a packet, every one a keyframe.
    Opus,
}

/// A complete frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its RTP timestamp.
    pub timestamp: u32,
    /// A decoder can start here.
    pub keyframe: bool,
    /// The codec's bytes, payload headers removed.
    pub data: Vec<u8>,
    /// A keyframe's picture size, where the codec gives it (the largest layer's for SVC).
    pub size: Option<(u16, u16)>,
    /// A keyframe's codec configuration for the file's track, where the codec has one (AV1's
    /// `av1C`, with its sequence header).
    pub config: Option<Vec<u8>>,
    /// Where the second and later frames of `data` begin, when it holds several that are each
    /// shown (a VP9 picture's top spatial layer and the lower ones it depends on, lowest
    /// first): each goes into the file as a block of its own.
    pub splits: Vec<usize>,
}

#[derive(Debug)]
struct Held {
    arrived: Instant,
    timestamp: u32,
    marker: bool,
    payload: Vec<u8>,
}

/// One stream's packets on their way to being frames.
#[derive(Debug)]
pub struct FrameAssembler {
    codec: Codec,
    /// By extended sequence number.
    held: BTreeMap<u64, Held>,
    /// The extended sequence number the next frame starts at, once known.
    next: Option<u64>,
    /// The highest extended sequence number seen (for extending the next one).
    highest: Option<u64>,
    /// Frames are given out again only from a keyframe.
    need_keyframe: bool,
    /// A keyframe request waits to be polled.
    keyframe_request: bool,
    /// Frames given up for a missing packet, and the frames dropped until a keyframe.
    pub frames_lost: u64,
}

impl FrameAssembler {
    /// An assembler for `codec` that starts at the first keyframe.
    pub fn new(codec: Codec) -> Self {
        FrameAssembler {
            codec,
            held: BTreeMap::new(),
            next: None,
            highest: None,
            need_keyframe: true,
            keyframe_request: false,
            frames_lost: 0,
        }
    }

    /// The codec it reads.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// An RTP packet of the stream (a repair as the packet it repairs).
    pub fn handle_packet(
        &mut self,
        now: Instant,
        sequence: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) {
        let seq = self.extend(sequence);
        if self.next.is_some_and(|next| seq < next) || self.held.contains_key(&seq) {
            // Late, or a duplicate: its frame is written or given up already.
            return;
        }
        if self.held.len() >= MAX_HELD {
            // Far more than any frame: what is held is lost.
            self.give_up();
        }
        self.held.insert(
            seq,
            Held {
                arrived: now,
                timestamp,
                marker,
                payload: payload.to_vec(),
            },
        );
    }

    /// The next complete frame, if one is.
    pub fn poll_frame(&mut self, now: Instant) -> Option<Frame> {
        loop {
            if self.next.is_none() {
                self.next = Some(self.find_start()?);
            }
            let start = self.next?;
            match self.complete_from(start) {
                Some((end, frame)) => {
                    self.held.retain(|&s, _| s > end);
                    self.next = Some(end + 1);
                    if self.need_keyframe && !frame.keyframe {
                        // The keyframe asked for was lost, or never sent: ask again (the
                        // recorder paces its requests).
                        self.frames_lost += 1;
                        self.keyframe_request = true;
                        continue;
                    }
                    self.need_keyframe = false;
                    return Some(frame);
                }
                None => {
                    // Incomplete: wait for its missing packets, up to MAX_WAIT after the
                    // oldest packet after the gap came.
                    let oldest = self.held.values().map(|h| h.arrived).min()?;
                    if now < oldest + MAX_WAIT {
                        return None;
                    }
                    self.give_up();
                }
            }
        }
    }

    /// Whether a keyframe is needed (once per loss): frames wait for one.
    pub fn poll_keyframe_request(&mut self) -> bool {
        std::mem::take(&mut self.keyframe_request)
    }

    /// When [`FrameAssembler::poll_frame`] may give up on a frame, if one waits.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.held.values().map(|h| h.arrived + MAX_WAIT).min()
    }

    fn extend(&mut self, sequence: u16) -> u64 {
        let Some(highest) = self.highest else {
            // Far from zero, so that a packet a little older than the first still fits.
            let seq = (1 << 32) + u64::from(sequence);
            self.highest = Some(seq);
            return seq;
        };
        let base = highest & !0xffff;
        let candidates = [base.wrapping_sub(1 << 16), base, base + (1 << 16)];
        let seq = candidates
            .into_iter()
            .map(|b| b + u64::from(sequence))
            .min_by_key(|s| s.abs_diff(highest))
            .expect("three candidates");
        self.highest = Some(highest.max(seq));
        seq
    }

    /// The first held packet that starts a frame (after a gap, a frame's first packet is
    /// known only from the payload).
    fn find_start(&self) -> Option<u64> {
        self.held
            .iter()
            .find(|(_, h)| match self.codec {
                Codec::Opus => true,
                codec => starts_frame(codec, &h.payload),
            })
            .map(|(&s, _)| s)
    }

    /// The frame starting at `start`, if all its packets are here: its last sequence number
    /// and the frame.
    fn complete_from(&self, start: u64) -> Option<(u64, Frame)> {
        let first = self.held.get(&start)?;
        let mut data = Vec::new();
        let mut keyframe = false;
        let mut size = None;
        // Where each VP9 layer frame (or AV1 packet) begins in `data`.
        let mut layer_starts = Vec::new();
        // Each VP9 layer frame's spatial layer and whether it depends on the one below.
        let mut vp9_layers: Vec<(u8, bool)> = Vec::new();
        let mut splits = Vec::new();
        let mut seq = start;
        loop {
            let h = self.held.get(&seq)?;
            if h.timestamp != first.timestamp {
                // The next frame began without this one's end: it lost its last packet.
                return None;
            }
            match self.codec {
                Codec::Opus => {
                    data.extend_from_slice(&h.payload);
                    return Some((
                        seq,
                        Frame {
                            timestamp: h.timestamp,
                            keyframe: true,
                            data,
                            size: None,
                            config: None,
                            splits: Vec::new(),
                        },
                    ));
                }
                Codec::Vp8 => {
                    let d = vp8::parse(&h.payload)?;
                    if seq == start {
                        keyframe = d.keyframe;
                        size = vp8::keyframe_size(&h.payload, &d);
                    }
                    data.extend_from_slice(&h.payload[d.len..]);
                }
                Codec::Av1 => {
                    let a = av1::aggregation(&h.payload)?;
                    if seq == start {
                        keyframe = a.new_sequence && !a.continues;
                    }
                    // Split where each packet ends; joined at the frame's end.
                    layer_starts.push(data.len());
                    data.extend_from_slice(&h.payload);
                }
                Codec::Vp9 => {
                    let d = vp9::parse(&h.payload)?;
                    if seq == start {
                        keyframe = d.starts_keyframe();
                    }
                    if d.begins_frame {
                        layer_starts.push(data.len());
                        vp9_layers.push((d.spatial_id, d.inter_layer));
                    }
                    size = d.size.or(size);
                    data.extend_from_slice(&h.payload[d.len..]);
                }
            }
            if h.marker {
                let mut config = None;
                if self.codec == Codec::Av1 {
                    layer_starts.push(data.len());
                    let payloads: Vec<&[u8]> =
                        layer_starts.windows(2).map(|w| &data[w[0]..w[1]]).collect();
                    // A temporal unit whose fragments do not fit is as good as incomplete.
                    data = av1::temporal_unit(&payloads)?;
                    if keyframe {
                        if let Some(s) = av1::find_sequence_header(&data) {
                            size = Some(s.size);
                            config = Some(s.av1c());
                        }
                    }
                }
                if self.codec == Codec::Vp9 {
                    if keyframe && size.is_none() {
                        size = vp9::keyframe_size(&data);
                    }
                    (data, splits) = top_layer(&data, &layer_starts, &vp9_layers)?;
                }
                return Some((
                    seq,
                    Frame {
                        timestamp: first.timestamp,
                        keyframe,
                        data,
                        size: size.filter(|_| keyframe),
                        config,
                        splits,
                    },
                ));
            }
            seq += 1;
        }
    }

    /// The frame at the start is lost: drop its packets, start again at the next frame that
    /// can be found, and from a keyframe only.
    fn give_up(&mut self) {
        let start = self.next.or_else(|| self.held.keys().next().copied());
        let Some(start) = start else {
            return;
        };
        // Everything up to the next frame start after the gap goes.
        let skip_to = self
            .held
            .range(start + 1..)
            .find(|(_, h)| match self.codec {
                Codec::Opus => true,
                codec => starts_frame(codec, &h.payload),
            })
            .map(|(&s, _)| s);
        match skip_to {
            Some(s) => {
                self.held.retain(|&k, _| k >= s);
                self.next = Some(s);
            }
            None => {
                self.held.clear();
                self.next = None;
            }
        }
        self.frames_lost += 1;
        if self.codec != Codec::Opus {
            self.need_keyframe = true;
            self.keyframe_request = true;
        }
    }
}

/// Of a VP9 picture's layer frames (`starts` where each begins in `data`, `layers` each one's
/// spatial layer and whether it depends on the one below), the top one and those it depends
/// on, lowest first, with where the second and later begin. None when one it depends on is
/// missing.
fn top_layer(
    data: &[u8],
    starts: &[usize],
    layers: &[(u8, bool)],
) -> Option<(Vec<u8>, Vec<usize>)> {
    let frame = |i: usize| &data[starts[i]..starts.get(i + 1).copied().unwrap_or(data.len())];
    let top = (0..layers.len()).max_by_key(|&i| layers[i].0)?;
    let mut chosen = vec![top];
    while let Some(&last) = chosen.last() {
        let (spatial, depends) = layers[last];
        if !depends || spatial == 0 {
            break;
        }
        let below = (0..layers.len()).find(|&i| layers[i].0 == spatial - 1)?;
        chosen.push(below);
    }
    chosen.reverse();
    let mut out = Vec::new();
    let mut splits = Vec::new();
    for (n, &i) in chosen.iter().enumerate() {
        if n > 0 {
            splits.push(out.len());
        }
        out.extend_from_slice(frame(i));
    }
    Some((out, splits))
}

/// Whether a video payload starts a frame (VP9: a picture).
fn starts_frame(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Opus => true,
        Codec::Vp8 => vp8::parse(payload).is_some_and(|d| d.starts_frame()),
        Codec::Vp9 => vp9::parse(payload).is_some_and(|d| d.starts_picture()),
        // An OBU that does not continue the last packet's; a keyframe's first is marked N.
        Codec::Av1 => av1::aggregation(payload).is_some_and(|a| !a.continues),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 packet: descriptor with S set on a frame's first packet, then `body`; a keyframe's
    /// first body byte has P = 0.
    fn vp8(first: bool, keyframe: bool, fill: u8, len: usize) -> Vec<u8> {
        let mut p = vec![if first { 0x10 } else { 0x00 }];
        let mut body = vec![fill; len];
        if first {
            body[0] = if keyframe { 0x10 } else { 0x11 };
        }
        p.extend_from_slice(&body);
        p
    }

    /// Frame `n` as three packets (seq 3n..3n+3, timestamp 3000n), the first of frame 0 a
    /// keyframe.
    fn frame_packets(n: u16) -> Vec<(u16, u32, bool, Vec<u8>)> {
        (0..3)
            .map(|i| {
                let seq = n.wrapping_mul(3).wrapping_add(i);
                (
                    seq,
                    3000 * u32::from(n),
                    i == 2,
                    vp8(i == 0, n.is_multiple_of(10), n as u8, 100),
                )
            })
            .collect()
    }

    fn feed(a: &mut FrameAssembler, now: Instant, packets: &[(u16, u32, bool, Vec<u8>)]) {
        for (seq, ts, m, p) in packets {
            a.handle_packet(now, *seq, *ts, *m, p);
        }
    }

    fn drain(a: &mut FrameAssembler, now: Instant) -> Vec<Frame> {
        std::iter::from_fn(|| a.poll_frame(now)).collect()
    }

    #[test]
    fn frames_in_order_whatever_order_their_packets_came_in() {
        let t0 = Instant::now();
        let mut a = FrameAssembler::new(Codec::Vp8);
        let mut packets: Vec<_> = (0..5).flat_map(frame_packets).collect();
        packets.swap(1, 4);
        packets.swap(7, 12);
        feed(&mut a, t0, &packets);
        let frames = drain(&mut a, t0);
        assert_eq!(frames.len(), 5);
        for (n, f) in frames.iter().enumerate() {
            assert_eq!(f.timestamp, 3000 * n as u32);
            assert_eq!(f.keyframe, n == 0);
            // Descriptors gone: three bodies of 100 bytes.
            assert_eq!(f.data.len(), 300);
            assert!(f.data[1..].iter().all(|&b| b == n as u8));
        }
        // A duplicate of a written packet changes nothing.
        feed(&mut a, t0, &frame_packets(1));
        assert!(drain(&mut a, t0).is_empty());
        assert!(!a.poll_keyframe_request());
    }

    #[test]
    fn a_frame_that_stays_incomplete_is_given_up_with_everything_until_a_keyframe() {
        let t0 = Instant::now();
        let mut a = FrameAssembler::new(Codec::Vp8);
        // Frames 0-14; frame 3 loses its middle packet for good. Frame 10 is a keyframe.
        let packets: Vec<_> = (0..15)
            .flat_map(frame_packets)
            .filter(|(seq, ..)| *seq != 10)
            .collect();
        feed(&mut a, t0, &packets);
        let before = drain(&mut a, t0);
        assert_eq!(before.len(), 3, "frames 0-2, then frame 3 waits");
        assert_eq!(a.poll_timeout(), Some(t0 + MAX_WAIT));
        // A repair within the wait would have filled it; none comes.
        let later = t0 + MAX_WAIT;
        let after = drain(&mut a, later);
        assert!(a.poll_keyframe_request(), "a keyframe is asked for");
        let stamps: Vec<u32> = after.iter().map(|f| f.timestamp / 3000).collect();
        assert_eq!(stamps, [10, 11, 12, 13, 14], "from the keyframe on");
        assert!(after[0].keyframe);
        assert_eq!(
            a.frames_lost,
            1 + 6,
            "frame 3, then 4-9 waiting for the keyframe"
        );
    }

    #[test]
    fn a_repair_within_the_wait_completes_the_frame() {
        let t0 = Instant::now();
        let mut a = FrameAssembler::new(Codec::Vp8);
        let packets: Vec<_> = (0..4).flat_map(frame_packets).collect();
        let (lost, rest): (Vec<_>, Vec<_>) = packets.into_iter().partition(|(seq, ..)| *seq == 4);
        feed(&mut a, t0, &rest);
        assert_eq!(drain(&mut a, t0).len(), 1);
        feed(&mut a, t0 + Duration::from_millis(200), &lost);
        assert_eq!(drain(&mut a, t0 + Duration::from_millis(200)).len(), 3);
        assert_eq!(a.frames_lost, 0);
    }

    #[test]
    fn sequence_numbers_wrap_and_the_first_frame_written_is_a_keyframe() {
        let t0 = Instant::now();
        let mut a = FrameAssembler::new(Codec::Vp8);
        // Starting mid-stream: a delta frame before the keyframe is not written.
        let start = 21_842u16; // 3 * 21842 = 65526: frames cross the wrap
        let mut packets = Vec::new();
        for n in 0..6u16 {
            for (i, (_, _, m, mut p)) in frame_packets(n).into_iter().enumerate() {
                if i == 0 && n == 0 {
                    p = vp8(true, false, 0, 100);
                }
                if i == 0 && n == 1 {
                    p = vp8(true, true, 1, 100);
                }
                let seq = (start.wrapping_mul(3)).wrapping_add(n * 3 + i as u16);
                packets.push((seq, 3000 * u32::from(n), m, p));
            }
        }
        feed(&mut a, t0, &packets);
        let frames = drain(&mut a, t0);
        let stamps: Vec<u32> = frames.iter().map(|f| f.timestamp / 3000).collect();
        assert_eq!(stamps, [1, 2, 3, 4, 5]);
        assert!(frames[0].keyframe);
    }

    #[test]
    fn opus_packets_are_frames_and_a_lost_one_is_only_a_gap() {
        let t0 = Instant::now();
        let mut a = FrameAssembler::new(Codec::Opus);
        for seq in [0u16, 1, 3, 4] {
            a.handle_packet(t0, seq, u32::from(seq) * 960, false, &[seq as u8; 40]);
        }
        let first = drain(&mut a, t0);
        assert_eq!(first.len(), 2);
        let rest = drain(&mut a, t0 + MAX_WAIT);
        let stamps: Vec<u32> = rest.iter().map(|f| f.timestamp).collect();
        assert_eq!(stamps, [3 * 960, 4 * 960]);
        assert!(!a.poll_keyframe_request());
        assert_eq!(a.frames_lost, 1);
    }
    /// A VP9 packet of one whole layer frame: I, P (inter), L, B, E; not flexible; `sid` and
    /// D in the layer index, then TL0PICIDX; the body `fill` repeated.
    fn vp9(sid: u8, inter: bool, depends: bool, fill: u8) -> Vec<u8> {
        let first = 0b1010_1100 | if inter { 0x40 } else { 0 };
        let mut p = vec![first, 0x05, sid << 1 | u8::from(depends), 0];
        p.extend_from_slice(&[fill; 20]);
        p
    }

    #[test]
    fn a_vp9_picture_keeps_its_top_layer_and_those_it_depends_on() {
        let t0 = Instant::now();
        let mut a = FrameAssembler::new(Codec::Vp9);
        // A key picture: layer 0 (key), 1 and 2 each depending on the one below.
        a.handle_packet(t0, 1, 0, false, &vp9(0, false, false, 0));
        a.handle_packet(t0, 2, 0, false, &vp9(1, true, true, 1));
        a.handle_packet(t0, 3, 0, true, &vp9(2, true, true, 2));
        // Then a picture whose layers depend only on their own past (L3T3_KEY).
        a.handle_packet(t0, 4, 3000, false, &vp9(0, true, false, 3));
        a.handle_packet(t0, 5, 3000, false, &vp9(1, true, false, 4));
        a.handle_packet(t0, 6, 3000, true, &vp9(2, true, false, 5));
        let key = a.poll_frame(t0).expect("the key picture");
        assert!(key.keyframe);
        assert_eq!(key.splits, [20, 40], "three frames, lowest first");
        assert_eq!(&key.data[..1], &[0]);
        assert_eq!(&key.data[40..41], &[2]);
        let next = a.poll_frame(t0).expect("the next picture");
        assert!(!next.keyframe);
        assert!(next.splits.is_empty());
        assert_eq!(next.data, vec![5; 20], "its top layer alone");
    }
}
