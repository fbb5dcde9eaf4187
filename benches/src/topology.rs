//! The network a benchmark runs on: the server in a network namespace of its own, joined to the
//! load generator's (root) namespace by a veth pair with addresses from the benchmarking range
//! 198.18.0.0/15 (RFC 2544). Servers that never offer loopback candidates (Janus's libnice)
//! work there, and every server is measured on the same path.
//!
//! Where a datagram's receive path runs is a property of the veth, and it decides who pays for
//! it ([`Delivery`]): by default the kernel delivers a packet to the other end on the *sending*
//! CPU, so a server that sends 100 copies also pays for 100 receptions by its subscribers;
//! with NAPI on both ends, each end's receive path runs in a kernel thread pinned to that
//! side's CPU, as on a real network where the subscribers' machines receive their own packets.
//!
//! [`Topology`] deletes what it created when dropped, also when a run fails half-way; a
//! leftover from a run that was killed is removed before a new one is built.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

/// What can go wrong while building the network.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// `ip` or `sysctl` could not be started.
    #[error("running `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("`{command}` failed: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// What it printed.
        stderr: String,
    },
}

/// Who runs a datagram's receive path on the veth pair.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// The veth's default: the receiving end's softirq (protocol stack, socket queue, waking
    /// the reader) runs on the sender's CPU, inside its `sendmsg`. The server pays for its
    /// subscribers' receptions and the load generator for the server's.
    Shared,
    /// GRO and UDP GRO forwarding on both ends put each in NAPI mode, and threaded NAPI runs
    /// each end's receive path in a kernel thread of its own, pinned to that end's side: each
    /// side pays its own receive path. The server's thread is counted as the server's CPU.
    /// The threads run at a real-time priority, as a card's interrupt work preempts programs.
    /// The veth's ring (256 packets) then sits between the sides, and each end gets a
    /// packet queue in front of it as a network card has (`pfifo`, [`Topology::QUEUE_LEN`]
    /// packets: the kernel stops the queue while the ring is full instead of dropping); what
    /// overruns either is dropped and counted ([`LinkDrops`]).
    Split,
}

impl Delivery {
    /// The name records and tables use.
    pub fn label(self) -> &'static str {
        match self {
            Delivery::Shared => "shared",
            Delivery::Split => "split",
        }
    }
}

/// What the link itself dropped, each way: what the servers and peers never saw, counted
/// apart from what they lost themselves. The kernel counts buffers, not datagrams: a UDP GSO
/// send of a burst to one destination is one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkDrops {
    /// Dropped by the veth on the way from the server to the load generator's peers (its
    /// receiving end's ring full, or its counters' other drops).
    pub to_peers: u64,
    /// The same on the way from the peers to the server.
    pub to_server: u64,
    /// Dropped by the server end's packet queue (split topology), full.
    #[serde(default)]
    pub queue_to_peers: u64,
    /// Dropped by the load generator end's packet queue (split topology), full.
    #[serde(default)]
    pub queue_to_server: u64,
    /// Datagrams the peers' sockets dropped (their receive buffers full: the load generator
    /// fell behind), in the load generator's namespace (`Udp: RcvbufErrors`, `InErrors`).
    #[serde(default)]
    pub peer_sockets: u64,
    /// The same for the server's sockets, in its namespace.
    #[serde(default)]
    pub server_sockets: u64,
}

impl LinkDrops {
    /// Drops between `earlier` and `self`.
    pub fn since(&self, earlier: &LinkDrops) -> LinkDrops {
        LinkDrops {
            to_peers: self.to_peers.saturating_sub(earlier.to_peers),
            to_server: self.to_server.saturating_sub(earlier.to_server),
            queue_to_peers: self.queue_to_peers.saturating_sub(earlier.queue_to_peers),
            queue_to_server: self.queue_to_server.saturating_sub(earlier.queue_to_server),
            peer_sockets: self.peer_sockets.saturating_sub(earlier.peer_sockets),
            server_sockets: self.server_sockets.saturating_sub(earlier.server_sockets),
        }
    }

    /// Whether nothing was dropped.
    pub fn is_empty(&self) -> bool {
        *self == LinkDrops::default()
    }
}

/// A server namespace and the veth pair that reaches it.
#[derive(Debug)]
pub struct Topology {
    /// Namespace name.
    pub namespace: String,
    /// The veth end in the load generator's namespace.
    pub host_veth: String,
    /// The load generator's address.
    pub client_addr: IpAddr,
    /// The server's address.
    pub server_addr: IpAddr,
    /// Who runs the receive path.
    pub delivery: Delivery,
    /// With [`Delivery::Split`], the kernel threads that receive for each end: (the load
    /// generator's end, the server's end).
    pub rx_threads: Option<(u32, u32)>,
}

fn run<S: AsRef<str>>(args: &[S]) -> Result<(), TopologyError> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let command = args.join(" ");
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|source| TopologyError::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TopologyError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

impl Topology {
    /// The load generator's side: 198.18.0.1.
    pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    /// The server's side: 198.18.0.2.
    pub const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    /// Packets each end's queue holds in a split topology: a network interface's default
    /// (`txqueuelen`).
    pub const QUEUE_LEN: usize = 1000;

    /// Build namespace `name` (veth ends `<name>-h` and `<name>-s`, names short enough for
    /// IFNAMSIZ) with the server's address inside and the client's outside, delivering as
    /// `delivery` says; `cpus` are (the load generator's, the server's), where a split
    /// topology pins each end's receiving thread.
    pub fn create(
        name: &str,
        delivery: Delivery,
        cpus: (usize, usize),
    ) -> Result<Topology, TopologyError> {
        let mut topo = Topology {
            namespace: name.to_owned(),
            host_veth: format!("{name}-h"),
            client_addr: IpAddr::V4(Self::CLIENT),
            server_addr: IpAddr::V4(Self::SERVER),
            delivery,
            rx_threads: None,
        };
        topo.remove();
        let ns = topo.namespace.as_str();
        let host = topo.host_veth.as_str();
        let inner = topo.server_veth();
        let client = format!("{}/30", Self::CLIENT);
        let server = format!("{}/30", Self::SERVER);
        let no_ipv6 = format!("net.ipv6.conf.{host}.disable_ipv6=1");
        let steps: [&[&str]; 9] = [
            &["ip", "netns", "add", ns],
            &[
                "ip", "link", "add", host, "type", "veth", "peer", "name", &inner,
            ],
            &["ip", "link", "set", &inner, "netns", ns],
            &["sysctl", "-qw", &no_ipv6],
            &["ip", "addr", "add", &client, "dev", host],
            &["ip", "link", "set", host, "up"],
            &["ip", "-n", ns, "link", "set", "lo", "up"],
            &["ip", "-n", ns, "addr", "add", &server, "dev", &inner],
            &["ip", "-n", ns, "link", "set", &inner, "up"],
        ];
        for step in steps {
            run(step)?;
        }
        // Inside: no IPv6 on the veth (so no link-local candidates), and libnice's replies to
        // checks are not dropped by reverse-path or local-source filtering.
        for setting in [
            format!("net.ipv6.conf.{inner}.disable_ipv6=1"),
            "net.ipv4.conf.all.accept_local=1".to_owned(),
            "net.ipv4.conf.all.rp_filter=0".to_owned(),
            "net.ipv4.conf.default.rp_filter=0".to_owned(),
            format!("net.ipv4.conf.{inner}.rp_filter=0"),
        ] {
            run(&["ip", "netns", "exec", ns, "sysctl", "-qw", &setting])?;
        }
        if delivery == Delivery::Split {
            let host_thread = topo.split_end(None, host, cpus.0)?;
            let server_thread = topo.split_end(Some(ns), &inner, cpus.1)?;
            topo.rx_threads = Some((host_thread, server_thread));
        }
        Ok(topo)
    }

    /// Put one end in NAPI mode with its own receiving thread pinned to `cpu`; returns the
    /// thread's id. The thread is told apart from the other end's by appearing when this
    /// end's switch is thrown (its name, `napi/<device>-<id>`, is cut to 15 characters).
    fn split_end(&self, ns: Option<&str>, dev: &str, cpu: usize) -> Result<u32, TopologyError> {
        let inside = |args: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = match ns {
                Some(ns) => vec!["ip".into(), "netns".into(), "exec".into(), ns.into()],
                None => Vec::new(),
            };
            v.extend(args.iter().map(|a| (*a).to_owned()));
            v
        };
        run(&inside(&[
            "ethtool",
            "-K",
            dev,
            "gro",
            "on",
            "rx-udp-gro-forwarding",
            "on",
        ]))?;
        let before = napi_threads();
        let threaded = format!("echo 1 > /sys/class/net/{dev}/threaded");
        run(&inside(&["sh", "-c", &threaded]))?;
        let mut new: Vec<u32> = Vec::new();
        for _ in 0..50 {
            new = napi_threads()
                .into_iter()
                .filter(|t| !before.contains(t))
                .collect();
            if !new.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let [thread] = new[..] else {
            return Err(TopologyError::Failed {
                command: threaded,
                stderr: format!("expected one new NAPI thread for {dev}, found {new:?}"),
            });
        };
        run(&["taskset", "-pc", &cpu.to_string(), &thread.to_string()])?;
        // A card's interrupt and softirq preempt the programs on its CPU; at the default
        // priority the thread would wait behind the load generator's hundreds of readers
        // while the ring, filled at the server's pace, overflows.
        run(&["chrt", "--fifo", "-p", "50", &thread.to_string()])?;
        // Without a queue the veth drops what its ring cannot take; with one, the kernel
        // (6.16 and later) stops the queue until the ring has room, as a card's driver does.
        let limit = Self::QUEUE_LEN.to_string();
        run(&inside(&[
            "tc", "qdisc", "replace", "dev", dev, "root", "pfifo", "limit", &limit,
        ]))?;
        Ok(thread)
    }

    /// What the link dropped so far, each way (the veth ends' `rx_dropped` and `tx_dropped`:
    /// a full ring on the receiving end counts on the sending one; and each end's queue).
    pub fn drops(&self) -> LinkDrops {
        let inner = self.server_veth();
        let ns = Some(self.namespace.as_str());
        let counter = |ns: Option<&str>, dev: &str, name: &str| -> u64 {
            let path = format!("/sys/class/net/{dev}/statistics/{name}");
            output(ns, &["cat", &path])
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        };
        // `tc -s -j qdisc show`: one object per queue, with its `drops`.
        let queue = |ns: Option<&str>, dev: &str| -> u64 {
            output(ns, &["tc", "-s", "-j", "qdisc", "show", "dev", dev])
                .and_then(|s| serde_json::from_str::<Vec<serde_json::Value>>(&s).ok())
                .map_or(0, |qs| qs.iter().filter_map(|q| q["drops"].as_u64()).sum())
        };
        LinkDrops {
            to_peers: counter(ns, &inner, "tx_dropped")
                + counter(None, &self.host_veth, "rx_dropped"),
            to_server: counter(None, &self.host_veth, "tx_dropped")
                + counter(ns, &inner, "rx_dropped"),
            queue_to_peers: queue(ns, &inner),
            queue_to_server: queue(None, &self.host_veth),
            peer_sockets: udp_receive_errors(None),
            server_sockets: udp_receive_errors(ns),
        }
    }

    /// The veth end in the server's namespace.
    pub fn server_veth(&self) -> String {
        format!("{}-s", self.namespace)
    }

    /// The command prefix that runs a program inside the server namespace.
    pub fn exec_prefix(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.namespace.clone(),
        ]
    }

    /// Delete the veth pair and the namespace, ignoring what is already gone.
    fn remove(&self) {
        let _ = run(&["ip", "link", "del", &self.host_veth]);
        let _ = run(&["ip", "netns", "del", &self.namespace]);
    }
}

/// Datagrams UDP sockets dropped on receipt in namespace `ns` (the caller's if None): the
/// `InErrors` of `/proc/net/snmp`'s `Udp` line, which include `RcvbufErrors`.
fn udp_receive_errors(ns: Option<&str>) -> u64 {
    let Some(snmp) = output(ns, &["cat", "/proc/net/snmp"]) else {
        return 0;
    };
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "InErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// What `args` prints, run in namespace `ns` if given.
fn output(ns: Option<&str>, args: &[&str]) -> Option<String> {
    let mut command = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]);
            c.args(args);
            c
        }
        None => {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            c
        }
    };
    let out = command.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Ids of the kernel's NAPI threads.
fn napi_threads() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        comm.starts_with("napi/").then_some(pid)
    })
    .collect()
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.remove();
    }
}
