//! Start a relay and join wire peers to it the way signalling will: add the participant (with
//! its ufrag and certificate fingerprint), then connect.

use std::time::Duration;

use relay::control::{Event, FeedDescription, MediaKind, ParticipantConfig};
use relay::ids::{FeedId, Sid, Ssrc, Uid};
use relay::{Relay, RelayConfig, RelayHandle};
use tokio::sync::mpsc;

use crate::peer::{PeerConfig, PeerError, WirePeer};

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
                },
            )
            .await
            .map_err(|e| PeerError::Dtls(format!("add_participant: {e}")))?;
        WirePeer::connect(&info, ufrag, cert, config).await
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
        ssrc: Ssrc(ssrc),
        clock_rate: 90_000,
        payload_types: vec![96],
        header_extensions: vec![],
    }
}
