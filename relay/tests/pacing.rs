//! A subscriber's pacer through a whole worker, in virtual time: a keyframe's burst leaves
//! spread at 2.5 times the subscriber's estimate instead of all at once, numbered in the order
//! it leaves; steady media below that rate is never held.

use std::time::{Duration, Instant};

use relay::engine::pacer::{MAX_BURST, MAX_BURST_BYTES, PACING_FACTOR};
use relay::engine::rtp;
use relay::fuzzing::{harness, Harness, PUBLISHER_SSRC};
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

fn publish(h: &mut Harness, seq: u16) {
    let mut p = media(seq);
    h.clients[0].protect_rtp(&mut p).expect("seal");
    h.worker.handle_receive(h.now, None, h.publisher, &p);
}

/// A packet as it reached the subscriber.
struct Departure {
    at: Instant,
    size: usize,
    sequence: u16,
    transport_sequence: u16,
    /// The byte the payload repeats, if it is a payload as published (1200 times one byte).
    fill: Option<u8>,
}

/// Take what the worker sent the subscriber (RTP only) at `h.now`.
fn take(h: &mut Harness, into: &mut Vec<Departure>) {
    for (plain, size) in h.rtp_to(0) {
        let header = rtp::parse(&plain).expect("rtp");
        let payload = &plain[header.header_len..header.header_len + header.payload_len];
        let fill = (payload.len() == 1200 && payload.iter().all(|b| *b == payload[0]))
            .then_some(payload[0]);
        into.push(Departure {
            at: h.now,
            size,
            sequence: header.sequence,
            transport_sequence: rtp::transport_sequence(&plain, TRANSPORT_CC).expect("numbered"),
            fill,
        });
    }
}

/// Run the worker's timers until `until`, taking what it sends.
fn run_until(h: &mut Harness, until: Instant, into: &mut Vec<Departure>) {
    take(h, into);
    while let Some(at) = h.worker.poll_timeout().filter(|at| *at <= until) {
        h.now = h.now.max(at);
        h.worker.handle_timeout(h.now);
        take(h, into);
    }
    h.now = until;
}

#[test]
fn a_keyframe_burst_leaves_at_the_pacing_rate_numbered_as_it_leaves() {
    let mut h = harness(1);
    let estimate = h
        .worker
        .estimate(&Sid::from("s"), &Uid::from("sub0"))
        .expect("subscriber")
        .expect("estimated");
    let t0 = h.now;
    for seq in 1..=40 {
        publish(&mut h, seq);
    }
    let mut sent = Vec::new();
    run_until(&mut h, t0 + Duration::from_secs(1), &mut sent);

    assert_eq!(sent.len(), 40);
    // Those that waited were written when they left, from the feed's cached packets.
    assert!(sent
        .iter()
        .enumerate()
        .all(|(i, d)| d.fill == Some(i as u8 + 1)));
    // In order, and numbered in the order they left: the estimator sees no reordering.
    assert!(sent
        .windows(2)
        .all(|w| w[1].sequence == w[0].sequence.wrapping_add(1)
            && w[1].transport_sequence == w[0].transport_sequence.wrapping_add(1)));
    // Spread at 2.5 times the estimate: what was sent before the last one, less the burst a
    // new pacer starts with, at the pacing rate.
    let rate = PACING_FACTOR * estimate / 8.0;
    let burst = (rate * MAX_BURST.as_secs_f64()).min(MAX_BURST_BYTES);
    let before_last: usize = sent[..39].iter().map(|d| d.size).sum();
    let expected = Duration::from_secs_f64((before_last as f64 - burst) / rate);
    let took = sent[39].at - t0;
    // (The pacer counts packets before SRTP adds its tag: 1% less than on the wire.)
    assert!(
        took >= expected.mul_f64(0.98) && took < expected + Duration::from_millis(2),
        "last left after {took:?}, expected {expected:?}"
    );
    // Never more at one instant than a burst's worth and the packet that overdraws it.
    let mut i = 0;
    while i < sent.len() {
        let same: Vec<&Departure> = sent[i..]
            .iter()
            .take_while(|d| d.at == sent[i].at)
            .collect();
        let bytes: usize = same.iter().map(|d| d.size).sum();
        assert!(
            bytes as f64 <= burst + 1300.0,
            "{bytes} bytes at {:?}",
            sent[i].at - t0
        );
        i += same.len();
    }
    let stats = h.worker.stats();
    let waited = sent.iter().filter(|d| d.at > t0).count() as u64;
    assert_eq!(stats.rtp_paced, waited);
    assert_eq!(stats.pacing_delay.count(), waited);
    let longest = stats.pacing_delay.quantile(1.0);
    assert!(
        (took.as_micros() as u64..=took.as_micros() as u64 * 9 / 8).contains(&longest),
        "longest wait {longest} µs"
    );
}

#[test]
fn steady_media_below_the_pacing_rate_is_never_held() {
    let mut h = harness(1);
    let t0 = h.now;
    let mut sent = Vec::new();
    // 1216-byte packets every 5 ms: 2 Mbit/s, under 2.5 times the 1 Mbit/s starting estimate.
    for seq in 1..=400 {
        publish(&mut h, seq);
        take(&mut h, &mut sent);
        assert_eq!(sent.len(), usize::from(seq), "packet {seq} held");
        assert_eq!(sent.last().map(|d| d.at), Some(h.now));
        let next = h.now + Duration::from_millis(5);
        run_until(&mut h, next, &mut sent);
    }
    assert!(h.now - t0 >= Duration::from_secs(2));
    assert_eq!(h.worker.stats().rtp_paced, 0);
}
