//! Reception statistics of one incoming stream (RFC 3550 §A.1, §A.3, §A.8), for the receiver
//! reports toward its publisher.

use std::time::Instant;

use crate::engine::rtcp::{dlsr_units, ntp_middle};

/// RFC 3550 §A.1 / §A.3 / §A.8 reception statistics of one incoming stream.
#[derive(Debug, Clone, Default)]
pub struct RecvStats {
    started: bool,
    base_seq: u32,
    max_seq: u16,
    cycles: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Interarrival jitter in timestamp units, scaled by 16 as in RFC 3550 A.8.
    jitter_q4: u32,
    last_transit: Option<i64>,
    last_sr: Option<(u32, Instant)>,
}

impl RecvStats {
    /// Account for one packet. `arrival_units` is the arrival time in the stream's clock rate.
    pub fn on_packet(&mut self, seq: u16, rtp_ts: u32, arrival_units: i64) {
        if !self.started {
            self.started = true;
            self.base_seq = seq as u32;
            self.max_seq = seq;
        } else {
            let delta = seq.wrapping_sub(self.max_seq);
            if delta != 0 && delta < 0x8000 {
                if seq < self.max_seq {
                    self.cycles = self.cycles.wrapping_add(1 << 16);
                }
                self.max_seq = seq;
            }
        }
        self.received = self.received.wrapping_add(1);
        let transit = arrival_units - rtp_ts as i64;
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs() as u32;
            // J += (|D| - J/16) in the ×16 domain.
            self.jitter_q4 = self
                .jitter_q4
                .wrapping_add(d)
                .wrapping_sub((self.jitter_q4 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// Remember a sender report (its NTP time) for LSR/DLSR.
    pub fn on_sender_report(&mut self, ntp: u64, now: Instant) {
        self.last_sr = Some((ntp_middle(ntp), now));
    }

    fn extended_max(&self) -> u32 {
        self.cycles | self.max_seq as u32
    }

    /// Build a reception report block and start a new reporting interval.
    /// None until a packet has arrived.
    pub fn report(
        &mut self,
        ssrc: u32,
        now: Instant,
    ) -> Option<rtcp::reception_report::ReceptionReport> {
        if !self.started {
            return None;
        }
        let extended_max = self.extended_max();
        let expected = extended_max.wrapping_sub(self.base_seq).wrapping_add(1);
        let lost = (expected as i64 - self.received as i64).clamp(0, 0x7f_ffff) as u32;
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        let (lsr, dlsr) = match self.last_sr {
            Some((lsr, at)) => (lsr, dlsr_units(now.saturating_duration_since(at))),
            None => (0, 0),
        };
        Some(rtcp::reception_report::ReceptionReport {
            ssrc,
            fraction_lost,
            total_lost: lost,
            last_sequence_number: extended_max,
            jitter: self.jitter_q4 >> 4,
            last_sender_report: lsr,
            delay: dlsr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_wrap_in_reports() {
        let now = Instant::now();
        let mut s = RecvStats::default();
        assert!(s.report(1, now).is_none());
        // 65530..=65535, then 0..=9 with 3 and 4 missing: 16 expected, 14 received.
        for seq in (65530u16..=65535)
            .chain(0..10)
            .filter(|s| *s != 3 && *s != 4)
        {
            s.on_packet(seq, 0, 0);
        }
        let r = s.report(9, now).unwrap();
        assert_eq!(r.last_sequence_number, (1 << 16) | 9);
        assert_eq!(r.total_lost, 2);
        assert_eq!(r.fraction_lost, (2 * 256 / 16) as u8);
        // Next interval with no loss.
        for seq in 10..20 {
            s.on_packet(seq, 0, 0);
        }
        let r = s.report(9, now).unwrap();
        assert_eq!(r.fraction_lost, 0);
        assert_eq!(r.total_lost, 2);
    }

    #[test]
    fn jitter_grows_with_irregular_arrival() {
        let mut s = RecvStats::default();
        for i in 0..100i64 {
            // 3000-tick spacing in RTP, arrival alternating ±300 ticks around it.
            let wobble = if i % 2 == 0 { 300 } else { -300 };
            s.on_packet(i as u16, (i * 3000) as u32, i * 3000 + wobble);
        }
        let r = s.report(1, Instant::now()).unwrap();
        assert!(r.jitter > 400 && r.jitter <= 600, "jitter {}", r.jitter);
    }
}
