//! Trace tests: the estimator against a bottleneck link in virtual time.
//!
//! A sender paces 1200-byte packets at its estimate (capped by what it wants to send) and
//! sends the probes the estimator asks for; the link serialises them at its capacity behind
//! a tail-drop queue, then delays them; the receiver is the relay's own transport-wide
//! feedback writer, whose messages travel back and are parsed with the relay's reader. So
//! these tests run the whole feedback loop except the sockets.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::probe_sender::ProbeSender;
use super::{BandwidthEstimator, BweConfig};
use crate::engine::rtcp::twcc::{parse, PacketStatus};
use crate::engine::twcc::TwccReceiver;

const PACKET: usize = 1200;
const STEP: Duration = Duration::from_millis(1);

/// A bottleneck: `capacity` bit/s through a queue of at most `queue_limit`, then `delay`.
struct Link {
    capacity: f64,
    delay: Duration,
    queue_limit: Duration,
    busy_until: Option<Instant>,
    sent: u64,
    dropped: u64,
    /// Share of packets lost at random before the queue (a lossy radio link, a policer).
    random_loss: f64,
    rng: u64,
}

impl Link {
    /// When a packet of `size` bytes entering at `now` arrives; None if the queue drops it.
    fn send(&mut self, now: Instant, size: usize) -> Option<Instant> {
        self.sent += 1;
        // xorshift: the same losses every run.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        if (self.rng % 10_000) as f64 / 10_000.0 < self.random_loss {
            self.dropped += 1;
            return None;
        }
        let start = self.busy_until.map_or(now, |b| b.max(now));
        if start.saturating_duration_since(now) > self.queue_limit {
            self.dropped += 1;
            return None;
        }
        let done = start + Duration::from_secs_f64(size as f64 * 8.0 / self.capacity);
        self.busy_until = Some(done);
        Some(done + self.delay)
    }
}

/// What the run recorded: (seconds since start, estimate) every 100 ms, and drops per second.
struct Trace {
    estimates: Vec<(f64, f64)>,
    drops: Vec<(u64, u64)>,
}

impl Trace {
    fn at(&self, secs: f64) -> f64 {
        self.estimates
            .iter()
            .find(|(t, _)| *t >= secs)
            .map(|e| e.1)
            .unwrap_or(0.0)
    }

    fn max_between(&self, from: f64, to: f64) -> f64 {
        self.estimates
            .iter()
            .filter(|(t, _)| (from..to).contains(t))
            .map(|e| e.1)
            .fold(0.0, f64::max)
    }

    fn mean_between(&self, from: f64, to: f64) -> f64 {
        let v: Vec<f64> = self
            .estimates
            .iter()
            .filter(|(t, _)| (from..to).contains(t))
            .map(|e| e.1)
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    }

    /// The estimates every `step` samples (100 ms each), for failure messages.
    fn report(&self, step: usize) -> String {
        let parts: Vec<String> = self
            .estimates
            .iter()
            .step_by(step)
            .map(|(t, e)| format!("{t:.1}s {:.2}", mbps(*e)))
            .collect();
        parts.join(", ")
    }

    /// Packets sent and dropped from second `from` to `to`.
    fn loss_between(&self, from: usize, to: usize) -> f64 {
        let (sent, dropped) = self.drops[from..to]
            .iter()
            .fold((0, 0), |(s, d), (ss, dd)| (s + ss, d + dd));
        dropped as f64 / sent.max(1) as f64
    }
}

/// Run `seconds` of a sender that wants `demand` bit/s over a link whose capacity is
/// `capacity(second)`, one-way delay `delay` both ways.
fn run(seconds: u64, demand: f64, delay: Duration, capacity: impl Fn(f64) -> f64) -> Trace {
    run_lossy(seconds, demand, delay, 0.0, capacity)
}

/// [`run`] with `random_loss` of the packets lost at random.
fn run_lossy(
    seconds: u64,
    demand: f64,
    delay: Duration,
    random_loss: f64,
    capacity: impl Fn(f64) -> f64,
) -> Trace {
    let queue = Duration::from_millis(500);
    run_link(seconds, demand, delay, queue, random_loss, capacity)
}

/// [`run_lossy`] behind a queue of at most `queue`.
fn run_link(
    seconds: u64,
    demand: f64,
    delay: Duration,
    queue: Duration,
    random_loss: f64,
    capacity: impl Fn(f64) -> f64,
) -> Trace {
    let t0 = Instant::now();
    let mut bwe = BandwidthEstimator::new(BweConfig::default());
    bwe.set_rtt(2 * delay);
    let mut link = Link {
        capacity: capacity(0.0),
        delay,
        queue_limit: queue,
        busy_until: None,
        sent: 0,
        dropped: 0,
        random_loss,
        rng: 0x9e37_79b9_7f4a_7c15,
    };
    let mut receiver = TwccReceiver::new();
    // (arrival, sequence) in flight; feedback messages in flight back.
    let mut in_flight: VecDeque<(Instant, u16)> = VecDeque::new();
    let mut feedback: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut statuses: Vec<PacketStatus> = Vec::new();
    let mut results = Vec::new();
    let mut next_media = t0;
    let mut probe: Option<ProbeSender> = None;
    let mut trace = Trace {
        estimates: Vec::new(),
        drops: Vec::new(),
    };
    let mut second = (0u64, 0u64);
    let mut now = t0;
    let end = t0 + Duration::from_secs(seconds);
    let mut buf = Vec::new();
    while now < end {
        let secs = now.duration_since(t0).as_secs_f64();
        link.capacity = capacity(secs);
        // Media, paced at the estimate (what the stream needs at most).
        let rate = bwe.estimate().min(demand);
        while next_media <= now {
            // Media sent while a probe cluster goes out is part of it, as the relay sends it.
            let cluster = probe.as_mut().filter(|p| !p.done()).map(|p| {
                p.handle_sent(PACKET);
                p.cluster()
            });
            let seq = bwe.handle_sent(next_media, PACKET, cluster);
            if let Some(at) = link.send(next_media, PACKET) {
                in_flight.push_back((at, seq));
            }
            next_media += Duration::from_secs_f64(PACKET as f64 * 8.0 / rate);
        }
        // Probes the estimator asks for, filling up to their rate.
        if probe.as_ref().is_none_or(ProbeSender::done) {
            bwe.request_probe(now, demand);
            probe = bwe.poll_probe(now).map(|c| ProbeSender::new(now, c));
        }
        if let Some(p) = probe.as_mut() {
            while p.poll_packet(now) {
                let seq = bwe.handle_sent(now, PACKET, Some(p.cluster()));
                if let Some(at) = link.send(now, PACKET) {
                    in_flight.push_back((at, seq));
                }
                p.handle_sent(PACKET);
            }
        }
        // Arrivals (the link keeps order), and the receiver's feedback every 50 ms.
        while in_flight.front().is_some_and(|(at, _)| *at <= now) {
            let (at, seq) = in_flight.pop_front().expect("checked");
            receiver.handle_packet(at, seq);
        }
        while receiver.poll_feedback(now, 1, 2, &mut buf) {
            feedback.push_back((now + delay, buf.clone()));
        }
        while feedback.front().is_some_and(|(at, _)| *at <= now) {
            let (_, mut message) = feedback.pop_front().expect("checked");
            if message[0] & 0x20 != 0 {
                let pad = usize::from(message[message.len() - 1]);
                message.truncate(message.len() - pad);
            }
            parse(&message, &mut statuses).expect("the relay's own feedback parses");
            bwe.handle_feedback(now, &statuses, &mut results);
        }
        if now.duration_since(t0).as_millis().is_multiple_of(100) {
            trace.estimates.push((secs, bwe.estimate()));
        }
        if now.duration_since(t0).as_millis() % 1000 == 999 {
            trace
                .drops
                .push((link.sent - second.0, link.dropped - second.1));
            second = (link.sent, link.dropped);
        }
        now += STEP;
    }
    trace
}

fn mbps(b: f64) -> f64 {
    b / 1e6
}

/// The trace: capacity steps down, the estimate follows within 2 s without sustained
/// loss; steps back up, the estimate recovers within 10 s.
#[test]
fn capacity_steps_down_then_up() {
    let capacity = |t: f64| {
        if (30.0..60.0).contains(&t) {
            1_000_000.0
        } else {
            2_500_000.0
        }
    };
    let trace = run(90, 4_000_000.0, Duration::from_millis(25), capacity);
    let report = trace.report(10);
    println!("{report}");
    // Up to the link at the start. It wants 4 Mbit/s, so every 4 s a probe of 150 ms asks
    // for half as much again as the estimate, builds a queue, and the estimate is cut to 85%
    // of what was delivered: a sawtooth whose mean stays above three quarters of the link.
    assert!(trace.at(3.0) > 2_000_000.0, "{report}");
    assert!(trace.mean_between(5.0, 30.0) > 1_875_000.0, "{report}");
    assert!(trace.max_between(5.0, 30.0) < 3_000_000.0, "{report}");
    // Down within 2 s of the step, and kept near the new capacity.
    assert!(trace.at(32.0) < 1_100_000.0, "{report}");
    assert!(trace.max_between(32.0, 60.0) < 1_250_000.0, "{report}");
    let mean = trace.mean_between(32.0, 60.0);
    assert!(
        (700_000.0..1_050_000.0).contains(&mean),
        "mean {mean}: {report}"
    );
    // No sustained loss after the step: the queue absorbed the overshoot.
    let loss = trace.loss_between(32, 59);
    assert!(loss < 0.01, "loss {loss}: {report}");
    // Back up within 10 s of the capacity returning (within 2 s here).
    assert!(trace.max_between(60.0, 62.0) > 1_800_000.0, "{report}");
    assert!(trace.mean_between(62.0, 90.0) > 1_875_000.0, "{report}");
    let loss = trace.loss_between(62, 89);
    assert!(loss < 0.01, "loss {loss}: {report}");
}

/// A sender that needs less than the link carries: the estimate stays a little above what it
/// sends (it cannot know more without probing), and a request for more probes the link.
#[test]
fn an_application_limited_sender_learns_the_link_by_probing() {
    let trace = run(20, 3_000_000.0, Duration::from_millis(40), |_| 5_000_000.0);
    let report = trace.report(10);
    assert!(trace.at(8.0) > 2_500_000.0, "{report}");
    assert!(trace.loss_between(2, 19) < 0.005, "{report}");
}

/// Loss without a queue (nothing for the delay detector to see): over 10% cuts the estimate,
/// a little loss does not.
#[test]
fn random_loss_over_ten_percent_cuts_the_estimate_and_a_little_does_not() {
    let heavy = run_lossy(20, 3_000_000.0, Duration::from_millis(20), 0.2, |_| {
        20_000_000.0
    });
    // From where the first probes put it (2.6 Mbit/s, now that the media sent meanwhile is
    // part of each cluster), by a tenth and more a second.
    assert!(
        heavy.at(15.0) < 0.35 * heavy.max_between(0.0, 2.0),
        "at 20% loss: {}",
        heavy.report(5)
    );
    let light = run_lossy(20, 3_000_000.0, Duration::from_millis(20), 0.01, |_| {
        20_000_000.0
    });
    assert!(
        light.at(15.0) > 2_500_000.0,
        "at 1% loss: {}",
        light.at(15.0)
    );
}

/// 5% random loss (a lossy link, as the repair tests emulate) holds the estimate: it is in the
/// band that neither grows nor cuts, and short windows that happen to lose more must not
/// add up to a collapse.
#[test]
fn five_percent_random_loss_holds_the_estimate() {
    for demand in [300_000.0, 1_000_000.0] {
        let t = run_lossy(30, demand, Duration::from_millis(50), 0.05, |_| {
            20_000_000.0
        });
        let low = (10..30)
            .map(|s| t.at(s as f64))
            .fold(f64::INFINITY, f64::min);
        assert!(
            low > 0.6 * demand,
            "sending {demand}: fell to {low}: {}",
            t.report(5)
        );
    }
}

/// A link far below the starting guess (120 kbit/s, a 400 ms queue, the SVC test's link): the
/// queue is full within tens of milliseconds and stays full, so the delay no longer grows and
/// only loss says anything. The link carried what was acknowledged; the estimate gets there
/// in one cut, not by halving the loss off the guess every round trip.
#[test]
fn a_link_far_below_the_starting_guess_is_found_at_the_first_loss_report() {
    let trace = run_link(
        10,
        1_000_000.0,
        Duration::from_millis(20),
        Duration::from_millis(400),
        0.0,
        |_| 120_000.0,
    );
    let report = trace.report(2);
    assert!(trace.at(2.0) < 150_000.0, "{report}");
    // Not below what the link carries for long either.
    assert!(trace.mean_between(3.0, 10.0) > 80_000.0, "{report}");
    // After that only a probe toward the demand loses what the queue cannot hold (a cluster
    // of 15 packets where 5 fit), about one packet in ten of these seconds.
    let loss = trace.loss_between(2, 9);
    assert!(loss < 0.15, "loss {loss} {:?}: {report}", trace.drops);
}
