//! How fast one participant may send data-channel messages: a token bucket in bytes.
//!
//! The bucket may go into debt by one message (a message's size is known only once it is
//! read), and nothing more is taken in until the debt is paid back. A reliable channel's
//! messages then stay unread in the participant's SCTP receive buffer, which slows its
//! sender down; a lossy channel's are dropped, as a lossy channel may drop anything.

use std::time::{Duration, Instant};

/// A participant's allowance.
#[derive(Debug, Clone)]
pub struct Limiter {
    /// Bytes per second.
    rate: f64,
    /// The most that may be sent at once after a quiet spell.
    burst: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl Limiter {
    /// `rate` bytes a second, `burst` bytes at once; starts full.
    pub fn new(rate: u64, burst: u64) -> Self {
        Limiter {
            rate: rate.max(1) as f64,
            burst: burst.max(1) as f64,
            tokens: burst.max(1) as f64,
            at: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(at) = self.at {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.at = Some(now);
    }

    /// Whether a message may be taken in at `now`.
    pub fn allows(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens > 0.0
    }

    /// A message of `bytes` was taken in.
    pub fn take(&mut self, now: Instant, bytes: usize) {
        self.refill(now);
        self.tokens -= bytes as f64;
    }

    /// When the next message may be taken in (now, if one may).
    pub fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens > 0.0 {
            return now;
        }
        // Just past the moment the debt is paid.
        now + Duration::from_secs_f64(-self.tokens / self.rate) + Duration::from_millis(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut l = Limiter::new(1000, 4000);
        // The burst goes at once, one message into debt.
        for _ in 0..3 {
            assert!(l.allows(t0));
            l.take(t0, 1500);
        }
        assert!(!l.allows(t0));
        // 4500 taken of 4000: 500 owed, paid back in 0.5 s.
        let ready = l.ready_at(t0);
        assert!(ready > t0 + Duration::from_millis(500) && ready < t0 + Duration::from_millis(510));
        assert!(!l.allows(t0 + Duration::from_millis(490)));
        assert!(l.allows(ready));
        // Over a minute, about the rate.
        let mut t = ready;
        let mut sent = 0;
        while t < ready + Duration::from_secs(60) {
            if l.allows(t) {
                l.take(t, 100);
                sent += 100;
            }
            t += Duration::from_millis(10);
        }
        assert!((59_000..=61_000).contains(&sent), "{sent}");
        // A quiet spell refills only up to the burst.
        assert!(l.allows(t + Duration::from_secs(3600)));
        l.take(t + Duration::from_secs(3600), 4000);
        assert!(!l.allows(t + Duration::from_secs(3600)));
    }
}
