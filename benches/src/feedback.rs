//! What browsers send back, for runs that must cost the server what real peers cost it.
//!
//! Without it, the load generator's peers only send media and read what arrives: the server
//! never sees a receiver report, a NACK or congestion feedback, and never keeps a history
//! worth anything. With it, each peer does what Chromium does when repair and congestion
//! control are negotiated:
//!
//! - a publisher ([`MediaSender`]) stamps every packet with a transport-wide sequence number,
//!   keeps its recent video packets and answers the server's NACKs with RTX on a stream of
//!   its own (RFC 4588);
//! - a receiver ([`ReceiverFeedback`]) sends a receiver report with a receiver reference time
//!   (RFC 3611 RRTR) every second and a NACK for every gap, retried until the repair comes or
//!   the packet is too old; where transport-wide congestion control was negotiated, also
//!   feedback for the packets that carry the extension (publishers' links, and subscribers'
//!   in quality runs, where the relay estimates each subscriber's downlink from it).
//!
//! The feedback timing and the NACK retries come from the relay's own state machines (the same
//! algorithms a browser runs); what this module adds is the peer's side of the wire.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use relay::engine::rtcp::{self, nack, Feedback, NtpClock};
use relay::engine::twcc::TwccReceiver;
use relay::engine::{rtp, rtx};
use relay::sfu::feed::nack::NackGenerator;
use webrtcai_tests::peer::{PeerError, SrtpSender};

/// The header-extension id of the transport-wide sequence number in feedback runs.
pub const TRANSPORT_CC_ID: u8 = 3;
/// Its URI (draft-holmer-rmcat-transport-wide-cc-extensions-01).
pub const TRANSPORT_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
/// The RTX payload type that repairs video (payload type 96).
pub const VIDEO_RTX_PT: u8 = 97;

/// The id subscribers negotiate the playout-delay extension with (as signalling offers it).
pub const PLAYOUT_DELAY_ID: u8 = 12;
/// Video packets a publisher keeps for retransmission: about three seconds of a 1.5 Mbit/s
/// stream, more than the relay asks for (it gives up after one second).
const HISTORY: usize = 512;
/// Interval of receiver reports (Chromium's for video is about one second).
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// RTCP packet types and formats this module writes or looks for.
const PT_RR: u8 = 201;
const PT_XR: u8 = 207;
const PT_RTPFB: u8 = 205;
const FMT_TWCC: u8 = 15;

/// The header-extension elements (id, value) that name one stream: a simulcast layer's MID
/// and rid, or its RTX stream's MID and repaired rid.
pub type StreamName = Vec<(u8, Vec<u8>)>;

/// What a publisher's sending side counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct SenderCounts {
    /// Sequence numbers the server asked for.
    pub nacked: u64,
    /// Retransmissions sent for them.
    pub rtx_sent: u64,
    /// Congestion-feedback messages the server sent.
    pub twcc_received: u64,
}

/// A video stream's recent packets, by sequence number, and its RTX stream.
struct History {
    rtx_ssrc: u32,
    rtx_seq: u16,
    /// Oldest first; consecutive sequence numbers (the stream's own numbering).
    packets: VecDeque<(u16, Vec<u8>)>,
}

impl History {
    fn remember(&mut self, seq: u16, plain: &[u8]) {
        let mut slot = if self.packets.len() >= HISTORY {
            self.packets.pop_front().map(|(_, b)| b).unwrap_or_default()
        } else {
            Vec::with_capacity(plain.len())
        };
        slot.clear();
        slot.extend_from_slice(plain);
        self.packets.push_back((seq, slot));
    }

    fn get(&self, seq: u16) -> Option<&[u8]> {
        let (newest, _) = self.packets.back()?;
        let back = usize::from(newest.wrapping_sub(seq));
        let at = self.packets.len().checked_sub(1 + back)?;
        let (s, packet) = self.packets.get(at)?;
        (*s == seq).then_some(packet.as_slice())
    }
}

/// A publisher's sending side: media, retransmissions and RTCP all leave through it, from the
/// pacer thread and from the task that reads the publisher's socket (hence a lock around it).
pub struct MediaSender {
    link: SrtpSender,
    feedback: bool,
    transport_seq: u16,
    /// SSRC → the header-extension elements that name its stream (MID and rid of a simulcast
    /// layer, MID and repaired rid of its RTX stream), stamped on every packet as a browser
    /// does until the server acknowledges them.
    names: HashMap<u32, StreamName>,
    /// Media SSRC → its history, for the streams that are repaired.
    history: HashMap<u32, History>,
    stamped: Vec<u8>,
    wrapped: Vec<u8>,
    /// Share of media packets left unsent, as if lost on the publisher's link.
    loss: f64,
    /// What it counted.
    pub counts: SenderCounts,
}

impl MediaSender {
    /// Send through `link`; with `feedback`, stamp transport-wide sequence numbers and keep a
    /// history of the streams in `repaired` (media SSRC, RTX SSRC), and stamp the streams in
    /// `names` (SSRC, extension elements) with their names.
    pub fn new(
        link: SrtpSender,
        feedback: bool,
        repaired: &[(u32, u32)],
        names: &[(u32, StreamName)],
    ) -> Self {
        MediaSender {
            link,
            feedback,
            transport_seq: rand::random(),
            names: names.iter().cloned().collect(),
            history: repaired
                .iter()
                .filter(|_| feedback)
                .map(|&(media, rtx_ssrc)| {
                    (
                        media,
                        History {
                            rtx_ssrc,
                            rtx_seq: rand::random(),
                            packets: VecDeque::with_capacity(HISTORY),
                        },
                    )
                })
                .collect(),
            stamped: Vec::with_capacity(1500),
            wrapped: Vec::with_capacity(1500),
            loss: 0.0,
            counts: SenderCounts::default(),
        }
    }

    /// Leave this share of media packets unsent (still remembered, so a NACK repairs them).
    pub fn set_loss(&mut self, loss: f64) {
        self.loss = loss.clamp(0.0, 1.0);
    }

    fn lost(&self) -> bool {
        self.loss > 0.0 && rand::random::<f64>() < self.loss
    }

    /// Send a marshalled media packet (without header extensions of its own).
    pub fn send_media(&mut self, plain: &[u8]) -> Result<(), PeerError> {
        if !self.feedback {
            return match self.lost() {
                true => Ok(()),
                false => self.link.send_rtp(plain),
            };
        }
        if let Some(h) = rtp::parse(plain) {
            if let Some(history) = self.history.get_mut(&h.ssrc) {
                history.remember(h.sequence, plain);
            }
        }
        self.stamp(plain)?;
        match self.lost() {
            true => Ok(()),
            false => self.link.send_rtp(&self.stamped),
        }
    }

    /// Write `plain` into `self.stamped` with the next transport-wide sequence number and its
    /// stream's names.
    fn stamp(&mut self, plain: &[u8]) -> Result<(), PeerError> {
        let seq = self.transport_seq.to_be_bytes();
        let mut elements: [(u8, &[u8]); 4] =
            [(TRANSPORT_CC_ID, &seq), (0, &[]), (0, &[]), (0, &[])];
        let mut n = 1;
        if let Some(names) = rtp::peek_ssrc(plain).and_then(|ssrc| self.names.get(&ssrc)) {
            for (id, value) in names.iter().take(3) {
                elements[n] = (*id, value);
                n += 1;
            }
        }
        if !rtp::with_extensions(plain, &elements[..n], &mut self.stamped) {
            return Err(PeerError::Malformed("outgoing RTP"));
        }
        self.transport_seq = self.transport_seq.wrapping_add(1);
        Ok(())
    }

    /// Stamp `plain` with the next transport-wide sequence number and send it.
    fn send_stamped(&mut self, plain: &[u8]) -> Result<(), PeerError> {
        self.stamp(plain)?;
        self.link.send_rtp(&self.stamped)
    }

    /// Answer a NACK for `seqs` of `media_ssrc` with what the history still holds.
    pub fn answer_nack(&mut self, media_ssrc: u32, seqs: impl Iterator<Item = u16>) {
        for seq in seqs {
            self.counts.nacked += 1;
            let Some(history) = self.history.get_mut(&media_ssrc) else {
                continue;
            };
            let (rtx_ssrc, rtx_seq) = (history.rtx_ssrc, history.rtx_seq);
            let Some(original) = history.get(seq) else {
                continue;
            };
            if !rtx::wrap(original, VIDEO_RTX_PT, rtx_ssrc, rtx_seq, &mut self.wrapped) {
                continue;
            }
            history.rtx_seq = rtx_seq.wrapping_add(1);
            let wrapped = std::mem::take(&mut self.wrapped);
            if self.send_stamped(&wrapped).is_ok() {
                self.counts.rtx_sent += 1;
            }
            self.wrapped = wrapped;
        }
    }

    /// Send a marshalled RTCP packet.
    pub fn send_rtcp(&mut self, plain: &[u8]) -> Result<(), PeerError> {
        self.link.send_rtcp(plain)
    }

    /// Act on RTCP the server sent the publisher: answer its NACKs, count its congestion
    /// feedback. `scratch` is reused between calls.
    pub fn handle_rtcp(&mut self, plain: &[u8], scratch: &mut Vec<Feedback>) {
        self.counts.twcc_received += count_twcc(plain);
        scratch.clear();
        if rtcp::parse_feedback(plain, scratch).is_none() {
            return;
        }
        for f in scratch.drain(..) {
            if let Feedback::Nack { media_ssrc, entry } = f {
                self.answer_nack(media_ssrc, entry.sequences());
            }
        }
    }
}

/// Congestion-feedback messages in a compound RTCP packet.
fn count_twcc(mut rest: &[u8]) -> u64 {
    let mut n = 0;
    while rest.len() >= 4 {
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        if rest[1] == PT_RTPFB && rest[0] & 0x1f == FMT_TWCC {
            n += 1;
        }
        rest = rest.get(len..).unwrap_or_default();
    }
    n
}

/// What a receiver's feedback counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReceiverCounts {
    /// Receiver reports sent.
    pub reports: u64,
    /// Sequence numbers NACKed (each retry counts).
    pub nacked: u64,
    /// Congestion-feedback messages sent.
    pub twcc_sent: u64,
}

/// One received stream.
struct Received {
    nack: Option<NackGenerator>,
    /// Highest sequence number, extended (RFC 3550 A.1), and the first.
    highest: u64,
    first: u64,
    received: u64,
    /// Received and expected at the last report, for its fraction lost.
    prior: (u64, u64),
    /// Middle 32 bits of the server's last sender report about it, and when it arrived.
    last_sr: Option<(u32, Instant)>,
}

/// A receiving peer's RTCP toward the server, as a browser sends it.
pub struct ReceiverFeedback {
    ssrc: u32,
    ntp: NtpClock,
    /// Streams by SSRC.
    streams: HashMap<u32, Received>,
    /// RTX SSRC → the media SSRC it repairs.
    rtx: HashMap<u32, u32>,
    /// Transport-wide feedback, where it was negotiated.
    twcc: Option<TwccReceiver>,
    twcc_media_ssrc: Option<u32>,
    next_report: Instant,
    seqs: Vec<u16>,
    entries: Vec<(u16, u16)>,
    scratch: Vec<u8>,
    parsed: Vec<Feedback>,
    /// What it counted.
    pub counts: ReceiverCounts,
}

impl ReceiverFeedback {
    /// A receiver whose first report is due a report interval after `now`, which sends
    /// transport-wide feedback if `transport_cc` (it was negotiated for what it receives).
    pub fn new(now: Instant, transport_cc: bool) -> Self {
        ReceiverFeedback {
            ssrc: rand::random::<u32>() | 1,
            ntp: NtpClock::new(now, SystemTime::now()),
            streams: HashMap::new(),
            rtx: HashMap::new(),
            twcc: transport_cc.then(TwccReceiver::new),
            twcc_media_ssrc: None,
            next_report: now + REPORT_INTERVAL,
            seqs: Vec::new(),
            entries: Vec::new(),
            scratch: Vec::with_capacity(1500),
            parsed: Vec::new(),
            counts: ReceiverCounts::default(),
        }
    }

    /// Expect the repairs of `media_ssrc` on `rtx_ssrc` (as the SDP's `ssrc-group:FID` says).
    pub fn pair_rtx(&mut self, media_ssrc: u32, rtx_ssrc: u32) {
        self.rtx.insert(rtx_ssrc, media_ssrc);
    }

    /// Account for a decrypted RTP packet arriving at `now`.
    pub fn handle_rtp(&mut self, now: Instant, plain: &[u8]) {
        let Some(h) = rtp::parse(plain) else {
            return;
        };
        if let Some(twcc) = self.twcc.as_mut() {
            if let Some(seq) = rtp::transport_sequence(plain, TRANSPORT_CC_ID) {
                twcc.handle_packet(now, seq);
                self.twcc_media_ssrc.get_or_insert(h.ssrc);
            }
        }
        if let Some(media) = self.rtx.get(&h.ssrc) {
            // A repair: its original sequence number fills the gap in the media stream. (A
            // padding-only packet, which a server sends to probe the link, carries none.)
            let (Some(stream), Some(osn)) = (
                self.streams.get_mut(media),
                plain.get(h.header_len..h.header_len + h.payload_len.min(2)),
            ) else {
                return;
            };
            if osn.len() < 2 {
                return;
            }
            if let Some(nack) = stream.nack.as_mut() {
                nack.handle_packet(now, u16::from_be_bytes([osn[0], osn[1]]));
            }
            stream.received += 1;
            return;
        }
        let video = h.payload_type == 96;
        let stream = self.streams.entry(h.ssrc).or_insert_with(|| Received {
            nack: video.then(NackGenerator::default),
            highest: (1 << 16) + u64::from(h.sequence),
            first: (1 << 16) + u64::from(h.sequence),
            received: 0,
            prior: (0, 0),
            last_sr: None,
        });
        let delta = h.sequence.wrapping_sub(stream.highest as u16) as i16;
        if delta > 0 {
            stream.highest = stream.highest.wrapping_add_signed(i64::from(delta));
        }
        stream.received += 1;
        if let Some(nack) = stream.nack.as_mut() {
            nack.handle_packet(now, h.sequence);
        }
    }

    /// Read RTCP the server sent: its sender reports (for the LSR of our reports).
    pub fn handle_rtcp(&mut self, now: Instant, plain: &[u8]) {
        self.parsed.clear();
        if rtcp::parse_feedback(plain, &mut self.parsed).is_none() {
            return;
        }
        for f in &self.parsed {
            if let Feedback::SenderReport { ssrc, ntp, .. } = *f {
                if let Some(s) = self.streams.get_mut(&ssrc) {
                    s.last_sr = Some((rtcp::ntp_middle(ntp), now));
                }
            }
        }
    }

    /// When [`ReceiverFeedback::poll_rtcp`] has something to send.
    pub fn poll_timeout(&self) -> Instant {
        let nacks = self
            .streams
            .values()
            .filter_map(|s| s.nack.as_ref()?.poll_timeout());
        nacks
            .chain(self.twcc.as_ref().and_then(TwccReceiver::poll_timeout))
            .fold(self.next_report, Instant::min)
    }

    /// The RTCP due at `now`, one packet (compound or reduced-size) per call into `out`
    /// (cleared first); false when nothing is due.
    pub fn poll_rtcp(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        out.clear();
        if now >= self.next_report {
            self.next_report = now + REPORT_INTERVAL;
            self.write_report(now, out);
            self.counts.reports += 1;
            return true;
        }
        for (&ssrc, stream) in self.streams.iter_mut() {
            let Some(nack) = stream.nack.as_mut() else {
                continue;
            };
            if nack.poll_timeout().is_none_or(|t| t > now) {
                continue;
            }
            self.seqs.clear();
            nack.poll_nacks(now, &mut self.seqs);
            if self.seqs.is_empty() {
                continue;
            }
            self.counts.nacked += self.seqs.len() as u64;
            self.entries.clear();
            relay::sfu::feed::nack::pack(&self.seqs, &mut self.entries);
            let mut at = 0;
            while at < self.entries.len() {
                at += nack::write(self.ssrc, ssrc, &self.entries[at..], out);
            }
            return true;
        }
        let media = self.twcc_media_ssrc.unwrap_or(0);
        let Some(twcc) = self.twcc.as_mut() else {
            return false;
        };
        if twcc.poll_feedback(now, self.ssrc, media, &mut self.scratch) {
            out.extend_from_slice(&self.scratch);
            self.counts.twcc_sent += 1;
            return true;
        }
        false
    }

    /// A receiver report with a block per stream (at most 31) and an RRTR.
    fn write_report(&mut self, now: Instant, out: &mut Vec<u8>) {
        let blocks: Vec<[u8; 24]> = self
            .streams
            .iter_mut()
            .take(31)
            .map(|(&ssrc, s)| {
                let expected = s.highest + 1 - s.first;
                let lost = expected.saturating_sub(s.received);
                let (prior_received, prior_expected) = s.prior;
                let interval_expected = expected - prior_expected;
                let interval_lost = interval_expected.saturating_sub(s.received - prior_received);
                s.prior = (s.received, expected);
                let fraction = (interval_lost * 256)
                    .checked_div(interval_expected)
                    .map_or(0, |f| f.min(255) as u8);
                let (lsr, dlsr) = s.last_sr.map_or((0, 0), |(lsr, at)| {
                    (lsr, rtcp::dlsr_units(now.saturating_duration_since(at)))
                });
                let mut b = [0u8; 24];
                b[..4].copy_from_slice(&ssrc.to_be_bytes());
                let lost24 = (lost.min(0x7f_ffff) as u32).to_be_bytes();
                b[4] = fraction;
                b[5..8].copy_from_slice(&lost24[1..]);
                b[8..12].copy_from_slice(&(s.highest as u32).to_be_bytes());
                b[16..20].copy_from_slice(&lsr.to_be_bytes());
                b[20..24].copy_from_slice(&dlsr.to_be_bytes());
                b
            })
            .collect();
        out.extend_from_slice(&[0x80 | blocks.len() as u8, PT_RR]);
        out.extend_from_slice(&(1 + 6 * blocks.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        for b in &blocks {
            out.extend_from_slice(b);
        }
        // XR with one RRTR block (RFC 3611 §4.4): the server answers with a DLRR.
        out.extend_from_slice(&[0x80, PT_XR, 0, 4]);
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&[4, 0, 0, 2]);
        out.extend_from_slice(&self.ntp.ntp(now).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(ssrc: u32, pt: u8, seq: u16) -> Vec<u8> {
        let mut p = vec![0u8; 12 + 40];
        p[0] = 0x80;
        p[1] = pt;
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p
    }

    #[test]
    fn a_gap_is_nacked_and_its_repair_ends_the_retries() {
        let t0 = Instant::now();
        let mut f = ReceiverFeedback::new(t0, false);
        f.pair_rtx(5, 9);
        let mut out = Vec::new();
        f.handle_rtp(t0, &packet(5, 96, 10));
        f.handle_rtp(t0, &packet(5, 96, 13));
        assert!(f.poll_rtcp(t0, &mut out));
        let mut parsed = Vec::new();
        rtcp::parse_feedback(&out, &mut parsed).unwrap();
        let asked: Vec<u16> = parsed
            .iter()
            .flat_map(|p| match p {
                Feedback::Nack {
                    media_ssrc: 5,
                    entry,
                } => entry.sequences().collect(),
                _ => vec![],
            })
            .collect();
        assert_eq!(asked, [11, 12]);
        // Both repaired over RTX: nothing more to ask for.
        for osn in [11u16, 12] {
            let mut rtx = packet(9, VIDEO_RTX_PT, 1);
            rtx[12..14].copy_from_slice(&osn.to_be_bytes());
            f.handle_rtp(t0, &rtx);
        }
        let later = t0 + Duration::from_millis(500);
        assert!(!f.poll_rtcp(later, &mut out));
        assert_eq!(f.counts.nacked, 2);
    }

    #[test]
    fn reports_say_what_was_lost_and_carry_a_reference_time() {
        let t0 = Instant::now();
        let mut f = ReceiverFeedback::new(t0, false);
        for seq in (0..100u16).filter(|s| s % 10 != 0) {
            f.handle_rtp(t0, &packet(7, 111, seq));
        }
        let mut out = Vec::new();
        let at = t0 + REPORT_INTERVAL;
        assert!(f.poll_rtcp(at, &mut out));
        let mut parsed = Vec::new();
        rtcp::parse_feedback(&out, &mut parsed).unwrap();
        assert!(parsed
            .iter()
            .any(|p| matches!(p, Feedback::Report(b) if b.ssrc == 7)));
        // 9 of the 99 expected (1..=99) missing: fraction 256 * 9 / 99 = 23, cumulative 9.
        assert_eq!(&out[12..16], &[23, 0, 0, 9]);
        assert!(parsed
            .iter()
            .any(|p| matches!(p, Feedback::ReceiverTime(_))));
        assert_eq!(f.poll_timeout(), at + REPORT_INTERVAL);
    }

    #[test]
    fn congestion_feedback_only_where_it_was_negotiated() {
        let t0 = Instant::now();
        for negotiated in [true, false] {
            let mut f = ReceiverFeedback::new(t0, negotiated);
            let mut stamped = Vec::new();
            for seq in 0..5u16 {
                let seq_bytes = (1000 + seq).to_be_bytes();
                assert!(rtp::with_extension(
                    &packet(7, 111, seq),
                    TRANSPORT_CC_ID,
                    &seq_bytes,
                    &mut stamped
                ));
                f.handle_rtp(t0, &stamped);
            }
            // Before the first report is due, only congestion feedback can go out.
            let mut out = Vec::new();
            let soon = t0 + Duration::from_millis(200);
            assert_eq!(f.poll_rtcp(soon, &mut out), negotiated);
            assert_eq!(f.counts.twcc_sent, u64::from(negotiated));
            assert_eq!(count_twcc(&out), u64::from(negotiated));
        }
    }

    #[test]
    fn the_history_answers_what_it_still_holds() {
        let mut h = History {
            rtx_ssrc: 1,
            rtx_seq: 0,
            packets: VecDeque::new(),
        };
        for seq in 65_000u16..65_000 + HISTORY as u16 + 10 {
            h.remember(seq, &packet(5, 96, seq));
        }
        assert!(h.get(65_005).is_none(), "fell out of the history");
        let newest = 65_000u16.wrapping_add(HISTORY as u16 + 9);
        assert_eq!(rtp::parse(h.get(newest).unwrap()).unwrap().sequence, newest);
        assert!(h.get(newest.wrapping_add(1)).is_none());
    }

    #[test]
    fn twcc_messages_are_counted_in_a_compound() {
        let mut compound = vec![0x80, PT_RR, 0, 1, 0, 0, 0, 1];
        compound.extend_from_slice(&[0x80 | FMT_TWCC, PT_RTPFB, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]);
        compound.extend_from_slice(&[0x80 | FMT_TWCC, PT_RTPFB, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(count_twcc(&compound), 2);
        assert_eq!(count_twcc(&[0x80, PT_RTPFB, 0xff, 0xff]), 0);
    }
}
