//! The `ice_tcp_frames` fuzz target: `pylon_fuzz_targets::ice_tcp_frames` (crates/fuzz-targets), whose
//! corpus `cargo test` also replays.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pylon_fuzz_targets::ice_tcp_frames::run(data));
