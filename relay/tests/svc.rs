//! SVC through one relay core, in virtual time: a publisher sends one stream with two spatial
//! layers (k-SVC, as Chromium's L2T1_KEY) described by the AV1 dependency descriptor, and each
//! subscriber gets the frames of its decode target, the best its view allows, as one stream
//! without gaps; behind a narrow link, a subscriber of three temporal layers gets the ones
//! that fit.

use std::time::{Duration, Instant};

use relay::control::View;
use relay::engine::rtp;
use relay::fuzzing::{
    harness, Downlink, Harness, DEPENDENCY_DESCRIPTOR_EXTENSION, PUBLISHER_SSRC, TWCC_EXTENSION,
};
use relay::ids::{FeedId, Sid, Uid};
use relay::sfu::worker::Output;

/// The descriptor's extension id in the publisher's packets (the harness camera declares it).
const DD: u8 = DEPENDENCY_DESCRIPTOR_EXTENSION;

/// The structure, carried by the keyframe's first frame (frame 1): two decode targets (0: the
/// low spatial layer, 1: the high one) and four templates: the low layer's keyframe (a switch
/// point for both), its delta frames (needed by target 0 only, referring to the low frame
/// before), the high layer's frame on a keyframe (referring to the low one) and its deltas
/// (target 1 only, referring to the high frame before). Written bit by bit from §A.8.2.
const KEY: [u8; 11] = [
    0xc0, 0x00, 0x01, 0x80, 0x01, 0x23, 0xa8, 0x23, 0x45, 0x04, 0x40,
];

/// Packet `seq`: frame `frame` of picture `picture`, with template `template` (the key
/// frame's descriptor carries the structure). Its payload's first byte is the frame number.
fn packet(seq: u16, picture: u32, frame: u16, template: u8) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(picture * 3000).to_be_bytes());
    p.extend_from_slice(&PUBLISHER_SSRC.to_be_bytes());
    p.push(frame as u8);
    p.extend(std::iter::repeat_n(0x55, 100));
    let descriptor: Vec<u8> = if frame == 1 {
        KEY.to_vec()
    } else {
        let [hi, lo] = frame.to_be_bytes();
        vec![0xc0 | template, hi, lo]
    };
    let mut out = Vec::new();
    assert!(rtp::with_extensions(&p, &[(DD, &descriptor)], &mut out));
    out
}

fn send(h: &mut Harness, plain: &[u8]) {
    let mut sealed = plain.to_vec();
    h.clients[0].protect_rtp(&mut sealed).expect("protect");
    h.worker.handle_receive(h.now, None, h.publisher, &sealed);
}

/// (sequence number, frame, marker) of each RTP packet subscriber `i` received.
fn received(h: &mut Harness, out: &mut [Vec<(u16, u8, bool)>; 2]) {
    while let Some(o) = h.worker.poll_output() {
        let Output::Transmit(t) = o else { continue };
        let Some(i) = h.subscribers.iter().position(|s| *s == t.destination) else {
            continue;
        };
        if (192..=223).contains(&t.contents[1]) {
            continue;
        }
        let mut plain = Vec::new();
        h.clients[i + 1]
            .unprotect_rtp(&t.contents, &mut plain)
            .expect("authentic");
        let header = rtp::parse(&plain).expect("rtp");
        // The descriptor goes on to the subscriber as the publisher wrote it.
        assert!(rtp::extension(&plain, DD).is_some());
        out[i].push((header.sequence, plain[header.header_len], header.marker));
    }
}

#[test]
fn each_subscriber_gets_its_decode_targets_frames_without_gaps() {
    decode_targets(false);
}

/// A view that caps nothing (an element on screen whose size the page does not set) leaves the
/// subscriber every spatial layer: it used to cap an SVC feed at the number of its streams
/// (one), so a subscriber that reported any view got the lowest spatial layer only.
#[test]
fn a_view_without_a_cap_leaves_every_spatial_layer() {
    decode_targets(true);
}

/// A high frame lost on the publisher's link and repaired late is dropped for a subscriber of
/// the low layer when it comes; the number it would have had stays a gap in that subscriber's
/// stream, and asking for it gets nothing: not the high frame from the cache.
#[test]
fn a_number_left_by_a_late_frame_of_another_layer_is_not_answered_with_it() {
    let mut h = harness(2);
    show_small(&mut h, "sub1");
    let mut seen = [Vec::new(), Vec::new()];
    received(&mut h, &mut seen);
    // Frames 1 to 5 as in `decode_targets`; frame 4 (high, packet 103) comes after frame 5.
    for (seq, picture, frame, template) in [
        (100, 1, 1, 0),
        (101, 1, 2, 2),
        (102, 2, 3, 1),
        (104, 3, 5, 1),
        (103, 2, 4, 3),
    ] {
        send(&mut h, &packet(seq, picture, frame, template));
    }
    received(&mut h, &mut seen);
    let low: Vec<u16> = seen[1].iter().map(|p| p.0).collect();
    assert_eq!(seen[1].iter().map(|p| p.1).collect::<Vec<_>>(), [1, 3, 5]);
    // Frame 5 went out two numbers after frame 3: the one between was frame 4's, had it been
    // the low layer's.
    assert_eq!(low[2], low[1].wrapping_add(2));
    let ssrc = {
        let mut ssrc = None;
        // The subscriber's SSRC, from a sender report's absence: read it from a packet.
        send(&mut h, &packet(105, 3, 6, 3));
        send(&mut h, &packet(106, 4, 7, 1));
        while let Some(o) = h.worker.poll_output() {
            let Output::Transmit(t) = o else { continue };
            if t.destination == h.subscribers[1] && !(192..=223).contains(&t.contents[1]) {
                let mut plain = Vec::new();
                h.clients[2]
                    .unprotect_rtp(&t.contents, &mut plain)
                    .expect("authentic");
                ssrc = Some(rtp::parse(&plain).expect("rtp").ssrc);
            }
        }
        ssrc.expect("frame 7 reached the small view")
    };
    let unanswerable = h.worker.stats().nacks_unanswerable;
    h.nack_from_subscriber(1, ssrc, low[1].wrapping_add(1), 0);
    let mut after = [Vec::new(), Vec::new()];
    received(&mut h, &mut after);
    assert!(after[1].is_empty(), "sent {:?}", after[1]);
    assert_eq!(h.worker.stats().nacks_unanswerable, unanswerable + 1);
}

/// What subscriber `i` was sent: each RTP packet as it went on the wire, and decrypted where
/// its SRTP index is new to the subscriber (a plain retransmission's is not).
fn sent_to(h: &mut Harness, i: usize) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    h.run_timers();
    let mut out = Vec::new();
    while let Some(o) = h.worker.poll_output() {
        let Output::Transmit(t) = o else { continue };
        if t.destination != h.subscribers[i] || (192..=223).contains(&t.contents[1]) {
            continue;
        }
        let mut plain = Vec::new();
        let fresh = h.clients[i + 1].unprotect_rtp(&t.contents, &mut plain);
        out.push((t.contents.to_vec(), fresh.is_ok().then_some(plain)));
    }
    out
}

/// The marker bit the relay puts on the end of a small view's picture (the publisher's is on
/// the high layer's frame) is on a repair of that packet too: on the RTX stream it still ends
/// the picture, and sent again as it was (a subscriber without RTX) it is the same packet
/// under the same SRTP index, byte for byte; without the bit it was another packet sealed
/// under a used index (with AES-GCM, a nonce used twice).
#[test]
fn a_repair_of_the_end_of_a_small_pictures_carries_its_marker_bit() {
    for rtx in [true, false] {
        let mut h = harness(2);
        show_small(&mut h, "sub1");
        if !rtx {
            h.worker
                .update_subscription(
                    &Sid::from("s"),
                    &Uid::from("sub1"),
                    &FeedId::from("cam"),
                    relay::control::SubscribeOptions {
                        mid: Some("1".into()),
                        ..Default::default()
                    },
                )
                .unwrap();
        }
        sent_to(&mut h, 1);
        // Picture 1 (frames 1 low, 2 high), picture 2 (3 low, 4 high); the publisher sets
        // the marker on the high frames only.
        for (i, (picture, frame, template)) in [(1, 1, 0), (1, 2, 2), (2, 3, 1), (2, 4, 3)]
            .into_iter()
            .enumerate()
        {
            let mut p = packet(100 + i as u16, picture, frame, template);
            if frame % 2 == 0 {
                p[1] |= 0x80;
            }
            send(&mut h, &p);
        }
        let first = sent_to(&mut h, 1);
        assert_eq!(first.len(), 2, "rtx {rtx}");
        let (sealed, plain) = &first[1];
        let header = rtp::parse(plain.as_ref().expect("authentic")).unwrap();
        assert!(header.marker, "rtx {rtx}: the relay ends the small picture");
        h.now += Duration::from_millis(20);
        h.nack_from_subscriber(1, header.ssrc, header.sequence, 0);
        let repairs = sent_to(&mut h, 1);
        assert_eq!(repairs.len(), 1, "rtx {rtx}");
        let (again, repair) = &repairs[0];
        if rtx {
            let repair_header = rtp::parse(repair.as_ref().expect("authentic")).unwrap();
            assert_ne!(repair_header.ssrc, header.ssrc);
            assert!(repair_header.marker, "the repair lost the marker bit");
        } else {
            // The same index, so the same bytes (the marker bit among them), or a nonce
            // used twice.
            assert_eq!(again, sealed, "a plain retransmission is the packet sent");
        }
    }
}

/// A packet further back than the rewriter remembers marks for (128 numbers: a large
/// keyframe and what the pacer holds after it) is still repaired on the RTX stream, a new
/// packet, with the marker bit as the publisher set it. (A subscriber of the whole L1T3 stream,
/// whose numbers have no gaps: behind 128 skipped frames the rewriter no longer maps a number
/// at all.)
#[test]
fn an_old_packet_of_an_svc_stream_is_still_repaired_on_the_rtx_stream() {
    let mut h = harness(1);
    sent_to(&mut h, 0);
    // 80 pictures of L1T3, 160 packets, 2 ms apart: what a large keyframe and the frames
    // after it put ahead of a repair.
    let mut seq = 1000u16;
    for picture in 0..80 {
        for p in l1t3_packets(picture, &mut seq) {
            send(&mut h, &p);
        }
        h.now += Duration::from_millis(2);
        h.run_timers();
    }
    // The pacer lets them out at the subscriber's starting estimate.
    let mut first = Vec::new();
    for _ in 0..300 {
        h.now += Duration::from_millis(10);
        first.extend(sent_to(&mut h, 0));
    }
    assert_eq!(first.len(), 160);
    // The keyframe's second packet, 158 numbers behind the newest.
    let header = rtp::parse(first[1].1.as_ref().expect("authentic")).unwrap();
    h.now += Duration::from_millis(20);
    h.nack_from_subscriber(0, header.ssrc, header.sequence, 0);
    let repairs = sent_to(&mut h, 0);
    assert_eq!(repairs.len(), 1, "not repaired");
    let repair = rtp::parse(repairs[0].1.as_ref().expect("authentic")).unwrap();
    assert_ne!(repair.ssrc, header.ssrc, "on the RTX stream");
}

/// Subscriber `uid` shows the video small: the low spatial layer at most.
fn show_small(h: &mut Harness, uid: &str) {
    h.worker
        .set_view(
            h.now,
            &Sid::from("s"),
            &Uid::from(uid),
            &FeedId::from("cam"),
            View {
                max_layer: Some(0),
                ..View::default()
            },
        )
        .unwrap();
}

fn decode_targets(first_reports_a_view: bool) {
    let mut h = harness(2);
    if first_reports_a_view {
        h.worker
            .set_view(
                h.now,
                &Sid::from("s"),
                &Uid::from("sub0"),
                &FeedId::from("cam"),
                View::default(),
            )
            .unwrap();
    }
    // The second subscriber shows the video small.
    show_small(&mut h, "sub1");
    let mut seen = [Vec::new(), Vec::new()];
    received(&mut h, &mut seen);
    // Picture 1 (the keyframe: frames 1, low, and 2, high), then pictures 2 and 3 (frames 3
    // and 5 low, 4 and 6 high).
    let frames = [
        (1, 1, 0),
        (1, 2, 2),
        (2, 3, 1),
        (2, 4, 3),
        (3, 5, 1),
        (3, 6, 3),
    ];
    for (i, &(picture, frame, template)) in frames.iter().enumerate() {
        send(&mut h, &packet(100 + i as u16, picture, frame, template));
    }
    received(&mut h, &mut seen);
    let frames_of = |s: &[(u16, u8, bool)]| s.iter().map(|p| p.1).collect::<Vec<_>>();
    // The whole picture needs the low keyframe and the high frames; the small one the low
    // frames only.
    assert_eq!(frames_of(&seen[0]), [1, 2, 4, 6]);
    assert_eq!(frames_of(&seen[1]), [1, 3, 5]);
    for s in &seen {
        assert!(
            s.windows(2).all(|w| w[1].0 == w[0].0.wrapping_add(1)),
            "a gap in {s:?}"
        );
    }
    // The end of each picture as each gets it carries the marker bit: the high frame's for
    // the first, the low frame's for the second (the publisher set none here).
    let marked = |s: &[(u16, u8, bool)]| s.iter().filter(|p| p.2).map(|p| p.1).collect::<Vec<_>>();
    assert_eq!(marked(&seen[0]), [2, 4, 6]);
    assert_eq!(marked(&seen[1]), [1, 3, 5]);
    let stats = h.worker.stats();
    assert_eq!(stats.rtp_svc_dropped, 5);
    assert_eq!(stats.svc_descriptors_unreadable, 0);
}

/// libwebrtc's L1T3 structure (template ids from 0, pictures of 320x180), carried by the
/// keyframe's first packet, frame 1: decode targets 0 (T0, 7.5 fps), 1 (T0 and T1, 15 fps)
/// and 2 (all, 30 fps); templates 0 the keyframe, 1 a T0 delta (four frames back), 2 a T1
/// frame (two back), 3 and 4 T2 frames (one back). Written by the descriptor's own test
/// writer from the specification's bit layout.
const L1T3_KEY: [u8; 20] = [
    0xc0, 0x00, 0x01, 0x80, 0x02, 0x14, 0xea, 0xa8, 0x60, 0x41, 0x4d, 0x14, 0x10, 0x20, 0x84, 0x27,
    0x01, 0x3f, 0x00, 0xb3,
];

/// Picture `p` (from 0) of an L1T3 stream at 30 fps: its template, temporal layer and how
/// many 1,200-byte packets it takes (a T0 frame the most: the others refer to it).
fn l1t3_picture(p: u32) -> (u8, u8, usize) {
    match p % 4 {
        0 if p == 0 => (0, 0, 4),
        0 => (1, 0, 4),
        1 => (3, 2, 1),
        2 => (2, 1, 2),
        _ => (4, 2, 1),
    }
}

/// The packets of picture `p`, numbered from `seq`: frame `p + 1`, the payload's first byte
/// its temporal layer.
fn l1t3_packets(p: u32, seq: &mut u16) -> Vec<Vec<u8>> {
    let (template, temporal, count) = l1t3_picture(p);
    let frame = (p + 1) as u16;
    (0..count)
        .map(|i| {
            let (start, end) = (i == 0, i == count - 1);
            let mut descriptor = if p == 0 && start {
                L1T3_KEY.to_vec()
            } else {
                let [hi, lo] = frame.to_be_bytes();
                vec![template, hi, lo]
            };
            descriptor[0] = descriptor[0] & 0x3f | u8::from(start) << 7 | u8::from(end) << 6;
            // The structure is longer than a one-byte element takes: the two-byte form
            // (RFC 8285 §4.3), as Chromium writes it.
            let mut packet = vec![0x90, 96 | u8::from(end) << 7];
            packet.extend_from_slice(&seq.to_be_bytes());
            packet.extend_from_slice(&(p * 3000).to_be_bytes());
            packet.extend_from_slice(&PUBLISHER_SSRC.to_be_bytes());
            let words = (2 + descriptor.len()).div_ceil(4);
            packet.extend_from_slice(&[0x10, 0x00, 0, words as u8, DD, descriptor.len() as u8]);
            packet.extend_from_slice(&descriptor);
            packet.resize(12 + 4 + 4 * words, 0);
            packet.push(temporal);
            packet.extend(std::iter::repeat_n(0x55, 1199));
            *seq = seq.wrapping_add(1);
            packet
        })
        .collect()
}

#[test]
fn behind_a_narrow_link_an_svc_subscriber_gets_the_temporal_layers_that_fit() {
    // 30 fps of L1T3 (576 kbit/s; 432 without T2, 288 in T0 alone) into a 380 kbit/s link
    // with 20 ms of delay: only T0 fits. Simulcast of one spatial layer would pause here.
    let mut h: Harness = harness(1);
    let t0 = h.now;
    let mut link = Downlink::new(380_000.0, Duration::from_millis(20));
    let (mut seq, mut picture) = (1000u16, 0u32);
    let mut next_picture = t0;
    // (when it arrived, sequence number, temporal layer, marker) of what the subscriber got.
    let mut got: Vec<(Instant, u16, u8, bool)> = Vec::new();
    // Long enough for the one move up the estimate tries (below) to be over before the
    // last 3 s.
    let end = t0 + Duration::from_secs(30);
    while h.now < end {
        if h.now >= next_picture {
            for mut p in l1t3_packets(picture, &mut seq) {
                h.clients[0].protect_rtp(&mut p).expect("seal");
                h.worker.handle_receive(h.now, None, h.publisher, &p);
            }
            picture += 1;
            next_picture = t0 + Duration::from_micros(u64::from(picture) * 33_333);
        }
        for (plain, wire) in h.rtp_to(0) {
            let header = rtp::parse(&plain).expect("rtp");
            let number = rtp::transport_sequence(&plain, TWCC_EXTENSION).expect("numbered");
            let arrival = link.carry(h.now, wire, number);
            if header.payload_type == 96 {
                let temporal = plain[header.header_len];
                got.push((arrival, header.sequence, temporal, header.marker));
            }
        }
        link.deliver(&mut h, 0);
        h.run_timers();
        h.now += Duration::from_millis(1);
    }
    let (sid, uid) = (Sid::from("s"), Uid::from("sub0"));
    let estimate = h.worker.estimate(&sid, &uid).unwrap().expect("estimated");
    let q = h.worker.quality(&sid, &uid).expect("a participant");
    let stats = h.worker.stats();
    // Over the last 3 s: the base layer only, every frame of it, without a gap. While T0
    // alone is sent, only probes test the link, and the estimate grows to where it seems to
    // afford T1 (540 kbit/s by 18 s); the move up overflows the link and is undone at once
    // (18.25 to 19.75 s; 14.25 to 15.75 s before the acknowledged rate stopped counting a
    // window's first packet, which let the estimate grow faster), and a move up that fails
    // doubles the wait before the next: none came within 60 s.
    let last: Vec<_> = got
        .iter()
        .filter(|g| g.0 >= end - Duration::from_secs(3))
        .collect();
    let layers: Vec<u8> = last.iter().map(|g| g.2).collect();
    let summary = format!(
        "estimate {estimate:.0}, {q:?}, paused {}, layers {layers:?}",
        stats.subscriptions_paused
    );
    assert_eq!(stats.subscriptions_paused, 0, "{summary}");
    assert!(
        !last.is_empty() && layers.iter().all(|&t| t == 0),
        "{summary}"
    );
    // 7.5 frames a second of 4 packets each.
    assert!(last.len() >= 84, "{} packets: {summary}", last.len());
    assert!(
        last.windows(2).all(|w| w[1].1 == w[0].1.wrapping_add(1)),
        "a gap: {summary}"
    );
    // Each frame's four packets, the last with the marker bit (from the first whole frame).
    let first = last.iter().position(|g| g.3).expect("a frame's end") + 1;
    assert!(
        last[first..]
            .iter()
            .enumerate()
            .all(|(i, g)| g.3 == (i % 4 == 3)),
        "{summary}"
    );
    let s = &q.subscriptions[0];
    assert_eq!(
        (s.layers, s.temporal_layers, s.target, s.current),
        (3, 3, 0, Some(0)),
        "{summary}"
    );
}
