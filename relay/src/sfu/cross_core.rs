//! What cores say to each other when one session spans several of them.
//!
//! A session normally lives on one core. When it grows past what one core should carry, new
//! participants land on other cores, each of which holds a replica of the session's feeds.
//! The core that receives a feed from its publisher (its origin) decrypts each packet once,
//! forwards it to its own subscribers, and hands the decrypted packet to every other core
//! with subscribers of the feed (its sinks) through a lock-free queue; those cores rewrite,
//! encrypt and send it to theirs. Keyframe requests travel the other way.

use std::sync::Arc;
use std::time::SystemTime;

use crate::ids::{FeedKey, SessionKey};

/// Where a feed lives relay-wide: its origin core and its keys there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FeedRoute {
    /// The core that receives the feed from its publisher.
    pub core: usize,
    /// The session's key on that core.
    pub session: SessionKey,
    /// The feed's key on that core.
    pub feed: FeedKey,
}

/// The fields of an RTP header a sink needs to rewrite a packet for its subscribers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpInfo {
    /// The publisher's SSRC.
    pub ssrc: u32,
    /// The publisher's sequence number.
    pub sequence: u16,
    /// The publisher's RTP timestamp.
    pub timestamp: u32,
    /// Payload bytes (for sender reports).
    pub payload_len: usize,
}

/// A decrypted RTP packet on its way to other cores; shared by all of them.
#[derive(Debug)]
pub struct RelayedRtp {
    /// The plaintext RTP packet as the publisher sent it.
    pub plain: Vec<u8>,
    /// Its header fields.
    pub info: RtpInfo,
    /// When the kernel of the origin core received it, if stamped: the receiving core
    /// measures its forwarding delay from there, so the hop between cores counts.
    pub arrived: Option<SystemTime>,
}

/// A message from one core to another.
#[derive(Debug, Clone)]
pub enum CrossCore {
    /// Origin → sink: a packet of the feed to forward to the sink's subscribers.
    Rtp {
        /// The feed.
        route: FeedRoute,
        /// The packet.
        packet: Arc<RelayedRtp>,
    },
    /// Sink → origin: a subscriber needs a keyframe.
    KeyframeRequest {
        /// The feed.
        route: FeedRoute,
        /// A new subscriber's first request: not subject to the per-feed limit.
        bypass_limit: bool,
    },
}
