//! Data channels through a whole worker: each participant's side is an SCTP client over its
//! (here imaginary) DTLS, as a browser is; the worker opens its two channels to each, takes
//! in what each sends at its rate, and routes it by the envelope.

use std::time::Duration;

use bytes::Bytes;
use relay::control::Event;
use relay::fuzzing::data::DataHarness;
use relay::ids::ParticipantKey;
use relay::sfu::data::envelope::address;
use relay::sfu::data::{LOSSY_STREAM, RELIABLE_STREAM};
use relay::sfu::worker::WorkerConfig;

#[test]
fn messages_reach_everyone_else_or_the_named_participants_on_the_channel_they_were_sent_on() {
    let mut s = DataHarness::new(WorkerConfig::default());
    for (_, _, c) in &s.peers {
        assert!(c.is_connected());
        // The relay's two channels, on odd streams, acknowledged.
        assert!(c.channel(RELIABLE_STREAM).unwrap().delivery.is_reliable());
        assert!(!c.channel(LOSSY_STREAM).unwrap().delivery.is_reliable());
    }
    s.send(0, RELIABLE_STREAM, &[], b"to everyone");
    s.send(0, LOSSY_STREAM, &["sub1"], b"to sub1");
    assert!(
        s.received(0).is_empty(),
        "a sender never receives its own message"
    );
    let to_everyone = (RELIABLE_STREAM, "pub".to_owned(), b"to everyone".to_vec());
    assert_eq!(s.received(1), std::slice::from_ref(&to_everyone));
    assert_eq!(
        s.received(2),
        [
            to_everyone,
            (LOSSY_STREAM, "pub".to_owned(), b"to sub1".to_vec())
        ]
    );
    let stats = s.h.worker.stats().data;
    assert_eq!((stats.messages_in, stats.messages_out), (2, 3));
    // An envelope that does not read is dropped and counted; nothing reaches anyone.
    let now = s.h.now;
    s.peers[0]
        .2
        .send(now, RELIABLE_STREAM, false, &Bytes::from_static(&[9, 9, 9]))
        .unwrap();
    s.pump();
    assert!(s.received(1).is_empty() && s.received(2).is_empty());
    assert_eq!(s.h.worker.stats().data.malformed, 1);
}

#[test]
fn a_participant_without_the_grant_is_refused_with_a_reason_and_nobody_gets_its_message() {
    let mut s = DataHarness::new(WorkerConfig::default());
    s.send(1, RELIABLE_STREAM, &[], b"may I?");
    s.send(1, RELIABLE_STREAM, &[], b"again");
    assert!(s.received(0).is_empty() && s.received(2).is_empty());
    assert_eq!(s.h.worker.stats().data.refused, 2);
    // Told once, not per message.
    let refusals: Vec<&Event> = s
        .events
        .iter()
        .filter(|e| matches!(e, Event::DataRefused { .. }))
        .collect();
    assert_eq!(refusals.len(), 1, "{:?}", s.events);
    let Event::DataRefused { uid, reason, .. } = refusals[0] else {
        unreachable!()
    };
    assert_eq!(uid.0, "sub0");
    assert!(reason.contains("publish_data"), "{reason}");
    // The others' channels are unaffected.
    s.send(0, RELIABLE_STREAM, &["sub0"], b"fine");
    assert_eq!(s.received(1).len(), 1);
}

#[test]
fn a_sender_over_its_rate_is_held_back_and_loses_nothing() {
    let config = WorkerConfig {
        data_rate: 100 * 1024,
        data_burst: 16 * 1024,
        ..Default::default()
    };
    let mut s = DataHarness::new(config);
    // 2 MiB offered at once, twenty times the rate and twice what the relay's receive buffer
    // holds: its window closes, and it must say when it opens again.
    for i in 0..2048u32 {
        let mut payload = i.to_be_bytes().to_vec();
        payload.resize(1024, 0);
        let now = s.h.now;
        let bytes = Bytes::from(address(false, &[], &payload));
        s.peers[0]
            .2
            .send(now, RELIABLE_STREAM, false, &bytes)
            .unwrap();
    }
    s.pump();
    let mut got: Vec<u32> = Vec::new();
    let take = |s: &mut DataHarness, got: &mut Vec<u32>| {
        for (_, _, p) in s.received(1) {
            got.push(u32::from_be_bytes([p[0], p[1], p[2], p[3]]));
        }
    };
    s.run_for(Duration::from_secs(2));
    take(&mut s, &mut got);
    // About the burst and two seconds of the rate (each message carries its envelope).
    let kib = got.len();
    assert!((150..=260).contains(&kib), "{kib} KiB in 2 s at 100 KiB/s");
    assert!(s.h.worker.stats().data.held_back > 0);
    // Everything comes, in order, at the rate: about 20 s for the whole.
    let mut seconds = 2;
    while got.len() < 2048 && seconds < 60 {
        s.run_for(Duration::from_secs(1));
        take(&mut s, &mut got);
        seconds += 1;
    }
    assert_eq!(got, (0..2048).collect::<Vec<_>>());
    assert!((19..=24).contains(&seconds), "all in {seconds} s");
    // The other receiver got everything too.
    assert_eq!(s.h.worker.stats().data.messages_out, 4096);
}

#[test]
fn a_participant_whose_association_is_still_coming_up_gets_its_messages_once_it_is() {
    let mut s = DataHarness::start(WorkerConfig::default(), true);
    s.send(0, RELIABLE_STREAM, &[], b"early");
    s.send(0, LOSSY_STREAM, &["sub1"], b"early, lossy");
    assert_eq!(s.received(1).len(), 1);
    assert_eq!(s.h.worker.stats().data.undeliverable, 0);
    s.connect_late();
    assert_eq!(
        s.received(2),
        [
            (RELIABLE_STREAM, "pub".to_owned(), b"early".to_vec()),
            (LOSSY_STREAM, "pub".to_owned(), b"early, lossy".to_vec())
        ]
    );
}

#[test]
fn garbage_sctp_is_dropped_and_the_session_carries_on() {
    let mut s = DataHarness::new(WorkerConfig::default());
    let key = s.peers[0].1;
    let now = s.h.now;
    for garbage in [&[][..], &[0xff; 3], &[0; 12], &[0xab; 1500]] {
        s.h.worker.handle_sctp(now, key, garbage);
    }
    // An unknown participant's packet is ignored.
    s.h.worker.handle_sctp(now, ParticipantKey(9999), &[0; 40]);
    s.pump();
    s.send(0, RELIABLE_STREAM, &[], b"still fine");
    assert_eq!(s.received(1).len(), 1);
}

/// A session spread over two cores: the origin core's "pub" and the sink core's "far" each
/// have an SCTP client; the test carries the cores' messages to each other.
#[test]
fn messages_cross_to_the_participants_of_the_session_on_another_core() {
    use relay::control::ParticipantConfig;
    use relay::engine::sctp::{DataChannels, MAX_MESSAGE_SIZE};
    use relay::engine::srtp::SrtpProfile;
    use relay::fuzzing::spread_harness;
    use relay::ids::{Sid, Uid};
    use relay::sfu::data::envelope::Delivered;
    use relay::sfu::worker::Output;

    let mut sp = spread_harness(SrtpProfile::AeadAes128Gcm);
    let sid = Sid::from("s");
    let now = sp.origin.now;
    sp.origin.worker.set_session_cores(&sid, &[0, 1]).unwrap();
    sp.sink.set_session_cores(&sid, &[0, 1]).unwrap();
    let may_send = ParticipantConfig {
        remote_ufrag: Some("peer".into()),
        publish_data: true,
        ..Default::default()
    };
    sp.origin
        .worker
        .update_participant(&sid, &Uid::from("pub"), may_send.clone())
        .unwrap();
    sp.sink
        .update_participant(&sid, &Uid::from("far"), may_send)
        .unwrap();
    let pub_key = sp
        .origin
        .worker
        .participant_key(&sid, &Uid::from("pub"))
        .unwrap();
    let far_key = sp.sink.participant_key(&sid, &Uid::from("far")).unwrap();
    let mut pub_client = DataChannels::client(now, MAX_MESSAGE_SIZE as usize);
    let mut far_client = DataChannels::client(now, MAX_MESSAGE_SIZE as usize);
    let mut crossed = 0;
    let pump = |sp: &mut relay::fuzzing::SpreadHarness,
                pub_client: &mut DataChannels,
                far_client: &mut DataChannels,
                crossed: &mut usize| {
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(p) = pub_client.poll_transmit() {
                sp.origin.worker.handle_sctp(now, pub_key, &p);
                moved = true;
            }
            while let Some(p) = far_client.poll_transmit() {
                sp.sink.handle_sctp(now, far_key, &p);
                moved = true;
            }
            while let Some(o) = sp.origin.worker.poll_output() {
                match o {
                    Output::Sctp { key, packet } if key == pub_key => {
                        pub_client.handle_packet(now, &packet);
                        moved = true;
                    }
                    Output::CrossCore { core: 1, message } => {
                        *crossed += 1;
                        sp.sink.handle_cross_core(now, message);
                        moved = true;
                    }
                    _ => {}
                }
            }
            while let Some(o) = sp.sink.poll_output() {
                match o {
                    Output::Sctp { key, packet } if key == far_key => {
                        far_client.handle_packet(now, &packet);
                        moved = true;
                    }
                    Output::CrossCore { core: 0, message } => {
                        *crossed += 1;
                        sp.origin.worker.handle_cross_core(now, message);
                        moved = true;
                    }
                    _ => {}
                }
            }
            if !moved {
                return;
            }
        }
        panic!("packets never stopped");
    };
    let read = |c: &mut DataChannels| -> Vec<(String, Vec<u8>)> {
        std::iter::from_fn(|| c.read(now))
            .map(|m| {
                let d = Delivered::parse(&m.data).unwrap();
                (d.from.to_owned(), d.payload.to_vec())
            })
            .collect()
    };
    pump(&mut sp, &mut pub_client, &mut far_client, &mut crossed);
    assert!(read(&mut pub_client).is_empty() && read(&mut far_client).is_empty());
    pump(&mut sp, &mut pub_client, &mut far_client, &mut crossed);
    for (targets, payload) in [
        (&[][..], &b"to all"[..]),
        (&["far"][..], b"to far"),
        (&["sub0"][..], b"to sub0"),
    ] {
        let bytes = Bytes::from(address(false, targets, payload));
        pub_client
            .send(now, RELIABLE_STREAM, false, &bytes)
            .unwrap();
    }
    pump(&mut sp, &mut pub_client, &mut far_client, &mut crossed);
    assert_eq!(
        read(&mut far_client),
        [
            ("pub".to_owned(), b"to all".to_vec()),
            ("pub".to_owned(), b"to far".to_vec())
        ]
    );
    // Each message crossed once, whatever it was for.
    assert_eq!(crossed, 3);
    // And the other way.
    let bytes = Bytes::from(address(true, &[], b"from far"));
    far_client.send(now, LOSSY_STREAM, false, &bytes).unwrap();
    pump(&mut sp, &mut pub_client, &mut far_client, &mut crossed);
    assert_eq!(
        read(&mut pub_client),
        [("far".to_owned(), b"from far".to_vec())]
    );
    assert!(read(&mut far_client).is_empty());
}
