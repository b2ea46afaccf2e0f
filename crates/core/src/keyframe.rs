//! Keyframe detection from RTP payloads, one small parser per codec.
//!
//! The forwarder switches a subscriber between simulcast layers only at the first packet of
//! a keyframe. Each function looks at one RTP payload and never panics on short or hostile
//! input (RFC 7741 VP8, RFC 6184 H.264, draft-ietf-payload-vp9, AV1 RTP spec §4).

/// The video codecs whose keyframes we can recognise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    Vp9,
    H264,
    Av1,
    /// A codec we forward without being able to parse it.
    Other,
}

/// True if `payload` is the first packet of a keyframe.
pub fn is_keyframe_start(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8_keyframe_start(payload),
        VideoCodec::Vp9 => vp9_keyframe_start(payload),
        VideoCodec::H264 => h264_keyframe_start(payload),
        VideoCodec::Av1 => av1_keyframe_start(payload),
        VideoCodec::Other => false,
    }
}

/// RFC 7741 §4.2: payload descriptor, then the VP8 payload header whose P bit is 0 on keyframes.
pub fn vp8_keyframe_start(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let start_of_partition = b0 & 0x10 != 0;
    let partition_id = b0 & 0x07;
    if !start_of_partition || partition_id != 0 {
        return false;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = p.get(i) else { return false };
        i += 1;
        if x & 0x80 != 0 {
            // Picture id: one byte, or two when its M bit is set.
            let Some(&pid) = p.get(i) else { return false };
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/Y/KEYIDX
        }
    }
    matches!(p.get(i), Some(h) if h & 0x01 == 0)
}

/// VP9 payload descriptor: B (start of frame) set and P (inter-picture predicted) clear.
pub fn vp9_keyframe_start(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let inter_predicted = b0 & 0x40 != 0;
    let start_of_frame = b0 & 0x08 != 0;
    start_of_frame && !inter_predicted
}

const H264_IDR: u8 = 5;
const H264_SPS: u8 = 7;
const H264_STAP_A: u8 = 24;
const H264_FU_A: u8 = 28;

/// RFC 6184: an IDR or SPS NAL unit, directly, inside STAP-A, or starting an FU-A.
pub fn h264_keyframe_start(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        H264_IDR | H264_SPS => true,
        H264_STAP_A => stap_a_has_keyframe(&p[1..]),
        H264_FU_A => matches!(p.get(1), Some(h) if h & 0x80 != 0 && h & 0x1f == H264_IDR),
        _ => false,
    }
}

fn stap_a_has_keyframe(mut rest: &[u8]) -> bool {
    while rest.len() > 2 {
        let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let Some(nal) = rest.get(2..2 + size) else {
            return false;
        };
        if matches!(nal.first(), Some(h) if matches!(h & 0x1f, H264_IDR | H264_SPS)) {
            return true;
        }
        rest = &rest[2 + size..];
    }
    false
}

/// AV1 aggregation header: N marks the first packet of a coded video sequence.
pub fn av1_keyframe_start(p: &[u8]) -> bool {
    matches!(p.first(), Some(h) if h & 0x08 != 0 && h & 0x80 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_with_extended_picture_id() {
        // X=1,S=1,PID=0 | I=1 | M=1 pid 2 bytes | payload header P=0
        assert!(vp8_keyframe_start(&[0x90, 0x80, 0x81, 0x23, 0x10]));
        // Same, P=1: interframe.
        assert!(!vp8_keyframe_start(&[0x90, 0x80, 0x81, 0x23, 0x11]));
        // Not the start of partition 0.
        assert!(!vp8_keyframe_start(&[0x80, 0x80, 0x81, 0x23, 0x10]));
    }

    #[test]
    fn h264_fu_a_idr_start() {
        assert!(h264_keyframe_start(&[0x7c, 0x85]));
        assert!(!h264_keyframe_start(&[0x7c, 0x05]));
        assert!(h264_keyframe_start(&[0x78, 0x00, 0x01, 0x67, 0x00, 0x01, 0x68]));
    }

    #[test]
    fn short_and_hostile_payloads_never_panic() {
        for p in [
            &[][..],
            &[0xff],
            &[0x90],
            &[0x90, 0xff],
            &[0x78, 0xff, 0xff],
            &[0x7c],
        ] {
            for c in [
                VideoCodec::Vp8,
                VideoCodec::Vp9,
                VideoCodec::H264,
                VideoCodec::Av1,
            ] {
                let _ = is_keyframe_start(c, p);
            }
        }
    }
}
