//! Data-channel throughput through the relay: one sender, N receivers, fixed-size messages
//! to everyone, on loopback.
//!
//! Every peer is a full client as a browser is (ICE, DTLS, then SCTP with DCEP through the
//! relay's own sans-IO SCTP in its client role). The sender offers `--rate` messages a second
//! (in 10 ms batches) on its reliable channel; each message carries its send time, and the
//! receivers count those sent inside the measurement window. The relay's CPU time over the
//! window (from `/proc`) divided by the copies delivered is its CPU per delivered message.
//!
//!     cargo build --release -p relay --bin relay -p webrtcai-benches --bin databench
//!     target/release/databench --fanout 1,10,100 --rate 1000

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use relay::control::ParticipantConfig;
use relay::engine::sctp::{DataChannels, MAX_MESSAGE_SIZE};
use relay::ids::{Sid, Uid};
use relay::remote::Client;
use relay::sfu::data::envelope::{address, Delivered};
use relay::sfu::data::RELIABLE_STREAM;
use relay::Control;
use serde::Serialize;
use tokio::sync::mpsc;
use webrtcai_benches::{append_json, CpuTime, RelayProcess};
use webrtcai_tests::peer::{PeerConfig, WirePeer};

/// Messages a second and MB/s through the relay, and its CPU per delivered message.
#[derive(Parser, Debug)]
struct Args {
    /// Fan-outs to measure (receivers of each message).
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    fanout: Vec<usize>,
    /// Messages a second the sender offers.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Measurement window per fan-out, seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Sending runs this long before the window opens, seconds.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Append one JSON record per run to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Serialize)]
struct Record {
    server: &'static str,
    fanout: usize,
    size: usize,
    offered_rate: u64,
    seconds: f64,
    sent: u64,
    delivered: u64,
    loss: f64,
    delivered_per_second: f64,
    delivered_mb_per_second: f64,
    server_cpu_share: f64,
    server_cpu_us_per_delivered: f64,
    loadgen_cpu_share: f64,
    latency_p50_us: u64,
    latency_p99_us: u64,
}

/// Nanoseconds on a clock every task of this process shares.
fn clock_ns(origin: Instant) -> u64 {
    origin.elapsed().as_nanos() as u64
}

/// One peer's data channels over its DTLS: packets in from the DTLS, packets out to it, SCTP's
/// timers, messages to send from `outgoing`; what it receives goes to `delivered`.
async fn drive(
    peer: WirePeer,
    mut outgoing: mpsc::Receiver<Bytes>,
    on_message: impl Fn(&[u8]) + Send + 'static,
    ready: Arc<AtomicU64>,
) {
    let dtls = peer.dtls();
    let mut channels = DataChannels::client(Instant::now(), MAX_MESSAGE_SIZE as usize);
    let (packets_tx, mut packets) = mpsc::channel::<Vec<u8>>(1024);
    let reader = {
        let dtls = dtls.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = dtls.read(&mut buf, None).await {
                if packets_tx.send(buf[..n].to_vec()).await.is_err() {
                    break;
                }
            }
        })
    };
    let mut announced = false;
    loop {
        let wake = channels
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            p = packets.recv() => {
                let Some(p) = p else { break };
                channels.handle_packet(Instant::now(), &p);
                while let Ok(p) = packets.try_recv() {
                    channels.handle_packet(Instant::now(), &p);
                }
            }
            m = outgoing.recv() => {
                let Some(m) = m else { break };
                let _ = channels.send(Instant::now(), RELIABLE_STREAM, false, &m);
                while let Ok(m) = outgoing.try_recv() {
                    let _ = channels.send(Instant::now(), RELIABLE_STREAM, false, &m);
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => channels.handle_timeout(Instant::now()),
        }
        let now = Instant::now();
        while let Some(m) = channels.read(now) {
            on_message(&m.data);
        }
        if !announced
            && channels
                .channel(RELIABLE_STREAM)
                .is_some_and(|c| c.acknowledged)
        {
            announced = true;
            ready.fetch_add(1, Ordering::Relaxed);
        }
        while let Some(p) = channels.poll_transmit() {
            if dtls.write(&p, None).await.is_err() {
                reader.abort();
                return;
            }
        }
    }
    reader.abort();
}

async fn join(client: &Client, sid: &Sid, uid: &str, may_send: bool) -> anyhow::Result<WirePeer> {
    let (cert, fingerprint) = WirePeer::certificate();
    let ufrag = WirePeer::random_ufrag();
    let info = client
        .add_participant(
            sid.clone(),
            Uid::from(uid),
            ParticipantConfig {
                remote_ufrag: Some(ufrag.clone()),
                remote_fingerprint: Some(fingerprint),
                publish_data: may_send,
                ..Default::default()
            },
        )
        .await?;
    WirePeer::connect(&info, ufrag, cert, PeerConfig::default())
        .await
        .with_context(|| format!("{uid} ICE/DTLS"))
}

async fn run(
    args: &Args,
    relay: &RelayProcess,
    client: &Client,
    fanout: usize,
) -> anyhow::Result<Record> {
    let sid = Sid::from(format!("data-{fanout}").as_str());
    client.create_session(sid.clone(), Some(0)).await?;
    let origin = Instant::now();
    let ready = Arc::new(AtomicU64::new(0));
    // Receivers count messages sent inside the window, and their delays.
    let window = Arc::new(std::sync::Mutex::new((u64::MAX, u64::MAX)));
    let delivered = Arc::new(AtomicU64::new(0));
    let delays = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let mut keep = Vec::new();
    for i in 0..fanout {
        let peer = join(client, &sid, &format!("r{i}"), false).await?;
        let (tx, rx) = mpsc::channel(16);
        keep.push(tx);
        let (window, delivered, delays) = (window.clone(), delivered.clone(), delays.clone());
        tokio::spawn(drive(
            peer,
            rx,
            move |m| {
                let Ok(d) = Delivered::parse(m) else { return };
                let Some(sent) = d.payload.get(..8) else {
                    return;
                };
                let sent = u64::from_be_bytes(sent.try_into().expect("eight bytes"));
                let (from, to) = *window.lock().unwrap_or_else(|e| e.into_inner());
                if (from..to).contains(&sent) {
                    delivered.fetch_add(1, Ordering::Relaxed);
                    delays
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(clock_ns(origin).saturating_sub(sent) / 1000);
                }
            },
            ready.clone(),
        ));
    }
    let sender = join(client, &sid, "sender", true).await?;
    let (send_tx, send_rx) = mpsc::channel(1024);
    tokio::spawn(drive(sender, send_rx, |_| {}, ready.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready.load(Ordering::Relaxed) < fanout as u64 + 1 {
        anyhow::ensure!(Instant::now() < deadline, "data channels not open in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The sender: a batch every 10 ms.
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sending = {
        let (sent, stop, window) = (sent.clone(), stop.clone(), window.clone());
        let (rate, size) = (args.rate, args.size.max(8));
        tokio::spawn(async move {
            let start = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                while n < due {
                    let now = clock_ns(origin);
                    let mut payload = vec![0u8; size];
                    payload[..8].copy_from_slice(&now.to_be_bytes());
                    if send_tx
                        .send(Bytes::from(address(false, &[], &payload)))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let (from, to) = *window.lock().unwrap_or_else(|e| e.into_inner());
                    if (from..to).contains(&now) {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let cpu0 = CpuTime::of(relay.pid())?;
    let own0 = CpuTime::of(std::process::id())?;
    let wall0 = Instant::now();
    *window.lock().unwrap_or_else(|e| e.into_inner()) = (clock_ns(origin), u64::MAX);
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    window.lock().unwrap_or_else(|e| e.into_inner()).1 = clock_ns(origin);
    let cpu = CpuTime::of(relay.pid())?.since(&cpu0);
    let own = CpuTime::of(std::process::id())?.since(&own0);
    let wall = wall0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = sending.await;
    // What was sent in the window and is still on its way.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = sent.load(Ordering::Relaxed);
    let delivered = delivered.load(Ordering::Relaxed);
    let mut d = std::mem::take(&mut *delays.lock().unwrap_or_else(|e| e.into_inner()));
    d.sort_unstable();
    let pct = |p: f64| {
        d.get(((d.len() as f64 * p) as usize).min(d.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let expected = sent * fanout as u64;
    client.remove_session(sid).await?;
    Ok(Record {
        server: "webrtc.ai relay",
        fanout,
        size: args.size,
        offered_rate: args.rate,
        seconds: wall,
        sent,
        delivered,
        loss: if expected == 0 {
            0.0
        } else {
            1.0 - delivered as f64 / expected as f64
        },
        delivered_per_second: delivered as f64 / wall,
        delivered_mb_per_second: delivered as f64 * args.size as f64 / wall / 1e6,
        server_cpu_share: cpu.sched_secs / wall,
        server_cpu_us_per_delivered: cpu.sched_secs * 1e6 / delivered.max(1) as f64,
        loadgen_cpu_share: own.sched_secs / wall,
        latency_p50_us: pct(0.5),
        latency_p99_us: pct(0.99),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The relay's own rate limit far above what is offered: this measures the relay, not
    // the limit.
    let relay = RelayProcess::start(
        1,
        &[
            "--no-pin",
            "--data-rate",
            "1000000000",
            "--data-burst",
            "100000000",
        ],
    )
    .await?;
    let (client, _events) = Client::connect(relay.control, None).await?;
    println!("fan-out  offered/s  delivered/s   MB/s    loss   relay CPU   µs/message   p50 µs   p99 µs   loadgen CPU");
    for &fanout in &args.fanout {
        let r = run(&args, &relay, &client, fanout).await?;
        println!(
            "{:>7}  {:>9}  {:>11.0}  {:>5.1}  {:>5.2}%  {:>9.0}%  {:>11.2}  {:>7}  {:>7}  {:>10.0}%",
            r.fanout,
            r.offered_rate,
            r.delivered_per_second,
            r.delivered_mb_per_second,
            100.0 * r.loss,
            100.0 * r.server_cpu_share,
            r.server_cpu_us_per_delivered,
            r.latency_p50_us,
            r.latency_p99_us,
            100.0 * r.loadgen_cpu_share,
        );
        if let Some(path) = &args.json {
            append_json(path, &r)?;
        }
    }
    Ok(())
}
