//! The floor under any forwarder on this machine: CPU time per forwarded datagram of a
//! forwarder that does nothing but move bytes, on the same path as the relay benchmark.
//!
//! One pinned thread receives datagrams with `recvmmsg` and sends each to N destinations with
//! `sendmmsg` (no crypto, no parsing, no state): what the relay would cost if everything it
//! does beyond the kernel were free. The destinations are sockets in this process read by
//! tokio tasks, as the load generator's peers are, so the kernel does the same work on the
//! forwarder's CPU: on loopback (and veth) the receiver's softirq and wake-up run on the
//! sender's CPU and are charged to the sender. Reported per forwarded datagram next to the
//! relay's figure, it says how much of the relay's time is its own.
//!
//! With `--serve ADDR` it is instead the forwarder of the load generator's `--target floor`,
//! run in the benchmark's network namespace like the servers it is compared with: peers
//! register by sending a 1-byte datagram (answered with one byte), RTCP-shaped datagrams are
//! dropped, and every other datagram goes to every registered peer but its sender, until the
//! process is killed.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use serde::Serialize;
use webrtcai_benches::xdp;

const BATCH: usize = 64;

/// CPU per forwarded datagram of a bare recvmmsg/sendmmsg forwarder.
#[derive(Parser, Debug)]
struct Args {
    /// Fan-outs to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    fanout: Vec<usize>,
    /// Forwarded datagrams per second to aim for.
    #[arg(long, default_value_t = 100_000)]
    forward_rate: u64,
    /// Datagram size in bytes (an SRTP packet of a 1200-byte payload is ~1240).
    #[arg(long, default_value_t = 1240)]
    size: usize,
    /// Measurement window per fan-out.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// CPU the forwarder thread is pinned to (the relay benchmark pins its core to CPU 0).
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Append one JSON record per run to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Serve the load generator instead (see above) on this address; `--cpu` is not used
    /// (the load generator confines the process).
    #[arg(long)]
    serve: Option<SocketAddr>,
    /// With `--serve`: send through an AF_XDP socket on this device (the one that holds the
    /// served address) instead of `sendmmsg`; reception stays on the UDP socket.
    #[arg(long, requires = "serve")]
    xdp_device: Option<String>,
}

/// A serving forwarder's AF_XDP egress and what it needs besides.
struct XdpForwarder {
    egress: xdp::Egress,
    device: String,
    /// Link-layer addresses of the peers, learnt when they registered (the kernel answered
    /// their ARP).
    macs: HashMap<Ipv4Addr, [u8; 6]>,
    /// When the kernel's neighbours were last read.
    looked_up: Option<Instant>,
    /// Copies not sent: no link-layer address for the peer yet.
    unresolved: u64,
    /// Datagrams longer than the device's MTU allows: not sent.
    too_large: u64,
}

impl XdpForwarder {
    /// The link-layer address of `ip`, reading the kernel's neighbours again at most every
    /// 100 ms while one is missing.
    fn mac(&mut self, ip: Ipv4Addr) -> anyhow::Result<Option<[u8; 6]>> {
        if let Some(mac) = self.macs.get(&ip) {
            return Ok(Some(*mac));
        }
        if self
            .looked_up
            .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return Ok(None);
        }
        self.looked_up = Some(Instant::now());
        self.macs.extend(xdp::neighbours(&self.device)?);
        Ok(self.macs.get(&ip).copied())
    }
}

/// Most peers a serving forwarder takes.
const MAX_PEERS: usize = 4096;

/// Forward for the load generator until killed: 1-byte datagrams register their sender,
/// anything longer goes to every registered peer but its sender.
fn serve(addr: SocketAddr, xdp_device: Option<&str>) -> anyhow::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())
        .with_context(|| format!("binding {addr}"))?;
    let socket: UdpSocket = s.into();
    let fd = socket.as_raw_fd();
    let mut rx_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut tx_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut buffers = vec![vec![0u8; 2048]; BATCH];
    let mut peers: Vec<SockaddrStorage> = Vec::new();
    let mut destinations: Vec<Option<SockaddrStorage>> = Vec::with_capacity(MAX_PEERS);
    let mut xdp = match xdp_device {
        Some(device) => {
            let SocketAddr::V4(source) = addr else {
                anyhow::bail!("AF_XDP egress is IPv4 only");
            };
            let egress = xdp::Egress::open(device, 0, source)
                .with_context(|| format!("opening an AF_XDP socket on {device}"))?;
            Some(XdpForwarder {
                egress,
                device: device.to_owned(),
                macs: HashMap::new(),
                looked_up: None,
                unresolved: 0,
                too_large: 0,
            })
        }
        None => None,
    };
    let mut reported = Instant::now();
    println!("serving on {addr}");
    loop {
        // Sleeps until readable, then takes what is queued, as the relay does.
        let mut poll = [PollFd::new(fd, PollFlags::POLLIN)];
        if !matches!(nix::poll::poll(&mut poll, -1), Ok(n) if n > 0) {
            continue;
        }
        if let Some(x) = &xdp {
            if reported.elapsed() > Duration::from_secs(5) {
                reported = Instant::now();
                let s = x.egress.stats();
                eprintln!(
                    "udp_floor AF_XDP egress: {} sent, {} kicks, {} waits, {} refused by the \
                     device, {} to peers without a link-layer address, {} too large",
                    s.completed, s.kicks, s.waits, s.dropped, x.unresolved, x.too_large
                );
            }
        }
        let mut batch: Vec<(usize, Option<SockaddrStorage>)> = Vec::with_capacity(BATCH);
        {
            let slices: Vec<[IoSliceMut<'_>; 1]> = buffers
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            if let Ok(r) = recvmmsg(fd, &mut rx_headers, &slices, MsgFlags::MSG_DONTWAIT, None) {
                batch.extend(r.map(|m| (m.bytes, m.address)));
            }
        }
        for (buffer, (len, from)) in buffers.iter().zip(batch) {
            let Some(from) = from else { continue };
            // RTCP (RFC 5761: packet types 200-223) is consumed, as a server consumes it.
            if len >= 2 && (200..=223).contains(&buffer[1]) {
                continue;
            }
            if len == 1 {
                if !peers.contains(&from) && peers.len() < MAX_PEERS {
                    peers.push(from);
                }
                let _ = nix::sys::socket::sendto(fd, &[1], &from, MsgFlags::MSG_DONTWAIT);
                continue;
            }
            destinations.clear();
            destinations.extend(peers.iter().filter(|p| **p != from).map(|p| Some(*p)));
            if let Some(x) = &mut xdp {
                for to in destinations.iter().flatten() {
                    let Some(to) = to
                        .as_sockaddr_in()
                        .map(|a| SocketAddrV4::new(Ipv4Addr::from(a.ip()), a.port()))
                    else {
                        continue;
                    };
                    let Some(mac) = x.mac(*to.ip())? else {
                        x.unresolved += 1;
                        continue;
                    };
                    loop {
                        match x.egress.push(to, mac, &buffer[..len]) {
                            xdp::Push::Queued => break,
                            // Blocking, as a full socket buffer holds the `sendmmsg` path.
                            xdp::Push::Full => x.egress.make_room()?,
                            xdp::Push::TooLarge => {
                                x.too_large += 1;
                                break;
                            }
                        }
                    }
                }
                continue;
            }
            for chunk in destinations.chunks(BATCH) {
                let slices: Vec<[IoSlice<'_>; 1]> = chunk
                    .iter()
                    .map(|_| [IoSlice::new(&buffer[..len])])
                    .collect();
                // Blocking, as a full socket buffer holds the relay's sends too.
                let _ = sendmmsg(fd, &mut tx_headers, &slices, chunk, [], MsgFlags::empty());
            }
        }
        if let Some(x) = &mut xdp {
            x.egress.flush()?;
        }
    }
}

#[derive(Serialize)]
struct Record {
    server: &'static str,
    fanout: usize,
    size: usize,
    seconds: f64,
    forwarded_rate: f64,
    delivered_rate: f64,
    cpu_us_per_forwarded: f64,
}

/// The calling thread's CPU time in seconds (`/proc/thread-self/schedstat`, nanoseconds).
fn thread_cpu() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0) as f64
        / 1e9
}

fn udp_socket() -> anyhow::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    Ok(s.into())
}

/// Receive and fan out until `stop`; returns (datagrams sent, CPU seconds) of the window.
fn forward(
    socket: UdpSocket,
    destinations: Vec<SocketAddr>,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> (u64, f64) {
    socket.set_nonblocking(true).expect("non-blocking");
    let fd = socket.as_raw_fd();
    let mut rx_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut tx_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut buffers = vec![vec![0u8; 2048]; BATCH];
    let addresses: Vec<Option<SockaddrStorage>> = destinations
        .iter()
        .map(|d| Some(SockaddrStorage::from(*d)))
        .collect();
    let (mut sent, mut cpu0, mut counting) = (0u64, 0.0, false);
    while !stop.load(Ordering::Relaxed) {
        if !counting && measuring.load(Ordering::Relaxed) {
            counting = true;
            cpu0 = thread_cpu();
        }
        // Sleep until readable (as the relay sleeps in its ring), then drain a batch.
        let mut poll = [PollFd::new(fd, PollFlags::POLLIN)];
        if !matches!(nix::poll::poll(&mut poll, 100), Ok(n) if n > 0) {
            continue;
        }
        let mut lens = [0usize; BATCH];
        let n = {
            let slices: Vec<[IoSliceMut<'_>; 1]> = buffers
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            match recvmmsg(fd, &mut rx_headers, &slices, MsgFlags::MSG_DONTWAIT, None) {
                Ok(r) => {
                    let mut n = 0;
                    for (l, m) in lens.iter_mut().zip(r) {
                        *l = m.bytes;
                        n += 1;
                    }
                    n
                }
                Err(_) => 0,
            }
        };
        for (buffer, len) in buffers.iter().zip(lens).take(n) {
            for chunk in addresses.chunks(BATCH) {
                let slices: Vec<[IoSlice<'_>; 1]> = chunk
                    .iter()
                    .map(|_| [IoSlice::new(&buffer[..len])])
                    .collect();
                if let Ok(r) = sendmmsg(fd, &mut tx_headers, &slices, chunk, [], MsgFlags::empty())
                {
                    if counting {
                        sent += r.count() as u64;
                    }
                }
            }
        }
        if counting && !measuring.load(Ordering::Relaxed) {
            break;
        }
    }
    (sent, thread_cpu() - cpu0)
}

async fn run(args: &Args, fanout: usize) -> anyhow::Result<Record> {
    let forwarder = udp_socket()?;
    let forwarder_addr = forwarder.local_addr()?;
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));

    // Destinations: one socket each, read by a task, like the load generator's peers.
    let mut destinations = Vec::with_capacity(fanout);
    let mut readers = Vec::with_capacity(fanout);
    for _ in 0..fanout {
        let s = udp_socket()?;
        s.set_nonblocking(true)?;
        destinations.push(s.local_addr()?);
        let s = tokio::net::UdpSocket::from_std(s)?;
        let received = received.clone();
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while s.recv(&mut buf).await.is_ok() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let cpu = args.cpu;
    let thread = {
        let (measuring, stop) = (measuring.clone(), stop.clone());
        std::thread::spawn(move || {
            core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
            forward(forwarder, destinations, measuring, stop)
        })
    };

    // The feeder: ingress datagrams at forward_rate / fanout, in 1 ms ticks.
    let feeder = {
        let stop = stop.clone();
        let rate = (args.forward_rate / fanout as u64).max(1) as f64;
        let size = args.size;
        tokio::spawn(async move {
            let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
            let payload = vec![0x5au8; size];
            let start = Instant::now();
            let mut sent = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let due = (start.elapsed().as_secs_f64() * rate) as u64;
                while sent < due {
                    s.send_to(&payload, forwarder_addr).await?;
                    sent += 1;
                }
            }
            anyhow::Ok(())
        })
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    let r0 = received.load(Ordering::Relaxed);
    let t0 = Instant::now();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let r1 = received.load(Ordering::Relaxed);
    let (sent, cpu) = tokio::task::spawn_blocking(move || thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("forwarder thread panicked"))?;
    stop.store(true, Ordering::Relaxed);
    feeder.await??;
    for r in readers {
        r.abort();
    }
    Ok(Record {
        server: "bare sendmmsg forwarder",
        fanout,
        size: args.size,
        seconds: elapsed,
        forwarded_rate: sent as f64 / elapsed,
        delivered_rate: (r1 - r0) as f64 / elapsed,
        cpu_us_per_forwarded: cpu / sent.max(1) as f64 * 1e6,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(addr) = args.serve {
        return tokio::task::spawn_blocking(move || serve(addr, args.xdp_device.as_deref()))
            .await?;
    }
    println!(
        "{:>7} {:>12} {:>12} {:>14}",
        "fan-out", "fwd pkt/s", "recv pkt/s", "µs/pkt (CPU)"
    );
    for &fanout in &args.fanout {
        let r = run(&args, fanout)
            .await
            .with_context(|| format!("fan-out {fanout}"))?;
        println!(
            "{:>7} {:>12.0} {:>12.0} {:>14.2}",
            r.fanout, r.forwarded_rate, r.delivered_rate, r.cpu_us_per_forwarded
        );
        if let Some(path) = &args.json {
            webrtcai_benches::append_json(path, &r)?;
        }
    }
    Ok(())
}
