//! Writes the seed inputs of the fuzz corpora (`fuzz/corpus/<target>/seed-*`): one valid
//! example of each input shape, from which the fuzzer mutates.
//!
//! `cargo run -p relay --example fuzz_seeds` (from the workspace root).

use std::path::Path;

use relay::engine::ice_lite::binding_request;
use relay::fuzzing;
use rtcp::packet::Packet;

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = Path::new("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(format!("seed-{name}")), data).expect("write seed");
}

/// An extended report with a receiver reference time and a DLRR.
fn xr_packet() -> Box<dyn Packet + Send + Sync> {
    use rtcp::extended_report::{
        DLRRReport, DLRRReportBlock, ExtendedReport, ReceiverReferenceTimeReportBlock,
    };
    Box::new(ExtendedReport {
        sender_ssrc: 1,
        reports: vec![
            Box::new(ReceiverReferenceTimeReportBlock {
                ntp_timestamp: 1 << 40,
            }),
            Box::new(DLRRReportBlock {
                reports: vec![DLRRReport {
                    ssrc: 2,
                    last_rr: 0x0001_0000,
                    dlrr: 0x8000,
                }],
            }),
        ],
    })
}

fn marshal_one(p: Box<dyn Packet + Send + Sync>) -> Vec<u8> {
    rtcp::packet::marshal(&[p]).expect("marshal").to_vec()
}

fn rtcp_compound() -> Vec<u8> {
    use rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
    use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtcp::receiver_report::ReceiverReport;
    use rtcp::reception_report::ReceptionReport;
    use rtcp::sender_report::SenderReport;
    use rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
    let packets: Vec<Box<dyn Packet + Send + Sync>> = vec![
        Box::new(ReceiverReport {
            ssrc: 1,
            reports: vec![ReceptionReport {
                ssrc: 5,
                last_sender_report: 0x0001_0000,
                delay: 0x8000,
                ..Default::default()
            }],
            ..Default::default()
        }),
        xr_packet(),
        Box::new(SenderReport {
            ssrc: 0x1234,
            ntp_time: 1 << 40,
            rtp_time: 9000,
            packet_count: 10,
            octet_count: 1000,
            reports: vec![ReceptionReport {
                ssrc: 5,
                ..Default::default()
            }],
            ..Default::default()
        }),
        Box::new(ReceiverReport {
            ssrc: 1,
            ..Default::default()
        }),
        Box::new(PictureLossIndication {
            sender_ssrc: 1,
            media_ssrc: 0x1234,
        }),
        Box::new(FullIntraRequest {
            sender_ssrc: 1,
            media_ssrc: 0,
            fir: vec![FirEntry {
                ssrc: 0x1234,
                sequence_number: 3,
            }],
        }),
        Box::new(TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 0x1234,
            nacks: vec![NackPair {
                packet_id: 100,
                lost_packets: 0b101,
            }],
        }),
    ];
    rtcp::packet::marshal(&packets).expect("marshal").to_vec()
}

fn rtp_packet(ssrc: u32, ext: bool, padding: bool) -> Vec<u8> {
    let mut p = vec![0x80, 96, 0x12, 0x34, 0, 0, 0x0b, 0xb8];
    p.extend_from_slice(&ssrc.to_be_bytes());
    if ext {
        p[0] |= 0x10;
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0]);
    }
    p.extend_from_slice(&[0xaa; 40]);
    if padding {
        p[0] |= 0x20;
        p.extend_from_slice(&[0, 0, 3]);
    }
    p
}

fn record(flags: u8, data: &[u8]) -> Vec<u8> {
    let mut r = vec![flags];
    r.extend_from_slice(&(data.len() as u16).to_be_bytes());
    r.extend_from_slice(data);
    r
}

fn main() {
    let stun = binding_request("relayufr:peer", "passwordpasswordpassword", true);
    let stun_plain = binding_request("relayufr:peer", "passwordpasswordpassword", false);
    let dtls = [22u8, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3];
    let rtp = rtp_packet(0x1234, true, true);
    let rtcp = rtcp_compound();

    for (name, d) in [
        ("stun", &stun[..]),
        ("dtls", &dtls[..]),
        ("rtp", &rtp[..]),
        ("rtcp", &rtcp[..]),
    ] {
        write("demux", name, d);
    }
    // ICE-TCP: a binding request then an RTP packet, framed, read 7 bytes at a time.
    {
        let mut stream = vec![6u8];
        for packet in [&stun[..], &rtp[..]] {
            assert!(relay::io::ice_tcp::frame(packet, &mut stream));
        }
        write("ice_tcp", "stun-rtp", &stream);
    }
    write("stun", "use-candidate", &stun);
    write("stun", "plain", &stun_plain);
    write("rtp", "ext-padding", &rtp);
    write("rtp", "minimal", &rtp_packet(1, false, false));
    write("rtcp", "compound", &rtcp);
    {
        use rtcp::receiver_report::ReceiverReport;
        use rtcp::reception_report::ReceptionReport;
        use rtcp::sender_report::SenderReport;
        use rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
        let nack = marshal_one(Box::new(TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 0x1234,
            nacks: vec![
                NackPair {
                    packet_id: 65530,
                    lost_packets: 0xffff,
                },
                NackPair {
                    packet_id: 4,
                    lost_packets: 0,
                },
            ],
        }));
        write("rtcp_nack", "two-entries", &nack);
        let block = ReceptionReport {
            ssrc: 5,
            last_sender_report: 0x0001_0000,
            delay: 0x8000,
            ..Default::default()
        };
        // rtcp_report: a byte with the SR flag (bit 7) and the block count, a byte of arrival
        // time, then the packet.
        let rr = marshal_one(Box::new(ReceiverReport {
            ssrc: 1,
            reports: vec![block.clone(), block.clone()],
            ..Default::default()
        }));
        write("rtcp_report", "rr", &[&[2u8, 1][..], &rr[..]].concat());
        let sr = marshal_one(Box::new(SenderReport {
            ssrc: 1,
            reports: vec![block],
            ..Default::default()
        }));
        write("rtcp_report", "sr", &[&[0x81u8, 1][..], &sr[..]].concat());
        write("rtcp_xr", "rrtr-dlrr", &marshal_one(xr_packet()));
        // rtcp_twcc: what the relay's own receiver writes (losses, a pause needing two-byte
        // deltas, the sequence wrap), without the padding the compound walk strips.
        let t0 = std::time::Instant::now();
        let mut receiver = relay::engine::twcc::TwccReceiver::new();
        for (seq, ms) in [
            (65_534u16, 0u64),
            (65_535, 2),
            (0, 5),
            (3, 9),
            (4, 300),
            (5, 301),
        ] {
            receiver.handle_packet(t0 + std::time::Duration::from_millis(ms), seq);
        }
        let mut fb = Vec::new();
        assert!(receiver.poll_feedback(t0 + std::time::Duration::from_secs(1), 1, 2, &mut fb));
        if fb[0] & 0x20 != 0 {
            let pad = usize::from(fb[fb.len() - 1]);
            fb.truncate(fb.len() - pad);
        }
        write("rtcp_twcc", "relay-written", &fb);
        // vp8: a keyframe's first packet with every optional field, and a short inter frame.
        write(
            "vp8",
            "keyframe-all-fields",
            &[0x90, 0xf0, 0x92, 0x34, 9, 0xa3, 0x10, 0x02, 0x00],
        );
        write("vp8", "inter-7bit", &[0xb0, 0x80, 0x05, 0x11]);
        // h264: an SPS alone, a STAP-A with PPS and SPS, an IDR's first FU-A fragment, a
        // non-IDR slice.
        write("h264", "sps", &[0x67, 0x42, 0xc0, 0x1f]);
        write(
            "h264",
            "stap-a",
            &[0x78, 0, 2, 0x68, 0xce, 0, 2, 0x67, 0x42],
        );
        write("h264", "fu-a-idr-start", &[0x7c, 0x85, 0x88, 0x84]);
        write("h264", "slice", &[0x41, 0x9a, 0x02]);
    }
    // srtp: selector byte (bit 0: SHA1 profile, bit 1: protect then open), then a datagram.
    for (selector, name) in [
        (0u8, "gcm"),
        (1, "sha1"),
        (2, "gcm-roundtrip"),
        (3, "sha1-roundtrip"),
    ] {
        let mut d = vec![selector];
        d.extend_from_slice(&rtp);
        write("srtp", name, &d);
    }
    write("srtp", "sha1-rtcp", &[&[1u8][..], &rtcp[..]].concat());
    for (name, line) in [
        ("hello", r#"{"id":1,"op":"hello","token":"t"}"#),
        (
            "create",
            r#"{"id":2,"op":"create_session","sid":"a","core":1}"#,
        ),
        (
            "add",
            r#"{"id":3,"op":"add_participant","sid":"a","uid":"u","config":{"remote_ufrag":"x","remote_fingerprint":null}}"#,
        ),
        (
            "publish",
            r#"{"id":4,"op":"publish","sid":"a","uid":"u","feed":{"feed_id":"f","kind":"video","ssrc":5,"clock_rate":90000,"payload_types":[96],"header_extensions":[{"id":3,"uri":"urn:ietf:params:rtp-hdrext:sdes:mid"}]}}"#,
        ),
        (
            "subscribe",
            r#"{"id":5,"op":"subscribe","sid":"a","uid":"v","feed_id":"f"}"#,
        ),
        ("stats", r#"{"id":6,"op":"stats"}"#),
    ] {
        write("control", name, line.as_bytes());
    }
    // Worker: media from the publisher (protected with its real key), feedback from the
    // subscriber, timers, and packets from a stranger.
    let mut w = Vec::new();
    w.extend(record(4, &rtp_packet(0x1234, true, false)));
    w.extend(record(4 | 0x10, &rtp_packet(0x1234, false, false)));
    w.extend(record(8 | 1, &rtcp));
    w.extend(record(8, &rtcp));
    w.extend(record(2, &stun));
    w.extend(record(2, &dtls));
    w.extend(record(0x20, &stun_plain));
    w.extend(record(0x30, &[]));
    write("worker", "session", &w);
    // Worker, simulcast: three layers named by rid (the fourth header byte picks it), then
    // their packets unnamed, a layer's RTX named by repaired rid, an unknown rid, another MID.
    let mut w = Vec::new();
    for (pick, ssrc) in [(0u8, 0x51), (1, 0x52), (2, 0x53)] {
        let mut p = rtp_packet(ssrc, true, false);
        p[3] = pick;
        // A VP8 keyframe's first packet: S set, partition 0, the frame tag's P bit clear.
        p[20] = 0x10;
        p[21] = 0x00;
        w.extend(record(4 | 0x40, &p));
        w.extend(record(4 | 0x40 | 0x10, &rtp_packet(ssrc, false, false)));
    }
    for pick in [4u8, 3, 8] {
        let mut p = rtp_packet(0x60 + u32::from(pick), true, false);
        p[1] = 99;
        p[3] = pick;
        w.extend(record(4 | 0x40, &p));
    }
    w.extend(record(0x20, &[]));
    write("worker", "simulcast", &w);
    // client_hello: datagrams, each after its two-byte length. A hello in one record, and
    // one whose key share pushes use_srtp into a second record, as Chromium's does.
    let small = fuzzing::client_hello_record(&[fuzzing::use_srtp(&[1, 7])]);
    let large =
        fuzzing::client_hello_record(&[(0x33, vec![0x5a; 1200]), fuzzing::use_srtp(&[1, 8, 7, 2])]);
    for (name, datagrams) in [
        ("one-record", vec![small]),
        (
            "two-records",
            fuzzing::fragmented_client_hello(&large, 1000),
        ),
    ] {
        let mut d = Vec::new();
        for datagram in datagrams {
            d.extend((datagram.len() as u16).to_be_bytes());
            d.extend(datagram);
        }
        write("client_hello", name, &d);
    }
    dtls_record_seeds();
    data_seeds();
}

/// dtls_record: datagrams after their length and a selector (bit 0: the peer seals it first;
/// bit 1: 50 ms pass).
fn dtls_record_seeds() {
    let datagram = |selector: u8, bytes: &[u8]| {
        let mut d = (bytes.len() as u16).to_be_bytes().to_vec();
        d.push(selector);
        d.extend_from_slice(bytes);
        d
    };
    let header = |content: u8, epoch: u8, seq: u8, len: u8| {
        vec![content, 0xfe, 0xfd, 0, epoch, 0, 0, 0, 0, 0, seq, 0, len]
    };
    let sctp = [0x13, 0x88, 0x13, 0x88, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut sealed = datagram(1, &sctp);
    sealed.extend(datagram(3, b"a second packet"));
    write("dtls_record", "sealed", &sealed);
    // The peer's last flight again: a handshake record, ChangeCipherSpec and its Finished.
    let mut flight = header(22, 0, 5, 4);
    flight.extend([16, 0, 0, 0]);
    flight.extend(header(20, 0, 6, 1));
    flight.push(1);
    flight.extend(header(22, 1, 0, 24));
    flight.extend([0x5a; 24]);
    let mut d = datagram(0, &flight);
    d.extend(datagram(2, &flight));
    write("dtls_record", "repeated-flight", &d);
    let mut forged = header(23, 1, 9, 30);
    forged.extend([0xa5; 30]);
    let mut alert = header(21, 1, 10, 26);
    alert.extend([0x11; 26]);
    let mut d = datagram(0, &forged);
    d.extend(datagram(0, &alert));
    write("dtls_record", "forged", &d);
}

/// DCEP messages, envelopes, and sequences for the `data` target (`[flags][len][bytes]`).
fn data_seeds() {
    use relay::engine::dcep::{Delivery, Message, Open};
    use relay::sfu::data::envelope::{address, Delivered};
    let open = |label: &str, delivery| {
        Message::Open(Open {
            delivery,
            priority: 256,
            label: label.into(),
            protocol: String::new(),
        })
        .to_bytes()
    };
    write("dcep", "open-reliable", &open("chat", Delivery::RELIABLE));
    write("dcep", "open-lossy", &open("cursors", Delivery::LOSSY));
    write("dcep", "ack", &Message::Ack.to_bytes());
    write(
        "data_envelope",
        "to-everyone",
        &address(true, &[], b"hello"),
    );
    write(
        "data_envelope",
        "to-two",
        &address(false, &["sub0", "sub1"], &[0, 1, 2]),
    );
    let delivered = Delivered {
        text: false,
        from: "pub",
        payload: &[0, 1],
    };
    write("data_envelope", "delivered", &delivered.to_bytes());
    let record = |flags: u8, bytes: &[u8]| {
        let mut r = vec![flags];
        r.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        r.extend_from_slice(bytes);
        r
    };
    let mut sends = record(4, &address(true, &[], b"hi"));
    sends.extend(record(8, &address(false, &["sub1"], &[7; 100])));
    sends.extend(record(0x14, &address(true, &[], b"later")));
    write("data", "pub-sends", &sends);
    let mut refused = record(5, &address(true, &[], b"no"));
    refused.extend(record(0x25, &address(true, &[], b"no again")));
    write("data", "sub-refused", &refused);
    // An INIT behind a valid header (flag 0x40), then bytes that are no SCTP at all.
    let init = [
        1, 0, 0, 20, 0, 0, 0, 7, 0, 1, 0, 0, 0, 16, 0, 16, 0, 0, 0, 1,
    ];
    let mut raw = record(0x40, &init);
    raw.extend(record(1, b"garbage"));
    write("data", "raw", &raw);
    // vp9: a keyframe's first packet with a 15-bit picture id, a layer index and a
    // scalability structure of three layers, then a keyframe header; an upper layer's inter
    // packet in flexible mode.
    let mut vp9_key = vec![0b1010_1010, 0x92, 0x34, 0x00, 7, 0b0101_0000];
    for (w, h) in [(320u16, 180u16), (640, 360), (1280, 720)] {
        vp9_key.extend_from_slice(&w.to_be_bytes());
        vp9_key.extend_from_slice(&h.to_be_bytes());
    }
    vp9_key.extend_from_slice(&[0x82, 0x49, 0x83, 0x42, 0x00, 0x04, 0xff, 0x02, 0xcf]);
    write("vp9", "keyframe-ss", &vp9_key);
    write(
        "vp9",
        "flexible-inter",
        &[0b1111_0100, 0x05, 0b0010_0010, 0x03, 0x04, 0xaa],
    );
    // record: `[flags][codec][seq: 2][ts: 4][len][payload]` per packet. A VP8 keyframe over two
    // packets and a delta frame, audio around them with reports, one packet skipped, time
    // passing; then a VP9 keyframe.
    let packet = |flags: u8, seq: u16, ts: u32, payload: &[u8]| {
        // The codec byte: VP9 where flag 0x02 says so (as the seeds were first written).
        let mut p = vec![flags & !0x02, (flags >> 1) & 1];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.push(payload.len() as u8);
        p.extend_from_slice(payload);
        p
    };
    let mut feed = Vec::new();
    feed.extend(packet(0x09, 1, 960, &[0xfc, 1, 2, 3]));
    feed.extend(packet(
        0x08,
        10,
        3000,
        &[
            0x10, 0x00, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01,
        ],
    ));
    feed.extend(packet(0x24, 11, 3000, &[0x00, 7, 7, 7]));
    feed.extend(packet(0x21, 2, 1920, &[0xfc, 4, 5]));
    feed.extend(packet(0x84, 12, 6000, &[0x10, 0x01, 0x00, 0x00, 5]));
    feed.extend(packet(0x61, 4, 2880, &[0xfc, 6]));
    write("record", "vp8-opus", &feed);
    let mut vp9_feed = packet(0x0e, 1, 9000, &vp9_key);
    vp9_feed.extend(packet(
        0x2e,
        2,
        12000,
        &[0b1111_1100, 0x06, 0b0010_0010, 0x02, 0xaa],
    ));
    write("record", "vp9", &vp9_feed);
}
