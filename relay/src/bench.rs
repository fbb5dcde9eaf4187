//! The per-copy work of forwarding as self-contained workloads, so that its cost shows
//! without a network: the micro-benchmarks in `relay/benches/per_copy.rs` time them, and
//! `benches/callgrind.sh` counts their instructions under callgrind, which is deterministic
//! where time on a shared machine is not.
//!
//! Each workload prepares its input apart ([`FanOut::prepare`], [`RtxLookup::prepare`]: the
//! sealing that a browser, not the relay, does) and does one unit of the relay's work in a
//! `run` that is never inlined, so that callgrind can collect it alone
//! (`--toggle-collect='relay::bench::*::run'`).

use std::time::{Duration, Instant};

use crate::engine::bwe::send_history::SendHistory;
use crate::engine::playout_delay::PlayoutDelay;
use crate::engine::rtp;
use crate::engine::srtp::{SrtpKeys, SrtpProfile, SrtpSession};
use crate::fuzzing::{harness_with_config, Harness, PUBLISHER_SSRC, TWCC_EXTENSION};
use crate::sfu::consumer::rewriter::Rewriter;
use crate::sfu::feed::packet_cache::CACHE_PACKETS;
use crate::sfu::worker::{Output, Transmit, WorkerConfig};

/// Payload bytes of every packet: a video packet as browsers cut them.
pub const PAYLOAD: usize = 1200;

/// Virtual time between two packets of the publisher: 1,200 bytes every 5 ms (about
/// 2 Mbit/s) stays below what a subscriber's pacer lets through at once, so each copy leaves
/// as the packet is handled.
const PACKET_INTERVAL: Duration = Duration::from_millis(5);

/// A video packet as a browser sends it: a transport-wide sequence number in a one-byte
/// header extension (which the relay records for the publisher's congestion feedback), then
/// the payload.
pub fn browser_packet(seq: u16) -> Vec<u8> {
    let mut p = vec![0x90, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq).wrapping_mul(3000)).to_be_bytes());
    p.extend_from_slice(&PUBLISHER_SSRC.to_be_bytes());
    let transport = seq.wrapping_add(7).to_be_bytes();
    p.extend_from_slice(&[0xbe, 0xde, 0, 1, TWCC_EXTENSION << 4 | 1]);
    p.extend_from_slice(&[transport[0], transport[1], 0]);
    p.extend(std::iter::repeat_n(0x5a, PAYLOAD));
    p
}

/// What the I/O layer does with a worker's output: take the datagrams, hand their buffers
/// back once sent. Returns the RTP datagrams among them.
pub fn drain(h: &mut Harness, sent: &mut Vec<Transmit>) -> usize {
    while let Some(o) = h.worker.poll_output() {
        if let Output::Transmit(t) = o {
            sent.push(t);
        }
    }
    let rtp = sent
        .iter()
        .filter(|t| !(192..=223).contains(&t.contents[1]))
        .count();
    for t in sent.drain(..) {
        h.worker.recycle(t.contents);
    }
    rtp
}

/// What the subscribers do with the worker's output: each notes the transport-wide number of
/// the RTP it got in `receivers[i]`, arrived at once. Returns the RTP datagrams (media, repairs
/// and probes).
fn receive(h: &mut Harness, receivers: &mut [crate::engine::twcc::TwccReceiver]) -> usize {
    let mut copies = 0;
    let mut plain = Vec::with_capacity(2048);
    while let Some(o) = h.worker.poll_output() {
        let Output::Transmit(t) = o else { continue };
        let to = h.subscribers.iter().position(|a| *a == t.destination);
        if let (Some(i), false) = (to, (192..=223).contains(&t.contents[1])) {
            if h.clients[i + 1]
                .unprotect_rtp(&t.contents, &mut plain)
                .is_ok()
            {
                copies += 1;
                if let Some(n) = rtp::transport_sequence(&plain, TWCC_EXTENSION) {
                    receivers[i].handle_packet(h.now, n);
                }
            }
        }
        h.worker.recycle(t.contents);
    }
    copies
}

/// Run the worker's timers that are due.
fn fire_timers(h: &mut Harness) {
    while let Some(at) = h.worker.poll_timeout().filter(|at| *at <= h.now) {
        h.worker.handle_timeout(at.max(h.now));
    }
}

/// A copy's header made the subscriber's: its sequence number and timestamp from the
/// subscriber stream's rewriter, its MID, the playout delay and a transport-wide number as
/// header extensions, written into the copy's buffer as the fan-out does.
pub struct HeaderRewrite {
    rewriter: Rewriter,
    packet: Vec<u8>,
    out: Vec<u8>,
    seq: u16,
    now: Instant,
    delay: [u8; 3],
}

impl Default for HeaderRewrite {
    fn default() -> Self {
        HeaderRewrite {
            rewriter: Rewriter::new(1000, 50_000),
            packet: browser_packet(1),
            out: Vec::with_capacity(1500),
            seq: 1,
            now: Instant::now(),
            delay: PlayoutDelay::new(Duration::ZERO, Duration::from_secs(10)).to_bytes(),
        }
    }
}

impl HeaderRewrite {
    /// Rewrite the next packet's copy; returns its length.
    #[inline(never)]
    pub fn run(&mut self) -> usize {
        self.seq = self.seq.wrapping_add(1);
        self.now += PACKET_INTERVAL;
        let ts = u32::from(self.seq).wrapping_mul(3000);
        self.packet[2..4].copy_from_slice(&self.seq.to_be_bytes());
        self.packet[4..8].copy_from_slice(&ts.to_be_bytes());
        let Some((seq, ts)) = self
            .rewriter
            .rewrite(self.now, PUBLISHER_SSRC, self.seq, ts, 90_000)
        else {
            return 0;
        };
        let elements: [(u8, &[u8]); 3] = [(1, b"1"), (12, &self.delay), (3, &[0, 0])];
        let Some(at) = rtp::with_extensions_at(&self.packet, &elements, &mut self.out) else {
            return 0;
        };
        rtp::rewrite(&mut self.out, 0xabcd, seq, ts);
        self.out[at..at + 2].copy_from_slice(&seq.to_be_bytes());
        self.out.len()
    }
}

/// SRTP protection of one copy in its buffer, as the relay seals each copy.
pub struct Protect {
    session: SrtpSession,
    packet: Vec<u8>,
    buf: Vec<u8>,
}

impl Protect {
    /// Sealing with `profile` under fixed keys.
    pub fn new(profile: SrtpProfile) -> Self {
        let (key, salt) = match profile {
            SrtpProfile::AeadAes128Gcm => (16, 12),
            SrtpProfile::Aes128CmHmacSha1_80 => (16, 14),
        };
        let keys = SrtpKeys {
            profile,
            local_key: vec![7; key],
            local_salt: vec![9; salt],
            remote_key: vec![8; key],
            remote_salt: vec![10; salt],
        };
        Protect {
            session: SrtpSession::new(&keys).expect("key lengths of the profile"),
            packet: browser_packet(1),
            buf: Vec::with_capacity(1500),
        }
    }

    /// Seal one copy; returns its length.
    #[inline(never)]
    pub fn run(&mut self) -> usize {
        self.buf.clear();
        self.buf.extend_from_slice(&self.packet);
        if self.session.protect_rtp(&mut self.buf).is_err() {
            return 0;
        }
        self.buf.len()
    }
}

/// One packet from the publisher to every subscriber through the core's whole path: demux,
/// source check, SRTP unprotect, the feed's bookkeeping (receive statistics, packet cache,
/// transport-wide record), for each subscriber the header rewrite, transport-wide number and
/// send record, its pacer, SRTP protect and the output queue, then the buffers' return.
pub struct FanOut {
    h: Harness,
    seq: u16,
    sent: Vec<Transmit>,
}

impl FanOut {
    /// A core with one publisher and `subscribers` subscribers (transport-wide feedback, RTX
    /// and playout delay negotiated, as browsers do), warmed up with 200 packets. The
    /// subscribers send nothing, so their consent never expires here: a benchmark runs for
    /// hours of virtual time.
    pub fn new(subscribers: usize, profile: SrtpProfile) -> Self {
        let config = WorkerConfig {
            consent_timeout: Duration::from_secs(10 * 365 * 86_400),
            ..WorkerConfig::default()
        };
        let mut f = FanOut {
            h: harness_with_config(subscribers, profile, config),
            seq: 0,
            sent: Vec::with_capacity(subscribers * 2),
        };
        for _ in 0..200 {
            let p = f.prepare();
            f.forward(&p);
        }
        f
    }

    /// The publisher's next packet, sealed.
    pub fn prepare(&mut self) -> Vec<u8> {
        self.seq = self.seq.wrapping_add(1);
        let mut p = browser_packet(self.seq);
        self.h.clients[0]
            .protect_rtp(&mut p)
            .expect("the publisher's keys");
        p
    }

    /// Hand the core `datagram` 5 ms after the last one; returns the RTP copies it sent.
    #[inline(never)]
    pub fn run(&mut self, datagram: &[u8]) -> usize {
        self.forward(datagram)
    }

    /// Hand the core `packets` of the publisher's next packets at the instant of the last, as
    /// a keyframe comes; returns the copies sent at once. The subscribers' pacers hold the rest
    /// for their timers, which this does not run.
    pub fn burst(&mut self, packets: usize) -> usize {
        for _ in 0..packets {
            let p = self.prepare();
            let (now, publisher) = (self.h.now, self.h.publisher);
            self.h.worker.handle_receive(now, None, publisher, &p);
        }
        drain(&mut self.h, &mut self.sent)
    }

    /// Transport-wide feedback messages the core has taken in.
    pub fn feedback_taken(&self) -> u64 {
        self.h.worker.stats().twcc_feedback_received
    }

    /// Forward the publisher's next packet 5 ms after the last; subscriber `i`'s
    /// `receivers[i]` notes the transport-wide number of its copy, and with `feedback` every
    /// subscriber then sends its transport-wide feedback, as a browser does every 50–100 ms.
    /// Returns the RTP copies sent.
    pub fn forward_with_feedback(
        &mut self,
        receivers: &mut [crate::engine::twcc::TwccReceiver],
        feedback: bool,
    ) -> usize {
        self.publish_next();
        let h = &mut self.h;
        let now = h.now;
        let mut copies = receive(h, receivers);
        if feedback {
            let mut message = Vec::with_capacity(1500);
            for (i, receiver) in receivers.iter_mut().enumerate() {
                while receiver.poll_feedback(now, 0x77, 0, &mut message) {
                    if let Ok(sealed) = h.clients[i + 1].protect_rtcp(&message) {
                        let from = h.subscribers[i];
                        h.worker.handle_receive(now, None, from, &sealed);
                    }
                }
            }
            fire_timers(h);
            copies += receive(h, receivers);
        }
        copies
    }

    /// Forward the publisher's next packet 5 ms after the last and return, decrypted, what
    /// the first subscriber got: for workloads that need the numbers it was sent under.
    fn forward_to_first(&mut self) -> Vec<(Vec<u8>, usize)> {
        self.publish_next();
        self.h.rtp_to(0)
    }

    /// Hand the core the publisher's next packet 5 ms after the last, and run its timers.
    fn publish_next(&mut self) {
        let p = self.prepare();
        let h = &mut self.h;
        h.now += PACKET_INTERVAL;
        let (now, publisher) = (h.now, h.publisher);
        h.worker.handle_receive(now, None, publisher, &p);
        fire_timers(h);
    }

    /// [`FanOut::run`], for the set-up (which callgrind must not count).
    fn forward(&mut self, datagram: &[u8]) -> usize {
        self.h.now += PACKET_INTERVAL;
        let (now, publisher) = (self.h.now, self.h.publisher);
        self.h.worker.handle_receive(now, None, publisher, datagram);
        fire_timers(&mut self.h);
        drain(&mut self.h, &mut self.sent)
    }
}

/// A subscriber's NACK of one packet answered: SRTCP unprotect, the NACK read, the packet
/// found in the feed's cache through the subscriber stream's rewriter, rebuilt as RTX
/// (RFC 4588) on the subscriber's RTX stream, sealed and queued.
pub struct RtxLookup {
    core: FanOut,
    /// The subscriber's media SSRC and the outgoing sequence numbers not NACKed yet.
    media_ssrc: u32,
    unasked: std::collections::VecDeque<u16>,
    sent: Vec<Transmit>,
}

impl RtxLookup {
    /// A core with one publisher and one subscriber whose cache is full.
    pub fn new(profile: SrtpProfile) -> Self {
        let mut r = RtxLookup {
            core: FanOut::new(1, profile),
            media_ssrc: 0,
            unasked: std::collections::VecDeque::new(),
            sent: Vec::new(),
        };
        r.refill();
        r
    }

    /// Forward a cache's worth of packets and note their outgoing numbers.
    fn refill(&mut self) {
        for _ in 0..CACHE_PACKETS {
            for (plain, _) in self.core.forward_to_first() {
                if let Some(header) = rtp::parse(&plain) {
                    self.media_ssrc = header.ssrc;
                    self.unasked.push_back(header.sequence);
                }
            }
        }
        // Only the newest half: the oldest may be overwritten by the next refill's first.
        let keep = self.unasked.len() / 2;
        self.unasked.drain(..self.unasked.len() - keep);
    }

    /// The subscriber's next NACK, sealed (forwarding more packets first if every cached one
    /// was asked for).
    pub fn prepare(&mut self) -> Vec<u8> {
        use webrtc_util::marshal::Marshal;
        if self.unasked.is_empty() {
            self.refill();
        }
        let seq = self.unasked.pop_front().unwrap_or_default();
        let nack = rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: self.media_ssrc,
            nacks: vec![rtcp::transport_feedbacks::transport_layer_nack::NackPair {
                packet_id: seq,
                lost_packets: 0,
            }],
        }
        .marshal()
        .map(|b| b.to_vec())
        .unwrap_or_default();
        self.core.h.clients[1]
            .protect_rtcp(&nack)
            .unwrap_or_default()
    }

    /// Hand the core the subscriber's NACK 5 ms later (the repairs' rate stays below what
    /// the subscriber's pacer lets through at once); returns the RTP datagrams it sent (one
    /// retransmission).
    #[inline(never)]
    pub fn run(&mut self, datagram: &[u8]) -> usize {
        let h = &mut self.core.h;
        h.now += PACKET_INTERVAL;
        let (now, from) = (h.now, h.subscribers[0]);
        h.worker.handle_receive(now, None, from, datagram);
        fire_timers(h);
        drain(h, &mut self.sent)
    }
}

/// A subscriber's transport-wide feedback on 10 packets handled: SRTCP unprotect, the
/// feedback read, its packets found in the send history, the bandwidth estimator (arrival
/// rate, delay trend, loss) and the subscriber's layer choice. Browsers send one every
/// 50–100 ms per subscriber: at fan-out 100, one for about every ten copies forwarded.
pub struct TwccFeedback {
    core: FanOut,
    receiver: crate::engine::twcc::TwccReceiver,
    feedback: Vec<u8>,
    sent: Vec<Transmit>,
}

/// Packets each feedback message reports on.
const PACKETS_PER_FEEDBACK: usize = 10;

impl TwccFeedback {
    /// A core with one publisher and one subscriber that negotiated transport-wide feedback.
    pub fn new(profile: SrtpProfile) -> Self {
        TwccFeedback {
            core: FanOut::new(1, profile),
            receiver: crate::engine::twcc::TwccReceiver::new(),
            feedback: Vec::with_capacity(1500),
            sent: Vec::new(),
        }
    }

    /// Forward the next 10 packets and return the subscriber's feedback on them, sealed (they
    /// arrived 20 ms after they left).
    pub fn prepare(&mut self) -> Vec<u8> {
        let mut arrivals = Vec::with_capacity(PACKETS_PER_FEEDBACK);
        for _ in 0..PACKETS_PER_FEEDBACK {
            let arrived = self.core.h.now + PACKET_INTERVAL + Duration::from_millis(20);
            for (plain, _) in self.core.forward_to_first() {
                if let Some(number) = rtp::transport_sequence(&plain, 3) {
                    arrivals.push((arrived, number));
                }
            }
        }
        let h = &mut self.core.h;
        for (at, number) in arrivals {
            self.receiver.handle_packet(at, number);
        }
        h.now += Duration::from_millis(20);
        self.feedback.clear();
        // Due once its interval has passed since the last one.
        let mut at = h.now;
        while !self.receiver.poll_feedback(at, 0x77, 0, &mut self.feedback) {
            at += Duration::from_millis(10);
        }
        h.now = h.now.max(at);
        h.clients[1]
            .protect_rtcp(&self.feedback)
            .unwrap_or_default()
    }

    /// Hand the core the subscriber's feedback; returns the datagrams it sent in answer (none,
    /// or a probe or a report that fell due).
    #[inline(never)]
    pub fn run(&mut self, datagram: &[u8]) -> usize {
        let h = &mut self.core.h;
        let (now, from) = (h.now, h.subscribers[0]);
        h.worker.handle_receive(now, None, from, datagram);
        fire_timers(h);
        drain(h, &mut self.sent)
    }

    /// Feedback messages the core has taken in.
    pub fn taken(&self) -> u64 {
        self.core.h.worker.stats().twcc_feedback_received
    }
}

/// The record of one copy's transport-wide number kept for the subscriber's feedback.
pub struct TwccRecording {
    history: SendHistory,
    now: Instant,
}

impl Default for TwccRecording {
    fn default() -> Self {
        TwccRecording {
            history: SendHistory::default(),
            now: Instant::now(),
        }
    }
}

impl TwccRecording {
    /// Record one 1,240-byte copy 50 µs after the last; returns its number.
    #[inline(never)]
    pub fn run(&mut self) -> i64 {
        self.now += Duration::from_micros(50);
        self.history.handle_sent(self.now, PAYLOAD + 40, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fan_out_goes_on_for_hours_of_virtual_time() {
        // 10 minutes at a packet every 5 ms, past any timeout of a silent subscriber.
        let mut f = FanOut::new(3, SrtpProfile::AeadAes128Gcm);
        for i in 0..120_000 {
            let p = f.prepare();
            assert_eq!(f.run(&p), 3, "packet {i}");
        }
    }

    #[test]
    fn every_workload_does_its_work() {
        // The packet's own element (id 3, 2 bytes) becomes the transport-wide number; the MID
        // and playout delay join it: 2 + 4 + 3 bytes of elements, padded to 12, after the
        // 4-byte extension header, where the packet had 4 + 4.
        assert_eq!(HeaderRewrite::default().run(), browser_packet(1).len() + 8);
        for profile in [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80] {
            let tag = if profile == SrtpProfile::AeadAes128Gcm {
                16
            } else {
                10
            };
            assert_eq!(Protect::new(profile).run(), browser_packet(1).len() + tag);
            let mut f = FanOut::new(10, profile);
            let p = f.prepare();
            assert_eq!(f.run(&p), 10);
            let mut r = RtxLookup::new(profile);
            for _ in 0..CACHE_PACKETS {
                let nack = r.prepare();
                assert_eq!(r.run(&nack), 1, "one retransmission per NACK");
            }
        }
        let mut t = TwccRecording::default();
        assert_eq!(t.run() + 1, t.run());
        let mut f = TwccFeedback::new(SrtpProfile::AeadAes128Gcm);
        for _ in 0..100 {
            let feedback = f.prepare();
            f.run(&feedback);
        }
        assert_eq!(f.taken(), 100, "every feedback message taken in");
    }
}
