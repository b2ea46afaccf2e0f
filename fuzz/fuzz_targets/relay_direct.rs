//! The `relay_direct` fuzz target: `pylon_fuzz_targets::relay_direct` (crates/fuzz-targets), whose
//! corpus `cargo test` also replays.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pylon_fuzz_targets::relay_direct::run(data));
