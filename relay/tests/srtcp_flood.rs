//! SRTCP from a connected participant's address cannot grow the relay's memory: 100,000
//! packets with fresh sender SSRCs, forged or properly protected, leave the relay's live heap
//! flat, and the participant's media and feedback keep working.
//!
//! A counting global allocator measures the bytes the worker keeps allocated across its calls
//! (allocations minus frees while the worker runs). This file holds a single test, so no
//! other test thread allocates while it counts.

// A global allocator is an unsafe trait; this test binary's is a pass-through to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use relay::engine::srtp::SrtpProfile;
use relay::fuzzing::{harness_with_profile, Harness, PUBLISHER_SSRC};
use relay::sfu::worker::Output;
use relay::stats::DropReason;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const FLOOD: u32 = 100_000;

/// Hand one datagram from `from` to the worker, counting what the worker keeps allocated;
/// returns how many datagrams it sent.
fn receive(h: &mut Harness, from: std::net::SocketAddr, datagram: &[u8]) -> usize {
    COUNTING.store(true, Ordering::SeqCst);
    h.worker.handle_receive(h.now, None, from, datagram);
    let mut sent = 0;
    while let Some(o) = h.worker.poll_output() {
        if let Output::Transmit(t) = o {
            sent += 1;
            h.worker.recycle(t.contents);
        }
    }
    COUNTING.store(false, Ordering::SeqCst);
    sent
}

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(seq as u32 * 3000).to_be_bytes());
    p.extend_from_slice(&PUBLISHER_SSRC.to_be_bytes());
    p.extend(std::iter::repeat_n(0x5a, 500));
    p
}

/// An empty receiver report from `ssrc`.
fn receiver_report(ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p
}

#[test]
fn srtcp_with_fresh_ssrcs_leaves_memory_flat() {
    for profile in [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80] {
        flood(profile);
    }
}

fn flood(profile: SrtpProfile) {
    let mut h = harness_with_profile(1, profile);
    let subscriber = h.subscribers[0];
    let publisher = h.publisher;
    let mut seq = 1u16;
    // One packet every 5 ms: below what the subscriber's pacer lets through at once.
    let mut forward = |h: &mut Harness| {
        h.now += std::time::Duration::from_millis(5);
        let mut p = rtp(seq);
        seq += 1;
        h.clients[0].protect_rtp(&mut p).expect("seal");
        receive(h, publisher, &p)
    };
    // Warm-up: the feed starts, the pool fills, the subscriber's own RTCP SSRC is known.
    for _ in 0..50 {
        assert_eq!(forward(&mut h), 1);
    }
    let own = h.clients[1]
        .protect_rtcp(&receiver_report(7))
        .expect("seal")
        .to_vec();
    receive(&mut h, subscriber, &own);
    LIVE.store(0, Ordering::SeqCst);

    // Forged: a fresh sender SSRC each, a made-up index and tag.
    let tag_len = match profile {
        SrtpProfile::AeadAes128Gcm => 16,
        SrtpProfile::Aes128CmHmacSha1_80 => 10,
    };
    for i in 0..FLOOD {
        let mut p = receiver_report(0x1000_0000 + i);
        p.extend_from_slice(&(0x8000_0000 | i).to_be_bytes());
        p.extend(std::iter::repeat_n(i as u8, tag_len));
        receive(&mut h, subscriber, &p);
    }
    let forged = LIVE.load(Ordering::SeqCst);
    let stats = h.worker.stats();
    assert_eq!(
        stats.dropped(DropReason::SrtpAuthFailed),
        u64::from(FLOOD),
        "{profile:?}"
    );

    // Authentic: protected with the participant's real key, a fresh sender SSRC each. The
    // relay keeps replay state for a bounded number of them and refuses the rest.
    for i in 0..FLOOD {
        let p = h.clients[1]
            .protect_rtcp(&receiver_report(0x2000_0000 + i))
            .expect("seal")
            .to_vec();
        receive(&mut h, subscriber, &p);
    }
    let authentic = LIVE.load(Ordering::SeqCst) - forged;
    println!("{profile:?}: live heap grew {forged} bytes over {FLOOD} forged packets, {authentic} over {FLOOD} authentic ones");
    assert!(
        forged < 4096,
        "{profile:?}: {forged} bytes kept after {FLOOD} forged SRTCP packets"
    );
    assert!(
        authentic < 64 * 1024,
        "{profile:?}: {authentic} bytes kept after {FLOOD} SRTCP packets with fresh SSRCs"
    );

    // The participant carries on: media reaches it, its own feedback is still accepted.
    for _ in 0..50 {
        assert_eq!(forward(&mut h), 1, "{profile:?}: media after the flood");
    }
    let before = h.worker.stats().total_dropped();
    let own = h.clients[1]
        .protect_rtcp(&receiver_report(7))
        .expect("seal")
        .to_vec();
    receive(&mut h, subscriber, &own);
    assert_eq!(
        h.worker.stats().total_dropped(),
        before,
        "{profile:?}: the subscriber's own RTCP after the flood"
    );
}
