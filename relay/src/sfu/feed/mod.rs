//! A published feed, the producer side of forwarding (mediasoup's Producer): its description,
//! its streams ([`layer`]: one, or one per simulcast layer, each with reception statistics for
//! receiver reports, loss detection and NACKs toward its publisher, and a keyframe-request
//! limiter), the playout delay that leaves its subscribers time for those repairs, the cache
//! that answers its subscribers' NACKs, and its subscribers.

pub mod consumers;
pub mod dynacast;
pub mod layer;
pub mod nack;
pub mod packet_cache;
pub mod record_tap;
pub mod recv_stats;
pub mod renumber;
pub mod speech;
pub mod stall;

pub use recv_stats::RecvStats;

use consumers::Consumers;
use dynacast::Dynacast;
use speech::Speech;

use std::time::Instant;

use crate::control::FeedDescription;
use crate::engine::playout_delay::PlayoutDelay;
use crate::engine::{dependency_descriptor, h264, rtp, vp8, vp9};
use crate::ids::ParticipantKey;

use super::cross_core::FeedRoute;
use super::repair_wait::RepairWait;
use super::svc::{SvcFrame, SvcStream};
use layer::Layer;
use renumber::Renumber;

/// The rid header extension (RFC 8852): which simulcast layer a packet belongs to.
pub const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";

/// The repaired-rid header extension: the layer a retransmission belongs to.
pub const REPAIRED_RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";

/// A published feed.
#[derive(Debug)]
pub struct Feed {
    /// The publisher.
    pub publisher: ParticipantKey,
    /// As declared by signalling.
    pub description: FeedDescription,
    /// Its streams: one, or one per simulcast layer, lowest quality first.
    pub layers: Vec<Layer>,
    /// Subscribers.
    pub consumers: Consumers,
    /// When the last packet arrived; None while the feed is stopped.
    pub last_packet_at: Option<Instant>,
    /// The id of the MID header extension in this feed's packets, if negotiated.
    pub mid_extension: Option<u8>,
    /// The id of the transport-wide sequence number extension, if negotiated.
    pub twcc_extension: Option<u8>,
    /// The ids of the MID, rid and repaired-rid extensions as the publisher's packets carry
    /// them before they are renumbered, which name a simulcast feed's layers in their first
    /// packets (read in the clear, before decryption).
    pub naming: Naming,
    /// The publisher's own numbers, where it uses its own (a WHIP encoder).
    pub renumber: Option<Box<Renumber>>,
    /// For a replica of a feed published on another core: where it comes from (its
    /// `publisher` is then [`ParticipantKey::REMOTE`]).
    pub origin: Option<FeedRoute>,
    /// For a feed published on this core: the other cores with subscribers of it.
    pub sinks: Vec<usize>,
    /// The playout delay that leaves subscribers time for repairs from the publisher (with
    /// the layers' NACKs, on the publisher's core).
    pub repair_wait: RepairWait,
    /// The id of the audio-level extension in this feed's packets, if negotiated.
    pub audio_level_extension: Option<u8>,
    /// Whether its publisher is speaking (audio, on the feed's own core).
    pub speech: Speech,
    /// Which layers its publisher is asked to send (used on the feed's own core).
    pub dynacast: Dynacast,
    /// The frames each layer started, on every core that forwards it: which layer stopped.
    pub frames: stall::FrameCounts,
    /// The layers dynacast turned off (bit `i`: layer `i`), on every core: they are not
    /// flowing, but would be if a subscriber were moved to one.
    pub layers_off: u8,
    /// The id of the dependency descriptor extension, where the publisher negotiated it: its
    /// layers (SVC) can then be dropped per subscriber.
    pub svc_extension: Option<u8>,
    /// Its descriptors, read on the feed's own core.
    pub svc: SvcStream,
    /// For SVC, on every core that forwards it: what the decode target of each spatial and
    /// temporal layer takes (index `4 * spatial + temporal`; the allocator's layers).
    pub svc_rates: [layer::RateMeter; 16],
    /// For SVC, a frame of the structure in force, for what the structure says (its layers,
    /// their sizes, the decode target of each): kept when a new structure comes, not per
    /// packet (None: not SVC, or no frame read yet).
    pub svc_latest: Option<SvcFrame>,
    /// A recording's tap, on the feed's own core, while it is recorded.
    pub record: Option<record_tap::RecordTap>,
}

impl Feed {
    /// A feed that has not sent anything yet.
    pub fn new(publisher: ParticipantKey, description: FeedDescription) -> Self {
        let mid_extension = mid_extension_of(&description);
        let twcc_extension = extension_of(&description, crate::engine::twcc::URI);
        let renumber = renumber_of(&description);
        let naming = naming_of(&description, renumber.as_deref());
        Feed {
            publisher,
            dynacast: Dynacast::new(description.simulcast.as_ref().map_or(1, |s| s.rids.len())),
            layers_off: 0,
            frames: stall::FrameCounts::default(),
            svc_extension: extension_of(&description, dependency_descriptor::URI),
            svc: SvcStream::default(),
            svc_rates: Default::default(),
            svc_latest: None,
            record: None,
            audio_level_extension: extension_of(&description, speech::AUDIO_LEVEL_URI),
            speech: Speech::default(),
            layers: layers_of(&description),
            description,
            consumers: Consumers::default(),
            last_packet_at: None,
            mid_extension,
            twcc_extension,
            naming,
            renumber,
            origin: None,
            sinks: Vec::new(),
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

    /// Replace the description (a renegotiation). SSRCs learnt for simulcast layers stay
    /// where the layers keep their rids: a browser keeps its SSRCs across renegotiations, and
    /// no longer names them in its packets once it has had receiver reports for them.
    pub fn update(&mut self, description: FeedDescription) {
        self.mid_extension = mid_extension_of(&description);
        self.twcc_extension = extension_of(&description, crate::engine::twcc::URI);
        self.audio_level_extension = extension_of(&description, speech::AUDIO_LEVEL_URI);
        self.svc_extension = extension_of(&description, dependency_descriptor::URI);
        self.renumber = renumber_of(&description);
        self.naming = naming_of(&description, self.renumber.as_deref());
        let mut layers = layers_of(&description);
        if description.simulcast.is_some() {
            for layer in &mut layers {
                if let Some(old) = self.layers.iter().find(|l| l.rid == layer.rid) {
                    layer.ssrc = old.ssrc;
                    layer.rtx_ssrc = old.rtx_ssrc;
                }
            }
        }
        if layers.len() != self.layers.len() {
            self.dynacast = Dynacast::new(layers.len());
        } else {
            self.dynacast.reset();
        }
        self.layers_off = 0;
        self.frames.reset();
        // The new streams stamp their timestamps from new random bases: where the old ones
        // put a subscriber's timeline says nothing of theirs (the rewriter re-anchors on the
        // time that passed instead).
        for c in &mut self.consumers {
            c.reference_offset = None;
        }
        self.layers = layers;
        self.description = description;
        self.repair_wait.reset();
    }

    /// Which layer an SSRC belongs to, and whether it is that layer's RTX stream.
    pub fn layer_of(&self, ssrc: u32) -> Option<(usize, bool)> {
        self.layers.iter().enumerate().find_map(|(i, l)| {
            if l.ssrc == Some(ssrc) {
                Some((i, false))
            } else if l.rtx_ssrc == Some(ssrc) {
                Some((i, true))
            } else {
                None
            }
        })
    }

    /// The layer with rid `rid`.
    pub fn layer_named(&self, rid: &[u8]) -> Option<usize> {
        self.layers
            .iter()
            .position(|l| l.rid.as_deref().map(str::as_bytes) == Some(rid))
    }

    /// For a simulcast feed, the layer that a packet's cleartext header names with its MID
    /// and rid, and whether the packet is on that layer's RTX stream (named by the repaired
    /// rid). Read before the packet is authenticated: nothing may be kept from it until it is.
    pub fn layer_named_in(&self, packet: &[u8]) -> Option<(usize, bool)> {
        let simulcast = self.description.simulcast.as_ref()?;
        let mid = rtp::extension(packet, self.naming.mid?)?;
        if mid != simulcast.mid.as_bytes() {
            return None;
        }
        let (rid, repaired) = (self.naming.rid, self.naming.repaired_rid);
        if let Some(name) = rid.and_then(|id| rtp::extension(packet, id)) {
            return Some((self.layer_named(name)?, false));
        }
        let name = rtp::extension(packet, repaired?)?;
        Some((self.layer_named(name)?, true))
    }

    /// Whether `packet` (plaintext, with `header`) is the first of a keyframe, where its
    /// codec is one the relay reads (VP8, VP9, H.264); false for any other.
    pub fn starts_keyframe(&self, packet: &[u8], header: &rtp::RtpHeader) -> bool {
        let payload = &packet[header.header_len..header.header_len + header.payload_len];
        match self.description.codec_of(header.payload_type) {
            Some(name) if name.eq_ignore_ascii_case("VP8") => {
                vp8::parse(payload).is_some_and(|d| d.keyframe)
            }
            Some(name) if name.eq_ignore_ascii_case("VP9") => {
                vp9::parse(payload).is_some_and(|d| d.starts_keyframe())
            }
            Some(name) if name.eq_ignore_ascii_case("H264") => h264::starts_keyframe(payload),
            _ => false,
        }
    }

    /// The picture size the first packet of a keyframe gives, where its codec says it there
    /// (a VP8 keyframe header, an H.264 sequence parameter set).
    pub fn keyframe_size(&self, packet: &[u8], header: &rtp::RtpHeader) -> Option<(u16, u16)> {
        let payload = &packet[header.header_len..header.header_len + header.payload_len];
        match self.description.codec_of(header.payload_type) {
            Some(name) if name.eq_ignore_ascii_case("VP8") => {
                vp8::keyframe_size(payload, &vp8::parse(payload)?)
            }
            Some(name) if name.eq_ignore_ascii_case("H264") => h264::keyframe_size(payload),
            _ => None,
        }
    }

    /// Timestamp `ts` of layer `layer` on the timeline of the lowest layer, through the two
    /// layers' sender reports (each layer starts its timestamps at a random value, but all
    /// are stamped from one capture clock); None until both have sent one.
    pub fn reference_timestamp(&self, layer: usize, ts: u32) -> Option<u32> {
        if layer == 0 {
            return Some(ts);
        }
        let (sr_ntp, sr_ts) = self.layers.get(layer)?.last_sr?;
        let base = self.layers[0].timestamp_at(sr_ntp, self.description.clock_rate)?;
        Some(ts.wrapping_add(base.wrapping_sub(sr_ts)))
    }

    /// When the first layer has NACKs to send.
    pub fn nack_timeout(&self) -> Option<Instant> {
        self.layers
            .iter()
            .filter_map(|l| l.nack.poll_timeout())
            .min()
    }

    /// Whether the relay asks this feed's publisher for lost packets: video, published on this
    /// core, by a publisher that negotiated NACK.
    pub fn generates_nacks(&self) -> bool {
        self.origin.is_none() && self.is_video() && self.description.nack
    }

    /// The playout delay for subscribers of a packet that arrived at `now`, where the relay
    /// repairs the publisher's stream (see [`super::repair_wait`]).
    pub fn playout_delay(&self, now: Instant) -> Option<PlayoutDelay> {
        self.generates_nacks().then(|| {
            let repair_time = self
                .layers
                .iter()
                .map(|l| l.nack.repair_time())
                .max()
                .unwrap_or_default();
            self.repair_wait.playout_delay(now, repair_time)
        })
    }

    /// Whether the feed is video (only video is cached and repaired: a lost audio packet is
    /// concealed by the decoder sooner than a repair could come).
    pub fn is_video(&self) -> bool {
        self.description.kind == crate::control::MediaKind::Video
    }
}

/// The streams a description declares: one per simulcast rid, else the one with its SSRCs.
fn layers_of(d: &FeedDescription) -> Vec<Layer> {
    match &d.simulcast {
        Some(s) => s.rids.iter().cloned().map(Layer::named).collect(),
        None => vec![Layer::declared(
            d.ssrc.map(|s| s.0),
            d.rtx_ssrc.map(|s| s.0),
        )],
    }
}

/// The ids of the rid and repaired-rid extensions, each where it is negotiated with an id the
/// one-byte form can carry.
/// The extensions that name a simulcast layer, in the publisher's numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Naming {
    /// The MID.
    pub mid: Option<u8>,
    /// The rid (RFC 8852).
    pub rid: Option<u8>,
    /// The repaired rid, on RTX streams.
    pub repaired_rid: Option<u8>,
}

fn naming_of(d: &FeedDescription, renumber: Option<&Renumber>) -> Naming {
    let theirs = |id: Option<u8>| match renumber {
        Some(r) => id.and_then(|id| r.old_id(id)),
        None => id,
    };
    let one_byte = |uri| theirs(extension_of(d, uri)).filter(|id| *id <= 14);
    Naming {
        mid: theirs(mid_extension_of(d)).filter(|id| *id <= 14),
        rid: one_byte(RID_URI),
        repaired_rid: one_byte(REPAIRED_RID_URI),
    }
}

fn renumber_of(d: &FeedDescription) -> Option<Box<Renumber>> {
    d.renumbering.as_ref().map(|r| Box::new(Renumber::new(r)))
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
