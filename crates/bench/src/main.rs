//! Forwarding micro-benchmark: one publisher packet in, N subscriber packets out, in memory.
//!
//! A [`Shard`] and str0m client peers (one publisher, N subscribers) exchange datagrams by
//! function call on a virtual clock: no sockets, no threads, no wall time. After the real
//! LiveKit join/offer/answer/ICE/DTLS sequence, the publisher sends VP8 packets (Opus-sized
//! audio with `--audio`) and [`measured_forwarding`] hands them to the shard and drains what it
//! transmits. That function is what `valgrind --tool=callgrind
//! --toggle-collect=*measured_forwarding*` counts (instructions per forwarded packet), and a
//! counting allocator counts heap allocations made inside it. Run through `bench/forwarding.sh`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use livekit_protocol as lk;
use pylon_bench::arg;
use pylon_bench::sim::{self, Net, STEP};
use pylon_core::{Output, Shard};
use pylon_testkit::vp8;
use str0m::media::MediaKind;
use str0m::Input;

/// Counts allocations while [`COUNTING`] is set on this thread.
struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// With `--trace-allocs`: capture where this many more allocations happen.
    static TRACE_LEFT: Cell<u32> = const { Cell::new(0) };
    static TRACES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Record the caller of an allocation: the innermost frames in str0m or Pylon code.
fn trace_allocation() {
    if TRACE_LEFT.with(Cell::get) == 0 {
        return;
    }
    TRACE_LEFT.with(|t| t.set(t.get() - 1));
    // Allocations made while capturing are not counted (COUNTING is off meanwhile).
    COUNTING.with(|c| c.set(false));
    let bt = std::backtrace::Backtrace::force_capture().to_string();
    let frames: Vec<&str> = bt
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.contains(": ") && (l.contains("str0m") || l.contains("pylon_core") || l.contains("dimpl"))
        })
        .filter_map(|l| l.split_once(": ").map(|(_, f)| f))
        .take(3)
        .collect();

    TRACES.with(|t| t.borrow_mut().push(frames.join(" <- ")));
    COUNTING.with(|c| c.set(true));
}

#[allow(unsafe_code)] // GlobalAlloc is an unsafe trait; every call forwards to System.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            ALLOCATED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
            trace_allocation();
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            ALLOCATED_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
            trace_allocation();
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const PAYLOAD: usize = 1000;
/// Bytes of one audio packet's payload with `--audio`.
const AUDIO_PAYLOAD: usize = 100;

/// The measured section: the publisher's shard takes each datagram; relay messages go to the
/// other shards as the worker threads would hand them over, and everything every shard then
/// transmits is collected, as the runtime's socket loops would.
#[inline(never)]
fn measured_forwarding(shards: &mut [Shard], now: Instant, input: &[sim::Datagram], out: &mut Vec<Output>) {
    COUNTING.with(|c| c.set(true));
    for (src, dst, data) in input {
        let _ = shards[0].receive(now, *src, *dst, data);
        // As the worker does: drive what is due (str0m releases queued RTP on a timeout), and
        // what falls due meanwhile, up to its `TIMER_ROUNDS` rounds (with congestion control
        // on, the pacer asks for a timeout after every packet it releases).
        let mut rounds = 0;
        while shards[0].poll_timeout() <= now && rounds < pylon_server::worker::TIMER_ROUNDS {
            shards[0].handle_timeout(now);
            rounds += 1;
        }
        collect(shards, 0, now, out);
    }
    COUNTING.with(|c| c.set(false));
}

/// Drain shard `i`'s outputs into `out`, delivering relay messages to their shards (and what
/// those then output) on the way.
fn collect(shards: &mut [Shard], i: usize, now: Instant, out: &mut Vec<Output>) {
    while let Some(o) = shards[i].poll_output() {
        match o {
            Output::Relay(place, msg) => {
                let to = place.index as usize;
                shards[to].relay_input(now, pylon_core::ids::PlaceId::worker(i as u32), msg);
                collect(shards, to, now, out);
            }
            o => out.push(o),
        }
    }
}

fn main() {
    let subscribers = arg("--subscribers", 10);
    let packets = arg("--packets", 2000);
    // With `--places 2` the subscribers are spread round-robin over two shards (the publisher
    // on the first): each packet then also crosses a relay to the second.
    let places = arg("--places", 1).max(1);
    // With `--cc`, downlink congestion control is on (`rtc.congestion_control.enabled`): every
    // subscriber's connection runs str0m's estimator and leaky-bucket pacer.
    let cc = std::env::args().any(|a| a == "--cc");
    let mut net = if cc {
        Net::with_config(places, Instant::now(), |c| c.congestion_control.enabled = true)
    } else {
        Net::new(places, Instant::now())
    };
    let publisher = net.join(0, "bench", "publisher");
    for i in 0..subscribers {
        net.join(i % places, "bench", &format!("sub-{i}"));
    }
    // With `--audio` the publisher sends Opus-sized audio instead (100 bytes a packet, as
    // `pylon load-test` does): the per-packet work that does not grow with the payload.
    let audio = std::env::args().any(|a| a == "--audio");
    let mid = if audio {
        net.publish(publisher, MediaKind::Audio, "mic")
    } else {
        net.publish(publisher, MediaKind::Video, "cam")
    };
    // With `--idle-tracks K`, every subscriber also publishes K audio tracks that never send,
    // and every other subscriber subscribes to them: each subscriber's connection then holds
    // send streams that are idle, as in a meeting (two per other participant, most of them
    // idle at any moment), and per-subscriber work that walks its streams shows.
    let idle = arg("--idle-tracks", 0);
    for c in 1..=subscribers {
        for k in 0..idle {
            net.publish(c, MediaKind::Audio, &format!("idle-{k}"));
            // One negotiation at a time, as an SDK does.
            net.run_for(STEP * 10);
        }
    }
    net.run_for(std::time::Duration::from_secs(3));
    assert!(
        net.clients[publisher].publisher.connected,
        "publisher never connected"
    );

    // With `--temporal`, every packet is a frame of libwebrtc's three-layer temporal pattern
    // (T0 T2 T1 T2 ...) and every other subscriber asks for 8 fps: its forwarder sends only the
    // base layer and skips three packets in four (numbering closed over them, PictureIDs too).
    let temporal = std::env::args().any(|a| a == "--temporal");
    let mut seq = 1000u64;
    let mut ts = 0u32;
    let mut write = |net: &mut Net, keyframe: bool| {
        if audio {
            net.write_rtp(publisher, mid, seq, ts, vec![0x42u8; AUDIO_PAYLOAD]);
            seq += 1;
            ts = ts.wrapping_add(960);
            return;
        }
        let body = vec![0x42u8; PAYLOAD];
        let payload = if keyframe {
            vp8::keyframe_start(1280, 720, &body)
        } else {
            vp8::delta_start(&body)
        };
        let payload = if temporal {
            let n = seq - 1000;
            let (tid, sync) = vp8::temporal_pattern(n);
            let (tid, sync) = if keyframe { (0, false) } else { (tid, sync) };
            vp8::with_temporal(&payload, n as u16 & 0x7fff, (n / 4) as u8, tid, sync)
        } else {
            payload
        };
        net.write_rtp(publisher, mid, seq, ts, payload);
        seq += 1;
        ts = ts.wrapping_add(3000);
    };
    // Warm up: keyframes until every subscriber receives media (subscriptions negotiated,
    // forwarding started), then steady-state traffic so buffers reach their size.
    for round in 0..2000 {
        write(&mut net, round % 30 == 0);
        net.run_for(STEP * 5);
        let ready = net.clients[1..].iter().all(|c| c.subscriber.rtp_received > 0);
        if ready && round > 300 {
            break;
        }
    }
    let receiving = net.clients[1..]
        .iter()
        .filter(|c| c.subscriber.rtp_received > 0)
        .count();
    assert_eq!(receiving, subscribers, "not every subscriber receives media");
    if temporal {
        let track = net.clients[1]
            .known_participants()
            .get("publisher")
            .and_then(|p| p.tracks.first().map(|t| t.sid.clone()))
            .expect("the publisher's track is known");
        for c in (2..=subscribers).step_by(2) {
            let settings = lk::UpdateTrackSettings {
                track_sids: vec![track.clone()],
                fps: 8,
                ..Default::default()
            };
            net.signal(c, lk::signal_request::Message::TrackSetting(settings));
        }
        net.run_for(STEP * 10);
    }

    // Measure in batches: the publisher's datagrams for a batch are collected first, then
    // handed to the shard inside the measured function.
    if std::env::args().any(|a| a == "--trace-allocs") {
        TRACE_LEFT.with(|t| t.set(2000));
    }
    let mut allocations = 0u64;
    // Wall time inside the measured section (natively; meaningless under valgrind).
    let mut measured = std::time::Duration::ZERO;
    let mut bytes = 0u64;
    let mut forwarded = 0u64;
    let mut sent = 0;
    let server = sim::shard_addr(0);
    let before: u64 = net.clients[1..].iter().map(|c| c.subscriber.rtp_received).sum();
    while sent < packets {
        for _ in 0..10 {
            write(&mut net, sent % 300 == 0);
            sent += 1;
        }
        let mut input = VecDeque::new();
        let now = net.now;
        let peer = &mut net.clients[publisher].publisher;
        peer.rtc.handle_input(Input::Timeout(now)).expect("timeout");
        Net::poll_peer(peer, &mut input);
        let input: Vec<_> = input.into_iter().filter(|(_, dst, _)| *dst == server).collect();
        let mut out = Vec::with_capacity(input.len() * (subscribers + 2));
        let (a0, b0) = (
            ALLOCATIONS.load(Ordering::Relaxed),
            ALLOCATED_BYTES.load(Ordering::Relaxed),
        );
        let started = std::time::Instant::now();
        measured_forwarding(&mut net.shards, net.now, &input, &mut out);
        measured += started.elapsed();
        allocations += ALLOCATIONS.load(Ordering::Relaxed) - a0;
        bytes += ALLOCATED_BYTES.load(Ordering::Relaxed) - b0;
        for o in out {
            if let Output::Transmit(t) = o {
                forwarded += 1;
                net.to_clients
                    .push_back((t.source, t.destination, t.contents.to_vec()));
                // As the worker does once a datagram is copied into its send batch.
                str0m::net::recycle(t.contents);
            }
        }
        net.run_for(STEP * 10);
    }
    if std::env::args().any(|a| a == "--trace-allocs") {
        let mut by_site: HashMap<String, u32> = HashMap::new();
        TRACES.with(|t| {
            for site in t.borrow().iter() {
                *by_site.entry(site.clone()).or_default() += 1;
            }
        });
        let mut sites: Vec<_> = by_site.into_iter().collect();
        sites.sort_by_key(|s| std::cmp::Reverse(s.1));
        for (site, n) in sites {
            eprintln!("{n:>5}  {site}");
        }
    }
    let received: u64 = net.clients[1..]
        .iter()
        .map(|c| c.subscriber.rtp_received)
        .sum::<u64>()
        - before;
    let report = serde_json::json!({
        "subscribers": subscribers,
        "places": places,
        "idle_tracks": idle,
        "congestion_control": cc,
        "packets_in": packets,
        "datagrams_out": forwarded,
        "rtp_received_by_subscribers": received,
        "allocations_per_forwarded_packet": allocations as f64 / forwarded.max(1) as f64,
        "allocated_bytes_per_forwarded_packet": bytes as f64 / forwarded.max(1) as f64,
        "ns_per_forwarded_packet": measured.as_nanos() as f64 / forwarded.max(1) as f64,
    });
    println!("{report}");
}
