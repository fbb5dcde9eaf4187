//! RTCP the relay generates and consumes (RFC 3550 §6, RFC 4585 §6.3).
//!
//! Generation: receiver reports toward publishers (so their encoders see loss and jitter), sender
//! reports toward subscribers (so they can sync audio and video and compute RTT). Consumption:
//! sender reports from publishers (for LSR/DLSR and timestamp mapping) and keyframe requests
//! (PLI, FIR) from subscribers. Everything else in a compound packet is ignored for now; it is
//! parsed so that a malformed compound is counted as such.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rtcp::packet::Packet;
use rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtcp::sender_report::SenderReport;

/// Seconds from 1900 (NTP era 0) to 1970 (Unix epoch).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// Maps the monotonic clock the state machines run on to NTP wall-clock time for sender reports.
#[derive(Clone, Copy, Debug)]
pub struct NtpClock {
    base: Instant,
    base_ntp: u64,
}

impl NtpClock {
    /// Anchor `now` to the wall clock `wall`; both are read once by the I/O layer.
    pub fn new(now: Instant, wall: SystemTime) -> Self {
        let since_epoch = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        NtpClock {
            base: now,
            base_ntp: to_ntp(since_epoch + Duration::from_secs(NTP_UNIX_OFFSET)),
        }
    }

    /// 64-bit NTP timestamp (32.32 fixed point) of `now`.
    pub fn ntp(&self, now: Instant) -> u64 {
        self.base_ntp
            .wrapping_add(to_ntp(now.saturating_duration_since(self.base)))
    }
}

fn to_ntp(d: Duration) -> u64 {
    let frac = ((d.subsec_nanos() as u64) << 32) / 1_000_000_000;
    (d.as_secs() << 32) | frac
}

/// The middle 32 bits of an NTP timestamp, as used in LSR (RFC 3550 §6.4.1).
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// A duration in units of 1/65536 s, as used in DLSR.
pub fn dlsr_units(d: Duration) -> u32 {
    let units = d.as_secs_f64() * 65536.0;
    units.min(u32::MAX as f64) as u32
}

/// What the relay acts on in a compound packet from a participant.
#[derive(Debug, PartialEq, Eq)]
pub enum Feedback {
    /// A sender report for one of the participant's published streams.
    SenderReport {
        /// Source it describes.
        ssrc: u32,
        /// Its NTP timestamp.
        ntp: u64,
        /// Its RTP timestamp.
        rtp_time: u32,
    },
    /// The sender wants a keyframe of `media_ssrc` (PLI or FIR).
    KeyframeRequest {
        /// The stream as the requester sees it (an SSRC the relay chose for it).
        media_ssrc: u32,
    },
}

/// Parse a decrypted compound RTCP packet into the feedback the relay acts on.
/// Returns None if the compound does not parse.
pub fn parse_feedback(plain: &[u8], out: &mut Vec<Feedback>) -> Option<()> {
    let mut buf = Bytes::copy_from_slice(plain);
    let packets = rtcp::packet::unmarshal(&mut buf).ok()?;
    for p in &packets {
        let any = p.as_any();
        if let Some(sr) = any.downcast_ref::<SenderReport>() {
            out.push(Feedback::SenderReport {
                ssrc: sr.ssrc,
                ntp: sr.ntp_time,
                rtp_time: sr.rtp_time,
            });
        } else if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
            out.push(Feedback::KeyframeRequest {
                media_ssrc: pli.media_ssrc,
            });
        } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
            for entry in &fir.fir {
                out.push(Feedback::KeyframeRequest {
                    media_ssrc: entry.ssrc,
                });
            }
        }
    }
    Some(())
}

/// Marshal a compound RTCP packet; None if a packet cannot be marshalled (a bug in the
/// caller's values, e.g. more than 31 report blocks).
pub fn marshal(packets: &[Box<dyn Packet + Send + Sync>]) -> Option<Bytes> {
    rtcp::packet::marshal(packets).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtcp::receiver_report::ReceiverReport;

    #[test]
    fn ntp_clock_is_monotonic_and_anchored() {
        let now = Instant::now();
        let clock = NtpClock::new(now, UNIX_EPOCH + Duration::from_secs(1));
        assert_eq!(clock.ntp(now) >> 32, NTP_UNIX_OFFSET + 1);
        let later = clock.ntp(now + Duration::from_millis(500));
        assert_eq!(later >> 32, NTP_UNIX_OFFSET + 1);
        assert_eq!(later & 0xffff_ffff, 1 << 31);
        assert_eq!(dlsr_units(Duration::from_secs(2)), 131072);
        assert_eq!(ntp_middle(0x0001_2345_6789_0000), 0x2345_6789);
    }

    #[test]
    fn feedback_from_compound() {
        let packets: Vec<Box<dyn Packet + Send + Sync>> = vec![
            Box::new(ReceiverReport {
                ssrc: 1,
                ..Default::default()
            }),
            Box::new(PictureLossIndication {
                sender_ssrc: 1,
                media_ssrc: 77,
            }),
            Box::new(FullIntraRequest {
                sender_ssrc: 1,
                media_ssrc: 0,
                fir: vec![rtcp::payload_feedbacks::full_intra_request::FirEntry {
                    ssrc: 78,
                    sequence_number: 1,
                }],
            }),
            Box::new(SenderReport {
                ssrc: 5,
                ntp_time: 99,
                rtp_time: 1000,
                ..Default::default()
            }),
        ];
        let raw = marshal(&packets).unwrap();
        let mut out = vec![];
        parse_feedback(&raw, &mut out).unwrap();
        assert_eq!(
            out,
            vec![
                Feedback::KeyframeRequest { media_ssrc: 77 },
                Feedback::KeyframeRequest { media_ssrc: 78 },
                Feedback::SenderReport {
                    ssrc: 5,
                    ntp: 99,
                    rtp_time: 1000
                },
            ]
        );
        assert!(parse_feedback(&raw[..raw.len() - 3], &mut out).is_none());
        assert!(parse_feedback(&[], &mut out).is_none());
    }
}
