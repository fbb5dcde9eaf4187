//! RTCP through the relay: keyframe requests reach the publisher (rate-limited and with the
//! publisher's own SSRC), publishers get receiver reports, subscribers get sender reports that
//! describe the stream they receive.

use std::time::Duration;

use relay::ids::{FeedId, Sid, Uid};
use rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtcp::receiver_report::ReceiverReport;
use rtcp::sender_report::SenderReport;
use webrtcai_tests::harness::{collect_rtcp, plis, video_feed, TestRelay};
use webrtcai_tests::media::Source;
use webrtcai_tests::peer::PeerConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframe_requests_and_reports() {
    let t = TestRelay::start(1, |_| {});
    let sid = Sid::from("s");
    t.handle.create_session(sid.clone(), None).await.unwrap();
    let mut publisher = t.join("s", "pub", PeerConfig::default()).await.unwrap();
    let mut sub1 = t.join("s", "sub1", PeerConfig::default()).await.unwrap();
    let mut sub2 = t.join("s", "sub2", PeerConfig::default()).await.unwrap();
    let cam = FeedId::from("cam");
    t.handle
        .publish(&sid, &Uid::from("pub"), video_feed("cam", 0x5555))
        .await
        .unwrap();
    let s1 = t
        .handle
        .subscribe(&sid, &Uid::from("sub1"), &cam, Default::default())
        .await
        .unwrap()
        .ssrc
        .0;
    let s2 = t
        .handle
        .subscribe(&sid, &Uid::from("sub2"), &cam, Default::default())
        .await
        .unwrap()
        .ssrc
        .0;

    // The control plane asks for a keyframe once subscribers are ready; a second request
    // within 500 ms is folded into the first.
    t.handle.request_keyframe(&sid, &cam).await.unwrap();
    t.handle.request_keyframe(&sid, &cam).await.unwrap();
    let first = collect_rtcp(&mut publisher, Duration::from_millis(1000)).await;
    assert_eq!(plis(&first), vec![0x5555]);

    // Stream for a while so that reports have something to say.
    let mut src = Source::video(0x5555, 900);
    for i in 0..150 {
        publisher.send_rtp(&src.next_packet()).await.unwrap();
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(400)).await;

    // A burst of PLI and FIR from both subscribers: the publisher gets one PLI for its SSRC.
    for _ in 0..5 {
        sub1.send_rtcp(&[Box::new(PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: s1,
        })])
        .await
        .unwrap();
        sub2.send_rtcp(&[Box::new(FullIntraRequest {
            sender_ssrc: 2,
            media_ssrc: 0,
            fir: vec![FirEntry {
                ssrc: s2,
                sequence_number: 1,
            }],
        })])
        .await
        .unwrap();
    }
    // A PLI naming an SSRC the subscriber does not receive goes nowhere.
    sub1.send_rtcp(&[Box::new(PictureLossIndication {
        sender_ssrc: 1,
        media_ssrc: 0x5555,
    })])
    .await
    .unwrap();

    let at_publisher = collect_rtcp(&mut publisher, Duration::from_millis(1300)).await;
    assert_eq!(plis(&at_publisher), vec![0x5555], "rate-limited to one");
    let stats = &t.handle.stats().await.unwrap()[0];
    assert_eq!(stats.keyframe_requests_forwarded, 2);
    assert_eq!(stats.keyframe_requests_suppressed, 10);

    // Receiver reports toward the publisher describe its stream: 150 packets, no loss.
    let rr = at_publisher
        .iter()
        .chain(first.iter())
        .flatten()
        .filter_map(|p| p.as_any().downcast_ref::<ReceiverReport>())
        .flat_map(|rr| rr.reports.iter())
        .find(|r| r.ssrc == 0x5555)
        .expect("a receiver report block for the publisher's SSRC");
    assert_eq!(rr.total_lost, 0);
    assert_eq!(rr.fraction_lost, 0);
    let last_sent = src.next_packet().header.sequence_number.wrapping_sub(1);
    assert_eq!(rr.last_sequence_number as u16, last_sent);

    // Sender reports toward a subscriber use its subscription SSRC and count what it got.
    let at_sub = collect_rtcp(&mut sub1, Duration::from_millis(1300)).await;
    let sr = at_sub
        .iter()
        .flatten()
        .filter_map(|p| p.as_any().downcast_ref::<SenderReport>())
        // The newest: earlier ones waited in the peer's queue since it joined.
        .rfind(|sr| sr.ssrc == s1)
        .expect("a sender report for the subscription");
    assert_eq!(sr.packet_count, 150);
    assert_eq!(sr.octet_count, 150 * 900);
    let now_ntp_secs = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2_208_988_800) as i64;
    assert!(
        ((sr.ntp_time >> 32) as i64 - now_ntp_secs).abs() <= 2,
        "NTP time is wall clock: {} vs {now_ntp_secs}",
        sr.ntp_time >> 32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_sees_one_stream_across_a_publisher_restart() {
    let t = TestRelay::start(1, |_| {});
    let sid = Sid::from("s");
    t.handle.create_session(sid.clone(), None).await.unwrap();
    let mut publisher = t.join("s", "pub", PeerConfig::default()).await.unwrap();
    let mut sub = t.join("s", "sub", PeerConfig::default()).await.unwrap();
    let cam = FeedId::from("cam");
    t.handle
        .publish(&sid, &Uid::from("pub"), video_feed("cam", 100))
        .await
        .unwrap();
    let ssrc = t
        .handle
        .subscribe(&sid, &Uid::from("sub"), &cam, Default::default())
        .await
        .unwrap()
        .ssrc
        .0;

    let mut src = Source::video(100, 300);
    let mut got = Vec::new();
    for _ in 0..20 {
        publisher.send_rtp(&src.next_packet()).await.unwrap();
        got.push(sub.recv_rtp(Duration::from_secs(5), |_| {}).await.unwrap());
    }
    // The publisher renegotiates: new SSRC, new random sequence and timestamp base.
    src.restart(200);
    t.handle
        .publish(&sid, &Uid::from("pub"), video_feed("cam", 200))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..20 {
        publisher.send_rtp(&src.next_packet()).await.unwrap();
        got.push(sub.recv_rtp(Duration::from_secs(5), |_| {}).await.unwrap());
    }
    let seq0 = got[0].header.sequence_number;
    for (i, p) in got.iter().enumerate() {
        assert_eq!(p.header.ssrc, ssrc);
        assert_eq!(
            p.header.sequence_number,
            seq0.wrapping_add(i as u16),
            "packet {i}"
        );
    }
    // The timestamp moved forward across the switch by roughly the 100 ms pause (9000 ticks).
    let before = got[19].header.timestamp;
    let after = got[20].header.timestamp;
    let step = after.wrapping_sub(before);
    assert!((5_000..60_000).contains(&step), "timestamp step {step}");
    // Old SSRC is no longer accepted.
    let mut old = Source::video(100, 300);
    publisher.send_rtp(&old.next_packet()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = &t.handle.stats().await.unwrap()[0];
    assert_eq!(s.dropped(relay::stats::DropReason::RtpUnknownSsrc), 1);
}
