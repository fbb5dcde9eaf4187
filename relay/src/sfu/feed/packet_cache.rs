//! The last packets of a video feed, by sequence number, so that a subscriber's NACK can be
//! answered from the relay instead of the publisher.
//!
//! One cache per feed and core holds the decrypted packets as they arrived; every subscriber's
//! history is only its mapping from outgoing to incoming sequence numbers
//! ([`super::consumer::Rewriter::original`]), so a retransmission costs no copy per subscriber
//! until it is sent. Slots are filled in place: once each has held one packet the cache never
//! allocates again, unless a slot comes round while a subscriber's pacer still holds its packet
//! ([`PacketCache::shared`]): that packet stays with the pacer, and the slot takes a new buffer.

/// Packets kept per video feed: about 2 s of a 2.5 Mbit/s stream, longer than any jitter
/// buffer waits for a repair.
pub const CACHE_PACKETS: usize = 512;

use crate::engine::playout_delay::PlayoutDelay;

use std::sync::Arc;

/// Room reserved per slot: a packet the size of a typical path MTU fits without growing it.
const SLOT_CAPACITY: usize = 1500;

#[derive(Debug, Default)]
struct Slot {
    /// SSRC and sequence number of what the slot holds; None while empty.
    key: Option<(u32, u16)>,
    /// Shared with the pacers of subscribers whose copy of it waits to be written.
    data: Arc<Vec<u8>>,
    playout_delay: Option<PlayoutDelay>,
}

/// A packet held by the cache, with what its copies carried besides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cached<'a> {
    /// The decrypted packet as it arrived.
    pub packet: &'a [u8],
    /// The playout delay its copies were sent with: a packet sent again on the same SSRC
    /// and sequence number must be byte for byte what was sent before (it is sealed under
    /// the same SRTP index).
    pub playout_delay: Option<PlayoutDelay>,
}

/// A ring of the last [`CACHE_PACKETS`] packets of one stream.
#[derive(Debug, Default)]
pub struct PacketCache {
    /// Empty until the first packet, then [`CACHE_PACKETS`] slots.
    slots: Vec<Slot>,
}

impl PacketCache {
    /// Keep `packet` (SSRC `ssrc`, sequence number `seq`), forwarded with `playout_delay`,
    /// replacing whatever held its slot: but for a second copy of the packet held (a late
    /// original after its repair, or a packet sent twice), which leaves the first. The first
    /// is the one forwarded: a copy waiting in a pacer is written from it, and a plain
    /// retransmission must repeat it byte for byte under the index it went out with.
    pub fn insert(
        &mut self,
        ssrc: u32,
        seq: u16,
        packet: &[u8],
        playout_delay: Option<PlayoutDelay>,
    ) {
        if self.slots.is_empty() {
            self.slots = (0..CACHE_PACKETS)
                .map(|_| Slot {
                    key: None,
                    data: Arc::new(Vec::with_capacity(SLOT_CAPACITY)),
                    playout_delay: None,
                })
                .collect();
        }
        let slot = &mut self.slots[seq as usize % CACHE_PACKETS];
        // The same number and timestamp: the same packet (the number alone could be one of
        // a stream that jumped, 65,536 numbers on).
        if slot.key == Some((ssrc, seq)) && slot.data.get(4..8) == packet.get(4..8) {
            return;
        }
        slot.key = Some((ssrc, seq));
        match Arc::get_mut(&mut slot.data) {
            Some(data) => {
                data.clear();
                data.extend_from_slice(packet);
            }
            None => {
                let mut data = Vec::with_capacity(SLOT_CAPACITY.max(packet.len()));
                data.extend_from_slice(packet);
                slot.data = Arc::new(data);
            }
        }
        slot.playout_delay = playout_delay;
    }

    /// The packet `seq` of `ssrc`, if it is still held, to keep after its slot is reused: a
    /// copy waiting in a subscriber's pacer is written from it when it leaves.
    pub fn shared(&self, ssrc: u32, seq: u16) -> Option<Arc<Vec<u8>>> {
        let slot = self.slots.get(seq as usize % CACHE_PACKETS)?;
        (slot.key == Some((ssrc, seq))).then(|| slot.data.clone())
    }

    /// The packet `seq` of `ssrc`, if it is still held.
    pub fn get(&self, ssrc: u32, seq: u16) -> Option<Cached<'_>> {
        let slot = self.slots.get(seq as usize % CACHE_PACKETS)?;
        (slot.key == Some((ssrc, seq))).then_some(Cached {
            packet: slot.data.as_slice(),
            playout_delay: slot.playout_delay,
        })
    }

    /// Whether packet `seq` of `ssrc` would be news to a subscriber: not held, and not older
    /// than what its slot holds now. A retransmission that is news fills a gap the relay
    /// passed on; one that is not was forwarded already, or is too old to be waited for.
    pub fn is_news(&self, ssrc: u32, seq: u16) -> bool {
        match self
            .slots
            .get(seq as usize % CACHE_PACKETS)
            .and_then(|s| s.key)
        {
            Some((held_ssrc, held)) if held_ssrc == ssrc => seq.wrapping_sub(held) as i16 > 0,
            _ => true,
        }
    }

    /// Forget everything (the feed was renegotiated).
    pub fn clear(&mut self) {
        for s in &mut self.slots {
            s.key = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn news_is_what_was_never_held_and_not_overtaken() {
        let mut c = PacketCache::default();
        assert!(c.is_news(1, 5));
        c.insert(1, 5, b"five", None);
        assert!(!c.is_news(1, 5));
        assert!(c.is_news(1, 6));
        // Another stream's packet in the slot says nothing about this one.
        assert!(c.is_news(2, 5));
        // Overtaken: the slot holds a packet one lap newer.
        let lap = CACHE_PACKETS as u16;
        c.insert(1, 7 + lap, b"newer", None);
        assert!(!c.is_news(1, 7));
        // One lap older than what is held would be news only if newer; 5 + lap is.
        assert!(c.is_news(1, 5 + lap));
        // Across the 16-bit wrap.
        c.insert(1, u16::MAX, b"last", None);
        assert!(!c.is_news(1, u16::MAX));
        assert!(c.is_news(1, u16::MAX.wrapping_add(lap)));
    }

    #[test]
    fn holds_the_last_packets_across_a_wrap() {
        let mut c = PacketCache::default();
        assert_eq!(c.get(1, 0), None);
        for i in 0..(CACHE_PACKETS as u32 + 10) {
            let seq = (65_530 + i) as u16;
            c.insert(1, seq, &seq.to_be_bytes(), None);
        }
        let newest = (65_530 + CACHE_PACKETS as u32 + 9) as u16;
        assert_eq!(
            c.get(1, newest).map(|c| c.packet),
            Some(&newest.to_be_bytes()[..])
        );
        let oldest_kept = newest.wrapping_sub(CACHE_PACKETS as u16 - 1);
        assert!(c.get(1, oldest_kept).is_some());
        // Overwritten by a newer packet in its slot.
        assert_eq!(c.get(1, oldest_kept.wrapping_sub(1)), None);
        // Another SSRC with the same number is not the same packet.
        assert_eq!(c.get(2, newest), None);
        c.clear();
        assert_eq!(c.get(1, newest), None);
    }

    #[test]
    fn a_shared_packet_outlives_its_slot() {
        let mut c = PacketCache::default();
        c.insert(1, 5, b"five", None);
        let kept = c.shared(1, 5).unwrap();
        assert_eq!(c.shared(1, 6), None);
        // The slot comes round while the packet is still held elsewhere.
        c.insert(1, 5 + CACHE_PACKETS as u16, b"a lap later", None);
        assert_eq!(kept.as_slice(), b"five");
        assert_eq!(
            c.get(1, 5 + CACHE_PACKETS as u16).map(|c| c.packet),
            Some(&b"a lap later"[..])
        );
        // Once nobody else holds it, the slot is written in place again.
        drop(kept);
        let before = c.shared(1, 5 + CACHE_PACKETS as u16).unwrap().as_ptr();
        c.insert(1, 5 + 2 * CACHE_PACKETS as u16, b"two laps", None);
        assert_eq!(
            c.get(1, 5 + 2 * CACHE_PACKETS as u16)
                .unwrap()
                .packet
                .as_ptr(),
            before
        );
    }

    #[test]
    fn a_duplicate_leaves_the_copy_that_went_out() {
        let mut c = PacketCache::default();
        // Bytes 4..8 are an RTP packet's timestamp.
        c.insert(1, 5, b"headTIMEfirst", None);
        c.insert(1, 5, b"headTIMEagain", None);
        assert_eq!(c.get(1, 5).map(|c| c.packet), Some(&b"headTIMEfirst"[..]));
        // Another timestamp under the number: another packet, which takes the slot.
        c.insert(1, 5, b"headNEXTthird", None);
        assert_eq!(c.get(1, 5).map(|c| c.packet), Some(&b"headNEXTthird"[..]));
    }

    #[test]
    fn the_playout_delay_is_kept_with_its_packet() {
        use std::time::Duration;
        let mut c = PacketCache::default();
        let d = PlayoutDelay::new(Duration::from_millis(240), Duration::from_secs(10));
        c.insert(1, 5, b"five", Some(d));
        c.insert(1, 6, b"six", None);
        assert_eq!(c.get(1, 5).unwrap().playout_delay, Some(d));
        assert_eq!(c.get(1, 6).unwrap().playout_delay, None);
        // A second copy of 5 leaves the first, and the delay it went out with.
        c.insert(1, 5, b"five", None);
        assert_eq!(c.get(1, 5).unwrap().playout_delay, Some(d));
    }
}
