//! A pacer: spreads what the relay sends one subscriber over time at a multiple of its
//! bandwidth estimate, instead of handing the kernel a keyframe's 40 packets at once.
//!
//! A burst larger than the path's queue is lost at the bottleneck, and even when it fits it
//! shows up at the receiver as a delay spike that the subscriber's estimator (and the relay's
//! own) takes for congestion. Browsers pace at 2.5 times their estimate; so does this.
//!
//! A leaky bucket: sending costs the packet's size, time refills the budget at the pacing
//! rate, up to [`MAX_BURST`] worth (at most [`MAX_BURST_BYTES`]), as libwebrtc's pacer allows
//! 40 ms bursts: a delta frame leaves at once, a keyframe larger than that is spread. A
//! tighter budget (5 ms was tried) held half of every delta frame's packets for a timer, each
//! then sent alone instead of in one segmented send with the rest: at fan-out 100, 107,000
//! packets waited in a 25 s run against 18,000 with 40 ms. Packets wait in one queue per [`Priority`]; audio is never
//! held (it is small and late audio is useless), but counts against the budget. A queue that
//! would take longer than [`MAX_QUEUE_TIME`] to drain at the pacing rate is drained faster:
//! the pacer never adds more than that to a packet's delay.
//!
//! Generic over what it holds (the relay's pooled buffers with their destination); sans-IO:
//! `now` comes in, [`Pacer::poll_timeout`] says when the next packet may leave.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The pacing rate's multiple of the estimate.
pub const PACING_FACTOR: f64 = 2.5;

/// The budget never holds more than this much sending time: the largest burst the pacer lets
/// through at once.
pub const MAX_BURST: Duration = Duration::from_millis(40);

/// Nor more than this many bytes, whatever the rate (a burst the socket's buffer and a
/// bottleneck's queue can take).
pub const MAX_BURST_BYTES: f64 = 63_000.0;

/// A packet never waits longer than this in the pacer.
pub const MAX_QUEUE_TIME: Duration = Duration::from_millis(500);

/// A budget this close to zero counts as refilled (floating-point rounding of the refill).
const BUDGET_SLACK: f64 = 0.01;

/// Which queue a packet waits in, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Never held.
    Audio = 0,
    /// Repairs: a receiver is waiting for them.
    Retransmission = 1,
    /// Video.
    Video = 2,
}

#[derive(Debug)]
struct Queued<T> {
    at: Instant,
    size: usize,
    item: T,
}

/// The pacer of one subscriber.
#[derive(Debug)]
pub struct Pacer<T> {
    queues: [VecDeque<Queued<T>>; 3],
    queued_bytes: usize,
    /// Bits per second.
    rate: f64,
    /// Bytes that may go out now (negative: owed).
    budget: f64,
    last_refill: Option<Instant>,
}

impl<T> Pacer<T> {
    /// A pacer sending at `rate` bit/s.
    pub fn new(rate: f64) -> Self {
        Pacer {
            queues: Default::default(),
            queued_bytes: 0,
            rate: rate.max(1.0),
            budget: 0.0,
            last_refill: None,
        }
    }

    /// Pace at `rate` bit/s from now on.
    pub fn set_rate(&mut self, rate: f64) {
        self.rate = rate.max(1.0);
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queues.iter().all(VecDeque::is_empty)
    }

    /// How long the oldest waiting packet has waited at `now`.
    pub fn queue_delay(&self, now: Instant) -> Duration {
        self.queues
            .iter()
            .filter_map(|q| q.front())
            .map(|p| now.saturating_duration_since(p.at))
            .max()
            .unwrap_or_default()
    }

    /// The rate the queue drains at `now`: the pacing rate, or faster when the oldest packet
    /// would otherwise wait more than [`MAX_QUEUE_TIME`] in all.
    fn effective_rate(&self, now: Instant) -> f64 {
        if self.queued_bytes == 0 {
            return self.rate;
        }
        let left = MAX_QUEUE_TIME
            .saturating_sub(self.queue_delay(now))
            .max(Duration::from_millis(1));
        let drain = self.queued_bytes as f64 * 8.0 / left.as_secs_f64();
        self.rate.max(drain)
    }

    fn refill(&mut self, now: Instant) {
        if self.last_refill == Some(now) {
            // Drained in a loop at one instant: nothing to add.
            return;
        }
        let rate_bytes = self.effective_rate(now) / 8.0;
        let cap = (rate_bytes * MAX_BURST.as_secs_f64()).min(MAX_BURST_BYTES);
        // A new pacer has been idle forever: a burst's worth may go at once.
        let elapsed = self
            .last_refill
            .map_or(MAX_BURST, |at| now.saturating_duration_since(at));
        self.last_refill = Some(now);
        self.budget = (self.budget + rate_bytes * elapsed.as_secs_f64()).min(cap);
    }

    /// Whether a packet of `size` bytes at `priority` may leave at `now` without waiting:
    /// nothing waits before it and the budget allows (audio always). If so, it is counted as
    /// sent. The common case, a packet of a stream below the pacing rate, then costs no
    /// queueing.
    pub fn pass(&mut self, now: Instant, priority: Priority, size: usize) -> bool {
        if !self.is_empty() {
            return false;
        }
        self.refill(now);
        if priority != Priority::Audio && self.budget <= -BUDGET_SLACK {
            return false;
        }
        self.budget -= size as f64;
        true
    }

    /// A packet of `size` bytes to send at `now` or later.
    pub fn enqueue(&mut self, now: Instant, priority: Priority, size: usize, item: T) {
        self.queued_bytes += size;
        self.queues[priority as usize].push_back(Queued {
            at: now,
            size,
            item,
        });
    }

    /// The next packet that may leave at `now`, with how long it waited: audio at once, the
    /// rest in priority order while the budget allows. Call until None.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(T, Duration)> {
        self.refill(now);
        let queue = if !self.queues[Priority::Audio as usize].is_empty() {
            Priority::Audio as usize
        } else if self.budget > -BUDGET_SLACK {
            self.queues.iter().position(|q| !q.is_empty())?
        } else {
            return None;
        };
        let p = self.queues[queue].pop_front()?;
        self.queued_bytes -= p.size;
        self.budget -= p.size as f64;
        Some((p.item, now.saturating_duration_since(p.at)))
    }

    /// Take everything waiting (its owner went away).
    pub fn clear(&mut self) -> impl Iterator<Item = T> + '_ {
        self.queued_bytes = 0;
        self.queues
            .iter_mut()
            .flat_map(|q| q.drain(..).map(|p| p.item))
    }

    /// When a waiting packet may leave, if one waits.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_empty() {
            return None;
        }
        let last = self.last_refill?;
        if !self.queues[Priority::Audio as usize].is_empty() || self.budget > -BUDGET_SLACK {
            return Some(last);
        }
        // Rounded up to whole microseconds, so that the budget has refilled when woken.
        let wait_us = (-self.budget * 8.0 / self.effective_rate(last) * 1e6).ceil();
        Some(last + Duration::from_micros(wait_us as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drive the pacer as the I/O shell does: wake at `poll_timeout`, drain. Returns when each
    /// item left.
    fn drain(p: &mut Pacer<u32>, t0: Instant, until: Instant) -> Vec<(u32, Instant)> {
        let mut sent = Vec::new();
        let mut now = t0;
        loop {
            while let Some((item, waited)) = p.poll_transmit(now) {
                assert!(waited <= now - t0, "{waited:?}");
                sent.push((item, now));
            }
            match p.poll_timeout() {
                Some(at) if at <= until => now = at.max(now),
                _ => return sent,
            }
        }
    }

    #[test]
    fn a_keyframe_burst_is_spread_at_the_pacing_rate() {
        let t0 = Instant::now();
        // 2.5 x 1 Mbit/s.
        let mut p = Pacer::new(PACING_FACTOR * 1_000_000.0);
        for i in 0..40 {
            p.enqueue(t0, Priority::Video, 1200, i);
        }
        let sent = drain(&mut p, t0, t0 + Duration::from_secs(1));
        assert_eq!(sent.len(), 40);
        // A new pacer lets a 40 ms burst go at once (12,500 bytes: ten packets, and the one
        // that overdraws it); the last leaves once the 46,800 bytes before it, less that
        // burst, are paid for at 312,500 bytes/s: about 110 ms. In order.
        let last = sent.last().unwrap().1 - t0;
        assert!(
            (Duration::from_millis(105)..Duration::from_millis(115)).contains(&last),
            "{last:?}"
        );
        assert!(sent.windows(2).all(|w| w[0].0 < w[1].0));
        let mut per_instant = std::collections::BTreeMap::new();
        for (_, at) in &sent {
            *per_instant.entry(*at).or_insert(0) += 1;
        }
        assert_eq!(per_instant.get(&t0), Some(&11));
        // After it, one packet at a time as the budget refills.
        assert!(
            per_instant
                .range(t0 + Duration::from_nanos(1)..)
                .all(|(_, n)| *n == 1),
            "{per_instant:?}"
        );
    }

    #[test]
    fn audio_is_never_held_and_repairs_go_before_video() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1_000_000.0);
        for i in 0..10 {
            p.enqueue(t0, Priority::Video, 1200, i);
        }
        // The starting burst (5,000 bytes) is spent on the first five video packets...
        for i in 0..5 {
            assert_eq!(p.poll_transmit(t0), Some((i, Duration::ZERO)));
        }
        assert_eq!(p.poll_transmit(t0), None);
        // ...but audio leaves at once, and a repair goes before the waiting video.
        p.enqueue(t0, Priority::Audio, 100, 100);
        p.enqueue(t0, Priority::Retransmission, 1200, 200);
        assert_eq!(p.poll_transmit(t0), Some((100, Duration::ZERO)));
        assert_eq!(p.poll_transmit(t0), None);
        let sent = drain(&mut p, t0, t0 + Duration::from_secs(1));
        let order: Vec<u32> = sent.iter().map(|s| s.0).collect();
        assert_eq!(order, [200, 5, 6, 7, 8, 9]);
        // The last video packet leaves once the 12.1 kB sent before it (audio included), less
        // the starting burst, are paid for at 125 kB/s: about 57 ms.
        let last = sent.last().unwrap().1 - t0;
        assert!(
            (Duration::from_millis(55)..Duration::from_millis(60)).contains(&last),
            "{last:?}"
        );
    }

    #[test]
    fn a_packet_passes_straight_through_only_when_nothing_waits_and_the_budget_allows() {
        let t0 = Instant::now();
        let mut p: Pacer<u32> = Pacer::new(1_000_000.0);
        // The 5,000-byte starting burst: four packets and the one that overdraws it.
        for _ in 0..5 {
            assert!(p.pass(t0, Priority::Video, 1200));
        }
        assert!(!p.pass(t0, Priority::Video, 1200));
        // Audio is never held.
        assert!(p.pass(t0, Priority::Audio, 100));
        // Once something waits, everything queues behind it (audio leaves from the queue).
        p.enqueue(t0, Priority::Video, 1200, 1);
        let later = t0 + Duration::from_secs(1);
        assert!(!p.pass(later, Priority::Video, 1200));
        assert_eq!(p.poll_transmit(later), Some((1, Duration::from_secs(1))));
        assert!(p.pass(later, Priority::Video, 1200));
    }

    #[test]
    fn a_long_queue_drains_within_the_limit() {
        let t0 = Instant::now();
        // 100 kbit/s but 500 packets queued (4.8 Mbit): at the pacing rate 48 s.
        let mut p = Pacer::new(100_000.0);
        for i in 0..500 {
            p.enqueue(t0, Priority::Video, 1200, i);
        }
        let sent = drain(&mut p, t0, t0 + Duration::from_secs(10));
        assert_eq!(sent.len(), 500);
        let last = sent.last().unwrap().1 - t0;
        assert!(
            last <= MAX_QUEUE_TIME + Duration::from_millis(20),
            "{last:?}"
        );
        assert_eq!(p.poll_timeout(), None);
        assert!(p.is_empty());
    }

    #[test]
    fn an_idle_pacer_does_not_save_up_more_than_a_burst() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1_000_000.0);
        assert_eq!(p.poll_transmit(t0), None);
        // A second idle, then 10 packets: only a burst's worth (40 ms: 5,000 bytes, four
        // packets and the one that overdraws it) leaves at once.
        let t1 = t0 + Duration::from_secs(1);
        for i in 0..10 {
            p.enqueue(t1, Priority::Video, 1200, i);
        }
        let mut now_sent = 0;
        while p.poll_transmit(t1).is_some() {
            now_sent += 1;
        }
        assert_eq!(now_sent, 5);
        assert_eq!(
            p.queue_delay(t1 + Duration::from_millis(3)),
            Duration::from_millis(3)
        );
        assert_eq!(p.len(), 5);
    }
}
