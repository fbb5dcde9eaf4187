//! The websocket protocol between the SDK and signalling, version 1 (`docs/protocol.md` has an
//! example of every message).
//!
//! Requests carry an `id` and get exactly one `reply` with that id, either `ok` or `error`
//! (a stable `code` and a human-readable `reason`). The server also pushes `offer`s (it is
//! always the offerer, so the two sides never offer at once) and `event`s.

use serde::{Deserialize, Serialize};

/// Version of this protocol; the SDK sends it in `join`.
pub const VERSION: u32 = 1;

/// Largest websocket message accepted from a client.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// What a feed carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Camera and microphone.
    Webcam,
    /// Screen share.
    Screen,
}

/// A request from the SDK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Join a session (first request of a connection), or resume one after a reconnect.
    Join {
        /// Request id.
        id: u64,
        /// Protocol version the SDK speaks.
        v: u32,
        /// The session to join.
        sid: String,
        /// Display name.
        #[serde(default)]
        name: Option<String>,
        /// WEB_ONLY API key.
        #[serde(default)]
        key: Option<String>,
        /// JWT.
        #[serde(default)]
        token: Option<String>,
        /// Resume token from an earlier join on a connection that dropped.
        #[serde(default)]
        resume: Option<String>,
        /// Open data channels: the first offer then comes at once, with a data-channel
        /// section, whether or not anything is published or subscribed.
        #[serde(default)]
        data: bool,
        /// Its media is end-to-end encrypted (the SDK's `e2ee` option). A session is
        /// encrypted or not from its first join on: a join of the other kind is refused
        /// (`e2ee_mismatch`), and an encrypted session cannot be recorded.
        #[serde(default)]
        e2ee: bool,
        /// Sent on here by another node (`moved`): join here, wherever the session's other
        /// participants are (no second move).
        #[serde(default)]
        placed: bool,
    },
    /// Publish a feed; its tracks are negotiated with the next offer.
    Publish {
        /// Request id.
        id: u64,
        /// Webcam or screen.
        source: Source,
        /// Whether it has an audio track.
        #[serde(default)]
        audio: bool,
        /// Whether it has a video track.
        #[serde(default)]
        video: bool,
        /// Whether the video is sent as simulcast layers (quarter, half and full resolution),
        /// of which each subscriber receives the one its link and its screen can take.
        #[serde(default)]
        simulcast: bool,
        /// The id the feed had before its participant moved to this server (its server
        /// stopped): kept where no feed of the session has it, so that the others see the
        /// same feed come back.
        #[serde(default)]
        feed_id: Option<String>,
    },
    /// Stop publishing a feed.
    Unpublish {
        /// Request id.
        id: u64,
        /// The feed.
        feed_id: String,
    },
    /// Mute or unmute one track of a feed this participant publishes: the others are told
    /// (`feed-muted`, `feed-unmuted`); the browser stops sending the track while it is muted.
    Mute {
        /// Request id.
        id: u64,
        /// The feed.
        feed_id: String,
        /// `audio` or `video`.
        kind: String,
        /// Muted (true) or not.
        muted: bool,
    },
    /// Receive a feed; it arrives with the next offer.
    Subscribe {
        /// Request id.
        id: u64,
        /// The feed.
        feed_id: String,
    },
    /// Stop receiving a feed.
    Unsubscribe {
        /// Request id.
        id: u64,
        /// The feed.
        feed_id: String,
    },
    /// How the page shows a video it receives (the SDK sends this as its element is resized,
    /// hidden or shown): the relay sends no larger layer than covers `width` x `height`
    /// (device pixels), nothing while `hidden`, and no layer above `max_layer` (0 the lowest).
    SetView {
        /// Request id.
        id: u64,
        /// The feed subscribed to.
        feed_id: String,
        /// Not shown at all.
        #[serde(default)]
        hidden: bool,
        /// The width it is shown at, with `height`.
        #[serde(default)]
        width: Option<u32>,
        /// The height it is shown at, with `width`.
        #[serde(default)]
        height: Option<u32>,
        /// The best layer wanted whatever the size.
        #[serde(default)]
        max_layer: Option<u8>,
    },
    /// The answer to the server's latest offer. The SDK applies it locally after the reply,
    /// so the relay knows the browser's ICE ufrag and certificate before any packet arrives.
    Answer {
        /// Request id.
        id: u64,
        /// Which offer it answers.
        offer_id: u64,
        /// The SDP.
        sdp: String,
    },
    /// What the relay sends this participant: its downlink estimate and, per video
    /// subscription, the layer, pauses and switches.
    Quality {
        /// Request id.
        id: u64,
    },
    /// Ask for a new offer with fresh ICE credentials (the network changed or ICE failed).
    RestartIce {
        /// Request id.
        id: u64,
    },
    /// Start or stop recording the session (needs the record grant).
    Record {
        /// Request id.
        id: u64,
        /// Start (true) or stop (false).
        enable: bool,
    },
    /// Leave the session.
    Leave {
        /// Request id.
        id: u64,
    },
    /// Keep-alive: answered with an empty `ok` at once, joined or not. The SDK sends one
    /// every 2 s and takes 5 s without any message from the server for a dead connection.
    Ping {
        /// Request id.
        id: u64,
    },
}

impl Request {
    /// The request's id.
    pub fn id(&self) -> u64 {
        match self {
            Request::Join { id, .. }
            | Request::Publish { id, .. }
            | Request::Unpublish { id, .. }
            | Request::Mute { id, .. }
            | Request::Subscribe { id, .. }
            | Request::Unsubscribe { id, .. }
            | Request::SetView { id, .. }
            | Request::Quality { id }
            | Request::Answer { id, .. }
            | Request::RestartIce { id }
            | Request::Record { id, .. }
            | Request::Leave { id }
            | Request::Ping { id } => *id,
        }
    }
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable, machine-readable.
    pub code: ErrorCode,
    /// For people.
    pub reason: String,
    /// With `moved`: the websocket URL of the node to join instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Stable error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, unknown type, missing or wrong fields.
    InvalidMessage,
    /// Larger than [`MAX_MESSAGE`].
    MessageTooLarge,
    /// The protocol version is not supported.
    UnsupportedVersion,
    /// A request other than `join` before joining, or `join` twice.
    NotJoined,
    /// Already joined on this connection.
    AlreadyJoined,
    /// The resume token is unknown or expired.
    ResumeFailed,
    /// No such feed in the session.
    NoSuchFeed,
    /// The request names the participant's own feed where that makes no sense.
    OwnFeed,
    /// Already subscribed, or not subscribed.
    SubscriptionState,
    /// The answer does not fit the offer (wrong offer id, unparsable or hostile SDP).
    InvalidSdp,
    /// The relay refused.
    Relay,
    /// Publish without any track.
    NothingToPublish,
    /// The key or token was refused; the reason says which check failed.
    Unauthorized,
    /// The participant's grants do not allow the request.
    Forbidden,
    /// Too many join attempts from this key or address.
    RateLimited,
    /// Recording is permitted but this server has no recorder.
    RecordingUnavailable,
    /// The recording could not start or go on: its directory cannot be written, or the disk
    /// is full (the reason says which).
    RecordingFailed,
    /// The session is end-to-end encrypted and the join is not, or the other way round.
    E2eeMismatch,
    /// In a cluster: the session's participants in this region share another node; join
    /// there (`url`), with `placed` set.
    Moved,
    /// The server is draining (restarting, or leaving its cluster): it takes no new session.
    Draining,
}

/// A message from the server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The reply to a request.
    Reply {
        /// The request's id (null when the request could not be read).
        id: Option<u64>,
        /// Success payload.
        #[serde(skip_serializing_if = "Option::is_none")]
        ok: Option<serde_json::Value>,
        /// Failure.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<ErrorBody>,
    },
    /// A new description for the participant's peer connection.
    Offer {
        /// To be echoed in the answer.
        offer_id: u64,
        /// The SDP.
        sdp: String,
        /// What each m-section is for.
        transceivers: Vec<TransceiverInfo>,
    },
    /// Something happened in the session.
    Event(Event),
}

/// The role of one m-section in the participant's peer connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransceiverInfo {
    /// Its mid.
    pub mid: String,
    /// `audio` or `video`.
    pub kind: String,
    /// `publish` (the browser sends), `subscribe` (the browser receives) or `closed`.
    pub role: String,
    /// The feed it carries.
    pub feed_id: Option<String>,
}

/// A feed as other participants see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedInfo {
    /// The feed.
    pub feed_id: String,
    /// Its publisher.
    pub uid: String,
    /// Webcam or screen.
    pub source: Source,
    /// `audio` and/or `video`.
    pub kinds: Vec<String>,
    /// Those of its tracks its publisher muted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub muted: Vec<String>,
}

/// A participant as others see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    /// Its id.
    pub uid: String,
    /// Display name.
    pub name: Option<String>,
    /// Its connection quality as the relay rates it, once rated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<relay::control::ConnectionQuality>,
}

/// Session events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// Someone joined.
    ParticipantJoined(ParticipantInfo),
    /// Someone left (or was disconnected for good).
    ParticipantLeft {
        /// Who.
        uid: String,
    },
    /// Someone's server stopped: its feeds are gone, and it is expected back (on another
    /// server) within the resume window, after which it leaves.
    ParticipantReconnecting {
        /// Who.
        uid: String,
    },
    /// Someone who was reconnecting is back.
    ParticipantReconnected {
        /// Who.
        uid: String,
    },
    /// A feed can be subscribed to.
    FeedPublished(FeedInfo),
    /// A feed is gone; subscriptions to it ended.
    FeedUnpublished {
        /// The feed.
        feed_id: String,
        /// Its publisher.
        uid: String,
    },
    /// The relay stopped sending this participant the video of a feed it subscribes to:
    /// `hidden` (the page said it does not show it) or `bandwidth` (its link cannot carry
    /// even the lowest layer after audio and the videos that come first).
    FeedPaused {
        /// The feed.
        feed_id: String,
        /// Why.
        reason: relay::control::Pause,
    },
    /// To a publisher: send only these simulcast layers (by rid) of a feed's video; no
    /// subscriber receives the others (dynacast). The SDK turns the others' encodings off.
    FeedLayers {
        /// The feed.
        feed_id: String,
        /// The rids of the layers to send.
        active: Vec<String>,
    },
    /// Another participant's connection quality changed, as the relay rates it from its
    /// round trip, its loss each way and whether its link carries its videos.
    ConnectionQuality {
        /// Whose.
        uid: String,
        /// `excellent`, `good`, `poor` or `lost`.
        quality: relay::control::ConnectionQuality,
    },
    /// A participant started or stopped speaking (its published audio's level).
    Speaking {
        /// Who.
        uid: String,
        /// Whether it speaks now.
        speaking: bool,
    },
    /// The session's dominant speaker changed: the loudest of those speaking, who stays so
    /// until another has been louder for 1.5 s or it stops and another speaks (null: the last
    /// one left).
    ActiveSpeaker {
        /// Who.
        uid: Option<String>,
    },
    /// The video of a paused feed is sent again (from its next keyframe).
    FeedResumed {
        /// The feed.
        feed_id: String,
    },
    /// A publisher muted a track of its feed: nothing of it is sent until it is unmuted.
    FeedMuted {
        /// The feed.
        feed_id: String,
        /// Its publisher.
        uid: String,
        /// `audio` or `video`.
        kind: String,
    },
    /// A publisher unmuted a track of its feed.
    FeedUnmuted {
        /// The feed.
        feed_id: String,
        /// Its publisher.
        uid: String,
        /// `audio` or `video`.
        kind: String,
    },
    /// The session is being recorded, from now (or, to one who joins, since `started_at`):
    /// sent to every participant, so that everyone knows.
    RecordingStarted {
        /// Who started it: a participant's uid, or `admin`.
        by: String,
        /// Unix seconds.
        started_at: i64,
    },
    /// This page's server is draining (about to stop): with `servers` (other nodes of its
    /// cluster, its region first), the page moves to one of them now, keeping its uid; without,
    /// the server restarts and the page comes back when it answers again.
    ServerDraining {
        /// Where the page may go.
        servers: Vec<String>,
    },
    /// The session is no longer recorded.
    RecordingStopped {
        /// Who stopped it (a uid or `admin`), or None when it stopped on its own.
        by: Option<String>,
        /// Why, when it was not asked for (a full disk).
        reason: Option<String>,
    },
    /// The relay dropped data-channel messages this participant sent: it may not send data.
    DataRefused {
        /// Error code (`forbidden`).
        code: ErrorCode,
        /// Why.
        reason: String,
    },
}

/// Decode a client message; the error is the reason for an `invalid_message` reply.
pub fn decode(text: &str) -> Result<Request, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// The `id` of a message that did not decode as a request, so its error reply can be matched.
/// Reads any JSON object with an integer `id`, whatever else it holds.
pub fn request_id(text: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: Option<u64>,
    }
    serde_json::from_str::<IdOnly>(text).ok()?.id
}

impl ServerMessage {
    /// A successful reply.
    pub fn ok(id: u64, value: serde_json::Value) -> Self {
        ServerMessage::Reply {
            id: Some(id),
            ok: Some(value),
            error: None,
        }
    }

    /// A refusal.
    pub fn error(id: Option<u64>, code: ErrorCode, reason: impl Into<String>) -> Self {
        ServerMessage::Reply {
            id,
            ok: None,
            error: Some(ErrorBody {
                code,
                reason: reason.into(),
                url: None,
            }),
        }
    }

    /// A join sent on to another node of the cluster.
    pub fn moved(id: u64, node: &str, url: String) -> Self {
        ServerMessage::Reply {
            id: Some(id),
            ok: None,
            error: Some(ErrorBody {
                code: ErrorCode::Moved,
                reason: format!("the session's participants in this region are on node {node}"),
                url: Some(url),
            }),
        }
    }

    /// As JSON text.
    pub fn to_text(&self) -> String {
        // Serialising these plain types cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_sent_on_names_the_node_and_its_url() {
        let m = ServerMessage::moved(3, "eu-1", "wss://eu-1.example.com/ws".into());
        assert_eq!(
            m.to_text(),
            r#"{"type":"reply","id":3,"error":{"code":"moved","reason":"the session's participants in this region are on node eu-1","url":"wss://eu-1.example.com/ws"}}"#
        );
        // Other refusals carry no url; a join says whether it was sent on.
        assert!(!ServerMessage::error(Some(1), ErrorCode::Relay, "x")
            .to_text()
            .contains("url"));
        let j = decode(r#"{"type":"join","id":1,"v":1,"sid":"s","placed":true}"#).unwrap();
        assert!(matches!(j, Request::Join { placed: true, .. }));
    }

    #[test]
    fn wire_forms() {
        let r = decode(r#"{"type":"subscribe","id":4,"feed_id":"f1"}"#).unwrap();
        assert_eq!(
            r,
            Request::Subscribe {
                id: 4,
                feed_id: "f1".into()
            }
        );
        assert!(decode(r#"{"type":"fly","id":1}"#)
            .unwrap_err()
            .contains("unknown variant"));
        assert!(decode(r#"{"type":"leave"}"#).unwrap_err().contains("id"));
        let e = ServerMessage::Event(Event::FeedUnpublished {
            feed_id: "f".into(),
            uid: "u".into(),
        });
        assert_eq!(
            e.to_text(),
            r#"{"type":"event","event":"feed-unpublished","feed_id":"f","uid":"u"}"#
        );
        let err = ServerMessage::error(Some(3), ErrorCode::NoSuchFeed, "no feed x");
        assert_eq!(
            err.to_text(),
            r#"{"type":"reply","id":3,"error":{"code":"no_such_feed","reason":"no feed x"}}"#
        );
    }
}
