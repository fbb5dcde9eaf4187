//! Send-side bandwidth estimation toward one subscriber, from its transport-wide feedback.
//!
//! The relay numbers every packet it sends a subscriber (transport-wide sequence number,
//! [`BandwidthEstimator::handle_sent`]); the subscriber's browser says when each arrived
//! ([`crate::engine::rtcp::twcc`]); [`BandwidthEstimator::handle_feedback`] turns that into an
//! estimate of what the path carries. It follows libwebrtc's goog_cc, the estimator Chromium
//! runs on the other side of the same feedback, so the two behave alike on the same path:
//!
//! - [`inter_arrival`] groups packets into send bursts and compares one group's delay with
//!   the previous one's;
//! - [`trendline`] fits the trend of that delay and says whether a queue is growing
//!   (overuse), steady, or draining;
//! - [`aimd`] turns that into a rate: cut to 85% of the delivered rate ([`acked_bitrate`]) on
//!   overuse, multiplicative increase far from the last congestion, additive near it;
//! - [`loss`] caps it where the receiver loses more than 10% (and lets it grow under 2%);
//! - [`probe`] measures whether the path carries more than the stream sends: a short cluster
//!   of packets sent faster than the estimate, whose arrival rate is the path's rate. Without
//!   it a relay forwarding a 300 kbit/s layer could never learn that 2 Mbit/s would fit.
//!
//! Sans-IO: every input takes `now`; the caller sends what [`probe`] asks for.
//! Studied alongside: libwebrtc `modules/congestion_controller/goog_cc` (the constants and
//! the structure), str0m's `docs/BWE.md` and `src/bwe` (a Rust port of the same ideas), and
//! `rtc-interceptor`'s GCC (no probing, which the relay needs for application-limited
//! streams, hence a port of our own rather than the crate).

pub mod acked_bitrate;
pub mod aimd;
pub mod inter_arrival;
pub mod loss;
pub mod probe;
pub mod probe_sender;
pub mod send_history;
pub mod trendline;

use std::time::{Duration, Instant};

use crate::engine::rtcp::twcc::PacketStatus;

use acked_bitrate::AckedBitrate;
use aimd::AimdRateControl;
use inter_arrival::InterArrival;
use loss::LossBasedRate;
use probe::{ProbeController, ProbeEstimator};
use send_history::{PacketResult, SendHistory};
use trendline::{BandwidthUsage, Trendline};

/// Limits and the starting point of an estimate, bit/s.
#[derive(Debug, Clone, Copy)]
pub struct BweConfig {
    /// Where the estimate starts.
    pub start: f64,
    /// It never goes below this.
    pub min: f64,
    /// Nor above this.
    pub max: f64,
}

impl Default for BweConfig {
    fn default() -> Self {
        BweConfig {
            start: 1_000_000.0,
            min: 50_000.0,
            max: 20_000_000.0,
        }
    }
}

/// The estimate of one subscriber transport.
#[derive(Debug)]
pub struct BandwidthEstimator {
    history: SendHistory,
    inter_arrival: InterArrival,
    trendline: Trendline,
    aimd: AimdRateControl,
    loss: LossBasedRate,
    acked: AckedBitrate,
    probes: ProbeEstimator,
    controller: ProbeController,
    estimate: f64,
    /// When the delay last said a queue was growing.
    last_overuse: Option<Instant>,
    /// The link ever pushed back: the estimate was cut (for a growing queue, or loss), so it
    /// has been measured against the link, not only grown from the starting guess. (A
    /// queue the delay saw for a moment at the start, with nothing cut, is not enough: a
    /// browser busy encoding stamps arrivals unevenly.)
    pushed_back: bool,
}

/// The link counts as congested this long after the delay last said a queue was growing.
pub const CONGESTION_HOLD: Duration = Duration::from_secs(2);

impl BandwidthEstimator {
    /// An estimator that has seen nothing, starting at `config.start`.
    pub fn new(config: BweConfig) -> Self {
        BandwidthEstimator {
            history: SendHistory::default(),
            inter_arrival: InterArrival::default(),
            trendline: Trendline::default(),
            aimd: AimdRateControl::new(config.start, config.min, config.max),
            loss: LossBasedRate::new(config.start, config.min, config.max),
            acked: AckedBitrate::default(),
            probes: ProbeEstimator::default(),
            controller: ProbeController::new(config.max),
            estimate: config.start.clamp(config.min, config.max),
            last_overuse: None,
            pushed_back: false,
        }
    }

    /// Whether the link pushed back lately: a queue grew within [`CONGESTION_HOLD`] of
    /// `now`, or the receiver lost more than 10% ([`loss::LossBasedRate::lossy`]). An
    /// estimate below what is sent means little without it: it may not have grown yet.
    pub fn congested(&self, now: Instant) -> bool {
        self.loss.lossy(now)
            || self
                .last_overuse
                .is_some_and(|at| now.saturating_duration_since(at) < CONGESTION_HOLD)
    }

    /// Whether the link ever pushed back (the estimate was ever cut): until then the
    /// estimate is the starting guess or what grew from it.
    pub fn pushed_back(&self) -> bool {
        self.pushed_back
    }

    /// The estimate, bit/s.
    pub fn estimate(&self) -> f64 {
        self.estimate
    }

    /// What the delay says now.
    pub fn usage(&self) -> BandwidthUsage {
        self.trendline.usage()
    }

    /// What the receiver acknowledged lately, bit/s.
    pub fn acked_bitrate(&self) -> Option<f64> {
        self.acked.bitrate()
    }

    /// The round trip to the subscriber.
    pub fn set_rtt(&mut self, rtt: Duration) {
        self.aimd.set_rtt(rtt);
        self.loss.set_rtt(rtt);
    }

    /// The transport-wide sequence number the next packet gets.
    pub fn next_sequence(&self) -> u16 {
        self.history.next_sequence() as u16
    }

    /// A packet of `size` bytes goes out at `now` (as part of probe cluster `probe`, if so):
    /// returns the transport-wide sequence number to stamp it with.
    pub fn handle_sent(&mut self, now: Instant, size: usize, probe: Option<u32>) -> u16 {
        self.history.handle_sent(now, size, probe) as u16
    }

    /// One feedback message's statuses arrived at `now`. `results` is room to work in, kept
    /// by the caller between calls and shared by a core's estimators (a message may name a
    /// hundred packets, and room for that kept by each subscriber would cost it kilobytes);
    /// what it holds before and after is of no meaning.
    pub fn handle_feedback(
        &mut self,
        now: Instant,
        statuses: &[PacketStatus],
        results: &mut Vec<PacketResult>,
    ) {
        results.clear();
        self.history.handle_feedback(statuses, results);
        let lost = results.iter().filter(|r| r.arrival_us.is_none()).count() as u32;
        let received = results.len() as u32 - lost;
        results.retain(|r| r.arrival_us.is_some());
        // In the order they arrived, as the receiver saw them (they nearly always are).
        if !results.is_sorted_by_key(|r| r.arrival_us) {
            results.sort_by_key(|r| r.arrival_us);
        }
        let mut usage = self.trendline.usage();
        let mut probe_rate = None;
        for r in results.iter() {
            let arrival = r.arrival_us.unwrap_or_default();
            self.acked.handle_packet(arrival, r.size);
            if let Some((cluster, measured)) = self.probes.handle_result(r) {
                tracing::debug!(
                    ?measured,
                    probed = cluster.bitrate,
                    estimate = self.estimate,
                    "probe result"
                );
                self.controller
                    .handle_result(cluster.bitrate, measured, self.estimate);
                if let Some(rate) = measured {
                    probe_rate = Some(probe_rate.map_or(rate, |p: f64| p.max(rate)));
                }
            }
            if let Some(delta) = self.inter_arrival.handle_packet(r.sent_at, arrival, r.size) {
                usage = self.trendline.handle_delta(&delta);
            }
        }
        if received == 0 && lost == 0 {
            return;
        }
        if usage == BandwidthUsage::Overusing {
            self.last_overuse = Some(now);
        }
        let acked = self.acked.bitrate();
        self.aimd.update(now, usage, acked);
        let mut delay_rate = self.aimd.limit();
        let probed = probe_rate.filter(|r| {
            *r > self.estimate && usage != BandwidthUsage::Overusing && !self.loss.lossy(now)
        });
        if let Some(rate) = probed {
            // The path carried the probe: start from there.
            self.aimd.set_estimate(now, rate);
            delay_rate = self.aimd.limit();
            self.loss.raise_to(delay_rate);
        }
        self.loss.update(now, received, lost, acked);
        self.loss.cap(delay_rate);
        let before = self.estimate;
        self.estimate = self.loss.bitrate();
        if self.estimate < before {
            self.pushed_back = true;
            tracing::debug!(
                from = before,
                to = self.estimate,
                ?usage,
                acked,
                received,
                lost,
                "estimate cut"
            );
        }
        self.controller
            .handle_estimate(now, self.estimate, usage == BandwidthUsage::Overusing);
    }

    /// Ask for a probe toward `target` bit/s (the layer the subscriber should get next).
    pub fn request_probe(&mut self, now: Instant, target: f64) {
        if !self.loss.lossy(now) {
            self.controller.request(now, self.estimate, target);
        }
    }

    /// Probe no higher than `limit` bit/s ([`probe::ProbeController::set_limit`]).
    pub fn set_probe_limit(&mut self, limit: f64) {
        self.controller.set_limit(limit);
    }

    /// The next probe cluster to send, if one is due at `now`: its id and the rate and byte
    /// count to send it at. The caller sends it (padding or old packets again) through
    /// [`BandwidthEstimator::handle_sent`] with the id.
    pub fn poll_probe(&mut self, now: Instant) -> Option<probe::ProbeCluster> {
        let cluster = self.controller.poll(now)?;
        self.probes.handle_cluster(cluster);
        Some(cluster)
    }
}

#[cfg(test)]
mod sim;
