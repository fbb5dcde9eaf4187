//! Two nodes in one process, each a relay with an edge, joined by a QUIC trunk on loopback: a
//! feed published on one reaches the other's subscribers on all its cores, crossing the trunk
//! once; keyframe requests find their way back to the publisher; the feed stops crossing when
//! the far node's last subscriber leaves.

use std::time::Duration;

use edge::cluster::{ClusterCa, NodeIdentity};
use edge::node::{Edge, EdgeConfig, PeerNode, TrunkStats};
use relay::ids::{FeedId, Sid, Uid};
use webrtcai_tests::harness::{collect_rtcp, plis, video_feed, TestRelay};
use webrtcai_tests::media::{verify, Source};
use webrtcai_tests::peer::{PeerConfig, WirePeer};

const SSRC: u32 = 0x1111;

fn node(ca: &ClusterCa, id: &str, spread_after: usize) -> (TestRelay, Edge) {
    let mut relay = TestRelay::start(2, |c| {
        c.edge = true;
        c.spread_after = spread_after;
    });
    let port = relay.relay.take_edge_port().expect("an edge port");
    let identity = NodeIdentity::from_issued(ca, &ca.issue(id).unwrap()).unwrap();
    let edge = Edge::start(
        EdgeConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            identity,
            region: format!("region-{id}"),
        },
        port,
        relay.handle.clone(),
    )
    .expect("edge starts");
    (relay, edge)
}

async fn trunk_to(edge: &Edge, peer: &str) -> TrunkStats {
    let stats = edge.handle().stats().await.unwrap();
    stats
        .into_iter()
        .find(|t| t.peer == peer)
        .unwrap_or_else(|| panic!("no trunk to {peer}"))
}

/// Everything the subscriber has queued, dropped.
async fn drain(peer: &mut WirePeer) {
    while peer.recv(Duration::from_millis(200)).await.is_ok() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_crosses_the_trunk_once_for_every_subscriber_of_the_far_node() {
    let ca = ClusterCa::generate("test").unwrap();
    let (a, edge_a) = node(&ca, "a", 250);
    // Node B spreads the session over both its cores, one participant each.
    let (b, edge_b) = node(&ca, "b", 1);
    let sid = Sid::from("c/room");
    let cam = FeedId::from("cam");
    a.handle.create_session(sid.clone(), None).await.unwrap();
    b.handle.create_session(sid.clone(), None).await.unwrap();
    let mut publisher = a
        .join("c/room", "pub", PeerConfig::default())
        .await
        .unwrap();
    let feed = video_feed("cam", SSRC);
    a.handle
        .publish(&sid, &Uid::from("pub"), feed.clone())
        .await
        .unwrap();
    let peer_a = PeerNode {
        node: "a".into(),
        addr: edge_a.handle().local_addr(),
    };
    edge_b
        .handle()
        .import(peer_a, &sid, &Uid::from("pub"), feed)
        .await
        .unwrap();
    let mut subscribers = Vec::new();
    for uid in ["s1", "s2", "s3"] {
        let s = b.join("c/room", uid, PeerConfig::default()).await.unwrap();
        b.handle
            .subscribe(&sid, &Uid::from(uid), &cam, Default::default())
            .await
            .unwrap();
        subscribers.push(s);
    }
    assert_eq!(b.handle.cores_of(&sid).len(), 2, "B spans both its cores");

    // Send until the trunk is up and the feed flows to the first subscriber.
    let mut src = Source::video(SSRC, 1000);
    let mut flowing = false;
    for _ in 0..250 {
        publisher.send_rtp(&src.next_packet()).await.unwrap();
        if subscribers[0].recv(Duration::from_millis(20)).await.is_ok() {
            flowing = true;
            break;
        }
    }
    assert!(flowing, "the feed reached node B");
    for s in &mut subscribers {
        drain(s).await;
    }
    let before = trunk_to(&edge_a, "b").await;
    assert!(before.up);
    let max = before.max_datagram.unwrap();
    assert!(max >= 1300, "max datagram {max}");

    let n = 100;
    let first = src.next_index();
    for _ in 0..n {
        publisher.send_rtp(&src.next_packet()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for (k, sub) in subscribers.iter_mut().enumerate() {
        for i in 0..n {
            let got = sub
                .recv_rtp(Duration::from_secs(5), |_| {})
                .await
                .unwrap_or_else(|e| panic!("subscriber {k}, packet {i}: {e}"));
            assert_eq!(verify(&got.payload), Some(first + i), "subscriber {k}");
        }
    }
    let after = trunk_to(&edge_a, "b").await;
    let at_b = trunk_to(&edge_b, "a").await;
    let crossed = after.tunnel.datagrams_out - before.tunnel.datagrams_out;
    assert_eq!(
        crossed, n,
        "each packet crossed once for three subscribers on two cores"
    );
    assert_eq!(at_b.tunnel.datagrams_in, after.tunnel.datagrams_out);
    assert_eq!(after.tunnel.resent, 0);
    println!(
        "trunk a→b: {crossed} datagrams for {n} packets and 3 subscribers on 2 cores; \
         largest datagram {max} B, rtt {:.2} ms, {} UDP datagrams ({} B) in all",
        after.rtt_ms, after.udp_sent, after.udp_bytes_sent
    );

    // A keyframe asked for on node B reaches the publisher on node A.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    drain(&mut publisher).await;
    b.handle.request_keyframe(&sid, &cam).await.unwrap();
    let rtcp = collect_rtcp(&mut publisher, Duration::from_secs(1)).await;
    assert!(plis(&rtcp).contains(&SSRC), "the publisher got a PLI");

    // The last subscriber on B leaves: the feed stops crossing.
    for uid in ["s1", "s2", "s3"] {
        b.handle
            .unsubscribe(&sid, &Uid::from(uid), &cam)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = trunk_to(&edge_a, "b").await.tunnel.datagrams_out;
    for _ in 0..20 {
        publisher.send_rtp(&src.next_packet()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(trunk_to(&edge_a, "b").await.tunnel.datagrams_out, stopped);
}
