//! What the downlink allocator costs a subscriber: one turn of `downlink.rs` is three
//! `allocator::allocate` calls (at the latest, the highest and the lowest recent estimate) and the
//! hysteresis (`Grant::settle`) per track, here for one subscriber of N cameras (simulcast,
//! three layers of three temporal layers) and N audio tracks, on an estimate that carries only part of it (so every
//! track climbs rung by rung). The shard runs this twice a second per subscriber (`downlink.rs`), so the cost per
//! subscriber per second is twice the cost of one allocation.
//!
//!     cargo run --release -p pylon-bench --bin allocator [-- --iterations 200000]
//!
//! Prints one JSON line per track count. Wall time on this machine: compare counts within one
//! run, not runs with each other.

use std::hint::black_box;
use std::time::Instant;

use pylon_bench::arg;
use pylon_core::allocator::{allocate, Class, Grant, Rung, Want, RUNGS};

fn wants(cameras: usize) -> Vec<Want> {
    let mut wants = Vec::with_capacity(cameras * 2);
    let mut audio = [0; RUNGS];
    audio[0] = 40_000;
    // Three simulcast layers of three temporal layers each (40 %, 60 %, 100 % of the layer).
    let video: [u64; RUNGS] = std::array::from_fn(|r| {
        let layer = [150_000, 500_000, 1_700_000][r / 3];
        layer * [40, 60, 100][r % 3] / 100
    });
    for i in 0..cameras {
        wants.push(Want {
            class: Class::Audio,
            rank: u32::MAX,
            max: Some(Rung::LOWEST),
            current: Some(Rung::LOWEST),
            climbing: None,
            rates: audio,
        });
        wants.push(Want {
            class: if i == 0 { Class::Screen } else { Class::Camera },
            rank: u32::MAX,
            max: Some(Rung::TOP),
            current: Some(Rung::top_of((i % 3) as u8)),
            climbing: None,
            rates: video,
        });
    }
    wants
}

fn main() {
    let iterations = arg("--iterations", 200_000);
    for cameras in [1usize, 3, 9, 24] {
        let wants = wants(cameras);
        // Enough for every lowest layer and about half of the rest.
        let estimate = cameras as u64 * (40_000 + 150_000) + cameras as u64 * 800_000;
        let (mut latest, mut high, mut low) = (Vec::new(), Vec::new(), Vec::new());
        let mut settled = vec![Grant::default(); wants.len()];
        let start = Instant::now();
        for i in 0..iterations {
            // The estimate moves a little every turn, as str0m's does.
            let e = estimate + (i as u64 % 7) * 10_000;
            black_box(allocate(black_box(e), &wants, true, &mut latest));
            black_box(allocate(black_box(e + 200_000), &wants, true, &mut high));
            black_box(allocate(
                black_box(e.saturating_sub(200_000)),
                &wants,
                true,
                &mut low,
            ));
            for (((s, n), h), l) in settled.iter_mut().zip(&latest).zip(&high).zip(&low) {
                *s = s.settle(*n, *h, *l);
            }
            black_box(&settled);
        }
        let per_turn_ns = start.elapsed().as_nanos() as f64 / iterations as f64;
        let report = serde_json::json!({
            "video_tracks": cameras,
            "audio_tracks": cameras,
            "ns_per_allocation_turn": (per_turn_ns * 10.0).round() / 10.0,
            "us_per_subscriber_per_second": (2.0 * per_turn_ns / 100.0).round() / 10.0,
        });
        println!("{report}");
    }
}
