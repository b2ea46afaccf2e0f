//! The `shard_datagram` fuzz target: `pylon_fuzz_targets::shard_datagram` (crates/fuzz-targets), whose
//! corpus `cargo test` also replays.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pylon_fuzz_targets::shard_datagram::run(data));
