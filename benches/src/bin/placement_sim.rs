//! Placement on a simulated cloud: the placement code signalling runs
//! (`signalling::cluster::placement`), fed a cloud of regions and nodes and a day's peak of
//! sessions whose sizes and participants' regions are drawn at random (seeded, so a run is
//! repeatable). Reports how evenly the nodes fill, how many trunks each node holds, the
//! backbone traffic the sessions spanning nodes make, and what Redis must carry: keys, bytes
//! (from the records as the code serialises them) and commands a second.
//!
//! ```text
//! cargo run --release -p webrtcai-benches --bin placement_sim -- --sessions 4000 --seed 1
//! ```

use std::collections::{BTreeSet, HashMap};

use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use relay::control::{FeedDescription, HeaderExtension, MediaKind, PayloadCodec, Simulcast};
use serde::Serialize;
use signalling::cluster::placement;
use signalling::cluster::NodeInfo;

/// A simulated cloud and a peak of sessions on it.
#[derive(Parser, Debug)]
struct Args {
    /// Regions.
    #[arg(long, default_value_t = 6)]
    regions: usize,
    /// Nodes per region.
    #[arg(long, default_value_t = 20)]
    nodes_per_region: usize,
    /// Participants a node takes.
    #[arg(long, default_value_t = 1000)]
    capacity: u32,
    /// Sessions at the peak.
    #[arg(long, default_value_t = 4_000)]
    sessions: usize,
    /// Share of a session's participants in its home region; the rest come from the others.
    #[arg(long, default_value_t = 0.7)]
    home_share: f64,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Average minutes a participant stays (for join and leave rates).
    #[arg(long, default_value_t = 30.0)]
    stay_minutes: f64,
    /// Place every participant on the least filled node of its region, ignoring the node the
    /// session has there (for comparison).
    #[arg(long)]
    no_claim: bool,
}

const REGIONS: [&str; 8] = [
    "us-east",
    "us-west",
    "eu-west",
    "eu-central",
    "ap-south",
    "ap-east",
    "sa-east",
    "af-south",
];

/// A session size: most calls are small (lognormal with a median of 4, clipped to 2..=5000),
/// and one session in 200 is an event of 500 to 5000 (log-uniform).
fn session_size(rng: &mut StdRng) -> usize {
    if rng.random::<f64>() < 0.005 {
        return (500f64.ln() + rng.random::<f64>() * (5000f64.ln() - 500f64.ln())).exp() as usize;
    }
    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
    let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    ((4f64.ln() + 1.3 * normal).exp().round() as usize).clamp(2, 5000)
}

/// Publishers of a session: everyone in a small call, a few speakers in a large one.
fn publishers(size: usize) -> usize {
    if size <= 8 {
        size
    } else if size <= 50 {
        6
    } else {
        3
    }
}

/// A typical simulcast webcam track as the relay is told of it: what a feed record carries
/// per track.
fn webcam_track() -> FeedDescription {
    FeedDescription {
        feed_id: "f-3c1a9b0d2e4f/video".into(),
        kind: MediaKind::Video,
        ssrc: None,
        clock_rate: 90_000,
        payload_types: vec![96, 97, 98, 99, 100, 101, 45, 46],
        header_extensions: [
            "urn:ietf:params:rtp-hdrext:sdes:mid",
            "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
            "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
            "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
            "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension",
        ]
        .iter()
        .enumerate()
        .map(|(i, uri)| HeaderExtension {
            id: i as u8 + 1,
            uri: (*uri).into(),
        })
        .collect(),
        nack: true,
        rtx_ssrc: None,
        rtx_payload_types: vec![],
        codecs: vec![PayloadCodec {
            pt: 96,
            name: "VP8".into(),
        }],
        simulcast: Some(Simulcast {
            mid: "1".into(),
            rids: vec!["q".into(), "h".into(), "f".into()],
        }),
        screen: false,
        renumbering: None,
    }
}

#[derive(Serialize, Default)]
struct Summary {
    min: f64,
    p50: f64,
    mean: f64,
    p99: f64,
    max: f64,
}

fn summary(mut v: Vec<f64>) -> Summary {
    if v.is_empty() {
        return Summary::default();
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Summary {
        min: v[0],
        p50: at(0.5),
        mean: v.iter().sum::<f64>() / v.len() as f64,
        p99: at(0.99),
        max: v[v.len() - 1],
    }
}

#[derive(Serialize)]
struct Report {
    regions: usize,
    nodes: usize,
    sessions: usize,
    participants: usize,
    refused: usize,
    largest_session: usize,
    node_fill: Summary,
    sessions_spanning_nodes: usize,
    sessions_spanning_regions: usize,
    trunks_per_node: Summary,
    backbone_gbps: f64,
    cross_region_gbps: f64,
    backbone_share_of_media: f64,
    redis_keys: usize,
    redis_megabytes: f64,
    redis_commands_per_second: f64,
    redis_heartbeat_watch_commands_per_second: f64,
    redis_watch_megabytes_per_second: f64,
    redis_join_leave_commands_per_second: f64,
    pubsub_deliveries_per_second: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rng = StdRng::seed_from_u64(args.seed);
    let regions: Vec<&str> = REGIONS
        .iter()
        .copied()
        .take(args.regions.min(REGIONS.len()))
        .collect();
    let mut nodes: Vec<NodeInfo> = Vec::new();
    for r in &regions {
        for i in 0..args.nodes_per_region {
            nodes.push(NodeInfo {
                id: format!("{r}-{i}"),
                region: (*r).into(),
                signalling: format!("https://{r}-{i}.example.net"),
                edge: "10.0.0.1:7400".parse()?,
                media: "203.0.113.1".parse()?,
                capacity: args.capacity,
                load: 0,
                homes_sessions: true,
            });
        }
    }
    let index: HashMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.clone(), i))
        .collect();

    // Media per published feed: three simulcast layers and audio, kbit/s.
    let feed_kbps = 150.0 + 500.0 + 1500.0 + 50.0;
    let mut participants = 0;
    let mut refused = 0;
    let mut largest = 0;
    let mut trunks: BTreeSet<(usize, usize)> = BTreeSet::new();
    let (mut backbone_kbps, mut cross_region_kbps, mut media_kbps) = (0.0, 0.0, 0.0);
    let (mut spanning_nodes, mut spanning_regions) = (0, 0);
    let (mut member_entries, mut feed_entries, mut claims) = (0usize, 0usize, 0usize);
    let mut fanout_deliveries = 0.0;
    for _ in 0..args.sessions {
        let size = session_size(&mut rng);
        largest = largest.max(size);
        let home = rng.random_range(0..regions.len());
        let mut claimed: HashMap<usize, String> = HashMap::new();
        // Each participant's node, in arrival order.
        let mut placed: Vec<usize> = Vec::with_capacity(size);
        for _ in 0..size {
            let region = if rng.random::<f64>() < args.home_share {
                home
            } else {
                rng.random_range(0..regions.len())
            };
            let claim = claimed
                .get(&region)
                .map(String::as_str)
                .filter(|_| !args.no_claim);
            let Some(node) = placement::place(&nodes, regions[region], claim) else {
                refused += 1;
                continue;
            };
            let id = node.id.clone();
            claimed.entry(region).or_insert_with(|| id.clone());
            let i = index[&id];
            nodes[i].load += 1;
            placed.push(i);
        }
        participants += placed.len();
        member_entries += placed.len();
        claims += claimed.len();
        let session_nodes: BTreeSet<usize> = placed.iter().copied().collect();
        let session_regions: BTreeSet<&str> = session_nodes
            .iter()
            .map(|&n| nodes[n].region.as_str())
            .collect();
        if session_nodes.len() > 1 {
            spanning_nodes += 1;
        }
        if session_regions.len() > 1 {
            spanning_regions += 1;
        }
        // A node with subscribers of a feed gets one copy over its trunk from the
        // publisher's node.
        let pubs = publishers(placed.len());
        feed_entries += pubs;
        for &p in placed.iter().take(pubs) {
            media_kbps += feed_kbps * (placed.len() - 1) as f64;
            for &n in session_nodes.iter().filter(|&&n| n != p) {
                backbone_kbps += feed_kbps;
                if nodes[n].region != nodes[p].region {
                    cross_region_kbps += feed_kbps;
                }
                trunks.insert((p.min(n), p.max(n)));
            }
        }
        // Every session event goes to each node following the session.
        fanout_deliveries += session_nodes.len() as f64;
    }
    let mut per_node = vec![0usize; nodes.len()];
    for &(a, b) in &trunks {
        per_node[a] += 1;
        per_node[b] += 1;
    }

    // Redis: records as the code writes them.
    let node_json = serde_json::to_string(&nodes[0])?.len();
    let track = serde_json::to_string(&webcam_track())?.len();
    let feed_record = 300 + 2 * track; // node, info, codecs, edge + two tracks
    let member_record = 60;
    let resume_record = 40;
    let per_key = 90; // key name and Redis's overhead per key or field, roughly
    let keys = nodes.len() + 1 + args.sessions * 2 + claims + participants;
    let bytes = nodes.len() * (node_json + per_key)
        + member_entries * (member_record + per_key)
        + feed_entries * (feed_record + per_key)
        + claims * per_key
        + participants * (resume_record + per_key);
    // Every node: a heartbeat every 400 ms (one script), and a look at the nodes every
    // 250 ms (epoch SET NX and GET, the reaping script, the version's GET: about 40 bytes
    // back). The records are read again only when the set of live nodes changes; with one
    // node joining or leaving a minute, each node reads them all once a minute.
    let n = nodes.len() as f64;
    let heartbeat_watch = n * (1.0 / 0.4 + 4.0 / 0.25);
    let watch_mb = (n / 0.25 * 40.0 + n * n * node_json as f64 / 60.0) / 1e6;
    // Each participant joins and leaves once per stay: put member, put resume, publish; at
    // the leave, remove both and publish; feeds likewise for publishers.
    let stay = args.stay_minutes * 60.0;
    let join_leave = participants as f64 / stay * 6.0 + feed_entries as f64 / stay * 4.0;
    let events_per_second = participants as f64 / stay * 2.0 + feed_entries as f64 / stay * 2.0;
    let fill: Vec<f64> = nodes
        .iter()
        .map(|n| f64::from(n.load) / f64::from(n.capacity))
        .collect();
    let report = Report {
        regions: regions.len(),
        nodes: nodes.len(),
        sessions: args.sessions,
        participants,
        refused,
        largest_session: largest,
        node_fill: summary(fill),
        sessions_spanning_nodes: spanning_nodes,
        sessions_spanning_regions: spanning_regions,
        trunks_per_node: summary(per_node.iter().map(|&t| t as f64).collect()),
        backbone_gbps: backbone_kbps / 1e6,
        cross_region_gbps: cross_region_kbps / 1e6,
        backbone_share_of_media: backbone_kbps / media_kbps.max(1.0),
        redis_keys: keys,
        redis_megabytes: bytes as f64 / 1e6,
        redis_commands_per_second: heartbeat_watch + join_leave,
        redis_heartbeat_watch_commands_per_second: heartbeat_watch,
        redis_watch_megabytes_per_second: watch_mb,
        redis_join_leave_commands_per_second: join_leave,
        pubsub_deliveries_per_second: events_per_second * fanout_deliveries / args.sessions as f64,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
