//! The floor under any forwarder, measured where the servers are: `udp_floor --serve` (a
//! forwarder that only moves bytes: `recvmmsg` in, `sendmmsg` out to every peer but the
//! sender, no crypto, no parsing, no state) in the server namespace of the same
//! [`Topology`], confined to the same CPU, fed the same media by the same pacer, and read the
//! same way ([`Meter`]). What a server costs above it is its own work; the floor itself is
//! the kernel's (and, in a shared topology, the receivers' too).
//!
//! Its peers are plain UDP sockets: each datagram is the marshalled RTP packet the relay's
//! peers would protect, with as many zero bytes after it as the SRTP profile's tag, so that
//! every datagram has the size it would have encrypted. In runs where the relay's peers send
//! feedback, the floor's receivers send it too, as often and about as large: an RTCP-shaped
//! datagram every second (a receiver report) and, with `quality`, one every 50 ms (a browser's
//! transport-wide feedback at these rates), which the forwarder receives and drops as any
//! server consumes RTCP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::net::UdpSocket;
use tokio::process::{Child, Command};
use tokio::time::sleep_until;

use crate::jsep::MediaKind;
use crate::latency::Latency;
use crate::measure::Meter;
use crate::record::Record;
use crate::rss_kib;
use crate::scenario::{pace, PacketSink, Progress, RunOptions, Scenario, Window};
use crate::target::{Profile, ServerKind};
use crate::topology::Topology;
use crate::traffic::{clock_ns, wall_to_clock_ns, Probe, StreamSource};

/// The port the forwarder serves on, at the server's address.
const PORT: u16 = 9000;

/// The `udp_floor` binary: `$UDP_FLOOR_BIN`, or next to the running executable.
fn binary() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("UDP_FLOOR_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    let candidate = exe.parent().context("exe dir")?.join("udp_floor");
    if candidate.exists() {
        return Ok(candidate);
    }
    bail!(
        "udp_floor not found next to {}; build it (cargo build --release -p webrtcai-benches) \
         or set UDP_FLOOR_BIN",
        exe.display()
    )
}

/// Bytes an SRTP profile adds to an RTP packet: the authentication tag.
fn tag_len(profile: Profile) -> usize {
    match profile {
        Profile::Sha1 => 10,
        Profile::Gcm => 16,
    }
}

/// A peer's socket on the load generator's address, with kernel receive timestamps and the
/// buffers every peer gets.
fn peer_socket(topology: &Topology) -> anyhow::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&SocketAddr::new(topology.client_addr, 0).into())?;
    s.set_nonblocking(true)?;
    nix::sys::socket::setsockopt(
        std::os::fd::AsRawFd::as_raw_fd(&s),
        nix::sys::socket::sockopt::ReceiveTimestampns,
        &true,
    )?;
    Ok(UdpSocket::from_std(s.into())?)
}

/// Register `socket` with the forwarder: a 1-byte datagram, answered with one byte.
async fn register(socket: &UdpSocket, forwarder: SocketAddr) -> anyhow::Result<()> {
    let mut buf = [0u8; 64];
    for _ in 0..50 {
        socket.send_to(&[0], forwarder).await?;
        if let Ok(Ok((1, from))) =
            tokio::time::timeout(Duration::from_millis(100), socket.recv_from(&mut buf)).await
        {
            if from == forwarder {
                return Ok(());
            }
        }
    }
    bail!("the forwarder at {forwarder} did not answer a registration")
}

/// A publisher's sending side: its packets leave as datagrams of their encrypted size.
struct PlainSender {
    socket: std::net::UdpSocket,
    to: SocketAddr,
    tag: usize,
    buf: Vec<u8>,
}

impl PacketSink for PlainSender {
    fn send(&mut self, packet: &[u8]) -> bool {
        self.buf.clear();
        self.buf.extend_from_slice(packet);
        self.buf.resize(packet.len() + self.tag, 0);
        self.socket.send_to(&self.buf, self.to).is_ok()
    }
}

/// What one receiving socket saw in the window.
#[derive(Default)]
struct Received {
    latency: Latency,
    in_window: u64,
    unprobed: u64,
}

/// Size of a receiver report as sent (SRTCP: header, one report block, index and tag).
const REPORT_BYTES: usize = 52 + 20;
/// Size of a transport-wide feedback message for about 10 packets, as sent.
const TWCC_BYTES: usize = 60 + 20;
/// How often a browser sends transport-wide feedback at these rates.
const TWCC_INTERVAL: Duration = Duration::from_millis(50);

/// What a receiver sends back: a datagram of `bytes` every `every`.
#[derive(Clone, Copy)]
struct Feedback {
    every: Duration,
    bytes: usize,
}

/// RTCP-shaped (version 2, packet type 205) so that the forwarder drops it.
fn rtcp_shaped(bytes: usize) -> Vec<u8> {
    let mut d = vec![0u8; bytes];
    d[0] = 0x80;
    d[1] = 205;
    d
}

/// Read `socket` until `stop`, counting the packets sent inside `window`, and send
/// `feedback` to `forwarder` as it falls due.
async fn receive(
    socket: UdpSocket,
    (tag, forwarder, feedback): (usize, SocketAddr, Vec<Feedback>),
    window: Window,
    stop: Instant,
    progress: Arc<Progress>,
) -> Received {
    let mut r = Received::default();
    let mut buf = vec![0u8; 2048];
    let deadline = sleep_until(stop.into());
    tokio::pin!(deadline);
    // Each kind of feedback on its own schedule, started at a random phase as peers' are.
    let start = Instant::now();
    let mut due: Vec<(Instant, Feedback, Vec<u8>)> = feedback
        .iter()
        .map(|f| {
            (
                start + f.every.mul_f64(rand::random::<f64>()),
                *f,
                rtcp_shaped(f.bytes),
            )
        })
        .collect();
    loop {
        let next = due.iter().map(|d| d.0).min().unwrap_or(stop);
        tokio::select! {
            got = webrtcai_tests::peer::recv_stamped(&socket, &mut buf) => {
                count(&mut r, got.ok().map(|(n, _, a)| (n, a)), &buf, tag, window, &progress);
            }
            _ = sleep_until(next.into()), if !due.is_empty() => {
                let now = Instant::now();
                for (at, f, datagram) in due.iter_mut().filter(|d| d.0 <= now) {
                    // A full socket buffer loses it, as it would a browser's.
                    let _ = socket.try_send_to(datagram, forwarder);
                    *at += f.every;
                }
            }
            _ = &mut deadline => return r,
        }
    }
}

/// Count one received datagram (`got`: its length and arrival).
fn count(
    r: &mut Received,
    got: Option<(usize, Option<std::time::SystemTime>)>,
    buf: &[u8],
    tag: usize,
    window: Window,
    progress: &Progress,
) {
    let Some((n, arrival)) = got else { return };
    match buf.get(..n.saturating_sub(tag)).and_then(Probe::read) {
        Some(probe) => {
            progress.delivered.fetch_add(1, Ordering::Relaxed);
            if window.contains(probe.sent_ns) {
                let now = arrival.and_then(wall_to_clock_ns).unwrap_or_else(clock_ns);
                r.in_window += 1;
                r.latency.record_ns(now.saturating_sub(probe.sent_ns));
            }
        }
        None => r.unprobed += 1,
    }
}

/// Start the forwarder in `topology`'s namespace on `cpu` (sending through AF_XDP on its
/// veth end where `xdp` says so), run `scenario` through it and measure it as
/// [`crate::scenario::run`] measures a server.
pub async fn run(
    topology: &Topology,
    cpu: usize,
    xdp: bool,
    profile: Profile,
    scenario: Scenario,
    opts: &RunOptions,
) -> anyhow::Result<Record> {
    let forwarder = SocketAddr::new(topology.server_addr, PORT);
    let mut command: Vec<String> = topology.exec_prefix();
    command.extend(["taskset".into(), "-c".into(), cpu.to_string()]);
    command.push(binary()?.display().to_string());
    command.extend(["--serve".into(), forwarder.to_string()]);
    if xdp {
        command.extend(["--xdp-device".into(), topology.server_veth()]);
    }
    let child: Child = Command::new(&command[0])
        .args(&command[1..])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting udp_floor")?;
    let pid = child.id().context("udp_floor exited at once")?;
    // `ip netns exec` and `taskset` exec the forwarder in place: the pid is its own.
    let kind = if xdp {
        ServerKind::FloorXdp
    } else {
        ServerKind::Floor
    };
    let result = measure(topology, pid, forwarder, kind, profile, scenario, opts).await;
    drop(child);
    result
}

async fn measure(
    topology: &Topology,
    pid: u32,
    forwarder: SocketAddr,
    kind: ServerKind,
    profile: Profile,
    scenario: Scenario,
    opts: &RunOptions,
) -> anyhow::Result<Record> {
    let setup_started = Instant::now();
    let tag = tag_len(profile);
    let publishers = scenario.publishers();
    // A conference's participants publish on the socket they receive on; a broadcast's
    // publisher only sends and does not register.
    let mut publisher_sockets = Vec::new();
    let mut receivers = Vec::new();
    match scenario {
        Scenario::Broadcast { fanout } => {
            publisher_sockets.push(peer_socket(topology)?);
            for _ in 0..fanout {
                receivers.push(peer_socket(topology)?);
            }
        }
        Scenario::Conference { .. } => {
            for _ in 0..publishers {
                receivers.push(peer_socket(topology)?);
            }
        }
        Scenario::Sessions { .. } => bail!("the floor forwards for one session only"),
    }
    for r in &receivers {
        register(r, forwarder).await?;
    }
    let receiver_count = receivers.len();
    let mut senders = Vec::new();
    let sockets_of_publishers: Vec<&UdpSocket> = match scenario {
        Scenario::Broadcast { .. } | Scenario::Sessions { .. } => {
            publisher_sockets.iter().collect()
        }
        Scenario::Conference { .. } => receivers.iter().collect(),
    };
    let base = Instant::now();
    let base_ns = clock_ns();
    let at_ns = |t: Instant| base_ns + t.duration_since(base).as_nanos() as u64;
    let start = base + Duration::from_millis(200);
    let t0 = start + Duration::from_secs_f64(opts.warmup);
    let t1 = t0 + Duration::from_secs_f64(opts.seconds);
    let stop = t1 + Duration::from_millis(500);
    let window = Window {
        start_ns: at_ns(t0),
        end_ns: at_ns(t1),
    };
    for (p, socket) in sockets_of_publishers.into_iter().enumerate() {
        // As the scenario spreads its publishers: frames over one frame time, keyframes over
        // the keyframe interval.
        let share = p as f64 / publishers.max(1) as f64;
        let phase = Duration::from_secs_f64(share / f64::from(opts.media.fps));
        let mut sources = vec![StreamSource::new(
            (4 * p + 2) as u32,
            MediaKind::Video,
            opts.media,
            base,
        )];
        if opts.media.audio {
            sources.push(StreamSource::new(
                (4 * p + 3) as u32,
                MediaKind::Audio,
                opts.media,
                base,
            ));
        }
        for s in sources.iter_mut() {
            s.schedule_from(start + phase);
            s.shift_keyframes(share);
        }
        let socket = socket2::SockRef::from(socket).try_clone()?;
        let sender = PlainSender {
            socket: socket.into(),
            to: forwarder,
            tag,
            buf: Vec::with_capacity(2048),
        };
        senders.push((sender, sources));
    }
    drop(publisher_sockets);
    let setup_seconds = setup_started.elapsed().as_secs_f64();

    // What the relay's receivers would send back in this run.
    let mut feedback = Vec::new();
    if opts.feedback || opts.quality {
        feedback.push(Feedback {
            every: Duration::from_secs(1),
            bytes: REPORT_BYTES,
        });
    }
    if opts.quality {
        feedback.push(Feedback {
            every: TWCC_INTERVAL,
            bytes: TWCC_BYTES,
        });
    }
    let progress = Arc::new(Progress::default());
    let tasks: Vec<_> = receivers
        .into_iter()
        .map(|s| {
            let peer = (tag, forwarder, feedback.clone());
            tokio::spawn(receive(s, peer, window, stop, progress.clone()))
        })
        .collect();
    let pacer = {
        let progress = progress.clone();
        std::thread::Builder::new()
            .name("pacer".into())
            .spawn(move || pace(senders, window, t1, &progress))
            .context("starting the pacer thread")?
    };
    sleep_until(t0.into()).await;
    let start_meter = Meter::read(pid, topology)?;
    sleep_until(t1.into()).await;
    let measured = Meter::read(pid, topology)?.since(&start_meter);
    let rss = rss_kib(pid);
    let (sent, lateness) = tokio::task::spawn_blocking(move || pacer.join())
        .await
        .context("waiting for the pacer")?
        .map_err(|_| anyhow::anyhow!("the pacer thread panicked"))?;
    let (mut latency, mut received, mut unprobed) = (Latency::new(), 0, 0);
    for t in tasks {
        let r = t.await.context("receiver task")?;
        latency.merge(&r.latency);
        received += r.in_window;
        unprobed += r.unprobed;
    }
    let base = Record::of(crate::record::Run {
        kind,
        cores: 1,
        scenario,
        receivers: receiver_count,
        profile,
        topology: topology.delivery,
        opts,
        setup_seconds,
        sent,
        received,
        latency: &latency,
        lateness: &lateness,
        measured: &measured,
        rss_kib: rss,
        unprobed,
    });
    Ok(Record {
        // Feedback-shaped datagrams only: nothing is repaired or estimated.
        feedback: opts.feedback || opts.quality,
        quality: opts.quality,
        ..base
    })
}
