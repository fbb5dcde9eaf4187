//! Load generator: many real WebRTC participants (ICE, DTLS, SRTP, RTP with probes) driven from
//! one process against our relay and against Janus's VideoRoom, on the same network topology
//! and the same CPU budget, with one JSON record per run and a chart of CPU per forwarded packet
//! against fan-out.
//!
//! ```text
//! loadgen --target both --scenario broadcast --fanout 1,10,100 --profile sha1 \
//!         --seconds 10 --json out.jsonl --svg chart.svg
//! loadgen --target relay --scenario conference --participants 5,10 --profile gcm
//! loadgen --scenario multi-node --fanout 200,200,200 --local 200 --seconds 10
//! ```
//!
//! Needs root (it creates a network namespace and a veth pair, deleted again at the end) and
//! `ip`, `taskset`; installs Janus from the distribution when the Janus target is asked for
//! and `/usr/bin/janus` is missing.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use webrtcai_benches::chart;
use webrtcai_benches::floor;
use webrtcai_benches::janus_process;
use webrtcai_benches::machine_busy_secs;
use webrtcai_benches::multinode;
use webrtcai_benches::record::Record;
use webrtcai_benches::scenario::{self, RunOptions, Scenario};
use webrtcai_benches::target::{Profile, ServerKind, ServerOptions, Target};
use webrtcai_benches::topology::{Delivery, Topology};
use webrtcai_benches::traffic::MediaProfile;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Which {
    /// This project's relay.
    Relay,
    /// Janus 1.1.2 VideoRoom.
    Janus,
    /// The relay and Janus.
    Both,
    /// The bare forwarder (`udp_floor --serve`): no crypto, no parsing, only the kernel's
    /// work of moving the same datagrams on the same path.
    Floor,
    /// The bare forwarder sending through an AF_XDP socket on its veth end instead of
    /// `sendmmsg` (`udp_floor --xdp-device`): the floor below the kernel's UDP send path.
    FloorXdp,
}

/// Whether peers answer as browsers with repair and congestion control negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Feedback {
    /// Peers only send media and read what arrives.
    Off,
    /// Receivers send receiver reports (with reference times) and NACKs; publishers stamp
    /// transport-wide sequence numbers, get the relay's congestion feedback and answer its
    /// NACKs with RTX. Subscriptions negotiate no transport-wide feedback and video is one
    /// stream: the relay neither estimates nor paces nor picks layers.
    On,
    /// As `on`, and as browsers publish and subscribe today: video goes out as three
    /// simulcast layers (10%, 30% and 100% of `--video-bitrate`, named by rid), receivers send
    /// transport-wide feedback, and the relay estimates each receiver's link, paces what it
    /// sends it and picks its layer (relay only).
    Quality,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ScenarioKind {
    /// One publisher, N subscribers (`--fanout`).
    Broadcast,
    /// M participants, everyone subscribed to everyone (`--participants`).
    Conference,
    /// `--sessions` sessions side by side, each one publisher and `--fanout` subscribers
    /// (the relay only; each session on the core the relay picks).
    Sessions,
    /// One publisher on node A, `--fanout` subscribers on node B across the QUIC trunk
    /// between the nodes' edges, `--local` on A as the baseline (both nodes in this process,
    /// on loopback; our relay only: Janus has no such thing).
    MultiNode,
}

/// Drive many WebRTC participants against the relay and/or Janus and measure them.
#[derive(Parser, Debug)]
struct Args {
    /// Which servers to measure, in this order (`relay,janus,floor`; `both` is the relay
    /// and Janus).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "both")]
    target: Vec<Which>,
    /// What the participants do.
    #[arg(long, value_enum, default_value_t = ScenarioKind::Broadcast)]
    scenario: ScenarioKind,
    /// Broadcast fan-outs to run.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    fanout: Vec<usize>,
    /// Conference sizes to run.
    #[arg(long, value_delimiter = ',', default_value = "5")]
    participants: Vec<usize>,
    /// Sessions side by side (`--scenario sessions`), each with `--fanout` subscribers.
    #[arg(long, value_delimiter = ',', default_value = "10")]
    sessions: Vec<usize>,
    /// Multi-node: subscribers on node A, beside the `--fanout` on node B.
    #[arg(long, default_value_t = 5)]
    local: usize,
    /// SRTP profiles to run (every peer offers only the one of its run).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sha1")]
    profile: Vec<Profile>,
    /// Feedback modes to run, in this order for each scenario (repeat them to interleave
    /// repeated runs, e.g. `off,on,off,on`). `on` is the relay only.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "off")]
    feedback: Vec<Feedback>,
    /// Share of RTP packets lost on each peer's own link, both ways (publishers leave them
    /// unsent, receivers discard them), so that feedback runs repair something: 0.01 is 1%.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Measurement window per run, seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Warm-up before the window, seconds.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Video bit rate per publisher, bits per second.
    #[arg(long, default_value_t = 1_500_000)]
    video_bitrate: u64,
    /// Video RTP payload size, bytes.
    #[arg(long, default_value_t = 1200)]
    packet_size: usize,
    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Seconds between keyframes.
    #[arg(long, default_value_t = 2.0)]
    keyframe_interval: f64,
    /// Keyframe size as a multiple of a delta frame.
    #[arg(long, default_value_t = 8)]
    keyframe_factor: u32,
    /// Publish video only (no audio stream).
    #[arg(long)]
    no_audio: bool,
    /// Pace video at this multiple of its bit rate, as browsers do (Chrome: 2.5); 0 sends
    /// each frame as one burst.
    #[arg(long, default_value_t = 0.0)]
    pacing: f64,
    /// Longest time connecting all participants of a run may take, seconds.
    #[arg(long, default_value_t = 180)]
    setup_timeout: u64,
    /// Participants connecting at the same time.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// CPU the server under test is confined to (the first of them, with `--server-cores`).
    #[arg(long, default_value_t = 1)]
    server_cpu: usize,
    /// The relay's cores, each pinned to a CPU of its own from `--server-cpu` on (wrapping
    /// round the machine's: on a 2-core machine, 2 shares the load generator's CPU, and CPU
    /// per forwarded packet, not throughput, is the figure to read).
    #[arg(long, default_value_t = 1)]
    server_cores: usize,
    /// The relay's `--spread-after`: participants of a session on one core before it spreads
    /// to another (its default when not given).
    #[arg(long)]
    spread_after: Option<usize>,
    /// CPU the load generator is pinned to.
    #[arg(long, default_value_t = 0)]
    loadgen_cpu: usize,
    /// Janus `event_loops` (0: its default, one thread per handle).
    #[arg(long, default_value_t = 1)]
    janus_event_loops: usize,
    /// Who runs the datagrams' receive path on the veth, in this order: `shared` (the veth's
    /// default: the sending CPU receives for the other end, so the server pays for its
    /// subscribers' receptions) and/or `split` (NAPI threads pinned to each side: each side
    /// pays its own, as on a real network). Each is a network of its own, built in turn.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "shared")]
    topology: Vec<Delivery>,
    /// Name of the server network namespace (veth ends are `<name>-h`, `<name>-s`).
    #[arg(long, default_value = "wai-bench")]
    namespace: String,
    /// Append one JSON record per run to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the CPU-per-packet chart (from every broadcast record in `--json`, or from this
    /// invocation's records without it).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Before each run, wait up to this many seconds for the rest of the machine to go idle
    /// (under a fifth of a core busy over 2 s), so other work does not share the CPUs.
    #[arg(long, default_value_t = 0)]
    wait_idle: u64,
    /// Run nothing: only redraw `--svg` from the records in `--json`.
    #[arg(long, requires_all = ["json", "svg"])]
    redraw: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.redraw {
        return draw(&args, &[]);
    }
    if args.scenario == ScenarioKind::MultiNode {
        return multi_node(&args);
    }
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    // Threads inherit the affinity of the thread that creates them: pin before the runtime.
    if let Some(id) = cpus.iter().find(|c| c.id == args.loadgen_cpu) {
        core_affinity::set_for_current(*id);
    }
    let kinds: Vec<ServerKind> = args
        .target
        .iter()
        .flat_map(|w| match w {
            Which::Relay => vec![ServerKind::Relay],
            Which::Janus => vec![ServerKind::Janus],
            Which::Both => vec![ServerKind::Relay, ServerKind::Janus],
            Which::Floor => vec![ServerKind::Floor],
            Which::FloorXdp => vec![ServerKind::FloorXdp],
        })
        .collect();
    if kinds.contains(&ServerKind::Janus) {
        janus_process::ensure_installed()?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut records = Vec::new();
    for &delivery in &args.topology {
        let topology = Topology::create(
            &args.namespace,
            delivery,
            (args.loadgen_cpu, args.server_cpu),
        )
        .context("building the benchmark network")?;
        let result = runtime.block_on(async {
            tokio::select! {
                r = run_all(&args, &kinds, &topology) => r,
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            }
        });
        // The network goes before the next one is built (and on an error, before leaving).
        drop(topology);
        records.extend(result?);
    }
    // Servers are gone with the runtime's tasks.
    drop(runtime);
    draw(&args, &records)
}

/// The multi-node scenario, once per `--fanout`: one JSON line each (on stdout, and appended
/// to `--json`).
fn multi_node(args: &Args) -> anyhow::Result<()> {
    let rate = args.video_bitrate / (8 * args.packet_size.max(64) as u64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    for &subscribers in &args.fanout {
        let opts = multinode::MultiNodeOptions {
            subscribers,
            local: args.local,
            rate: u32::try_from(rate.max(1)).unwrap_or(u32::MAX),
            seconds: args.seconds.clamp(1.0, 600.0),
            warmup: args.warmup.clamp(0.0, 60.0),
        };
        let report = runtime.block_on(multinode::run(&opts))?;
        let line = serde_json::to_string(&report)?;
        println!("{line}");
        if let Some(path) = &args.json {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            writeln!(f, "{line}")?;
        }
    }
    Ok(())
}

/// Write the chart, if asked for.
fn draw(args: &Args, records: &[Record]) -> anyhow::Result<()> {
    if let Some(svg) = &args.svg {
        let jsonl = match &args.json {
            Some(path) => std::fs::read_to_string(path)?,
            None => records
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<Vec<_>, _>>()?
                .join("\n"),
        };
        let series = chart::series_from_records(&jsonl);
        std::fs::write(
            svg,
            chart::svg("Server CPU per forwarded packet, 1 → N broadcast", &series),
        )?;
        eprintln!("chart written to {}", svg.display());
    }
    Ok(())
}

async fn run_all(
    args: &Args,
    kinds: &[ServerKind],
    topology: &Topology,
) -> anyhow::Result<Vec<Record>> {
    let media = MediaProfile {
        video_bitrate: args.video_bitrate,
        fps: args.fps.max(1),
        packet_size: args.packet_size.max(64),
        keyframe_interval_s: args.keyframe_interval.max(0.1),
        keyframe_factor: args.keyframe_factor.max(1),
        audio: !args.no_audio,
        pacing: args.pacing.clamp(0.0, 100.0),
        ..MediaProfile::default()
    };
    let opts = RunOptions {
        seconds: args.seconds.clamp(1.0, 600.0),
        warmup: args.warmup.clamp(0.0, 60.0),
        media,
        setup_timeout: Duration::from_secs(args.setup_timeout),
        concurrency: args.concurrency,
        saturation: 0.9,
        feedback: false,
        loss: args.loss.clamp(0.0, 0.5),
        quality: false,
    };
    let scenarios: Vec<Scenario> = match args.scenario {
        ScenarioKind::Broadcast => args
            .fanout
            .iter()
            .map(|&fanout| Scenario::Broadcast { fanout })
            .collect(),
        ScenarioKind::Conference => args
            .participants
            .iter()
            .map(|&participants| Scenario::Conference {
                participants: participants.max(2),
            })
            .collect(),
        ScenarioKind::Sessions => args
            .sessions
            .iter()
            .flat_map(|&sessions| {
                args.fanout.iter().map(move |&fanout| Scenario::Sessions {
                    sessions: sessions.max(1),
                    fanout,
                })
            })
            .collect(),
        ScenarioKind::MultiNode => Vec::new(),
    };
    let server_options = ServerOptions {
        cpu: args.server_cpu,
        cores: args.server_cores,
        spread_after: args.spread_after,
        janus_event_loops: args.janus_event_loops,
        janus_log: std::env::temp_dir().join("wai-loadgen-janus.log"),
    };
    let mut records = Vec::new();
    println!(
        "{:<22} {:>6} {:>5} {:>3} {:>10} {:>6} {:>10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>8} {:>6}",
        "server",
        "topo",
        "prof",
        "fb",
        "scenario",
        "fan",
        "offer/s",
        "deliv/s",
        "loss",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "in-srv p99",
        "µs/pkt",
        "RSS MiB",
        "lg CPU",
        "other"
    );
    for &kind in kinds {
        for &profile in &args.profile {
            for &scenario in &scenarios {
                for &feedback in &args.feedback {
                    eprintln!(
                        "{}{}, {} topology, {}, {}, feedback {}",
                        kind.label(),
                        match (kind, args.server_cores) {
                            (ServerKind::Relay, n) if n > 1 => format!(" on {n} cores"),
                            _ => String::new(),
                        },
                        topology.delivery.label(),
                        format!("{profile:?}").to_lowercase(),
                        match scenario {
                            Scenario::Broadcast { fanout } => format!("broadcast 1 → {fanout}"),
                            Scenario::Conference { participants } =>
                                format!("conference of {participants}"),
                            Scenario::Sessions { sessions, fanout } =>
                                format!("{sessions} sessions of 1 → {fanout}"),
                        },
                        format!("{feedback:?}").to_lowercase(),
                    );
                    wait_idle(Duration::from_secs(args.wait_idle)).await?;
                    let opts = RunOptions {
                        feedback: feedback != Feedback::Off,
                        quality: feedback == Feedback::Quality,
                        ..opts.clone()
                    };
                    match run_one(kind, profile, scenario, topology, &server_options, &opts).await {
                        Ok(r) => {
                            print_row(&r);
                            if let Some(path) = &args.json {
                                webrtcai_benches::append_json(path, &r)?;
                            }
                            records.push(r);
                        }
                        Err(e) => eprintln!("  run failed: {e:#}"),
                    }
                }
            }
        }
    }
    Ok(records)
}

/// Wait until the machine is idle (nothing else running: this process is idle between runs),
/// or `limit` has passed.
async fn wait_idle(limit: Duration) -> anyhow::Result<()> {
    if limit.is_zero() {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let before = machine_busy_secs()?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let busy = (machine_busy_secs()? - before) / 2.0;
        if busy < 0.2 {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "  machine still busy ({:.0}% of a core), running anyway",
                busy * 100.0
            );
            return Ok(());
        }
    }
}

/// Start a fresh server, run one scenario, stop the server.
async fn run_one(
    kind: ServerKind,
    profile: Profile,
    scenario: Scenario,
    topology: &Topology,
    server_options: &ServerOptions,
    opts: &RunOptions,
) -> anyhow::Result<Record> {
    if matches!(kind, ServerKind::Floor | ServerKind::FloorXdp) {
        let xdp = kind == ServerKind::FloorXdp;
        return floor::run(topology, server_options.cpu, xdp, profile, scenario, opts).await;
    }
    let target = Target::start(
        kind,
        topology,
        profile,
        scenario.publishers(),
        (opts.feedback, opts.quality),
        server_options,
    )
    .await?;
    let result = scenario::run(&target, topology, kind, profile, scenario, opts).await;
    target.stop().await;
    result
}

fn print_row(r: &Record) {
    println!(
        "{:<22} {:>6} {:>5} {:>3} {:>10} {:>6} {:>10.0} {:>10.0} {:>7.3}% {:>9.0} {:>9.0} {:>9.0} {:>10} {:>9.2} {:>9.1} {:>7.0}% {:>5.0}%{}",
        r.server,
        r.topology.label(),
        format!("{:?}", r.profile).to_lowercase(),
        match (r.feedback, r.quality) {
            (_, true) => "q",
            (true, false) => "on",
            (false, false) => "off",
        },
        r.scenario,
        r.fanout,
        r.offered_pps,
        r.delivered_pps,
        r.loss * 100.0,
        r.latency.p50_us,
        r.latency.p99_us,
        r.latency.p999_us,
        r.server_delay.map_or("-".to_string(), |d| format!("{:.0}", d.p99_us)),
        r.server_cpu_us_per_forwarded,
        r.server_rss_kib as f64 / 1024.0,
        r.loadgen_cpu_share * 100.0,
        r.other_cpu_share * 100.0,
        if r.loadgen_saturated { " (load generator saturated)" } else { "" }
    );
    if !r.link_drops.is_empty() || r.server_rx_thread_cpu_us_per_forwarded.is_some() {
        let d = &r.link_drops;
        println!(
            "  link: dropped toward the peers {} by the veth, {} by the server end's queue; \
             toward the server {} and {}; sockets dropped {} (peers) and {} (server); the \
             server's receiving thread {} µs per forwarded packet (in µs/pkt)",
            d.to_peers,
            d.queue_to_peers,
            d.to_server,
            d.queue_to_server,
            d.peer_sockets,
            d.server_sockets,
            r.server_rx_thread_cpu_us_per_forwarded
                .map_or("-".to_string(), |t| format!("{t:.2}")),
        );
    }
    println!(
        "  server CPU per forwarded packet: {:.2} µs in its own code (utime), {:.2} µs in all",
        r.server_user_cpu_us_per_forwarded, r.server_cpu_us_per_forwarded_stat
    );
    if r.server_forwarded_pps_by_core.len() > 1 {
        let by_core: Vec<String> = r
            .server_forwarded_pps_by_core
            .iter()
            .map(|pps| format!("{pps:.0}"))
            .collect();
        println!("  forwarded per second by core: {}", by_core.join(", "));
    }
    if let Some(c) = &r.feedback_counts {
        println!(
            "  feedback: {} reports, {} NACKed by receivers, {} congestion feedback sent; \
             {} NACKed by the server, {} RTX sent, {} congestion feedback received",
            c.reports_sent,
            c.nacked_by_receivers,
            c.twcc_sent_by_receivers,
            c.nacked_by_server,
            c.rtx_sent_by_publishers,
            c.twcc_received_by_publishers
        );
        if let (Some(nacks), Some(rtx), Some(twcc), Some(asked)) = (
            c.server_nacks_received,
            c.server_retransmissions_sent,
            c.server_twcc_feedback_sent,
            c.server_nacks_sent,
        ) {
            println!(
                "  the server counted: {nacks} NACKs received, {rtx} retransmissions sent, \
                 {twcc} congestion feedback sent, {asked} NACKs sent"
            );
        }
    }
    if let Some(q) = &r.quality_counts {
        println!(
            "  quality: {} congestion feedback received, {} layer SSRCs learnt, {} layer \
             switches, {} copies of other layers not sent, {} paced (p50 {} µs, max {} µs), \
             {} probe packets, {} paused",
            q.twcc_feedback_received,
            q.simulcast_ssrcs_learnt,
            q.layer_switches,
            q.rtp_other_layer,
            q.rtp_paced,
            q.pacing_delay_p50_us,
            q.pacing_delay_max_us,
            q.probe_packets_sent,
            q.subscriptions_paused
        );
    }
}
