//! A fixed-capacity list kept inline, so that reading a descriptor allocates nothing.

use std::fmt;
use std::ops::{Deref, DerefMut};

/// Up to `N` values kept inline, so that reading a descriptor allocates nothing and no count
/// read from the wire can make it grow past `N`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Bounded<T, const N: usize> {
    len: u8,
    items: [T; N],
}

impl<T: Copy + Default, const N: usize> Bounded<T, N> {
    pub(super) fn new() -> Self {
        const { assert!(N <= u8::MAX as usize, "the count is a u8") };
        Bounded {
            len: 0,
            items: [T::default(); N],
        }
    }

    /// Append `v`; false (and nothing appended) when full.
    pub(super) fn push(&mut self, v: T) -> bool {
        let Some(slot) = self.items.get_mut(usize::from(self.len)) else {
            return false;
        };
        *slot = v;
        self.len += 1;
        true
    }
}

impl<T: Copy + Default, const N: usize> Default for Bounded<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> Deref for Bounded<T, N> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // `push` keeps len at most N, so the range is always there.
        self.items.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

impl<T, const N: usize> DerefMut for Bounded<T, N> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.items
            .get_mut(..usize::from(self.len))
            .unwrap_or(&mut [])
    }
}

impl<T: fmt::Debug, const N: usize> fmt::Debug for Bounded<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}
