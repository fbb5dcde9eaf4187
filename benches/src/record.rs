//! One run's result, as a line of the benchmark's JSON Lines output.

use serde::Serialize;

use crate::latency::{Latency, LatencySummary};
use crate::measure::Measured;
use crate::scenario::{FeedbackCounts, QualityCounts, RunOptions, Scenario};
use crate::target::{Profile, ServerKind};
use crate::topology::{Delivery, LinkDrops};
use crate::traffic::MediaProfile;

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Which server (`relay`, `janus`).
    pub server_kind: ServerKind,
    /// Its display name.
    pub server: &'static str,
    /// `broadcast` or `conference`.
    pub scenario: &'static str,
    /// Publishing participants.
    pub publishers: usize,
    /// The server's cores (the relay's `--cores`; 1 for the others).
    #[serde(default)]
    pub server_cores: usize,
    /// Receiving PeerConnections.
    pub receivers: usize,
    /// Subscribers of each stream.
    pub fanout: usize,
    /// SRTP profile of every connection.
    pub profile: Profile,
    /// Who ran the datagrams' receive path ([`Delivery`]).
    pub topology: Delivery,
    /// What each publisher sends.
    pub media: MediaProfile,
    /// Seconds it took to connect everyone.
    pub setup_seconds: f64,
    /// Length of the measurement window.
    pub seconds: f64,
    /// Packets per second the publishers sent.
    pub sent_pps: f64,
    /// Packets per second the server should have delivered (sent × fan-out).
    pub offered_pps: f64,
    /// Packets per second that arrived, decrypted and authenticated.
    pub delivered_pps: f64,
    /// 1 − delivered / offered, over the packets sent in the window.
    pub loss: f64,
    /// One-way latency of the delivered packets.
    pub latency: LatencySummary,
    /// How late after its due time the load generator sent each packet of the window (it
    /// waits for its CPU like any program): a long tail here means bursts of late packets
    /// reached the server, and part of the server's latency tail is theirs.
    #[serde(default)]
    pub send_lateness: LatencySummary,
    /// Server CPU time (all threads, `/proc/<pid>/task/*/schedstat`) per delivered packet.
    pub server_cpu_us_per_forwarded: f64,
    /// The same from `/proc/<pid>/stat` (clock-tick resolution).
    pub server_cpu_us_per_forwarded_stat: f64,
    /// Of that, the server's own code outside the kernel (utime, clock-tick resolution).
    #[serde(default)]
    pub server_user_cpu_us_per_forwarded: f64,
    /// Of that, the server end's receiving kernel thread, in a split topology: the server's
    /// own receive path (counted in the figure above).
    #[serde(default)]
    pub server_rx_thread_cpu_us_per_forwarded: Option<f64>,
    /// Datagrams the veth pair dropped in the window, each way: part of `loss`, but the
    /// link's, not the server's.
    #[serde(default)]
    pub link_drops: LinkDrops,
    /// Server CPU time over wall time (1.0 = its one core busy).
    pub server_cpu_share: f64,
    /// Server resident set size at the end of the window.
    pub server_rss_kib: u64,
    /// Packets per second the server itself counted as forwarded, where it counts them.
    pub server_forwarded_pps: Option<f64>,
    /// The same by core (the relay's), to see how a run spread over them.
    #[serde(default)]
    pub server_forwarded_pps_by_core: Vec<f64>,
    /// Time the datagrams sent in the window spent inside the server, from the kernel's
    /// receipt of what they answer to the kernel taking them, as the server measures it
    /// (the relay does): the server's own share of `latency`, without the network path and
    /// the wake-ups of idle CPUs.
    /// Percentiles are upper bounds of the relay's 12.5%-wide buckets.
    #[serde(default)]
    pub server_delay: Option<LatencySummary>,
    /// The load generator's CPU time over wall time (it has one core).
    pub loadgen_cpu_share: f64,
    /// Whether the load generator itself was near saturation (figures then understate the
    /// server).
    pub loadgen_saturated: bool,
    /// CPU time everything else on the machine used over wall time (2.0 = both cores): other
    /// work running beside the benchmark, which disturbs latency more than CPU per packet.
    pub other_cpu_share: f64,
    /// CPU time the hypervisor took from the machine over wall time (2.0 = both cores): when
    /// it is not near 0, latency tails say more about the host than about the server.
    #[serde(default)]
    pub steal_share: f64,
    /// SRTP packets that failed authentication or replay checks.
    pub srtp_errors: u64,
    /// Decrypted RTP packets without a probe.
    pub unprobed: u64,
    /// Whether the peers sent what browsers send back (receiver reports, NACKs, congestion
    /// feedback, retransmissions) and the publishers negotiated repair and transport-wide
    /// congestion control.
    #[serde(default)]
    pub feedback: bool,
    /// Share of RTP packets lost on each peer's own link by design (`--loss`), both ways.
    #[serde(default)]
    pub link_loss: f64,
    /// What they sent back, in such runs.
    #[serde(default)]
    pub feedback_counts: Option<FeedbackCounts>,
    /// Whether video went out as simulcast layers and the receivers sent transport-wide
    /// feedback: the server estimated, paced and picked layers per receiver.
    #[serde(default)]
    pub quality: bool,
    /// What the server counted of that over the whole run, in such runs.
    #[serde(default)]
    pub quality_counts: Option<QualityCounts>,
}

/// What every kind of run measured the same way, from which its record is made.
pub struct Run<'a> {
    /// The server.
    pub kind: ServerKind,
    /// Its cores.
    pub cores: usize,
    /// What the participants did.
    pub scenario: Scenario,
    /// Receiving peers.
    pub receivers: usize,
    /// The SRTP profile.
    pub profile: Profile,
    /// The network.
    pub topology: Delivery,
    /// The run's options.
    pub opts: &'a RunOptions,
    /// Seconds it took to connect everyone.
    pub setup_seconds: f64,
    /// Packets the publishers sent inside the window.
    pub sent: u64,
    /// Copies of them that arrived.
    pub received: u64,
    /// Their one-way latency.
    pub latency: &'a Latency,
    /// How late the pacer sent them.
    pub lateness: &'a Latency,
    /// The clocks over the window.
    pub measured: &'a Measured,
    /// The server's RSS at the end of the window.
    pub rss_kib: u64,
    /// Packets without a probe.
    pub unprobed: u64,
}

impl Record {
    /// The record of `run`, with nothing of what only some servers report (their own
    /// counters, feedback counts): the caller adds those.
    pub fn of(run: Run<'_>) -> Record {
        let Run {
            kind,
            opts,
            measured,
            received,
            ..
        } = run;
        let elapsed = measured.elapsed;
        let per_packet = |secs: f64| {
            if received > 0 {
                secs / received as f64 * 1e6
            } else {
                0.0
            }
        };
        let offered = run.sent * run.scenario.fanout() as u64;
        let own_share = measured.own.sched_secs / elapsed;
        let server = measured.server;
        Record {
            server_kind: kind,
            server: kind.label(),
            scenario: run.scenario.name(),
            publishers: run.scenario.publishers(),
            server_cores: run.cores,
            receivers: run.receivers,
            fanout: run.scenario.fanout(),
            profile: run.profile,
            topology: run.topology,
            media: opts.media,
            setup_seconds: run.setup_seconds,
            seconds: opts.seconds,
            sent_pps: run.sent as f64 / opts.seconds,
            offered_pps: offered as f64 / opts.seconds,
            delivered_pps: received as f64 / opts.seconds,
            loss: if offered > 0 {
                (1.0 - received as f64 / offered as f64).max(0.0)
            } else {
                0.0
            },
            latency: run.latency.summary(),
            send_lateness: run.lateness.summary(),
            server_cpu_us_per_forwarded: per_packet(server.sched_secs),
            server_cpu_us_per_forwarded_stat: per_packet(server.stat_secs),
            server_user_cpu_us_per_forwarded: per_packet(server.user_secs),
            server_rx_thread_cpu_us_per_forwarded: measured
                .server_rx
                .map(|t| per_packet(t.sched_secs)),
            link_drops: measured.drops,
            server_cpu_share: server.sched_secs / elapsed,
            server_rss_kib: run.rss_kib,
            server_forwarded_pps: None,
            server_forwarded_pps_by_core: Vec::new(),
            server_delay: None,
            loadgen_cpu_share: own_share,
            loadgen_saturated: own_share > opts.saturation,
            other_cpu_share: measured.other_cpu_share(),
            steal_share: measured.steal / elapsed,
            srtp_errors: 0,
            unprobed: run.unprobed,
            feedback: false,
            link_loss: 0.0,
            feedback_counts: None,
            quality: false,
            quality_counts: None,
        }
    }
}
