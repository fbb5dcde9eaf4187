//! Extended reports (RFC 3611): receiver reference times (§4.4) and the delay since one
//! arrived (DLRR, §4.5), both ways. The relay answers a subscriber's reference times, and sends
//! its own to publishers, whose DLRR gives the relay its round trip to them: how long to wait
//! before asking a publisher again for a packet. Both are written with the rtcp crate, with
//! the relay's other reports.
//!
//! A peer that only receives has no sender report of its own to measure a round trip with, so
//! without this exchange a subscriber never learns its RTT to the relay. Chromium uses that RTT
//! twice: to space its NACK retries and, once a few frames needed repair, to hold that much more
//! video in its jitter buffer so that a repaired frame is in time to be played. It sends the
//! reference time only when the offer lists `rtcp-fb:<pt> rrtr` for the codec.

/// RTCP packet type of extended reports.
pub const PT_XR: u8 = 207;
use super::report::ReportBlock;

/// Block type of a receiver reference time report.
const BT_RRTR: u8 = 4;
/// Block type of a DLRR report.
const BT_DLRR: u8 = 5;

/// What the relay reads from an XR packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XrBlock {
    /// A peer's reference time, to be answered.
    ReceiverTime(ReceiverTime),
    /// The answer to one of the relay's reference times: `ssrc` is the relay's, `lsr` the
    /// time it sent, `dlsr` how long the peer held it, as in a report block.
    Dlrr(ReportBlock),
}

/// A receiver reference time: who sent it and the middle 32 bits of its NTP time, which the
/// DLRR echoes as LRR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverTime {
    /// SSRC of the packet's sender (the receiver the DLRR is addressed to).
    pub ssrc: u32,
    /// Middle 32 bits of its NTP timestamp.
    pub lrr: u32,
}

/// The reference times and DLRR sub-blocks of an XR packet (header included, padding
/// removed), at most eight; None if a block runs past the packet or a reference time block is
/// too short for its timestamp.
pub fn blocks(packet: &[u8]) -> Option<impl Iterator<Item = XrBlock>> {
    let ssrc = u32::from_be_bytes(packet.get(4..8)?.try_into().ok()?);
    let mut found = [None; 8];
    let mut n = 0;
    let mut rest = packet.get(8..)?;
    while !rest.is_empty() {
        let header = rest.get(..4)?;
        let len = 4 + 4 * u16::from_be_bytes([header[2], header[3]]) as usize;
        let block = rest.get(..len)?;
        rest = &rest[len..];
        if header[0] == BT_RRTR {
            let ntp = block.get(4..12)?;
            let lrr = u32::from_be_bytes([ntp[2], ntp[3], ntp[4], ntp[5]]);
            // A peer sends one per report; more than a few in one packet is noise.
            if n < found.len() {
                found[n] = Some(XrBlock::ReceiverTime(ReceiverTime { ssrc, lrr }));
                n += 1;
            }
        } else if header[0] == BT_DLRR {
            for item in block[4..].chunks_exact(12) {
                let word = |at: usize| {
                    u32::from_be_bytes([item[at], item[at + 1], item[at + 2], item[at + 3]])
                };
                if n < found.len() {
                    found[n] = Some(XrBlock::Dlrr(ReportBlock {
                        ssrc: word(0),
                        fraction_lost: 0,
                        lsr: word(4),
                        dlsr: word(8),
                    }));
                    n += 1;
                }
            }
        }
    }
    Some(found.into_iter().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtcp::extended_report::{
        DLRRReport, DLRRReportBlock, ExtendedReport, ReceiverReferenceTimeReportBlock,
    };
    use webrtc_util::marshal::Marshal;

    #[test]
    fn reference_times_of_what_the_rtcp_crate_writes() {
        let xr = ExtendedReport {
            sender_ssrc: 0x1234,
            reports: vec![
                Box::new(DLRRReportBlock { reports: vec![] }),
                Box::new(ReceiverReferenceTimeReportBlock {
                    ntp_timestamp: 0x0102_0304_0506_0708,
                }),
            ],
        };
        let bytes = xr.marshal().unwrap();
        let times: Vec<_> = blocks(&bytes).unwrap().collect();
        assert_eq!(
            times,
            vec![XrBlock::ReceiverTime(ReceiverTime {
                ssrc: 0x1234,
                lrr: 0x0304_0506
            })]
        );
    }

    #[test]
    fn dlrr_of_what_the_rtcp_crate_writes() {
        let xr = ExtendedReport {
            sender_ssrc: 9,
            reports: vec![Box::new(DLRRReportBlock {
                reports: vec![
                    DLRRReport {
                        ssrc: 1,
                        last_rr: 0x10000,
                        dlrr: 0x8000,
                    },
                    DLRRReport {
                        ssrc: 2,
                        last_rr: 3,
                        dlrr: 4,
                    },
                ],
            })],
        };
        let bytes = xr.marshal().unwrap();
        let got: Vec<_> = blocks(&bytes).unwrap().collect();
        let first = ReportBlock {
            ssrc: 1,
            fraction_lost: 0,
            lsr: 0x10000,
            dlsr: 0x8000,
        };
        assert_eq!(got[0], XrBlock::Dlrr(first));
        assert_eq!(got.len(), 2);
        // Sent at 1 s, held 0.5 s, back at 2 s: 0.5 s there and back.
        assert_eq!(
            first.rtt(0x20000),
            Some(std::time::Duration::from_millis(500))
        );
    }

    #[test]
    fn truncated_blocks_are_refused() {
        let xr = ExtendedReport {
            sender_ssrc: 1,
            reports: vec![Box::new(ReceiverReferenceTimeReportBlock {
                ntp_timestamp: 5,
            })],
        };
        let bytes = xr.marshal().unwrap();
        for cut in 9..bytes.len() {
            assert!(blocks(&bytes[..cut]).is_none(), "accepted {cut} bytes");
        }
        // A block length that points past the end.
        let mut long = bytes.to_vec();
        long[11] = 9;
        assert!(blocks(&long).is_none());
    }
}
