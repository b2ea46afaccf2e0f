//! RFC 2198 RED payloads (`pylon_core::red`): any bytes either yield a primary block that lies
//! inside the payload, after every announced header and redundant block, or a refusal; never
//! a panic.
use pylon_core::red::{primary, MAX_REDUNDANT_BLOCKS};

pub fn run(payload: &[u8]) {
    if let Ok(range) = primary(payload) {
        assert!(range.start >= 1 && range.start <= payload.len() && range.end == payload.len());
        // At most the bound's redundant headers (4 bytes each) and blocks (10-bit lengths)
        // before the primary block's 1-byte header.
        assert!(range.start <= MAX_REDUNDANT_BLOCKS * (4 + 1023) + 1);
    }
}
