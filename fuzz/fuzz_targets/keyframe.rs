//! Keyframe detection on arbitrary RTP payloads, every codec.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pylon_core::keyframe::{is_keyframe_start, VideoCodec};

fuzz_target!(|data: &[u8]| {
    for c in [
        VideoCodec::Vp8,
        VideoCodec::Vp9,
        VideoCodec::H264,
        VideoCodec::Av1,
    ] {
        let _ = is_keyframe_start(c, data);
    }
});
