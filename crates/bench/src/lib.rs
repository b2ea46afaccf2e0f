//! Deterministic harnesses for Pylon's media path: an in-memory network of shards and str0m
//! clients on a virtual clock ([`sim`]), used by the forwarding micro-benchmark and by tests
//! of rooms spread over several places; and a connected hostile peer driven by arbitrary
//! bytes ([`hostile`]), for a seeded test and a fuzz target; and SRTCP written with a
//! client's own keys ([`srtcp`]), for feedback str0m's client never sends.

pub mod hostile;
pub mod sim;
pub mod srtcp;

/// The number after `name` on the command line, else `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
