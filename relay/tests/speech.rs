//! Who speaks, through a whole worker: a publisher's audio packets carry the audio-level
//! extension; the relay reports when it starts and stops speaking, and how loud while it does.

use std::time::Duration;

use relay::control::{Event, FeedDescription, HeaderExtension, MediaKind};
use relay::engine::rtp;
use relay::fuzzing::{harness, Harness};
use relay::ids::{FeedId, Sid, Ssrc, Uid};
use relay::sfu::feed::speech::AUDIO_LEVEL_URI;
use relay::sfu::worker::Output;

const MIC_SSRC: u32 = 0x4d1c;

fn microphone() -> FeedDescription {
    FeedDescription {
        feed_id: FeedId::from("mic"),
        kind: MediaKind::Audio,
        ssrc: Some(Ssrc(MIC_SSRC)),
        clock_rate: 48_000,
        payload_types: vec![111],
        header_extensions: vec![HeaderExtension {
            id: 4,
            uri: AUDIO_LEVEL_URI.into(),
        }],
        nack: false,
        rtx_ssrc: None,
        rtx_payload_types: Vec::new(),
        codecs: Vec::new(),
        simulcast: None,
        screen: false,
        renumbering: None,
    }
}

/// Audio packet `seq` at `level` (-dBov), with the voice-activity bit set as browsers may.
fn audio(seq: u16, level: u8) -> Vec<u8> {
    let mut p = vec![0x80, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&MIC_SSRC.to_be_bytes());
    p.extend_from_slice(&[0xfc; 40]);
    let mut out = Vec::new();
    assert!(rtp::with_extensions(&p, &[(4, &[0x80 | level])], &mut out));
    out
}

/// Send 20 ms packets at the levels given; return the speech events.
fn speak(h: &mut Harness, seq: &mut u16, levels: impl IntoIterator<Item = u8>) -> Vec<(bool, u8)> {
    let mut events = Vec::new();
    for level in levels {
        *seq += 1;
        let mut p = audio(*seq, level);
        h.clients[0].protect_rtp(&mut p).expect("protect");
        h.worker.handle_receive(h.now, None, h.publisher, &p);
        while let Some(o) = h.worker.poll_output() {
            if let Output::Event(Event::Speech {
                uid,
                feed_id,
                speaking,
                loudness,
                ..
            }) = o
            {
                assert_eq!((uid, feed_id), (Uid::from("pub"), FeedId::from("mic")));
                events.push((speaking, loudness));
            }
        }
        h.now += Duration::from_millis(20);
    }
    events
}

#[test]
fn a_publisher_that_speaks_is_reported_and_one_that_falls_silent_too() {
    let mut h = harness(1);
    h.worker
        .publish(&Sid::from("s"), &Uid::from("pub"), microphone())
        .expect("publish the microphone");
    let mut seq = 0;
    // A second of silence: nothing.
    assert!(speak(&mut h, &mut seq, [127; 50]).is_empty());
    // Speech at -30 dBov for a second: started at the third loud packet (97 dB above
    // silence, at 40 ms), then the loudness every 500 ms (at 540 ms).
    let talk = speak(&mut h, &mut seq, [30; 50]);
    assert_eq!(talk, vec![(true, 97), (true, 97)]);
    // Silence: still speaking through the pause, ended 1.5 s after the last loud packet.
    let quiet = speak(&mut h, &mut seq, [127; 100]);
    assert_eq!(quiet.last(), Some(&(false, 0)));
    assert_eq!(quiet.iter().filter(|(s, _)| !s).count(), 1);
}
