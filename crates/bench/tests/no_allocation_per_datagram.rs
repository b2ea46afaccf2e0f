//! A server forwarding steadily allocates nothing per datagram it sends. Each outgoing
//! datagram is encrypted into a buffer the worker gave back after copying the previous one
//! into its send batch (`str0m::net::recycle`); the one allocation left per packet is the
//! received payload, which every subscriber's copy shares. Without recycling, the shard would
//! allocate once more for every subscriber of every packet.
//!
//! Deterministic: shards and str0m clients in memory; allocations are counted on this test's
//! thread only, and only while the shard takes packets in and is drained.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use pylon_bench::sim::{self, Net};
use pylon_core::shard::Output;
use str0m::media::MediaKind;
use str0m::Input;

struct CountingAlloc;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// One more allocation, if this thread is counting.
fn count() {
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            ALLOCATIONS.with(|a| a.set(a.get() + 1));
        }
    });
}

#[allow(unsafe_code)] // GlobalAlloc is an unsafe trait; every call forwards to System.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// What one shard allocated while forwarding 300 packets of one video track to
/// `subscribers`, after a warm-up: (packets in, datagrams out, allocations).
fn forward(subscribers: usize) -> (u64, u64, u64) {
    let mut net = Net::new(1, Instant::now());
    let alice = net.join(0, "r", "alice");
    let subscribers: Vec<usize> = (0..subscribers)
        .map(|i| net.join(0, "r", &format!("sub-{i}")))
        .collect();
    net.run_for(Duration::from_millis(200));
    let mid = net.publish(alice, MediaKind::Video, "cam");
    net.run_for(Duration::from_secs(1));

    // Warm up with timers running: every subscriber receives, and the send queues and resend
    // caches reach the size this rate keeps them at.
    let mut seq = 1u64;
    for _ in 0..400 {
        net.write_rtp(alice, mid, seq, seq as u32 * 3000, sim::vp8_packet(seq));
        seq += 1;
        net.run_for(Duration::from_millis(10));
    }
    for &s in &subscribers {
        assert!(
            net.clients[s].subscriber.rtp_received > 0,
            "subscriber {s} never received"
        );
    }

    // Measured: batches of 10 packets, each batch taken in and drained by the shard as a
    // worker turn would, the datagrams then handed on (and their buffers given back).
    let server = sim::shard_addr(0);
    let (mut packets_in, mut datagrams_out) = (0u64, 0u64);
    let mut out = Vec::with_capacity(1024);
    ALLOCATIONS.with(|a| a.set(0));
    for _ in 0..30 {
        for _ in 0..10 {
            net.write_rtp(alice, mid, seq, seq as u32 * 3000, sim::vp8_packet(seq));
            seq += 1;
        }
        let now = net.now;
        let publisher = &mut net.clients[alice].publisher;
        publisher.rtc.handle_input(Input::Timeout(now)).expect("timeout");
        let mut input = std::collections::VecDeque::new();
        Net::poll_peer(publisher, &mut input);
        COUNTING.with(|c| c.set(true));
        for (src, dst, data) in input.iter().filter(|(_, dst, _)| *dst == server) {
            packets_in += 1;
            let _ = net.shards[0].receive(now, *src, *dst, data);
            if net.shards[0].poll_timeout() <= now {
                net.shards[0].handle_timeout(now);
            }
            while let Some(o) = net.shards[0].poll_output() {
                out.push(o);
            }
        }
        COUNTING.with(|c| c.set(false));
        for o in out.drain(..) {
            if let Output::Transmit(t) = o {
                datagrams_out += 1;
                net.to_clients
                    .push_back((t.source, t.destination, t.contents.to_vec()));
                str0m::net::recycle(t.contents);
            }
        }
        net.run_for(Duration::from_millis(100));
    }
    (packets_in, datagrams_out, ALLOCATIONS.with(Cell::get))
}

#[test]
fn more_subscribers_allocate_nothing_more_per_packet() {
    pylon_testkit::init_test_logging();
    let (in_1, out_1, alloc_1) = forward(1);
    let (in_5, out_5, alloc_5) = forward(5);
    eprintln!("1 subscriber: {in_1} in, {out_1} out, {alloc_1} allocations");
    eprintln!("5 subscribers: {in_5} in, {out_5} out, {alloc_5} allocations");
    assert!(
        out_5 >= in_5 * 5 * 9 / 10,
        "the packets were forwarded to every subscriber ({in_5} in, {out_5} out)"
    );
    // Per packet received: its payload. Reports (RTCP) and caches growing now and then add a
    // little; four more subscribers add nothing per packet. Without the buffers given back,
    // each of the 4 x 300 more datagrams would be one more allocation.
    assert!(
        alloc_5 <= in_5 * 3 / 2,
        "{alloc_5} allocations for {in_5} packets in and {out_5} datagrams out"
    );
    assert!(
        alloc_5 <= alloc_1 + in_5 / 5,
        "four more subscribers: {alloc_1} -> {alloc_5} allocations for {in_5} packets in"
    );
}
