//! Start a relay and join wire peers to it the way signalling will: add the participant (with
//! its ufrag and certificate fingerprint), then connect.

use std::time::Duration;

use relay::control::{Event, FeedDescription, MediaKind, ParticipantConfig};
use relay::ids::{FeedId, Sid, Ssrc, Uid};
use relay::{Relay, RelayConfig, RelayHandle};
use tokio::sync::mpsc;

use crate::media::{verify, Source};
use crate::peer::{PeerConfig, PeerError, Received, WirePeer};

/// A relay on loopback with its event stream.
pub struct TestRelay {
    /// The running relay.
    pub relay: Relay,
    /// Its control handle.
    pub handle: RelayHandle,
    /// Its events.
    pub events: mpsc::Receiver<Event>,
}

impl TestRelay {
    /// Start a relay on 127.0.0.1 with `cores` cores (unpinned: tests share the machine).
    pub fn start(cores: usize, tweak: impl FnOnce(&mut RelayConfig)) -> TestRelay {
        let mut config = RelayConfig {
            cores,
            pin: false,
            ..Default::default()
        };
        tweak(&mut config);
        // A test cannot go on without its relay.
        let mut relay = Relay::start(config).expect("relay starts");
        let events = relay.take_events().expect("events not taken yet");
        let handle = relay.handle();
        TestRelay {
            relay,
            handle,
            events,
        }
    }

    /// Add `uid` to `sid` and connect a peer for it.
    pub async fn join(
        &self,
        sid: &str,
        uid: &str,
        config: PeerConfig,
    ) -> Result<WirePeer, PeerError> {
        let (cert, fp) = WirePeer::certificate();
        let ufrag = WirePeer::random_ufrag();
        let info = self
            .handle
            .add_participant(
                &Sid::from(sid),
                &Uid::from(uid),
                ParticipantConfig {
                    remote_ufrag: Some(ufrag.clone()),
                    remote_fingerprint: Some(fp),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| PeerError::Dtls(format!("add_participant: {e}")))?;
        WirePeer::connect(&info, ufrag, cert, config).await
    }

    /// In session `sid` (created here), a participant "pub" publishing feed "cam" with `ssrc`
    /// and a participant "sub" subscribed to it, both connected.
    pub async fn publisher_and_subscriber(&self, sid: &str, ssrc: u32) -> (WirePeer, WirePeer) {
        let s = Sid::from(sid);
        // A test cannot go on without its session.
        self.handle
            .create_session(s.clone(), None)
            .await
            .expect("session");
        let publisher = self
            .join(sid, "pub", PeerConfig::default())
            .await
            .expect("publisher");
        let subscriber = self
            .join(sid, "sub", PeerConfig::default())
            .await
            .expect("subscriber");
        self.handle
            .publish(&s, &Uid::from("pub"), video_feed("cam", ssrc))
            .await
            .expect("publish");
        self.handle
            .subscribe(
                &s,
                &Uid::from("sub"),
                &FeedId::from("cam"),
                Default::default(),
            )
            .await
            .expect("subscribe");
        (publisher, subscriber)
    }

    /// Wait for the first event matching `pred`, skipping others.
    pub async fn wait_event(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) if pred(&e) => return Some(e),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }
}

/// A video feed description for a source with `ssrc`.
pub fn video_feed(feed_id: &str, ssrc: u32) -> FeedDescription {
    FeedDescription {
        feed_id: FeedId::from(feed_id),
        kind: MediaKind::Video,
        ssrc: Some(Ssrc(ssrc)),
        clock_rate: 90_000,
        payload_types: vec![96],
        header_extensions: vec![],
        nack: false,
        rtx_ssrc: None,
        rtx_payload_types: vec![],
        codecs: vec![],
        simulcast: None,
        screen: false,
        renumbering: None,
    }
}

/// Send `n` packets of `src` from `publisher` and check that `subscriber` receives exactly
/// those, intact and in order.
pub async fn expect_stream(
    publisher: &mut WirePeer,
    subscriber: &mut WirePeer,
    src: &mut Source,
    n: u64,
) {
    let first = src.next_index();
    for _ in 0..n {
        // A test cannot go on if its own peer cannot send.
        publisher.send_rtp(&src.next_packet()).await.expect("send");
    }
    for i in 0..n {
        let got = subscriber
            .recv_rtp(Duration::from_secs(5), |_| {})
            .await
            .expect("forwarded packet");
        assert_eq!(verify(&got.payload), Some(first + i));
    }
}

/// A compound RTCP packet as the peer decoded it.
pub type Compound = Vec<Box<dyn rtcp::packet::Packet + Send + Sync>>;

/// Collect RTCP arriving at `peer` for `window`, ignoring RTP.
pub async fn collect_rtcp(peer: &mut WirePeer, window: Duration) -> Vec<Compound> {
    let deadline = tokio::time::Instant::now() + window;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match peer.recv(left).await {
            Ok(Received::Rtcp(c)) => out.push(c),
            Ok(Received::Rtp(_)) => {}
            Err(_) => return out,
        }
    }
}

/// The media SSRCs of the PLIs in `compounds`, in order.
pub fn plis(compounds: &[Compound]) -> Vec<u32> {
    use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    compounds
        .iter()
        .flatten()
        .filter_map(|p| p.as_any().downcast_ref::<PictureLossIndication>())
        .map(|p| p.media_ssrc)
        .collect()
}
