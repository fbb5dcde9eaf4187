//! What a subscriber costs a core in memory: the worker's state for one more subscriber of a
//! feed (its participant and transport, SRTP contexts, ICE, the subscription's consumer and
//! rewriter, its pacer, its transport-wide send history and bandwidth estimator), measured as
//! the heap bytes still allocated after 400 packets were forwarded to 20 and to 120
//! subscribers. The feed's packet cache is shared by its subscribers and not counted per
//! subscriber; the DTLS association, held beside the worker by the I/O layer, is measured by
//! the load generator's RSS instead.
//!
//! A counting global allocator keeps the bytes live; this file holds a single test, so no
//! other test thread allocates while it counts.

// A global allocator is an unsafe trait; this test binary's is a pass-through to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};

use relay::bench::FanOut;
use relay::engine::srtp::SrtpProfile;

struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap bytes a core with one publisher and `subscribers` subscribers holds after 400
/// packets, 2 s of a 2 Mbit/s video feed.
fn live_bytes(subscribers: usize) -> i64 {
    let before = LIVE.load(Ordering::SeqCst);
    let mut fan_out = FanOut::new(subscribers, SrtpProfile::AeadAes128Gcm);
    for _ in 0..400 {
        let packet = fan_out.prepare();
        assert_eq!(fan_out.run(&packet), subscribers);
    }
    let held = LIVE.load(Ordering::SeqCst) - before;
    drop(fan_out);
    held
}

/// Under 64 KiB per subscriber for everything the worker keeps of it.
const BUDGET: i64 = 64 * 1024;

#[test]
fn a_subscriber_costs_the_worker_less_than_64_kib() {
    let (few, many) = (live_bytes(20), live_bytes(120));
    let per_subscriber = (many - few) / 100;
    println!(
        "the worker holds {per_subscriber} bytes per subscriber ({few} for 20, {many} for 120)"
    );
    assert!(
        per_subscriber < BUDGET,
        "{per_subscriber} bytes per subscriber"
    );
}
