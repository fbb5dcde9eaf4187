//! A subscriber's bandwidth estimate through a whole worker, in virtual time: the relay numbers
//! every copy it sends the subscriber, the subscriber's side (the relay's own feedback writer,
//! as a browser would) reports when each arrived over an emulated bottleneck, and the estimate
//! follows the bottleneck.

use std::time::Duration;

use relay::engine::rtp;
use relay::fuzzing::{harness, Downlink, Harness, PUBLISHER_SSRC};
use relay::ids::{Sid, Uid};

/// The subscription's transport-wide number extension (as the harness subscribes).
const TRANSPORT_CC: u8 = 3;

fn media(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&PUBLISHER_SSRC.to_be_bytes());
    p.extend(std::iter::repeat_n(seq as u8, 1200));
    p
}

/// Run `seconds` of the publisher sending 1200-byte packets every `interval`, the subscriber
/// behind a link of `capacity` bit/s (unbounded queue) and 20 ms delay; returns the estimate
/// every second, the feedback messages the relay took, and the times the video was paused.
fn run(seconds: u64, interval: Duration, capacity: f64) -> (Vec<f64>, u64, u64) {
    let mut h: Harness = harness(1);
    let t0 = h.now;
    let mut link = Downlink::new(capacity, Duration::from_millis(20));
    let mut estimates = Vec::new();
    let mut seq = 0u16;
    let mut next_send = t0;
    let mut next_sample = t0 + Duration::from_secs(1);
    let end = t0 + Duration::from_secs(seconds);
    while h.now < end {
        if h.now >= next_send {
            seq = seq.wrapping_add(1);
            let mut p = media(seq);
            h.clients[0].protect_rtp(&mut p).expect("seal");
            h.worker.handle_receive(h.now, None, h.publisher, &p);
            next_send += interval;
        }
        for (plain, wire) in h.rtp_to(0) {
            let number = rtp::transport_sequence(&plain, TRANSPORT_CC).expect("numbered");
            link.carry(h.now, wire, number);
        }
        link.deliver(&mut h, 0);
        h.run_timers();
        if h.now >= next_sample {
            let e = h.worker.estimate(&Sid::from("s"), &Uid::from("sub0"));
            estimates.push(e.expect("subscriber").expect("estimated"));
            next_sample += Duration::from_secs(1);
        }
        h.now += Duration::from_millis(1);
    }
    let stats = h.worker.stats();
    (
        estimates,
        stats.twcc_feedback_received,
        stats.subscriptions_paused,
    )
}

#[test]
fn the_estimate_follows_a_bottleneck_on_the_subscribers_link() {
    // 2 Mbit/s of video (1216-byte packets every 5 ms) into a 1 Mbit/s link: the queue grows,
    // the estimate falls, and the video (one layer, which does not fit) is paused.
    let (narrow, feedback, paused) = run(8, Duration::from_millis(5), 1_000_000.0);
    assert!(feedback > 50, "feedback taken: {feedback}");
    assert!(narrow[6] < 1_000_000.0, "estimates {narrow:?}");
    assert_eq!(paused, 1);
    // The same into a 10 Mbit/s link: no queue, no loss; the first probes (with the media
    // sent meanwhile) find more than the start, the estimate grows to 1.5 times what is
    // delivered, and the video is never paused, though it needs more than the estimate at
    // first.
    let (wide, _, paused) = run(8, Duration::from_millis(5), 10_000_000.0);
    assert!(wide.windows(2).all(|w| w[1] >= w[0]), "estimates {wide:?}");
    assert!(wide[6] > 1_500_000.0, "estimates {wide:?}");
    assert_eq!(paused, 0);
}
