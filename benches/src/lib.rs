//! Shared pieces of the whole-system benchmarks: starting the relay as its own process and
//! reading its CPU time from `/proc`, and the load generator's parts (servers under test,
//! their network, the media they are fed, the measurements and the chart).

pub mod chart;
pub mod feedback;
pub mod floor;
pub mod http;
pub mod janus;
pub mod janus_process;
pub mod jsep;
pub mod latency;
pub mod measure;
pub mod multinode;
pub mod record;
pub mod scenario;
pub mod target;
pub mod topology;
pub mod traffic;
pub mod xdp;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

/// CPU time a process has used, two ways.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTime {
    /// utime + stime from `/proc/<pid>/stat`, in seconds (clock-tick resolution).
    pub stat_secs: f64,
    /// Of that, utime: the time spent in the program's own code, outside the kernel.
    pub user_secs: f64,
    /// Sum of every thread's run time from `/proc/<pid>/task/*/schedstat`, in seconds
    /// (nanosecond resolution).
    pub sched_secs: f64,
}

impl CpuTime {
    /// Read the current CPU time of `pid`.
    pub fn of(pid: u32) -> anyhow::Result<CpuTime> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may contain spaces) start at state (field 3).
        let rest = stat.rsplit_once(')').context("stat format")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11).context("utime")?.parse()?;
        let stime: f64 = fields.get(12).context("stime")?.parse()?;
        let mut sched_ns = 0u64;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let path = task?.path().join("schedstat");
            if let Ok(s) = std::fs::read_to_string(path) {
                sched_ns += s
                    .split_whitespace()
                    .next()
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        }
        Ok(CpuTime {
            stat_secs: (utime + stime) / clock_ticks() as f64,
            user_secs: utime / clock_ticks() as f64,
            sched_secs: sched_ns as f64 / 1e9,
        })
    }

    /// Both together (a process and a kernel thread that works for it).
    pub fn plus(&self, other: &CpuTime) -> CpuTime {
        CpuTime {
            stat_secs: self.stat_secs + other.stat_secs,
            user_secs: self.user_secs + other.user_secs,
            sched_secs: self.sched_secs + other.sched_secs,
        }
    }

    /// Time used between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            stat_secs: self.stat_secs - earlier.stat_secs,
            user_secs: self.user_secs - earlier.user_secs,
            sched_secs: self.sched_secs - earlier.sched_secs,
        }
    }
}

/// `sysconf(_SC_CLK_TCK)`, read through `getconf` (100 on Linux unless configured otherwise).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// CPU time the whole machine has spent busy (every CPU, every state but idle and iowait),
/// in seconds, from `/proc/stat`.
pub fn machine_busy_secs() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("/proc/stat is empty")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal …
    let busy: u64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| ![3, 4].contains(i) && *i < 8)
        .map(|(_, v)| v)
        .sum();
    Ok(busy as f64 / clock_ticks() as f64)
}

/// CPU time the hypervisor took from this machine's CPUs (`steal` in `/proc/stat`), in
/// seconds: while it is taken, nothing here runs, so latency tails stretch by as much.
pub fn machine_steal_secs() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("/proc/stat is empty")?;
    let steal: u64 = line
        .split_whitespace()
        .nth(8)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    Ok(steal as f64 / clock_ticks() as f64)
}

/// Append `record` to `path` as one line of JSON (JSON Lines), creating the file if needed.
pub fn append_json(path: &std::path::Path, record: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(record)?)?;
    Ok(())
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The relay binary: `$RELAY_BIN`, or `relay` next to the running executable.
pub fn relay_binary() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("RELAY_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("exe dir")?;
    for candidate in [dir.join("relay"), dir.join("../relay")] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!(
        "relay binary not found next to {}; build it or set RELAY_BIN",
        exe.display()
    )
}

/// A relay process on loopback.
pub struct RelayProcess {
    /// The child.
    pub child: Child,
    /// Its control address.
    pub control: SocketAddr,
}

impl RelayProcess {
    /// Start `relay` with `cores` pinned cores and wait until its control port answers.
    pub async fn start(cores: usize, extra: &[&str]) -> anyhow::Result<RelayProcess> {
        let bin = relay_binary()?;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let control: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let child = Command::new(&bin)
            .args(["--port", "0", "--stats-interval", "0", "--cores"])
            .arg(cores.to_string())
            .arg("--control")
            .arg(control.to_string())
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(control).await.is_ok() {
                return Ok(RelayProcess { child, control });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("relay did not open its control port")
    }

    /// Start the relay as `launch` says (under a command prefix, on a given address, with a
    /// control token) and wait until its control port answers.
    pub async fn launch(launch: &RelayLaunch) -> anyhow::Result<RelayProcess> {
        let bin = relay_binary()?;
        let mut argv = launch.prefix.clone();
        argv.push(bin.display().to_string());
        argv.extend([
            "--bind".to_owned(),
            launch.bind.to_string(),
            "--port".into(),
            "0".into(),
            "--stats-interval".into(),
            "0".into(),
            "--cores".into(),
            launch.cores.to_string(),
            "--control".into(),
            launch.control.to_string(),
        ]);
        if !launch.pin {
            argv.push("--no-pin".into());
        }
        if let Some(n) = launch.spread_after {
            argv.extend(["--spread-after".into(), n.to_string()]);
        }
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("RUST_LOG", "warn")
            .env("RELAY_CONTROL_TOKEN", &launch.token)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", argv.join(" ")))?;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(launch.control).await.is_ok() {
                return Ok(RelayProcess {
                    child,
                    control: launch.control,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("relay did not open its control port {}", launch.control)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

/// How to start the relay off loopback (inside a server namespace, on its veth address).
#[derive(Debug, Clone)]
pub struct RelayLaunch {
    /// Command prefix (namespace, CPU pinning) the binary runs under.
    pub prefix: Vec<String>,
    /// Address its media sockets bind to and announce.
    pub bind: IpAddr,
    /// Control API address.
    pub control: SocketAddr,
    /// Control token (required off loopback); passed in the environment, not the command line.
    pub token: String,
    /// Cores.
    pub cores: usize,
    /// Whether the relay pins its core threads itself.
    pub pin: bool,
    /// Its `--spread-after` (None: its default).
    pub spread_after: Option<usize>,
}
