//! `/rtc/v1`'s `join_request` parameter (`pylon_core::join_request`): any string either
//! decodes to a join request or is refused with a reason; never a panic, and never an
//! allocation past the cap however the gzip inside expands.
use pylon_core::join_request::{decode, encode};

pub fn run(data: &[u8]) {
    let param = String::from_utf8_lossy(data);
    if let Ok(req) = decode(&param) {
        // What decodes re-encodes to something that decodes to the same request (an empty
        // request encodes to an empty parameter, which is refused as missing).
        if req != Default::default() {
            assert_eq!(decode(&encode(&req, false)).as_ref(), Ok(&req));
        }
    }
    // The bytes as a wrapped request, as a client would send them.
    let _ = decode(&base64_url(data));
}

fn base64_url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut s = String::with_capacity(data.len() * 4 / 3 + 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..=c.len() {
            s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    s
}
