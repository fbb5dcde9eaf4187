//! A published feed, the producer side of forwarding (mediasoup's Producer): its description,
//! reception statistics for receiver reports, loss detection and NACKs toward its publisher,
//! the playout delay that leaves its subscribers time for those repairs, the cache that
//! answers its subscribers' NACKs, its subscribers and its keyframe-request limiter.

pub mod nack;
pub mod packet_cache;
pub mod recv_stats;

pub use recv_stats::RecvStats;

use std::time::{Duration, Instant};

use crate::control::FeedDescription;
use crate::engine::playout_delay::PlayoutDelay;
use crate::ids::ParticipantKey;

use super::consumer::Consumer;
use super::cross_core::FeedRoute;
use super::repair_wait::RepairWait;
use nack::NackGenerator;
use packet_cache::PacketCache;

/// At most one keyframe request per feed in this interval reaches the publisher: many
/// subscribers losing the same frame must not make the encoder send a keyframe each.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// A published feed.
#[derive(Debug)]
pub struct Feed {
    /// The publisher.
    pub publisher: ParticipantKey,
    /// As declared by signalling.
    pub description: FeedDescription,
    /// Reception statistics of the media SSRC.
    pub recv: RecvStats,
    /// Subscribers.
    pub consumers: Vec<Consumer>,
    /// When the last packet arrived; None while the feed is stopped.
    pub last_packet_at: Option<Instant>,
    /// When the last keyframe request was sent to the publisher.
    pub last_keyframe_request: Option<Instant>,
    /// Last sender report from the publisher: (NTP, RTP timestamp).
    pub last_sr: Option<(u64, u32)>,
    /// The id of the MID header extension in this feed's packets, if negotiated.
    pub mid_extension: Option<u8>,
    /// The id of the transport-wide sequence number extension, if negotiated.
    pub twcc_extension: Option<u8>,
    /// For a replica of a feed published on another core: where it comes from (its
    /// `publisher` is then [`ParticipantKey::REMOTE`]).
    pub origin: Option<FeedRoute>,
    /// For a feed published on this core: the other cores with subscribers of it.
    pub sinks: Vec<usize>,
    /// What is missing of the publisher's stream and when to ask for it (a video feed on its
    /// publisher's core, when the publisher answers NACKs).
    pub nack: NackGenerator,
    /// The last packets, for subscribers' NACKs (video only).
    pub cache: PacketCache,
    /// The playout delay that leaves subscribers time for repairs from the publisher (with
    /// `nack`, on the publisher's core).
    pub repair_wait: RepairWait,
}

impl Feed {
    /// A feed that has not sent anything yet.
    pub fn new(publisher: ParticipantKey, description: FeedDescription) -> Self {
        let mid_extension = mid_extension_of(&description);
        let twcc_extension = extension_of(&description, crate::engine::twcc::URI);
        Feed {
            publisher,
            description,
            recv: RecvStats::default(),
            consumers: Vec::new(),
            last_packet_at: None,
            last_keyframe_request: None,
            last_sr: None,
            mid_extension,
            twcc_extension,
            origin: None,
            sinks: Vec::new(),
            nack: NackGenerator::default(),
            cache: PacketCache::default(),
            repair_wait: RepairWait::default(),
        }
    }

    /// A replica of a feed published on another core.
    pub fn replica(route: FeedRoute, description: FeedDescription) -> Self {
        Feed {
            origin: Some(route),
            ..Feed::new(ParticipantKey::REMOTE, description)
        }
    }

    /// For a replica without subscribers: where its packets come from, so that they can stop.
    pub fn idle_replica(&self) -> Option<FeedRoute> {
        self.origin.filter(|_| self.consumers.is_empty())
    }

    /// Replace the description (a renegotiation).
    pub fn update(&mut self, description: FeedDescription) {
        self.mid_extension = mid_extension_of(&description);
        self.twcc_extension = extension_of(&description, crate::engine::twcc::URI);
        self.description = description;
        self.recv = RecvStats::default();
        self.nack.reset();
        self.repair_wait.reset();
        self.cache.clear();
    }

    /// Whether the relay asks this feed's publisher for lost packets: video, published on this
    /// core, by a publisher that negotiated NACK.
    pub fn generates_nacks(&self) -> bool {
        self.origin.is_none() && self.is_video() && self.description.nack
    }

    /// The playout delay for subscribers of a packet that arrived at `now`, where the relay
    /// repairs the publisher's stream (see [`super::repair_wait`]).
    pub fn playout_delay(&self, now: Instant) -> Option<PlayoutDelay> {
        self.generates_nacks()
            .then(|| self.repair_wait.playout_delay(now, self.nack.repair_time()))
    }

    /// Whether the feed is video (only video is cached and repaired: a lost audio packet is
    /// concealed by the decoder sooner than a repair could come).
    pub fn is_video(&self) -> bool {
        self.description.kind == crate::control::MediaKind::Video
    }

    /// Whether a keyframe request may be sent now; records it if so.
    pub fn allow_keyframe_request(&mut self, now: Instant) -> bool {
        match self.last_keyframe_request {
            Some(at) if now.saturating_duration_since(at) < KEYFRAME_REQUEST_INTERVAL => false,
            _ => {
                self.last_keyframe_request = Some(now);
                true
            }
        }
    }
}

/// The id of extension `uri` in the feed's packets, if negotiated with a valid id.
fn extension_of(d: &FeedDescription, uri: &str) -> Option<u8> {
    d.header_extensions
        .iter()
        .find(|e| e.uri == uri && (1..=255).contains(&e.id))
        .map(|e| e.id)
}

fn mid_extension_of(d: &FeedDescription) -> Option<u8> {
    d.header_extensions
        .iter()
        .find(|e| e.uri == crate::control::MID_EXTENSION_URI && (1..=14).contains(&e.id))
        .map(|e| e.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_requests_are_rate_limited() {
        let t0 = Instant::now();
        let mut f = Feed::new(
            ParticipantKey(1),
            FeedDescription {
                feed_id: "f".into(),
                kind: crate::control::MediaKind::Video,
                ssrc: crate::ids::Ssrc(1),
                clock_rate: 90_000,
                payload_types: vec![],
                header_extensions: vec![],
                nack: false,
                rtx_ssrc: None,
                rtx_payload_types: vec![],
            },
        );
        assert!(f.allow_keyframe_request(t0));
        assert!(!f.allow_keyframe_request(t0 + Duration::from_millis(499)));
        assert!(f.allow_keyframe_request(t0 + KEYFRAME_REQUEST_INTERVAL));
    }
}
