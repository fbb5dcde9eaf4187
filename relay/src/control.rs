//! The control-plane vocabulary: what signalling asks of a relay and what the relay reports back.
//!
//! Every type here is plain data with serde, so the same requests can later travel to a relay on
//! another machine; [`crate::RelayHandle`] is the in-process transport.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::engine::srtp::SrtpProfile;
use crate::ids::{FeedId, Sid, Ssrc, Uid};
use crate::sfu::participant::ParticipantUsage;

/// Audio or video.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// An audio stream.
    Audio,
    /// A video stream.
    Video,
}

/// A negotiated RTP header extension (RFC 8285): the id the participant uses for a URI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderExtension {
    /// The one-byte or two-byte extension id (1..=255).
    pub id: u8,
    /// The extension's URI, e.g. `urn:ietf:params:rtp-hdrext:sdes:mid`.
    pub uri: String,
}

/// One published stream as signalling negotiated it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedDescription {
    /// The feed's id, unique within the session.
    pub feed_id: FeedId,
    /// Audio or video.
    pub kind: MediaKind,
    /// The media SSRC the publisher sends with; None for a simulcast feed, whose SSRCs the
    /// relay learns from the first packets of each layer ([`Simulcast`]).
    #[serde(default)]
    pub ssrc: Option<Ssrc>,
    /// RTP clock rate of the codec (90000 for video, 48000 for opus).
    pub clock_rate: u32,
    /// Payload types the publisher may use; packets with others are dropped. Empty: any.
    pub payload_types: Vec<u8>,
    /// Header extensions as the publisher numbers them.
    pub header_extensions: Vec<HeaderExtension>,
    /// Whether the publisher answers generic NACKs (it negotiated `nack` feedback): the relay
    /// then asks it for what it lost.
    #[serde(default)]
    pub nack: bool,
    /// The SSRC of the publisher's retransmissions (`a=ssrc-group:FID`), if it sends RTX.
    #[serde(default)]
    pub rtx_ssrc: Option<Ssrc>,
    /// The retransmission payload types (RFC 4588 `rtx` with its `apt`), both for what the
    /// publisher sends and what the relay sends subscribers.
    #[serde(default)]
    pub rtx_payload_types: Vec<RtxPayloadType>,
    /// The codec of each payload type, where the relay must read the payload: to find the
    /// keyframes at which a subscriber can switch between simulcast layers.
    #[serde(default)]
    pub codecs: Vec<PayloadCodec>,
    /// The layers of a simulcast feed (`a=simulcast:send`); None for a single stream.
    #[serde(default)]
    pub simulcast: Option<Simulcast>,
    /// A screen share: where a subscriber's link cannot carry all its video, it comes before
    /// cameras (text that freezes or blurs is lost; a face at a lower layer is not).
    #[serde(default)]
    pub screen: bool,
    /// Where the publisher numbers payload types and header extensions its own way (it made
    /// the offer, as a WHIP encoder does): its numbers for the relay's, in which the rest of
    /// this description is written. None: it uses the relay's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renumbering: Option<Box<Renumbering>>,
}

/// Two numberings of payload types and header-extension ids, as pairs (from, to): for a
/// publisher's feed, its own numbers to the relay's (applied as its packets arrive, so
/// subscribers and recordings see only the relay's); for a participant, the relay's to its own
/// (applied to every packet sent to it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renumbering {
    /// (from, to) for each payload type that may come, media and RTX. Packets with another
    /// payload type are dropped.
    pub payload_types: Vec<(u8, u8)>,
    /// (from, to) extension ids. Elements with other ids are erased.
    pub extensions: Vec<(u8, u8)>,
}

/// A payload type and its codec's SDP encoding name (`VP8`, `H264`, `opus`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadCodec {
    /// The payload type.
    pub pt: u8,
    /// The encoding name, as in `a=rtpmap`.
    pub name: String,
}

/// How a simulcast feed's layers are told apart. The publisher's answer names them only by
/// their `rid`s, not their SSRCs; its first packets of each layer carry the MID and the rid
/// (or, on a layer's RTX stream, the repaired rid) in header extensions, from which the relay
/// learns the SSRCs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Simulcast {
    /// The feed's m-section, as the MID header extension carries it.
    pub mid: String,
    /// The layers' rids, lowest quality first (at most [`MAX_LAYERS`]).
    pub rids: Vec<String>,
}

/// The most simulcast layers a feed may have.
pub const MAX_LAYERS: usize = 4;

/// A payload type of the RFC 4588 retransmission format and the one it repairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtxPayloadType {
    /// The `rtx` payload type.
    pub pt: u8,
    /// The payload type it carries (`apt`).
    pub apt: u8,
}

impl FeedDescription {
    /// The SSRCs the description declares: media, then retransmission (none for simulcast).
    pub fn ssrcs(&self) -> impl Iterator<Item = u32> {
        self.ssrc.into_iter().chain(self.rtx_ssrc).map(|s| s.0)
    }

    /// The codec name of payload type `pt`, if declared.
    pub fn codec_of(&self, pt: u8) -> Option<&str> {
        self.codecs
            .iter()
            .find(|c| c.pt == pt)
            .map(|c| c.name.as_str())
    }

    /// The payload type a retransmission with payload type `rtx_pt` repairs.
    pub fn apt_of(&self, rtx_pt: u8) -> Option<u8> {
        self.rtx_payload_types
            .iter()
            .find(|r| r.pt == rtx_pt)
            .map(|r| r.apt)
    }

    /// Whether the feed's streams can be told apart: a declared SSRC, or simulcast layers
    /// named by rid (1 to [`MAX_LAYERS`], distinct, each a valid RFC 8851 rid, under a mid of
    /// 1 to 16 bytes), and simulcast only on video. Else why not.
    pub fn check_layers(&self) -> Result<(), String> {
        let Some(simulcast) = &self.simulcast else {
            if self.ssrc.is_none() {
                return Err("a feed without simulcast needs its ssrc".into());
            }
            return Ok(());
        };
        if self.ssrc.is_some() || self.rtx_ssrc.is_some() {
            return Err(
                "a simulcast feed's SSRCs are learnt from its packets, not declared".into(),
            );
        }
        if self.kind != MediaKind::Video {
            return Err("simulcast is for video".into());
        }
        let rids = &simulcast.rids;
        if rids.is_empty() || rids.len() > MAX_LAYERS {
            return Err("a simulcast feed has 1 to 4 layers".into());
        }
        let valid = |r: &String| {
            (1..=16).contains(&r.len())
                && r.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !rids.iter().all(valid) {
            return Err("a rid is 1 to 16 letters, digits, '-' or '_'".into());
        }
        if (1..rids.len()).any(|i| rids[..i].contains(&rids[i])) {
            return Err("the rids of a simulcast feed must differ".into());
        }
        if simulcast.mid.is_empty() || simulcast.mid.len() > 16 {
            return Err("a simulcast feed's mid is 1 to 16 bytes".into());
        }
        Ok(())
    }

    /// The retransmission payload type for payload type `apt`.
    pub fn rtx_pt_of(&self, apt: u8) -> Option<u8> {
        self.rtx_payload_types
            .iter()
            .find(|r| r.apt == apt)
            .map(|r| r.pt)
    }
}

/// What the relay needs to accept a participant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantConfig {
    /// The participant's ICE ufrag from its offer; checks naming another one are refused.
    /// None accepts any (used by peers that learn it only later).
    pub remote_ufrag: Option<String>,
    /// `sha-256 AB:CD:…` fingerprint of the participant's DTLS certificate from its offer;
    /// None accepts any certificate (tests and trusted links only).
    pub remote_fingerprint: Option<String>,
    /// Whether it may send on data channels (the `publish_data` grant). Anyone receives.
    #[serde(default)]
    pub publish_data: bool,
    /// The largest data-channel message it accepts (its SDP's `a=max-message-size`); None
    /// for the relay's own maximum.
    #[serde(default)]
    pub max_message_size: Option<u32>,
    /// Where it numbers payload types and header extensions its own way (it made the offer,
    /// as a WHEP player does): the relay's numbers with its own for the same thing, applied
    /// to every packet sent to it. None: it uses the relay's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renumbering: Option<Box<Renumbering>>,
}

/// What a participant needs to reach the relay (goes into the SDP answer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    /// The relay's ICE ufrag for this participant.
    pub ice_ufrag: String,
    /// The relay's ICE password for this participant.
    pub ice_pwd: String,
    /// The relay's DTLS certificate fingerprint, `sha-256 AB:CD:…`.
    pub fingerprint: String,
    /// The UDP address of the core that owns the session (the ICE host candidate).
    pub candidate: SocketAddr,
    /// The core's ICE-TCP address (a passive host candidate), where it listens for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_candidate: Option<SocketAddr>,
}

/// How a subscription is presented to the subscriber.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeOptions {
    /// The mid of the subscriber's m-section for this feed. When the feed carries the
    /// `sdes:mid` header extension, the relay writes this value into it, so the subscriber's
    /// BUNDLE demultiplexing finds the right transceiver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<String>,
    /// Whether the subscriber takes retransmissions on a stream of their own (RFC 4588); the
    /// relay then picks an RTX SSRC for it ([`SubscriptionInfo::rtx_ssrc`]). Without it, a
    /// NACKed packet is sent again as it was.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rtx: bool,
    /// The id (1-14) of the playout-delay header extension in the subscriber's m-section, if
    /// it has one: the relay then gives it the playout delay that leaves time for repairs
    /// from the publisher ([`crate::engine::playout_delay`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playout_delay_extension: Option<u8>,
    /// The id (1-14) of the transport-wide sequence number extension in the subscriber's
    /// m-section, if it negotiated transport-wide feedback: the relay then numbers what it
    /// sends the subscriber and estimates its bandwidth from the feedback
    /// ([`crate::engine::bwe`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_cc_extension: Option<u8>,
}

/// The header-extension URI of the RTP MID (RFC 8843 §15.2).
pub const MID_EXTENSION_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";

/// What a subscriber receives and why: the estimate of its downlink and, per simulcast
/// subscription, the layer it is on (the stats per subscriber).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubscriberQuality {
    /// The estimate of what its downlink carries, bit/s; None where it sends no transport-wide
    /// feedback.
    pub estimate_bps: Option<f64>,
    /// Its video subscriptions.
    pub subscriptions: Vec<LayerState>,
}

/// How a subscriber shows a video feed, which bounds what it is sent of it (LiveKit's
/// "adaptive stream"). The default: shown, at no known size, with no cap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// Not shown at all (the element is hidden, off screen, or the page is in the
    /// background): nothing is sent until it shows again.
    #[serde(default)]
    pub hidden: bool,
    /// The size it is shown at, in device pixels: no layer larger than covers it is sent.
    #[serde(default)]
    pub size: Option<(u32, u32)>,
    /// The best layer wanted whatever the size (0 the lowest; past the top means the top).
    #[serde(default)]
    pub max_layer: Option<u8>,
}

/// A default of one (serde).
fn one() -> u8 {
    1
}

/// One video subscription's layer (a video without simulcast has one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerState {
    /// The feed.
    pub feed_id: FeedId,
    /// Its layers: simulcast streams, or for SVC each spatial layer's temporal layers,
    /// lowest first (layer `l` is spatial layer `l / temporal_layers`, temporal layer
    /// `l % temporal_layers`).
    pub layers: u8,
    /// The temporal layers of each spatial layer (1 for simulcast: a stream is a layer).
    #[serde(default = "one")]
    pub temporal_layers: u8,
    /// The layer it should be on (0 the lowest).
    pub target: u8,
    /// The layer it is on; None before the first keyframe.
    pub current: Option<u8>,
    /// Switches from one layer to another so far.
    pub switches: u32,
    /// Why nothing is sent of it, while it is paused.
    #[serde(default)]
    pub paused: Option<Pause>,
    /// Times it was paused so far.
    #[serde(default)]
    pub pauses: u32,
}

/// A subscription as the subscriber will see it on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    /// The feed subscribed to.
    pub feed_id: FeedId,
    /// The SSRC the relay sends this feed with to this subscriber.
    pub ssrc: Ssrc,
    /// Audio or video.
    pub kind: MediaKind,
    /// The publisher's description (payload types and extensions to put in the offer).
    pub feed: FeedDescription,
    /// The SSRC of the relay's retransmissions to this subscriber, when it asked for RTX and
    /// the feed has retransmission payload types.
    #[serde(default)]
    pub rtx_ssrc: Option<Ssrc>,
}

/// Where a session lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPlacement {
    /// Index of the core that owns it.
    pub core: usize,
    /// That core's UDP address.
    pub address: SocketAddr,
}

/// Why a participant was disconnected by the relay (not by a control request).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum DisconnectReason {
    /// No verified ICE check for the consent timeout (RFC 7675): the peer went away.
    ConsentExpired,
    /// The DTLS handshake did not finish in time.
    DtlsTimeout,
    /// The DTLS handshake failed.
    DtlsFailed {
        /// What the DTLS layer said.
        detail: String,
    },
    /// The peer closed DTLS (close_notify) or the association broke after the handshake.
    DtlsClosed,
}

/// How well a participant's media connection works, as a person would put it (LiveKit's
/// connection quality): from its round-trip time, the loss on what it sends and receives, and
/// whether its link carries the videos it subscribes to. See
/// [`crate::sfu::link_quality`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionQuality {
    /// Nothing heard from it for a while: its media does not arrive.
    Lost,
    /// Audio breaks up or video stalls: heavy loss, a long round trip, or a link too narrow
    /// for the lowest video layer.
    Poor,
    /// Some loss or delay that repairs and smaller layers hide.
    Good,
    /// No loss to speak of and a short round trip.
    Excellent,
}

/// Why a subscription receives no video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pause {
    /// The subscriber does not show it.
    Hidden,
    /// Its link cannot carry even the lowest layer, after what comes first.
    Bandwidth,
}

/// A recording's finished file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedFile {
    /// The file, relative to the recordings directory.
    pub path: String,
    /// What it holds, in milliseconds (0 when nothing was written).
    pub duration_ms: u64,
    /// Its size.
    pub bytes: u64,
    /// Frames lost for good: given up for a missing packet, or dropped until a keyframe.
    pub frames_lost: u64,
    /// Packets the queue to the recorder dropped.
    pub dropped: u64,
    /// Why it ended early, or why nothing was written.
    pub error: Option<String>,
}

/// How often a participant that keeps sending without the `publish_data` grant is told again.
pub const DATA_REFUSAL_REPEAT: std::time::Duration = std::time::Duration::from_secs(10);

/// Something that happened on a relay, reported to the control plane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// ICE and DTLS completed: media can flow.
    ParticipantConnected {
        /// The session.
        sid: Sid,
        /// The participant.
        uid: Uid,
        /// The address ICE selected.
        address: SocketAddr,
        /// The SRTP profile DTLS negotiated.
        profile: SrtpProfile,
    },
    /// A nominated check from a new address moved the participant there.
    ParticipantMigrated {
        /// The session.
        sid: Sid,
        /// The participant.
        uid: Uid,
        /// Old address.
        from: SocketAddr,
        /// New address.
        to: SocketAddr,
    },
    /// The relay dropped the participant; it is no longer in the session.
    ParticipantDisconnected {
        /// The session.
        sid: Sid,
        /// The participant.
        uid: Uid,
        /// Why.
        #[serde(flatten)]
        reason: DisconnectReason,
        /// Its traffic counters at the moment it was dropped: the relay forgets it with this
        /// event, so metering takes its last counts from here.
        #[serde(default)]
        usage: ParticipantUsage,
    },
    /// The first packet of a feed arrived (again, after it had stopped).
    FeedStarted {
        /// The session.
        sid: Sid,
        /// The publisher.
        uid: Uid,
        /// The feed.
        feed_id: FeedId,
    },
    /// A feed sent nothing for the inactivity timeout.
    FeedStopped {
        /// The session.
        sid: Sid,
        /// The publisher.
        uid: Uid,
        /// The feed.
        feed_id: FeedId,
    },
    /// The layers of a simulcast feed its publisher should send now (dynacast): the others
    /// no subscriber receives. Sent when that changes.
    FeedLayers {
        /// The session.
        sid: Sid,
        /// The publisher.
        uid: Uid,
        /// The feed.
        feed_id: FeedId,
        /// The rids of the layers to send.
        active: Vec<String>,
    },
    /// A publisher started or stopped speaking (from its audio's level extension), and while
    /// it speaks, every 500 ms, how loud.
    Speech {
        /// The session.
        sid: Sid,
        /// The publisher.
        uid: Uid,
        /// The audio feed.
        feed_id: FeedId,
        /// Whether it speaks.
        speaking: bool,
        /// dB above silence (0-127), the mean of its loud packets since the last report.
        loudness: u8,
    },
    /// A participant without the `publish_data` grant sent a data-channel message: dropped.
    /// Reported at its first such message, then at most every [`DATA_REFUSAL_REPEAT`].
    DataRefused {
        /// The session.
        sid: Sid,
        /// The sender.
        uid: Uid,
        /// Why.
        reason: String,
    },
    /// A recording's file is complete, or was closed on an error with what it had.
    RecordingFinished {
        /// The session.
        sid: Sid,
        /// The recording ([`crate::RelayHandle::start_recording`]).
        recording: u64,
        /// The file.
        file: RecordedFile,
    },
    /// The recorder fell behind (a slow disk) and lost packets of a recording; at most once
    /// a second while it lasts. Forwarding is not affected.
    RecordingDropped {
        /// The session.
        sid: Sid,
        /// The recording.
        recording: u64,
        /// Packets lost since the last report.
        packets: u64,
    },
    /// A participant's connection quality changed (and its first rating, once connected).
    ConnectionQuality {
        /// The session.
        sid: Sid,
        /// The participant.
        uid: Uid,
        /// Its rating now.
        quality: ConnectionQuality,
        /// Its round-trip time to the relay, where one was measured, in ms.
        rtt_ms: Option<u32>,
        /// The loss on its worse direction, percent, rounded (smoothed over a few seconds).
        loss_percent: u8,
    },
    /// A subscriber's video of a feed was paused, or resumed (`paused` None).
    SubscriptionPaused {
        /// The session.
        sid: Sid,
        /// The subscriber.
        uid: Uid,
        /// The feed.
        feed_id: FeedId,
        /// Why, while it is paused.
        paused: Option<Pause>,
    },
}
