//! The `token` fuzz target: `pylon_fuzz_targets::token` (crates/fuzz-targets), whose
//! corpus `cargo test` also replays.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pylon_fuzz_targets::token::run(data));
