//! Forwarding benchmark: relay CPU time per forwarded packet at several fan-outs.
//!
//! Starts the release `relay` binary as its own process (one pinned core), drives it with real
//! WebRTC peers from this process over loopback (ICE, DTLS, SRTP), one publisher → N
//! subscribers per run, and reads the relay's CPU time from `/proc/<pid>/stat` before and after
//! a measurement window. Figures are CPU time per forwarded packet, so they do not depend on
//! how busy the machine is otherwise (only on how fast the CPU is).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use relay::control::ParticipantConfig;
use relay::ids::{FeedId, Sid, Uid};
use relay::remote::Client;
use relay::Control;
use serde::Serialize;
use webrtcai_benches::{rss_kib, CpuTime, RelayProcess};
use webrtcai_tests::harness::video_feed;
use webrtcai_tests::media::Source;
use webrtcai_tests::peer::{PeerConfig, Received, WirePeer};

#[derive(Clone, Copy, Debug, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
enum Profile {
    /// SRTP_AEAD_AES_128_GCM.
    Gcm,
    /// SRTP_AES128_CM_HMAC_SHA1_80.
    Sha1,
}

/// Relay CPU per forwarded packet, one publisher → N subscribers.
#[derive(Parser, Debug)]
struct Args {
    /// Fan-outs to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    fanout: Vec<usize>,
    /// Forwarded packets per second to aim for (the publisher sends this / fan-out).
    #[arg(long, default_value_t = 20_000)]
    forward_rate: u64,
    /// Cap on the publisher's packet rate.
    #[arg(long, default_value_t = 5_000)]
    max_publish_rate: u64,
    /// RTP payload bytes.
    #[arg(long, default_value_t = 1200)]
    payload: usize,
    /// Measurement window per fan-out, after a 1 s warm-up.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// SRTP profile every peer offers.
    #[arg(long, value_enum, default_value_t = Profile::Gcm)]
    profile: Profile,
    /// Append one JSON record per run to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Serialize)]
struct Record {
    server: &'static str,
    scenario: String,
    profile: Profile,
    fanout: usize,
    payload: usize,
    seconds: f64,
    publish_rate: f64,
    offered_forward_rate: f64,
    forwarded_rate: f64,
    delivered_rate: f64,
    loss: f64,
    relay_cpu_us_per_forwarded: f64,
    relay_cpu_us_per_forwarded_schedstat: f64,
    relay_cpu_share: f64,
    relay_rss_kib: u64,
}

async fn join_all_peers(
    client: &Client,
    sid: &Sid,
    names: Vec<String>,
    config: PeerConfig,
) -> anyhow::Result<Vec<WirePeer>> {
    let mut peers = Vec::with_capacity(names.len());
    for chunk in names.chunks(20) {
        let joins = chunk.iter().map(|uid| {
            let config = config.clone();
            async move {
                let (cert, fp) = WirePeer::certificate();
                let ufrag = WirePeer::random_ufrag();
                let info = client
                    .add_participant(
                        sid.clone(),
                        Uid::from(uid.as_str()),
                        ParticipantConfig {
                            remote_ufrag: Some(ufrag.clone()),
                            remote_fingerprint: Some(fp),
                            ..Default::default()
                        },
                    )
                    .await?;
                anyhow::Ok(WirePeer::connect(&info, ufrag, cert, config).await?)
            }
        });
        for p in futures::future::join_all(joins).await {
            peers.push(p?);
        }
    }
    Ok(peers)
}

async fn run(
    args: &Args,
    relay: &RelayProcess,
    client: &Client,
    fanout: usize,
) -> anyhow::Result<Record> {
    let sid = Sid::from(format!("bench-{fanout}"));
    client.create_session(sid.clone(), Some(0)).await?;
    let config = PeerConfig {
        profiles: vec![match args.profile {
            Profile::Gcm => SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            Profile::Sha1 => SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        }],
        consent_interval: Duration::from_secs(2),
        ..PeerConfig::default()
    };
    let mut names = vec!["publisher".to_owned()];
    names.extend((0..fanout).map(|i| format!("sub-{i}")));
    let mut peers = join_all_peers(client, &sid, names, config).await?;
    let mut publisher = peers.remove(0);
    client
        .publish(
            sid.clone(),
            Uid::from("publisher"),
            video_feed("cam", 0x0bad_cafe),
        )
        .await?;
    for i in 0..fanout {
        client
            .subscribe(
                sid.clone(),
                Uid::from(format!("sub-{i}")),
                FeedId::from("cam"),
                Default::default(),
            )
            .await?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let stop_receiving = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let mut receivers = Vec::new();
    for mut peer in peers {
        let stop = stop_receiving.clone();
        let received = received.clone();
        receivers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Received::Rtp(_)) = peer.recv(Duration::from_millis(200)).await {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
            peer
        }));
    }

    let publish_rate = (args.forward_rate / fanout as u64).clamp(1, args.max_publish_rate) as f64;
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let stop = stop.clone();
        let sent = sent.clone();
        let payload = args.payload;
        tokio::spawn(async move {
            let mut src = Source::video(0x0bad_cafe, payload);
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let due = (start.elapsed().as_secs_f64() * publish_rate) as u64;
                while sent.load(Ordering::Relaxed) < due {
                    if publisher.send_rtp(&src.next_packet()).await.is_err() {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            publisher
        })
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = relay.pid();
    let cpu0 = CpuTime::of(pid)?;
    let fwd0: u64 = client.stats().await?.iter().map(|s| s.rtp_forwarded).sum();
    let (sent0, recv0) = (
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    );
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let cpu1 = CpuTime::of(pid)?;
    let elapsed = t0.elapsed().as_secs_f64();
    let fwd1: u64 = client.stats().await?.iter().map(|s| s.rtp_forwarded).sum();
    let (sent1, recv1) = (
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    );
    let rss = rss_kib(pid);
    // Let in-flight packets land before counting loss over the whole run.
    stop.store(true, Ordering::Relaxed);
    let _publisher = sender.await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_receiving.store(true, Ordering::Relaxed);
    let total_sent = sent.load(Ordering::Relaxed);
    let total_received = received.load(Ordering::Relaxed);
    for r in receivers {
        r.abort();
    }
    client.remove_session(sid).await?;

    let forwarded = (fwd1 - fwd0) as f64;
    let cpu = cpu1.since(&cpu0);
    let offered = total_sent as f64 * fanout as f64;
    Ok(Record {
        server: "webrtc.ai relay",
        scenario: format!("1→{fanout} broadcast"),
        profile: args.profile,
        fanout,
        payload: args.payload,
        seconds: elapsed,
        publish_rate: (sent1 - sent0) as f64 / elapsed,
        offered_forward_rate: (sent1 - sent0) as f64 * fanout as f64 / elapsed,
        forwarded_rate: forwarded / elapsed,
        delivered_rate: (recv1 - recv0) as f64 / elapsed,
        loss: if offered > 0.0 {
            (1.0 - total_received as f64 / offered).max(0.0)
        } else {
            0.0
        },
        relay_cpu_us_per_forwarded: cpu.stat_secs / forwarded * 1e6,
        relay_cpu_us_per_forwarded_schedstat: cpu.sched_secs / forwarded * 1e6,
        relay_cpu_share: cpu.sched_secs / elapsed,
        relay_rss_kib: rss,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let relay = RelayProcess::start(1, &[]).await?;
    let (client, _events) = Client::connect(relay.control, None)
        .await
        .context("control connection")?;
    println!(
        "{:>7} {:>8} {:>12} {:>12} {:>8} {:>14} {:>14} {:>9}",
        "fan-out",
        "profile",
        "fwd pkt/s",
        "recv pkt/s",
        "loss",
        "µs/pkt (stat)",
        "µs/pkt (sched)",
        "relay CPU"
    );
    for &fanout in &args.fanout {
        let r = run(&args, &relay, &client, fanout).await?;
        println!(
            "{:>7} {:>8} {:>12.0} {:>12.0} {:>7.3}% {:>14.2} {:>14.2} {:>8.0}%",
            r.fanout,
            format!("{:?}", r.profile),
            r.forwarded_rate,
            r.delivered_rate,
            r.loss * 100.0,
            r.relay_cpu_us_per_forwarded,
            r.relay_cpu_us_per_forwarded_schedstat,
            r.relay_cpu_share * 100.0
        );
        if let Some(path) = &args.json {
            webrtcai_benches::append_json(path, &r)?;
        }
    }
    Ok(())
}
