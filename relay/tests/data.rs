//! Data channels through a whole worker: each participant's side is an SCTP client over its
//! (here imaginary) DTLS, as a browser is; the worker opens its two channels to each, takes
//! in what each sends at its rate, and routes it by the envelope.

use std::time::Duration;

use bytes::Bytes;
use relay::control::Event;
use relay::fuzzing::data::{DataHarness, SpreadDataHarness};
use relay::ids::{ParticipantKey, Sid, Uid};
use relay::sfu::data::envelope::address;
use relay::sfu::data::{LOSSY_STREAM, MAX_HOLD, RELIABLE_STREAM};
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
    offer(&mut s, 2048, 1024);
    let mut got: Vec<u32> = Vec::new();
    let take = |s: &mut DataHarness, got: &mut Vec<u32>| got.extend(numbers(s, 1, usize::MAX));
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
        // The other receiver reads too: one that does not would hold the sender back.
        s.received(2);
        seconds += 1;
    }
    assert_eq!(got, (0..2048).collect::<Vec<_>>());
    assert!((19..=24).contains(&seconds), "all in {seconds} s");
    // The other receiver got everything too.
    assert_eq!(s.h.worker.stats().data.messages_out, 4096);
}

/// `count` reliable messages of `size` bytes from "pub" to everyone, numbered, queued in its
/// SCTP client at once.
fn offer(s: &mut DataHarness, count: u32, size: usize) {
    offer_from(s, 0, count, size);
}

/// [`offer`], numbered from `from`.
fn offer_from(s: &mut DataHarness, from: u32, count: u32, size: usize) {
    for i in from..from + count {
        let mut payload = i.to_be_bytes().to_vec();
        payload.resize(size, 0);
        let now = s.h.now;
        let bytes = Bytes::from(address(false, &[], &payload));
        s.peers[0]
            .2
            .send(now, RELIABLE_STREAM, false, &bytes)
            .unwrap();
    }
    s.pump();
}

/// The numbers of the messages peer `i` read, at most `n` of them.
fn numbers(s: &mut DataHarness, i: usize, n: usize) -> Vec<u32> {
    s.read_at_most(i, n)
        .into_iter()
        .map(|(_, _, p)| u32::from_be_bytes([p[0], p[1], p[2], p[3]]))
        .collect()
}

#[test]
fn a_receiver_slower_than_the_sender_holds_it_back_and_loses_nothing() {
    let mut s = DataHarness::new(WorkerConfig::default());
    // 16 MiB offered at once; the sender may send 4 MiB/s. "sub1" reads 4 KiB every 5 ms,
    // 800 KiB/s: five times slower, so without holding the sender the relay would have more
    // than 8 MiB waiting for it within three seconds.
    let count = 4096;
    offer(&mut s, count, 4096);
    let (mut fast, mut slow) = (Vec::new(), Vec::new());
    let mut steps = 0;
    while slow.len() < count as usize && steps < 20_000 {
        s.run_for(Duration::from_millis(5));
        fast.extend(numbers(&mut s, 1, usize::MAX));
        slow.extend(numbers(&mut s, 2, 1));
        steps += 1;
    }
    let stats = s.h.worker.stats().data;
    assert_eq!(stats.undeliverable, 0, "{stats:?}");
    assert_eq!(slow, (0..count).collect::<Vec<_>>());
    assert_eq!(fast, (0..count).collect::<Vec<_>>());
    assert!(stats.held_for_receivers > 0, "{stats:?}");
    // At the slow reader's pace: 4096 reads of one message every 5 ms.
    assert!((4096..4400).contains(&steps), "{steps} steps of 5 ms");
}

#[test]
fn a_receiver_that_stops_reading_holds_the_sender_for_a_few_seconds_at_most() {
    let mut s = DataHarness::new(WorkerConfig::default());
    let count = 4096;
    offer(&mut s, count, 4096);
    // "sub1" reads nothing; "sub0" everything.
    let mut fast = Vec::new();
    let mut steps = 0;
    while fast.len() < count as usize && steps < 20_000 {
        s.run_for(Duration::from_millis(5));
        fast.extend(numbers(&mut s, 1, usize::MAX));
        steps += 1;
        if steps == 1000 {
            // Held: no more than the relay's receive buffer and what went before "sub1"
            // filled up.
            assert!(fast.len() < 1024, "{} while held", fast.len());
        }
    }
    assert_eq!(fast, (0..count).collect::<Vec<_>>());
    // Held for MAX_HOLD, then at the sender's rate (16 MiB at 4 MiB/s), slowed by the
    // sender's SCTP learning only at its window probes, on its backed-off retransmission
    // timer, that the relay reads again (sctp-proto sends no SACK to update the window).
    let seconds = steps as f64 * 0.005;
    let hold = MAX_HOLD.as_secs_f64();
    assert!(
        (hold + 3.0..hold + 15.0).contains(&seconds),
        "everything reached the reader in {seconds} s"
    );
    // What "sub1" could not take past the relay's bound was dropped and counted; what it
    // gets when it reads again comes in order, a prefix of what was sent.
    let stats = s.h.worker.stats().data;
    assert!(stats.undeliverable > 1000, "{stats:?}");
    assert!(stats.held_for_receivers > 0, "{stats:?}");
    // (It is the relay's SCTP that learns late, at its own window probes, that "sub1" reads
    // again; a minute of virtual time is ample.)
    let mut slow = Vec::new();
    for _ in 0..12_000 {
        s.run_for(Duration::from_millis(5));
        slow.extend(numbers(&mut s, 2, usize::MAX));
        if slow.len() as u64 + stats.undeliverable >= count as u64 {
            break;
        }
    }
    assert_eq!(slow, (0..slow.len() as u32).collect::<Vec<_>>());
    assert_eq!(
        slow.len() as u64 + stats.undeliverable,
        count as u64,
        "{stats:?}"
    );
}

/// Run until "sub0" has read `count` more messages (every one numbered `from` on, in order),
/// "sub1" reading nothing; returns the 5 ms steps it took.
fn until_sub0_has(s: &mut DataHarness, from: u32, count: u32) -> usize {
    let mut got = Vec::new();
    let mut steps = 0;
    while got.len() < count as usize && steps < 20_000 {
        s.run_for(Duration::from_millis(5));
        got.extend(numbers(s, 1, usize::MAX));
        steps += 1;
    }
    assert_eq!(got, (from..from + count).collect::<Vec<_>>());
    steps
}

#[test]
fn a_receiver_that_stalls_again_soon_after_a_full_hold_holds_no_one() {
    let mut s = DataHarness::new(WorkerConfig::default());
    // "sub1" stops reading: the sender is held for MAX_HOLD, then goes on.
    offer(&mut s, 1024, 4096);
    let steps = until_sub0_has(&mut s, 0, 1024);
    assert!(steps * 5 >= MAX_HOLD.as_millis() as usize, "{steps} steps");
    assert_eq!(s.h.worker.stats().data.held_for_receivers, 1);
    // It reads again and drains.
    for _ in 0..2000 {
        s.run_for(Duration::from_millis(5));
        numbers(&mut s, 2, usize::MAX);
    }
    // And stalls again at once: it holds no one now, "sub0" gets the next 4 MiB at the
    // sender's rate.
    let offered = 1024;
    offer_from(&mut s, 1024, offered, 4096);
    let steps = until_sub0_has(&mut s, 1024, offered);
    assert!(steps * 5 < 4_000, "{} ms", steps * 5);
    assert_eq!(s.h.worker.stats().data.held_for_receivers, 1);
}

#[test]
fn a_receiver_that_leaves_lets_the_sender_it_held_go_on_at_once() {
    let mut s = DataHarness::new(WorkerConfig::default());
    let count = 1024;
    offer(&mut s, count, 4096);
    let mut fast = Vec::new();
    for _ in 0..400 {
        s.run_for(Duration::from_millis(5));
        fast.extend(numbers(&mut s, 1, usize::MAX));
    }
    // Two seconds in, "sub1" (reading nothing) holds the sender.
    assert!(fast.len() < 600, "{} while held", fast.len());
    assert_eq!(s.h.worker.stats().data.held_for_receivers, 1);
    s.h.worker
        .remove_participant(&Sid::from("s"), &Uid::from("sub1"))
        .unwrap();
    s.peers.truncate(2);
    // The rest comes at the sender's rate (3 MiB at 4 MiB/s, and the sender's window
    // probes), well before the hold would have run out.
    let mut steps = 0;
    while fast.len() < count as usize && steps < 2000 {
        s.run_for(Duration::from_millis(5));
        fast.extend(numbers(&mut s, 1, usize::MAX));
        steps += 1;
    }
    assert_eq!(fast, (0..count).collect::<Vec<_>>());
    assert!(steps < 500, "{steps} steps of 5 ms after sub1 left");
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

/// `count` reliable messages of 4 KiB from "pub" (core 0) to "far" (core 1), numbered,
/// queued in its SCTP client at once.
fn offer_far(s: &mut SpreadDataHarness, count: u32) {
    for i in 0..count {
        let mut payload = i.to_be_bytes().to_vec();
        payload.resize(4096, 0);
        let now = s.sp.origin.now;
        let bytes = Bytes::from(address(false, &["far"], &payload));
        s.peers[0]
            .3
            .send(now, RELIABLE_STREAM, false, &bytes)
            .unwrap();
    }
    s.pump();
}

#[test]
fn a_slow_receiver_on_another_core_holds_the_sender_back_and_loses_nothing() {
    let mut s = SpreadDataHarness::default();
    // 16 MiB from "pub" (core 0) for "far" (core 1), offered at once; "far" reads 4 KiB every
    // 5 ms, 800 KiB/s, five times slower than "pub" may send. Without a hold across cores,
    // core 1 would have more than 8 MiB waiting for "far" within three seconds.
    let count = 4096u32;
    offer_far(&mut s, count);
    let mut got = Vec::new();
    let mut steps = 0;
    while got.len() < count as usize && steps < 20_000 {
        s.run_for(Duration::from_millis(5));
        got.extend(
            s.read_at_most(1, 1)
                .into_iter()
                .map(|(_, _, p)| u32::from_be_bytes([p[0], p[1], p[2], p[3]])),
        );
        steps += 1;
    }
    let far = s.sp.sink.stats().data;
    let near = s.sp.origin.worker.stats().data;
    assert_eq!(far.undeliverable, 0, "{far:?}");
    assert_eq!(got, (0..count).collect::<Vec<_>>());
    assert!(near.held_for_receivers > 0, "{near:?}");
    // At the reader's pace: 4096 reads of one message every 5 ms.
    assert!((4096..4400).contains(&steps), "{steps} steps of 5 ms");
}

#[test]
fn a_receiver_on_another_core_that_leaves_lets_the_sender_go_on_at_once() {
    let mut s = SpreadDataHarness::default();
    offer_far(&mut s, 4096);
    // "far" reads nothing: once 1 MiB waits for it, "pub" is held on its own core.
    let mut steps = 0;
    while s.sp.origin.worker.stats().data.held_for_receivers == 0 && steps < 2000 {
        s.run_for(Duration::from_millis(5));
        steps += 1;
    }
    let taken = s.sp.origin.worker.stats().data.messages_in;
    s.run_for(Duration::from_millis(500));
    let held = s.sp.origin.worker.stats().data;
    assert!(held.held_for_receivers > 0, "{held:?}");
    assert_eq!(held.messages_in, taken, "held: {held:?}");
    // "far" leaves: "pub" goes on now, not when the hold would have run out (5 s).
    s.sp.sink
        .remove_participant(&Sid::from("s"), &Uid::from("far"))
        .unwrap();
    s.pump();
    s.run_for(Duration::from_millis(100));
    let after = s.sp.origin.worker.stats().data;
    assert!(after.messages_in > taken + 100, "{after:?}");
}

#[test]
fn a_core_that_joins_a_session_learns_of_a_hold_already_on() {
    let mut s = SpreadDataHarness::default();
    let sid = Sid::from("s");
    // Core 1 does not know of core 0 yet: what its receiver holds stays there.
    s.sp.sink.set_session_cores(&sid, &[1]).unwrap();
    offer_far(&mut s, 4096);
    // "far" reads nothing: more than 1 MiB waits for it within a second.
    s.run_for(Duration::from_secs(1));
    assert_eq!(s.sp.origin.worker.stats().data.held_for_receivers, 0);
    // Now it does: "pub" is held from then on.
    s.sp.sink.set_session_cores(&sid, &[0, 1]).unwrap();
    s.pump();
    s.run_for(Duration::from_millis(100));
    let taken = s.sp.origin.worker.stats().data.messages_in;
    s.run_for(Duration::from_millis(500));
    let held = s.sp.origin.worker.stats().data;
    assert!(held.held_for_receivers > 0, "{held:?}");
    assert_eq!(held.messages_in, taken, "{held:?}");
}
