//! What cores say to each other when one session spans several of them.
//!
//! A session normally lives on one core. When it grows past what one core should carry, new
//! participants land on other cores, each of which holds a replica of the session's feeds.
//! The core that receives a feed from its publisher (its origin) decrypts each packet once,
//! forwards it to its own subscribers, and hands the decrypted packet to every other core
//! with subscribers of the feed (its sinks) through a lock-free queue; those cores rewrite,
//! encrypt and send it to theirs. Keyframe requests travel the other way. Data-channel
//! messages go to every core of the session, and a core whose receivers cannot keep up holds
//! back the senders on the others.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::engine::playout_delay::PlayoutDelay;
use crate::ids::{FeedKey, SessionKey, Sid};

use super::svc::SvcFrame;

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
    /// The playout delay subscribers are given with it, decided on the publisher's core.
    pub playout_delay: Option<PlayoutDelay>,
    /// The feed's layer it belongs to (0 without simulcast).
    pub layer: u8,
    /// Whether it begins a keyframe (video): where a simulcast subscriber can switch layers,
    /// and what a subscriber's request for a keyframe waits for.
    pub keyframe: bool,
    /// The picture size that keyframe gives, where its codec says it in its first packet.
    pub frame_size: Option<(u16, u16)>,
    /// The layers of the feed that dynacast turned off at its publisher (bit `i`: layer `i`).
    pub layers_off: u8,
    /// Its timestamp on the lowest layer's timeline, where the sender reports give it.
    pub reference_timestamp: Option<u32>,
    /// Its frame's layers and decode targets, for a feed with SVC (read from its dependency
    /// descriptor on the feed's core).
    pub svc: Option<SvcFrame>,
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

/// Packets the origin core handed to other cores, kept so that each is reused once every sink
/// has dropped its reference: the cross-core path then allocates nothing in steady state.
///
/// Sinks drop packets in roughly the order they were sent, so the oldest packet is the one to
/// try: when no other core holds it any more, its allocation (the `Arc` and the buffer inside)
/// carries the next packet. Only the origin core touches this; the sinks only drop their
/// clones.
#[derive(Debug)]
pub struct RelayedPool {
    sent: VecDeque<Arc<RelayedRtp>>,
    max: usize,
    allocated: u64,
}

impl RelayedPool {
    /// A pool that keeps up to `max` packets in flight for reuse (past that, new packets are
    /// not kept, and free once their sinks drop them).
    pub fn new(max: usize) -> Self {
        RelayedPool {
            sent: VecDeque::with_capacity(max),
            max,
            allocated: 0,
        }
    }

    /// A shared packet holding `plain`, `info` and `arrived`. Returns the buffer the packet
    /// had before (empty when it is new), for the caller's buffer pool.
    pub fn wrap(
        &mut self,
        plain: Vec<u8>,
        info: RtpInfo,
        arrived: Option<SystemTime>,
    ) -> (Arc<RelayedRtp>, Vec<u8>) {
        if let Some(front) = self.sent.front_mut() {
            if let Some(packet) = Arc::get_mut(front) {
                let old = std::mem::replace(&mut packet.plain, plain);
                packet.info = info;
                packet.arrived = arrived;
                // front_mut found it.
                let reused = self.sent.pop_front().expect("front exists");
                self.sent.push_back(reused.clone());
                return (reused, old);
            }
        }
        self.allocated += 1;
        let packet = Arc::new(RelayedRtp {
            plain,
            info,
            arrived,
        });
        if self.sent.len() < self.max {
            self.sent.push_back(packet.clone());
        }
        (packet, Vec::new())
    }

    /// Packets this pool has ever allocated: flat once traffic is steady.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }
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
    /// Sink → origin: the layers the sink's subscribers want (dynacast).
    LayersWanted {
        /// The feed.
        route: FeedRoute,
        /// The sink.
        core: usize,
        /// Bit `i`: layer `i`; 0 when no subscriber there wants any.
        mask: u8,
    },
    /// A data-channel message for the session's participants on the receiving core.
    Data(super::data::Relayed),
    /// Receivers of the session on `core` have more waiting on their reliable channel than
    /// they take: the session's senders on the receiving core wait until `until` at most, as
    /// that core's own are held (None: they no longer need to). A hold that is lost to a full
    /// queue is not made good (the receivers' bound on what waits for them still applies), and
    /// a release that is lost costs no more than the rest of the hold.
    DataHold {
        /// The session.
        sid: Sid,
        /// The core whose receivers hold.
        core: usize,
        /// Until when at most.
        until: Option<Instant>,
    },
    /// Sink → origin: a subscriber needs a keyframe.
    KeyframeRequest {
        /// The feed.
        route: FeedRoute,
        /// The layer, or None for every layer.
        layer: Option<u8>,
        /// A new subscriber's first request: not subject to the per-layer limit.
        bypass_limit: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(sequence: u16) -> RtpInfo {
        RtpInfo {
            ssrc: 1,
            sequence,
            timestamp: 0,
            payload_len: 0,
            playout_delay: None,
            layer: 0,
            keyframe: false,
            frame_size: None,
            layers_off: 0,
            reference_timestamp: None,
            svc: None,
        }
    }

    #[test]
    fn a_packet_is_reused_once_every_sink_dropped_it() {
        let mut pool = RelayedPool::new(4);
        let (a, old) = pool.wrap(vec![1], info(1), None);
        assert!(old.is_empty());
        let sink = a.clone();
        drop(a);
        // Still held by a sink: a new packet.
        let (b, _) = pool.wrap(vec![2], info(2), None);
        assert_eq!(pool.allocated(), 2);
        drop(sink);
        drop(b);
        // The oldest is free again: reused, its old buffer handed back.
        let (c, old) = pool.wrap(vec![3], info(3), None);
        assert_eq!(old, vec![1]);
        assert_eq!((c.plain.clone(), c.info.sequence), (vec![3], 3));
        assert_eq!(pool.allocated(), 2);
        // Past `max` in flight, packets are not kept.
        let held: Vec<_> = (0..10)
            .map(|i| pool.wrap(vec![], info(i), None).0)
            .collect();
        assert_eq!(pool.sent.len(), 4);
        drop(held);
    }
}
