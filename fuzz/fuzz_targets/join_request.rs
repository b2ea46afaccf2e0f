//! The `join_request` fuzz target: `pylon_fuzz_targets::join_request` (crates/fuzz-targets), whose
//! corpus `cargo test` also replays.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pylon_fuzz_targets::join_request::run(data));
