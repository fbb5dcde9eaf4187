//! SVC through one relay core, in virtual time: a publisher sends one stream with two spatial
//! layers (k-SVC, as Chromium's L2T1_KEY) described by the AV1 dependency descriptor, and each
//! subscriber gets the frames of its decode target, the best its view allows, as one stream
//! without gaps.

use relay::control::View;
use relay::engine::rtp;
use relay::fuzzing::{harness, Harness, DEPENDENCY_DESCRIPTOR_EXTENSION, PUBLISHER_SSRC};
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
    let mut h = harness(2);
    // The second subscriber shows the video small: the low spatial layer at most.
    h.worker
        .set_view(
            h.now,
            &Sid::from("s"),
            &Uid::from("sub1"),
            &FeedId::from("cam"),
            View {
                max_layer: Some(0),
                ..View::default()
            },
        )
        .unwrap();
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
