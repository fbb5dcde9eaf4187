//! Packets grouped into send bursts, and the change in one-way delay from one group to the
//! next: the input of the delay-based estimator.
//!
//! A pacer sends a few packets back to back; their individual delays say little. As in
//! libwebrtc's `InterArrivalDelta`, packets sent within [`SEND_GROUP_LENGTH`] of a group's first
//! form one group (and so do packets that arrive in a burst, which a queue ahead of them
//! released together). When a group completes, the estimator gets how much later it arrived
//! than the previous one, against how much later it was sent: a positive difference means a
//! queue is growing somewhere on the path.

use std::time::{Duration, Instant};

/// Packets sent within this of a group's first belong to it.
pub const SEND_GROUP_LENGTH: Duration = Duration::from_millis(5);

/// Packets arriving within this of the group's last, earlier than their send spacing says,
/// were released together by a queue: same group.
const BURST_DELTA: Duration = Duration::from_millis(5);

/// A burst is not longer than this.
const MAX_BURST: Duration = Duration::from_millis(100);

/// After this many groups in a row that arrived before their predecessor, start over.
const REORDERED_RESET: u32 = 3;

/// One completed group compared with the one before it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupDelta {
    /// How much later this group was sent than the previous, ms.
    pub send_delta_ms: f64,
    /// How much later it arrived, ms.
    pub arrival_delta_ms: f64,
    /// When its last packet arrived, ms on the receiver's clock.
    pub arrival_ms: f64,
    /// Bytes in the group.
    pub size: usize,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    first_sent: Instant,
    last_sent: Instant,
    first_arrival_us: i64,
    complete_us: i64,
    size: usize,
}

/// The group being filled and the last completed one.
#[derive(Debug, Default)]
pub struct InterArrival {
    current: Option<Group>,
    previous: Option<Group>,
    reordered: u32,
}

impl InterArrival {
    /// A packet of `size` bytes sent at `sent_at` arrived at `arrival_us` (receiver's clock).
    /// Returns the delta of the group this packet completed, if it started a new one.
    pub fn handle_packet(
        &mut self,
        sent_at: Instant,
        arrival_us: i64,
        size: usize,
    ) -> Option<GroupDelta> {
        let Some(current) = self.current.as_mut() else {
            self.current = Some(Group {
                first_sent: sent_at,
                last_sent: sent_at,
                first_arrival_us: arrival_us,
                complete_us: arrival_us,
                size,
            });
            return None;
        };
        if sent_at < current.first_sent {
            return None; // sent before the group began: reordered, not a sample
        }
        let mut delta = None;
        if starts_new_group(current, sent_at, arrival_us) {
            if let Some(previous) = self.previous {
                let send_delta = current
                    .last_sent
                    .saturating_duration_since(previous.last_sent);
                let arrival_delta_us = current.complete_us - previous.complete_us;
                if arrival_delta_us < 0 {
                    self.reordered += 1;
                    if self.reordered >= REORDERED_RESET {
                        *self = InterArrival::default();
                    }
                    return None;
                }
                self.reordered = 0;
                delta = Some(GroupDelta {
                    send_delta_ms: send_delta.as_secs_f64() * 1000.0,
                    arrival_delta_ms: arrival_delta_us as f64 / 1000.0,
                    arrival_ms: current.complete_us as f64 / 1000.0,
                    size: current.size,
                });
            }
            self.previous = Some(*current);
            *current = Group {
                first_sent: sent_at,
                last_sent: sent_at,
                first_arrival_us: arrival_us,
                complete_us: arrival_us,
                size: 0,
            };
        } else {
            current.last_sent = current.last_sent.max(sent_at);
        }
        current.size += size;
        current.complete_us = arrival_us;
        delta
    }
}

fn starts_new_group(group: &Group, sent_at: Instant, arrival_us: i64) -> bool {
    // Released together by a queue: arrived soon after the group's last packet, sooner than
    // it was sent after it.
    let arrival_delta_us = arrival_us - group.complete_us;
    let send_delta_us = sent_at
        .saturating_duration_since(group.last_sent)
        .as_micros() as i64;
    if send_delta_us == 0 {
        return false;
    }
    let burst = arrival_delta_us - send_delta_us < 0
        && arrival_delta_us <= BURST_DELTA.as_micros() as i64
        && arrival_us - group.first_arrival_us < MAX_BURST.as_micros() as i64;
    !burst && sent_at.saturating_duration_since(group.first_sent) > SEND_GROUP_LENGTH
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: f64) -> Instant {
        t0 + Duration::from_secs_f64(ms / 1000.0)
    }

    #[test]
    fn groups_of_five_milliseconds_compared_group_to_group() {
        let t0 = Instant::now();
        let mut ia = InterArrival::default();
        // Group A: sent 0, 1, 2 ms; arrive 50, 51, 52 ms.
        for i in 0..3 {
            assert_eq!(
                ia.handle_packet(ms(t0, i as f64), 50_000 + i * 1000, 1000),
                None
            );
        }
        // Group B starts at 10 ms (arrives 61): A is complete but has no predecessor.
        assert_eq!(ia.handle_packet(ms(t0, 10.0), 61_000, 1000), None);
        assert_eq!(ia.handle_packet(ms(t0, 11.0), 62_000, 1000), None);
        // Group C at 20 ms: B against A: sent 11 - 2 = 9 ms later, arrived 62 - 52 = 10 ms
        // later.
        let d = ia
            .handle_packet(ms(t0, 20.0), 73_000, 1000)
            .expect("B done");
        assert!((d.send_delta_ms - 9.0).abs() < 1e-9);
        assert!((d.arrival_delta_ms - 10.0).abs() < 1e-9);
        assert_eq!(d.size, 2000);
        assert!((d.arrival_ms - 62.0).abs() < 1e-9);
    }

    #[test]
    fn a_queue_releasing_packets_together_keeps_them_in_one_group() {
        let t0 = Instant::now();
        let mut ia = InterArrival::default();
        ia.handle_packet(ms(t0, 0.0), 100_000, 1000);
        // Sent 20 ms later but arrived 1 ms later: held by a queue, same burst.
        assert_eq!(ia.handle_packet(ms(t0, 20.0), 101_000, 1000), None);
        assert_eq!(ia.handle_packet(ms(t0, 40.0), 102_000, 1000), None);
        // A packet arriving at its own pace starts the next group.
        assert_eq!(ia.handle_packet(ms(t0, 60.0), 160_000, 1000), None);
        let d = ia
            .handle_packet(ms(t0, 80.0), 180_000, 1000)
            .expect("second group done");
        assert!((d.send_delta_ms - 20.0).abs() < 1e-9, "{d:?}");
        assert!((d.arrival_delta_ms - 58.0).abs() < 1e-9, "{d:?}");
    }

    #[test]
    fn reordered_groups_give_no_sample_and_reset_after_a_few() {
        let t0 = Instant::now();
        let mut ia = InterArrival::default();
        ia.handle_packet(ms(t0, 0.0), 100_000, 1000);
        ia.handle_packet(ms(t0, 10.0), 200_000, 1000);
        assert!(ia.handle_packet(ms(t0, 20.0), 300_000, 1000).is_some());
        // A packet sent before the current group began: ignored.
        assert_eq!(ia.handle_packet(ms(t0, 15.0), 301_000, 1000), None);
        // The current group completes earlier than the previous one did (a packet of it was
        // held back less): no sample for the packets that start new groups after it.
        ia.handle_packet(ms(t0, 21.0), 150_000, 1000);
        for i in 1..REORDERED_RESET {
            assert_eq!(
                ia.handle_packet(ms(t0, 30.0 + f64::from(i)), 400_000, 1000),
                None
            );
            assert_eq!(ia.reordered, i);
        }
        // The third in a row starts over.
        assert_eq!(ia.handle_packet(ms(t0, 40.0), 400_000, 1000), None);
        assert!(ia.current.is_none() && ia.previous.is_none());
        ia.handle_packet(ms(t0, 50.0), 500_000, 1000);
        ia.handle_packet(ms(t0, 60.0), 510_000, 1000);
        assert!(ia.handle_packet(ms(t0, 70.0), 520_000, 1000).is_some());
    }
}
