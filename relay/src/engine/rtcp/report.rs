//! Report blocks of sender and receiver reports (RFC 3550 §6.4): what a receiver says about a
//! stream the relay sends, from which the relay gets the round-trip time to it (§6.4.1).

use std::time::Duration;

/// RTCP packet types of sender and receiver reports.
pub const PT_SR: u8 = 200;
/// See [`PT_SR`].
pub const PT_RR: u8 = 201;

/// What the relay reads from one report block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source the block is about (an SSRC the relay sends with).
    pub ssrc: u32,
    /// The fraction of its packets lost since the receiver's previous report, in 1/256
    /// (0 in an extended report's DLRR block, which has none).
    pub fraction_lost: u8,
    /// The middle 32 bits of the NTP time of the last sender report received (0: none).
    pub lsr: u32,
    /// Delay since that sender report, in 1/65536 s.
    pub dlsr: u32,
}

impl ReportBlock {
    /// The round-trip time, given the middle 32 bits of the NTP time the block arrived at;
    /// None without a sender report to refer to, or if the arithmetic goes negative (a
    /// receiver with a broken clock).
    pub fn rtt(&self, arrival_ntp_middle: u32) -> Option<Duration> {
        if self.lsr == 0 {
            return None;
        }
        let units = arrival_ntp_middle
            .checked_sub(self.lsr)?
            .checked_sub(self.dlsr)?;
        Some(Duration::from_micros(u64::from(units) * 1_000_000 / 65_536))
    }
}

/// The report blocks of an SR or RR packet (header included, `count` from its first byte);
/// None if the packet is shorter than its count says.
pub fn blocks(packet: &[u8], pt: u8, count: u8) -> Option<impl Iterator<Item = ReportBlock> + '_> {
    let start = if pt == PT_SR { 28 } else { 8 };
    let body = packet.get(start..start + 24 * count as usize)?;
    Some(body.chunks_exact(24).map(|b| {
        let word = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        ReportBlock {
            ssrc: word(0),
            fraction_lost: b[4],
            lsr: word(16),
            dlsr: word(20),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtcp::reception_report::ReceptionReport;
    use webrtc_util::marshal::Marshal;

    #[test]
    fn blocks_of_what_the_rtcp_crate_writes() {
        let rr = rtcp::receiver_report::ReceiverReport {
            ssrc: 1,
            reports: vec![
                ReceptionReport {
                    ssrc: 7,
                    fraction_lost: 26,
                    last_sender_report: 0x0001_0000,
                    delay: 0x8000,
                    ..Default::default()
                },
                ReceptionReport {
                    ssrc: 8,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let raw = rr.marshal().unwrap();
        let got: Vec<_> = blocks(&raw, PT_RR, 2).unwrap().collect();
        assert_eq!(
            got[0],
            ReportBlock {
                ssrc: 7,
                fraction_lost: 26,
                lsr: 0x0001_0000,
                dlsr: 0x8000
            }
        );
        assert_eq!(got[1].ssrc, 8);
        // Arrived 1.75 s after the SR, held 0.5 s by the receiver: 1.25 s round trip.
        assert_eq!(
            got[0].rtt(0x0001_0000 + 0x0001_c000),
            Some(Duration::from_millis(1250))
        );
        assert_eq!(got[1].rtt(5), None);
        assert!(blocks(&raw, PT_RR, 3).is_none());

        let sr = rtcp::sender_report::SenderReport {
            ssrc: 1,
            reports: vec![ReceptionReport {
                ssrc: 9,
                last_sender_report: 3,
                ..Default::default()
            }],
            ..Default::default()
        };
        let raw = sr.marshal().unwrap();
        assert_eq!(blocks(&raw, PT_SR, 1).unwrap().next().unwrap().ssrc, 9);
    }

    #[test]
    fn a_clock_behind_the_sender_report_gives_no_rtt() {
        let b = ReportBlock {
            ssrc: 1,
            fraction_lost: 0,
            lsr: 100,
            dlsr: 50,
        };
        assert_eq!(b.rtt(120), None);
        assert_eq!(b.rtt(90), None);
    }
}
