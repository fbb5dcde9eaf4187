//! The relay's error types, one per layer.
//!
//! [`ControlError`] is what a control-plane request can be refused with: it is API misuse by the
//! caller (or a race with a participant that just left), never a fault of the relay, and it is
//! serialisable so it can cross the network unchanged. [`Error`] is for starting and running
//! the relay process itself.

use serde::{Deserialize, Serialize};

use crate::ids::{FeedId, Sid, Uid};

/// A control request the relay refused, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ControlError {
    /// A session with this sid already exists.
    #[error("session {sid} already exists")]
    SessionExists {
        /// The session.
        sid: Sid,
    },
    /// No session with this sid on the relay.
    #[error("no session {sid}")]
    NoSuchSession {
        /// The session.
        sid: Sid,
    },
    /// The uid is already a participant of the session.
    #[error("participant {uid} already in session {sid}")]
    ParticipantExists {
        /// The session.
        sid: Sid,
        /// The participant.
        uid: Uid,
    },
    /// No such participant in the session.
    #[error("no participant {uid} in session {sid}")]
    NoSuchParticipant {
        /// The session.
        sid: Sid,
        /// The participant.
        uid: Uid,
    },
    /// The ICE ufrag is already used by another participant on the same core.
    #[error("ICE ufrag already in use on this core")]
    UfragInUse,
    /// ICE credentials shorter than RFC 8445 allows (ufrag ≥ 4, pwd ≥ 22 characters).
    #[error("ICE credentials too short (ufrag needs 4 characters, pwd 22)")]
    BadIceCredentials,
    /// No such feed in the session.
    #[error("no feed {feed_id} in session {sid}")]
    NoSuchFeed {
        /// The session.
        sid: Sid,
        /// The feed.
        feed_id: FeedId,
    },
    /// The feed id belongs to another participant.
    #[error("feed {feed_id} is published by another participant")]
    FeedOwnedByOther {
        /// The feed.
        feed_id: FeedId,
    },
    /// The SSRC is already used by another feed of the same participant.
    #[error("SSRC {ssrc} already used by another feed of this participant")]
    SsrcInUse {
        /// The SSRC.
        ssrc: u32,
    },
    /// A feed description with values the relay cannot forward.
    #[error("invalid feed description: {reason}")]
    InvalidFeed {
        /// What is wrong.
        reason: String,
    },
    /// Subscription options with values the relay cannot use.
    #[error("invalid subscription: {reason}")]
    InvalidSubscription {
        /// What is wrong.
        reason: String,
    },
    /// Already subscribed to this feed.
    #[error("participant {uid} already subscribes to feed {feed_id}")]
    AlreadySubscribed {
        /// The subscriber.
        uid: Uid,
        /// The feed.
        feed_id: FeedId,
    },
    /// Not subscribed to this feed.
    #[error("participant {uid} does not subscribe to feed {feed_id}")]
    NotSubscribed {
        /// The subscriber.
        uid: Uid,
        /// The feed.
        feed_id: FeedId,
    },
    /// A participant cannot subscribe to its own feed.
    #[error("participant {uid} cannot subscribe to its own feed")]
    OwnFeed {
        /// The participant.
        uid: Uid,
    },
    /// The certificate fingerprint cannot change once DTLS has started.
    #[error("DTLS already started; the fingerprint cannot change")]
    DtlsStarted,
    /// The core that owns the session is gone (the relay is shutting down).
    #[error("relay core {core} is not running")]
    CoreGone {
        /// The core index.
        core: usize,
    },
    /// A feed was unpublished on its origin core while another core was being linked to it.
    #[error("the feed is no longer published on its origin core")]
    NoSuchRoute,
    /// The relay was started without an edge: no feed can cross to or from another node.
    #[error("this relay has no edge (it was started for one node)")]
    NoEdge,
    /// A reply of another kind than its request's: a [`crate::Control`] implementation
    /// that answers a request with the wrong [`crate::Reply`] (over the control API a reply
    /// is read as its request's kind, and one that does not read is `bad_reply`).
    #[error("unexpected reply {reply}")]
    UnexpectedReply {
        /// The reply, shortened.
        reply: String,
    },
    /// The relay runs in another process and its control API cannot be reached (or refused the
    /// control plane's token); only a remote control plane says this.
    #[error("the relay cannot be reached: {reason}")]
    RelayUnreachable {
        /// Why.
        reason: String,
    },
    /// The relay was started without a recordings directory.
    #[error("this relay does not record (it has no recordings directory)")]
    RecordingUnavailable,
    /// A recording could not start: its file cannot be written, or the disk is (nearly) full.
    #[error("cannot record: {reason}")]
    RecordingFailed {
        /// Why.
        reason: String,
    },
    /// A recording request that makes no sense (no feed, a path outside the directory).
    #[error("invalid recording: {reason}")]
    InvalidRecording {
        /// What is wrong.
        reason: String,
    },
    /// No such recording runs in the session.
    #[error("no recording {recording} in session {sid}")]
    NoSuchRecording {
        /// The session.
        sid: Sid,
        /// The recording.
        recording: u64,
    },
}

/// Errors starting or running the relay process.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding or configuring a core's UDP socket failed.
    #[error("core {core}: socket {addr}: {source}")]
    Socket {
        /// The core index.
        core: usize,
        /// The address it tried.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Generating the DTLS certificate failed.
    #[error("DTLS certificate: {0}")]
    Certificate(String),
    /// A core thread could not be started.
    #[error("core {core}: thread: {source}")]
    Thread {
        /// The core index.
        core: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// A core thread died while starting.
    #[error("core {core} failed to start")]
    CoreStart {
        /// The core index.
        core: usize,
    },
    /// The configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
}
