//! Probing: finding out whether the path carries more than is being sent.
//!
//! A relay sends each subscriber only what its layers need, so the delay-based estimate, which
//! never grows far past what was delivered, cannot discover headroom on its own. A probe is a
//! short cluster of packets (at least [`MIN_PACKETS`] and [`MIN_DURATION`]'s worth) sent at a
//! rate above the estimate; the rate at which the receiver got them is what the path carries,
//! up to the probe's rate (libwebrtc's `ProbeBitrateEstimator` rules: the smaller of the send
//! and receive rates, and 95% of the receive rate when it fell clearly short).
//!
//! [`ProbeController`] decides when: twice at the start (3x and 6x the starting estimate),
//! again at twice a successful result while they keep succeeding, at a rate someone asks for
//! (a better layer), at most once per [`MIN_INTERVAL`], and after a large drop back toward the
//! rate before it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::send_history::PacketResult;

/// A cluster lasts at least this long…
pub const MIN_DURATION: Duration = Duration::from_millis(15);
/// …and has at least this many packets.
pub const MIN_PACKETS: u32 = 5;
/// A cluster asked for (a better layer's rate) lasts this long. Its result moves a subscriber
/// up, where one too high costs a freeze; a browser busy decoding stamps arrivals unevenly by
/// tens of milliseconds, which over a 15 ms cluster on a 400 kbit/s link made results of
/// 220 to 680 kbit/s (360 to 390 over 200 ms). Longer, a cluster faster than the link holds
/// a queue long enough for the delay to cut the estimate: at 200 ms, a subscriber whose one
/// layer took three quarters of its link was cut below it by its own probes, and paused.
pub const REQUESTED_DURATION: Duration = Duration::from_millis(150);
/// A probe asked for goes no higher than this multiple of the estimate: one far beyond what
/// the link carries builds a queue for all of its length, which the delay answers with a
/// cut of the estimate.
const REQUESTED_STEP: f64 = 1.5;
/// Between probes the controller starts on its own or on request; doubled after each probe
/// that found nothing above the estimate…
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// …up to this. A probe beyond what the path carries builds a short queue, which the delay
/// detector may answer with a cut: probing a full link every second would keep its estimate
/// low, while once every few seconds still finds new capacity within the 10 s a user notices.
pub const MAX_INTERVAL_AFTER_FAILURES: Duration = Duration::from_secs(4);
/// A result counts as success when it reaches this share of the probe's rate…
const SUCCESS: f64 = 0.7;
/// …and as having found what it looked for (the next probe is not put off) at this share.
const FOUND: f64 = 0.8;
/// A cluster whose packets were sent or received over more than this is no measurement.
const MAX_INTERVAL: Duration = Duration::from_secs(1);
/// Results of a cluster are awaited this long.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(2);
/// The receive rate below this share of the send rate means the path was saturated.
const SATURATED: f64 = 0.9;
/// After a drop below this share of the estimate before it…
const DROP: f64 = 0.66;
/// …within this long…
const DROP_WINDOW: Duration = Duration::from_secs(5);
/// …probe at this share of the rate before it.
const AFTER_DROP: f64 = 0.85;

/// Packets the caller is to send as one probe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeCluster {
    /// Its id, passed with each of its packets to [`super::BandwidthEstimator::handle_sent`].
    pub id: u32,
    /// The rate to send it at, bit/s.
    pub bitrate: f64,
    /// Bytes to send in all.
    pub bytes: usize,
    /// Packets to send at least.
    pub packets: u32,
    /// How long it lasts at its rate.
    pub duration: Duration,
}

impl ProbeCluster {
    fn new(id: u32, bitrate: f64, duration: Duration) -> Self {
        let bytes = (bitrate * duration.as_secs_f64() / 8.0).ceil() as usize;
        ProbeCluster {
            id,
            bitrate,
            bytes: bytes.max(MIN_PACKETS as usize * 300),
            packets: MIN_PACKETS,
            duration,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Measured {
    cluster: ProbeCluster,
    packets: u32,
    bytes: usize,
    first_sent: Option<Instant>,
    last_sent: Option<Instant>,
    last_sent_size: usize,
    first_arrival: i64,
    last_arrival: i64,
    first_arrival_size: usize,
    done: bool,
}

/// Turns probe packets' feedback into a rate per cluster.
#[derive(Debug, Default)]
pub struct ProbeEstimator {
    clusters: VecDeque<Measured>,
}

impl ProbeEstimator {
    /// A cluster is being sent.
    pub fn handle_cluster(&mut self, cluster: ProbeCluster) {
        if self.clusters.len() >= 8 {
            self.clusters.pop_front();
        }
        self.clusters.push_back(Measured {
            cluster,
            packets: 0,
            bytes: 0,
            first_sent: None,
            last_sent: None,
            last_sent_size: 0,
            first_arrival: i64::MAX,
            last_arrival: i64::MIN,
            first_arrival_size: 0,
            done: false,
        });
    }

    /// A packet's feedback. Once enough of its cluster has arrived (once per cluster): the
    /// cluster, with Some of the rate measured, or None when the arrivals give no valid
    /// measure.
    pub fn handle_result(&mut self, r: &PacketResult) -> Option<(ProbeCluster, Option<f64>)> {
        let id = r.probe?;
        let arrival = r.arrival_us?;
        let m = self.clusters.iter_mut().find(|m| m.cluster.id == id)?;
        if m.done {
            return None;
        }
        m.packets += 1;
        m.bytes += r.size;
        if m.first_sent.is_none_or(|at| r.sent_at < at) {
            m.first_sent = Some(r.sent_at);
        }
        if m.last_sent.is_none_or(|at| r.sent_at >= at) {
            m.last_sent = Some(r.sent_at);
            m.last_sent_size = r.size;
        }
        if arrival < m.first_arrival {
            m.first_arrival = arrival;
            m.first_arrival_size = r.size;
        }
        m.last_arrival = m.last_arrival.max(arrival);
        let enough = m.packets as f64 >= 0.8 * m.cluster.packets as f64
            && m.bytes as f64 >= 0.8 * m.cluster.bytes as f64;
        if !enough {
            return None;
        }
        m.done = true;
        let cluster = m.cluster;
        let (Some(first_sent), Some(last_sent)) = (m.first_sent, m.last_sent) else {
            return Some((cluster, None));
        };
        let send_interval = last_sent.saturating_duration_since(first_sent);
        let receive_us = m.last_arrival - m.first_arrival;
        if send_interval.is_zero()
            || send_interval > MAX_INTERVAL
            || receive_us <= 0
            || receive_us > MAX_INTERVAL.as_micros() as i64
        {
            return Some((cluster, None));
        }
        // The last packet sent and the first received delimit the intervals: their own bytes
        // were sent after / received before the measured span.
        let send_rate = (m.bytes - m.last_sent_size) as f64 * 8.0 / send_interval.as_secs_f64();
        let receive_rate = (m.bytes - m.first_arrival_size) as f64 * 8.0 * 1e6 / receive_us as f64;
        if receive_rate > 2.0 * send_rate {
            // Arrived faster than sent: a burst released by a queue, no measure.
            return Some((cluster, None));
        }
        let rate = send_rate.min(receive_rate);
        Some((
            cluster,
            Some(if receive_rate < SATURATED * send_rate {
                0.95 * receive_rate
            } else {
                rate
            }),
        ))
    }
}

/// When to probe, and at what rate.
#[derive(Debug)]
pub struct ProbeController {
    max: f64,
    /// What probes may ask for now: `max`, or less where the sender could use no more.
    limit: f64,
    next_id: u32,
    pending: VecDeque<ProbeCluster>,
    /// Started the initial probes.
    started: bool,
    /// The rate of the last probe sent while probing exponentially, awaiting its result.
    exponential: Option<(f64, Instant)>,
    last_probe: Option<Instant>,
    /// The highest estimate lately, and when the estimate fell far below it.
    before_drop: Option<f64>,
    dropped_at: Option<Instant>,
    last_estimate: f64,
    /// Probes in a row that found nothing above the estimate.
    failures: u32,
}

impl ProbeController {
    /// Probes never ask for more than `max` bit/s.
    pub fn new(max: f64) -> Self {
        ProbeController {
            max,
            limit: max,
            next_id: 1,
            pending: VecDeque::new(),
            started: false,
            exponential: None,
            last_probe: None,
            before_drop: None,
            dropped_at: None,
            last_estimate: 0.0,
            failures: 0,
        }
    }

    fn push(&mut self, now: Instant, bitrate: f64, duration: Duration) {
        let cluster = ProbeCluster::new(self.next_id, bitrate.min(self.limit), duration);
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.pending.push_back(cluster);
        self.last_probe = Some(now);
    }

    /// The estimate changed (or was confirmed) at `now`; `overusing` when the delay says a
    /// queue is growing.
    pub fn handle_estimate(&mut self, now: Instant, estimate: f64, overusing: bool) {
        if !self.started {
            self.started = true;
            self.push(now, 3.0 * estimate, MIN_DURATION);
            self.push(now, 6.0 * estimate, MIN_DURATION);
            self.exponential = Some((6.0 * estimate, now));
        } else if let Some((target, at)) = self.exponential {
            if estimate >= SUCCESS * target && !overusing && estimate < self.limit {
                self.push(now, 2.0 * estimate, MIN_DURATION);
                self.exponential = Some((2.0 * estimate, now));
            } else if now.saturating_duration_since(at) > CLUSTER_TIMEOUT || overusing {
                self.exponential = None;
            }
        }
        // A large drop: remember the rate before it, and probe back toward it once the queue
        // it left behind has drained, for a while after the drop (the low estimates after
        // it are not drops again: each once restarted the window, and a subscriber held on
        // a 400 kbit/s link was probed at 85% of the starting guess for good).
        if self
            .dropped_at
            .is_some_and(|at| now.saturating_duration_since(at) >= DROP_WINDOW)
        {
            self.before_drop = None;
            self.dropped_at = None;
        }
        let high = self.before_drop.unwrap_or(0.0).max(self.last_estimate);
        if estimate < DROP * high {
            if self.before_drop.is_none() {
                self.dropped_at = Some(now);
            }
            self.before_drop = Some(high);
        } else if estimate >= high {
            self.before_drop = None;
            self.dropped_at = None;
        }
        self.last_estimate = estimate;
    }

    /// A probe at `probed` bit/s measured `rate` while the estimate was `estimate`: it found
    /// the room it looked for, or the next one waits longer. (Above the estimate is not
    /// enough: on a 400 kbit/s link every probe for a 450 kbit/s layer measured more than an
    /// estimate the probe's own queue had cut, and the link was probed every second.)
    pub fn handle_result(&mut self, probed: f64, rate: Option<f64>, estimate: f64) {
        if rate.is_some_and(|r| r > 1.1 * estimate && r >= FOUND * probed) {
            self.failures = 0;
        } else {
            self.failures = (self.failures + 1).min(8);
        }
    }

    /// How long after the last probe a requested one may start.
    fn interval(&self) -> Duration {
        (MIN_INTERVAL * 2u32.pow(self.failures)).min(MAX_INTERVAL_AFTER_FAILURES)
    }

    /// Probe toward `target` bit/s (a better layer), from an estimate of `estimate`: at
    /// `target`, but not beyond twice the estimate, and not within [`MIN_INTERVAL`] of the
    /// last probe (longer after probes that found nothing).
    pub fn request(&mut self, now: Instant, estimate: f64, target: f64) {
        if target <= estimate || !self.pending.is_empty() {
            return;
        }
        if self
            .last_probe
            .is_some_and(|at| now.saturating_duration_since(at) < self.interval())
        {
            return;
        }
        let mut rate = target.min(REQUESTED_STEP * estimate);
        if let (Some(before), Some(at)) = (self.before_drop, self.dropped_at) {
            if now.saturating_duration_since(at) < DROP_WINDOW {
                rate = rate
                    .max(AFTER_DROP * before)
                    .min(target.max(AFTER_DROP * before));
            }
        }
        self.push(now, rate, REQUESTED_DURATION);
    }

    /// Probe no higher than `limit` bit/s (within the `max` given at the start): twice what
    /// the subscriber's layers could use at best. Probing past that finds room nothing would
    /// fill, and a burst at many megabits a second costs a real link, loses packets on a
    /// lossy one, and makes a jitter buffer wait.
    pub fn set_limit(&mut self, limit: f64) {
        self.limit = limit.min(self.max);
    }

    /// The next cluster to send, if any (at the limit now in force, where one was asked for
    /// before it).
    pub fn poll(&mut self, _now: Instant) -> Option<ProbeCluster> {
        let c = self.pending.pop_front()?;
        Some(if c.bitrate > self.limit {
            ProbeCluster::new(c.id, self.limit, c.duration)
        } else {
            c
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: u32, sent_at: Instant, arrival_us: i64, size: usize) -> PacketResult {
        PacketResult {
            sequence: 0,
            sent_at,
            size,
            arrival_us: Some(arrival_us),
            probe: Some(id),
        }
    }

    #[test]
    fn probes_stay_under_the_limit_even_when_asked_for_before_it() {
        let t0 = Instant::now();
        let mut c = ProbeController::new(20_000_000.0);
        // The first estimate starts the initial probes, at 3 and 6 Mbit/s.
        c.handle_estimate(t0, 1_000_000.0, false);
        c.set_limit(2_000_000.0);
        let first = c.poll(t0).unwrap();
        let second = c.poll(t0).unwrap();
        assert_eq!((first.bitrate, second.bitrate), (2_000_000.0, 2_000_000.0));
        assert!(first.bytes < ProbeCluster::new(0, 3_000_000.0, MIN_DURATION).bytes);
        // Later requests too; and the limit never exceeds the maximum.
        c.request(t0 + MIN_INTERVAL, 2_000_000.0, 5_000_000.0);
        assert_eq!(c.poll(t0).unwrap().bitrate, 2_000_000.0);
        c.set_limit(50_000_000.0);
        assert_eq!(c.limit, 20_000_000.0);
    }

    #[test]
    fn a_probe_through_a_narrower_path_measures_the_path() {
        let t0 = Instant::now();
        let mut e = ProbeEstimator::default();
        let cluster = ProbeCluster::new(7, 4_000_000.0, MIN_DURATION);
        e.handle_cluster(cluster);
        // 10 packets of 1000 bytes sent every 2 ms (4 Mbit/s), arriving every 4 ms (2 Mbit/s).
        let mut rate = None;
        for i in 0..10 {
            let sent = t0 + Duration::from_millis(2 * i);
            if let Some((c, r)) = e.handle_result(&result(7, sent, 50_000 + 4_000 * i as i64, 1000))
            {
                assert_eq!(c, cluster);
                rate = r;
                break;
            }
        }
        let rate = rate.expect("enough arrived");
        // Saturated: 95% of the receive rate.
        assert!((rate - 0.95 * 2_000_000.0).abs() < 20_000.0, "{rate}");
        // Other clusters' and non-probe packets change nothing.
        assert_eq!(e.handle_result(&result(8, t0, 0, 1000)), None);
    }

    #[test]
    fn a_probe_the_path_carries_measures_the_probe() {
        let t0 = Instant::now();
        let mut e = ProbeEstimator::default();
        e.handle_cluster(ProbeCluster::new(1, 1_000_000.0, MIN_DURATION));
        let mut rate = None;
        for i in 0..10 {
            let sent = t0 + Duration::from_millis(8 * i);
            rate = rate.or(e
                .handle_result(&result(1, sent, 8_000 * i as i64 + 30_000, 1000))
                .and_then(|(_, r)| r));
        }
        let rate = rate.expect("measured");
        assert!((rate - 1_000_000.0).abs() < 10_000.0, "{rate}");
    }

    #[test]
    fn initial_exponential_probing_then_on_request_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut c = ProbeController::new(10_000_000.0);
        c.handle_estimate(t0, 500_000.0, false);
        let first: Vec<f64> = std::iter::from_fn(|| c.poll(t0))
            .map(|p| p.bitrate)
            .collect();
        assert_eq!(first, [1_500_000.0, 3_000_000.0]);
        // The probes succeeded: up to 2.5 Mbit/s, so probe on at twice that.
        c.handle_estimate(t0 + Duration::from_millis(300), 2_500_000.0, false);
        assert_eq!(c.poll(t0).map(|p| p.bitrate), Some(5_000_000.0));
        // That one fell short: exponential probing ends.
        c.handle_estimate(t0 + Duration::from_millis(600), 2_600_000.0, false);
        assert_eq!(c.poll(t0), None);
        // A request within a second of the last probe waits.
        let t1 = t0 + Duration::from_millis(800);
        c.request(t1, 2_600_000.0, 4_000_000.0);
        assert_eq!(c.poll(t1), None);
        let t2 = t0 + Duration::from_millis(1400);
        c.request(t2, 2_600_000.0, 3_500_000.0);
        let asked = c.poll(t2).expect("a probe");
        assert_eq!(asked.bitrate, 3_500_000.0);
        assert_eq!(asked.duration, REQUESTED_DURATION);
        // Never more than half as much again as the estimate, never when the target is
        // below it.
        let t3 = t2 + MIN_INTERVAL;
        c.request(t3, 1_000_000.0, 4_000_000.0);
        assert_eq!(c.poll(t3).map(|p| p.bitrate), Some(1_500_000.0));
        let t4 = t3 + MIN_INTERVAL;
        c.request(t4, 1_000_000.0, 900_000.0);
        assert_eq!(c.poll(t4), None);
    }

    /// A controller whose estimate has been 3 Mbit/s for 3 s, its first probes sent.
    fn settled_at_3_mbit() -> (Instant, ProbeController) {
        let t0 = Instant::now();
        let mut c = ProbeController::new(10_000_000.0);
        c.handle_estimate(t0, 3_000_000.0, false);
        while c.poll(t0).is_some() {}
        c.handle_estimate(t0 + Duration::from_secs(3), 3_000_000.0, false);
        while c.poll(t0).is_some() {}
        (t0, c)
    }

    #[test]
    fn after_a_large_drop_the_probe_aims_back_toward_the_rate_before_it() {
        let (t0, mut c) = settled_at_3_mbit();
        // Down to 1 Mbit/s (a third): a request within 5 s probes at 85% of 3 Mbit/s.
        let t1 = t0 + Duration::from_secs(5);
        c.handle_estimate(t1, 1_000_000.0, true);
        let t2 = t1 + Duration::from_secs(2);
        c.request(t2, 1_000_000.0, 4_000_000.0);
        assert_eq!(c.poll(t2).map(|p| p.bitrate), Some(0.85 * 3_000_000.0));
    }

    #[test]
    fn the_window_after_a_drop_runs_from_the_drop() {
        let (t0, mut c) = settled_at_3_mbit();
        // Down to 1 Mbit/s, where it stays, updated every 100 ms: 5 s after the drop a request
        // probes at what it asks for, not back toward 3 Mbit/s (every low estimate once
        // counted as the drop again, and a subscriber held on a 400 kbit/s link was probed at
        // 850 kbit/s, the starting guess's 85%, for good).
        let t1 = t0 + Duration::from_secs(5);
        for i in 0..60u32 {
            let estimate = if i % 2 == 0 { 1_000_000.0 } else { 950_000.0 };
            c.handle_estimate(t1 + Duration::from_millis(100) * i, estimate, false);
        }
        let t2 = t1 + DROP_WINDOW + Duration::from_millis(100);
        c.request(t2, 1_000_000.0, 1_400_000.0);
        assert_eq!(c.poll(t2).map(|p| p.bitrate), Some(1_400_000.0));
    }
}
