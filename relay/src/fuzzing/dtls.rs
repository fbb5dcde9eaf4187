//! The DTLS record layer that goes on after the handshake: what a connected participant's
//! datagrams of DTLS's range reach.

use std::time::{Duration, Instant};

use crate::engine::dtls_record::{Established, RecordLayer, RecordOutput, MAX_QUEUED};

fn established(is_client: bool) -> Established {
    Established {
        is_client,
        master_secret: (0..48).collect(),
        client_random: [1; 32],
        server_random: [2; 32],
        next_sequence: 1,
        last_flight: vec![vec![20, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1]],
    }
}

/// A sequence of datagrams, each after a header of three bytes: its length (two bytes) and a
/// selector. Selector bit 0 set: the datagram is sealed by the peer first, so it must open to
/// exactly those bytes, once; otherwise it goes in as it is. Bit 1 advances the clock by 50
/// ms. Whatever arrives, the relay's side answers with verdicts, never a panic, and never more
/// outputs than it has room for.
pub fn dtls_record(mut data: &[u8]) {
    let (Ok(mut relay), Ok(mut peer)) = (
        RecordLayer::new(established(false)),
        RecordLayer::new(established(true)),
    ) else {
        return;
    };
    let mut now = Instant::now();
    while data.len() >= 3 {
        let len = (u16::from_be_bytes([data[0], data[1]]) as usize).min(data.len() - 3);
        let selector = data[2];
        let datagram = &data[3..3 + len];
        data = &data[3 + len..];
        if selector & 2 != 0 {
            now += Duration::from_millis(50);
        }
        let sealed = selector & 1 != 0;
        if sealed {
            let Ok(record) = peer.seal(datagram) else {
                return;
            };
            relay.handle_datagram(now, &record);
        } else {
            relay.handle_datagram(now, datagram);
        }
        let outputs: Vec<RecordOutput> = std::iter::from_fn(|| relay.poll_output()).collect();
        assert!(outputs.len() <= MAX_QUEUED + 1, "{} outputs", outputs.len());
        if sealed && !relay.is_closed() {
            assert_eq!(outputs, vec![RecordOutput::Data(datagram.to_vec())]);
        }
        // What the relay seals, its peer opens.
        if relay.is_closed() {
            return;
        }
        if let Ok(record) = relay.seal(datagram) {
            peer.handle_datagram(now, &record);
            assert_eq!(
                peer.poll_output(),
                Some(RecordOutput::Data(datagram.to_vec()))
            );
        }
    }
}
