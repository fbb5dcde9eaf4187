//! Simulcast through one relay core, in virtual time: a publisher's layers are known only by
//! their rids until their first packets name them; the relay learns their SSRCs from those
//! packets once they prove authentic, and each subscriber receives one layer as one
//! continuous stream: switched at keyframes, with its sequence numbers, timestamps (aligned
//! through the layers' sender reports) and VP8 picture numbers going on across switches.

use std::time::Duration;

use bytes::Bytes;
use relay::control::{Event, HeaderExtension, Pause, Simulcast, View};
use relay::engine::{rtp, vp8};
use relay::fuzzing::{camera, harness, Downlink, Harness, RTX_PT, TWCC_EXTENSION};
use relay::ids::{FeedId, Sid, Uid};
use relay::sfu::feed::{REPAIRED_RID_URI, RID_URI};
use relay::sfu::worker::Output;
use relay::stats::DropReason;
use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtcp::sender_report::SenderReport;
use webrtc_util::marshal::Marshal;

const RIDS: [&str; 3] = ["q", "h", "f"];
/// The layers' SSRCs and where their timestamps start: unrelated, as a browser picks them.
const SSRCS: [u32; 3] = [0x1111, 0x2222, 0x3333];
const TS_BASE: [u32; 3] = [1_000_000, 4_294_000_000, 77];
/// The NTP time of the sender reports.
const NTP: u64 = 0xe000_0000_0000_0000;

/// The harness camera as a simulcast feed of mid "0" with three layers.
fn simulcast_camera() -> relay::control::FeedDescription {
    let mut d = camera();
    d.ssrc = None;
    d.rtx_ssrc = None;
    d.header_extensions.push(HeaderExtension {
        id: 10,
        uri: RID_URI.into(),
    });
    d.header_extensions.push(HeaderExtension {
        id: 11,
        uri: REPAIRED_RID_URI.into(),
    });
    d.simulcast = Some(Simulcast {
        mid: "0".into(),
        rids: RIDS.iter().map(|r| r.to_string()).collect(),
    });
    d
}

fn publish_simulcast(h: &mut Harness) {
    h.worker
        .publish(&Sid::from("s"), &Uid::from("pub"), simulcast_camera())
        .expect("simulcast publish");
}

/// Frame `frame` of `layer` (one packet a frame, 3000 ticks apart), VP8 with a 15-bit
/// PictureID and TL0PICIDX of the layer's own (offset by the layer so that they differ);
/// `named` puts the MID and rid extensions on it as a browser does on a layer's first
/// packets.
fn packet(layer: usize, frame: u16, keyframe: bool, named: bool) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&(frame + 100 * layer as u16).to_be_bytes());
    let ts = TS_BASE[layer].wrapping_add(u32::from(frame) * 3000);
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&SSRCS[layer].to_be_bytes());
    let picture = 0x8000 | (frame + 1000 * layer as u16);
    p.extend_from_slice(&[0x90, 0xe0]);
    p.extend_from_slice(&picture.to_be_bytes());
    p.push((frame as u8).wrapping_add(50 * layer as u8));
    p.push(0x20);
    // The frame tag: P bit clear on a keyframe; then a keyframe's start code and size,
    // 320x180 doubled per layer.
    p.push(if keyframe { 0x10 } else { 0x11 });
    p.extend_from_slice(&[0x02, 0x00, 0x9d, 0x01, 0x2a]);
    p.extend_from_slice(&(320u16 << layer).to_le_bytes());
    p.extend_from_slice(&(180u16 << layer).to_le_bytes());
    p.extend(std::iter::repeat_n(layer as u8, 100));
    if !named {
        return p;
    }
    let mut out = Vec::new();
    let rid = RIDS[layer].as_bytes();
    assert!(rtp::with_extensions(&p, &[(1, b"0"), (10, rid)], &mut out));
    out
}

fn send(h: &mut Harness, plain: &[u8]) {
    let mut sealed = plain.to_vec();
    h.clients[0].protect_rtp(&mut sealed).expect("protect");
    h.worker.handle_receive(h.now, None, h.publisher, &sealed);
}

fn sender_report(h: &mut Harness, layer: usize, at_frame: u16) {
    let sr = SenderReport {
        ssrc: SSRCS[layer],
        ntp_time: NTP + (u64::from(at_frame) << 32) / 30,
        rtp_time: TS_BASE[layer].wrapping_add(u32::from(at_frame) * 3000),
        ..Default::default()
    };
    let plain = sr.marshal().unwrap();
    let sealed = h.clients[0].protect_rtcp(&plain).expect("protect");
    h.worker.handle_receive(h.now, None, h.publisher, &sealed);
}

/// What came out: RTP to the subscriber (decrypted), and the SSRCs the publisher was asked
/// for keyframes of.
#[derive(Default, Debug)]
struct Seen {
    to_subscriber: Vec<Vec<u8>>,
    keyframes_asked: Vec<u32>,
    events: Vec<Event>,
}

fn drain(h: &mut Harness) -> Seen {
    let mut seen = Seen::default();
    while let Some(o) = h.worker.poll_output() {
        let t = match o {
            Output::Transmit(t) => t,
            Output::Event(e) => {
                seen.events.push(e);
                continue;
            }
            _ => continue,
        };
        if t.destination == h.publisher {
            for p in h.rtcp_to_publisher(&t.contents).unwrap_or_default() {
                if let Some(pli) = p.as_any().downcast_ref::<PictureLossIndication>() {
                    seen.keyframes_asked.push(pli.media_ssrc);
                }
            }
        } else if t.destination == h.subscribers[0] && !(192..=223).contains(&t.contents[1]) {
            let mut plain = Vec::new();
            h.clients[1]
                .unprotect_rtp(&t.contents, &mut plain)
                .expect("authentic RTP to the subscriber");
            seen.to_subscriber.push(plain);
        }
    }
    seen
}

/// (SSRC, sequence number, timestamp, PictureID, TL0PICIDX, the payload's last byte: the
/// layer it came from) of a packet the subscriber received.
fn read(p: &[u8]) -> (u32, u16, u32, u16, u8, u8) {
    let h = rtp::parse(p).unwrap();
    let payload = &p[h.header_len..h.header_len + h.payload_len];
    let d = vp8::parse(payload).unwrap();
    let layer = payload[payload.len() - 1];
    (
        h.ssrc,
        h.sequence,
        h.timestamp,
        d.picture_id.unwrap().0,
        d.tl0_pic_idx.unwrap(),
        layer,
    )
}

#[test]
fn layers_are_learnt_by_rid_and_the_subscriber_switches_at_keyframes_on_one_timeline() {
    let mut h = harness(1);
    publish_simulcast(&mut h);
    drain(&mut h);

    // Layer 0's first packet names it: learnt, but no keyframe yet, so nothing is sent.
    send(&mut h, &packet(0, 0, false, true));
    assert_eq!(h.worker.stats().simulcast_ssrcs_learnt, 1);
    assert!(drain(&mut h).to_subscriber.is_empty());
    // Its keyframe starts the subscriber (the best it can have for now).
    send(&mut h, &packet(0, 1, true, false));
    send(&mut h, &packet(0, 2, false, false));
    let seen = drain(&mut h);
    assert_eq!(seen.to_subscriber.len(), 2);
    let first = read(&seen.to_subscriber[0]);
    let second = read(&seen.to_subscriber[1]);
    assert_eq!(second.0, first.0);
    assert_eq!(second.1, first.1.wrapping_add(1));
    assert_eq!(second.2, first.2.wrapping_add(3000));
    assert_eq!(first.5, 0);

    // Layers 1 and 2 start: their SSRCs are learnt; the subscriber wants layer 2, so a
    // keyframe of it is asked for (once the one asked for when the subscriber connected is
    // 500 ms old), and nothing of theirs is sent meanwhile.
    // Layer 0 goes on meanwhile (one that stopped would have any keyframe taken).
    h.now += Duration::from_millis(600);
    send(&mut h, &packet(0, 3, false, false));
    send(&mut h, &packet(1, 3, false, true));
    send(&mut h, &packet(2, 3, false, true));
    sender_report(&mut h, 0, 2);
    sender_report(&mut h, 2, 3);
    let seen = drain(&mut h);
    assert_eq!(h.worker.stats().simulcast_ssrcs_learnt, 3);
    assert_eq!(seen.keyframes_asked, vec![SSRCS[2]]);
    assert_eq!(seen.to_subscriber.len(), 1);
    let last = read(&seen.to_subscriber[0]);

    // Layer 2's keyframe: the subscriber is switched, on the same SSRC, the next sequence
    // number, the timestamp where the sender reports put it (one frame on, whatever the
    // wall time did meanwhile), and the next picture numbers.
    send(&mut h, &packet(2, 4, true, false));
    send(&mut h, &packet(0, 4, false, false));
    send(&mut h, &packet(2, 5, false, false));
    let seen = drain(&mut h);
    assert_eq!(seen.to_subscriber.len(), 2, "layer 0 is no longer sent");
    let switched = read(&seen.to_subscriber[0]);
    assert_eq!(switched.0, last.0);
    assert_eq!(switched.1, last.1.wrapping_add(1));
    assert_eq!(switched.2, last.2.wrapping_add(3000));
    assert_eq!(switched.3, (last.3 + 1) & 0x7fff);
    assert_eq!(switched.4, last.4.wrapping_add(1));
    assert_eq!(switched.5, 2);
    let next = read(&seen.to_subscriber[1]);
    assert_eq!(
        (next.1, next.2, next.3),
        (switched.1 + 1, switched.2 + 3000, switched.3 + 1)
    );
    assert_eq!(h.worker.stats().layer_switches, 1);

    // Down to layer 0: asked for, made at its next keyframe; until then layer 2 goes on.
    h.now += Duration::from_secs(1);
    h.worker
        .set_view(
            h.now,
            &Sid::from("s"),
            &Uid::from("sub0"),
            &FeedId::from("cam"),
            View {
                max_layer: Some(0),
                ..View::default()
            },
        )
        .unwrap();
    assert_eq!(drain(&mut h).keyframes_asked, vec![SSRCS[0]]);
    send(&mut h, &packet(0, 6, false, false));
    send(&mut h, &packet(2, 6, false, false));
    send(&mut h, &packet(0, 7, true, false));
    send(&mut h, &packet(2, 7, false, false));
    let seen = drain(&mut h);
    let layers: Vec<u8> = seen.to_subscriber.iter().map(|p| read(p).5).collect();
    assert_eq!(layers, vec![2, 0]);
    let (before, after) = (read(&seen.to_subscriber[0]), read(&seen.to_subscriber[1]));
    assert_eq!(after.1, before.1.wrapping_add(1));
    assert_eq!(after.2, before.2.wrapping_add(3000));
    assert_eq!(after.3, (before.3 + 1) & 0x7fff);
    assert_eq!(h.worker.stats().layer_switches, 2);
    // The subscriber's own view: the layer it is on, the switches, and the estimate (still
    // where it starts: no transport-wide feedback came here).
    let q = h
        .worker
        .quality(&Sid::from("s"), &Uid::from("sub0"))
        .expect("a participant");
    assert_eq!(q.estimate_bps, Some(1_000_000.0));
    assert_eq!(
        q.subscriptions,
        vec![relay::control::LayerState {
            feed_id: FeedId::from("cam"),
            layers: 3,
            temporal_layers: 1,
            target: 0,
            current: Some(0),
            switches: 2,
            paused: None,
            pauses: 0,
        }]
    );
}

#[test]
fn a_layer_is_learnt_only_from_an_authentic_packet_that_names_it() {
    let mut h = harness(1);
    publish_simulcast(&mut h);
    drain(&mut h);
    let unknown = h.worker.stats().dropped(DropReason::RtpUnknownSsrc);

    // An unknown rid, another mid, no names at all: routed nowhere, no crypto spent.
    let mut other_rid = Vec::new();
    assert!(rtp::with_extensions(
        &packet(0, 0, true, false),
        &[(1, b"0"), (10, b"x")],
        &mut other_rid
    ));
    let mut other_mid = Vec::new();
    assert!(rtp::with_extensions(
        &packet(0, 0, true, false),
        &[(1, b"7"), (10, b"q")],
        &mut other_mid
    ));
    for p in [other_rid, other_mid, packet(0, 0, true, false)] {
        send(&mut h, &p);
    }
    assert_eq!(
        h.worker.stats().dropped(DropReason::RtpUnknownSsrc),
        unknown + 3
    );
    // A packet that names layer 0 but does not authenticate: dropped, nothing learnt.
    let mut sealed = packet(0, 0, true, true);
    h.clients[0].protect_rtp(&mut sealed).expect("protect");
    let last = sealed.len() - 1;
    sealed[last] ^= 1;
    h.worker.handle_receive(h.now, None, h.publisher, &sealed);
    assert_eq!(h.worker.stats().simulcast_ssrcs_learnt, 0);
    // Its SSRC is still unknown: without the names it goes nowhere.
    send(&mut h, &packet(0, 1, true, false));
    assert_eq!(
        h.worker.stats().dropped(DropReason::RtpUnknownSsrc),
        unknown + 4
    );
    assert!(drain(&mut h).to_subscriber.is_empty());

    // A feed with a declared SSRC learns nothing from names.
    let mut h = harness(1);
    drain(&mut h);
    send(&mut h, &packet(1, 0, true, true));
    assert_eq!(h.worker.stats().simulcast_ssrcs_learnt, 0);
    assert!(drain(&mut h).to_subscriber.is_empty());
}

#[test]
fn simulcast_descriptions_that_cannot_work_are_refused() {
    let mut h = harness(0);
    let publish = |h: &mut Harness, d| h.worker.publish(&Sid::from("s"), &Uid::from("pub"), d);
    let mut declared = simulcast_camera();
    declared.ssrc = Some(relay::ids::Ssrc(5));
    let mut same = simulcast_camera();
    same.simulcast.as_mut().unwrap().rids = vec!["a".into(), "a".into()];
    let mut many = simulcast_camera();
    many.simulcast.as_mut().unwrap().rids = (0..5).map(|i| i.to_string()).collect();
    let mut long = simulcast_camera();
    long.simulcast.as_mut().unwrap().rids = vec!["r".repeat(17)];
    let mut audio = simulcast_camera();
    audio.kind = relay::control::MediaKind::Audio;
    let mut neither = camera();
    neither.ssrc = None;
    for d in [declared, same, many, long, audio, neither] {
        let err = publish(&mut h, d.clone()).expect_err(&format!("{d:?}"));
        assert!(
            matches!(err, relay::error::ControlError::InvalidFeed { .. }),
            "{err:?}"
        );
    }
    publish(&mut h, simulcast_camera()).expect("a good one");
}

/// A subscriber's NACK for a packet of its layer is answered though the other layers sent
/// packets with the same sequence numbers meanwhile: each layer keeps its own packets.
#[test]
fn repairs_of_one_layer_survive_the_other_layers_packets() {
    let mut h = harness(1);
    publish_simulcast(&mut h);
    drain(&mut h);
    // Layer 2's keyframe starts the subscriber on it (sequence number 201).
    send(&mut h, &packet(2, 1, true, true));
    let seen = drain(&mut h);
    assert_eq!(seen.to_subscriber.len(), 1);
    let sent = rtp::parse(&seen.to_subscriber[0]).unwrap();
    // Layers 0 and 1 send packets numbered 201 too (and one lap on).
    send(&mut h, &packet(0, 201, false, true));
    send(&mut h, &packet(1, 101 + 512, false, true));
    assert!(drain(&mut h).to_subscriber.is_empty());
    h.nack_from_subscriber(0, sent.ssrc, sent.sequence, 0);
    let seen = drain(&mut h);
    assert_eq!(seen.to_subscriber.len(), 1, "the repair");
    let repair = &seen.to_subscriber[0];
    let r = rtp::parse(repair).unwrap();
    // RFC 4588: the original sequence number, then layer 2's payload.
    let body = &repair[r.header_len..r.header_len + r.payload_len];
    assert_eq!(&body[..2], &sent.sequence.to_be_bytes());
    assert_eq!(body[body.len() - 1], 2);
    assert_eq!(h.worker.stats().nacks_unanswerable, 0);
}

/// A keyframe whose first packet is lost on the publisher's link and repaired after the rest
/// came: a subscriber waiting to move to that layer switches at the repair, so the packets
/// after it went by before it was on the layer. They have their numbers in its stream, and
/// when it asks for them they come from the cache on its RTX stream (before, the relay
/// answered only numbers it had sent, and the keyframe was never whole: a freeze until the
/// next one).
#[test]
fn a_keyframe_whose_first_packet_comes_late_reaches_a_subscriber_that_switches_at_it_whole() {
    let mut h = harness(1);
    publish_simulcast(&mut h);
    drain(&mut h);
    // On layer 1 first (its keyframe comes before layer 2's).
    send(&mut h, &packet(1, 1, true, true));
    assert_eq!(drain(&mut h).to_subscriber.len(), 1);
    // Layer 2's keyframe in three packets, 202 to 204; 202 comes last.
    let key = packet(2, 2, true, true);
    let numbered = |seq: u16, first: bool| {
        let mut p = key.clone();
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        if !first {
            let at = rtp::parse(&p).unwrap().header_len;
            p[at] &= !0x10; // not the start of the frame
        }
        p
    };
    send(&mut h, &numbered(203, false));
    send(&mut h, &numbered(204, false));
    assert!(drain(&mut h).to_subscriber.is_empty(), "not on layer 2 yet");
    send(&mut h, &numbered(202, true));
    let switched = drain(&mut h).to_subscriber;
    assert_eq!(switched.len(), 1, "the keyframe's first packet switches it");
    let first = rtp::parse(&switched[0]).unwrap();
    // The next frame keeps the numbering of layer 2's stream.
    let mut next = packet(2, 3, false, false);
    next[2..4].copy_from_slice(&205u16.to_be_bytes());
    send(&mut h, &next);
    let after = drain(&mut h).to_subscriber;
    assert_eq!(
        rtp::parse(&after[0]).unwrap().sequence,
        first.sequence.wrapping_add(3)
    );
    // The subscriber sees the two numbers between missing and asks for them.
    h.nack_from_subscriber(0, first.ssrc, first.sequence.wrapping_add(1), 1);
    let repairs = drain(&mut h).to_subscriber;
    assert_eq!(h.worker.stats().nacks_unanswerable, 0);
    // On its RTX stream, each with the number it asked for (RFC 4588) and layer 2's payload.
    let osns: Vec<u16> = repairs
        .iter()
        .map(|p| {
            let r = rtp::parse(p).unwrap();
            assert_eq!(r.payload_type, RTX_PT);
            assert_ne!(r.ssrc, first.ssrc);
            let body = &p[r.header_len..r.header_len + r.payload_len];
            assert_eq!(body[body.len() - 1], 2);
            u16::from_be_bytes([body[0], body[1]])
        })
        .collect();
    assert_eq!(
        osns,
        vec![
            first.sequence.wrapping_add(1),
            first.sequence.wrapping_add(2)
        ]
    );
}

/// The layer a subscriber is on stops (a publisher drops its best layer when its own estimate
/// falls): after 300 ms without it, the subscriber takes the first keyframe of any layer it may
/// have, and one is asked for, instead of freezing until the allocator moves it.
#[test]
fn a_subscriber_whose_layer_stops_takes_another_at_once() {
    let mut h = harness(1);
    publish_simulcast(&mut h);
    drain(&mut h);
    send(&mut h, &packet(2, 1, true, true));
    send(&mut h, &packet(1, 1, false, true));
    assert_eq!(drain(&mut h).to_subscriber.len(), 1);
    // Layer 1 goes on; layer 2 sends nothing more. Within 300 ms it is still the layer.
    h.now += Duration::from_millis(200);
    send(&mut h, &packet(1, 2, true, false));
    assert!(drain(&mut h).to_subscriber.is_empty());
    h.now += Duration::from_millis(400);
    send(&mut h, &packet(1, 3, false, false));
    let seen = drain(&mut h);
    assert!(seen.to_subscriber.is_empty());
    assert_eq!(seen.keyframes_asked, vec![SSRCS[1]]);
    send(&mut h, &packet(1, 4, true, false));
    let seen = drain(&mut h);
    assert_eq!(seen.to_subscriber.len(), 1);
    assert_eq!(read(&seen.to_subscriber[0]).5, 1);
}

/// The other layers say sooner that a layer stopped: once they sent three frames without it
/// (100 ms at 30 frames a second), the subscriber is moved to the best layer still flowing,
/// and only that layer's keyframe is asked for (a keyframe of every layer below would take
/// the publisher's link when it has just shrunk, and the lowest, coming first, would be
/// taken on the way).
#[test]
fn a_layer_that_misses_three_frames_of_the_others_has_stopped() {
    let mut h = harness(1);
    publish_simulcast(&mut h);
    drain(&mut h);
    let frame = Duration::from_millis(33);
    for f in 1..=5 {
        for l in (0..3).rev() {
            send(&mut h, &packet(l, f, f == 1, f == 1));
        }
        h.now += frame;
    }
    let seen = drain(&mut h);
    assert!(seen.to_subscriber.iter().all(|p| read(p).5 == 2));
    assert_eq!(seen.to_subscriber.len(), 5);
    // Layer 2 stops; 0 and 1 go on.
    for f in 6..=7 {
        send(&mut h, &packet(0, f, false, false));
        send(&mut h, &packet(1, f, false, false));
        h.now += frame;
    }
    assert!(drain(&mut h).keyframes_asked.is_empty());
    send(&mut h, &packet(0, 8, false, false));
    send(&mut h, &packet(1, 8, false, false));
    assert_eq!(drain(&mut h).keyframes_asked, vec![SSRCS[1]]);
    h.now += frame;
    send(&mut h, &packet(0, 9, false, false));
    send(&mut h, &packet(1, 9, true, false));
    let seen = drain(&mut h);
    assert_eq!(seen.to_subscriber.len(), 1);
    assert_eq!(read(&seen.to_subscriber[0]).5, 1);
}

/// A subscriber that has had nothing yet and waits for its layer, which the publisher does
/// not send (its link or its CPU cannot carry it, or nobody wanted it until now), is not left
/// waiting: a keyframe of the best layer that flows is asked for, as when the layer it had
/// stopped. (A page subscribing to a camera its publisher had just turned on again played
/// nothing for 15 s: the layers below the top one passed with no keyframe, and only the top
/// one's was asked for.)
#[test]
fn a_subscriber_that_waits_for_a_layer_not_sent_is_started_on_one_that_is() {
    let mut h = harness(1);
    publish_simulcast(&mut h);
    let (sid, uid, feed) = (Sid::from("s"), Uid::from("sub0"), FeedId::from("cam"));
    h.worker
        .set_view(h.now, &sid, &uid, &feed, view(true))
        .unwrap();
    let frame = Duration::from_millis(33);
    // Layers 0 and 1 start with keyframes while the subscriber's video is hidden; layer 2
    // never starts.
    for f in 0..10 {
        send(&mut h, &packet(0, f, f == 0, f == 0));
        send(&mut h, &packet(1, f, f == 0, f == 0));
        h.now += frame;
    }
    drain(&mut h);
    // Shown: it waits for the best layer, which asks for a keyframe of it.
    h.worker
        .set_view(h.now, &sid, &uid, &feed, view(false))
        .unwrap();
    for f in 10..=20 {
        send(&mut h, &packet(0, f, false, false));
        send(&mut h, &packet(1, f, false, false));
        h.now += frame;
    }
    let seen = drain(&mut h);
    assert!(seen.to_subscriber.is_empty());
    assert!(seen.keyframes_asked.contains(&SSRCS[1]), "{seen:?}");
    assert!(!seen.keyframes_asked.contains(&SSRCS[0]), "{seen:?}");
    // Asked for again while none comes, no more often than requests are limited to.
    for f in 21..=50 {
        send(&mut h, &packet(0, f, false, false));
        send(&mut h, &packet(1, f, false, false));
        h.now += frame;
    }
    let asked = drain(&mut h).keyframes_asked;
    assert!((1..=2).contains(&asked.len()), "{asked:?}");
    assert!(asked.iter().all(|s| *s == SSRCS[1]), "{asked:?}");
    // Layer 1's keyframe starts it.
    send(&mut h, &packet(1, 51, true, false));
    send(&mut h, &packet(0, 51, false, false));
    let seen = drain(&mut h);
    assert_eq!(seen.to_subscriber.len(), 1);
    assert_eq!(read(&seen.to_subscriber[0]).5, 1);
}

#[test]
fn a_subscriber_gets_the_layer_that_covers_its_element_and_nothing_while_it_is_hidden() {
    let mut h = harness(1);
    publish_simulcast(&mut h);
    // Every layer's first packet a keyframe: their sizes are known from here.
    for layer in 0..3 {
        send(&mut h, &packet(layer, 0, true, true));
    }
    drain(&mut h);
    let (sid, uid, feed) = (Sid::from("s"), Uid::from("sub0"), FeedId::from("cam"));
    let view = |hidden, size| View {
        size,
        ..view(hidden)
    };

    // Shown at 320x180: the lowest layer covers it, and is asked for.
    h.now += Duration::from_secs(1);
    h.worker
        .set_view(h.now, &sid, &uid, &feed, view(false, Some((320, 180))))
        .unwrap();
    assert_eq!(drain(&mut h).keyframes_asked, vec![SSRCS[0]]);
    for layer in [2, 1, 0] {
        send(&mut h, &packet(layer, 1, layer == 0, false));
    }
    send(&mut h, &packet(0, 2, false, false));
    let seen = drain(&mut h);
    let layers: Vec<u8> = seen.to_subscriber.iter().map(|p| read(p).5).collect();
    assert_eq!(layers, vec![2, 0, 0], "layer 2 until layer 0's keyframe");
    let last = read(seen.to_subscriber.last().unwrap());

    // Hidden: nothing is sent, keyframes or not, and none is asked for.
    h.now += Duration::from_secs(1);
    h.worker
        .set_view(h.now, &sid, &uid, &feed, view(true, Some((320, 180))))
        .unwrap();
    for frame in 3..30 {
        send(&mut h, &packet(0, frame, frame.is_multiple_of(10), false));
        send(&mut h, &packet(2, frame, frame.is_multiple_of(10), false));
    }
    let seen = drain(&mut h);
    assert!(seen.to_subscriber.is_empty());
    assert!(seen.keyframes_asked.is_empty());
    let paused = |paused| Event::SubscriptionPaused {
        sid: sid.clone(),
        uid: uid.clone(),
        feed_id: feed.clone(),
        paused,
    };
    assert_eq!(seen.events, vec![paused(Some(Pause::Hidden))]);
    assert_eq!(h.worker.stats().rtp_paused, 54);

    // Shown again: a keyframe is asked for and the stream goes on from it, its sequence
    // numbers continuing those sent before the pause.
    h.now += Duration::from_secs(1);
    h.worker
        .set_view(h.now, &sid, &uid, &feed, view(false, Some((320, 180))))
        .unwrap();
    let seen = drain(&mut h);
    assert_eq!(seen.keyframes_asked, vec![SSRCS[0]]);
    assert_eq!(seen.events, vec![paused(None)]);
    send(&mut h, &packet(0, 30, false, false));
    send(&mut h, &packet(0, 31, true, false));
    send(&mut h, &packet(0, 32, false, false));
    let seen = drain(&mut h);
    let sent: Vec<_> = seen.to_subscriber.iter().map(|p| read(p)).collect();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].1, last.1.wrapping_add(1));
    assert!(sent[0].2.wrapping_sub(last.2) as i32 > 0);
    assert_eq!(sent[1].1, last.1.wrapping_add(2));
    let q = h.worker.quality(&sid, &uid).expect("a participant");
    assert_eq!(
        (q.subscriptions[0].paused, q.subscriptions[0].pauses),
        (None, 1)
    );
    let stats = h.worker.stats();
    assert_eq!(
        (stats.subscriptions_paused, stats.subscriptions_resumed),
        (1, 1)
    );
}

/// Every layer's frame `frame` (a keyframe every 30), with the worker's timers run up to
/// `h.now`; what came out.
fn every_layer(h: &mut Harness, frame: u16, seen: &mut Seen) {
    for layer in 0..3 {
        send(
            h,
            &packet(layer, frame, frame.is_multiple_of(30), frame == 0),
        );
    }
    while let Some(at) = h.worker.poll_timeout().filter(|at| *at <= h.now) {
        h.worker.handle_timeout(at);
    }
    let more = drain(h);
    seen.events.extend(more.events);
    seen.to_subscriber.extend(more.to_subscriber);
}

#[test]
fn layers_nobody_receives_are_turned_off_at_the_publisher_and_back_on_when_wanted() {
    let mut h = harness(1);
    publish_simulcast(&mut h);
    drain(&mut h);
    let (sid, uid, feed) = (Sid::from("s"), Uid::from("sub0"), FeedId::from("cam"));
    h.worker
        .set_view(
            h.now,
            &sid,
            &uid,
            &feed,
            View {
                max_layer: Some(0),
                ..View::default()
            },
        )
        .unwrap();
    let layers_event = |events: &[Event]| {
        events
            .iter()
            .filter_map(|e| match e {
                Event::FeedLayers {
                    uid,
                    feed_id,
                    active,
                    ..
                } => {
                    assert_eq!((uid.0.as_str(), feed_id.0.as_str()), ("pub", "cam"));
                    Some(active.clone())
                }
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    // 30 frames a second; the only subscriber wants the lowest layer: the other two are
    // turned off once nobody has wanted them for OFF_AFTER, and the publisher told once.
    let mut seen = Seen::default();
    let start = h.now;
    let mut frame = 0;
    while h.now < start + Duration::from_secs(6) {
        every_layer(&mut h, frame, &mut seen);
        frame += 1;
        h.now += Duration::from_millis(33);
    }
    assert_eq!(layers_event(&seen.events), vec![vec!["q".to_string()]]);
    assert_eq!(h.worker.stats().dynacast_changes, 1);
    // The publisher stops them; the subscriber may have the best layer again: the allocator
    // (on the estimate's starting 1 Mbit/s: the harness's subscriber sends no feedback) moves
    // it to the top layer, whose last rate fits, and that is turned on at the next look, with
    // the middle one below it.
    h.worker
        .set_view(h.now, &sid, &uid, &feed, View::default())
        .unwrap();
    let mut seen = Seen::default();
    for _ in 0..20 {
        send(&mut h, &packet(0, frame, frame.is_multiple_of(30), false));
        while let Some(at) = h.worker.poll_timeout().filter(|at| *at <= h.now) {
            h.worker.handle_timeout(at);
        }
        seen.events.extend(drain(&mut h).events);
        frame += 1;
        h.now += Duration::from_millis(33);
    }
    assert_eq!(
        layers_event(&seen.events),
        vec![vec!["q".to_string(), "h".to_string(), "f".to_string()]]
    );
}

/// A publisher's top layer that has not started yet (Chromium starts its encodings as its own
/// estimate grows) is not turned off: the subscriber gets the layer below while waiting, but
/// its element and its link would take the top, and dynacast follows what it would take.
/// Turned off, the top layer never started, and the subscriber stayed below it for good.
#[test]
fn a_top_layer_that_has_not_started_yet_stays_on() {
    let mut h = harness(1);
    publish_simulcast(&mut h);
    // A fast link whose feedback flows, so that the allocator decides: the top layer has no
    // rate yet, so it takes the middle one.
    let mut link = Downlink::new(20_000_000.0, Duration::from_millis(10));
    let t0 = h.now;
    for frame in 0..180u16 {
        let keyframe = frame % 30 == 0;
        send(&mut h, &sized(0, frame, keyframe, 300));
        for i in 0..2 {
            let mut p = sized(1, frame, keyframe && i == 0, 1200);
            p[2..4].copy_from_slice(&(frame * 2 + i).to_be_bytes());
            send(&mut h, &p);
        }
        to_end_of_frame(&mut h, &mut link, t0, frame);
    }
    let q = h
        .worker
        .quality(&Sid::from("s"), &Uid::from("sub0"))
        .expect("a participant");
    assert_eq!(q.subscriptions[0].current, Some(1), "{q:?}");
    // Nothing turned off in 6 s, twice the time a layer nobody wants stays on.
    assert_eq!(h.worker.stats().dynacast_changes, 0, "{q:?}");
}

/// A top layer that started last and flows is not taken for one that does not while its
/// first rate window fills: a subscriber that started on it stays on it. (Its rate was
/// unknown for a second; the first allocation moved the subscriber to the middle layer, and
/// the move back up waited for a probe and a dwell: Chromium's subscriber on 640x360 where it
/// had had 1280x720.)
#[test]
fn a_top_layer_that_just_started_keeps_its_subscriber() {
    let mut h = harness(1);
    publish_simulcast(&mut h);
    let mut link = Downlink::new(20_000_000.0, Duration::from_millis(10));
    let t0 = h.now;
    for frame in 0..60u16 {
        let keyframe = frame % 30 == 0;
        // The top layer starts with a keyframe at frame 4, 133 ms after the others: the
        // subscriber moves up to it there, before a whole second of it was measured.
        if frame >= 4 {
            // Named by its rid in its first packet, as a browser does.
            let mut p = packet(2, frame, keyframe || frame == 4, frame == 4);
            p.resize(1200, 2);
            send(&mut h, &p);
        }
        send(&mut h, &sized(0, frame, keyframe, 300));
        send(&mut h, &sized(1, frame, keyframe, 600));
        to_end_of_frame(&mut h, &mut link, t0, frame);
    }
    let q = h
        .worker
        .quality(&Sid::from("s"), &Uid::from("sub0"))
        .expect("a participant");
    assert_eq!(
        (q.subscriptions[0].target, q.subscriptions[0].current),
        (2, Some(2)),
        "{q:?}"
    );
}

/// Run the worker 1 ms at a time to the end of frame `frame` (30 a second from `t0`): what it
/// sends the subscriber crosses `link`, whose feedback comes back, and timers fire.
fn to_end_of_frame(h: &mut Harness, link: &mut Downlink, t0: std::time::Instant, frame: u16) {
    while h.now < end_of_frame(t0, frame) {
        millisecond(h, link, |_, _| {});
    }
}

/// When frame `frame` (30 a second from `t0`) ends.
fn end_of_frame(t0: std::time::Instant, frame: u16) -> std::time::Instant {
    t0 + Duration::from_micros(u64::from(frame + 1) * 33_333)
}

/// One millisecond of the worker: each packet it sends the subscriber is shown to `watch`
/// (its plaintext and header, at `h.now`), then crosses `link`; the feedback comes back and
/// timers fire.
fn millisecond(
    h: &mut Harness,
    link: &mut Downlink,
    mut watch: impl FnMut(&[u8], &rtp::RtpHeader),
) {
    for (plain, wire) in h.rtp_to(0) {
        let r = rtp::parse(&plain).expect("rtp");
        watch(&plain, &r);
        if let Some(n) = rtp::transport_sequence(&plain, TWCC_EXTENSION) {
            link.carry(h.now, wire, n);
        }
    }
    link.deliver(h, 0);
    h.run_timers();
    h.now += Duration::from_millis(1);
}

/// Frame `frame` of `layer` as `count` packets of `size` bytes numbered from `first`, sent
/// to the worker; the first is the keyframe's start where it is one.
fn send_frame(
    h: &mut Harness,
    layer: usize,
    frame: u16,
    keyframe: bool,
    (count, size): (u16, usize),
    first: u16,
) {
    for i in 0..count {
        let mut p = sized(layer, frame, keyframe && i == 0, size);
        p[2..4].copy_from_slice(&first.wrapping_add(i).to_be_bytes());
        send(h, &p);
    }
}

/// A subscriber's view of a video: shown or `hidden`, at no particular size.
fn view(hidden: bool) -> View {
    View {
        hidden,
        size: None,
        max_layer: None,
    }
}

/// [`packet`] padded to `size` bytes.
fn sized(layer: usize, frame: u16, keyframe: bool, size: usize) -> Vec<u8> {
    let mut p = packet(layer, frame, keyframe, frame == 0);
    p.resize(size.max(p.len()), layer as u8);
    p
}

/// Probes repeat packets the subscriber was sent, never one still waiting in its pacer: a
/// repair of a packet that has not left yet tells the subscriber that the packets before it
/// are missing, and it asks for them (a benchmark found 70 NACKs per subscriber, each
/// answered for nothing).
#[test]
fn a_probe_repeats_only_packets_that_left_the_pacer() {
    let mut h = harness(1);
    publish_simulcast(&mut h);
    // A link that carries layer 1 but not layer 2, so that feedback flows and the estimator
    // probes (at the start, 3 and 6 times its first estimate; later for layer 2). Layer 1
    // sends a keyframe of 60 packets every second, more than a pacer burst: its tail waits.
    // (Media sent during a cluster is part of it: a probe sends few packets of its own.)
    let mut link = Downlink::new(2_000_000.0, Duration::from_millis(10));
    let t0 = h.now;
    let mut departed = std::collections::HashSet::new();
    let (mut media_ssrc, mut probes) = (None, 0);
    for frame in 0..300u16 {
        let keyframe = frame % 30 == 0;
        send(&mut h, &sized(0, frame, keyframe, 300));
        let count = if keyframe { 60 } else { 1 };
        send_frame(&mut h, 1, frame, keyframe, (count, 1200), frame * 100);
        send_frame(&mut h, 2, frame, keyframe, (12, 1000), 30_000 + frame * 12);
        while h.now < end_of_frame(t0, frame) {
            let at = h.now - t0;
            millisecond(&mut h, &mut link, |plain, r| {
                if r.payload_type == RTX_PT && r.payload_len == 0 {
                    // Padding alone (nothing of this stream cached yet).
                    probes += 1;
                } else if r.payload_type == RTX_PT {
                    let body = &plain[r.header_len..];
                    let original = u16::from_be_bytes([body[0], body[1]]);
                    assert!(
                        departed.contains(&original),
                        "a probe at {at:?} repeats {original}, which has not left"
                    );
                    probes += 1;
                } else if *media_ssrc.get_or_insert(r.ssrc) == r.ssrc {
                    departed.insert(r.sequence);
                }
            });
        }
    }
    let stats = h.worker.stats();
    assert!(probes >= 4, "{probes} probe packets");
    assert!(stats.rtp_paced > 100, "{} paced", stats.rtp_paced);
}

/// A packet handed to the recorder: its layer, its handed count, its last byte (the layer it
/// came from) and whether it carried its stream's sender report.
type Handed = (u8, u64, u8, bool);

/// What went to the recorder, and the SSRCs the publisher was asked for keyframes of.
fn recorded(h: &mut Harness) -> (Vec<Handed>, Vec<u32>) {
    let mut out = Vec::new();
    let mut keyframes = Vec::new();
    while let Some(o) = h.worker.poll_output() {
        match o {
            Output::Record(p) => {
                assert_eq!(p.recording, 7);
                assert_eq!(p.codec, relay::record::frames::Codec::Vp8);
                out.push((
                    p.layer,
                    p.handed,
                    *p.payload.last().unwrap(),
                    p.report.is_some(),
                ))
            }
            Output::Transmit(t) if t.destination == h.publisher => {
                let Ok(plain) = h.clients[0].unprotect_rtcp(&t.contents) else {
                    continue;
                };
                let mut buf = Bytes::from(plain);
                for p in rtcp::packet::unmarshal(&mut buf).expect("well-formed compound") {
                    if let Some(pli) = p.as_any().downcast_ref::<PictureLossIndication>() {
                        keyframes.push(pli.media_ssrc);
                    }
                }
            }
            _ => {}
        }
    }
    (out, keyframes)
}

#[test]
fn a_recording_follows_the_best_layer_flowing_from_a_keyframe_it_asks_for() {
    use relay::record::timeline::Track;
    let mut h = harness(0);
    publish_simulcast(&mut h);
    let (sid, cam) = (Sid::from("s"), FeedId::from("cam"));
    for layer in 0..3 {
        send(&mut h, &packet(layer, 0, false, true));
        sender_report(&mut h, layer, 0);
    }
    recorded(&mut h);
    h.worker
        .set_record_tap(h.now, &sid, &cam, Some((7, Track::Video)))
        .expect("tap");
    // Another recording of the same feed is refused.
    assert!(h
        .worker
        .set_record_tap(h.now, &sid, &cam, Some((8, Track::Video)))
        .is_err());
    let (out, keyframes) = recorded(&mut h);
    assert!(out.is_empty());
    assert_eq!(
        keyframes,
        [SSRCS[2]],
        "a keyframe of the best layer, at once"
    );

    // Delta frames: nothing yet. The top layer's keyframe: from there, its packets only.
    for frame in 1..3 {
        for layer in 0..3 {
            send(
                &mut h,
                &packet(layer, frame, frame == 2 && layer < 2, false),
            );
        }
    }
    assert!(recorded(&mut h).0.is_empty(), "no keyframe of layer 2 yet");
    for frame in 3..6 {
        for layer in 0..3 {
            send(&mut h, &packet(layer, frame, frame == 3, false));
        }
    }
    let (out, _) = recorded(&mut h);
    assert_eq!(
        out,
        [(2, 1, 2, true), (2, 2, 2, true), (2, 3, 2, true)],
        "layer 2 from its keyframe, numbered, with its sender report"
    );

    // Layer 2 stops: the recording asks for the middle layer's keyframe at the next look
    // and moves there at it.
    for frame in 6..40 {
        h.now += Duration::from_millis(33);
        for layer in 0..2 {
            send(
                &mut h,
                &packet(layer, frame, frame == 39 && layer == 1, false),
            );
        }
        h.run_timers();
    }
    let (out, keyframes) = recorded(&mut h);
    assert!(keyframes.contains(&SSRCS[1]), "{keyframes:?}");
    assert_eq!(out, [(1, 4, 1, true)], "layer 1 from its keyframe");
    assert_eq!(h.worker.stats().record.packets, 4);

    // Stopped: nothing more.
    h.worker
        .set_record_tap(h.now, &sid, &cam, None)
        .expect("untap");
    send(&mut h, &packet(1, 40, false, false));
    assert!(recorded(&mut h).0.is_empty());
}

/// What a subscriber with video alone got over a link that carries less than the lowest
/// layer for 20 s, then 5 Mbit/s for 20 s: probe packets while the video was paused (padding,
/// and packets of the video sent again), and when it resumed, in frames from the start.
#[derive(Debug, Default)]
struct PausedRun {
    padding: u32,
    resent: u32,
    resumed_at: Option<u16>,
}

fn paused_then_widened() -> PausedRun {
    paused_then_widened_hiding(None)
}

/// [`paused_then_widened`], the video hidden from frame `hide.0` to frame `hide.1`.
fn paused_then_widened_hiding(hide: Option<(u16, u16)>) -> PausedRun {
    let mut h = harness(1);
    publish_simulcast(&mut h);
    let (sid, uid, feed) = (Sid::from("s"), Uid::from("sub0"), FeedId::from("cam"));
    // Layer 0 at about 580 kbit/s (two 1200-byte packets a frame) into a 400 kbit/s link. No
    // audio: nothing but the video and its probes brings feedback.
    let mut link = Downlink::new(400_000.0, Duration::from_millis(10));
    let t0 = h.now;
    let mut run = PausedRun::default();
    for frame in 0..1200u16 {
        if frame == 600 {
            link.set_capacity(5_000_000.0);
        }
        if let Some((from, to)) = hide.filter(|&(from, to)| frame == from || frame == to) {
            h.worker
                .set_view(h.now, &sid, &uid, &feed, view(frame == from && frame != to))
                .unwrap();
        }
        let keyframe = frame % 30 == 0;
        send_frame(&mut h, 0, frame, keyframe, (2, 1200), frame * 2);
        send_frame(&mut h, 1, frame, keyframe, (4, 1200), 10_000 + frame * 4);
        while h.now < end_of_frame(t0, frame) {
            let stats = h.worker.stats();
            let paused = stats.subscriptions_paused > stats.subscriptions_resumed;
            if stats.subscriptions_resumed > 0 && run.resumed_at.is_none() {
                run.resumed_at = Some(frame);
            }
            millisecond(&mut h, &mut link, |_, r| {
                match (paused, r.payload_type == RTX_PT, r.payload_len) {
                    (true, true, 0) => run.padding += 1,
                    (true, true, _) => run.resent += 1,
                    _ => {}
                }
            });
        }
        if frame == 599 {
            let stats = h.worker.stats();
            assert_eq!(
                (stats.subscriptions_paused, stats.subscriptions_resumed),
                (1, 0),
                "paused on the narrow link, and not resumed there"
            );
        }
    }
    run
}

/// A subscriber whose only flow is a video paused for its link learns when the link widens:
/// the relay keeps probing it (no feedback comes otherwise, and the allocator looked again
/// only at feedback), and the video resumes.
#[test]
fn a_video_paused_for_bandwidth_resumes_when_the_link_widens_with_nothing_else_flowing() {
    let run = paused_then_widened();
    let resumed = run.resumed_at.expect("resumed");
    assert!(
        resumed < 600 + 10 * 30,
        "resumed at frame {resumed}: {run:?}"
    );
}

/// A video paused for its link is probed with padding alone: probes that sent its recent
/// packets again (as they do for a video that flows) could complete a picture the subscriber
/// got only in part before the pause, and its browser would show a frame of a paused video.
#[test]
fn a_video_paused_for_bandwidth_is_probed_with_padding_alone() {
    let run = paused_then_widened();
    assert!(run.padding + run.resent >= 20, "{run:?}");
    assert_eq!(
        run.resent, 0,
        "packets of the video resent as probes while paused: {run:?}"
    );
}

/// A video paused for its link, then hidden, then shown again while still paused, with
/// nothing else flowing: the allocator skips it while hidden, so its look while paused ends;
/// shown again it is looked at anew, and resumes once the link has widened.
#[test]
fn a_paused_video_hidden_then_shown_again_resumes_when_the_link_widens() {
    let run = paused_then_widened_hiding(Some((350, 650)));
    let resumed = run.resumed_at.expect("resumed");
    assert!(
        resumed > 650 && resumed < 650 + 10 * 30,
        "resumed at frame {resumed}: {run:?}"
    );
}

/// A probe cluster whose stream goes away part way (the subscriber's only video
/// unsubscribed) is given up: its packets could not be sent, and the next one stayed due,
/// so the participant's timer was due at every turn of the core and it spun.
#[test]
fn a_probe_whose_stream_goes_away_is_given_up() {
    let mut h = harness(1);
    publish_simulcast(&mut h);
    let (sid, uid, feed) = (Sid::from("s"), Uid::from("sub0"), FeedId::from("cam"));
    let mut link = Downlink::new(10_000_000.0, Duration::from_millis(10));
    let t0 = h.now;
    let mut probing = false;
    'frames: for frame in 0..300u16 {
        let keyframe = frame % 30 == 0;
        send_frame(&mut h, 1, frame, keyframe, (4, 1200), frame * 4);
        while h.now < end_of_frame(t0, frame) {
            millisecond(&mut h, &mut link, |_, r| {
                probing |= r.payload_type == RTX_PT
            });
            if probing {
                break 'frames;
            }
        }
    }
    assert!(probing, "no probe started");
    h.worker
        .unsubscribe(&sid, &uid, &feed)
        .expect("unsubscribed");
    // A second of the core's timers, each bounded: a handful of deadlines a millisecond at
    // most (reports, feedback), not one at every turn.
    let mut turns = 0;
    for _ in 0..1000 {
        let mut here = 0;
        while let Some(at) = h.worker.poll_timeout().filter(|at| *at <= h.now) {
            h.worker.handle_timeout(at.max(h.now));
            here += 1;
            if here == 100 {
                break;
            }
        }
        turns += here;
        h.rtp_to(0);
        h.now += Duration::from_millis(1);
    }
    assert!(
        turns < 200,
        "{turns} timer turns in a second with nothing to send"
    );
}
