//! Whether a keyframe sent to a subscriber may still be on its way, so that its request for
//! another one waits for it.
//!
//! A receiver that cannot decode asks for a keyframe, and Chromium asks again every few
//! hundred milliseconds until one decodes. Behind a link far slower than the publisher's, a
//! keyframe takes longer than that to get through: a 10 kB keyframe takes 0.7 s at
//! 120 kbit/s. Each request passed on makes the publisher encode a new keyframe, which is
//! sent behind the last and takes the link from it, and the subscriber, never getting a whole
//! one, asks again (behind 120 kbit/s a publisher encoded 10–11 keyframes before its
//! subscriber decoded its first frame, 7 s in). So a request waits while the keyframe last
//! sent to the subscriber can still arrive: the time its bytes take at the subscriber's
//! estimate, then a round trip for its last packet and one more for a repair of it. A
//! keyframe that does not come by then is asked for again as before.
//!
//! Sans-IO: the fan-out path reports each copy sent, the request path asks with `now`.

use std::time::{Duration, Instant};

/// The longest a request waits, whatever the estimate says: a keyframe lost beyond repair
/// must not keep a subscriber frozen for long.
pub const MAX_WAIT: Duration = Duration::from_secs(2);

/// The keyframe last sent to one subscriber of one feed.
#[derive(Debug, Clone, Default)]
pub struct KeyframeInFlight {
    /// When its first packet was sent, its RTP timestamp (as the publisher sent it) and the
    /// payload bytes of it sent so far.
    sent: Option<(Instant, u32, usize)>,
}

impl KeyframeInFlight {
    /// A copy of `bytes` payload bytes with the publisher's `timestamp` was sent at `now`;
    /// `starts_keyframe` where it begins a keyframe. A keyframe may be begun by more than one
    /// of its packets (H.264's parameter sets and its IDR slices each say so) or be repaired
    /// late: one with the timestamp already counted adds to that keyframe.
    pub fn handle_sent(
        &mut self,
        now: Instant,
        starts_keyframe: bool,
        timestamp: u32,
        bytes: usize,
    ) {
        match self.sent.as_mut() {
            Some((_, ts, total)) if *ts == timestamp => *total += bytes,
            _ if starts_keyframe => self.sent = Some((now, timestamp, bytes)),
            _ => {}
        }
    }

    /// Whether, at `now`, the keyframe last sent may still arrive: within the time its bytes
    /// take at `estimate` bit/s (none where the link is not estimated) plus two round trips
    /// of `rtt`, [`MAX_WAIT`] at most.
    pub fn arriving(&self, now: Instant, rtt: Duration, estimate: Option<f64>) -> bool {
        let Some((at, _, bytes)) = self.sent else {
            return false;
        };
        let transfer = estimate.filter(|e| *e > 0.0).map_or(Duration::ZERO, |e| {
            Duration::from_secs_f64(bytes as f64 * 8.0 / e)
        });
        let wait = (transfer + 2 * rtt).min(MAX_WAIT);
        now.saturating_duration_since(at) < wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_request_waits_for_the_keyframe_its_link_is_still_carrying() {
        let t0 = Instant::now();
        let mut k = KeyframeInFlight::default();
        // Nothing sent: nothing to wait for.
        assert!(!k.arriving(t0, 100 * MS, Some(120_000.0)));
        // A keyframe of 10 packets of 1,000 bytes with timestamp 9000, sent over 300 ms;
        // packets of another frame do not count.
        k.handle_sent(t0, true, 9000, 1000);
        for i in 1..10 {
            k.handle_sent(t0 + 30 * MS * i, false, 9000, 1000);
            k.handle_sent(t0 + 30 * MS * i, false, 12000, 5000);
        }
        // 80,000 bits at 120 kbit/s: 667 ms, and two round trips of 100 ms.
        assert!(k.arriving(t0 + 860 * MS, 100 * MS, Some(120_000.0)));
        assert!(!k.arriving(t0 + 870 * MS, 100 * MS, Some(120_000.0)));
        // At 2 Mbit/s only the round trips count for much: 40 + 200 ms.
        assert!(k.arriving(t0 + 230 * MS, 100 * MS, Some(2_000_000.0)));
        assert!(!k.arriving(t0 + 250 * MS, 100 * MS, Some(2_000_000.0)));
        // Without an estimate, the two round trips.
        assert!(!k.arriving(t0 + 200 * MS, 100 * MS, None));
        // Never past MAX_WAIT, however slow the link.
        assert!(k.arriving(t0 + MAX_WAIT - MS, 100 * MS, Some(10_000.0)));
        assert!(!k.arriving(t0 + MAX_WAIT, 100 * MS, Some(10_000.0)));
    }

    #[test]
    fn every_packet_of_a_keyframe_counts_however_many_say_they_begin_it() {
        let t0 = Instant::now();
        let mut k = KeyframeInFlight::default();
        // H.264 in single NAL units: every slice of the IDR says it begins a keyframe.
        for i in 0..10 {
            k.handle_sent(t0 + 10 * MS * i, true, 9000, 1000);
        }
        // 80,000 bits at 120 kbit/s from the first: 667 ms, and 200 ms of round trips.
        assert!(k.arriving(t0 + 860 * MS, 100 * MS, Some(120_000.0)));
        assert!(!k.arriving(t0 + 870 * MS, 100 * MS, Some(120_000.0)));
    }

    #[test]
    fn a_new_keyframe_starts_the_count_again() {
        let t0 = Instant::now();
        let mut k = KeyframeInFlight::default();
        k.handle_sent(t0, true, 1, 50_000);
        k.handle_sent(t0 + 500 * MS, true, 2, 1000);
        // 8,000 bits at 1 Mbit/s and 2 x 50 ms from 500 ms: until 608 ms.
        assert!(k.arriving(t0 + 600 * MS, 50 * MS, Some(1_000_000.0)));
        assert!(!k.arriving(t0 + 610 * MS, 50 * MS, Some(1_000_000.0)));
    }
}
