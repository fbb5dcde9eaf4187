//! `/metrics`: the server's counters in Prometheus's (OpenMetrics) text format.
//!
//! Nothing is counted for Prometheus on the packet path: each scrape asks every relay core for
//! its [`CoreStats`] (plain integers the core owns, as the control API's `stats` does), the hub
//! for its sessions, connections and refusals, the accounts threads for the database's
//! latency and the edge for its trunks, and writes what they say. A scrape therefore costs one
//! message per core, and Prometheus sees the sum over cores by summing the `core` label.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use relay::stats::{CoreStats, DelayHistogram, DropReason};
use relay::Control;
use tokio::sync::{mpsc, oneshot};

use crate::hub::Input;
use crate::relay_link::RelayLink;

/// How long a scrape waits for each part (a core, the hub, the edge) before it reports
/// without it.
const PART_TIMEOUT: Duration = Duration::from_secs(2);

/// Bounds of the delay histograms, in microseconds (each moved up to the bound of the
/// relay's histogram bucket that holds it, so the counts are exact).
const DELAY_BOUNDS_US: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
];

/// Bounds of the estimates' histogram, in kbit/s (exported in bytes a second, Prometheus's
/// base unit).
const ESTIMATE_BOUNDS_KBPS: &[u64] = &[
    100, 250, 500, 1_000, 1_500, 2_500, 4_000, 6_000, 10_000, 20_000,
];

/// Bounds of the database's latency histograms, in microseconds.
const DB_BOUNDS_US: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

/// What the hub reports: its sessions, connections and what it refused.
#[derive(Clone, Debug, Default)]
pub struct HubMetrics {
    /// Sessions with a participant on this node.
    pub sessions: u64,
    /// Participants on this node (reconnecting ones included).
    pub participants: u64,
    /// Websockets open now.
    pub websockets: u64,
    /// Websockets opened since the start.
    pub websockets_opened: u64,
    /// Joins that succeeded since the start.
    pub joins: u64,
    /// Error replies since the start, by their code.
    pub errors: BTreeMap<String, u64>,
    /// The account database's latency: authentications (reads) and usage writes.
    pub db: DbLatency,
    /// Whether the server is draining (takes no new session).
    pub draining: bool,
    /// Webhooks: (delivered, failed tries, lost).
    pub webhooks: (u64, u64, u64),
}

/// How long the account database took.
#[derive(Clone, Debug, Default)]
pub struct DbLatency {
    /// Authentications, microseconds each.
    pub reads: DelayHistogram,
    /// Usage and recording writes, microseconds each (a write that failed and was retried
    /// counts each try).
    pub writes: DelayHistogram,
    /// Writes that failed (and wait to be retried).
    pub write_failures: u64,
}

/// One scrape's snapshots.
#[derive(Debug, Default)]
pub struct Scrape {
    /// Each relay core's counters.
    pub cores: Vec<CoreStats>,
    /// The hub's.
    pub hub: Option<HubMetrics>,
    /// The edge's trunks, when this node is part of a cluster.
    pub trunks: Option<Vec<edge::node::TrunkStats>>,
}

/// Where a scrape's parts come from.
#[derive(Clone)]
pub struct Sources {
    /// The relay.
    pub relay: RelayLink,
    /// The hub's input.
    pub hub: mpsc::Sender<Input>,
    /// The edge, in a cluster.
    pub edge: Option<edge::node::EdgeHandle>,
}

impl Sources {
    /// Take a scrape's snapshots; a part that does not answer in time is left out.
    pub async fn scrape(&self) -> Scrape {
        let cores = tokio::time::timeout(PART_TIMEOUT, self.relay.stats());
        let hub = async {
            let (tx, rx) = oneshot::channel();
            self.hub.send(Input::Metrics(tx)).await.ok()?;
            tokio::time::timeout(PART_TIMEOUT, rx).await.ok()?.ok()
        };
        let trunks = async {
            let edge = self.edge.as_ref()?;
            tokio::time::timeout(PART_TIMEOUT, edge.stats())
                .await
                .ok()?
                .ok()
        };
        let (cores, hub, trunks) = tokio::join!(cores, hub, trunks);
        Scrape {
            cores: cores.ok().and_then(|r| r.ok()).unwrap_or_default(),
            hub,
            trunks,
        }
    }
}

/// Serve `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, sources: Sources) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(sources);
    axum::serve(listener, app).await
}

async fn metrics(State(sources): State<Sources>) -> Response {
    let text = render(sources.scrape().await);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The scrape in the OpenMetrics text format.
pub fn render(scrape: Scrape) -> String {
    let mut registry = Registry::with_prefix("webrtcai");
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    // Writing into a String does not fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// A bound address for `/metrics`, for the log.
pub fn describe(addr: SocketAddr) -> String {
    format!("http://{addr}/metrics")
}

type Labels = Vec<(&'static str, String)>;

/// Writes metric families into a descriptor encoder.
struct Writer<'a, 'b> {
    encoder: &'a mut DescriptorEncoder<'b>,
}

impl Writer<'_, '_> {
    fn counter<V>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, V)>,
    ) -> Result<(), std::fmt::Error>
    where
        ConstCounter<V>: EncodeMetric,
    {
        let mut family = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, v) in samples {
            // A metric without labels has one sample, written without braces.
            if labels.is_empty() {
                return ConstCounter::new(v).encode(family);
            }
            ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn gauge(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, f64)>,
    ) -> Result<(), std::fmt::Error> {
        let mut family = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, v) in samples {
            if labels.is_empty() {
                return ConstGauge::new(v).encode(family);
            }
            ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// `h` as a histogram of `bounds`, each value in the metric's unit by `unit` (µs to
    /// seconds, kbit/s to bit/s).
    fn histogram(
        &mut self,
        name: &str,
        help: &str,
        h: &DelayHistogram,
        bounds: &[u64],
        unit: fn(f64) -> f64,
    ) -> Result<(), std::fmt::Error> {
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        let cumulative = h.cumulative(bounds);
        let total = h.count();
        let mut buckets = Vec::with_capacity(cumulative.len() + 1);
        let mut before = 0;
        for (bound, below) in cumulative {
            buckets.push((unit(bound as f64), below - before));
            before = below;
        }
        buckets.push((f64::MAX, total - before));
        metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            unit(h.sum_estimate() as f64),
            total,
            &buckets,
            None,
        )
    }
}

/// Microseconds in seconds (divided, so that a bound reads as the decimal it is).
fn seconds(us: f64) -> f64 {
    us / 1e6
}

fn per_core(cores: &[CoreStats], f: impl Fn(&CoreStats) -> u64) -> Vec<(Labels, u64)> {
    cores
        .iter()
        .map(|c| (vec![("core", c.core.to_string())], f(c)))
        .collect()
}

fn per_core_gauge(cores: &[CoreStats], f: impl Fn(&CoreStats) -> u64) -> Vec<(Labels, f64)> {
    per_core(cores, f)
        .into_iter()
        .map(|(l, v)| (l, v as f64))
        .collect()
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut w = Writer {
            encoder: &mut encoder,
        };
        let cores = &self.cores;
        let mut all = CoreStats::default();
        for c in cores {
            all.accumulate(c);
        }

        // The relay: traffic, copies, drops, state.
        w.counter(
            "relay_packets_received",
            "UDP datagrams received by each relay core.",
            per_core(cores, |c| c.packets_in),
        )?;
        w.counter(
            "relay_received_bytes",
            "Bytes received by each relay core.",
            per_core(cores, |c| c.bytes_in),
        )?;
        w.counter(
            "relay_packets_sent",
            "UDP datagrams sent by each relay core.",
            per_core(cores, |c| c.packets_out),
        )?;
        w.counter(
            "relay_sent_bytes",
            "Bytes sent by each relay core.",
            per_core(cores, |c| c.bytes_out),
        )?;
        w.counter(
            "relay_rtp_forwarded",
            "RTP copies sent to subscribers (one per subscriber per packet).",
            per_core(cores, |c| c.rtp_forwarded),
        )?;
        w.counter(
            "relay_rtp_copies_not_sent",
            "RTP copies not sent: the number they would take was used already (a duplicate, or a packet too late for its subscriber's stream).",
            per_core(cores, |c| c.rtp_copies_not_sent),
        )?;
        w.counter(
            "relay_datagrams_not_sent",
            "Datagrams the kernel refused to send, each for its own destination (no route to it any more: a participant's network went away); lost, as on a network.",
            per_core(cores, |c| c.datagrams_not_sent),
        )?;
        w.counter(
            "relay_cross_core_rtp",
            "RTP packets that came from another core of the session.",
            per_core(cores, |c| c.cross_core_rtp_in),
        )?;
        let drops = cores.iter().flat_map(|c| {
            DropReason::ALL.iter().map(move |&r| {
                (
                    vec![
                        ("core", c.core.to_string()),
                        ("reason", r.as_str().to_owned()),
                    ],
                    c.dropped(r),
                )
            })
        });
        w.counter(
            "relay_dropped",
            "Datagrams the relay dropped, by reason.",
            drops,
        )?;
        w.gauge(
            "relay_sessions",
            "Sessions on each relay core.",
            per_core_gauge(cores, |c| c.sessions),
        )?;
        w.gauge(
            "relay_participants",
            "Participants on each relay core.",
            per_core_gauge(cores, |c| c.participants),
        )?;
        w.gauge(
            "relay_handshakes",
            "DTLS handshakes in progress on each relay core.",
            per_core_gauge(cores, |c| c.handshakes),
        )?;
        let cpu = cores.iter().map(|c| {
            (
                vec![("core", c.core.to_string())],
                c.cpu_time_us as f64 / 1e6,
            )
        });
        w.counter(
            "relay_core_cpu_seconds",
            "CPU time used by each relay core's thread; its rate is the core's load.",
            cpu,
        )?;
        w.histogram(
            "relay_forwarding_delay_seconds",
            "Time from the kernel's receipt of a datagram to the kernel taking each copy, over all cores.",
            &all.forwarding_delay,
            DELAY_BOUNDS_US,
            seconds,
        )?;
        w.histogram(
            "relay_pacing_delay_seconds",
            "Time copies waited in the pacer, over all cores.",
            &all.pacing_delay,
            DELAY_BOUNDS_US,
            seconds,
        )?;

        // Quality: repair, layers, estimates.
        w.counter(
            "relay_nacks_received",
            "NACKs received from subscribers.",
            per_core(cores, |c| c.nacks_received),
        )?;
        w.counter(
            "relay_retransmissions_sent",
            "Packets retransmitted to subscribers on their NACKs.",
            per_core(cores, |c| c.retransmissions_sent),
        )?;
        w.counter(
            "relay_nacks_sent",
            "NACKs sent to publishers.",
            per_core(cores, |c| c.nacks_sent),
        )?;
        w.counter(
            "relay_rtx_received",
            "Retransmissions received from publishers.",
            per_core(cores, |c| c.rtx_received),
        )?;
        w.counter(
            "relay_keyframe_requests_forwarded",
            "Keyframe requests (PLI) forwarded to publishers.",
            per_core(cores, |c| c.keyframe_requests_forwarded),
        )?;
        w.counter(
            "relay_layer_switches",
            "Simulcast and SVC layer switches of subscriptions.",
            per_core(cores, |c| c.layer_switches),
        )?;
        w.counter(
            "relay_subscriptions_paused",
            "Subscriptions paused (the estimate could not carry their lowest layer).",
            per_core(cores, |c| c.subscriptions_paused),
        )?;
        w.counter(
            "relay_twcc_feedback_sent",
            "Transport-wide congestion control feedback sent to publishers.",
            per_core(cores, |c| c.twcc_feedback_sent),
        )?;
        w.histogram(
            "relay_subscriber_estimate_bytes_per_second",
            "The subscribers' bandwidth estimates at the scrape, in bytes a second (a distribution now, not a running count: read it without rate()).",
            &all.estimates_kbps,
            ESTIMATE_BOUNDS_KBPS,
            |kbps| kbps * 125.0,
        )?;

        // Data channels and recording.
        w.counter(
            "relay_data_messages_received",
            "Data-channel messages received from participants.",
            per_core(cores, |c| c.data.messages_in),
        )?;
        w.counter(
            "relay_data_messages_sent",
            "Data-channel messages delivered to participants.",
            per_core(cores, |c| c.data.messages_out),
        )?;
        w.counter(
            "relay_data_undeliverable",
            "Data-channel messages not delivered: a receiver not connected for long, one too far behind, or its channel refused them.",
            per_core(cores, |c| c.data.undeliverable),
        )?;
        w.counter(
            "relay_data_held_back",
            "Times a participant's data-channel messages waited for its rate.",
            per_core(cores, |c| c.data.held_back),
        )?;
        w.counter(
            "relay_data_held_for_receivers",
            "Times a participant's data-channel messages waited for a receiver of its session with too much unacknowledged.",
            per_core(cores, |c| c.data.held_for_receivers),
        )?;
        w.counter(
            "relay_data_refused",
            "Data-channel messages refused: their sender lacks the publish_data grant.",
            per_core(cores, |c| c.data.refused),
        )?;
        w.counter(
            "relay_data_malformed",
            "Data-channel messages dropped: an envelope or DCEP message that does not read, or a message on a stream no channel was opened on.",
            per_core(cores, |c| c.data.malformed),
        )?;
        w.counter(
            "relay_data_channels_opened",
            "Data channels opened, by participants or by the relay.",
            per_core(cores, |c| c.data.channels_opened),
        )?;
        w.counter(
            "relay_data_sctp_packets_received",
            "SCTP packets received from participants (over their DTLS).",
            per_core(cores, |c| c.data.sctp_packets_in),
        )?;
        w.counter(
            "relay_data_sctp_packets_sent",
            "SCTP packets sent to participants.",
            per_core(cores, |c| c.data.sctp_packets_out),
        )?;
        w.counter(
            "relay_data_sctp_packets_not_sent",
            "SCTP packets not sent: the participant's DTLS record layer was not up or gone, or could not seal them (SCTP sends them again).",
            per_core(cores, |c| c.data.sctp_packets_dropped),
        )?;
        w.counter(
            "relay_recording_queue_full",
            "Packets a recording lost because its writer fell behind.",
            per_core(cores, |c| c.record.queue_full),
        )?;
        w.gauge(
            "relay_ice_tcp_connections",
            "ICE-TCP connections open on each relay core.",
            per_core_gauge(cores, |c| c.ice_tcp.connections_open),
        )?;
        w.counter(
            "relay_ice_tcp_connections_accepted",
            "ICE-TCP connections accepted by each relay core.",
            per_core(cores, |c| c.ice_tcp.connections_accepted),
        )?;
        w.counter(
            "relay_ice_tcp_connections_refused",
            "ICE-TCP connections closed at once: the core had its maximum open, or one from the same address.",
            per_core(cores, |c| c.ice_tcp.connections_refused),
        )?;
        w.counter(
            "relay_ice_tcp_packets_received",
            "Packets received on ICE-TCP connections (RFC 4571 frames), also counted in relay_packets_received.",
            per_core(cores, |c| c.ice_tcp.frames_in),
        )?;
        w.counter(
            "relay_ice_tcp_packets_dropped",
            "Packets for an ICE-TCP connection dropped because the peer read too slowly.",
            per_core(cores, |c| c.ice_tcp.frames_dropped),
        )?;
        w.counter(
            "relay_ice_tcp_packets_too_long",
            "Packets received on ICE-TCP connections longer than the relay takes (dropped).",
            per_core(cores, |c| c.ice_tcp.frames_too_long),
        )?;

        // Signalling.
        if let Some(hub) = &self.hub {
            w.gauge(
                "signalling_sessions",
                "Sessions with participants on this node.",
                [(vec![], hub.sessions as f64)],
            )?;
            let (delivered, failed, lost) = hub.webhooks;
            w.counter(
                "signalling_webhooks_delivered",
                "Webhook events a receiver took.",
                [(vec![], delivered)],
            )?;
            w.counter(
                "signalling_webhook_failed_tries",
                "Webhook deliveries that failed (and were tried again).",
                [(vec![], failed)],
            )?;
            w.counter(
                "signalling_webhooks_lost",
                "Webhook events lost: a full queue, or given up after 10 minutes.",
                [(vec![], lost)],
            )?;
            w.gauge(
                "signalling_draining",
                "1 while the server drains (takes no new session).",
                [(vec![], f64::from(u8::from(hub.draining)))],
            )?;
            w.gauge(
                "signalling_participants",
                "Participants on this node.",
                [(vec![], hub.participants as f64)],
            )?;
            w.gauge(
                "signalling_websockets",
                "Websockets open.",
                [(vec![], hub.websockets as f64)],
            )?;
            w.counter(
                "signalling_websockets_opened",
                "Websockets opened.",
                [(vec![], hub.websockets_opened)],
            )?;
            w.counter(
                "signalling_joins",
                "Joins that succeeded.",
                [(vec![], hub.joins)],
            )?;
            let errors = hub
                .errors
                .iter()
                .map(|(code, n)| (vec![("code", code.clone())], *n));
            w.counter(
                "signalling_errors",
                "Error replies, by code (refused joins among them).",
                errors,
            )?;
            w.histogram(
                "signalling_db_read_seconds",
                "Account database: each authentication's reads.",
                &hub.db.reads,
                DB_BOUNDS_US,
                seconds,
            )?;
            w.histogram(
                "signalling_db_write_seconds",
                "Account database: each usage or recording write.",
                &hub.db.writes,
                DB_BOUNDS_US,
                seconds,
            )?;
            w.counter(
                "signalling_db_write_failures",
                "Account database writes that failed and wait to be retried.",
                [(vec![], hub.db.write_failures)],
            )?;
        }

        // The edge.
        if let Some(trunks) = &self.trunks {
            let peer = |t: &edge::node::TrunkStats| vec![("peer", t.peer.clone())];
            w.gauge(
                "edge_trunks",
                "Trunks to other nodes that are up.",
                [(vec![], trunks.iter().filter(|t| t.up).count() as f64)],
            )?;
            w.counter(
                "edge_sent_bytes",
                "Bytes QUIC sent on each trunk.",
                trunks.iter().map(|t| (peer(t), t.udp_bytes_sent)),
            )?;
            w.counter(
                "edge_media_datagrams_sent",
                "Media datagrams sent on each trunk.",
                trunks.iter().map(|t| (peer(t), t.tunnel.datagrams_out)),
            )?;
            w.counter(
                "edge_media_datagrams_received",
                "Media datagrams received on each trunk.",
                trunks.iter().map(|t| (peer(t), t.tunnel.datagrams_in)),
            )?;
            w.counter(
                "edge_media_received_bytes",
                "Media bytes received on each trunk.",
                trunks.iter().map(|t| (peer(t), t.tunnel.bytes_in)),
            )?;
            w.counter(
                "edge_lost_packets",
                "Packets QUIC declared lost on each trunk.",
                trunks.iter().map(|t| (peer(t), t.lost_packets)),
            )?;
            w.gauge(
                "edge_rtt_seconds",
                "QUIC's round-trip estimate of each trunk.",
                trunks.iter().map(|t| (peer(t), t.rtt_ms / 1e3)),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_histograms_and_labels_read_as_openmetrics() {
        let mut core = CoreStats {
            core: 1,
            packets_in: 10,
            rtp_forwarded: 90,
            participants: 3,
            cpu_time_us: 1_500_000,
            ..Default::default()
        };
        core.drop(DropReason::SrtpAuthFailed);
        core.forwarding_delay.record(80, 4);
        core.forwarding_delay.record(3_000, 1);
        core.estimates_kbps.record(1_200, 2);
        let mut hub = HubMetrics {
            joins: 2,
            websockets: 2,
            ..Default::default()
        };
        hub.errors.insert("unauthorized".into(), 1);
        hub.db.reads.record(400, 2);
        let text = render(Scrape {
            cores: vec![core],
            hub: Some(hub),
            trunks: None,
        });
        for line in [
            "webrtcai_relay_packets_received_total{core=\"1\"} 10",
            "webrtcai_relay_rtp_forwarded_total{core=\"1\"} 90",
            "webrtcai_relay_participants{core=\"1\"} 3.0",
            "webrtcai_relay_dropped_total{core=\"1\",reason=\"srtp_auth_failed\"} 1",
            "webrtcai_relay_core_cpu_seconds_total{core=\"1\"} 1.5",
            "webrtcai_relay_forwarding_delay_seconds_count 5",
            "webrtcai_relay_forwarding_delay_seconds_bucket{le=\"+Inf\"} 5",
            "webrtcai_relay_subscriber_estimate_bytes_per_second_count 2",
            "webrtcai_signalling_joins_total 2",
            "webrtcai_signalling_errors_total{code=\"unauthorized\"} 1",
            "webrtcai_signalling_db_read_seconds_count 2",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // Four delays of 80 µs are at most 0.0001 s; the one of 3 ms is not.
        assert!(
            text.contains("webrtcai_relay_forwarding_delay_seconds_bucket{le=\"0.000103\"} 4"),
            "{text}"
        );
        assert!(!text.contains("edge_"), "no edge out of a cluster");
    }
}
