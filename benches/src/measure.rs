//! What a run reads at both ends of its window: the server's CPU time (with its receiving
//! kernel thread where the topology gives it one), the load generator's, the machine's busy
//! and stolen time, and the veth's drops. Shared by every kind of server so that each is
//! measured the same way.

use std::time::Instant;

use crate::topology::{LinkDrops, Topology};
use crate::{machine_busy_secs, machine_steal_secs, CpuTime};

/// The clocks at one end of the window.
pub struct Meter {
    at: Instant,
    server: CpuTime,
    server_rx: Option<CpuTime>,
    own: CpuTime,
    own_rx: Option<CpuTime>,
    busy: f64,
    steal: f64,
    drops: LinkDrops,
}

/// What happened between two [`Meter`] readings.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// Wall time, seconds.
    pub elapsed: f64,
    /// The server's CPU: its process and, in a split topology, its end's receiving thread.
    pub server: CpuTime,
    /// Of that, the receiving thread.
    pub server_rx: Option<CpuTime>,
    /// The load generator's CPU, its end's receiving thread included.
    pub own: CpuTime,
    /// The whole machine's busy time, seconds.
    pub busy: f64,
    /// Time the hypervisor took, seconds.
    pub steal: f64,
    /// Datagrams the veth dropped.
    pub drops: LinkDrops,
}

impl Meter {
    /// Read everything now, for server process `pid` in `topology`.
    pub fn read(pid: u32, topology: &Topology) -> anyhow::Result<Meter> {
        let thread = |t: Option<u32>| t.and_then(|t| CpuTime::of(t).ok());
        let threads = topology.rx_threads;
        Ok(Meter {
            steal: machine_steal_secs()?,
            drops: topology.drops(),
            server: CpuTime::of(pid)?,
            server_rx: thread(threads.map(|t| t.1)),
            own: CpuTime::of(std::process::id())?,
            own_rx: thread(threads.map(|t| t.0)),
            busy: machine_busy_secs()?,
            at: Instant::now(),
        })
    }

    /// What happened since `start`.
    pub fn since(&self, start: &Meter) -> Measured {
        let diff = |a: Option<CpuTime>, b: Option<CpuTime>| match (a, b) {
            (Some(a), Some(b)) => Some(b.since(&a)),
            _ => None,
        };
        let server_rx = diff(start.server_rx, self.server_rx);
        let own_rx = diff(start.own_rx, self.own_rx).unwrap_or_default();
        Measured {
            elapsed: self.at.duration_since(start.at).as_secs_f64(),
            server: self
                .server
                .since(&start.server)
                .plus(&server_rx.unwrap_or_default()),
            server_rx,
            own: self.own.since(&start.own).plus(&own_rx),
            busy: self.busy - start.busy,
            steal: self.steal - start.steal,
            drops: self.drops.since(&start.drops),
        }
    }
}

impl Measured {
    /// CPU time everything else on the machine used over wall time (2.0 = both cores).
    pub fn other_cpu_share(&self) -> f64 {
        ((self.busy - self.server.stat_secs - self.own.stat_secs) / self.elapsed).max(0.0)
    }
}
