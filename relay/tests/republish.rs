//! A publisher whose SSRCs change again and again over a long call (a camera turned off and
//! on, a screen share restarted, a renegotiation): each time, the relay forgets the SRTP
//! state of the SSRCs it no longer routes, so the new ones are never refused for the old
//! ones' sake.

use relay::control::SubscribeOptions;
use relay::fuzzing::{camera, harness, Harness};
use relay::ids::{FeedId, Sid, Ssrc, Uid};
use relay::stats::DropReason;

/// A VP8 keyframe packet of `ssrc`, one packet a frame.
fn keyframe(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0x80 | 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    // Payload descriptor (start of partition, 15-bit PictureID), then a keyframe's tag,
    // start code and 320x180.
    p.extend_from_slice(&[0x90, 0x80]);
    p.extend_from_slice(&(0x8000 | seq).to_be_bytes());
    p.extend_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]);
    p.extend_from_slice(&320u16.to_le_bytes());
    p.extend_from_slice(&180u16.to_le_bytes());
    p.extend(std::iter::repeat_n(7u8, 200));
    p
}

fn send(h: &mut Harness, plain: &[u8]) {
    let mut sealed = plain.to_vec();
    h.clients[0].protect_rtp(&mut sealed).expect("protect");
    h.worker.handle_receive(h.now, None, h.publisher, &sealed);
}

/// The harness's camera sending on `ssrc`, its RTX on the next.
fn camera_on(ssrc: u32) -> relay::control::FeedDescription {
    relay::control::FeedDescription {
        ssrc: Some(Ssrc(ssrc)),
        rtx_ssrc: Some(Ssrc(ssrc + 1)),
        ..camera()
    }
}

/// Three keyframe packets on `ssrc` reach the subscriber.
fn three_keyframes_arrive(h: &mut Harness, ssrc: u32, round: u32) {
    for seq in 0..3u16 {
        send(h, &keyframe(ssrc, (100 * round) as u16 + seq));
    }
    h.run_timers();
    let got = h.rtp_to(0).len();
    let refused = h.worker.stats().dropped(DropReason::SrtpReplay);
    assert_eq!(
        got, 3,
        "round {round}: the subscriber got {got} of 3 packets (SRTP replay drops: {refused})"
    );
}

#[test]
fn a_publisher_changing_its_ssrcs_a_hundred_times_is_still_forwarded() {
    let mut h = harness(1);
    for round in 0..100u32 {
        // 100 ms a round (10 s in all, within ICE consent), so that the subscriber's pacer has
        // room for three packets.
        h.now += std::time::Duration::from_millis(100);
        h.run_timers();
        let ssrc = 0x5000_0000 + 2 * round;
        h.worker
            .publish(&Sid::from("s"), &Uid::from("pub"), camera_on(ssrc))
            .expect("the feed's new SSRCs");
        three_keyframes_arrive(&mut h, ssrc, round);
    }
}

#[test]
fn a_feed_unpublished_and_published_again_a_hundred_times_is_still_forwarded() {
    let mut h = harness(1);
    let (sid, publisher, subscriber) = (Sid::from("s"), Uid::from("pub"), Uid::from("sub0"));
    // The subscriber's side forgets each subscription's SSRC when it ends, as a browser does
    // with its transceiver's.
    let mut receiving: Option<u32> = None;
    for round in 0..100u32 {
        h.now += std::time::Duration::from_millis(100);
        h.run_timers();
        h.worker
            .unpublish(&sid, &publisher, &FeedId::from("cam"))
            .expect("unpublish");
        if let Some(old) = receiving.take() {
            h.clients[1].forget_remote(old);
        }
        let ssrc = 0x6000_0000 + 2 * round;
        h.worker
            .publish(&sid, &publisher, camera_on(ssrc))
            .expect("publish again");
        let info = h
            .worker
            .subscribe(
                h.now,
                &sid,
                &subscriber,
                &FeedId::from("cam"),
                SubscribeOptions {
                    mid: Some("1".into()),
                    rtx: true,
                    playout_delay_extension: None,
                    transport_cc_extension: Some(3),
                },
            )
            .expect("subscribe again");
        receiving = Some(info.ssrc.0);
        three_keyframes_arrive(&mut h, ssrc, round);
    }
}
