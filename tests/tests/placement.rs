//! New sessions go to the least-loaded core: fewest participants, then lowest packet rate.

use std::time::Duration;

use relay::ids::{Sid, Uid};
use webrtcai_tests::harness::{video_feed, TestRelay};
use webrtcai_tests::media::Source;
use webrtcai_tests::peer::PeerConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_go_where_the_load_is_lowest() {
    let t = TestRelay::start(2, |_| {});
    let a = t.handle.create_session(Sid::from("a"), None).await.unwrap();
    for uid in ["x", "y"] {
        t.handle
            .add_participant(&Sid::from("a"), &Uid::from(uid), Default::default())
            .await
            .unwrap();
    }
    // Core of "a" has two participants: "b" goes to the other one, and so does "c"
    // (still fewer participants there).
    let b = t.handle.create_session(Sid::from("b"), None).await.unwrap();
    assert_ne!(a.core, b.core);
    let c = t.handle.create_session(Sid::from("c"), None).await.unwrap();
    assert_eq!(c.core, b.core);

    // Equal participants: the core with traffic loses, even though the other one has more
    // sessions (the last tie-breaker).
    let t = TestRelay::start(2, |_| {});
    let busy = t
        .handle
        .create_session(Sid::from("busy"), Some(0))
        .await
        .unwrap();
    t.handle
        .create_session(Sid::from("idle"), Some(1))
        .await
        .unwrap();
    let mut publisher = t.join("busy", "p", PeerConfig::default()).await.unwrap();
    t.join("idle", "q", PeerConfig::default()).await.unwrap();
    t.handle
        .publish(&Sid::from("busy"), &Uid::from("p"), video_feed("cam", 9))
        .await
        .unwrap();
    // A first look records the counters; traffic in between makes core 0 the busier one.
    t.handle
        .create_session(Sid::from("probe"), Some(1))
        .await
        .unwrap();
    let _ = t
        .handle
        .create_session(Sid::from("warm"), None)
        .await
        .unwrap();
    t.handle.remove_session(&Sid::from("warm")).await.unwrap();
    let mut src = Source::video(9, 200);
    for _ in 0..200 {
        publisher.send_rtp(&src.next_packet()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let next = t
        .handle
        .create_session(Sid::from("next"), None)
        .await
        .unwrap();
    assert_ne!(next.core, busy.core, "the core with traffic is avoided");
}
