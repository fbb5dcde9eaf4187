//! ICE-lite behaviour over real sockets: consent expiry, address migration, and DTLS refusal of
//! a certificate that does not match the signalled fingerprint.

use std::time::Duration;

use relay::control::{DisconnectReason, Event, ParticipantConfig};
use relay::ids::{FeedId, Sid, Uid};
use relay::stats::DropReason;
use webrtcai_tests::harness::{expect_stream, video_feed, TestRelay};
use webrtcai_tests::media::Source;
use webrtcai_tests::peer::{PeerConfig, WirePeer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_expires_for_a_silent_peer_only() {
    let mut t = TestRelay::start(1, |c| c.consent_timeout = Duration::from_millis(1500));
    let sid = Sid::from("s");
    t.handle.create_session(sid.clone(), None).await.unwrap();
    let mut publisher = t.join("s", "pub", PeerConfig::default()).await.unwrap();
    let mut subscriber = t.join("s", "sub", PeerConfig::default()).await.unwrap();
    let quiet = t.join("s", "quiet", PeerConfig::default()).await.unwrap();
    t.handle
        .publish(&sid, &Uid::from("pub"), video_feed("cam", 5))
        .await
        .unwrap();
    t.handle
        .subscribe(
            &sid,
            &Uid::from("sub"),
            &FeedId::from("cam"),
            Default::default(),
        )
        .await
        .unwrap();
    t.handle
        .subscribe(
            &sid,
            &Uid::from("quiet"),
            &FeedId::from("cam"),
            Default::default(),
        )
        .await
        .unwrap();
    let mut src = Source::video(5, 500);
    expect_stream(&mut publisher, &mut subscriber, &mut src, 10).await;

    quiet.set_consent(false);
    let started = tokio::time::Instant::now();
    let e = t
        .wait_event(Duration::from_secs(5), |e| {
            matches!(e, Event::ParticipantDisconnected { .. })
        })
        .await
        .expect("a disconnect event");
    let Event::ParticipantDisconnected {
        sid: dropped_sid,
        uid,
        reason,
        usage,
    } = e
    else {
        unreachable!("matched above")
    };
    assert_eq!(
        (dropped_sid, uid, reason),
        (
            sid.clone(),
            Uid::from("quiet"),
            DisconnectReason::ConsentExpired
        )
    );
    // Its last counters come with the event (the relay forgets it): its checks and handshake.
    assert!(usage.packets_in > 0 && usage.bytes_out > 0, "{usage:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before the timeout"
    );
    let s = &t.handle.stats().await.unwrap()[0];
    assert_eq!(s.participants, 2);
    // The others keep consent (their peers refresh every 500 ms) and keep streaming.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    expect_stream(&mut publisher, &mut subscriber, &mut src, 10).await;
    assert_eq!(t.handle.stats().await.unwrap()[0].participants, 2);
    // Packets from the expired peer's address are now from an unknown source.
    let before = t.handle.stats().await.unwrap()[0].dropped(DropReason::RtcpUnknownSource);
    quiet
        .send_raw(&[0x80, 201, 0, 1, 0, 0, 0, 9])
        .await
        .unwrap();
    let mut after = before;
    for _ in 0..250 {
        after = t.handle.stats().await.unwrap()[0].dropped(DropReason::RtcpUnknownSource);
        if after > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(after, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nominated_check_from_a_new_address_migrates() {
    let mut t = TestRelay::start(1, |_| {});
    let sid = Sid::from("s");
    let (mut publisher, mut subscriber) = t.publisher_and_subscriber("s", 5).await;
    let mut src = Source::video(5, 800);
    expect_stream(&mut publisher, &mut subscriber, &mut src, 10).await;

    // The subscriber changes network: media follows it.
    let old = subscriber.local_addr();
    let new = subscriber.migrate().await.unwrap();
    assert_ne!(old, new);
    let e = t
        .wait_event(Duration::from_secs(2), |e| {
            matches!(e, Event::ParticipantMigrated { .. })
        })
        .await
        .expect("migration event");
    assert_eq!(
        e,
        Event::ParticipantMigrated {
            sid: sid.clone(),
            uid: Uid::from("sub"),
            from: old,
            to: new
        }
    );
    expect_stream(&mut publisher, &mut subscriber, &mut src, 20).await;

    // The publisher changes network: its media from the new address is accepted, and the old
    // address is no longer trusted.
    let old_pub = publisher.local_addr();
    publisher.migrate().await.unwrap();
    expect_stream(&mut publisher, &mut subscriber, &mut src, 20).await;
    let stats = &t.handle.stats().await.unwrap()[0];
    assert_eq!(stats.total_dropped(), 0, "{stats:?}");
    assert_ne!(publisher.local_addr(), old_pub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtls_with_a_certificate_other_than_signalled_fails() {
    let mut t = TestRelay::start(1, |_| {});
    let sid = Sid::from("s");
    t.handle.create_session(sid.clone(), None).await.unwrap();
    let (_, other_fp) = WirePeer::certificate();
    let (cert, _) = WirePeer::certificate();
    let ufrag = WirePeer::random_ufrag();
    let info = t
        .handle
        .add_participant(
            &sid,
            &Uid::from("mallory"),
            ParticipantConfig {
                remote_ufrag: Some(ufrag.clone()),
                remote_fingerprint: Some(other_fp),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let result = WirePeer::connect(&info, ufrag, cert, PeerConfig::default()).await;
    assert!(result.is_err(), "handshake must not complete");
    let e = t
        .wait_event(Duration::from_secs(5), |e| {
            matches!(e, Event::ParticipantDisconnected { .. })
        })
        .await
        .expect("disconnect event");
    match e {
        Event::ParticipantDisconnected {
            reason: DisconnectReason::DtlsFailed { detail },
            ..
        } => assert!(detail.contains("fingerprint"), "{detail}"),
        other => panic!("{other:?}"),
    }
    let s = &t.handle.stats().await.unwrap()[0];
    assert_eq!((s.participants, s.handshakes), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_handshakes_time_out() {
    let mut t = TestRelay::start(1, |c| c.dtls_handshake_timeout = Duration::from_millis(800));
    let sid = Sid::from("s");
    t.handle.create_session(sid.clone(), None).await.unwrap();
    let info = t
        .handle
        .add_participant(&sid, &Uid::from("half"), ParticipantConfig::default())
        .await
        .unwrap();
    // Pass ICE, then send one ClientHello-looking record and go silent.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let req = webrtcai_tests::peer::binding_request(
        &format!("{}:x", info.ice_ufrag),
        &info.ice_pwd,
        true,
    );
    sock.send_to(&req, info.candidate).await.unwrap();
    let mut buf = [0u8; 1500];
    tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    sock.send_to(
        &[22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
        info.candidate,
    )
    .await
    .unwrap();
    let mut handshakes = 0;
    for _ in 0..250 {
        handshakes = t.handle.stats().await.unwrap()[0].handshakes;
        if handshakes == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(handshakes, 1);
    let e = t
        .wait_event(Duration::from_secs(5), |e| {
            matches!(e, Event::ParticipantDisconnected { .. })
        })
        .await
        .expect("disconnect event");
    assert!(
        matches!(
            e,
            Event::ParticipantDisconnected {
                reason: DisconnectReason::DtlsTimeout,
                ..
            }
        ),
        "{e:?}"
    );
    let s = &t.handle.stats().await.unwrap()[0];
    assert_eq!((s.participants, s.handshakes), (0, 0));
}
