//! The multi-node scenario (`loadgen --scenario multi-node`): one publisher on node A, N
//! subscribers on node B, the feed crossing the QUIC trunk between the two nodes' edges (both
//! nodes in this process, the trunk on loopback), and a few subscribers on A itself for
//! comparison.
//!
//! Reports, over a measurement window after a warm-up:
//! - trunk bytes per published byte: the media datagrams' bytes (and QUIC's UDP bytes,
//!   acknowledgements and headers included) over the RTP bytes the publisher sent. One copy
//!   of the feed crosses however many subscribe on B, so this stays near 1 at any N.
//! - edge CPU per packet: each edge thread's CPU time (from /proc/self/task/*/schedstat) over
//!   the datagrams it sent (A) or received (B).
//! - latency the edge adds: the one-way latency (send to receipt, on this process's monotonic
//!   clock) of B's subscribers less that of A's subscribers, at p50 and p99.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::latency::{Latency, LatencySummary};
use crate::traffic::{clock_ns, Probe, PROBE_LEN};
use anyhow::Context;
use edge::cluster::{ClusterCa, NodeIdentity};
use edge::node::{Edge, EdgeConfig, PeerNode, TrunkStats};
use relay::ids::{FeedId, Sid, Uid};
use serde::Serialize;
use webrtcai_tests::harness::{video_feed, TestRelay};
use webrtcai_tests::media::Source;
use webrtcai_tests::peer::{PeerConfig, WirePeer};

/// What a multi-node run does.
#[derive(Debug, Clone)]
pub struct MultiNodeOptions {
    /// Subscribers on node B, across the trunk.
    pub subscribers: usize,
    /// Subscribers on node A, whose latency is the baseline.
    pub local: usize,
    /// Publisher packets per second (1200-byte payloads; 156/s is 1.5 Mbit/s).
    pub rate: u32,
    /// Seconds measured, after the warm-up.
    pub seconds: f64,
    /// Seconds of warm-up.
    pub warmup: f64,
}

/// One run's figures.
#[derive(Debug, Serialize)]
pub struct MultiNodeReport {
    /// Subscribers on node B.
    pub subscribers_b: usize,
    /// Subscribers on node A.
    pub subscribers_a: usize,
    /// RTP packets the publisher sent in the window.
    pub published_packets: u64,
    /// Their bytes (RTP header and payload).
    pub published_rtp_bytes: u64,
    /// Media datagrams A sent B in the window.
    pub trunk_datagrams: u64,
    /// Their bytes.
    pub trunk_datagram_bytes: u64,
    /// UDP bytes A's edge sent B (QUIC's headers and acknowledgements in).
    pub trunk_udp_bytes: u64,
    /// Datagram bytes over published bytes: about 1 for one copy.
    pub trunk_bytes_per_published_byte: f64,
    /// UDP bytes over published bytes.
    pub trunk_udp_bytes_per_published_byte: f64,
    /// Edge A's thread CPU per datagram sent, ns.
    pub edge_a_cpu_ns_per_datagram: f64,
    /// Edge B's thread CPU per datagram received, ns.
    pub edge_b_cpu_ns_per_datagram: f64,
    /// Packets B's subscribers received in the window.
    pub delivered_b: u64,
    /// Packets A's subscribers received in the window.
    pub delivered_a: u64,
    /// One-way latency to A's subscribers.
    pub latency_a: LatencySummary,
    /// One-way latency to B's subscribers.
    pub latency_b: LatencySummary,
    /// What the trunk adds at p50 (B less A), µs.
    pub added_p50_us: f64,
    /// What the trunk adds at p99, µs.
    pub added_p99_us: f64,
    /// The largest datagram the trunk's path takes, bytes.
    pub max_datagram: Option<usize>,
}

fn node(ca: &ClusterCa, id: &str) -> anyhow::Result<(TestRelay, Edge)> {
    let mut relay = TestRelay::start(1, |c| c.edge = true);
    let port = relay.relay.take_edge_port().context("edge port")?;
    let identity = NodeIdentity::from_issued(ca, &ca.issue(id)?)?;
    let edge = Edge::start(
        EdgeConfig {
            bind: "127.0.0.1:0".parse()?,
            identity,
            region: id.into(),
        },
        port,
        relay.handle.clone(),
    )?;
    Ok((relay, edge))
}

/// CPU time of this process's thread named `name`, nanoseconds.
fn thread_cpu_ns(name: &str) -> anyhow::Result<u64> {
    for task in std::fs::read_dir("/proc/self/task")? {
        let dir = task?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() == name {
            let stat = std::fs::read_to_string(dir.join("schedstat"))?;
            return stat
                .split_whitespace()
                .next()
                .context("schedstat")?
                .parse()
                .context("schedstat");
        }
    }
    anyhow::bail!("no thread {name}")
}

async fn trunk(edge: &Edge, peer: &str) -> anyhow::Result<TrunkStats> {
    edge.handle()
        .stats()
        .await?
        .into_iter()
        .find(|t| t.peer == peer)
        .context("no trunk")
}

/// Receive until `stop`, recording the latency of what arrives inside the window.
async fn receive(
    mut peer: WirePeer,
    stop: Arc<AtomicBool>,
    window: Arc<AtomicBool>,
) -> (Latency, u64) {
    let mut latency = Latency::new();
    let mut n = 0;
    let mut buf = vec![0x80u8; 12];
    while !stop.load(Ordering::Relaxed) {
        let Ok(p) = peer.recv_rtp(Duration::from_millis(200), |_| {}).await else {
            continue;
        };
        let now = clock_ns();
        buf.truncate(12);
        buf.extend_from_slice(&p.payload);
        if let Some(probe) = Probe::read(&buf) {
            if window.load(Ordering::Relaxed) {
                latency.record_ns(now.saturating_sub(probe.sent_ns));
                n += 1;
            }
        }
    }
    (latency, n)
}

/// Run one publisher on node A and `opts.subscribers` on node B (both nodes in this
/// process, the trunk on loopback), and measure the trunk.
pub async fn run(opts: &MultiNodeOptions) -> anyhow::Result<MultiNodeReport> {
    let args = opts;
    let ca = ClusterCa::generate("bench")?;
    let (a, edge_a) = node(&ca, "a")?;
    let (b, edge_b) = node(&ca, "b")?;
    let sid = Sid::from("bench");
    let cam = FeedId::from("cam");
    a.handle.create_session(sid.clone(), None).await?;
    b.handle.create_session(sid.clone(), None).await?;
    let mut publisher = a.join("bench", "pub", PeerConfig::default()).await?;
    let feed = video_feed("cam", 0x5eed);
    a.handle
        .publish(&sid, &Uid::from("pub"), feed.clone())
        .await?;
    let peer_a = PeerNode {
        node: "a".into(),
        addr: edge_a.handle().local_addr(),
    };
    edge_b
        .handle()
        .import(peer_a, &sid, &Uid::from("pub"), feed)
        .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let window = Arc::new(AtomicBool::new(false));
    let mut tasks_a = Vec::new();
    let mut tasks_b = Vec::new();
    let joined = Instant::now();
    for (t, count, prefix) in [(&a, args.local, "a"), (&b, args.subscribers, "b")] {
        for chunk in (0..count).collect::<Vec<_>>().chunks(20) {
            let joins = chunk.iter().map(|i| {
                let uid = format!("{prefix}{i}");
                let (sid, cam) = (&sid, &cam);
                async move {
                    let peer = t.join("bench", &uid, PeerConfig::default()).await?;
                    t.handle
                        .subscribe(sid, &Uid::from(uid.as_str()), cam, Default::default())
                        .await?;
                    anyhow::Ok(peer)
                }
            });
            for peer in futures::future::try_join_all(joins).await? {
                let task = tokio::spawn(receive(peer, stop.clone(), window.clone()));
                if prefix == "a" {
                    tasks_a.push(task);
                } else {
                    tasks_b.push(task);
                }
            }
        }
    }
    eprintln!(
        "{} subscribers on B and {} on A joined in {:.1} s",
        args.subscribers,
        args.local,
        joined.elapsed().as_secs_f64()
    );

    let mut src = Source::video(0x5eed, 1200);
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let warm_end = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end = warm_end + Duration::from_secs_f64(args.seconds);
    let mut measuring = false;
    let (mut packets, mut bytes) = (0u64, 0u64);
    let (mut before_a, mut before_b, mut cpu_a0, mut cpu_b0) = (None, None, 0, 0);
    let mut index = 0u64;
    loop {
        tick.tick().await;
        let now = Instant::now();
        if now >= end {
            break;
        }
        if !measuring && now >= warm_end {
            measuring = true;
            before_a = Some(trunk(&edge_a, "b").await?);
            before_b = Some(trunk(&edge_b, "a").await?);
            cpu_a0 = thread_cpu_ns("edge-a")?;
            cpu_b0 = thread_cpu_ns("edge-b")?;
            window.store(true, Ordering::Relaxed);
        }
        let mut p = src.next_packet();
        let mut payload = p.payload.to_vec();
        if payload.len() >= PROBE_LEN {
            Probe {
                stream: 1,
                index,
                sent_ns: clock_ns(),
            }
            .write(&mut payload);
        }
        index += 1;
        p.payload = payload.into();
        publisher.send_rtp(&p).await?;
        if measuring {
            packets += 1;
            bytes += (12 + p.payload.len()) as u64;
        }
    }
    window.store(false, Ordering::Relaxed);
    let after_a = trunk(&edge_a, "b").await?;
    let after_b = trunk(&edge_b, "a").await?;
    let cpu_a = thread_cpu_ns("edge-a")? - cpu_a0;
    let cpu_b = thread_cpu_ns("edge-b")? - cpu_b0;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut lat_a, mut lat_b) = (Latency::new(), Latency::new());
    let (mut n_a, mut n_b) = (0, 0);
    for t in tasks_a {
        let (l, n) = t.await?;
        lat_a.merge(&l);
        n_a += n;
    }
    for t in tasks_b {
        let (l, n) = t.await?;
        lat_b.merge(&l);
        n_b += n;
    }
    let before_a = before_a.context("no window")?;
    let before_b = before_b.context("no window")?;
    let datagrams = after_a.tunnel.datagrams_out - before_a.tunnel.datagrams_out;
    let datagram_bytes = after_a.tunnel.bytes_out - before_a.tunnel.bytes_out;
    let udp_bytes = after_a.udp_bytes_sent - before_a.udp_bytes_sent;
    let received_b = after_b.tunnel.datagrams_in - before_b.tunnel.datagrams_in;
    let (sa, sb) = (lat_a.summary(), lat_b.summary());
    drop((edge_a, edge_b));
    drop((a, b));
    Ok(MultiNodeReport {
        subscribers_b: args.subscribers,
        subscribers_a: args.local,
        published_packets: packets,
        published_rtp_bytes: bytes,
        trunk_datagrams: datagrams,
        trunk_datagram_bytes: datagram_bytes,
        trunk_udp_bytes: udp_bytes,
        trunk_bytes_per_published_byte: datagram_bytes as f64 / bytes.max(1) as f64,
        trunk_udp_bytes_per_published_byte: udp_bytes as f64 / bytes.max(1) as f64,
        edge_a_cpu_ns_per_datagram: cpu_a as f64 / datagrams.max(1) as f64,
        edge_b_cpu_ns_per_datagram: cpu_b as f64 / received_b.max(1) as f64,
        delivered_b: n_b,
        delivered_a: n_a,
        added_p50_us: sb.p50_us - sa.p50_us,
        added_p99_us: sb.p99_us - sa.p99_us,
        latency_a: sa,
        latency_b: sb,
        max_datagram: after_a.max_datagram,
    })
}
