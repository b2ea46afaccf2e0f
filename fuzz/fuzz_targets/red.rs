//! The `red` fuzz target: `pylon_fuzz_targets::red` (crates/fuzz-targets), whose
//! corpus `cargo test` also replays.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pylon_fuzz_targets::red::run(data));
