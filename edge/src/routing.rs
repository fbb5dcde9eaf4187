//! Which feeds cross one trunk, each way (pure: no I/O, no clock).
//!
//! A node asks its peer for a feed when its first local subscriber to it arrives and stops
//! asking when the last leaves, so a feed crosses a trunk once however many subscribe at the
//! far end. The peer numbers each feed it sends with a channel of its own (the datagrams'
//! four-byte tag); a channel is never reused on a trunk, so a late datagram of a closed one
//! cannot be taken for another feed's.

use std::collections::HashMap;

use relay::ids::{FeedId, Sid};

use crate::frame::Control;

/// A feed of a session.
pub type FeedKey = (Sid, FeedId);

/// Why a message from the peer does not fit the trunk's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The peer opened a channel for a feed this node did not ask for (or no longer wants).
    #[error("channel {channel} opened for {sid}/{feed_id}, which was not asked for")]
    NotWanted {
        /// The channel.
        channel: u32,
        /// The session.
        sid: Sid,
        /// The feed.
        feed_id: FeedId,
    },
    /// The peer opened a channel number it had used before.
    #[error("channel {0} opened twice")]
    ChannelReused(u32),
}

/// The routes over one trunk: what this node sends its peer and what it receives from it.
#[derive(Debug, Default)]
pub struct TrunkRoutes {
    /// Sending: the channel of each feed the peer asked for.
    sending: HashMap<FeedKey, u32>,
    next_channel: u32,
    /// Receiving: local subscribers of each feed asked for.
    wanted: HashMap<FeedKey, u32>,
    /// Receiving: the feed of each channel the peer opened.
    receiving: HashMap<u32, FeedKey>,
    /// The highest channel the peer opened: channels only grow.
    highest_opened: Option<u32>,
}

impl TrunkRoutes {
    /// A local participant subscribes to a feed the peer has: the message to send, for the
    /// first one only.
    pub fn want(&mut self, sid: &Sid, feed_id: &FeedId) -> Option<Control> {
        let n = self
            .wanted
            .entry((sid.clone(), feed_id.clone()))
            .or_insert(0);
        *n += 1;
        (*n == 1).then(|| Control::Subscribe {
            sid: sid.clone(),
            feed_id: feed_id.clone(),
        })
    }

    /// A local subscriber left: the message to send when it was the last.
    pub fn unwant(&mut self, sid: &Sid, feed_id: &FeedId) -> Option<Control> {
        let key = (sid.clone(), feed_id.clone());
        let n = self.wanted.get_mut(&key)?;
        *n -= 1;
        if *n > 0 {
            return None;
        }
        self.wanted.remove(&key);
        Some(Control::Unsubscribe {
            sid: sid.clone(),
            feed_id: feed_id.clone(),
        })
    }

    /// No local subscriber is left, however many there were: the message to send, if the
    /// feed was asked for.
    pub fn unwant_all(&mut self, sid: &Sid, feed_id: &FeedId) -> Option<Control> {
        self.wanted.remove(&(sid.clone(), feed_id.clone()))?;
        Some(Control::Unsubscribe {
            sid: sid.clone(),
            feed_id: feed_id.clone(),
        })
    }

    /// The peer asked for a feed: the channel to open for it (the caller sends
    /// [`Control::Open`] with its description), None where it is sent already.
    pub fn handle_subscribe(&mut self, sid: &Sid, feed_id: &FeedId) -> Option<u32> {
        let key = (sid.clone(), feed_id.clone());
        if self.sending.contains_key(&key) {
            return None;
        }
        let channel = self.next_channel;
        self.next_channel = self.next_channel.wrapping_add(1);
        self.sending.insert(key, channel);
        Some(channel)
    }

    /// The peer no longer wants a feed: the message that closes its channel, if it was sent.
    pub fn handle_unsubscribe(&mut self, sid: &Sid, feed_id: &FeedId) -> Option<Control> {
        let channel = self.sending.remove(&(sid.clone(), feed_id.clone()))?;
        Some(Control::Close { channel })
    }

    /// A feed ended here: the message that closes its channel, if the peer had it.
    pub fn feed_ended(&mut self, sid: &Sid, feed_id: &FeedId) -> Option<Control> {
        self.handle_unsubscribe(sid, feed_id)
    }

    /// Stop sending on `channel` (its feed ended here).
    pub fn close(&mut self, channel: u32) {
        self.sending.retain(|_, c| *c != channel);
    }

    /// The channel a feed goes out on, if the peer asked for it.
    pub fn channel_for(&self, sid: &Sid, feed_id: &FeedId) -> Option<u32> {
        self.sending.get(&(sid.clone(), feed_id.clone())).copied()
    }

    /// The peer opened a channel for a feed.
    pub fn handle_open(
        &mut self,
        channel: u32,
        sid: &Sid,
        feed_id: &FeedId,
    ) -> Result<(), RouteError> {
        if self.highest_opened.is_some_and(|h| channel <= h) {
            return Err(RouteError::ChannelReused(channel));
        }
        if !self.wanted.contains_key(&(sid.clone(), feed_id.clone())) {
            return Err(RouteError::NotWanted {
                channel,
                sid: sid.clone(),
                feed_id: feed_id.clone(),
            });
        }
        self.highest_opened = Some(channel);
        self.receiving
            .insert(channel, (sid.clone(), feed_id.clone()));
        Ok(())
    }

    /// The peer closed a channel: the feed it carried, if it was open.
    pub fn handle_close(&mut self, channel: u32) -> Option<FeedKey> {
        self.receiving.remove(&channel)
    }

    /// The feed a received datagram belongs to; None for a channel not open (a late datagram
    /// of a closed one: dropped).
    pub fn feed_of(&self, channel: u32) -> Option<&FeedKey> {
        self.receiving.get(&channel)
    }

    /// Feeds sent to the peer now.
    pub fn sent(&self) -> usize {
        self.sending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(f: &str) -> (Sid, FeedId) {
        ("c/room".into(), f.into())
    }

    #[test]
    fn a_feed_is_asked_for_once_however_many_subscribe_and_dropped_with_the_last() {
        let mut far = TrunkRoutes::default();
        let (sid, feed) = key("cam");
        let mut messages = vec![];
        for _ in 0..200 {
            messages.extend(far.want(&sid, &feed));
        }
        for _ in 0..199 {
            messages.extend(far.unwant(&sid, &feed));
        }
        assert_eq!(messages.len(), 1, "{messages:?}");
        assert_eq!(
            far.unwant(&sid, &feed),
            Some(Control::Unsubscribe {
                sid: sid.clone(),
                feed_id: feed.clone()
            })
        );
        assert_eq!(far.unwant(&sid, &feed), None, "no subscriber left to leave");
    }

    #[test]
    fn the_sender_numbers_each_feed_once_and_never_reuses_a_channel() {
        let mut near = TrunkRoutes::default();
        let mut far = TrunkRoutes::default();
        let (sid, cam) = key("cam");
        let (_, mic) = key("mic");
        far.want(&sid, &cam);
        far.want(&sid, &mic);
        let c0 = near.handle_subscribe(&sid, &cam).unwrap();
        assert_eq!(
            near.handle_subscribe(&sid, &cam),
            None,
            "asked twice, sent once"
        );
        let c1 = near.handle_subscribe(&sid, &mic).unwrap();
        assert_ne!(c0, c1);
        far.handle_open(c0, &sid, &cam).unwrap();
        far.handle_open(c1, &sid, &mic).unwrap();
        assert_eq!(far.feed_of(c0), Some(&key("cam")));
        assert_eq!(
            near.handle_unsubscribe(&sid, &cam),
            Some(Control::Close { channel: c0 })
        );
        assert_eq!(far.handle_close(c0), Some(key("cam")));
        assert_eq!(
            far.feed_of(c0),
            None,
            "a late datagram of a closed channel is dropped"
        );
        // Asked again: a new channel.
        let c2 = near.handle_subscribe(&sid, &cam).unwrap();
        assert!(c2 > c1);
        assert_eq!(
            far.handle_open(c0, &sid, &cam),
            Err(RouteError::ChannelReused(c0))
        );
        far.handle_open(c2, &sid, &cam).unwrap();
        assert_eq!(near.sent(), 2);
    }

    #[test]
    fn a_channel_for_a_feed_not_asked_for_is_refused() {
        let mut far = TrunkRoutes::default();
        let (sid, cam) = key("cam");
        assert!(matches!(
            far.handle_open(0, &sid, &cam),
            Err(RouteError::NotWanted { .. })
        ));
        assert_eq!(far.feed_of(0), None);
    }
}
