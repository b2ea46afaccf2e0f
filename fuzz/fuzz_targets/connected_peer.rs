//! The `connected_peer` fuzz target: `pylon_fuzz_targets::connected_peer` (crates/fuzz-targets), whose
//! corpus `cargo test` also replays.
#![no_main]
libfuzzer_sys::fuzz_target!(init: pylon_fuzz_targets::connected_peer::init(), |data: &[u8]| {
    pylon_fuzz_targets::connected_peer::run(data)
});
