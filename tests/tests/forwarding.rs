//! 1 publisher → 3 subscribers in one session while a second session runs on another core:
//! every payload arrives intact, sequence numbers are continuous per subscriber and SSRCs are
//! rewritten.

use std::time::Duration;

use relay::control::Event;
use relay::ids::{FeedId, Sid, Uid};
use webrtcai_tests::harness::{video_feed, TestRelay};
use webrtcai_tests::media::{verify, Source};
use webrtcai_tests::peer::{PeerConfig, WirePeer};

const PACKETS: u64 = 300;
const PAYLOAD: usize = 1200;

async fn receive_all(
    mut peer: WirePeer,
    expect_ssrc: u32,
    n: u64,
) -> (WirePeer, Vec<rtp::packet::Packet>) {
    let mut got = Vec::new();
    while (got.len() as u64) < n {
        match peer.recv_rtp(Duration::from_secs(10), |_| {}).await {
            Ok(p) => got.push(p),
            Err(e) => panic!(
                "subscriber of {expect_ssrc:#x} got {} of {n}: {e}",
                got.len()
            ),
        }
    }
    (peer, got)
}

fn check_stream(got: &[rtp::packet::Packet], sent: &[rtp::packet::Packet], ssrc: u32) {
    assert_eq!(got.len(), sent.len());
    let seq0 = got[0].header.sequence_number;
    let ts0 = got[0].header.timestamp;
    for (i, (g, s)) in got.iter().zip(sent).enumerate() {
        assert_eq!(g.header.ssrc, ssrc, "SSRC rewritten to the subscription's");
        assert_ne!(g.header.ssrc, s.header.ssrc, "publisher SSRC must not leak");
        assert_eq!(
            verify(&g.payload),
            Some(i as u64),
            "payload {i} intact and in order"
        );
        assert_eq!(g.payload, s.payload);
        assert_eq!(
            g.header.sequence_number,
            seq0.wrapping_add(i as u16),
            "continuous seq"
        );
        assert_eq!(
            g.header.timestamp.wrapping_sub(ts0),
            s.header.timestamp.wrapping_sub(sent[0].header.timestamp),
            "timestamp spacing preserved"
        );
        assert_eq!(g.header.marker, s.header.marker);
        assert_eq!(g.header.payload_type, s.header.payload_type);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_three_subscribers_and_a_second_session_on_another_core() {
    let mut t = TestRelay::start(2, |_| {});
    let (a, b) = (Sid::from("room-a"), Sid::from("room-b"));
    let pa = t.handle.create_session(a.clone(), Some(0)).await.unwrap();
    let pb = t.handle.create_session(b.clone(), Some(1)).await.unwrap();
    assert_ne!(pa.address, pb.address, "two cores, two sockets");

    let mut alice = t
        .join("room-a", "alice", PeerConfig::default())
        .await
        .unwrap();
    let mut subs_a = Vec::new();
    for name in ["bob", "carol", "dave"] {
        subs_a.push((
            name,
            t.join("room-a", name, PeerConfig::default()).await.unwrap(),
        ));
    }
    let mut eve = t
        .join("room-b", "eve", PeerConfig::default())
        .await
        .unwrap();
    let frank = t
        .join("room-b", "frank", PeerConfig::default())
        .await
        .unwrap();

    let cam = FeedId::from("alice-cam");
    t.handle
        .publish(&a, &Uid::from("alice"), video_feed("alice-cam", 0x1111))
        .await
        .unwrap();
    t.handle
        .publish(&b, &Uid::from("eve"), video_feed("eve-cam", 0x2222))
        .await
        .unwrap();

    let mut tasks = Vec::new();
    let mut ssrcs_a = Vec::new();
    for (name, peer) in subs_a {
        let info = t
            .handle
            .subscribe(&a, &Uid::from(name), &cam, Default::default())
            .await
            .unwrap();
        ssrcs_a.push(info.ssrc.0);
        tasks.push(tokio::spawn(receive_all(peer, info.ssrc.0, PACKETS)));
    }
    let info_b = t
        .handle
        .subscribe(
            &b,
            &Uid::from("frank"),
            &FeedId::from("eve-cam"),
            Default::default(),
        )
        .await
        .unwrap();
    tasks.push(tokio::spawn(receive_all(frank, info_b.ssrc.0, PACKETS)));
    let mut unique = ssrcs_a.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3);

    let mut src_a = Source::video(0x1111, PAYLOAD);
    let mut src_b = Source::video(0x2222, PAYLOAD);
    let (mut sent_a, mut sent_b) = (Vec::new(), Vec::new());
    for i in 0..PACKETS {
        let pa = src_a.next_packet();
        alice.send_rtp(&pa).await.unwrap();
        sent_a.push(pa);
        let pb = src_b.next_packet();
        eve.send_rtp(&pb).await.unwrap();
        sent_b.push(pb);
        if i % 8 == 7 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    for (i, (_, got)) in results.iter().enumerate() {
        if i < 3 {
            check_stream(got, &sent_a, ssrcs_a[i]);
        } else {
            check_stream(got, &sent_b, info_b.ssrc.0);
        }
    }

    // Each session stayed on its core.
    let stats = t.handle.stats().await.unwrap();
    assert_eq!(stats[0].sessions, 1);
    assert_eq!(stats[1].sessions, 1);
    assert_eq!(stats[0].participants, 4);
    assert_eq!(stats[1].participants, 2);
    assert_eq!(stats[0].rtp_forwarded, 3 * PACKETS);
    assert_eq!(stats[1].rtp_forwarded, PACKETS);
    assert_eq!(
        stats[0].total_dropped() + stats[1].total_dropped(),
        0,
        "{stats:?}"
    );
    // Every datagram a core sent in answer to one it received (forwarded copies, STUN
    // responses) has its time inside the relay counted; DTLS records and reports have not.
    for s in &stats {
        let delays = s.forwarding_delay.count();
        assert!(
            delays >= s.rtp_forwarded && delays < s.packets_out,
            "core {}: {delays} delays for {} forwarded, {} sent",
            s.core,
            s.rtp_forwarded,
            s.packets_out
        );
        // Loopback, a few hundred packets: well under a second even in a debug build.
        assert!(s.forwarding_delay.quantile(1.0) < 1_000_000, "{s:?}");
    }

    // The control plane heard about every connection and both feeds.
    let mut connected = 0;
    let mut started = 0;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(200), t.events.recv()).await
    {
        match e {
            Event::ParticipantConnected { .. } => connected += 1,
            Event::FeedStarted { .. } => started += 1,
            _ => {}
        }
    }
    assert_eq!(connected, 6);
    assert_eq!(started, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_extension_is_rewritten_per_subscriber() {
    use relay::control::{HeaderExtension, SubscribeOptions, MID_EXTENSION_URI};
    let t = TestRelay::start(1, |_| {});
    let sid = Sid::from("mids");
    t.handle.create_session(sid.clone(), None).await.unwrap();
    let mut publisher = t.join("mids", "pub", PeerConfig::default()).await.unwrap();
    let mut feed = video_feed("cam", 0x77);
    feed.header_extensions = vec![HeaderExtension {
        id: 1,
        uri: MID_EXTENSION_URI.into(),
    }];
    t.handle
        .publish(&sid, &Uid::from("pub"), feed)
        .await
        .unwrap();
    let mut subs = Vec::new();
    for (uid, mid) in [("a", "3"), ("b", "12")] {
        let peer = t.join("mids", uid, PeerConfig::default()).await.unwrap();
        t.handle
            .subscribe(
                &sid,
                &Uid::from(uid),
                &FeedId::from("cam"),
                SubscribeOptions {
                    mid: Some(mid.into()),
                    rtx: false,
                    playout_delay_extension: None,
                    transport_cc_extension: None,
                },
            )
            .await
            .unwrap();
        subs.push((peer, mid));
    }
    let mut src = Source::video(0x77, 500);
    for _ in 0..10 {
        let mut p = src.next_packet();
        p.header
            .set_extension(1, bytes::Bytes::from_static(b"0"))
            .unwrap();
        p.header
            .set_extension(4, bytes::Bytes::from_static(&[1, 2, 3]))
            .unwrap();
        publisher.send_rtp(&p).await.unwrap();
    }
    for (peer, mid) in &mut subs {
        for i in 0..10 {
            let got = peer.recv_rtp(Duration::from_secs(5), |_| {}).await.unwrap();
            assert_eq!(got.header.get_extension(1).as_deref(), Some(mid.as_bytes()));
            assert_eq!(
                got.header.get_extension(4).as_deref(),
                Some(&[1u8, 2, 3][..])
            );
            assert_eq!(verify(&got.payload), Some(i));
        }
    }
}
