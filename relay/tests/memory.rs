//! What a subscriber costs a core in memory: the worker's state for one more subscriber of a
//! feed (its participant and transport, SRTP contexts, ICE, the subscription's consumer and
//! rewriter, its pacer, its transport-wide send history and bandwidth estimator), measured as
//! the heap bytes still allocated after 400 packets were forwarded to 20 and to 120
//! subscribers: first silent, then each sending transport-wide feedback every 50 ms, as
//! browsers do, so that its estimator runs; and what a keyframe paced out to them adds. The
//! feed's packet cache is shared by its subscribers and not counted per subscriber; the DTLS
//! association, held beside the worker by the I/O layer, is measured by the load generator's
//! RSS instead.
//!
//! A counting global allocator keeps the bytes live; this file holds a single test, so no
//! other test thread allocates while it counts.

// A global allocator is an unsafe trait; this test binary's is a pass-through to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};

use relay::bench::FanOut;
use relay::engine::srtp::SrtpProfile;
use relay::engine::twcc::TwccReceiver;

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

/// [`live_bytes`], with every subscriber sending transport-wide feedback every 10 packets
/// (50 ms), so that its estimator runs as a browser's feedback makes it. The subscribers'
/// own receivers are dropped before counting.
fn live_bytes_with_feedback(subscribers: usize) -> (i64, u64) {
    let before = LIVE.load(Ordering::SeqCst);
    let mut fan_out = FanOut::new(subscribers, SrtpProfile::AeadAes128Gcm);
    let mut receivers: Vec<TwccReceiver> = (0..subscribers).map(|_| TwccReceiver::new()).collect();
    let copies: usize = (0..400)
        .map(|k| fan_out.forward_with_feedback(&mut receivers, k % 10 == 9))
        .sum();
    // (Copies its pacer holds at the end, and probes, make some more or fewer.)
    assert!(copies >= 360 * subscribers, "{copies} copies");
    drop(receivers);
    let held = LIVE.load(Ordering::SeqCst) - before;
    let taken = fan_out.feedback_taken();
    drop(fan_out);
    (held, taken)
}

/// Packets of a keyframe in [`burst_bytes`]: 48 KiB, about what a 720p keyframe takes.
const KEYFRAME: usize = 40;

/// A core with one publisher and `subscribers` subscribers, after 400 packets, gets a keyframe
/// at one instant, then another: the copies of the first that wait in the subscribers'
/// pacers, and the heap bytes that the second, held back whole, takes on.
fn burst_bytes(subscribers: usize) -> (usize, i64) {
    let mut fan_out = FanOut::new(subscribers, SrtpProfile::AeadAes128Gcm);
    for _ in 0..400 {
        let packet = fan_out.prepare();
        fan_out.run(&packet);
    }
    let waiting = KEYFRAME * subscribers - fan_out.burst(KEYFRAME);
    let before = LIVE.load(Ordering::SeqCst);
    assert_eq!(
        fan_out.burst(KEYFRAME),
        0,
        "a pacer with a queue holds everything"
    );
    let held = LIVE.load(Ordering::SeqCst) - before;
    drop(fan_out);
    (waiting, held)
}

/// Under 64 KiB per subscriber for everything the worker keeps of it.
const BUDGET: i64 = 64 * 1024;

#[test]
fn a_subscriber_costs_the_worker_less_than_64_kib_with_a_keyframe_waiting_in_its_pacer() {
    let (few, many) = (live_bytes(20), live_bytes(120));
    let per_subscriber = (many - few) / 100;
    println!(
        "the worker holds {per_subscriber} bytes per subscriber ({few} for 20, {many} for 120)"
    );
    // With the estimator fed, as every browser's feedback feeds it.
    let ((few_fed, few_taken), (many_fed, many_taken)) =
        (live_bytes_with_feedback(20), live_bytes_with_feedback(120));
    let fed = (many_fed - few_fed) / 100;
    println!(
        "with feedback, {fed} bytes per subscriber ({few_fed} for 20, {many_fed} for 120; \
         {few_taken} and {many_taken} feedback messages taken)"
    );
    // About one message every 50 ms from each.
    assert!(
        many_taken >= 120 * 30,
        "{many_taken} feedback messages taken"
    );
    // A keyframe paced out to every subscriber at once: what its waiting copies hold. Each
    // refers to the feed's cached packet; a copy of its own would take a 2 KiB buffer.
    let ((few_waiting, few_held), (many_waiting, many_held)) = (burst_bytes(20), burst_bytes(120));
    let per_copy = (many_held - few_held) / (100 * KEYFRAME) as i64;
    let waiting = (many_waiting - few_waiting) / 100;
    let backlog = per_copy * waiting as i64;
    println!(
        "a keyframe of {KEYFRAME} packets leaves {waiting} copies waiting per subscriber, \
         {per_copy} bytes each: {backlog} bytes per subscriber"
    );
    assert!(waiting >= KEYFRAME / 2, "{waiting} copies wait");
    assert!(per_copy < 512, "{per_copy} bytes per waiting copy");
    assert!(
        fed + backlog < BUDGET,
        "{fed} bytes per subscriber with feedback and {backlog} of waiting copies"
    );
}
