//! Frames from a node link (stream or datagram): decoding never panics, whatever the bytes,
//! and a codec table fed garbage stays bounded.
use pylon_relay::wire::{decode, frame, CodecTable};

pub fn run(data: &[u8]) {
    let mut codecs = CodecTable::default();
    for chunk in data.split(|b| *b == 0xfe) {
        if let Ok(f) = frame(chunk) {
            let _ = decode(f, &mut codecs);
        }
    }
}
