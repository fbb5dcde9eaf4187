//! A core with data channels, for the data tests and fuzz targets: the worker harness's three
//! participants, each with an SCTP client over its (here imaginary) DTLS as a browser has.

use std::time::Duration;

use bytes::Bytes;

use crate::control::{Event, ParticipantConfig};
use crate::engine::sctp::{DataChannels, Message, MAX_MESSAGE_SIZE};
use crate::engine::srtp::SrtpProfile;
use crate::ids::{ParticipantKey, Sid, Uid};
use crate::sfu::data::envelope::{address, Delivered};
use crate::sfu::worker::{Output, WorkerConfig};

use super::{harness_with_config, Harness};

/// The harness's publisher, and its two subscribers, each with an SCTP client.
pub struct DataHarness {
    /// The worker, its clock and the media peers.
    pub h: Harness,
    /// Each participant: its uid, the worker's key for it, its SCTP client.
    pub peers: Vec<(Uid, ParticipantKey, DataChannels)>,
    /// Events the worker reported.
    pub events: Vec<Event>,
}

impl DataHarness {
    /// "pub" may send data, "sub0" and "sub1" only receive.
    pub fn new(config: WorkerConfig) -> DataHarness {
        Self::start(config, false)
    }

    /// As [`DataHarness::new`]; with `late`, "sub1" has not connected its association yet (see
    /// [`DataHarness::connect_late`]).
    pub fn start(config: WorkerConfig, late: bool) -> DataHarness {
        let mut h = harness_with_config(2, SrtpProfile::AeadAes128Gcm, config);
        let sid = Sid::from("s");
        let mut peers = Vec::new();
        for uid in ["pub", "sub0", "sub1"] {
            let uid = Uid::from(uid);
            let key = h.worker.participant_key(&sid, &uid).unwrap();
            let update = ParticipantConfig {
                remote_ufrag: Some("peer".into()),
                publish_data: uid.0 == "pub",
                ..Default::default()
            };
            h.worker.update_participant(&sid, &uid, update).unwrap();
            let channels = if late && uid.0 == "sub1" {
                // Idle: a server side sends nothing until it hears from a client.
                DataChannels::default()
            } else {
                DataChannels::client(h.now, MAX_MESSAGE_SIZE as usize)
            };
            peers.push((uid, key, channels));
        }
        let mut s = DataHarness {
            h,
            peers,
            events: Vec::new(),
        };
        s.pump();
        // Reading takes in the relay's OPENs (and answers them).
        for i in 0..3 {
            assert!(s.received(i).is_empty());
        }
        s
    }

    /// "sub1" connects its association.
    pub fn connect_late(&mut self) {
        self.peers[2].2 = DataChannels::client(self.h.now, MAX_MESSAGE_SIZE as usize);
        self.pump();
    }

    /// Move SCTP packets between the peers and the worker until none are left.
    pub fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for (_, key, channels) in &mut self.peers {
                while let Some(p) = channels.poll_transmit() {
                    self.h.worker.handle_sctp(self.h.now, *key, &p);
                    moved = true;
                }
            }
            while let Some(o) = self.h.worker.poll_output() {
                match o {
                    Output::Sctp { key, packet } => {
                        let (_, _, c) = self.peers.iter_mut().find(|p| p.1 == key).unwrap();
                        c.handle_packet(self.h.now, &packet);
                        moved = true;
                    }
                    Output::Event(e) => self.events.push(e),
                    _ => {}
                }
            }
            if !moved {
                return;
            }
        }
        panic!("packets never stopped");
    }

    /// Let `d` pass in 5 ms steps, with everyone's timers.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.h.now + d;
        while self.h.now < end {
            self.h.now += Duration::from_millis(5);
            for (_, _, c) in &mut self.peers {
                c.handle_timeout(self.h.now);
            }
            self.h.run_timers();
            self.pump();
        }
    }

    /// Peer `from` sends `payload` to `targets` (everyone when empty) on `stream`.
    pub fn send(&mut self, from: usize, stream: u16, targets: &[&str], payload: &[u8]) {
        let now = self.h.now;
        let bytes = Bytes::from(address(false, targets, payload));
        self.peers[from].2.send(now, stream, false, &bytes).unwrap();
        self.pump();
    }

    /// What peer `i` received since the last call: (stream, sender, payload).
    pub fn received(&mut self, i: usize) -> Vec<(u16, String, Vec<u8>)> {
        self.read_at_most(i, usize::MAX)
    }

    /// As [`DataHarness::received`], but at most `n` messages: an application that reads
    /// slowly, whose SCTP window closes while the rest waits.
    pub fn read_at_most(&mut self, i: usize, n: usize) -> Vec<(u16, String, Vec<u8>)> {
        let got = take(&mut self.peers[i].2, self.h.now, n);
        self.pump();
        got
    }
}

/// At most `n` messages `client` has for its application: (stream, sender, payload).
fn take(
    client: &mut DataChannels,
    now: std::time::Instant,
    n: usize,
) -> Vec<(u16, String, Vec<u8>)> {
    std::iter::from_fn(|| client.read(now))
        .take(n)
        .map(|m: Message| {
            let d = Delivered::parse(&m.data).expect("the relay's envelope reads");
            (m.stream, d.from.to_owned(), d.payload.to_vec())
        })
        .collect()
}

/// DCEP messages: what reads writes back the same.
pub fn dcep(data: &[u8]) {
    use crate::engine::dcep::Message;
    if let Ok(m) = Message::parse(data) {
        let bytes = m.to_bytes();
        assert_eq!(Message::parse(&bytes), Ok(m));
        // An OPEN reads from its first bytes; anything after its label and protocol is ignored.
        assert!(bytes.len() <= data.len());
    }
}

/// Data-channel envelopes, both ways: what reads writes back the same.
pub fn data_envelope(data: &[u8]) {
    use crate::sfu::data::envelope::Addressed;
    if let Ok(a) = Addressed::parse(data) {
        let targets: Vec<&str> = a.targets().collect();
        assert_eq!(targets.is_empty(), a.to_everyone());
        assert_eq!(address(a.text, &targets, a.payload), data);
        assert!(!a.text || std::str::from_utf8(a.payload).is_ok());
    }
    if let Ok(d) = Delivered::parse(data) {
        assert_eq!(d.to_bytes(), data);
    }
}

/// A core's data-channel path: the input is a sequence of `[flags][len_hi][len_lo][bytes…]`.
/// Flags: bits 0–1 the participant (pub, sub0, sub1); bit 2 the bytes go as a message on its
/// reliable channel (bit 3: the lossy one) through its SCTP client, else straight to the worker
/// as an SCTP packet (bit 6: with a valid SCTP header and checksum, so the fuzzer reaches the
/// chunks); bits 4–5 let time pass (0, 10 ms, 1 s, 31 s).
pub fn data(data: &[u8]) {
    let mut s = DataHarness::new(WorkerConfig::default());
    let mut rest = data;
    while rest.len() >= 3 {
        let flags = rest[0];
        let len = (u16::from_be_bytes([rest[1], rest[2]]) as usize).min(rest.len() - 3);
        let bytes = &rest[3..3 + len];
        rest = &rest[3 + len..];
        let who = usize::from(flags & 3) % 3;
        let now = s.h.now;
        if flags & 0x0c != 0 {
            let stream = if flags & 4 != 0 {
                crate::sfu::data::RELIABLE_STREAM
            } else {
                crate::sfu::data::LOSSY_STREAM
            };
            let _ = s.peers[who]
                .2
                .send(now, stream, false, &Bytes::copy_from_slice(bytes));
        } else {
            let key = s.peers[who].1;
            let packet = if flags & 0x40 != 0 {
                sctp_packet(bytes)
            } else {
                bytes.to_vec()
            };
            s.h.worker.handle_sctp(now, key, &packet);
        }
        s.pump();
        for i in 0..3 {
            for (_, from, _) in s.received(i) {
                // Only the participant allowed to send is ever heard, and never by itself.
                assert_eq!((from.as_str(), i == 0), ("pub", false));
            }
        }
        let step = match (flags >> 4) & 3 {
            0 => Duration::ZERO,
            1 => Duration::from_millis(10),
            2 => Duration::from_secs(1),
            _ => Duration::from_secs(31),
        };
        if !step.is_zero() {
            s.run_for(step.min(Duration::from_secs(1)));
            s.h.now += step.saturating_sub(Duration::from_secs(1));
            s.h.run_timers();
            s.pump();
        }
    }
}

/// `chunks` behind an SCTP common header for port 5000 with no verification tag, and its
/// checksum: what an association's parser gets past the checksum with.
fn sctp_packet(chunks: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + chunks.len());
    p.extend_from_slice(&5000u16.to_be_bytes());
    p.extend_from_slice(&5000u16.to_be_bytes());
    p.extend_from_slice(&[0; 8]);
    p.extend_from_slice(chunks);
    // CRC32c over the packet with the field zero, stored little-endian (RFC 9260 appendix A).
    const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    let sum = CRC32C.checksum(&p);
    p[8..12].copy_from_slice(&sum.to_le_bytes());
    p
}

/// Data channels across two cores of one session: "pub" (who may send) on core 0, "far" on
/// core 1 ([`super::spread_harness`]), each with an SCTP client, and the cores' messages to
/// each other carried at once.
pub struct SpreadDataHarness {
    /// The two cores and their clock (the origin's).
    pub sp: super::SpreadHarness,
    /// Each participant: its uid, the worker's key for it, its core, its SCTP client.
    pub peers: Vec<(Uid, ParticipantKey, usize, DataChannels)>,
    /// Messages the cores handed each other.
    pub crossed: usize,
}

impl Default for SpreadDataHarness {
    fn default() -> Self {
        let mut sp = super::spread_harness(SrtpProfile::AeadAes128Gcm);
        let sid = Sid::from("s");
        let now = sp.origin.now;
        sp.origin.worker.set_session_cores(&sid, &[0, 1]).unwrap();
        sp.sink.set_session_cores(&sid, &[0, 1]).unwrap();
        let mut peers = Vec::new();
        for (uid, core) in [("pub", 0), ("far", 1)] {
            let uid = Uid::from(uid);
            let update = ParticipantConfig {
                remote_ufrag: Some("peer".into()),
                publish_data: uid.0 == "pub",
                ..Default::default()
            };
            let worker = match core {
                0 => &mut sp.origin.worker,
                _ => &mut sp.sink,
            };
            worker.update_participant(&sid, &uid, update).unwrap();
            let key = worker.participant_key(&sid, &uid).unwrap();
            let channels = DataChannels::client(now, MAX_MESSAGE_SIZE as usize);
            peers.push((uid, key, core, channels));
        }
        let mut s = SpreadDataHarness {
            sp,
            peers,
            crossed: 0,
        };
        s.pump();
        // Reading takes in the relay's OPENs (and answers them).
        for i in 0..2 {
            assert!(s.read_at_most(i, usize::MAX).is_empty());
        }
        s
    }
}

impl SpreadDataHarness {
    /// Move SCTP packets between the peers and their cores, and messages between the cores,
    /// until none are left.
    pub fn pump(&mut self) {
        let now = self.sp.origin.now;
        for _ in 0..10_000 {
            let mut moved = false;
            for (_, key, core, channels) in &mut self.peers {
                while let Some(p) = channels.poll_transmit() {
                    match core {
                        0 => self.sp.origin.worker.handle_sctp(now, *key, &p),
                        _ => self.sp.sink.handle_sctp(now, *key, &p),
                    }
                    moved = true;
                }
            }
            for core in 0..2 {
                loop {
                    let output = match core {
                        0 => self.sp.origin.worker.poll_output(),
                        _ => self.sp.sink.poll_output(),
                    };
                    let Some(output) = output else {
                        break;
                    };
                    match output {
                        Output::Sctp { key, packet } => {
                            if let Some(peer) =
                                self.peers.iter_mut().find(|p| p.1 == key && p.2 == core)
                            {
                                peer.3.handle_packet(now, &packet);
                                moved = true;
                            }
                        }
                        Output::CrossCore { core: 1, message } => {
                            self.crossed += 1;
                            self.sp.sink.handle_cross_core(now, message);
                            moved = true;
                        }
                        Output::CrossCore { core: 0, message } => {
                            self.crossed += 1;
                            self.sp.origin.worker.handle_cross_core(now, message);
                            moved = true;
                        }
                        _ => {}
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("packets never stopped");
    }

    /// Let `d` pass in 5 ms steps, with everyone's timers.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.sp.origin.now + d;
        while self.sp.origin.now < end {
            self.sp.origin.now += Duration::from_millis(5);
            let now = self.sp.origin.now;
            for (_, _, _, c) in &mut self.peers {
                c.handle_timeout(now);
            }
            self.sp.origin.run_timers();
            while let Some(at) = self.sp.sink.poll_timeout().filter(|at| *at <= now) {
                self.sp.sink.handle_timeout(at.max(now));
            }
            self.pump();
        }
    }

    /// What peer `i` received since the last call, at most `n` messages: (stream, sender,
    /// payload).
    pub fn read_at_most(&mut self, i: usize, n: usize) -> Vec<(u16, String, Vec<u8>)> {
        let got = take(&mut self.peers[i].3, self.sp.origin.now, n);
        self.pump();
        got
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_packet_built_here_passes_the_sctp_checksum() {
        // An INIT: tag 7, window 64 KiB, 16 streams each way, initial TSN 1.
        let init = [
            1, 0, 0, 20, 0, 0, 0, 7, 0, 1, 0, 0, 0, 16, 0, 16, 0, 0, 0, 1,
        ];
        let mut server = DataChannels::default();
        server.handle_packet(Instant::now(), &sctp_packet(&init));
        assert!(server.poll_transmit().is_some(), "an INIT ACK");
        let mut bad = sctp_packet(&init);
        bad[8] ^= 1;
        let mut server = DataChannels::default();
        server.handle_packet(Instant::now(), &bad);
        assert!(server.poll_transmit().is_none());
    }

    #[test]
    fn the_data_target_routes_what_the_sender_may_send() {
        // pub sends "hi" to everyone on its reliable channel, then sub0 tries the same.
        let message = address(true, &[], b"hi");
        let mut input = Vec::new();
        for who in [0u8, 1] {
            input.push(4 | who);
            input.extend_from_slice(&(message.len() as u16).to_be_bytes());
            input.extend_from_slice(&message);
        }
        data(&input);
    }
}
