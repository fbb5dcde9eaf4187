//! Deadlines keyed by what they belong to (a participant, a feed), so that a core's wake-up
//! costs O(log n) per expired deadline instead of a scan of everything it owns.
//!
//! A binary heap with lazy deletion: each key has at most one *armed* deadline, kept in a map;
//! the heap may also hold entries that were disarmed or superseded, which are skipped when
//! they surface. Arming only ever moves a key's deadline earlier. A deadline that moves later
//! (consent refreshed by every ICE check, a report rescheduled) is left where it is: when it
//! fires, the owner looks at its real deadline and arms that, so a busy participant costs one
//! heap entry, not one per packet that extends its deadline.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// Deadlines of keys `K`.
#[derive(Debug)]
pub struct Deadlines<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
    armed: HashMap<K, Instant>,
}

impl<K: Copy + Eq + Hash + Ord> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines {
            heap: BinaryHeap::new(),
            armed: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash + Ord> Deadlines<K> {
    /// Make `key` due at `at` at the latest: nothing changes if it is already armed for `at` or
    /// earlier.
    pub fn arm(&mut self, key: K, at: Instant) {
        if self.armed.get(&key).is_some_and(|t| *t <= at) {
            return;
        }
        self.armed.insert(key, at);
        self.heap.push(Reverse((at, key)));
        self.compact();
    }

    /// Forget `key`'s deadline (its owner went away).
    pub fn disarm(&mut self, key: K) {
        if self.armed.remove(&key).is_some() {
            self.discard_stale();
        }
    }

    /// The earliest armed deadline.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// A key whose deadline is at or before `now`, disarmed; None when nothing is due.
    pub fn pop_due(&mut self, now: Instant) -> Option<K> {
        self.discard_stale();
        let Reverse((at, key)) = *self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        self.armed.remove(&key);
        self.discard_stale();
        Some(key)
    }

    /// Keys with a deadline.
    pub fn len(&self) -> usize {
        self.armed.len()
    }

    /// Whether no key has a deadline.
    pub fn is_empty(&self) -> bool {
        self.armed.is_empty()
    }

    /// Entries in the heap, stale ones included (at most about twice [`Deadlines::len`]).
    pub fn entries(&self) -> usize {
        self.heap.len()
    }

    /// Drop superseded entries from the top, so that [`Deadlines::next`] is a live deadline.
    fn discard_stale(&mut self) {
        while let Some(Reverse((at, key))) = self.heap.peek() {
            if self.armed.get(key) == Some(at) {
                break;
            }
            self.heap.pop();
        }
    }

    /// Rebuild the heap from the armed deadlines once stale entries outnumber live ones, so
    /// that memory stays proportional to the keys.
    fn compact(&mut self) {
        if self.heap.len() > 2 * self.armed.len() + 64 {
            self.heap = self
                .armed
                .iter()
                .map(|(key, at)| Reverse((*at, *key)))
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_first_and_only_earlier_rearms_count() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = Deadlines::default();
        d.arm(1u32, ms(30));
        d.arm(2, ms(10));
        d.arm(3, ms(20));
        // Later: ignored (the owner re-arms when the earlier one fires); earlier: taken.
        d.arm(2, ms(50));
        d.arm(3, ms(5));
        assert_eq!(d.next(), Some(ms(5)));
        assert_eq!(d.pop_due(ms(4)), None);
        assert_eq!(d.pop_due(ms(10)), Some(3));
        assert_eq!(d.pop_due(ms(10)), Some(2));
        assert_eq!(d.pop_due(ms(10)), None);
        // 3's superseded entry at 20 ms is gone, not reported again.
        assert_eq!(d.next(), Some(ms(30)));
        d.disarm(1);
        assert_eq!(d.next(), None);
        assert!(d.is_empty());
    }

    #[test]
    fn stale_entries_stay_bounded() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        for round in 0..1000u64 {
            for key in 0..10u32 {
                // Every round moves every deadline earlier: a new entry each time.
                d.arm(key, t0 + Duration::from_secs(10_000 - round));
            }
        }
        assert_eq!(d.len(), 10);
        assert!(d.entries() <= 2 * 10 + 64 + 1, "{} entries", d.entries());
        let mut due = Vec::new();
        while let Some(k) = d.pop_due(t0 + Duration::from_secs(10_000)) {
            due.push(k);
        }
        due.sort_unstable();
        assert_eq!(due, (0..10).collect::<Vec<_>>());
    }
}
