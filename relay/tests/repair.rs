//! Packet repair through the relay, in virtual time: a packet the publisher's link lost is
//! NACKed, its retransmission (RTX) is forwarded to the subscriber as the original and counted
//! as a repair used; a subscriber's NACK is answered from the relay's cache on the
//! subscriber's own RTX stream, repeats within a round trip are ignored, and resends are
//! bounded.

use std::time::{Duration, Instant};

use bytes::Bytes;
use relay::engine::playout_delay::PlayoutDelay;
use relay::engine::rtp;
use relay::fuzzing::{harness, Harness, PUBLISHER_RTX_SSRC, PUBLISHER_SSRC, RTX_PT};
use relay::sfu::feed::nack::DEFAULT_RETRY;
use relay::sfu::worker::Output;
use rtcp::extended_report::{
    DLRRReport, DLRRReportBlock, ExtendedReport, ReceiverReferenceTimeReportBlock,
};
use rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use webrtc_util::marshal::Marshal;

fn payload(seq: u16) -> Vec<u8> {
    std::iter::repeat_n(seq as u8, 200).collect()
}

/// A media packet of the harness camera (no extensions).
fn media(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&PUBLISHER_SSRC.to_be_bytes());
    p.extend(payload(seq));
    p
}

/// The publisher's retransmission of `original` as RTX packet `rtx_seq`.
fn rtx(original: u16, rtx_seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, RTX_PT];
    p.extend_from_slice(&rtx_seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(original) * 3000).to_be_bytes());
    p.extend_from_slice(&PUBLISHER_RTX_SSRC.to_be_bytes());
    p.extend_from_slice(&original.to_be_bytes());
    p.extend(payload(original));
    p
}

fn send_rtp(h: &mut Harness, from: usize, plain: &[u8]) {
    let mut sealed = plain.to_vec();
    h.clients[from].protect_rtp(&mut sealed).expect("protect");
    let src = if from == 0 {
        h.publisher
    } else {
        h.subscribers[from - 1]
    };
    h.worker.handle_receive(h.now, None, src, &sealed);
}

fn send_rtcp(h: &mut Harness, from: usize, plain: &[u8]) {
    let sealed = h.clients[from].protect_rtcp(plain).expect("protect");
    let src = if from == 0 {
        h.publisher
    } else {
        h.subscribers[from - 1]
    };
    h.worker.handle_receive(h.now, None, src, &sealed);
}

/// What reached whom: (RTP to the subscriber, decrypted), (NACKs to the publisher).
#[derive(Default)]
struct Seen {
    to_subscriber: Vec<Vec<u8>>,
    nacks: Vec<TransportLayerNack>,
    /// Extended reports to the publisher and to the subscriber.
    xr_to_publisher: Vec<ExtendedReport>,
    xr_to_subscriber: Vec<ExtendedReport>,
}

/// Drain outputs and run timers up to `until`, as the I/O shell does.
fn run_until(h: &mut Harness, until: Instant) -> Seen {
    let mut seen = Seen::default();
    loop {
        while let Some(o) = h.worker.poll_output() {
            let Output::Transmit(t) = o else { continue };
            if t.destination == h.publisher {
                for p in h.rtcp_to_publisher(&t.contents).unwrap_or_default() {
                    if let Some(n) = p.as_any().downcast_ref::<TransportLayerNack>() {
                        seen.nacks.push(n.clone());
                    }
                    if let Some(x) = p.as_any().downcast_ref::<ExtendedReport>() {
                        seen.xr_to_publisher.push(x.clone());
                    }
                }
            } else if t.destination == h.subscribers[0] && (192..=223).contains(&t.contents[1]) {
                let plain = h.clients[1]
                    .unprotect_rtcp(&t.contents)
                    .expect("authentic RTCP to the subscriber");
                let mut buf = Bytes::from(plain);
                for p in rtcp::packet::unmarshal(&mut buf).expect("well-formed compound") {
                    if let Some(x) = p.as_any().downcast_ref::<ExtendedReport>() {
                        seen.xr_to_subscriber.push(x.clone());
                    }
                }
            } else if t.destination == h.subscribers[0] {
                // RTP, not RTCP (RFC 5761 §4: RTCP packet types 192..=223).
                let mut plain = Vec::new();
                h.clients[1]
                    .unprotect_rtp(&t.contents, &mut plain)
                    .expect("authentic RTP to the subscriber");
                seen.to_subscriber.push(plain);
            }
        }
        match h.worker.poll_timeout() {
            Some(at) if at <= until => {
                h.now = h.now.max(at);
                h.worker.handle_timeout(h.now);
            }
            _ => break,
        }
    }
    h.now = until;
    seen
}

fn run_for(h: &mut Harness, d: Duration) -> Seen {
    let until = h.now + d;
    run_until(h, until)
}

/// Signalling says the subscriber's answer took RTX or not, the playout-delay extension (id
/// 12) or not, and no transport-wide numbers.
fn answer(h: &mut Harness, rtx: bool, playout_delay: bool) {
    let options = relay::control::SubscribeOptions {
        mid: Some("1".into()),
        rtx,
        playout_delay_extension: playout_delay.then_some(12),
        transport_cc_extension: None,
    };
    h.worker
        .update_subscription(
            &relay::ids::Sid::from("s"),
            &relay::ids::Uid::from("sub0"),
            &relay::ids::FeedId::from("cam"),
            options,
        )
        .expect("update");
}

/// The last datagram the worker sent, as it went on the wire (the others are dropped): the
/// copy of the packet just handed in, which the subscriber's link then loses.
fn last_sent(h: &mut Harness) -> Option<Vec<u8>> {
    let mut last = None;
    while let Some(o) = h.worker.poll_output() {
        if let Output::Transmit(t) = o {
            last = Some(t.contents);
        }
    }
    last
}

fn nacked(nacks: &[TransportLayerNack]) -> Vec<u16> {
    nacks
        .iter()
        .flat_map(|n| n.nacks.iter().flat_map(|p| p.packet_list()))
        .collect()
}

#[test]
fn a_packet_lost_on_the_way_in_is_nacked_and_its_repair_forwarded_as_the_original() {
    let mut h = harness(1);
    let t0 = h.now;
    for seq in [100, 101, 103, 104] {
        send_rtp(&mut h, 0, &media(seq));
    }
    let seen = run_until(&mut h, t0 + Duration::from_millis(1));
    assert_eq!(seen.to_subscriber.len(), 4);
    assert_eq!(nacked(&seen.nacks), vec![102], "asked for at once");
    let first = rtp::parse(&seen.to_subscriber[0]).unwrap();
    let media_ssrc = first.ssrc;

    // Not repaired yet: asked again after the retry interval, and only then.
    let seen = run_until(&mut h, t0 + DEFAULT_RETRY - Duration::from_millis(2));
    assert!(seen.nacks.is_empty());
    let seen = run_until(&mut h, t0 + DEFAULT_RETRY + Duration::from_millis(1));
    assert_eq!(nacked(&seen.nacks), vec![102]);

    // The repair arrives over RTX and goes to the subscriber as packet 102 of its stream.
    send_rtp(&mut h, 0, &rtx(102, 7));
    let seen = run_for(&mut h, Duration::from_millis(1));
    assert_eq!(seen.to_subscriber.len(), 1);
    let got = rtp::parse(&seen.to_subscriber[0]).unwrap();
    assert_eq!(got.ssrc, media_ssrc);
    assert_eq!(got.payload_type, 96);
    assert_eq!(got.sequence, first.sequence.wrapping_add(2));
    assert_eq!(&seen.to_subscriber[0][got.header_len..], &payload(102)[..]);
    let stats = h.worker.stats();
    assert_eq!((stats.rtx_received, stats.repairs_used), (1, 1));
    assert_eq!(stats.nacks_sent, 2);
    assert_eq!(stats.nack_packets_requested, 2);

    // Nothing is missing any more, so nothing more is asked for.
    let seen = run_for(&mut h, Duration::from_secs(2));
    assert!(seen.nacks.is_empty());

    // A second copy of the repair, a resend of a packet that was never lost (as Chromium
    // probes) and a padding-only probe are not forwarded.
    send_rtp(&mut h, 0, &rtx(102, 8));
    send_rtp(&mut h, 0, &rtx(103, 9));
    let mut probe = vec![0xa0, RTX_PT, 0, 10, 0, 0, 0, 0];
    probe.extend_from_slice(&PUBLISHER_RTX_SSRC.to_be_bytes());
    probe.extend_from_slice(&[0; 99]);
    probe.push(100);
    send_rtp(&mut h, 0, &probe);
    let seen = run_for(&mut h, Duration::from_millis(1));
    assert!(seen.to_subscriber.is_empty());
    let stats = h.worker.stats();
    assert_eq!(stats.rtx_redundant, 2);
    assert_eq!(stats.rtx_probes_dropped, 1);
    assert_eq!(stats.repairs_used, 1);
}

#[test]
fn a_packet_never_repaired_is_given_up_within_the_useful_window() {
    let mut h = harness(1);
    let t0 = h.now;
    send_rtp(&mut h, 0, &media(1));
    send_rtp(&mut h, 0, &media(3));
    let seen = run_until(&mut h, t0 + Duration::from_secs(5));
    let asked = nacked(&seen.nacks);
    assert!(
        asked.len() >= 5 && asked.len() <= relay::sfu::feed::nack::MAX_TRIES as usize,
        "asked {} times",
        asked.len()
    );
    assert!(asked.iter().all(|s| *s == 2));
    assert_eq!(
        h.worker
            .poll_timeout()
            .filter(|t| *t < t0 + Duration::from_secs(5)),
        None
    );
}

/// Chromium's probes resend its latest packets over RTX. Where the original of one was lost,
/// the probe is the only copy that comes: it is forwarded as the original, whether it comes
/// before the relay noticed the gap, or after it gave up asking.
#[test]
fn a_resend_nobody_asked_for_fills_the_gap_it_finds() {
    let mut h = harness(1);
    let t0 = h.now;
    send_rtp(&mut h, 0, &media(100));
    // 101 is lost; its resend arrives before anything newer.
    send_rtp(&mut h, 0, &rtx(101, 1));
    send_rtp(&mut h, 0, &media(102));
    let seen = run_until(&mut h, t0 + Duration::from_millis(1));
    assert_eq!(seen.to_subscriber.len(), 3);
    let seqs: Vec<u16> = seen
        .to_subscriber
        .iter()
        .map(|p| rtp::parse(p).unwrap().sequence)
        .collect();
    assert_eq!(seqs[1], seqs[0].wrapping_add(1));
    assert_eq!(seqs[2], seqs[0].wrapping_add(2));
    assert!(seen.nacks.is_empty(), "nothing is missing");

    // 104 is lost and asked for until the relay gives up; a resend after that still goes out.
    send_rtp(&mut h, 0, &media(103));
    send_rtp(&mut h, 0, &media(105));
    let seen = run_until(&mut h, t0 + Duration::from_secs(3));
    assert!(nacked(&seen.nacks).iter().all(|s| *s == 104));
    assert_eq!(seen.to_subscriber.len(), 2);
    send_rtp(&mut h, 0, &rtx(104, 2));
    let seen = run_for(&mut h, Duration::from_millis(1));
    assert_eq!(seen.to_subscriber.len(), 1);
    assert_eq!(
        &seen.to_subscriber[0][rtp::parse(&seen.to_subscriber[0]).unwrap().header_len..],
        &payload(104)[..]
    );
    assert_eq!(h.worker.stats().repairs_used, 2);
    assert_eq!(h.worker.stats().rtx_redundant, 0);
}

/// Round trips from extended reports (RFC 3611): the relay answers a subscriber's reference
/// time with a DLRR (a receive-only browser has no other way to learn its RTT), and spaces its
/// NACKs to a publisher by the round trip the publisher's DLRR gives it.
#[test]
fn round_trips_from_reference_times_both_ways() {
    let mut h = harness(1);
    send_rtp(&mut h, 0, &media(1));
    let rrtr = ExtendedReport {
        sender_ssrc: 0xabc,
        reports: vec![Box::new(ReceiverReferenceTimeReportBlock {
            ntp_timestamp: 0x0000_1234_5678_0000,
        })],
    };
    send_rtcp(&mut h, 1, &rrtr.marshal().unwrap());
    let seen = run_for(&mut h, Duration::from_millis(1500));
    let dlrr: Vec<DLRRReport> = seen
        .xr_to_subscriber
        .iter()
        .flat_map(|x| x.reports.iter())
        .filter_map(|b| b.as_any().downcast_ref::<DLRRReportBlock>())
        .flat_map(|b| b.reports.clone())
        .collect();
    assert_eq!(dlrr.len(), 1, "answered once");
    assert_eq!((dlrr[0].ssrc, dlrr[0].last_rr), (0xabc, 0x1234_5678));
    // Held until the next report, at most a report interval (1 s).
    assert!(
        dlrr[0].dlrr > 0 && dlrr[0].dlrr <= 65536,
        "{}",
        dlrr[0].dlrr
    );

    // The relay's next reference time to the publisher (seen within 10 ms of when it went
    // out), answered 300 ms later with no hold: a round trip of 300-310 ms.
    let mut found = None;
    for _ in 0..200 {
        let seen = run_for(&mut h, Duration::from_millis(10));
        found = seen.xr_to_publisher.iter().find_map(|x| {
            x.reports.iter().find_map(|b| {
                b.as_any()
                    .downcast_ref::<ReceiverReferenceTimeReportBlock>()
                    .map(|r| (x.sender_ssrc, (r.ntp_timestamp >> 16) as u32))
            })
        });
        if found.is_some() {
            break;
        }
    }
    let (relay_ssrc, sent) = found.expect("a reference time to the publisher");
    run_for(&mut h, Duration::from_millis(300));
    let answer = ExtendedReport {
        sender_ssrc: PUBLISHER_SSRC,
        reports: vec![Box::new(DLRRReportBlock {
            reports: vec![DLRRReport {
                ssrc: relay_ssrc,
                last_rr: sent,
                dlrr: 0,
            }],
        })],
    };
    send_rtcp(&mut h, 0, &answer.marshal().unwrap());

    // A gap: asked for at once, then again after 1.25 × 300 ms, not after the default 100 ms.
    let t0 = h.now;
    send_rtp(&mut h, 0, &media(2));
    send_rtp(&mut h, 0, &media(4));
    let seen = run_until(&mut h, t0 + Duration::from_millis(1));
    assert_eq!(nacked(&seen.nacks), vec![3]);
    let seen = run_until(&mut h, t0 + Duration::from_millis(370));
    assert!(seen.nacks.is_empty(), "asked again too soon");
    let seen = run_until(&mut h, t0 + Duration::from_millis(390));
    assert_eq!(nacked(&seen.nacks), vec![3]);
}

/// A generic NACK from the subscriber for `seqs` of its stream `media_ssrc`.
fn nack_packet(media_ssrc: u32, pid: u16, blp: u16) -> Vec<u8> {
    TransportLayerNack {
        sender_ssrc: 1,
        media_ssrc,
        nacks: vec![NackPair {
            packet_id: pid,
            lost_packets: blp,
        }],
    }
    .marshal()
    .unwrap()
    .to_vec()
}

#[test]
fn a_subscribers_nack_is_answered_from_the_cache_on_its_rtx_stream() {
    let mut h = harness(1);
    let t0 = h.now;
    for seq in 500..510 {
        send_rtp(&mut h, 0, &media(seq));
    }
    // (Through the subscriber's pacer, which spreads the burst over a few ms.)
    let seen = run_until(&mut h, t0 + Duration::from_millis(20));
    assert_eq!(seen.to_subscriber.len(), 10);
    let sent: Vec<_> = seen
        .to_subscriber
        .iter()
        .map(|p| (rtp::parse(p).unwrap(), p.clone()))
        .collect();
    let media_ssrc = sent[0].0.ssrc;
    let s3 = sent[3].0.sequence;
    let s5 = sent[5].0.sequence;

    // The subscriber lost its packets 3 and 5 (PID s3, bit 1 for s3 + 2).
    send_rtcp(&mut h, 1, &nack_packet(media_ssrc, s3, 0b10));
    let seen = run_for(&mut h, Duration::from_millis(1));
    assert_eq!(seen.to_subscriber.len(), 2);
    let mut rtx_seqs = Vec::new();
    for (resent, original) in seen.to_subscriber.iter().zip([&sent[3], &sent[5]]) {
        let r = rtp::parse(resent).unwrap();
        assert_ne!(r.ssrc, media_ssrc, "on the subscriber's RTX stream");
        assert_eq!(r.timestamp, original.0.timestamp);
        let body = &resent[r.header_len..];
        // RFC 4588: the outgoing sequence number, then the payload exactly as sent.
        assert_eq!(&body[..2], &original.0.sequence.to_be_bytes());
        assert_eq!(&body[2..], &original.1[original.0.header_len..]);
        rtx_seqs.push(r.sequence);
    }
    assert_eq!(rtx_seqs[1], rtx_seqs[0].wrapping_add(1));
    assert_eq!(h.worker.stats().retransmissions_sent, 2);

    // Asked again within one round trip: the repair is on its way, nothing is sent.
    send_rtcp(&mut h, 1, &nack_packet(media_ssrc, s5, 0));
    let seen = run_for(&mut h, Duration::from_millis(1));
    assert!(seen.to_subscriber.is_empty());
    // After a round trip it is sent again, but at most three times in all.
    let mut resent = 1;
    for _ in 0..5 {
        let later = h.now + Duration::from_millis(150);
        run_until(&mut h, later);
        send_rtcp(&mut h, 1, &nack_packet(media_ssrc, s5, 0));
        resent += run_for(&mut h, Duration::from_millis(1))
            .to_subscriber
            .len();
    }
    assert_eq!(resent, 3);

    // A packet never sent to it (ahead of its stream) and one long gone cannot be answered.
    let before = h.worker.stats().nacks_unanswerable;
    send_rtcp(&mut h, 1, &nack_packet(media_ssrc, s5.wrapping_add(100), 0));
    send_rtcp(
        &mut h,
        1,
        &nack_packet(media_ssrc, s3.wrapping_sub(1000), 0),
    );
    assert!(run_for(&mut h, Duration::from_millis(1))
        .to_subscriber
        .is_empty());
    assert_eq!(h.worker.stats().nacks_unanswerable, before + 2);
}

/// The playout delay a packet to the subscriber carries (extension 12, as the harness's
/// subscription negotiated it).
fn playout_delay(packet: &[u8]) -> Option<PlayoutDelay> {
    rtp::extension(packet, 12).and_then(PlayoutDelay::parse)
}

/// While the relay asks the publisher for repairs, the subscriber is told to hold frames for
/// as long as a repair can take (a retry and a round trip), so that a repair from far away
/// arrives before its frame is due; when the losses stop, the minimum goes back to zero.
#[test]
fn subscribers_wait_for_repairs_while_the_publisher_loses_packets() {
    let mut h = harness(1);
    let t0 = h.now;
    let no_minimum = PlayoutDelay::new(Duration::ZERO, Duration::from_secs(10));
    send_rtp(&mut h, 0, &media(1));
    send_rtp(&mut h, 0, &media(2));
    let seen = run_until(&mut h, t0 + Duration::from_millis(1));
    assert_eq!(seen.to_subscriber.len(), 2);
    for p in &seen.to_subscriber {
        assert_eq!(playout_delay(p), Some(no_minimum));
    }

    // 3 is lost: asked for, and what follows carries the time a repair can take (no round
    // trip measured yet: the 100 ms retry twice).
    send_rtp(&mut h, 0, &media(4));
    let seen = run_for(&mut h, Duration::from_millis(1));
    assert_eq!(nacked(&seen.nacks), vec![3]);
    send_rtp(&mut h, 0, &media(5));
    let seen = run_for(&mut h, Duration::from_millis(1));
    let waiting = playout_delay(&seen.to_subscriber[0]).expect("the extension");
    assert_eq!(waiting.min(), DEFAULT_RETRY * 2);
    assert_eq!(waiting.max(), Duration::from_secs(10));

    // Repaired; ten seconds without a request later the minimum is gone.
    send_rtp(&mut h, 0, &rtx(3, 1));
    let seen = run_for(&mut h, Duration::from_millis(1));
    assert_eq!(playout_delay(&seen.to_subscriber[0]), Some(waiting));
    run_for(&mut h, relay::sfu::repair_wait::HOLD);
    send_rtp(&mut h, 0, &media(6));
    let seen = run_for(&mut h, Duration::from_millis(1));
    assert_eq!(playout_delay(&seen.to_subscriber[0]), Some(no_minimum));
}

/// A subscriber that asks for repairs is told to hold frames long enough for a second one
/// (its first repair lost too): two of its round trips and a frame. The repair itself, on the
/// RTX stream, and what follows carry it; it goes once the subscriber stops asking. A
/// subscriber repaired with plain retransmissions keeps the feed's delay: its repairs must be
/// the packets as first sent.
#[test]
fn a_subscriber_that_asks_for_repairs_waits_for_a_second_one() {
    let no_minimum = PlayoutDelay::new(Duration::ZERO, Duration::from_secs(10));
    // No round trip measured yet: the default 100 ms, twice, and 40 ms for the gap to show.
    let waiting = PlayoutDelay::new(Duration::from_millis(240), Duration::from_secs(10));
    for rtx in [true, false] {
        let mut h = harness(1);
        if !rtx {
            answer(&mut h, false, true);
        }
        send_rtp(&mut h, 0, &media(1));
        let seen = run_for(&mut h, Duration::from_millis(1));
        assert_eq!(playout_delay(&seen.to_subscriber[0]), Some(no_minimum));
        let first = rtp::parse(&seen.to_subscriber[0]).unwrap();
        // The subscriber's link loses the copy of 2 (it never reaches its SRTP context, which
        // would take a plain retransmission for a replay).
        send_rtp(&mut h, 0, &media(2));
        while h.worker.poll_output().is_some() {}
        let lost = first.sequence.wrapping_add(1);
        send_rtcp(&mut h, 1, &nack_packet(first.ssrc, lost, 0));
        let seen = run_for(&mut h, Duration::from_millis(1));
        assert_eq!(seen.to_subscriber.len(), 1, "rtx {rtx}");
        let expected = if rtx { waiting } else { no_minimum };
        assert_eq!(playout_delay(&seen.to_subscriber[0]), Some(expected));
        send_rtp(&mut h, 0, &media(3));
        let seen = run_for(&mut h, Duration::from_millis(1));
        assert_eq!(playout_delay(&seen.to_subscriber[0]), Some(expected));
        run_for(&mut h, relay::sfu::repair_wait::HOLD);
        send_rtp(&mut h, 0, &media(4));
        let seen = run_for(&mut h, Duration::from_millis(1));
        assert_eq!(playout_delay(&seen.to_subscriber[0]), Some(no_minimum));
    }
}

/// A subscriber with RTX and the playout-delay extension but no transport-wide numbers, sent a
/// packet of a payload type that has no RTX pair (the harness camera's 97): asked for it, the
/// relay cannot send it on the RTX stream, and sent again as it was it would carry the
/// playout delay of now, which the request itself raised (the subscriber now waits for
/// repairs), under the SRTP index of the first copy: other bytes under a used nonce. It is not
/// sent again.
#[test]
fn a_packet_without_an_rtx_pair_is_not_resent_with_another_playout_delay() {
    let mut h = harness(1);
    answer(&mut h, true, true);
    let pt97 = |seq| {
        let mut p = media(seq);
        p[1] = 97;
        p
    };
    send_rtp(&mut h, 0, &pt97(1));
    let seen = run_for(&mut h, Duration::from_millis(1));
    let first = rtp::parse(&seen.to_subscriber[0]).unwrap();
    // The subscriber's link loses the copy of 2.
    send_rtp(&mut h, 0, &pt97(2));
    let lost = last_sent(&mut h).expect("a copy of 2 was sent");
    let unanswerable = h.worker.stats().nacks_unanswerable;
    send_rtcp(
        &mut h,
        1,
        &nack_packet(first.ssrc, first.sequence.wrapping_add(1), 0),
    );
    let mut resent = Vec::new();
    while let Some(o) = h.worker.poll_output() {
        if let Output::Transmit(t) = o {
            if !(192..=223).contains(&t.contents[1]) {
                resent.push(t.contents);
            }
        }
    }
    assert!(
        resent.iter().all(|r| *r == lost),
        "other bytes under the index of the first copy"
    );
    assert!(resent.is_empty());
    assert_eq!(h.worker.stats().nacks_unanswerable, unanswerable + 1);
}

/// A subscriber whose answer left out RTX and the playout-delay extension: once signalling says
/// so, its NACKs are answered with the packet exactly as first sent, on the media SSRC, and no
/// playout delay is written. Nothing can be turned on that was not offered.
#[test]
fn an_answer_without_rtx_gets_plain_retransmissions() {
    use relay::control::SubscribeOptions;
    use relay::error::ControlError;
    use relay::ids::{FeedId, Sid, Uid};

    let mut h = harness(1);
    let (sid, uid, feed) = (Sid::from("s"), Uid::from("sub0"), FeedId::from("cam"));
    let options = SubscribeOptions {
        mid: Some("1".into()),
        rtx: false,
        playout_delay_extension: None,
        transport_cc_extension: None,
    };
    h.worker
        .update_subscription(&sid, &uid, &feed, options.clone())
        .expect("update");
    send_rtp(&mut h, 0, &media(1));
    let seen = run_for(&mut h, Duration::from_millis(1));
    let first = rtp::parse(&seen.to_subscriber[0]).unwrap();
    assert!(playout_delay(&seen.to_subscriber[0]).is_none());
    // The subscriber's link loses the copy of 2 (it never reaches its SRTP context).
    send_rtp(&mut h, 0, &media(2));
    let lost = last_sent(&mut h).expect("a copy of 2 was sent");
    send_rtp(&mut h, 0, &media(3));
    run_for(&mut h, Duration::from_millis(1));
    let seq = first.sequence.wrapping_add(1);
    send_rtcp(&mut h, 1, &nack_packet(first.ssrc, seq, 0));
    let mut resent = Vec::new();
    while let Some(o) = h.worker.poll_output() {
        if let Output::Transmit(t) = o {
            resent.push(t.contents);
        }
    }
    // On the media SSRC, byte for byte what was sent the first time.
    assert_eq!(resent, vec![lost.clone()]);
    let mut plain = Vec::new();
    h.clients[1]
        .unprotect_rtp(&lost, &mut plain)
        .expect("authentic");
    let got = rtp::parse(&plain).unwrap();
    assert_eq!((got.ssrc, got.sequence), (first.ssrc, seq));
    assert_eq!(&plain[got.header_len..], &payload(2)[..]);

    // RTX cannot come back, nor the MID change.
    let refused = |w: &mut relay::sfu::worker::Worker, options| {
        matches!(
            w.update_subscription(&sid, &uid, &feed, options),
            Err(ControlError::InvalidSubscription { .. })
        )
    };
    assert!(refused(
        &mut h.worker,
        SubscribeOptions {
            rtx: true,
            ..options.clone()
        }
    ));
    assert!(refused(
        &mut h.worker,
        SubscribeOptions {
            mid: Some("2".into()),
            ..options.clone()
        }
    ));
    assert!(refused(
        &mut h.worker,
        SubscribeOptions {
            playout_delay_extension: Some(15),
            transport_cc_extension: None,
            ..options
        }
    ));
}

/// A packet first sent in one form is never sent again under its SRTP index in another: once
/// an answer turns a subscriber's repairs into plain retransmissions, what went out before (on
/// RTX terms: with a transport-wide number and the subscriber's own playout delay) is not
/// answered, where a plain repeat would seal other bytes under the same index.
#[test]
fn what_was_sent_before_repairs_turned_plain_is_not_repeated() {
    let mut h = harness(1);
    send_rtp(&mut h, 0, &media(1));
    let seen = run_for(&mut h, Duration::from_millis(1));
    let first = rtp::parse(&seen.to_subscriber[0]).unwrap();
    // The subscriber asks for 1 again: answered on RTX, and it now waits for repairs.
    send_rtcp(&mut h, 1, &nack_packet(first.ssrc, first.sequence, 0));
    assert_eq!(
        run_for(&mut h, Duration::from_millis(1))
            .to_subscriber
            .len(),
        1
    );
    // 2 goes out with the subscriber's own playout delay and a transport-wide number, and is
    // lost on the way.
    send_rtp(&mut h, 0, &media(2));
    while h.worker.poll_output().is_some() {}
    answer(&mut h, false, true);
    let before = h.worker.stats().nacks_unanswerable;
    let lost = first.sequence.wrapping_add(1);
    send_rtcp(&mut h, 1, &nack_packet(first.ssrc, lost, 0));
    assert!(run_for(&mut h, Duration::from_millis(1))
        .to_subscriber
        .is_empty());
    assert_eq!(h.worker.stats().nacks_unanswerable, before + 1);
    // What is sent from now on is repaired, plainly.
    send_rtp(&mut h, 0, &media(3));
    while h.worker.poll_output().is_some() {}
    send_rtcp(&mut h, 1, &nack_packet(first.ssrc, lost.wrapping_add(1), 0));
    let mut resent = 0;
    while let Some(o) = h.worker.poll_output() {
        if matches!(o, Output::Transmit(ref t) if t.destination == h.subscribers[0]) {
            resent += 1;
        }
    }
    assert_eq!(resent, 1);
}
