use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::*;
use crate::frame::Datagram;
use relay::control::{FeedDescription, MediaKind};
use relay::ids::{FeedKey, SessionKey};
use relay::sfu::cross_core::{RelayedRtp, RtpInfo};
use relay::sfu::data::RelayedData;

/// The origin of the feed on node A (core 1) and its replica on node B (from B's edge,
/// which is B's "core" 4).
const AT_A: FeedRoute = FeedRoute {
    core: 1,
    session: SessionKey(10),
    feed: FeedKey(20),
};
const AT_B: FeedRoute = FeedRoute {
    core: 4,
    session: SessionKey(1),
    feed: FeedKey(1),
};

fn sid() -> Sid {
    "c/room".into()
}

fn cam() -> FeedId {
    "cam".into()
}

fn description() -> FeedDescription {
    FeedDescription {
        feed_id: cam(),
        kind: MediaKind::Video,
        ssrc: None,
        clock_rate: 90_000,
        payload_types: vec![96],
        header_extensions: vec![],
        nack: true,
        rtx_ssrc: None,
        rtx_payload_types: vec![],
        codecs: vec![],
        simulcast: None,
        screen: false,
        renumbering: None,
    }
}

fn rtp(seq: u16, layer: u8) -> CrossCore {
    let mut plain = vec![0x80, 96, 0, 0, 0, 0, 0, 9, 0, 0, 0, 7, 1, 2, 3];
    plain[2..4].copy_from_slice(&seq.to_be_bytes());
    CrossCore::Rtp {
        route: AT_A,
        packet: Arc::new(RelayedRtp {
            plain,
            info: RtpInfo {
                ssrc: 7,
                sequence: seq,
                timestamp: 9,
                payload_len: 3,
                playout_delay: None,
                layer,
                keyframe: seq == 0,
                frame_size: (seq == 0).then_some((1280, 720)),
                layers_off: 0,
                reference_timestamp: None,
                svc: None,
            },
            arrived: None,
        }),
    }
}

/// Two nodes' tunnels of one trunk, with what each hands its node.
struct Pair {
    a: Tunnel,
    b: Tunnel,
    /// What reached A's node (not the peer).
    at_a: Vec<TunnelOutput>,
    /// What reached B's node.
    at_b: Vec<TunnelOutput>,
    /// Datagrams from A that the trunk loses, by their order.
    lose: Vec<usize>,
    sent: usize,
    /// What A's relay says the feed is.
    feed: FeedDescription,
}

impl Pair {
    fn new() -> Pair {
        Pair {
            a: Tunnel::new(),
            b: Tunnel::new(),
            at_a: vec![],
            at_b: vec![],
            lose: vec![],
            sent: 0,
            feed: description(),
        }
    }

    /// Deliver everything until both are quiet; A's relay answers exports with the feed.
    fn run(&mut self) {
        loop {
            let mut moved = false;
            while let Some(out) = self.a.poll_output() {
                moved = true;
                match out {
                    TunnelOutput::Control(c) => self.b.handle_control(c),
                    TunnelOutput::Datagram(d) => {
                        self.sent += 1;
                        if !self.lose.contains(&self.sent) {
                            self.b.handle_datagram(&d, SystemTime::UNIX_EPOCH);
                        }
                    }
                    TunnelOutput::Export { sid, feed_id } => {
                        self.a
                            .handle_exported(&sid, &feed_id, Some((AT_A, self.feed.clone())));
                        self.at_a.push(TunnelOutput::Export { sid, feed_id });
                    }
                    other => self.at_a.push(other),
                }
            }
            while let Some(out) = self.b.poll_output() {
                moved = true;
                match out {
                    TunnelOutput::Control(c) => self.a.handle_control(c),
                    TunnelOutput::Datagram(d) => self.a.handle_datagram(&d, SystemTime::UNIX_EPOCH),
                    other => self.at_b.push(other),
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Sequence numbers of the packets B's cores got, per core.
    fn delivered(&self, core: usize) -> Vec<u16> {
        self.at_b
            .iter()
            .filter_map(|o| match o {
                TunnelOutput::ToCore {
                    core: c,
                    message: CrossCore::Rtp { route, packet },
                } if *c == core => {
                    assert_eq!(*route, AT_B);
                    Some(packet.info.sequence)
                }
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_data_channel_message_crosses_as_sent_and_a_bad_one_is_counted() {
    let mut p = Pair::new();
    let sent = RelayedData {
        sid: sid(),
        from: "alice".into(),
        targets: vec!["bob".into()],
        reliable: false,
        text: true,
        delivered: Bytes::from_static(b"\x01\x00\x05alicehi \xe2\x9c\x93"),
    };
    p.a.send_data(&sent);
    p.run();
    let got: Vec<&RelayedData> = p
        .at_b
        .iter()
        .filter_map(|o| match o {
            TunnelOutput::Data(r) => Some(&**r),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), 1);
    let r = got[0];
    assert_eq!(
        (
            &r.sid,
            &r.from,
            &r.targets,
            r.reliable,
            r.text,
            &r.delivered
        ),
        (
            &sent.sid,
            &sent.from,
            &sent.targets,
            false,
            true,
            &sent.delivered
        )
    );
    assert_eq!((p.a.stats().data_out, p.b.stats().data_in), (1, 1));
    // A payload that is not base64 is the peer's fault: counted, nothing delivered.
    p.b.handle_control(Control::Data {
        sid: sid(),
        from: "x".into(),
        targets: vec![],
        reliable: true,
        text: false,
        delivered: "not base64!".into(),
    });
    assert!(p.b.poll_output().is_none());
    assert_eq!(p.b.stats().bad_control, 1);
    // A message whose frame the peer would refuse (over MAX_CONTROL once its many long
    // uids are escaped) is not sent: it would close the trunk for every session.
    let huge = RelayedData {
        targets: (0..1024)
            .map(|_| relay::ids::Uid("\u{1}".repeat(250)))
            .collect(),
        delivered: Bytes::from(vec![0u8; 256 * 1024]),
        ..sent
    };
    p.a.send_data(&huge);
    assert!(p.a.poll_output().is_none());
    assert_eq!((p.a.stats().data_out, p.a.stats().data_too_large), (1, 1));
}

#[test]
fn a_feed_crosses_once_for_every_core_with_subscribers_and_stops_with_the_last() {
    let mut p = Pair::new();
    p.b.import(&sid(), &cam(), AT_B);
    p.run();
    assert_eq!(p.a.exported(), 0, "nothing flows before a subscriber");
    p.b.set_sink(AT_B, 0, true);
    p.b.set_sink(AT_B, 2, true);
    p.run();
    assert_eq!(p.a.exported(), 1);
    assert_eq!(p.at_a.len(), 2, "{:?}", p.at_a); // the export, then the first keyframe ask
    let TunnelOutput::ToCore {
        core: 1,
        message:
            CrossCore::KeyframeRequest {
                route: AT_A,
                layer: None,
                bypass_limit: true,
            },
    } = p.at_a[1]
    else {
        panic!("{:?}", p.at_a[1]);
    };
    for seq in 0..3 {
        p.a.handle_core(rtp(seq, 0));
    }
    p.run();
    assert_eq!(p.a.stats().datagrams_out, 3, "once on the trunk");
    assert_eq!(p.delivered(0), [0, 1, 2]);
    assert_eq!(p.delivered(2), [0, 1, 2]);
    let TunnelOutput::ToCore {
        message: CrossCore::Rtp { packet, .. },
        ..
    } = &p.at_b[0]
    else {
        panic!()
    };
    assert!(packet.info.keyframe && packet.info.frame_size == Some((1280, 720)));

    p.b.set_sink(AT_B, 0, false);
    p.run();
    assert_eq!(p.a.exported(), 1, "core 2 still has subscribers");
    p.b.set_sink(AT_B, 2, false);
    p.run();
    assert_eq!(p.a.exported(), 0);
    assert!(matches!(
        p.at_a.last(),
        Some(TunnelOutput::Unexport { route: AT_A })
    ));
    p.a.handle_core(rtp(3, 0));
    assert!(p.a.poll_output().is_none(), "not sent once unsubscribed");
}

#[test]
fn a_datagram_lost_on_the_trunk_is_asked_for_and_resent() {
    let mut p = Pair::new();
    p.b.import(&sid(), &cam(), AT_B);
    p.b.set_sink(AT_B, 0, true);
    p.run();
    p.lose = vec![3, 4];
    for seq in 0..6 {
        p.a.handle_core(rtp(seq, 0));
    }
    p.run();
    // The gap is seen at 4 and asked for at once; 5 was on its way already.
    assert_eq!(p.delivered(0), [0, 1, 4, 5, 2, 3]);
    let (a, b) = (p.a.stats(), p.b.stats());
    assert_eq!((b.nacked, a.resent, a.resend_missed), (2, 2, 0));
}

#[test]
fn keyframe_requests_and_layers_wanted_reach_the_origin_core() {
    let mut p = Pair::new();
    p.b.import(&sid(), &cam(), AT_B);
    p.b.set_sink(AT_B, 0, true);
    p.b.set_sink(AT_B, 2, true);
    // Before the channel opens: remembered, told once it does.
    p.b.handle_core(CrossCore::LayersWanted {
        route: AT_B,
        core: 0,
        mask: 0b001,
    });
    p.run();
    p.b.handle_core(CrossCore::LayersWanted {
        route: AT_B,
        core: 2,
        mask: 0b100,
    });
    p.b.handle_core(CrossCore::LayersWanted {
        route: AT_B,
        core: 2,
        mask: 0b100,
    });
    p.b.handle_core(CrossCore::KeyframeRequest {
        route: AT_B,
        layer: Some(2),
        bypass_limit: false,
    });
    p.run();
    let layers: Vec<u8> = p
        .at_a
        .iter()
        .filter_map(|o| match o {
            TunnelOutput::LayersWanted { route: AT_A, mask } => Some(*mask),
            _ => None,
        })
        .collect();
    assert_eq!(
        layers,
        [0b001, 0b101],
        "combined over B's cores, each change once"
    );
    assert!(matches!(
        p.at_a.last(),
        Some(TunnelOutput::ToCore {
            core: 1,
            message: CrossCore::KeyframeRequest {
                route: AT_A,
                layer: Some(2),
                bypass_limit: false
            }
        })
    ));
}

#[test]
fn what_does_not_fit_the_trunk_is_counted_and_dropped() {
    let mut p = Pair::new();
    p.b.handle_datagram(&[0, 0, 0, 0, 9, 0, 0, 0], SystemTime::UNIX_EPOCH);
    p.b.handle_datagram(&[1, 2], SystemTime::UNIX_EPOCH);
    // An Open for a feed B never asked for.
    p.b.handle_control(Control::Open {
        channel: 0,
        sid: sid(),
        feed: description(),
    });
    p.a.handle_control(Control::KeyframeRequest {
        channel: 9,
        layer: None,
        bypass_limit: false,
    });
    let mut d = vec![];
    let CrossCore::Rtp { packet, .. } = rtp(1, 0) else {
        unreachable!()
    };
    Datagram {
        channel: 0,
        resent: false,
        info: packet.info,
        packet: &packet.plain,
    }
    .write(&mut d);
    p.b.handle_datagram(&d, SystemTime::UNIX_EPOCH);
    let b = p.b.stats();
    assert_eq!((b.malformed, b.bad_control, b.unknown_channel), (2, 1, 1));
    assert_eq!(p.a.stats().bad_control, 1);
    assert!(p.b.poll_output().is_none() && p.a.poll_output().is_none());
}

#[test]
fn layers_no_subscriber_on_the_peer_wants_do_not_cross_but_the_lowest() {
    let mut p = Pair::new();
    p.feed.simulcast = Some(relay::control::Simulcast {
        mid: "0".into(),
        rids: vec!["q".into(), "h".into(), "f".into()],
    });
    p.b.import(&sid(), &cam(), AT_B);
    p.b.set_sink(AT_B, 0, true);
    p.run();
    let mut seq = 0;
    let mut send_layers = |p: &mut Pair| {
        let before = p.delivered(0).len();
        for layer in 0..3 {
            p.a.handle_core(rtp(seq, layer));
            seq += 1;
        }
        p.run();
        p.delivered(0).len() - before
    };
    // Before B said what its subscribers want: every layer.
    assert_eq!(send_layers(&mut p), 3);
    // B's subscribers want the middle layer only (small elements): the top one stays
    // home, the lowest still crosses.
    p.b.handle_core(CrossCore::LayersWanted {
        route: AT_B,
        core: 0,
        mask: 0b010,
    });
    p.run();
    assert_eq!(send_layers(&mut p), 2);
    assert_eq!(p.a.stats().unwanted, 1);
    // One of them grows: the top layer crosses again.
    p.b.handle_core(CrossCore::LayersWanted {
        route: AT_B,
        core: 0,
        mask: 0b111,
    });
    p.run();
    assert_eq!(send_layers(&mut p), 3);
    assert_eq!(p.a.stats().unwanted, 1);
    // Back to the middle only; then a subscriber there asks for a keyframe of the top
    // layer (its element grew): that layer crosses at once, before the next report.
    p.b.handle_core(CrossCore::LayersWanted {
        route: AT_B,
        core: 0,
        mask: 0b011,
    });
    p.run();
    assert_eq!(send_layers(&mut p), 2);
    p.b.handle_core(CrossCore::KeyframeRequest {
        route: AT_B,
        layer: Some(2),
        bypass_limit: false,
    });
    p.run();
    assert_eq!(send_layers(&mut p), 3);
}

#[test]
fn a_congested_trunk_sheds_the_top_layers_one_a_second_and_takes_them_back_when_clear() {
    let mut p = Pair::new();
    p.feed.simulcast = Some(relay::control::Simulcast {
        mid: "0".into(),
        rids: vec!["q".into(), "h".into(), "f".into()],
    });
    p.b.import(&sid(), &cam(), AT_B);
    p.b.set_sink(AT_B, 0, true);
    p.run();
    let start = Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    // One packet of each layer, and what crossed.
    let mut seq = 0;
    let mut send_layers = |p: &mut Pair| {
        let before = p.delivered(0).len();
        for layer in 0..3 {
            p.a.handle_core(rtp(seq, layer));
            seq += 1;
        }
        p.run();
        p.delivered(0).len() - before
    };
    assert_eq!(send_layers(&mut p), 3);
    p.a.handle_trunk_state(at(0), false);
    assert_eq!(p.a.stats().layer_cap, Some(1));
    assert_eq!(send_layers(&mut p), 2, "the top layer is shed");
    p.a.handle_trunk_state(at(500), false);
    assert_eq!(p.a.stats().layer_cap, Some(1), "one step a second");
    p.a.handle_trunk_state(at(1000), false);
    p.a.handle_trunk_state(at(2000), false);
    assert_eq!(
        p.a.stats().layer_cap,
        Some(0),
        "never below the lowest layer"
    );
    assert_eq!(send_layers(&mut p), 1);
    assert_eq!(p.a.stats().shed, 3);
    // Clear for 5 s: one layer back, 5 s later the next.
    p.a.handle_trunk_state(at(2100), true);
    p.a.handle_trunk_state(at(7000), true);
    assert_eq!(p.a.stats().layer_cap, Some(0));
    p.a.handle_trunk_state(at(7100), true);
    assert_eq!(p.a.stats().layer_cap, Some(1));
    p.a.handle_trunk_state(at(12200), true);
    assert_eq!(p.a.stats().layer_cap, None);
    assert_eq!(send_layers(&mut p), 3);
}

#[test]
fn audio_and_single_stream_video_are_never_shed() {
    let mut p = Pair::new();
    p.feed.kind = MediaKind::Audio;
    p.b.import(&sid(), &cam(), AT_B);
    p.b.set_sink(AT_B, 0, true);
    p.run();
    let start = Instant::now();
    for s in 0..5 {
        p.a.handle_trunk_state(start + STEP_DOWN_EVERY * s, false);
        p.a.handle_core(rtp(s as u16, 0));
    }
    p.run();
    assert_eq!(p.delivered(0).len(), 5);
    assert_eq!(p.a.stats().shed, 0);
}

#[test]
fn after_a_broken_trunk_the_feeds_wanted_are_asked_for_again() {
    let mut p = Pair::new();
    p.b.import(&sid(), &cam(), AT_B);
    p.b.set_sink(AT_B, 0, true);
    p.run();
    p.a.reset();
    p.b.reset();
    let mut fresh = Pair::new();
    fresh.a = std::mem::take(&mut p.a);
    fresh.b = std::mem::take(&mut p.b);
    fresh.run();
    assert!(fresh
        .at_a
        .iter()
        .any(|o| matches!(o, TunnelOutput::Unexport { route: AT_A })));
    assert_eq!(fresh.a.exported(), 1, "asked again on the new trunk");
    fresh.a.handle_core(rtp(0, 0));
    fresh.run();
    assert_eq!(fresh.delivered(0), [0]);
}
