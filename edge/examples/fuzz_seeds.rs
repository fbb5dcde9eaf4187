//! Writes the seed inputs of the edge's fuzz targets into `fuzz/corpus/<target>/`: media
//! datagrams with each optional field, and control streams with every message.

use std::path::Path;

use edge::frame::{Control, Datagram};
use relay::control::{FeedDescription, MediaKind};
use relay::engine::playout_delay::PlayoutDelay;
use relay::sfu::cross_core::RtpInfo;
use relay::sfu::svc::SvcFrame;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed written");
}

fn main() {
    let rtp = [
        0x90, 96, 0, 7, 0, 0, 0, 9, 0, 0, 0x11, 0x11, 0xbe, 0xde, 0, 1, 0x10, 0xff, 0, 0, 1, 2, 3,
    ];
    let plain = RtpInfo {
        ssrc: 0x1111,
        sequence: 7,
        timestamp: 9,
        payload_len: 3,
        playout_delay: None,
        layer: 0,
        keyframe: false,
        frame_size: None,
        layers_off: 0,
        reference_timestamp: None,
        svc: None,
    };
    let full = RtpInfo {
        layer: 2,
        keyframe: true,
        frame_size: Some((1280, 720)),
        layers_off: 0b010,
        reference_timestamp: Some(12345),
        playout_delay: Some(PlayoutDelay::new(
            std::time::Duration::ZERO,
            std::time::Duration::from_millis(200),
        )),
        svc: Some(SvcFrame {
            frame_number: 3,
            start_of_frame: true,
            end_of_frame: true,
            spatial_id: 1,
            temporal_id: 0,
            needed_by: 0b1110,
            switch_for: 0b0010,
            referenced: [2, 1, 0, 0],
            references: 2,
            structure: 1,
            decode_target_for: [0, 1, 2, 2, 3, 4, 5, 5, 6, 7, 8, 8, 6, 7, 8, 8],
            spatial_layers: 3,
            temporal_layers: 2,
            sizes: [(320, 180), (640, 360), (1280, 720), (0, 0)],
        }),
        ..plain
    };
    let mut out = Vec::new();
    for (name, info, resent) in [
        ("plain", plain, false),
        ("full", full, false),
        ("resent", plain, true),
    ] {
        Datagram {
            channel: 5,
            resent,
            info,
            packet: &rtp,
        }
        .write(&mut out);
        write("edge_datagram", name, &out);
    }

    let feed = FeedDescription {
        feed_id: "cam".into(),
        kind: MediaKind::Video,
        ssrc: None,
        clock_rate: 90_000,
        payload_types: vec![96, 97],
        header_extensions: vec![],
        nack: true,
        rtx_ssrc: None,
        rtx_payload_types: vec![],
        codecs: vec![],
        simulcast: None,
        screen: false,
        renumbering: None,
    };
    let messages = [
        Control::Hello {
            node: "a".into(),
            region: "eu".into(),
            version: edge::VERSION,
        },
        Control::Subscribe {
            sid: "c/room".into(),
            feed_id: "cam".into(),
        },
        Control::Open {
            channel: 0,
            sid: "c/room".into(),
            feed,
        },
        Control::LayersWanted {
            channel: 0,
            mask: 5,
        },
        Control::KeyframeRequest {
            channel: 0,
            layer: Some(2),
            bypass_limit: true,
        },
        Control::Nack {
            channel: 0,
            ssrc: 0x1111,
            sequences: vec![65535, 0, 1],
        },
        Control::Unsubscribe {
            sid: "c/room".into(),
            feed_id: "cam".into(),
        },
        Control::Close { channel: 0 },
        Control::Data {
            sid: "c/room".into(),
            from: "alice".into(),
            targets: vec!["bob".into()],
            reliable: true,
            text: true,
            delivered: "AQAFYWxpY2VoaQ==".into(),
        },
    ];
    // The first byte says where the stream is split in two.
    let mut all = vec![17];
    for m in &messages {
        all.extend(m.encode());
    }
    write("edge_control", "every-message", &all);
    let mut one = vec![255];
    one.extend(messages[2].encode());
    write("edge_control", "open", &one);
}
