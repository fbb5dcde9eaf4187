//! A subscriber's keyframe requests through one relay core, in virtual time: a request while
//! the keyframe last sent to it can still arrive waits for it, instead of making the publisher
//! encode another that would be sent behind it on the same link.

use std::time::Duration;

use relay::engine::rtp;
use relay::fuzzing::{harness, Harness, PUBLISHER_SSRC};
use relay::sfu::worker::Output;
use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc_util::marshal::Marshal;

/// Packet `seq` of a VP8 frame at `timestamp`: the first of a keyframe where `starts_keyframe`,
/// else a later packet of a frame; 1,000 payload bytes.
fn vp8(seq: u16, timestamp: u32, starts_keyframe: bool) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&timestamp.to_be_bytes());
    p.extend_from_slice(&PUBLISHER_SSRC.to_be_bytes());
    // Descriptor: S set on a frame's first packet, picture id, TL0PICIDX, TID.
    p.extend_from_slice(&[
        if starts_keyframe { 0x90 } else { 0x80 },
        0xe0,
        0x80,
        0x01,
        0,
        0x20,
    ]);
    if starts_keyframe {
        // The frame tag with the P bit clear, the start code, 320x180.
        p.extend_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x00]);
    }
    p.resize(12 + 1000, 0x55);
    p
}

fn send(h: &mut Harness, plain: &[u8]) {
    let mut sealed = plain.to_vec();
    h.clients[0].protect_rtp(&mut sealed).expect("protect");
    h.worker.handle_receive(h.now, None, h.publisher, &sealed);
}

/// The subscriber's SSRC for the feed, from what it was sent; the SSRCs the publisher was
/// asked for keyframes of.
fn drain(h: &mut Harness) -> (Option<u32>, Vec<u32>) {
    let (mut ssrc, mut asked) = (None, Vec::new());
    while let Some(o) = h.worker.poll_output() {
        let Output::Transmit(t) = o else { continue };
        if t.destination == h.publisher {
            for p in h.rtcp_to_publisher(&t.contents).unwrap_or_default() {
                if let Some(pli) = p.as_any().downcast_ref::<PictureLossIndication>() {
                    asked.push(pli.media_ssrc);
                }
            }
        } else if t.destination == h.subscribers[0] && !(192..=223).contains(&t.contents[1]) {
            let mut plain = Vec::new();
            h.clients[1]
                .unprotect_rtp(&t.contents, &mut plain)
                .expect("authentic RTP to the subscriber");
            ssrc = Some(rtp::parse(&plain).expect("rtp").ssrc);
        }
    }
    (ssrc, asked)
}

fn pli(h: &mut Harness, media_ssrc: u32) {
    let plain = PictureLossIndication {
        sender_ssrc: 0x77,
        media_ssrc,
    }
    .marshal()
    .expect("marshal");
    let sealed = h.clients[1].protect_rtcp(&plain).expect("protect");
    h.worker
        .handle_receive(h.now, None, h.subscribers[0], &sealed);
}

fn advance(h: &mut Harness, by: Duration) {
    let end = h.now + by;
    while h.now < end {
        h.now += Duration::from_millis(1);
        h.run_timers();
    }
}

#[test]
fn a_request_waits_for_the_keyframe_on_its_way_then_goes_through() {
    let mut h = harness(1);
    // Past whatever the harness's setup asked of the publisher.
    advance(&mut h, Duration::from_secs(1));
    drain(&mut h);
    // A keyframe of 30 packets of 1,000 bytes (240 kbit) to a subscriber whose estimate
    // starts at 1 Mbit/s: it may take 240 ms to get through, and two round trips (100 ms
    // each until its reports say otherwise) to arrive and be repaired.
    let ts = 90_000;
    for i in 0..30u16 {
        send(&mut h, &vp8(1000 + i, ts, i == 0));
    }
    let (ssrc, asked) = drain(&mut h);
    let ssrc = ssrc.expect("the keyframe was forwarded");
    assert!(asked.is_empty());
    let waited = h.worker.stats().keyframe_requests_suppressed;

    // Asked again 100 and 400 ms later (Chromium repeats while it waits): nothing reaches
    // the publisher.
    advance(&mut h, Duration::from_millis(100));
    pli(&mut h, ssrc);
    advance(&mut h, Duration::from_millis(300));
    pli(&mut h, ssrc);
    let (_, asked) = drain(&mut h);
    assert_eq!(
        asked,
        Vec::<u32>::new(),
        "asked while the keyframe could still arrive"
    );
    assert_eq!(h.worker.stats().keyframe_requests_suppressed, waited + 2);

    // Past the wait (440 ms), a request goes through.
    advance(&mut h, Duration::from_millis(50));
    pli(&mut h, ssrc);
    let (_, asked) = drain(&mut h);
    assert_eq!(asked, vec![PUBLISHER_SSRC]);
}

#[test]
fn without_a_keyframe_sent_a_request_goes_through_at_once() {
    let mut h = harness(1);
    advance(&mut h, Duration::from_secs(1));
    // Delta frames only: the subscriber cannot decode, and nothing it waits for is coming.
    for i in 0..10u16 {
        send(&mut h, &vp8(2000 + i, 3000 * u32::from(i), false));
    }
    let (ssrc, _) = drain(&mut h);
    pli(&mut h, ssrc.expect("forwarded"));
    let (_, asked) = drain(&mut h);
    assert_eq!(asked, vec![PUBLISHER_SSRC]);
}
