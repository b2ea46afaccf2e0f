//! Keyframe detection on arbitrary RTP payloads, every codec, and the VP8 temporal-layer and
//! VP9 layer readers the forwarder uses on the same payloads.
use pylon_core::keyframe::{is_keyframe_start, VideoCodec};
use pylon_core::svc::vp9_layers;
use pylon_core::temporal::vp8_temporal;

pub fn run(data: &[u8]) {
    for c in [
        VideoCodec::Vp8,
        VideoCodec::Vp9,
        VideoCodec::H264,
        VideoCodec::Av1,
    ] {
        let _ = is_keyframe_start(c, data);
    }
    if let Some(t) = vp8_temporal(data) {
        assert!(t.tid <= pylon_core::temporal::TOP_TEMPORAL);
    }
    if let Some(l) = vp9_layers(data) {
        assert!(l.sid <= pylon_core::forwarder::TOP_LAYER);
        assert!(l.temporal.tid <= pylon_core::temporal::TOP_TEMPORAL);
        assert!(!l.key_picture || l.temporal.frame_start);
    }
}
