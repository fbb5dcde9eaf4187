//! Connection quality per participant: the rating a page shows next to a name (LiveKit's
//! `excellent`/`good`/`poor`/`lost`), so that a person can tell "my link is bad" from "theirs
//! is".
//!
//! It is read from what the relay measures anyway: the round trip to the participant (its
//! receiver reports on what the relay sends it, and the relay's extended reports toward a
//! publisher), the loss on what it sends (the relay's own receiver reports on its streams,
//! before any repair), the loss on what it receives (its receiver reports), whether anything
//! arrived from it lately, and whether its link carries even the lowest layer of the videos it
//! subscribes to (the estimate, through the allocation). Loss is smoothed over a few reports.
//! A worse rating shows at once; a better one only once it held for [`IMPROVE_AFTER`], so
//! that the rating does not flap with each report on a link that hovers at a threshold.

use std::time::{Duration, Instant};

use crate::control::ConnectionQuality;

/// Nothing heard from a participant for this long: `lost`. Chromium sends RTCP at least every
/// second and a consent check every few, so a live participant is never this quiet.
pub const SILENCE: Duration = Duration::from_secs(3);
/// How long a better rating must hold before it is reported.
pub const IMPROVE_AFTER: Duration = Duration::from_secs(4);
/// Loss from which audio breaks up audibly even with concealment, and video waits on repairs.
pub const POOR_LOSS: f32 = 0.08;
/// Loss that repairs mostly hide but that costs bandwidth and some freezes.
pub const GOOD_LOSS: f32 = 0.02;
/// A round trip past which a conversation stumbles (people talk over each other).
pub const POOR_RTT: Duration = Duration::from_millis(400);
/// A round trip that is noticeable but not in the way.
pub const GOOD_RTT: Duration = Duration::from_millis(200);
/// The weight of a new loss report against what came before.
const SMOOTHING: f32 = 0.4;

/// What one participant's rating is made of.
#[derive(Debug, Default)]
pub struct LinkQuality {
    rtt: Option<Duration>,
    uplink_loss: Option<f32>,
    downlink_loss: Option<f32>,
    /// Its packet count when it last changed, and when.
    heard: Option<(u64, Instant)>,
    rating: Option<ConnectionQuality>,
    /// A better rating seen since then, held from when.
    better: Option<(ConnectionQuality, Instant)>,
}

impl LinkQuality {
    /// A round trip measured to the participant.
    pub fn handle_rtt(&mut self, rtt: Duration) {
        self.rtt = Some(rtt);
    }

    /// The fraction (in 1/256) of the participant's packets lost over one report interval,
    /// the worst of its streams.
    pub fn handle_uplink_loss(&mut self, fraction: u8) {
        smooth(&mut self.uplink_loss, fraction);
    }

    /// A fraction (in 1/256) it reported lost of what the relay sends it.
    pub fn handle_downlink_loss(&mut self, fraction: u8) {
        smooth(&mut self.downlink_loss, fraction);
    }

    /// The last round trip measured.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// The smoothed loss of its worse direction (0 to 1).
    pub fn loss(&self) -> f32 {
        self.uplink_loss
            .unwrap_or(0.0)
            .max(self.downlink_loss.unwrap_or(0.0))
    }

    /// The rating now, given how many packets the participant has sent so far and whether a
    /// video it subscribes to is paused because its link cannot carry it; Some when the
    /// rating reported changes (the first time included).
    pub fn poll_rating(
        &mut self,
        now: Instant,
        packets_in: u64,
        starved: bool,
    ) -> Option<ConnectionQuality> {
        let heard_at = match self.heard {
            Some((count, at)) if count == packets_in => at,
            _ => {
                self.heard = Some((packets_in, now));
                now
            }
        };
        let rating = if now.saturating_duration_since(heard_at) >= SILENCE {
            ConnectionQuality::Lost
        } else {
            self.rate(starved)
        };
        match self.rating {
            Some(old) if rating == old => {
                self.better = None;
                None
            }
            Some(old) if rating > old => {
                // Better: only once it held (at its worst over the wait).
                let (held, since) = match self.better {
                    Some((held, since)) => (held.min(rating), since),
                    None => (rating, now),
                };
                if now.saturating_duration_since(since) >= IMPROVE_AFTER {
                    self.better = None;
                    self.rating = Some(held);
                    Some(held)
                } else {
                    self.better = Some((held, since));
                    None
                }
            }
            _ => {
                self.better = None;
                self.rating = Some(rating);
                Some(rating)
            }
        }
    }

    /// The rating of a participant that is heard.
    fn rate(&self, starved: bool) -> ConnectionQuality {
        let loss = self.loss();
        let rtt = self.rtt.unwrap_or_default();
        if starved || loss >= POOR_LOSS || rtt >= POOR_RTT {
            ConnectionQuality::Poor
        } else if loss >= GOOD_LOSS || rtt >= GOOD_RTT {
            ConnectionQuality::Good
        } else {
            ConnectionQuality::Excellent
        }
    }
}

fn smooth(value: &mut Option<f32>, fraction: u8) {
    let new = f32::from(fraction) / 256.0;
    *value = Some(match *value {
        Some(old) => old + SMOOTHING * (new - old),
        None => new,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnectionQuality::*;

    /// One report a second for `secs` seconds, the participant sending 50 packets a second
    /// (none where `silent`), with `loss` (in 1/256) each way; the ratings reported.
    fn run(
        q: &mut LinkQuality,
        start: Instant,
        from: u64,
        secs: u64,
        loss: u8,
        silent: bool,
    ) -> Vec<(u64, ConnectionQuality)> {
        let mut out = vec![];
        for s in from..from + secs {
            q.handle_uplink_loss(loss);
            q.handle_downlink_loss(loss);
            let packets = if silent { from * 50 } else { s * 50 };
            if let Some(r) = q.poll_rating(start + Duration::from_secs(s), packets, false) {
                out.push((s, r));
            }
        }
        out
    }

    #[test]
    fn a_clean_link_is_excellent_from_the_first_report() {
        let mut q = LinkQuality::default();
        q.handle_rtt(Duration::from_millis(20));
        let t = Instant::now();
        assert_eq!(run(&mut q, t, 0, 10, 0, false), vec![(0, Excellent)]);
    }

    #[test]
    fn loss_makes_it_poor_within_two_reports_and_it_recovers_after_holding() {
        let mut q = LinkQuality::default();
        let t = Instant::now();
        run(&mut q, t, 0, 5, 0, false);
        // 15% loss: the smoothed loss is 5.9% after one report, 9.5% after two.
        assert_eq!(run(&mut q, t, 5, 5, 38, false), vec![(5, Good), (6, Poor)]);
        // Clean again: loss decays (13.7% → 8.2% → 4.9% → 3.0% → 1.8%); each better rating
        // is reported once it held 4 s.
        let back = run(&mut q, t, 10, 15, 0, false);
        assert_eq!(back, vec![(15, Good), (20, Excellent)], "{back:?}");
    }

    #[test]
    fn a_long_round_trip_or_a_starved_link_is_poor() {
        let mut q = LinkQuality::default();
        let t = Instant::now();
        q.handle_rtt(Duration::from_millis(250));
        assert_eq!(q.poll_rating(t, 1, false), Some(Good));
        q.handle_rtt(Duration::from_millis(450));
        assert_eq!(
            q.poll_rating(t + Duration::from_secs(1), 2, false),
            Some(Poor)
        );
        q.handle_rtt(Duration::from_millis(30));
        assert_eq!(q.poll_rating(t + Duration::from_secs(2), 3, true), None);
    }

    #[test]
    fn silence_is_lost_and_a_rating_between_is_not_skipped() {
        let mut q = LinkQuality::default();
        let t = Instant::now();
        run(&mut q, t, 0, 3, 0, false);
        let lost = run(&mut q, t, 3, 6, 0, true);
        assert_eq!(lost, vec![(6, Lost)]);
        // Heard again, but with loss that is only good, then clean: the rating stays at the
        // worst seen while it waits to improve.
        q.handle_uplink_loss(30);
        let mut got = vec![];
        for s in 9..16 {
            if s > 9 {
                q.handle_uplink_loss(0);
                q.handle_downlink_loss(0);
            }
            got.extend(q.poll_rating(t + Duration::from_secs(s), s * 50, false));
        }
        assert_eq!(got, vec![Good]);
    }

    #[test]
    fn flapping_at_a_threshold_is_not_reported() {
        let mut q = LinkQuality::default();
        let t = Instant::now();
        let mut got = vec![];
        for s in 0..20u64 {
            q.handle_rtt(Duration::from_millis(if s % 2 == 0 { 410 } else { 390 }));
            got.extend(q.poll_rating(t + Duration::from_secs(s), s, false));
        }
        assert_eq!(got, vec![Poor]);
    }
}
