//! One subscriber's view of one feed, the consumer side of forwarding: its SSRC, the rewriter
//! that keeps its stream continuous, what the sender reports toward it need, and the
//! retransmissions it asked for.

pub mod picture_ids;
pub mod retransmit;
pub mod rewriter;

pub use rewriter::{Original, Rewriter, REORDER_WINDOW};

use std::time::Instant;

use crate::engine::playout_delay::PlayoutDelay;
use crate::ids::{ParticipantKey, Ssrc};
use retransmit::Retransmits;

use super::repair_wait::{subscriber_repair_time, RepairWait};

/// A subscription of one participant to one feed.
#[derive(Debug, Clone)]
pub struct Consumer {
    /// The subscriber.
    pub subscriber: ParticipantKey,
    /// The SSRC the subscriber receives this feed with.
    pub ssrc: Ssrc,
    /// Sequence and timestamp mapping.
    pub rewriter: Rewriter,
    /// RTP packets sent (for SR).
    pub packets_sent: u32,
    /// Payload octets sent (for SR).
    pub octets_sent: u32,
    /// Value for the MID header extension in this subscriber's packets.
    pub mid: Option<Vec<u8>>,
    /// The id of the playout-delay extension in this subscriber's packets, if it has one.
    pub playout_delay_extension: Option<u8>,
    /// Whether its packets carry the subscriber transport's transport-wide numbers. Not where a
    /// repair would go out as a plain retransmission: that must be byte for byte the packet
    /// first sent, number included.
    pub transport_wide: bool,
    /// What it asked to have sent again, and its retransmission stream.
    pub retransmits: Retransmits,
    /// When the subscriber last asked for a repair: it then gets a playout delay that leaves
    /// time for a second one.
    pub repair_wait: RepairWait,
}

impl Consumer {
    /// A new subscription starting at a random sequence number and timestamp.
    pub fn new(subscriber: ParticipantKey, ssrc: Ssrc, initial_seq: u16, initial_ts: u32) -> Self {
        Consumer {
            subscriber,
            ssrc,
            rewriter: Rewriter::new(initial_seq, initial_ts),
            packets_sent: 0,
            octets_sent: 0,
            mid: None,
            playout_delay_extension: None,
            transport_wide: false,
            retransmits: Retransmits::new(None, initial_seq.wrapping_add(0x8000)),
            repair_wait: RepairWait::default(),
        }
    }

    /// The playout delay for this subscriber's copy, sent at `now`, of a packet that the feed
    /// gives `feed_delay` (the wait for repairs from the publisher): the longer of that and
    /// the wait for repairs on the subscriber's own link.
    ///
    /// Only where repairs go out on an RTX stream: a plain retransmission must be byte for
    /// byte the packet first sent, which the feed's cache can give with the feed's delay but
    /// not with one that changed since on this subscriber's side.
    pub fn playout_delay(
        &self,
        now: Instant,
        feed_delay: Option<PlayoutDelay>,
    ) -> Option<PlayoutDelay> {
        if self.retransmits.rtx_ssrc.is_none() {
            return feed_delay;
        }
        let own = self
            .repair_wait
            .playout_delay(now, subscriber_repair_time(self.retransmits.rtt()));
        Some(feed_delay.map_or(own, |f| f.longest(own)))
    }

    /// The SSRCs the subscriber receives this feed with: media, then retransmission.
    pub fn ssrcs(&self) -> impl Iterator<Item = u32> {
        std::iter::once(self.ssrc.0).chain(self.retransmits.rtx_ssrc)
    }
}
