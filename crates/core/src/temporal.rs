//! VP8 temporal layers: which temporal layer a packet's frame belongs to, read from its
//! payload descriptor (RFC 7741 §4.2, the TID and Y fields), and which temporal layer a
//! subscriber's frame-rate request allows.
//!
//! A simulcast layer encoded with temporal layers (libwebrtc sends three for VP8 simulcast:
//! 7.5, 15 and 30 fps) can be thinned per subscriber by dropping the frames above a temporal
//! layer: a finer step of bitrate than the next simulcast layer down. The forwarder does the
//! dropping (`forwarder.rs`); this module only reads the packet.

/// Temporal layers a stream may have: 0 (the base) to 2.
pub const TEMPORAL_LAYERS: usize = 3;
/// The highest temporal layer: every frame.
pub const TOP_TEMPORAL: u8 = TEMPORAL_LAYERS as u8 - 1;

/// The frame rate a stream with temporal layers is taken to have at its top temporal layer
/// (what LiveKit's SDKs and libwebrtc encode camera video at), to map a subscriber's `fps`.
pub const ASSUMED_FPS: u32 = 30;

/// The temporal facts of one VP8 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Temporal {
    /// Temporal layer id (TID), 0 to 3 on the wire; 3 is treated as 2.
    pub tid: u8,
    /// Y (layer sync): this frame depends only on the base layer, so a receiver may start
    /// taking its temporal layer here.
    pub sync: bool,
    /// The packet begins a frame (S set, partition 0): where a receiver's temporal layer may
    /// change without cutting a frame in two.
    pub frame_start: bool,
}

/// The temporal facts of a VP8 payload, or `None` when its descriptor carries no TID (a
/// stream without temporal layers: every packet is forwarded) or is truncated. Never panics.
pub fn vp8_temporal(p: &[u8]) -> Option<Temporal> {
    let &b0 = p.first()?;
    if b0 & 0x80 == 0 {
        return None;
    }
    let &x = p.get(1)?;
    if x & 0x20 == 0 {
        return None;
    }
    let mut i = 2;
    if x & 0x80 != 0 {
        let &pid = p.get(i)?;
        i += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    if x & 0x40 != 0 {
        i += 1; // TL0PICIDX
    }
    let &t = p.get(i)?;
    Some(Temporal {
        tid: (t >> 6).min(TOP_TEMPORAL),
        sync: t & 0x20 != 0,
        frame_start: b0 & 0x10 != 0 && b0 & 0x07 == 0,
    })
}

/// The highest temporal layer whose frame rate is at most `fps`, for a stream at `full_fps`
/// whose temporal layers each double the rate (7.5, 15, 30 at 30 fps); the base layer when
/// even it is faster; every layer when `fps` is 0 (no request).
pub fn temporal_for_fps(fps: u32, full_fps: u32) -> u8 {
    if fps == 0 {
        return TOP_TEMPORAL;
    }
    (0..=TOP_TEMPORAL)
        .rev()
        .find(|&t| full_fps >> (TOP_TEMPORAL - t) <= fps)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor with a 15-bit PictureID, TL0PICIDX and the TID/Y byte.
    fn payload(start: bool, tid: u8, sync: bool) -> Vec<u8> {
        vec![
            0x80 | if start { 0x10 } else { 0 },
            0xe0,
            0x81,
            0x23,
            7,
            (tid << 6) | if sync { 0x20 } else { 0 },
            0x01,
        ]
    }

    #[test]
    fn reads_the_temporal_layer_sync_and_frame_start() {
        assert_eq!(
            vp8_temporal(&payload(true, 2, true)),
            Some(Temporal {
                tid: 2,
                sync: true,
                frame_start: true
            })
        );
        let t = vp8_temporal(&payload(false, 1, false)).unwrap();
        assert_eq!((t.tid, t.sync, t.frame_start), (1, false, false));
        // A second partition's first packet does not start the frame.
        let mut p = payload(true, 0, false);
        p[0] |= 0x01;
        assert!(!vp8_temporal(&p).unwrap().frame_start);
    }

    #[test]
    fn no_tid_or_a_truncated_descriptor_is_none() {
        assert_eq!(vp8_temporal(&[0x10, 0x00]), None, "no extensions");
        assert_eq!(
            vp8_temporal(&[0x90, 0x80, 0x81, 0x23, 0x00]),
            None,
            "PictureID only"
        );
        let p = payload(true, 1, false);
        for n in 0..6 {
            assert_eq!(vp8_temporal(&p[..n]), None, "truncated at {n}");
        }
        assert_eq!(vp8_temporal(&[]), None);
    }

    #[test]
    fn a_frame_rate_picks_the_highest_temporal_layer_that_fits() {
        assert_eq!(temporal_for_fps(0, 30), 2, "no request");
        assert_eq!(temporal_for_fps(30, 30), 2);
        assert_eq!(temporal_for_fps(60, 30), 2);
        assert_eq!(temporal_for_fps(15, 30), 1);
        assert_eq!(temporal_for_fps(20, 30), 1);
        assert_eq!(temporal_for_fps(8, 30), 0);
        assert_eq!(temporal_for_fps(1, 30), 0, "below the base: the base");
    }
}
