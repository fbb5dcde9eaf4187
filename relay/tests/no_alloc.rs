//! The forwarding path does not allocate once traffic is steady: every packet buffer comes
//! from the core's pool and goes back to it after the send.
//!
//! A counting global allocator watches a fan-out of SRTP protected packets (both profiles)
//! through the worker (the whole per-packet path: demux, routing, SRTP unprotect, header
//! rewrite, MID extension, SRTP protect, output queue, buffer return), and the same for a session
//! spread over two cores, where the origin core hands each decrypted packet to the other core
//! and gets the shared packet back for reuse once that core has sent its copies. This file
//! holds a single test, so no other test thread allocates while it counts.

// A global allocator is an unsafe trait; this test binary's is a pass-through to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use relay::engine::srtp::SrtpProfile;
use relay::fuzzing::{
    harness_with_profile, spread_harness, SpreadHarness, PUBLISHER_SSRC, TWCC_EXTENSION,
};
use relay::sfu::worker::Output;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A packet as a browser sends it: with a transport-wide sequence number, which the relay
/// records for the publisher's congestion feedback.
fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x90, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(seq as u32 * 3000).to_be_bytes());
    p.extend_from_slice(&PUBLISHER_SSRC.to_be_bytes());
    let transport = seq.wrapping_add(7).to_be_bytes();
    p.extend_from_slice(&[0xbe, 0xde, 0, 1, TWCC_EXTENSION << 4 | 1]);
    p.extend_from_slice(&[transport[0], transport[1], 0]);
    p.extend(std::iter::repeat_n(0x5a, 1200));
    p
}

#[test]
fn steady_forwarding_does_not_allocate() {
    for profile in [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80] {
        forward_without_allocating(profile);
        forward_across_cores_without_allocating(profile);
    }
}

fn forward_without_allocating(profile: SrtpProfile) {
    const FANOUT: usize = 10;
    /// Packets forwarded at once: a keyframe, which the subscribers' pacers spread.
    const BURST: usize = 20;
    ALLOCATIONS.store(0, Ordering::SeqCst);
    let mut h = harness_with_profile(FANOUT, profile);
    // Sealed before counting: the test's own packets are not the relay's allocations.
    let packets: Vec<Vec<u8>> = (1..=340u16)
        .map(|seq| {
            let mut p = rtp(seq);
            h.clients[0].protect_rtp(&mut p).expect("seal");
            p
        })
        .collect();
    let mut sent = Vec::with_capacity(FANOUT * BURST);
    // What the I/O layer does: take what is sent, give the buffers back after the kernel took
    // them. Returns how many RTP datagrams left (RTCP reports go out too, as time passes).
    let mut drain = |h: &mut relay::fuzzing::Harness| relay::bench::drain(h, &mut sent);
    // One packet every 5 ms (2 Mbit/s), below what the pacers let through: each leaves at once.
    let steady = |h: &mut relay::fuzzing::Harness,
                  datagrams: &[Vec<u8>],
                  drain: &mut dyn FnMut(&mut relay::fuzzing::Harness) -> usize| {
        let mut n = 0;
        for p in datagrams {
            h.now += Duration::from_millis(5);
            h.worker.handle_receive(h.now, None, h.publisher, p);
            let out = drain(h);
            assert_eq!(out, FANOUT);
            n += out;
        }
        n
    };
    // A burst at one instant: the pacers hold most of it, and the timer lets it go.
    let burst = |h: &mut relay::fuzzing::Harness,
                 datagrams: &[Vec<u8>],
                 drain: &mut dyn FnMut(&mut relay::fuzzing::Harness) -> usize| {
        h.now += Duration::from_millis(5);
        let mut n = 0;
        for p in datagrams {
            h.worker.handle_receive(h.now, None, h.publisher, p);
            n += drain(h);
        }
        assert!(n < datagrams.len() * FANOUT, "{n} left at once");
        while let Some(at) = h
            .worker
            .poll_timeout()
            .filter(|_| n < datagrams.len() * FANOUT)
        {
            h.now = h.now.max(at);
            h.worker.handle_timeout(h.now);
            n += drain(h);
        }
        n
    };
    // Warm-up: the first packet starts the feed (an event) and fills the pool and the
    // pacers' queues.
    steady(&mut h, &packets[..100], &mut drain);
    burst(&mut h, &packets[100..100 + BURST], &mut drain);
    h.now += Duration::from_millis(500);
    let pooled = h.worker.stats().buffers_allocated;
    let paced = h.worker.stats().rtp_paced;

    COUNTING.store(true, Ordering::SeqCst);
    let mut forwarded = steady(&mut h, &packets[120..320], &mut drain);
    COUNTING.store(false, Ordering::SeqCst);
    // RTCP reports, due every second, are built with the rtcp crate, which allocates: they
    // go out here, not while the burst is counted.
    h.worker.handle_timeout(h.now);
    drain(&mut h);
    COUNTING.store(true, Ordering::SeqCst);
    forwarded += burst(&mut h, &packets[320..320 + BURST], &mut drain);
    COUNTING.store(false, Ordering::SeqCst);

    assert_eq!(forwarded, (200 + BURST) * FANOUT);
    assert!(h.worker.stats().rtp_paced > paced);
    assert_eq!(h.worker.stats().total_dropped(), 0);
    assert_eq!(h.worker.stats().buffers_allocated, pooled);
    assert_eq!(
        ALLOCATIONS.load(Ordering::SeqCst),
        0,
        "allocations while forwarding {forwarded} packets with {profile:?}"
    );
}

fn forward_across_cores_without_allocating(profile: SrtpProfile) {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    let mut h = spread_harness(profile);
    let packets: Vec<Vec<u8>> = (1..=300u16)
        .map(|seq| {
            let mut p = rtp(seq);
            h.origin.clients[0].protect_rtp(&mut p).expect("seal");
            p
        })
        .collect();
    let far = h.sink_subscriber;
    // One packet through both cores, as their I/O layers would move it; returns the copies
    // each core sent.
    // One packet every 5 ms: below what the subscribers' pacers let through at once.
    let forward = |h: &mut SpreadHarness, datagram: &[u8]| {
        h.origin.now += Duration::from_millis(5);
        let (now, publisher) = (h.origin.now, h.origin.publisher);
        h.origin
            .worker
            .handle_receive(now, None, publisher, datagram);
        let (mut here, mut there) = (0, 0);
        while let Some(o) = h.origin.worker.poll_output() {
            match o {
                Output::Transmit(t) => {
                    here += 1;
                    h.origin.worker.recycle(t.contents);
                }
                Output::CrossCore { core: 1, message } => {
                    h.sink.handle_cross_core(now, message);
                    while let Some(o) = h.sink.poll_output() {
                        if let Output::Transmit(t) = o {
                            assert_eq!(t.destination, far);
                            there += 1;
                            h.sink.recycle(t.contents);
                        }
                    }
                }
                _ => {}
            }
        }
        (here, there)
    };
    for p in &packets[..100] {
        assert_eq!(forward(&mut h, p), (1, 1));
    }
    let pooled = (
        h.origin.worker.stats().buffers_allocated,
        h.sink.stats().buffers_allocated,
    );

    COUNTING.store(true, Ordering::SeqCst);
    let mut forwarded = (0, 0);
    for p in &packets[100..] {
        let (here, there) = forward(&mut h, p);
        forwarded = (forwarded.0 + here, forwarded.1 + there);
    }
    COUNTING.store(false, Ordering::SeqCst);

    assert_eq!(forwarded, (200, 200));
    assert_eq!(h.origin.worker.stats().total_dropped(), 0);
    assert_eq!(h.sink.stats().total_dropped(), 0);
    assert_eq!(h.sink.stats().cross_core_rtp_in, 300);
    assert_eq!(
        (
            h.origin.worker.stats().buffers_allocated,
            h.sink.stats().buffers_allocated
        ),
        pooled
    );
    assert_eq!(
        ALLOCATIONS.load(Ordering::SeqCst),
        0,
        "allocations while forwarding 200 packets across two cores with {profile:?}"
    );
}
