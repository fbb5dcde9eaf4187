//! A recorder that falls behind (a disk that stops answering) costs the recording its packets,
//! counted and reported, and never a subscriber one.

use std::time::Duration;

use relay::control::{Event, PayloadCodec};
use relay::ids::{FeedId, Sid, Uid};
use relay::RecordingRequest;
use webrtcai_tests::harness::{video_feed, TestRelay};
use webrtcai_tests::media::{verify, Source};
use webrtcai_tests::peer::PeerConfig;

const SSRC: u32 = 0x00c0_ffee;
const PACKETS: u64 = 400;
const QUEUE: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_recorder_costs_the_recording_packets_and_never_a_subscriber() {
    let dir = std::env::temp_dir().join(format!("webrtcai-recorder-{}", std::process::id()));
    let mut t = TestRelay::start(1, |c| {
        c.recordings_dir = Some(dir.clone());
        c.record_queue = QUEUE;
    });
    let sid = Sid::from("rec");
    t.handle.create_session(sid.clone(), None).await.unwrap();
    let mut publisher = t.join("rec", "pub", PeerConfig::default()).await.unwrap();
    let mut subscriber = t.join("rec", "sub", PeerConfig::default()).await.unwrap();
    let mut feed = video_feed("cam", SSRC);
    feed.codecs = vec![PayloadCodec {
        pt: 96,
        name: "VP8".into(),
    }];
    t.handle
        .publish(&sid, &Uid::from("pub"), feed)
        .await
        .unwrap();
    let cam = FeedId::from("cam");
    t.handle
        .subscribe(&sid, &Uid::from("sub"), &cam, Default::default())
        .await
        .unwrap();
    let recording = t
        .handle
        .start_recording(
            &sid,
            RecordingRequest {
                path: "c/rec/cam.webm".into(),
                video: Some(cam.clone()),
                audio: None,
            },
        )
        .await
        .unwrap();

    // The disk stops answering for 2 s while 400 packets come, one a millisecond: the queue
    // takes 64 of them.
    t.handle.stall_recorder(Duration::from_secs(2)).unwrap();
    let mut src = Source::video(SSRC, 1000);
    for i in 0..PACKETS {
        publisher.send_rtp(&src.next_packet()).await.unwrap();
        let got = subscriber
            .recv_rtp(Duration::from_secs(2), |_| {})
            .await
            .unwrap_or_else(|e| panic!("packet {i} did not reach the subscriber: {e}"));
        assert_eq!(verify(&got.payload), Some(i), "every packet, in order");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let stats = t.handle.stats().await.unwrap();
    let record = &stats[0].record;
    assert_eq!(
        record.packets, PACKETS,
        "every packet was handed over or tried"
    );
    assert!(
        record.queue_full >= PACKETS - QUEUE as u64 - 10,
        "the full queue dropped them: {record:?}"
    );

    // Once the recorder is back, the next packets show it the gap, and it says so.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    for i in PACKETS..PACKETS + 20 {
        publisher.send_rtp(&src.next_packet()).await.unwrap();
        let got = subscriber
            .recv_rtp(Duration::from_secs(2), |_| {})
            .await
            .unwrap();
        assert_eq!(verify(&got.payload), Some(i));
    }
    let dropped = t
        .wait_event(Duration::from_secs(5), |e| {
            matches!(e, Event::RecordingDropped { .. })
        })
        .await
        .expect("a recording_dropped event");
    let Event::RecordingDropped {
        recording: r,
        packets,
        ..
    } = dropped
    else {
        unreachable!()
    };
    assert_eq!(r, recording);
    assert!(packets > 0);

    t.handle.stop_recording(&sid, recording).await.unwrap();
    let finished = t
        .wait_event(Duration::from_secs(5), |e| {
            matches!(e, Event::RecordingFinished { .. })
        })
        .await
        .expect("recording_finished");
    let Event::RecordingFinished { file, .. } = finished else {
        unreachable!()
    };
    assert_eq!(file.path, "c/rec/cam.webm");
    assert!(
        file.dropped >= record.queue_full,
        "the file counts what the queue dropped: {file:?} after {record:?}"
    );
    // A stopped recording cannot be stopped again.
    assert!(t.handle.stop_recording(&sid, recording).await.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
