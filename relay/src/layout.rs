//! How a session is laid out over the cores: control-plane state, never touched by packets.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::control::FeedDescription;
use crate::ids::{FeedId, Uid};
use crate::sfu::cross_core::FeedRoute;

/// How a session is laid out over the cores.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    /// The core it was created on; it never leaves it while it exists.
    pub(crate) home: usize,
    /// Cores holding part of it (home included).
    pub(crate) cores: BTreeSet<usize>,
    /// Each participant's core.
    pub(crate) participants: HashMap<Uid, usize>,
    /// Its feeds, where they come from and which other cores they flow to.
    pub(crate) feeds: HashMap<FeedId, PublishedFeed>,
    /// The dominant speaker's video feeds, for cores it extends to.
    pub(crate) speaker_feeds: Vec<FeedId>,
    /// Serialises multi-core changes to this session.
    pub(crate) ops: Arc<tokio::sync::Mutex<()>>,
}

impl Layout {
    /// A session with no one in it yet, on `home`.
    pub(crate) fn new(home: usize) -> Self {
        Layout {
            home,
            cores: BTreeSet::from([home]),
            participants: HashMap::new(),
            feeds: HashMap::new(),
            speaker_feeds: Vec::new(),
            ops: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Participants of the session on `core`.
    pub(crate) fn count_on(&self, core: usize) -> usize {
        self.participants.values().filter(|c| **c == core).count()
    }

    /// The core a new participant joins if one of the session's cores holds fewer than
    /// `limit` of its participants: home first, then the others in order. None means the
    /// session must spread to a core it is not on yet.
    pub(crate) fn core_with_room(&self, limit: usize) -> Option<usize> {
        std::iter::once(self.home)
            .chain(self.cores.iter().copied())
            .find(|c| self.count_on(*c) < limit)
    }

    /// The session's core holding the fewest of its participants (when every core of the
    /// machine already holds part of it and all are full).
    pub(crate) fn least_crowded(&self) -> usize {
        self.cores
            .iter()
            .copied()
            .min_by_key(|c| self.count_on(*c))
            .unwrap_or(self.home)
    }
}

/// A feed of the session: who publishes it, where it comes from, where it flows.
#[derive(Clone, Debug)]
pub(crate) struct PublishedFeed {
    /// The publisher.
    pub(crate) uid: Uid,
    /// Its origin core and keys there.
    pub(crate) route: FeedRoute,
    /// As declared.
    pub(crate) description: FeedDescription,
    /// Other cores it is forwarded to (they have subscribers of it).
    pub(crate) sinks: BTreeSet<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participants_fill_the_home_core_then_the_next() {
        let mut l = Layout::new(1);
        assert_eq!(l.core_with_room(2), Some(1));
        l.participants.insert(Uid::from("a"), 1);
        l.participants.insert(Uid::from("b"), 1);
        assert_eq!(l.core_with_room(2), None, "home full, no other core yet");
        l.cores.insert(0);
        l.participants.insert(Uid::from("c"), 0);
        assert_eq!(l.core_with_room(2), Some(0));
        l.participants.insert(Uid::from("d"), 0);
        assert_eq!(l.core_with_room(2), None);
        // Someone leaves the home core: it takes the next one again.
        l.participants.remove(&Uid::from("a"));
        assert_eq!(l.core_with_room(2), Some(1));
        assert_eq!(l.least_crowded(), 1);
    }
}
