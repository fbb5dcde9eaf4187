//! One subscriber's view of one feed, the consumer side of forwarding: its SSRC, the rewriter
//! that keeps its stream continuous, what the sender reports toward it need, and the
//! retransmissions it asked for.

pub mod keyframe_in_flight;
pub mod layers;
pub mod picture_ids;
pub mod retransmit;
pub mod rewriter;

pub use rewriter::{Original, Rewriter, REORDER_WINDOW};

use crate::sfu::svc::SvcSelector;
use std::sync::Arc;
use std::time::Instant;

use crate::engine::playout_delay::PlayoutDelay;
use crate::ids::{ParticipantKey, Ssrc};
use keyframe_in_flight::KeyframeInFlight;
use layers::Layers;
use picture_ids::PictureIds;
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
    /// Value for the MID header extension in this subscriber's packets (shared with its
    /// copies waiting in its pacer).
    pub mid: Option<Arc<[u8]>>,
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
    /// Which simulcast layer it receives.
    pub layers: Layers,
    /// VP8 picture numbers continued across layer switches.
    pub picture_ids: PictureIds,
    /// Its outgoing timestamp minus the feed's reference timestamp (the lowest layer's
    /// timeline) at the last packet sent where that was known: where a switch to another
    /// layer puts the new layer's timestamps.
    pub reference_offset: Option<u32>,
    /// Which decode target it gets of a feed with SVC (a feed without it never asks).
    pub svc: SvcSelector,
    /// The best spatial and temporal layers of an SVC feed its link affords, where the
    /// allocator decided.
    pub svc_allocated: Option<(u8, u8)>,
    /// The keyframe last sent to it, which a request for another waits for.
    pub keyframe: KeyframeInFlight,
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
            layers: Layers::default(),
            picture_ids: PictureIds::default(),
            reference_offset: None,
            svc: {
                let mut svc = SvcSelector::new(0);
                svc.set_cap(3, 3);
                svc
            },
            svc_allocated: None,
            keyframe: KeyframeInFlight::default(),
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

#[cfg(test)]
mod tests {
    use super::layers::Forward;
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    /// One packet of a layer: the layer, frames it moves on (0: another packet of the same
    /// frame), whether it starts a keyframe, whether the publisher's link lost it, and a new
    /// target chosen just before it.
    type Event = (u8, u8, bool, bool, Option<u8>);

    proptest! {
        /// A subscriber switched between three layers in any order, with losses and every
        /// layer's numbers starting near the wrap: no outgoing sequence number twice, and its
        /// timestamps never go back, within a layer or across a switch (where the reference
        /// timeline places the new layer).
        #[test]
        fn simulcast_rewriting_keeps_one_stream(
            events in proptest::collection::vec(
                (0u8..3, 0u8..3, any::<bool>(), proptest::bool::weighted(0.1), proptest::option::weighted(0.05, 0u8..3)),
                1..600,
            ),
            seq_base in any::<[u16; 3]>(),
            ts_base in any::<[u32; 3]>(),
        ) {
            let events: Vec<Event> = events;
            let t0 = Instant::now();
            let mut c = Consumer::new(ParticipantKey(1), Ssrc(9), 65_500, u32::MAX - 10_000);
            c.layers = Layers::new(2);
            let mut seq = seq_base;
            // Every layer's frames share one capture clock (`frame`), each with its own base.
            let mut frame = 0u32;
            let mut sent = HashSet::new();
            let mut last_ts: Option<u32> = None;
            for (i, (layer, advance, keyframe, lost, retarget)) in events.into_iter().enumerate() {
                if let Some(t) = retarget {
                    c.layers.set_target(t);
                }
                let l = usize::from(layer);
                frame += u32::from(advance);
                seq[l] = seq[l].wrapping_add(1);
                if lost {
                    continue;
                }
                let now = t0 + Duration::from_millis(i as u64);
                let reference = frame * 3000;
                let ts = ts_base[l].wrapping_add(reference);
                match c.layers.handle_packet(layer, keyframe, false) {
                    Forward::Drop => continue,
                    Forward::Switch => {
                        if let Some(offset) = c.reference_offset {
                            c.rewriter.anchor_timestamp(reference.wrapping_add(offset));
                        }
                    }
                    Forward::Send => {}
                }
                let Some((out_seq, out_ts)) =
                    c.rewriter.rewrite(now, 100 + u32::from(layer), seq[l], ts, 90_000)
                else {
                    continue;
                };
                c.reference_offset = Some(out_ts.wrapping_sub(reference));
                prop_assert!(sent.insert(out_seq), "sequence number {} twice", out_seq);
                if let Some(last) = last_ts {
                    prop_assert!(out_ts.wrapping_sub(last) as i32 >= 0, "{} after {}", out_ts, last);
                }
                last_ts = Some(out_ts);
            }
        }
    }
}
