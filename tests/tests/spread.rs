//! A session larger than one core's share spreads to a second core: participants past
//! `spread_after` land there, feeds flow between the cores in both directions, keyframe
//! requests find their way back to the publisher, a feed flows to another core only while that
//! core has subscribers of it, and a core that no longer holds anyone of the session leaves it.

use std::time::Duration;

use relay::control::Event;
use relay::ids::{FeedId, Sid, Uid};
use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtcai_tests::harness::{collect_rtcp, plis, video_feed, TestRelay};
use webrtcai_tests::media::{verify, Source};
use webrtcai_tests::peer::{PeerConfig, WirePeer};

/// Send `n` packets from `publisher`; every subscriber receives all of them, intact, in order
/// and with continuous sequence numbers.
async fn stream_to(
    publisher: &mut WirePeer,
    subscribers: &mut [&mut WirePeer],
    src: &mut Source,
    n: u64,
) {
    let first = src.next_index();
    for _ in 0..n {
        publisher.send_rtp(&src.next_packet()).await.unwrap();
    }
    for (k, sub) in subscribers.iter_mut().enumerate() {
        let mut last_seq: Option<u16> = None;
        for i in 0..n {
            let got = sub
                .recv_rtp(Duration::from_secs(5), |_| {})
                .await
                .unwrap_or_else(|e| panic!("subscriber {k}, packet {i}: {e}"));
            assert_eq!(verify(&got.payload), Some(first + i), "subscriber {k}");
            if let Some(prev) = last_seq {
                assert_eq!(got.header.sequence_number, prev.wrapping_add(1));
            }
            last_seq = Some(got.header.sequence_number);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_spreads_over_two_cores() {
    let t = TestRelay::start(2, |c| c.spread_after = 2);
    let h = &t.handle;
    let sid = Sid::from("big");
    h.create_session(sid.clone(), Some(0)).await.unwrap();
    let mut publisher = t.join("big", "pub", PeerConfig::default()).await.unwrap();
    let mut near = t.join("big", "near", PeerConfig::default()).await.unwrap();
    assert_eq!(
        h.cores_of(&sid),
        vec![0],
        "two participants fit on the home core"
    );
    let mut far1 = t.join("big", "far1", PeerConfig::default()).await.unwrap();
    let mut far2 = t.join("big", "far2", PeerConfig::default()).await.unwrap();
    assert_eq!(h.cores_of(&sid), vec![0, 1]);
    let per_core: Vec<u64> = h
        .stats()
        .await
        .unwrap()
        .iter()
        .map(|s| s.participants)
        .collect();
    assert_eq!(per_core, vec![2, 2]);

    // A feed from the home core reaches subscribers on both cores.
    let cam = FeedId::from("cam");
    h.publish(&sid, &Uid::from("pub"), video_feed("cam", 0x1111))
        .await
        .unwrap();
    let mut far1_ssrc = 0;
    for uid in ["near", "far1", "far2"] {
        let info = h
            .subscribe(&sid, &Uid::from(uid), &cam, Default::default())
            .await
            .unwrap();
        if uid == "far1" {
            far1_ssrc = info.ssrc.0;
        }
    }
    let mut src = Source::video(0x1111, 1000);
    stream_to(
        &mut publisher,
        &mut [&mut near, &mut far1, &mut far2],
        &mut src,
        200,
    )
    .await;
    let stats = h.stats().await.unwrap();
    assert_eq!(
        stats[0].rtp_forwarded, 200,
        "core 0 sends to its own subscriber"
    );
    assert_eq!(stats[1].rtp_forwarded, 400, "core 1 sends to its two");
    // Core 1's copies have their time in the relay counted too, from core 0's receipt.
    for s in &stats {
        assert!(
            s.forwarding_delay.count() >= s.rtp_forwarded,
            "core {}: {} delays for {} forwarded",
            s.core,
            s.forwarding_delay.count(),
            s.rtp_forwarded
        );
    }
    assert_eq!(stats.iter().map(|s| s.total_dropped()).sum::<u64>(), 0);

    // A keyframe request from a subscriber on the other core reaches the publisher, with the
    // publisher's own SSRC.
    far1.send_rtcp(&[Box::new(PictureLossIndication {
        sender_ssrc: 1,
        media_ssrc: far1_ssrc,
    })])
    .await
    .unwrap();
    assert_eq!(
        plis(&collect_rtcp(&mut publisher, Duration::from_millis(800)).await),
        vec![0x1111]
    );

    // The other way: a feed published on core 1 reaches a subscriber on core 0.
    h.publish(&sid, &Uid::from("far2"), video_feed("screen", 0x2222))
        .await
        .unwrap();
    h.subscribe(
        &sid,
        &Uid::from("near"),
        &FeedId::from("screen"),
        Default::default(),
    )
    .await
    .unwrap();
    let mut screen = Source::video(0x2222, 800);
    stream_to(&mut far2, &mut [&mut near], &mut screen, 100).await;

    // When everyone on core 1 has left, core 1 leaves the session; the feed of the one who
    // left is gone for its subscriber too.
    h.remove_participant(&sid, &Uid::from("far1"))
        .await
        .unwrap();
    assert_eq!(h.cores_of(&sid), vec![0, 1]);
    h.remove_participant(&sid, &Uid::from("far2"))
        .await
        .unwrap();
    assert_eq!(h.cores_of(&sid), vec![0]);
    let stats = h.stats().await.unwrap();
    assert_eq!((stats[1].sessions, stats[1].participants), (0, 0));
    let err = h
        .unsubscribe(&sid, &Uid::from("near"), &FeedId::from("screen"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("screen"), "{err}");
    // The home core's stream carries on.
    stream_to(&mut publisher, &mut [&mut near], &mut src, 50).await;
    h.remove_session(&sid).await.unwrap();
    let stats = h.stats().await.unwrap();
    assert_eq!(stats.iter().map(|s| s.sessions).sum::<u64>(), 0);
}

/// RTP packets core 1 has received from core 0, once the queue between them has drained.
async fn crossed_to_core_1(t: &TestRelay) -> u64 {
    tokio::time::sleep(Duration::from_millis(200)).await;
    t.handle.stats().await.unwrap()[1].cross_core_rtp_in
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_flows_to_another_core_only_while_it_has_subscribers_there() {
    let t = TestRelay::start(2, |c| c.spread_after = 2);
    let h = &t.handle;
    let sid = Sid::from("s");
    h.create_session(sid.clone(), Some(0)).await.unwrap();
    let mut publisher = t.join("s", "pub", PeerConfig::default()).await.unwrap();
    let mut near = t.join("s", "near", PeerConfig::default()).await.unwrap();
    let mut far1 = t.join("s", "far1", PeerConfig::default()).await.unwrap();
    let mut far2 = t.join("s", "far2", PeerConfig::default()).await.unwrap();
    assert_eq!(h.cores_of(&sid), vec![0, 1]);
    let cam = FeedId::from("cam");
    h.publish(&sid, &Uid::from("pub"), video_feed("cam", 0x1111))
        .await
        .unwrap();
    for uid in ["near", "far1", "far2"] {
        h.subscribe(&sid, &Uid::from(uid), &cam, Default::default())
            .await
            .unwrap();
    }
    let mut src = Source::video(0x1111, 1000);
    stream_to(
        &mut publisher,
        &mut [&mut near, &mut far1, &mut far2],
        &mut src,
        50,
    )
    .await;
    assert_eq!(crossed_to_core_1(&t).await, 50, "one copy for the core");

    // One of two subscribers on core 1 leaves the feed: it still flows there.
    h.unsubscribe(&sid, &Uid::from("far1"), &cam).await.unwrap();
    stream_to(&mut publisher, &mut [&mut near, &mut far2], &mut src, 50).await;
    assert_eq!(crossed_to_core_1(&t).await, 100);

    // The last one leaves it: core 1 gets nothing more.
    h.unsubscribe(&sid, &Uid::from("far2"), &cam).await.unwrap();
    stream_to(&mut publisher, &mut [&mut near], &mut src, 50).await;
    assert_eq!(crossed_to_core_1(&t).await, 100);

    // A new subscription there brings it back.
    h.subscribe(&sid, &Uid::from("far2"), &cam, Default::default())
        .await
        .unwrap();
    stream_to(&mut publisher, &mut [&mut near, &mut far2], &mut src, 50).await;
    assert_eq!(crossed_to_core_1(&t).await, 150);

    // Its subscriber leaves the session while far1 keeps core 1 in it: the flow stops too.
    h.remove_participant(&sid, &Uid::from("far2"))
        .await
        .unwrap();
    assert_eq!(h.cores_of(&sid), vec![0, 1]);
    stream_to(&mut publisher, &mut [&mut near], &mut src, 50).await;
    assert_eq!(crossed_to_core_1(&t).await, 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_the_relay_dropped_can_still_be_removed() {
    let mut t = TestRelay::start(2, |c| {
        c.spread_after = 2;
        c.consent_timeout = Duration::from_millis(1500);
    });
    let sid = Sid::from("s");
    t.handle.create_session(sid.clone(), Some(0)).await.unwrap();
    let mut publisher = t.join("s", "pub", PeerConfig::default()).await.unwrap();
    let mut near = t.join("s", "near", PeerConfig::default()).await.unwrap();
    let far = t.join("s", "far", PeerConfig::default()).await.unwrap();
    let mut quiet = t.join("s", "quiet", PeerConfig::default()).await.unwrap();
    assert_eq!(t.handle.cores_of(&sid), vec![0, 1]);
    t.handle
        .publish(&sid, &Uid::from("far"), video_feed("screen", 0x2222))
        .await
        .unwrap();
    t.handle
        .subscribe(
            &sid,
            &Uid::from("pub"),
            &FeedId::from("screen"),
            Default::default(),
        )
        .await
        .unwrap();
    let cam = FeedId::from("cam");
    t.handle
        .publish(&sid, &Uid::from("pub"), video_feed("cam", 0x1111))
        .await
        .unwrap();
    for uid in ["near", "quiet"] {
        t.handle
            .subscribe(&sid, &Uid::from(uid), &cam, Default::default())
            .await
            .unwrap();
    }
    let mut src = Source::video(0x1111, 1000);
    stream_to(&mut publisher, &mut [&mut near, &mut quiet], &mut src, 20).await;
    assert_eq!(crossed_to_core_1(&t).await, 20);

    // Core 1 drops the only subscriber of cam there by itself; once the control plane has
    // removed it, cam no longer flows to core 1, which stays in the session for far.
    quiet.set_consent(false);
    let e = t
        .wait_event(Duration::from_secs(5), |e| {
            matches!(e, Event::ParticipantDisconnected { .. })
        })
        .await
        .expect("a disconnect event");
    assert!(
        matches!(&e, Event::ParticipantDisconnected { uid, .. } if uid.0 == "quiet"),
        "{e:?}"
    );
    t.handle
        .remove_participant(&sid, &Uid::from("quiet"))
        .await
        .unwrap();
    assert_eq!(t.handle.cores_of(&sid), vec![0, 1]);
    stream_to(&mut publisher, &mut [&mut near], &mut src, 20).await;
    assert_eq!(crossed_to_core_1(&t).await, 20);

    // Core 1 drops its silent participant by itself and says so; the control plane then
    // removes it the way signalling does, and core 1 leaves the session.
    far.set_consent(false);
    let e = t
        .wait_event(Duration::from_secs(5), |e| {
            matches!(e, Event::ParticipantDisconnected { .. })
        })
        .await
        .expect("a disconnect event");
    assert!(
        matches!(&e, Event::ParticipantDisconnected { uid, .. } if uid.0 == "far"),
        "{e:?}"
    );
    t.handle
        .remove_participant(&sid, &Uid::from("far"))
        .await
        .unwrap();
    assert_eq!(t.handle.cores_of(&sid), vec![0]);
    let err = t
        .handle
        .unsubscribe(&sid, &Uid::from("pub"), &FeedId::from("screen"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("screen"), "{err}");
    // The one left carries on.
    let stats = t.handle.stats().await.unwrap();
    assert_eq!((stats[1].sessions, stats[1].participants), (0, 0));
    publisher
        .send_rtp(&Source::video(0x3333, 500).next_packet())
        .await
        .unwrap();
}
