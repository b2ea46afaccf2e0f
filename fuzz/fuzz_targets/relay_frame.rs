//! The `relay_frame` fuzz target: `pylon_fuzz_targets::relay_frame` (crates/fuzz-targets), whose
//! corpus `cargo test` also replays.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pylon_fuzz_targets::relay_frame::run(data));
