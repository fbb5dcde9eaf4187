//! A feed's consumers on one core, with each found by its subscriber in constant time.
//!
//! Forwarding walks the consumers in order; everything else (the layer allocator every
//! 250 ms, a receiver report's round-trip time, a NACK, a subscription's change) looks up one
//! subscriber's. A scan of a feed of N subscribers, once per subscriber, is N² per look: in a
//! broadcast of 500 it was 3% of a core's user time, and a webinar of thousands would be
//! bound by it. So the list keeps an index beside it, kept right by the only three ways the
//! list changes: a consumer added, one removed by its place, one removed by its subscriber.

use std::ops::{Index, IndexMut};

use crate::ids::ParticipantKey;
use crate::sfu::consumer::Consumer;
use crate::FastMap;

/// A feed's consumers, at most one per subscriber.
#[derive(Debug, Default)]
pub struct Consumers {
    list: Vec<Consumer>,
    /// Where in `list` each subscriber's consumer is.
    by_subscriber: FastMap<ParticipantKey, usize>,
}

impl Consumers {
    /// Add `consumer` and say where it is, unless its subscriber has one already (None: the
    /// one there stays).
    pub fn push(&mut self, consumer: Consumer) -> Option<usize> {
        if self.by_subscriber.contains_key(&consumer.subscriber) {
            return None;
        }
        let index = self.list.len();
        self.by_subscriber.insert(consumer.subscriber, index);
        self.list.push(consumer);
        Some(index)
    }

    /// Remove the consumer at `index`; the last one takes its place, as `Vec::swap_remove`.
    pub fn swap_remove(&mut self, index: usize) -> Consumer {
        let removed = self.list.swap_remove(index);
        self.by_subscriber.remove(&removed.subscriber);
        if let Some(moved) = self.list.get(index) {
            self.by_subscriber.insert(moved.subscriber, index);
        }
        removed
    }

    /// Remove `subscriber`'s consumer, if it has one.
    pub fn remove(&mut self, subscriber: ParticipantKey) -> Option<Consumer> {
        let index = self.position(subscriber)?;
        Some(self.swap_remove(index))
    }

    /// Where `subscriber`'s consumer is.
    pub fn position(&self, subscriber: ParticipantKey) -> Option<usize> {
        self.by_subscriber.get(&subscriber).copied()
    }

    /// Whether `subscriber` has a consumer here.
    pub fn contains(&self, subscriber: ParticipantKey) -> bool {
        self.by_subscriber.contains_key(&subscriber)
    }

    /// `subscriber`'s consumer.
    pub fn find(&self, subscriber: ParticipantKey) -> Option<&Consumer> {
        self.list.get(self.position(subscriber)?)
    }

    /// `subscriber`'s consumer, to change.
    pub fn find_mut(&mut self, subscriber: ParticipantKey) -> Option<&mut Consumer> {
        let index = self.position(subscriber)?;
        self.list.get_mut(index)
    }

    /// The consumer at `index`.
    pub fn get(&self, index: usize) -> Option<&Consumer> {
        self.list.get(index)
    }

    /// The consumer at `index`, to change.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut Consumer> {
        self.list.get_mut(index)
    }

    /// In order.
    pub fn iter(&self) -> std::slice::Iter<'_, Consumer> {
        self.list.iter()
    }

    /// In order, to change (not their subscribers: the index would no longer hold).
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Consumer> {
        self.list.iter_mut()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// None.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

impl Index<usize> for Consumers {
    type Output = Consumer;

    fn index(&self, index: usize) -> &Consumer {
        &self.list[index]
    }
}

impl IndexMut<usize> for Consumers {
    fn index_mut(&mut self, index: usize) -> &mut Consumer {
        &mut self.list[index]
    }
}

impl IntoIterator for Consumers {
    type Item = Consumer;
    type IntoIter = std::vec::IntoIter<Consumer>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.into_iter()
    }
}

impl<'a> IntoIterator for &'a Consumers {
    type Item = &'a Consumer;
    type IntoIter = std::slice::Iter<'a, Consumer>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

impl<'a> IntoIterator for &'a mut Consumers {
    type Item = &'a mut Consumer;
    type IntoIter = std::slice::IterMut<'a, Consumer>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Ssrc;

    fn consumer(subscriber: u64) -> Consumer {
        Consumer::new(ParticipantKey(subscriber), Ssrc(subscriber as u32), 1, 2)
    }

    /// Every subscriber's consumer is where the index says, and the index names no other.
    fn check(c: &Consumers) {
        assert_eq!(c.by_subscriber.len(), c.len());
        for (i, x) in c.iter().enumerate() {
            assert_eq!(c.position(x.subscriber), Some(i));
        }
    }

    #[test]
    fn one_consumer_per_subscriber() {
        let mut c = Consumers::default();
        assert_eq!(c.push(consumer(1)), Some(0));
        assert_eq!(c.push(consumer(2)), Some(1));
        let mut second = consumer(1);
        second.ssrc = Ssrc(99);
        assert_eq!(c.push(second), None);
        assert_eq!(c.len(), 2);
        assert_eq!(c.find(ParticipantKey(1)).map(|x| x.ssrc), Some(Ssrc(1)));
        check(&c);
    }

    proptest::proptest! {
        /// Whatever is added and removed, in whatever order, each subscriber's consumer is
        /// found where it is, and one removed is found no more.
        #[test]
        fn the_index_follows_every_change(
            ops in proptest::collection::vec((0u8..3, 0u64..40), 0..300),
        ) {
            let mut c = Consumers::default();
            let mut model: Vec<u64> = Vec::new();
            for (op, n) in ops {
                match op {
                    0 => {
                        let added = c.push(consumer(n)).is_some();
                        proptest::prop_assert_eq!(added, !model.contains(&n));
                        if added {
                            model.push(n);
                        }
                    }
                    1 if !c.is_empty() => {
                        let index = n as usize % c.len();
                        let removed = c.swap_remove(index);
                        proptest::prop_assert_eq!(removed.subscriber.0, model.swap_remove(index));
                    }
                    _ => {
                        let removed = c.remove(ParticipantKey(n)).map(|x| x.subscriber.0);
                        let expected = model.iter().position(|&m| m == n).map(|i| model.swap_remove(i));
                        proptest::prop_assert_eq!(removed, expected);
                    }
                }
                check(&c);
                for &m in &model {
                    proptest::prop_assert_eq!(c.find(ParticipantKey(m)).map(|x| x.subscriber.0), Some(m));
                }
                proptest::prop_assert!(!c.contains(ParticipantKey(1000)));
            }
        }
    }
}
