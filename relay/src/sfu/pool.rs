//! Packet buffers that go round instead of through the allocator.
//!
//! Every forwarded copy needs a buffer of its own until the kernel has taken it. The worker
//! takes one from here, the I/O layer hands it back after the send, and in steady state the
//! forwarding path never allocates. The pool is per core (no sharing, no locks).

/// Capacity of a pooled buffer: the largest datagram a WebRTC peer sends stays under the path
/// MTU (~1500), plus room for a rewritten MID extension and the SRTP tag.
pub const BUFFER_CAPACITY: usize = 2048;

/// A free list of equally sized byte buffers.
#[derive(Debug)]
pub struct BufferPool {
    free: Vec<Vec<u8>>,
    max_free: usize,
    allocated: u64,
}

impl BufferPool {
    /// A pool that keeps at most `max_free` idle buffers (more are freed when returned, so a
    /// burst does not pin its peak memory forever).
    pub fn new(max_free: usize) -> Self {
        BufferPool {
            free: Vec::with_capacity(max_free),
            max_free,
            allocated: 0,
        }
    }

    /// An empty buffer with at least [`BUFFER_CAPACITY`] bytes of capacity.
    pub fn take(&mut self) -> Vec<u8> {
        match self.free.pop() {
            Some(b) => b,
            None => {
                self.allocated += 1;
                Vec::with_capacity(BUFFER_CAPACITY)
            }
        }
    }

    /// Hand a buffer back. Buffers that are too small to be useful (not from this pool) are
    /// dropped.
    pub fn give(&mut self, mut buffer: Vec<u8>) {
        if self.free.len() < self.max_free && buffer.capacity() >= BUFFER_CAPACITY {
            buffer.clear();
            self.free.push(buffer);
        }
    }

    /// How many buffers this pool has ever allocated: flat in steady state.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    /// Idle buffers.
    pub fn idle(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_go_round() {
        let mut pool = BufferPool::new(2);
        let a = pool.take();
        let b = pool.take();
        let c = pool.take();
        assert_eq!(pool.allocated(), 3);
        assert!(a.capacity() >= BUFFER_CAPACITY);
        pool.give(a);
        pool.give(b);
        pool.give(c); // over max_free: freed
        assert_eq!(pool.idle(), 2);
        let mut d = pool.take();
        assert!(d.is_empty());
        d.extend_from_slice(&[1, 2, 3]);
        pool.give(d);
        assert!(pool.take().is_empty());
        assert_eq!(pool.allocated(), 3);
        pool.give(Vec::new()); // foreign, too small
        assert_eq!(pool.idle(), 1);
    }
}
