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

/// The frame rates (in thousandths of a frame per second) a stream's temporal layers are
/// taken to have, each including the layers below it, until frames of the stream were
/// counted here: what LiveKit's SDKs and libwebrtc encode camera video at (30 fps, three
/// temporal layers: 7.5, 15, 30).
pub const ASSUMED_MFPS: [u64; TEMPORAL_LAYERS] = [7_500, 15_000, 30_000];

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

/// A temporal layer is taken for a subscriber's `fps` when its frame rate is at most this much
/// over it, and kept until its rate is more than [`FPS_KEEP_PERCENT`] over it. Frame rates are
/// measured over half-second windows, so a 15 fps layer reads a little over or under 15 from
/// one window to the next; the band between the two keeps a layer whose rate sits near a
/// threshold (LiveKit's 20 fps middle layer has a 10 fps temporal layer) from flipping at
/// every window. Each temporal layer doubles the rate of the one below, so neither threshold
/// takes the next layer up for a request of this one.
const FPS_TAKE_PERCENT: u64 = 10;
const FPS_KEEP_PERCENT: u64 = 35;

/// The temporal layer to forward for a request of `fps` frames a second, given each temporal
/// layer's frame rate with the layers below it (`mfps`, thousandths of a frame per second:
/// measured where the stream arrives, else [`ASSUMED_MFPS`]) and the layer forwarded for it
/// now (`current`): the highest layer within [`FPS_TAKE_PERCENT`] of `fps`, or `current` when
/// that is lower and `current` is still within [`FPS_KEEP_PERCENT`]; the base when even it is
/// faster; every layer when `fps` is 0 (no request).
pub fn temporal_for_fps(fps: u32, mfps: [u64; TEMPORAL_LAYERS], current: u8) -> u8 {
    if fps == 0 {
        return TOP_TEMPORAL;
    }
    let within =
        |percent: u64, t: u8| mfps[usize::from(t.min(TOP_TEMPORAL))] <= u64::from(fps) * 10 * (100 + percent);
    let best = (0..=TOP_TEMPORAL)
        .rev()
        .find(|&t| within(FPS_TAKE_PERCENT, t))
        .unwrap_or(0);
    if best < current && within(FPS_KEEP_PERCENT, current) {
        current.min(TOP_TEMPORAL)
    } else {
        best
    }
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
        assert_eq!(temporal_for_fps(0, ASSUMED_MFPS, TOP_TEMPORAL), 2, "no request");
        assert_eq!(temporal_for_fps(30, ASSUMED_MFPS, TOP_TEMPORAL), 2);
        assert_eq!(temporal_for_fps(60, ASSUMED_MFPS, TOP_TEMPORAL), 2);
        assert_eq!(temporal_for_fps(15, ASSUMED_MFPS, TOP_TEMPORAL), 1);
        assert_eq!(temporal_for_fps(20, ASSUMED_MFPS, TOP_TEMPORAL), 1);
        assert_eq!(temporal_for_fps(8, ASSUMED_MFPS, TOP_TEMPORAL), 0);
        assert_eq!(
            temporal_for_fps(1, ASSUMED_MFPS, TOP_TEMPORAL),
            0,
            "below the base: the base"
        );
    }

    #[test]
    fn the_measured_frame_rate_decides_which_temporal_layers_a_request_gets() {
        let fresh = |fps, mfps| temporal_for_fps(fps, mfps, TOP_TEMPORAL);
        // A publisher at 15 fps: its layers run at 3.75, 7.5 and 15 fps.
        let fifteen = [3_750, 7_500, 15_000];
        assert_eq!(fresh(15, fifteen), 2, "every frame of a 15 fps stream");
        assert_eq!(fresh(8, fifteen), 1);
        assert_eq!(fresh(4, fifteen), 0);
        // Measurement noise around the request still counts as within it.
        assert_eq!(fresh(15, [7_700, 16_400, 30_900]), 1);
        assert_eq!(fresh(15, [7_700, 17_000, 30_900]), 0, "beyond what is taken");
        // A stream whose frames all carry the base layer has nothing above it to drop.
        assert_eq!(fresh(15, [30_000, 30_000, 30_000]), 0);
    }

    #[test]
    fn a_temporal_layer_near_the_threshold_is_kept_not_flipped() {
        // LiveKit's 20 fps middle layer: its T1 runs at about 10 fps, measured 9.5 to 10.5.
        // Asked for 8: T1 is not taken (over 8.8), so T0 it is, whatever the window.
        for t1 in [9_500, 10_000, 10_500] {
            let mfps = [5_000, t1, 20_000];
            assert_eq!(temporal_for_fps(8, mfps, TOP_TEMPORAL), 0);
            assert_eq!(temporal_for_fps(8, mfps, 0), 0);
        }
        // Once on T1 (asked for 9: 10 fps is within 10 %), a window reading 10.5 keeps it.
        assert_eq!(temporal_for_fps(9, [5_000, 9_800, 20_000], TOP_TEMPORAL), 1);
        assert_eq!(temporal_for_fps(9, [5_000, 10_500, 20_000], 1), 1);
        // A publisher that doubles its rate moves the request down a layer.
        assert_eq!(temporal_for_fps(9, [10_000, 20_000, 40_000], 1), 0);
    }
}
