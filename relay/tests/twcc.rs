//! Congestion feedback toward a publisher: every packet carrying a transport-wide sequence
//! number is acknowledged with its arrival time, within one feedback interval, also at an
//! audio-like packet rate, and the counter says how many feedback messages went out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use relay::engine::twcc::FEEDBACK_INTERVAL;
use relay::fuzzing::{harness, Harness, PUBLISHER_SSRC, TWCC_EXTENSION};
use relay::sfu::worker::Output;
use rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, SymbolTypeTcc, TransportLayerCc,
};

fn rtp(seq: u16, transport: u16) -> Vec<u8> {
    let mut p = vec![0x90, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(seq as u32 * 3000).to_be_bytes());
    p.extend_from_slice(&PUBLISHER_SSRC.to_be_bytes());
    let t = transport.to_be_bytes();
    p.extend_from_slice(&[0xbe, 0xde, 0, 1, TWCC_EXTENSION << 4 | 1, t[0], t[1], 0]);
    p.extend(std::iter::repeat_n(0x5a, 300));
    p
}

/// Run the worker's timers up to `until` as the I/O shell does; returns the transport-wide
/// feedback messages sent to the publisher, decrypted and parsed, with when each was sent.
fn run_until(h: &mut Harness, until: Instant) -> Vec<(Instant, TransportLayerCc)> {
    let mut feedback = Vec::new();
    loop {
        while let Some(o) = h.worker.poll_output() {
            let Output::Transmit(t) = o else { continue };
            if t.destination != h.publisher {
                continue;
            }
            let plain = h.clients[0]
                .unprotect_rtcp(&t.contents)
                .expect("authentic RTCP to the publisher");
            let mut buf = Bytes::from(plain);
            for packet in rtcp::packet::unmarshal(&mut buf).expect("well-formed compound") {
                if let Some(fb) = packet.as_any().downcast_ref::<TransportLayerCc>() {
                    feedback.push((h.now, fb.clone()));
                }
            }
        }
        match h.worker.poll_timeout() {
            Some(at) if at <= until => {
                h.now = h.now.max(at);
                h.worker.handle_timeout(h.now);
            }
            _ => break,
        }
    }
    h.now = until;
    feedback
}

fn received(fb: &TransportLayerCc) -> Vec<u16> {
    let mut symbols = Vec::new();
    for chunk in &fb.packet_chunks {
        match chunk {
            PacketStatusChunk::RunLengthChunk(r) => symbols.extend(std::iter::repeat_n(
                r.packet_status_symbol,
                r.run_length as usize,
            )),
            PacketStatusChunk::StatusVectorChunk(v) => symbols.extend(v.symbol_list.iter()),
        }
    }
    symbols.truncate(fb.packet_status_count as usize);
    symbols
        .iter()
        .enumerate()
        .filter(|(_, s)| **s != SymbolTypeTcc::PacketNotReceived)
        .map(|(i, _)| fb.base_sequence_number.wrapping_add(i as u16))
        .collect()
}

#[test]
fn every_packet_is_acknowledged_within_an_interval() {
    let mut h = harness(1);
    let t0 = h.now;
    let mut feedback = Vec::new();
    // A video-like burst: 40 packets, 2 ms apart, one of them lost on the way.
    for i in 0..40u16 {
        h.now = t0 + Duration::from_millis(2 * i as u64);
        if i == 17 {
            continue;
        }
        let mut p = rtp(i, 1000 + i);
        h.clients[0].protect_rtp(&mut p).unwrap();
        let publisher = h.publisher;
        h.worker.handle_receive(h.now, None, publisher, &p);
        let now = h.now;
        feedback.extend(run_until(&mut h, now));
    }
    feedback.extend(run_until(&mut h, t0 + Duration::from_millis(200)));
    assert!(feedback.len() >= 2, "one interval passed during the burst");
    let acked: Vec<u16> = feedback.iter().flat_map(|(_, fb)| received(fb)).collect();
    let expected: Vec<u16> = (1000..1040).filter(|s| *s != 1017).collect();
    assert_eq!(acked, expected);
    for (at, _) in &feedback {
        assert!(
            *at <= t0 + Duration::from_millis(78) + FEEDBACK_INTERVAL,
            "{:?}",
            *at - t0
        );
    }
    assert_eq!(
        feedback
            .iter()
            .map(|(_, fb)| fb.fb_pkt_count)
            .collect::<Vec<_>>(),
        (0..feedback.len() as u8).collect::<Vec<_>>()
    );
    assert_eq!(h.worker.stats().twcc_feedback_sent, feedback.len() as u64);

    // Audio-like: one packet every 20 ms for a second; each is acknowledged within one
    // interval of its arrival.
    let t1 = h.now;
    let mut arrivals = HashMap::new();
    let mut acks = Vec::new();
    for i in 0..50u16 {
        let arrival = t1 + Duration::from_millis(20 * i as u64);
        acks.extend(run_until(&mut h, arrival));
        let mut p = rtp(100 + i, 2000 + i);
        h.clients[0].protect_rtp(&mut p).unwrap();
        let publisher = h.publisher;
        h.worker.handle_receive(h.now, None, publisher, &p);
        arrivals.insert(2000 + i, arrival);
    }
    let end = h.now + Duration::from_millis(200);
    acks.extend(run_until(&mut h, end));
    let mut acked = Vec::new();
    for (at, fb) in &acks {
        for seq in received(fb) {
            let waited = *at - arrivals[&seq];
            assert!(
                waited <= FEEDBACK_INTERVAL,
                "{seq} acknowledged after {waited:?}"
            );
            acked.push(seq);
        }
    }
    assert_eq!(acked, (2000..2050).collect::<Vec<_>>());
}
