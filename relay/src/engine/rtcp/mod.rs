//! RTCP the relay generates and consumes (RFC 3550 §6, RFC 4585 §6.2–6.3), one file per
//! message type the relay reads or writes by hand.
//!
//! Generation: receiver reports toward publishers (so their encoders see loss and jitter), sender
//! reports toward subscribers (so they can sync audio and video and compute RTT), NACKs toward
//! publishers ([`nack`]). Consumption: sender reports from publishers (for LSR/DLSR and
//! timestamp mapping), report blocks from subscribers (their round-trip time, [`report`]),
//! receiver reference times from subscribers (answered so they learn theirs) and DLRR from
//! publishers (the relay's round trip to them, [`xr`]),
//! NACKs and keyframe requests (PLI, FIR) from subscribers. Everything else in a compound
//! packet is ignored; it is walked so that a malformed compound is counted as such.

pub mod nack;
pub mod report;
pub mod twcc;
pub mod xr;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rtcp::packet::Packet;

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
    /// The sender lost packets of `media_ssrc`: one FCI entry of a generic NACK.
    Nack {
        /// The stream as the requester sees it.
        media_ssrc: u32,
        /// Which packets.
        entry: nack::NackEntry,
    },
    /// A report block about a stream the relay sends.
    Report(report::ReportBlock),
    /// A receiver's reference time, to be answered with a DLRR.
    ReceiverTime(xr::ReceiverTime),
    /// The answer to a reference time the relay sent.
    Dlrr(report::ReportBlock),
    /// Transport-wide congestion feedback about what the relay sent: where it is in the
    /// compound (without padding), to be read with [`twcc::parse`].
    TransportFeedback {
        /// Offset of the packet in the compound.
        start: usize,
        /// Its length.
        len: usize,
    },
}

/// RTCP packet types (RFC 3550 §12.1, RFC 4585 §6.1).
use report::{PT_RR, PT_SR};
const PT_PSFB: u8 = 206;
/// Payload-specific feedback formats (RFC 4585 §6.3, RFC 5104 §4.3).
const FMT_PLI: u8 = 1;
const FMT_FIR: u8 = 4;

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Parse a decrypted compound (or reduced-size, RFC 5506) RTCP packet into the feedback the
/// relay acts on. Returns None if the compound is malformed: a packet with a version other
/// than 2, a length running past the datagram, or an SR/PLI/FIR too short for its fields.
///
/// The walk is our own rather than a general RTCP library's: it reads only the packet types the
/// relay acts on, and it must never panic on what an authenticated but hostile peer sends.
pub fn parse_feedback(plain: &[u8], out: &mut Vec<Feedback>) -> Option<()> {
    if plain.is_empty() {
        return None;
    }
    let mut rest = plain;
    while !rest.is_empty() {
        let start = plain.len() - rest.len();
        if rest.len() < 4 || rest[0] >> 6 != 2 {
            return None;
        }
        let count = rest[0] & 0x1f;
        let pt = rest[1];
        let len = (u16::from_be_bytes([rest[2], rest[3]]) as usize + 1) * 4;
        let packet = rest.get(..len)?;
        rest = &rest[len..];
        // Padding (P bit: its length in the last byte) is not part of any message body.
        let pad = if packet[0] & 0x20 != 0 {
            *packet.last()? as usize
        } else {
            0
        };
        let unpadded = packet.get(..packet.len().checked_sub(pad)?)?;
        match (pt, count) {
            (PT_SR, _) => {
                let ssrc = be32(packet, 4)?;
                let ntp = (be32(packet, 8)? as u64) << 32 | be32(packet, 12)? as u64;
                let rtp_time = be32(packet, 16)?;
                out.push(Feedback::SenderReport {
                    ssrc,
                    ntp,
                    rtp_time,
                });
                out.extend(report::blocks(unpadded, pt, count)?.map(Feedback::Report));
            }
            (PT_RR, _) => out.extend(report::blocks(unpadded, pt, count)?.map(Feedback::Report)),
            (nack::PT_RTPFB, nack::FMT_NACK) => {
                let (media_ssrc, entries) = nack::parse(unpadded)?;
                out.extend(entries.map(|entry| Feedback::Nack { media_ssrc, entry }));
            }
            (nack::PT_RTPFB, twcc::FMT_TWCC) => out.push(Feedback::TransportFeedback {
                start,
                len: unpadded.len(),
            }),
            (xr::PT_XR, _) => out.extend(xr::blocks(unpadded)?.map(|b| match b {
                xr::XrBlock::ReceiverTime(t) => Feedback::ReceiverTime(t),
                xr::XrBlock::Dlrr(b) => Feedback::Dlrr(b),
            })),
            (PT_PSFB, FMT_PLI) => out.push(Feedback::KeyframeRequest {
                media_ssrc: be32(packet, 8)?,
            }),
            (PT_PSFB, FMT_FIR) => {
                // FCI entries of 8 bytes after the 12-byte common part.
                let body = unpadded.get(12..)?;
                for entry in body.chunks_exact(8) {
                    out.push(Feedback::KeyframeRequest {
                        media_ssrc: be32(entry, 0)?,
                    });
                }
            }
            _ => {}
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
    use rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
    use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtcp::receiver_report::ReceiverReport;
    use rtcp::sender_report::SenderReport;
    use rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};

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
            Box::new(TransportLayerNack {
                sender_ssrc: 1,
                media_ssrc: 79,
                nacks: vec![NackPair {
                    packet_id: 10,
                    lost_packets: 1,
                }],
            }),
            Box::new(ReceiverReport {
                ssrc: 1,
                reports: vec![rtcp::reception_report::ReceptionReport {
                    ssrc: 80,
                    last_sender_report: 4,
                    delay: 2,
                    ..Default::default()
                }],
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
                Feedback::Nack {
                    media_ssrc: 79,
                    entry: nack::NackEntry { pid: 10, blp: 1 }
                },
                Feedback::Report(report::ReportBlock {
                    ssrc: 80,
                    fraction_lost: 0,
                    lsr: 4,
                    dlsr: 2
                }),
            ]
        );
        assert!(parse_feedback(&raw[..raw.len() - 3], &mut out).is_none());
        assert!(parse_feedback(&[], &mut out).is_none());
    }

    #[test]
    fn hostile_compounds_are_refused_not_panicked_on() {
        let mut out = vec![];
        // A NACK whose length field claims more than the datagram has (found by fuzzing: a
        // general-purpose parser panicked on it).
        let crash = [
            0x81, 0xc8, 0x00, 0x0c, 0x00, 0x00, 0x12, 0x34, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0x22, 0x02,
            0xff, 0x28, 0x21, 0x00, 0x28, 0x00, 0x37, 0x37, 0x37, 0x37, 0x37, 0x00, 0x00, 0x0a,
            0x00, 0x00, 0x03, 0xe8, 0x00, 0x01, 0x81, 0xce, 0x00, 0x02, 0x81, 0xcd, 0x00, 0x01,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x03, 0x00, 0x00, 0x00, 0x01, 0x37, 0x37,
        ];
        let _ = parse_feedback(&crash, &mut out);
        // Version 1, a zero-length SR, a PLI without its media SSRC, FIR padding past the end.
        assert!(parse_feedback(&[0x40, 200, 0, 0], &mut out).is_none());
        assert!(parse_feedback(&[0x80, 200, 0, 0], &mut out).is_none());
        assert!(parse_feedback(&[0x81, 206, 0, 1, 0, 0, 0, 1], &mut out).is_none());
        let mut fir = vec![0xa4, 206, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xff];
        assert!(parse_feedback(&fir, &mut out).is_none());
        fir[15] = 4; // now the padding is the whole (empty) FCI
        out.clear();
        assert!(parse_feedback(&fir, &mut out).is_some());
        assert!(out.is_empty());
    }
}
