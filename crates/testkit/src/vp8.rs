//! VP8 RTP payloads (RFC 7741) good enough for an SFU: a valid payload descriptor and, for
//! keyframes, a valid VP8 frame header, followed by arbitrary test bytes.

/// Payload descriptor byte 0: S (start of partition) set, partition 0, no extensions.
const DESCRIPTOR_START: u8 = 0x10;
/// Payload descriptor byte 0 of a packet continuing a frame: S clear.
const DESCRIPTOR_CONTINUATION: u8 = 0x00;
/// VP8 keyframe start code (RFC 6386 §9.1).
const START_CODE: [u8; 3] = [0x9d, 0x01, 0x2a];

/// The first packet of a keyframe of `width`×`height`, then `body`.
///
/// The frame tag has P=0 (keyframe), version 0, show_frame=1 and a first-partition size of 0,
/// followed by the start code and the dimensions, as a decoder expects.
pub fn keyframe_start(width: u16, height: u16, body: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(11 + body.len());
    p.push(DESCRIPTOR_START);
    p.extend_from_slice(&[0x10, 0x00, 0x00]); // frame tag: keyframe, show_frame
    p.extend_from_slice(&START_CODE);
    p.extend_from_slice(&(width & 0x3fff).to_le_bytes());
    p.extend_from_slice(&(height & 0x3fff).to_le_bytes());
    p.extend_from_slice(body);
    p
}

/// The first packet of an inter (delta) frame, then `body`.
pub fn delta_start(body: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(4 + body.len());
    p.push(DESCRIPTOR_START);
    p.extend_from_slice(&[0x11, 0x00, 0x00]); // frame tag: P=1 (inter frame), show_frame
    p.extend_from_slice(body);
    p
}

/// A packet continuing the current frame, then `body`.
pub fn continuation(body: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(1 + body.len());
    p.push(DESCRIPTOR_CONTINUATION);
    p.extend_from_slice(body);
    p
}

/// `payload` (as built above, without descriptor extensions) with a 15-bit PictureID added
/// to its payload descriptor, as libwebrtc sends every VP8 packet.
pub fn with_picture_id(payload: &[u8], picture_id: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(payload.len() + 3);
    p.push(payload[0] | 0x80); // X: extensions follow
    p.push(0x80); // I: PictureID present
    p.push(0x80 | ((picture_id >> 8) & 0x7f) as u8); // M: 15-bit form
    p.push(picture_id as u8);
    p.extend_from_slice(&payload[1..]);
    p
}

/// `payload` (as built above, without descriptor extensions) with the descriptor extensions
/// libwebrtc sends on a stream with temporal layers: a 15-bit PictureID, TL0PICIDX, and the
/// temporal layer `tid` with its layer-sync bit.
pub fn with_temporal(payload: &[u8], picture_id: u16, tl0: u8, tid: u8, sync: bool) -> Vec<u8> {
    let mut p = Vec::with_capacity(payload.len() + 5);
    p.push(payload[0] | 0x80); // X: extensions follow
    p.push(0xe0); // I, L, T: PictureID, TL0PICIDX, TID present
    p.push(0x80 | ((picture_id >> 8) & 0x7f) as u8);
    p.push(picture_id as u8);
    p.push(tl0);
    p.push(((tid & 0x03) << 6) | if sync { 0x20 } else { 0 });
    p.extend_from_slice(&payload[1..]);
    p
}

/// libwebrtc's three-temporal-layer pattern (T0 T2 T1 T2 ...): the temporal layer of frame
/// `i` and whether it is a layer sync (the first T2 and the T1 after each T0 reference only T0).
pub fn temporal_pattern(i: u64) -> (u8, bool) {
    [(0, false), (2, true), (1, true), (2, false)][(i % 4) as usize]
}

/// Length of the payload descriptor, or `None` if it is truncated.
fn descriptor_len(payload: &[u8]) -> Option<usize> {
    let d = *payload.first()?;
    if d & 0x80 == 0 {
        return Some(1);
    }
    let ext = *payload.get(1)?;
    let mut len = 2;
    if ext & 0x80 != 0 {
        len += if payload.get(len)? & 0x80 != 0 { 2 } else { 1 };
    }
    if ext & 0x40 != 0 {
        len += 1;
    }
    if ext & 0x30 != 0 {
        len += 1;
    }
    Some(len)
}

/// The PictureID in `payload`'s descriptor, if it carries one.
pub fn picture_id(payload: &[u8]) -> Option<u16> {
    let (d, ext, hi) = (*payload.first()?, *payload.get(1)?, *payload.get(2)?);
    if d & 0x80 == 0 || ext & 0x80 == 0 {
        return None;
    }
    if hi & 0x80 == 0 {
        return Some(u16::from(hi));
    }
    Some((u16::from(hi & 0x7f) << 8) | u16::from(*payload.get(3)?))
}

/// The width and height in the header of a keyframe's first packet; `None` for any other
/// packet (a receiver reads which simulcast layer it is given from this).
pub fn keyframe_size(payload: &[u8]) -> Option<(u16, u16)> {
    if !is_keyframe_start(payload) {
        return None;
    }
    let at = descriptor_len(payload)? + 3;
    let header = payload.get(at..at + 7)?;
    if header[..3] != START_CODE {
        return None;
    }
    let width = u16::from_le_bytes([header[3], header[4]]) & 0x3fff;
    let height = u16::from_le_bytes([header[5], header[6]]) & 0x3fff;
    Some((width, height))
}

/// True if `payload` starts a keyframe (the same rule the server applies).
pub fn is_keyframe_start(payload: &[u8]) -> bool {
    let Some(len) = descriptor_len(payload) else {
        return false;
    };
    matches!((payload[0], payload.get(len)), (d, Some(tag)) if d & 0x10 != 0 && d & 0x07 == 0 && tag & 0x01 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyframes_size_is_read_back_with_or_without_a_picture_id() {
        let key = keyframe_start(640, 360, b"body");
        assert_eq!(keyframe_size(&key), Some((640, 360)));
        assert_eq!(keyframe_size(&with_picture_id(&key, 300)), Some((640, 360)));
        assert_eq!(keyframe_size(&delta_start(b"body")), None);
        assert_eq!(keyframe_size(&key[..8]), None, "truncated");
    }

    #[test]
    fn keyframe_start_is_recognised() {
        assert!(is_keyframe_start(&keyframe_start(640, 480, b"x")));
    }

    #[test]
    fn picture_ids_are_added_and_read_back() {
        let k = with_picture_id(&keyframe_start(640, 480, b"x"), 0x1234);
        assert_eq!(picture_id(&k), Some(0x1234));
        assert!(is_keyframe_start(&k));
        let d = with_picture_id(&delta_start(b"x"), 7);
        let t = with_temporal(&keyframe_start(320, 180, b"x"), 0x1234, 9, 0, false);
        assert_eq!(keyframe_size(&t), Some((320, 180)));
        assert_eq!(picture_id(&t), Some(0x1234));
        assert_eq!(
            keyframe_size(&with_temporal(&delta_start(b"x"), 5, 9, 2, true)),
            None
        );
        assert_eq!(picture_id(&d), Some(7));
        assert!(!is_keyframe_start(&d));
        assert_eq!(picture_id(&keyframe_start(640, 480, b"x")), None);
    }

    #[test]
    fn delta_and_continuation_are_not_keyframes() {
        assert!(!is_keyframe_start(&delta_start(b"x")));
        assert!(!is_keyframe_start(&continuation(&[0x00, 0x00])));
    }
}
