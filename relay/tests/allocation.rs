//! Allocation across a subscriber's video feeds through a whole worker, in virtual time: two
//! cameras of 540 kbit/s each into a 1 Mbit/s link fit one at a time; the dominant speaker's
//! is the one kept, and when the speaker changes, the videos change places.

use std::time::Duration;

use relay::control::{Pause, SubscribeOptions};
use relay::engine::rtp;
use relay::fuzzing::{camera, harness, Downlink, Harness, PUBLISHER_SSRC, TWCC_EXTENSION};
use relay::ids::{FeedId, Sid, Ssrc, Uid};

/// The second camera's SSRCs.
const SECOND_SSRC: u32 = 0x4321;
const SECOND_RTX_SSRC: u32 = 0x8765;

/// Packet `seq` of the camera sending as `ssrc`: 1,200 bytes of payload.
fn media(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 1500).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n(seq as u8, 1200));
    p
}

/// Whether the subscriber's video of `feed` is paused, as `quality` tells it.
fn paused(h: &Harness, feed: &str) -> Option<Pause> {
    let q = h
        .worker
        .quality(&Sid::from("s"), &Uid::from("sub0"))
        .expect("a participant");
    q.subscriptions
        .iter()
        .find(|s| s.feed_id == FeedId::from(feed))
        .expect("subscribed")
        .paused
}

/// Run `seconds` more of both cameras (540 kbit/s each) into the subscriber's link.
fn run(h: &mut Harness, link: &mut Downlink, seq: &mut u16, seconds: u64) {
    let end = h.now + Duration::from_secs(seconds);
    let mut next_send = h.now;
    while h.now < end {
        if h.now >= next_send {
            *seq = seq.wrapping_add(1);
            for ssrc in [PUBLISHER_SSRC, SECOND_SSRC] {
                let mut p = media(ssrc, *seq);
                h.clients[0].protect_rtp(&mut p).expect("seal");
                h.worker.handle_receive(h.now, None, h.publisher, &p);
            }
            next_send += Duration::from_millis(18);
        }
        for (plain, wire) in h.rtp_to(0) {
            let number = rtp::transport_sequence(&plain, TWCC_EXTENSION).expect("numbered");
            link.carry(h.now, wire, number);
        }
        link.deliver(h, 0);
        h.run_timers();
        h.now += Duration::from_millis(1);
    }
}

#[test]
fn the_dominant_speakers_video_is_kept_where_only_one_fits() {
    let mut h = harness(1);
    let sid = Sid::from("s");
    let second = FeedId::from("cam2");
    let mut description = camera();
    description.feed_id = second.clone();
    description.ssrc = Some(Ssrc(SECOND_SSRC));
    description.rtx_ssrc = Some(Ssrc(SECOND_RTX_SSRC));
    h.worker
        .publish(&sid, &Uid::from("pub"), description)
        .expect("a second camera");
    let options = SubscribeOptions {
        mid: Some("2".into()),
        rtx: true,
        playout_delay_extension: Some(12),
        transport_cc_extension: Some(TWCC_EXTENSION),
    };
    h.worker
        .subscribe(h.now, &sid, &Uid::from("sub0"), &second, options)
        .expect("subscribe");
    // The second camera's publisher speaks: its video comes first, though it was
    // subscribed to last (without a speaker, the first camera's would).
    h.worker
        .set_speaker_feeds(&sid, vec![second.clone()])
        .unwrap();
    let mut link = Downlink::new(1_000_000.0, Duration::from_millis(20));
    let mut seq = 0;
    run(&mut h, &mut link, &mut seq, 15);
    assert_eq!(paused(&h, "cam"), Some(Pause::Bandwidth));
    assert_eq!(paused(&h, "cam2"), None);
    // The other one speaks now: the videos change places.
    h.worker
        .set_speaker_feeds(&sid, vec![FeedId::from("cam")])
        .unwrap();
    run(&mut h, &mut link, &mut seq, 10);
    assert_eq!(paused(&h, "cam"), None);
    assert_eq!(paused(&h, "cam2"), Some(Pause::Bandwidth));
    let stats = h.worker.stats();
    assert_eq!(
        (stats.subscriptions_paused, stats.subscriptions_resumed),
        (2, 1)
    );
}
