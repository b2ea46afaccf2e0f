//! The fuzz targets' bodies: one module per parser or state machine that takes untrusted
//! input, each with `pub fn run(data: &[u8])` (see `fuzz/README.md` for what each one feeds).
//!
//! Two harnesses call them:
//! - `fuzz/` (its own workspace): one libFuzzer binary per module, built with SanitizerCoverage
//!   by `scripts/fuzz.sh`, which mutates from the corpus in `fuzz/corpus/<module>`;
//! - `tests/corpus.rs` here, in the main workspace's `cargo test`: every input of every corpus,
//!   once, so a change that breaks on a known input fails CI without the sanitizer build.
//!
//! A property a target checks is an `assert!` in its body: a panic is the finding.
pub mod config;
pub mod connected_peer;
pub mod data_packet;
pub mod ice_tcp_frames;
pub mod join_request;
pub mod keyframe;
pub mod red;
pub mod relay_direct;
pub mod relay_frame;
pub mod shard_admin;
pub mod shard_datagram;
pub mod shard_signal;
pub mod token;
pub mod turn;
