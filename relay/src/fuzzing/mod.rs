//! Entry points for the fuzz targets in `fuzz/` and for the stable test that replays their
//! corpora. Each takes arbitrary bytes and must return without panicking; properties that
//! must hold for every input are asserted here, so a fuzzer finds their violations too.

pub mod data;
pub mod dtls;
pub mod record;

use std::net::SocketAddr;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::control::{FeedDescription, MediaKind, ParticipantConfig};
use crate::engine::client_hello::ClientHello;
use crate::engine::ice_lite::{binding_request, BindingRequest, IceCredentials, IceLite};
use crate::engine::srtp::{SrtpKeys, SrtpProfile, SrtpSession};
use crate::engine::{demux, rtcp, rtp};
use crate::ids::{FeedId, ParticipantKey, Sid, Ssrc, Uid};
use crate::sfu::worker::{Output, Worker, WorkerConfig};

/// RFC 7983 classification of any datagram.
pub fn demux(data: &[u8]) {
    // black_box: an unused result would let the optimiser remove the classification.
    std::hint::black_box(demux::classify(data));
}

/// ICE-TCP framing (RFC 4571): the input is the stream, read in pieces whose sizes its first
/// byte picks. The frames given must be exactly the stream's non-empty frames, in order, and
/// what is held back must be less than one frame.
pub fn ice_tcp(data: &[u8]) {
    use crate::io::ice_tcp::{Deframer, MAX_FRAME};
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step) + 1;
    let mut deframer = Deframer::default();
    let mut rebuilt = Vec::new();
    for piece in stream.chunks(step) {
        deframer.handle_bytes(piece);
        while let Some(frame) = deframer.poll_frame() {
            assert!(!frame.is_empty());
            rebuilt.push(frame.to_vec());
        }
        assert!(deframer.pending() < 2 + MAX_FRAME + step);
    }
    // The same stream parsed by hand.
    let mut expected = Vec::new();
    let mut at = 0;
    while let Some(header) = stream.get(at..at + 2) {
        let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
        let Some(frame) = stream.get(at + 2..at + 2 + len) else {
            break;
        };
        if len > 0 {
            expected.push(frame.to_vec());
        }
        at += 2 + len;
    }
    assert_eq!(rebuilt, expected);
    assert_eq!(deframer.pending(), stream.len() - at);
}

/// STUN parsing and ICE-lite checking. The credentials are taken from the input's own
/// USERNAME, so integrity and fingerprint checks run on every parsable request.
pub fn stun(data: &[u8]) {
    let Ok(mut req) = BindingRequest::parse(data) else {
        return;
    };
    let mut ice = IceLite::new(
        IceCredentials {
            ufrag: req.local_ufrag(),
            pwd: "fuzzpasswordfuzzpassword".into(),
        },
        Some(req.remote_ufrag()),
        Duration::from_secs(30),
    );
    let now = Instant::now();
    let src = SocketAddr::from(([127, 0, 0, 1], 5000));
    match ice.handle_binding(now, src, &mut req) {
        Ok(outcome) => {
            // Anything accepted must produce a response that parses as STUN.
            assert_eq!(demux::classify(&outcome.response), demux::PacketKind::Stun);
            assert_eq!(ice.selected(), Some(src));
        }
        Err(_) => assert_eq!(ice.selected(), None, "a refused check changed state"),
    }
}

/// RTP header parsing and in-place rewriting.
pub fn rtp(data: &[u8]) {
    let _ = rtp::peek_ssrc(data);
    if let Some(len) = rtp::header_len(data) {
        // What the relay accepts before decryption must be safe for the SRTP library, which
        // parses the header with the rtp crate.
        let mut buf = bytes::Bytes::copy_from_slice(data);
        let _ = <::rtp::header::Header as webrtc_util::marshal::Unmarshal>::unmarshal(&mut buf);
        assert!(len <= data.len());
    }
    // Setting elements reads the header as header_len does: where it refuses one, so does it.
    if rtp::header_len(data).is_none() {
        let mut out = Vec::new();
        assert_eq!(rtp::with_extensions_at(data, &[(1, b"1")], &mut out), None);
        assert!(out.is_empty());
    }
    if let Some(h) = rtp::parse(data) {
        assert!(h.header_len <= data.len());
        assert!(h.header_len + h.payload_len <= data.len());
        // A WHIP publisher's numbers made the relay's: ids 1..=7 become 8..=14, the others
        // are erased. The header stays the same length and valid, the payload untouched.
        let mut ids = [0u8; 256];
        for id in 1..=7u8 {
            ids[usize::from(id)] = id + 7;
        }
        let mut copy = data.to_vec();
        if rtp::renumber(&mut copy, 45, &ids) {
            let again = rtp::parse(&copy).expect("renumbering keeps a packet valid");
            assert_eq!(again.payload_type, 45);
            assert_eq!(again.header_len, h.header_len);
            assert_eq!(&copy[h.header_len..], &data[h.header_len..]);
            for id in 1..=7u8 {
                assert_eq!(rtp::extension(&copy, id), None);
            }
        }
        let mut copy = data.to_vec();
        rtp::rewrite(&mut copy, 1, 2, 3);
        let again = rtp::parse(&copy).expect("rewriting keeps a packet valid");
        assert_eq!((again.ssrc, again.sequence, again.timestamp), (1, 2, 3));
        assert_eq!(again.header_len, h.header_len);
        assert_eq!(&copy[h.header_len..], &data[h.header_len..]);
        // What every copy to a subscriber goes through: its MID and the playout delay set
        // among whatever elements the publisher sent.
        let mut out = Vec::new();
        let delay = [0x01, 0x73, 0xe8];
        if let Some(w) = rtp::write_with_extensions(data, &[(1, b"12"), (12, &delay)], &mut out) {
            let at = w.value_at;
            let got = rtp::parse(&out).expect("a packet with elements set stays valid");
            assert_eq!(got.header_len, w.header_len);
            assert_eq!(&out[got.header_len..], &data[h.header_len..]);
            assert_eq!(got.payload_len, h.payload_len);
            assert_eq!(rtp::extension(&out, 1), Some(&b"12"[..]));
            assert_eq!(rtp::extension(&out, 12), Some(&delay[..]));
            assert_eq!(&out[at..at + 3], &delay[..]);
            // Every other element kept, in either form.
            for id in (2..=20).filter(|id| *id != 12) {
                assert_eq!(
                    rtp::extension(&out, id),
                    rtp::extension(data, id),
                    "element {id}"
                );
            }
        } else {
            assert!(out.is_empty());
        }
    }
}

/// Compound RTCP parsing.
pub fn rtcp(data: &[u8]) {
    let mut out = Vec::new();
    let _ = rtcp::parse_feedback(data, &mut out);
}

/// Generic NACK parsing; what parses is written back by the relay's writer and must parse to
/// the same entries.
pub fn rtcp_nack(data: &[u8]) {
    let Some((media_ssrc, entries)) = rtcp::nack::parse(data) else {
        return;
    };
    let entries: Vec<(u16, u16)> = entries.map(|e| (e.pid, e.blp)).collect();
    for &(pid, blp) in &entries {
        let e = rtcp::nack::NackEntry { pid, blp };
        assert_eq!(e.sequences().count(), 1 + blp.count_ones() as usize);
    }
    let mut out = Vec::new();
    let mut rest = &entries[..];
    while !rest.is_empty() {
        out.clear();
        let n = rtcp::nack::write(1, media_ssrc, rest, &mut out);
        let (ssrc, again) = rtcp::nack::parse(&out).expect("the relay's own NACK");
        assert_eq!(ssrc, media_ssrc);
        assert!(again.map(|e| (e.pid, e.blp)).eq(rest[..n].iter().copied()));
        rest = &rest[n..];
    }
}

/// Report blocks of sender and receiver reports, with the round trip each gives at an
/// arbitrary arrival time.
pub fn rtcp_report(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Some((&arrival_byte, packet)) = rest.split_first() else {
        return;
    };
    let pt = if first & 0x80 != 0 {
        rtcp::report::PT_SR
    } else {
        rtcp::report::PT_RR
    };
    // black_box: the results are otherwise unused, and the optimiser would remove the parse
    // and leave the fuzzer nothing to explore.
    if let Some(blocks) = rtcp::report::blocks(packet, pt, first & 0x1f) {
        for b in blocks {
            std::hint::black_box(b);
            if let Some(rtt) = b.rtt(u32::from(arrival_byte) << 24 | b.lsr >> 8) {
                assert!(rtt <= Duration::from_secs(65_536));
                std::hint::black_box(rtt);
            }
        }
    }
}

/// Extended reports: receiver reference times and DLRR sub-blocks.
pub fn rtcp_xr(data: &[u8]) {
    // black_box: see rtcp_report.
    if let Some(blocks) = rtcp::xr::blocks(data) {
        for b in blocks {
            std::hint::black_box(b);
            if let rtcp::xr::XrBlock::Dlrr(d) = b {
                std::hint::black_box(d.rtt(d.lsr.wrapping_add(d.dlsr)));
            }
        }
    }
}

/// Transport-wide congestion feedback as subscribers send it: what parses describes exactly
/// `count` consecutive packets.
pub fn rtcp_twcc(data: &[u8]) {
    let mut statuses = Vec::new();
    if let Some(h) = rtcp::twcc::parse(data, &mut statuses) {
        assert_eq!(statuses.len(), h.count as usize);
        for (i, s) in statuses.iter().enumerate() {
            assert_eq!(s.sequence, h.base_sequence.wrapping_add(i as u16));
        }
        std::hint::black_box(&statuses);
    } else {
        assert!(statuses.is_empty());
    }
}

/// Where an H.264 keyframe starts and the picture size its parameter set gives: any payload
/// is read without a panic, and a payload that begins one still does with bytes added after
/// it.
pub fn h264(data: &[u8]) {
    // A size read from a parameter set is one a picture can have.
    if let Some((w, h)) = crate::engine::h264::keyframe_size(data) {
        assert!(w > 0 && h > 0);
    }
    if crate::engine::h264::starts_keyframe(data) && data.first().is_some_and(|h| h & 0x1f != 24) {
        let mut longer = data.to_vec();
        longer.extend_from_slice(&[0; 8]);
        assert!(crate::engine::h264::starts_keyframe(&longer));
    }
}

/// The VP8 payload descriptor: what parses is rewritten with other numbers and must parse to
/// the same layout carrying them.
pub fn vp8(data: &[u8]) {
    let Some(d) = crate::engine::vp8::parse(data) else {
        return;
    };
    assert!(d.len < data.len());
    let size = crate::engine::vp8::keyframe_size(data, &d);
    assert!(size.is_none() || d.keyframe);
    let mut copy = data.to_vec();
    crate::engine::vp8::rewrite(&mut copy, &d, 0x5a5a, 0xa5);
    let again = crate::engine::vp8::parse(&copy).expect("rewriting keeps the layout");
    assert_eq!(again.len, d.len);
    assert_eq!(again.keyframe, d.keyframe);
    if let Some((_, wide)) = d.picture_id {
        let expected = if wide { 0x5a5a } else { 0x5a };
        assert_eq!(again.picture_id, Some((expected, wide)));
    }
    if d.tl0_pic_idx.is_some() {
        assert_eq!(again.tl0_pic_idx, Some(0xa5));
    }
    assert_eq!(&copy[d.len..], &data[d.len..]);
}

/// The AV1 dependency descriptor: a first byte giving the length of a first element, read
/// with no structure known (so it parses only if it carries one), then the rest read against
/// that structure, as the relay reads a keyframe's packet and those after it. What parses is
/// consistent with its structure, and reads the same with zero padding added.
pub fn dependency_descriptor(data: &[u8]) {
    use crate::engine::dependency_descriptor::{parse, Descriptor, Dti, Structure};

    fn check(d: &Descriptor, data: &[u8], latest: Option<&Structure>) {
        let s = d
            .structure
            .as_deref()
            .or(latest)
            .expect("read against a structure");
        let t = s
            .template(d.template_id)
            .expect("a frame's template is its structure's");
        assert_eq!((d.spatial_id, d.temporal_id), (t.spatial_id, t.temporal_id));
        assert!(d.spatial_id < 4 && d.temporal_id < 8);
        assert_eq!(d.dtis.len(), s.decode_targets());
        assert_eq!(d.chain_diffs.len(), s.chains());
        assert!(d.frame_diffs.iter().all(|&f| f >= 1));
        assert!(d.referenced_frames().all(|f| f != d.frame_number));
        if let Some(mask) = d.active_decode_targets {
            assert_eq!(u64::from(mask) >> s.decode_targets(), 0);
        }
        for dt in 0..s.decode_targets() + 1 {
            assert_eq!(d.needed_by(dt), d.dti(dt) != Dti::NotPresent);
            assert!(!d.is_switch_point(dt) || d.needed_by(dt));
            // From its template, a frame is needed only by decode targets at or above its
            // layers.
            if d.needed_by(dt) && !d.custom_dtis {
                let layer = s.decode_target_layer(dt).expect("a decode target's layers");
                assert!(layer.spatial_id >= d.spatial_id && layer.temporal_id >= d.temporal_id);
            }
            assert_eq!(
                s.protected_by(dt).is_some(),
                s.chains() > 0 && dt < s.decode_targets()
            );
        }
        let mut padded = data.to_vec();
        padded.extend_from_slice(&[0; 2]);
        assert_eq!(parse(&padded, latest).as_ref(), Ok(d));
    }

    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let (first, second) = rest.split_at(usize::from(len).min(rest.len()));
    let Ok(key) = parse(first, None) else {
        return;
    };
    let structure = key
        .structure
        .as_deref()
        .expect("parsed alone, so it carried one");
    check(&key, first, None);
    // Given a structure besides, it is still read against its own.
    assert_eq!(parse(first, Some(structure)).as_ref(), Ok(&key));
    if let Ok(next) = parse(second, Some(structure)) {
        check(&next, second, Some(structure));
    }
}

/// Control request decoding.
pub fn control(data: &[u8]) {
    let _ = crate::remote::decode(data);
}

/// SSRC of the harness publisher's video feed.
pub const PUBLISHER_SSRC: u32 = 0x1234;
/// The SSRC of the harness publisher's retransmissions.
pub const PUBLISHER_RTX_SSRC: u32 = 0x5678;
/// The payload type of retransmissions of payload type 96 in the harness feed.
pub const RTX_PT: u8 = 99;

/// The id of the transport-wide sequence number extension in the harness's feed.
pub const TWCC_EXTENSION: u8 = 3;

/// The dependency descriptor's extension id in the harness camera's packets.
pub const DEPENDENCY_DESCRIPTOR_EXTENSION: u8 = 8;

/// A worker with one session: a publisher with a video feed (MID extension id 1, transport-wide
/// sequence numbers id [`TWCC_EXTENSION`]) and
/// subscribers to it, all connected (ICE checked, SRTP keyed with AES-GCM), plus the
/// client-side SRTP of each so that datagrams can be made and read as the peers would.
pub struct Harness {
    /// The core's state machine.
    pub worker: Worker,
    /// The harness's clock.
    pub now: Instant,
    /// The publisher's address.
    pub publisher: SocketAddr,
    /// The subscribers' addresses.
    pub subscribers: Vec<SocketAddr>,
    /// An address that never passed ICE.
    pub stranger: SocketAddr,
    /// Client-side SRTP: index 0 the publisher, then one per subscriber (keys the worker
    /// also has).
    pub clients: Vec<SrtpSession>,
}

impl Harness {
    /// The RTP packets the worker sent subscriber `i` (plaintext, with the size each took on
    /// the wire) since outputs were last taken; everything else it sent is passed over.
    pub fn rtp_to(&mut self, i: usize) -> Vec<(Vec<u8>, usize)> {
        let mut packets = Vec::new();
        while let Some(o) = self.worker.poll_output() {
            let Output::Transmit(t) = o else { continue };
            if t.destination != self.subscribers[i] || (192..=223).contains(&t.contents[1]) {
                continue;
            }
            let mut plain = Vec::new();
            self.clients[i + 1]
                .unprotect_rtp(&t.contents, &mut plain)
                .expect("the worker seals what it sends with the subscriber's keys");
            packets.push((plain, t.contents.len()));
        }
        packets
    }

    /// The RTCP packets of a compound the worker sent the publisher; None where `sealed` is
    /// not RTCP sealed with the publisher's keys (it sends RTP to no one but subscribers).
    pub fn rtcp_to_publisher(
        &mut self,
        sealed: &[u8],
    ) -> Option<Vec<Box<dyn ::rtcp::packet::Packet + Send + Sync>>> {
        let plain = self.clients[0].unprotect_rtcp(sealed).ok()?;
        let mut buf = bytes::Bytes::from(plain);
        Some(::rtcp::packet::unmarshal(&mut buf).expect("the worker's compounds parse"))
    }

    /// Subscriber `i` asks for outgoing packets `first` and the `more` after it (RFC 4585
    /// generic NACK, one entry) of its stream `media_ssrc`.
    pub fn nack_from_subscriber(&mut self, i: usize, media_ssrc: u32, first: u16, more: u16) {
        use ::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
        use webrtc_util::marshal::Marshal;
        let lost_packets = if more >= 16 {
            0xffff
        } else {
            (1u16 << more) - 1
        };
        let plain = TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc,
            nacks: vec![NackPair {
                packet_id: first,
                lost_packets,
            }],
        }
        .marshal()
        .expect("marshal");
        let sealed = self.clients[i + 1]
            .protect_rtcp(&plain)
            .expect("the subscriber's keys seal");
        self.worker
            .handle_receive(self.now, None, self.subscribers[i], &sealed);
    }

    /// Hand the worker every timer due by now.
    pub fn run_timers(&mut self) {
        while let Some(at) = self.worker.poll_timeout().filter(|at| *at <= self.now) {
            self.worker.handle_timeout(at.max(self.now));
        }
    }
}

/// A subscriber's downlink in virtual time: one packet at a time at `capacity` bit/s (the
/// queue unbounded), then a fixed delay; and the transport-wide feedback the subscriber's
/// browser sends on what arrived (the relay's own feedback writer plays the browser).
pub struct Downlink {
    capacity: f64,
    delay: Duration,
    free_at: Option<Instant>,
    in_flight: Vec<(Instant, u16)>,
    receiver: crate::engine::twcc::TwccReceiver,
    feedback: Vec<u8>,
}

impl Downlink {
    /// A link of `capacity` bit/s and `delay`.
    pub fn new(capacity: f64, delay: Duration) -> Self {
        Downlink {
            capacity,
            delay,
            free_at: None,
            in_flight: Vec::new(),
            receiver: crate::engine::twcc::TwccReceiver::new(),
            feedback: Vec::new(),
        }
    }

    /// The link carries `capacity` bit/s from now on (what is queued at the old rate keeps
    /// its arrival time).
    pub fn set_capacity(&mut self, capacity: f64) {
        self.capacity = capacity;
    }

    /// A packet of `wire` bytes with transport-wide number `number` enters the link at `now`;
    /// returns when it arrives.
    pub fn carry(&mut self, now: Instant, wire: usize, number: u16) -> Instant {
        let start = self.free_at.map_or(now, |free| free.max(now));
        let free = start + Duration::from_secs_f64(wire as f64 * 8.0 / self.capacity);
        self.free_at = Some(free);
        self.in_flight.push((free + self.delay, number));
        free + self.delay
    }

    /// Take in what has arrived by `h.now`, and hand the worker the feedback subscriber `i`
    /// sends on it.
    pub fn deliver(&mut self, h: &mut Harness, i: usize) {
        let now = h.now;
        let receiver = &mut self.receiver;
        self.in_flight.retain(|&(at, number)| {
            let arrived = at <= now;
            if arrived {
                receiver.handle_packet(at, number);
            }
            !arrived
        });
        while self
            .receiver
            .poll_feedback(now, 0x77, 0, &mut self.feedback)
        {
            let sealed = h.clients[i + 1]
                .protect_rtcp(&self.feedback)
                .expect("the subscriber's keys seal");
            h.worker
                .handle_receive(now, None, h.subscribers[i], &sealed);
        }
    }
}

fn connect(
    w: &mut Worker,
    now: Instant,
    sid: &Sid,
    uid: &str,
    addr: SocketAddr,
    material: u8,
    profile: SrtpProfile,
) -> SrtpSession {
    let creds = w
        .add_participant(
            sid,
            Uid::from(uid),
            ParticipantConfig {
                remote_ufrag: Some("peer".into()),
                remote_fingerprint: None,
                ..Default::default()
            },
        )
        .expect("fresh participant");
    let check = binding_request(&format!("{}:peer", creds.ufrag), &creds.pwd, true);
    w.handle_receive(now, None, addr, &check);
    // A handshake record with a whole (empty) ClientHello starts the (here imaginary)
    // handshake.
    w.handle_receive(
        now,
        None,
        addr,
        &[
            22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    );
    let mut key = None;
    while let Some(o) = w.poll_output() {
        if let Output::DtlsStart { key: k, .. } = o {
            key = Some(k);
        }
    }
    let key: ParticipantKey = key.expect("DTLS started after a valid check");
    let m = vec![material; profile.keying_material_len()];
    let server = SrtpKeys::from_keying_material(profile, &m, false).expect("length");
    let client = SrtpKeys::from_keying_material(profile, &m, true).expect("length");
    w.handle_dtls_connected(now, key, server);
    SrtpSession::new(&client).expect("keys")
}

/// Build a [`Harness`] with `subscribers` subscribers (each gets mid "1"), AES-GCM keyed.
pub fn harness(subscribers: usize) -> Harness {
    harness_with_profile(subscribers, SrtpProfile::AeadAes128Gcm)
}

/// Build a [`Harness`] whose peers all use `profile`.
pub fn harness_with_profile(subscribers: usize, profile: SrtpProfile) -> Harness {
    harness_with_config(subscribers, profile, WorkerConfig::default())
}

/// Build a [`Harness`] whose worker runs with `config`.
pub fn harness_with_config(
    subscribers: usize,
    profile: SrtpProfile,
    config: WorkerConfig,
) -> Harness {
    let now = Instant::now();
    let mut worker = Worker::new(config, now, UNIX_EPOCH, 1);
    let sid = Sid::from("s");
    worker.create_session(sid.clone()).expect("fresh");
    let publisher = SocketAddr::from(([127, 0, 0, 1], 1001));
    let mut clients = vec![connect(
        &mut worker,
        now,
        &sid,
        "pub",
        publisher,
        1,
        profile,
    )];
    worker
        .publish(&sid, &Uid::from("pub"), camera())
        .expect("publish");
    let mut addresses = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let addr = SocketAddr::from(([127, 0, 0, 1], 2000 + i as u16));
        let uid = format!("sub{i}");
        clients.push(connect(
            &mut worker,
            now,
            &sid,
            &uid,
            addr,
            2 + i as u8,
            profile,
        ));
        worker
            .subscribe(
                now,
                &sid,
                &Uid::from(uid.as_str()),
                &FeedId::from("cam"),
                crate::control::SubscribeOptions {
                    mid: Some("1".into()),
                    rtx: true,
                    playout_delay_extension: Some(12),
                    transport_cc_extension: Some(3),
                },
            )
            .expect("subscribe");
        addresses.push(addr);
    }
    while worker.poll_output().is_some() {}
    Harness {
        worker,
        now,
        publisher,
        subscribers: addresses,
        stranger: SocketAddr::from(([127, 0, 0, 1], 1003)),
        clients,
    }
}

/// A session spread over two cores: [`harness_with_profile`]'s worker (core 0) publishes the
/// feed, and a second worker (core 1) has one subscriber of it, fed through cross-core
/// messages that the test moves from one to the other.
pub struct SpreadHarness {
    /// The origin core, with its publisher and one local subscriber.
    pub origin: Harness,
    /// The sink core.
    pub sink: Worker,
    /// The sink's subscriber's address.
    pub sink_subscriber: SocketAddr,
    /// The sink's subscriber's client-side SRTP.
    pub sink_client: SrtpSession,
}

/// Build a [`SpreadHarness`] whose peers all use `profile`.
pub fn spread_harness(profile: SrtpProfile) -> SpreadHarness {
    let mut origin = harness_with_profile(1, profile);
    let now = origin.now;
    let mut sink = Worker::new(
        WorkerConfig {
            core: 1,
            ..WorkerConfig::default()
        },
        now,
        UNIX_EPOCH,
        2,
    );
    let sid = Sid::from("s");
    sink.create_session(sid.clone()).expect("fresh");
    let route = origin
        .worker
        .publish(&sid, &Uid::from("pub"), camera())
        .expect("the same description again");
    sink.add_remote_feed(&sid, camera(), route)
        .expect("replica");
    let addr = SocketAddr::from(([127, 0, 0, 1], 3000));
    let sink_client = connect(&mut sink, now, &sid, "far", addr, 9, profile);
    sink.subscribe(
        now,
        &sid,
        &Uid::from("far"),
        &FeedId::from("cam"),
        crate::control::SubscribeOptions {
            mid: Some("1".into()),
            rtx: true,
            playout_delay_extension: Some(12),
            transport_cc_extension: Some(3),
        },
    )
    .expect("subscribe");
    origin.worker.set_sink(route, 1, true).expect("route");
    while sink.poll_output().is_some() {}
    while origin.worker.poll_output().is_some() {}
    SpreadHarness {
        origin,
        sink,
        sink_subscriber: addr,
        sink_client,
    }
}

/// The worker target's second feed: simulcast, mid "5", rids q, h, f, named by the rid
/// (10) and repaired-rid (11) extensions.
fn simulcast_camera() -> FeedDescription {
    let mut d = camera();
    d.feed_id = FeedId::from("sim");
    d.ssrc = None;
    d.rtx_ssrc = None;
    // The audio level is an audio feed's, but read from whatever feed declares it: declared
    // here, the speech detector is driven by whatever the packets carry.
    for (id, uri) in [
        (10, crate::sfu::feed::RID_URI),
        (11, crate::sfu::feed::REPAIRED_RID_URI),
        (4, crate::sfu::feed::speech::AUDIO_LEVEL_URI),
    ] {
        d.header_extensions.push(crate::control::HeaderExtension {
            id,
            uri: uri.into(),
        });
    }
    d.simulcast = Some(crate::control::Simulcast {
        mid: "5".into(),
        rids: vec!["q".into(), "h".into(), "f".into()],
    });
    d
}

/// `packet` with the MID and a rid or repaired rid set as a browser names a simulcast layer,
/// chosen by its fourth byte: one of the feed's rids, an unknown one, or another MID.
fn named_layer(packet: &[u8]) -> Option<Vec<u8>> {
    let pick = packet[3];
    let rid: &[u8] = [b"q" as &[u8], b"h", b"f", b"x"][usize::from(pick & 3)];
    let rid_id = if pick & 4 != 0 { 11 } else { 10 };
    let mid: &[u8] = if pick & 8 != 0 { b"6" } else { b"5" };
    let mut out = Vec::new();
    rtp::with_extensions(packet, &[(1, mid), (rid_id, rid)], &mut out).then_some(out)
}

/// The harness's feed.
pub fn camera() -> FeedDescription {
    FeedDescription {
        feed_id: FeedId::from("cam"),
        kind: MediaKind::Video,
        ssrc: Some(Ssrc(PUBLISHER_SSRC)),
        clock_rate: 90_000,
        payload_types: vec![96, 97],
        header_extensions: vec![
            crate::control::HeaderExtension {
                id: 1,
                uri: crate::control::MID_EXTENSION_URI.into(),
            },
            crate::control::HeaderExtension {
                id: TWCC_EXTENSION,
                uri: crate::engine::twcc::URI.into(),
            },
            // Packets that carry one are read as SVC frames, and dropped per subscriber.
            crate::control::HeaderExtension {
                id: DEPENDENCY_DESCRIPTOR_EXTENSION,
                uri: crate::engine::dependency_descriptor::URI.into(),
            },
        ],
        nack: true,
        rtx_ssrc: Some(Ssrc(PUBLISHER_RTX_SSRC)),
        rtx_payload_types: vec![crate::control::RtxPayloadType {
            pt: RTX_PT,
            apt: 96,
        }],
        codecs: vec![crate::control::PayloadCodec {
            pt: 96,
            name: "VP8".into(),
        }],
        simulcast: None,
        screen: false,
        renumbering: None,
    }
}

/// A whole core's packet path: the input is a sequence of datagrams, each
/// `[flags][len_hi][len_lo][bytes…]`. Flags: bit 0 from the subscriber (else the publisher),
/// bit 1 from an address that never passed ICE, bit 2 SRTP-protect the bytes as RTP with the
/// sender's real key first (bit 3: as RTCP), so the fuzzer reaches the parsers behind
/// decryption; bits 4–5 advance time (0, 100 ms, 1 s, 31 s) and run the timers.
pub fn worker(data: &[u8]) {
    let mut h = harness(1);
    // A second feed, simulcast, whose SSRCs the worker must learn from what arrives.
    let (sid, sub) = (Sid::from("s"), Uid::from("sub0"));
    h.worker
        .publish(&sid, &Uid::from("pub"), simulcast_camera())
        .expect("simulcast publish");
    let options = crate::control::SubscribeOptions {
        mid: Some("2".into()),
        rtx: true,
        playout_delay_extension: Some(12),
        transport_cc_extension: Some(TWCC_EXTENSION),
    };
    h.worker
        .subscribe(h.now, &sid, &sub, &FeedId::from("sim"), options)
        .expect("subscribe");
    while h.worker.poll_output().is_some() {}
    let mut rest = data;
    while rest.len() >= 3 {
        let flags = rest[0];
        let len = (u16::from_be_bytes([rest[1], rest[2]]) as usize).min(rest.len() - 3);
        let mut datagram = rest[3..3 + len].to_vec();
        rest = &rest[3 + len..];
        let who = (flags & 1) as usize;
        let from = if flags & 2 != 0 {
            h.stranger
        } else if who == 1 {
            h.subscribers[0]
        } else {
            h.publisher
        };
        if flags & 4 != 0 && datagram.len() >= 12 {
            // Make it a plausible RTP header of the declared stream so it passes routing.
            datagram[0] = 0x80 | (datagram[0] & 0x3f);
            if datagram[1] & 0x7f >= 64 && datagram[1] & 0x7f < 96 {
                datagram[1] = 96;
            }
            // Payload type 99 goes on the retransmission stream, so the fuzzer reaches RTX.
            let ssrc = if datagram[1] & 0x7f == RTX_PT {
                PUBLISHER_RTX_SSRC
            } else {
                PUBLISHER_SSRC
            };
            if flags & 0x40 == 0 {
                datagram[8..12].copy_from_slice(&ssrc.to_be_bytes());
            } else if let Some(named) = named_layer(&datagram) {
                // The fuzzer's own SSRC, named as a layer of the simulcast feed (or nearly).
                datagram = named;
            }
            // The SRTP library would panic on a header whose lengths run past the packet
            // (the relay checks before it decrypts); such input is sent as it is.
            if rtp::header_len(&datagram).is_some() {
                let mut sealed = datagram.clone();
                if h.clients[who].protect_rtp(&mut sealed).is_ok() {
                    datagram = sealed;
                }
            }
        } else if flags & 8 != 0 && datagram.len() >= 8 {
            datagram[0] = 0x80 | (datagram[0] & 0x3f);
            if !(192..=223).contains(&datagram[1]) {
                datagram[1] = 200 + datagram[1] % 8;
            }
            if let Ok(sealed) = h.clients[who].protect_rtcp(&datagram) {
                datagram = sealed.to_vec();
            }
        }
        h.worker.handle_receive(h.now, None, from, &datagram);
        let advance = match (flags >> 4) & 3 {
            0 => None,
            1 => Some(Duration::from_millis(100)),
            2 => Some(Duration::from_secs(1)),
            _ => Some(Duration::from_secs(31)),
        };
        if let Some(d) = advance {
            h.now += d;
            h.worker.handle_timeout(h.now);
        }
        while h.worker.poll_output().is_some() {}
    }
    let stats = h.worker.stats();
    assert!(stats.participants <= 2);
}

/// SRTP/SRTCP unprotect of arbitrary bytes under either profile (the first byte picks it, the
/// rest is the datagram), with keys the sender also has: tampered, truncated, replayed and
/// well-formed packets alike must come back as a verdict, never a panic; whatever authenticates
/// must be the packet that was protected.
pub fn srtp(data: &[u8]) {
    let Some((&selector, datagram)) = data.split_first() else {
        return;
    };
    let profile = if selector & 1 == 0 {
        SrtpProfile::AeadAes128Gcm
    } else {
        SrtpProfile::Aes128CmHmacSha1_80
    };
    let material: Vec<u8> = (0..profile.keying_material_len() as u8).collect();
    let (Some(client), Some(server)) = (
        SrtpKeys::from_keying_material(profile, &material, true),
        SrtpKeys::from_keying_material(profile, &material, false),
    ) else {
        return;
    };
    let (Ok(mut sender), Ok(mut receiver)) = (SrtpSession::new(&client), SrtpSession::new(&server))
    else {
        return;
    };
    let mut plain = Vec::new();
    let _ = receiver.unprotect_rtp(datagram, &mut plain);
    let _ = receiver.unprotect_rtcp(datagram);
    // Protect the input as RTP when its header allows, then it must open to the same bytes.
    if selector & 2 != 0 && rtp::header_len(datagram).is_some() {
        let mut sealed = datagram.to_vec();
        if sender.protect_rtp(&mut sealed).is_ok() {
            let mut fresh = SrtpSession::new(&server).expect("same keys");
            let mut opened = Vec::new();
            fresh
                .unprotect_rtp(&sealed, &mut opened)
                .expect("what was protected with the peer's keys authenticates");
            assert_eq!(opened, datagram);
        }
    }
}

/// ClientHello reassembly and the `use_srtp` reader: the input is a sequence of datagrams,
/// each preceded by its length in two bytes. An offer is only ever read from a whole message.
pub fn client_hello(mut data: &[u8]) {
    let mut hello = ClientHello::default();
    while data.len() >= 2 {
        let len = (u16::from_be_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
        let datagram = &data[2..2 + len];
        data = &data[2 + len..];
        hello.handle_datagram(datagram);
        if let Some(offered) = hello.offered_srtp_profiles() {
            assert!(hello.is_complete());
            assert!(offered.len() <= SrtpProfile::PREFERENCE.len());
        }
    }
}

/// A DTLS 1.2 ClientHello record with the given extensions (type, data), for tests and seeds.
pub fn client_hello_record(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![0xfe, 0xfd];
    body.extend([7u8; 32]); // random
    body.push(0); // session id
    body.push(0); // cookie
    body.extend([0, 4, 0xc0, 0x2b, 0xc0, 0x2f]); // two cipher suites
    body.extend([1, 0]); // null compression
    let mut ext = Vec::new();
    for (kind, data) in extensions {
        ext.extend(kind.to_be_bytes());
        ext.extend((data.len() as u16).to_be_bytes());
        ext.extend(data);
    }
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(ext);
    fragmented_client_hello(
        &[0; 25].into_iter().chain(body).collect::<Vec<u8>>(),
        usize::MAX,
    )
    .concat()
}

/// The `use_srtp` extension offering these profile numbers, without MKI.
pub fn use_srtp(ids: &[u16]) -> (u16, Vec<u8>) {
    let mut data = ((ids.len() * 2) as u16).to_be_bytes().to_vec();
    for id in ids {
        data.extend(id.to_be_bytes());
    }
    data.push(0);
    (14, data)
}

/// The ClientHello of a one-record `record` cut into handshake fragments of `size` bytes,
/// one record each (as a large ClientHello arrives).
pub fn fragmented_client_hello(record: &[u8], size: usize) -> Vec<Vec<u8>> {
    let body = &record[13 + 12..];
    let len = body.len() as u32;
    let size = size.min(body.len().max(1));
    body.chunks(size)
        .enumerate()
        .map(|(i, chunk)| {
            let mut hs = vec![1];
            hs.extend(&len.to_be_bytes()[1..]);
            hs.extend([0, 0]);
            hs.extend(&((i * size) as u32).to_be_bytes()[1..]);
            hs.extend(&(chunk.len() as u32).to_be_bytes()[1..]);
            hs.extend(chunk);
            let mut r = vec![22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, i as u8];
            r.extend((hs.len() as u16).to_be_bytes());
            r.extend(hs);
            r
        })
        .collect()
}

/// A fuzz target: takes any bytes, must not panic.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, for the corpus replay test.
pub const TARGETS: [(&str, Target); 23] = [
    ("demux", demux),
    ("ice_tcp", ice_tcp),
    ("stun", stun),
    ("rtp", rtp),
    ("rtcp", rtcp),
    ("rtcp_nack", rtcp_nack),
    ("rtcp_report", rtcp_report),
    ("rtcp_xr", rtcp_xr),
    ("rtcp_twcc", rtcp_twcc),
    ("vp8", vp8),
    ("h264", h264),
    ("dependency_descriptor", dependency_descriptor),
    ("control", control),
    ("worker", worker),
    ("srtp", srtp),
    ("client_hello", client_hello),
    ("dtls_record", dtls::dtls_record),
    ("dcep", data::dcep),
    ("data_envelope", data::data_envelope),
    ("data", data::data),
    ("vp9", record::vp9),
    ("av1", record::av1),
    ("record", record::record),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publisher_with_numbers_of_its_own_reaches_subscribers_in_the_relays() {
        let mut h = harness(1);
        // It sends VP8 as 100 (RTX 101) and its transport-wide sequence as extension 6.
        let renumbered = FeedDescription {
            renumbering: Some(Box::new(crate::control::Renumbering {
                payload_types: vec![(100, 96), (101, RTX_PT)],
                extensions: vec![(5, 1), (6, TWCC_EXTENSION)],
            })),
            ..camera()
        };
        h.worker
            .publish(&Sid::from("s"), &Uid::from("pub"), renumbered)
            .expect("renegotiated");
        while h.worker.poll_output().is_some() {}
        let send = |h: &mut Harness, pt: u8, seq: u16| {
            let mut pkt = vec![0x80, pt, 0, seq as u8, 0, 0, 0, 10, 0, 0, 0, 0];
            pkt[8..12].copy_from_slice(&PUBLISHER_SSRC.to_be_bytes());
            let mut with = Vec::new();
            assert!(rtp::with_extensions(
                &pkt,
                &[(6, &seq.to_be_bytes())],
                &mut with
            ));
            with.extend_from_slice(&[5; 100]);
            h.clients[0].protect_rtp(&mut with).unwrap();
            h.worker.handle_receive(h.now, None, h.publisher, &with);
        };
        send(&mut h, 100, 1);
        let mut forwarded = Vec::new();
        while let Some(o) = h.worker.poll_output() {
            if let Output::Transmit(t) = o {
                let mut plain = Vec::new();
                if h.clients[1].unprotect_rtp(&t.contents, &mut plain).is_ok() {
                    forwarded.push(rtp::parse(&plain).unwrap().payload_type);
                }
            }
        }
        assert_eq!(forwarded, [96]);
        assert_eq!(h.worker.stats().total_dropped(), 0);
        // The relay's own number is not one the publisher declared.
        send(&mut h, 96, 2);
        while h.worker.poll_output().is_some() {}
        assert_eq!(
            h.worker
                .stats()
                .dropped(crate::stats::DropReason::RtpUnknownPayloadType),
            1
        );
    }

    #[test]
    fn a_subscriber_with_numbers_of_its_own_gets_them() {
        let mut h = harness(1);
        // A player that takes VP8 as 110 and the MID as extension 5, and has no playout delay.
        h.worker
            .update_participant(
                &Sid::from("s"),
                &Uid::from("sub0"),
                crate::control::ParticipantConfig {
                    renumbering: Some(Box::new(crate::control::Renumbering {
                        payload_types: vec![(96, 110), (RTX_PT, 111)],
                        extensions: vec![(1, 5), (TWCC_EXTENSION, 7)],
                    })),
                    ..Default::default()
                },
            )
            .expect("updated");
        let mut pkt = vec![0x80, 96, 0, 1, 0, 0, 0, 10, 0, 0, 0, 0];
        pkt[8..12].copy_from_slice(&PUBLISHER_SSRC.to_be_bytes());
        pkt.extend_from_slice(&[5; 100]);
        h.clients[0].protect_rtp(&mut pkt).unwrap();
        h.worker.handle_receive(h.now, None, h.publisher, &pkt);
        let mut got = Vec::new();
        while let Some(o) = h.worker.poll_output() {
            if let Output::Transmit(t) = o {
                let mut plain = Vec::new();
                h.clients[1].unprotect_rtp(&t.contents, &mut plain).unwrap();
                let header = rtp::parse(&plain).unwrap();
                got.push((
                    header.payload_type,
                    rtp::extension(&plain, 5).map(<[u8]>::to_vec),
                    rtp::extension(&plain, 1).is_some(),
                    rtp::extension(&plain, 12).is_some(),
                    rtp::transport_sequence(&plain, 7),
                ));
            }
        }
        assert_eq!(got, [(110, Some(b"1".to_vec()), false, false, Some(0))]);
    }

    #[test]
    fn worker_harness_forwards_a_protected_packet() {
        let mut h = harness(1);
        let mut pkt = vec![0x80, 96, 0, 1, 0, 0, 0, 10, 0, 0, 0, 0];
        pkt[8..12].copy_from_slice(&PUBLISHER_SSRC.to_be_bytes());
        pkt.extend_from_slice(&[5; 100]);
        let mut sealed = pkt.clone();
        h.clients[0].protect_rtp(&mut sealed).unwrap();
        h.worker.handle_receive(h.now, None, h.publisher, &sealed);
        let mut forwarded = 0;
        while let Some(o) = h.worker.poll_output() {
            if let Output::Transmit(t) = o {
                assert_eq!(t.destination, h.subscribers[0]);
                let mut plain = Vec::new();
                h.clients[1].unprotect_rtp(&t.contents, &mut plain).unwrap();
                // The subscriber's mid ("1"), the playout delay (no minimum, 10 s at most) and
                // the subscriber transport's first transport-wide number (0) were added as
                // header extensions.
                let header = rtp::parse(&plain).unwrap();
                assert_eq!(&plain[header.header_len..], &pkt[12..]);
                assert_eq!(
                    &plain[12..28],
                    &[0xbe, 0xde, 0, 3, 0x10, b'1', 0xc2, 0, 0x03, 0xe8, 0x31, 0, 0, 0, 0, 0]
                );
                forwarded += 1;
            }
        }
        assert_eq!(forwarded, 1);
        assert_eq!(h.worker.stats().total_dropped(), 0);
    }
}
