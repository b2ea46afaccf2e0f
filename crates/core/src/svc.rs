//! VP9 scalable video (SVC): which spatial and temporal layer a packet belongs to, read from
//! its payload descriptor (RFC 9628 §4.2: the B, E and P bits and the layer-index byte's TID,
//! U and SID), so that one stream can be thinned per subscriber.
//!
//! LiveKit's SDKs send VP9 as one stream of three spatial and three temporal layers
//! (`L3T3_KEY`, under rid `f`) rather than as simulcast. A subscriber that wants a smaller
//! picture gets the spatial layers up to the one it wants: in `_KEY` mode a spatial layer
//! refers to the layers below it only in key pictures, so a subscriber can step down at any
//! picture and up at a key picture. The forwarder does the dropping (`forwarder.rs`); this
//! module only reads the packet.

use crate::forwarder::{Layer, TOP_LAYER};
use crate::temporal::{Temporal, TOP_TEMPORAL};

/// The layer facts of one VP9 packet that carries layer indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vp9Layers {
    /// Spatial layer id (SID), 0 to 7 on the wire; above [`TOP_LAYER`] it is taken as the top.
    pub sid: Layer,
    /// The temporal layer (TID) and switching-up point (U); `frame_start` is set on the first
    /// packet of a picture (B on spatial layer 0), where a receiver's layers may change.
    pub temporal: Temporal,
    /// E: the last packet of this spatial layer's frame. On the highest spatial layer a
    /// subscriber receives, it ends the picture for that subscriber (the RTP marker).
    pub end_of_frame: bool,
    /// The first packet of a key picture (B, P clear, spatial layer 0): where a subscriber may
    /// start, or move up to more spatial layers.
    pub key_picture: bool,
}

/// The layer facts of a VP9 payload, or `None` when its descriptor carries no layer indices
/// (L clear: a stream without scalability, forwarded whole) or is truncated. Never panics.
pub fn vp9_layers(p: &[u8]) -> Option<Vp9Layers> {
    let &b0 = p.first()?;
    let has_picture_id = b0 & 0x80 != 0;
    let inter_predicted = b0 & 0x40 != 0;
    let has_layers = b0 & 0x20 != 0;
    let begin = b0 & 0x08 != 0;
    let end = b0 & 0x04 != 0;
    if !has_layers {
        return None;
    }
    let mut i = 1;
    if has_picture_id {
        let &pid = p.get(i)?;
        // M: a 15-bit picture id, one more byte.
        i += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    let &l = p.get(i)?;
    let sid = ((l >> 1) & 0x07).min(TOP_LAYER);
    let picture_start = begin && sid == 0;
    Some(Vp9Layers {
        sid,
        temporal: Temporal {
            tid: (l >> 5).min(TOP_TEMPORAL),
            sync: l & 0x10 != 0,
            frame_start: picture_start,
        },
        end_of_frame: end,
        key_picture: picture_start && !inter_predicted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor: I, P, L, B, E as given, a 15-bit picture id, the layer byte, TL0PICIDX.
    fn payload(p: bool, begin: bool, end: bool, tid: u8, u: bool, sid: u8) -> Vec<u8> {
        let b0 = 0x80
            | 0x20
            | if p { 0x40 } else { 0 }
            | if begin { 0x08 } else { 0 }
            | if end { 0x04 } else { 0 };
        vec![
            b0,
            0x81,
            0x23,
            (tid << 5) | if u { 0x10 } else { 0 } | (sid << 1),
            7,
            0xaa,
        ]
    }

    #[test]
    fn reads_spatial_and_temporal_layers_and_where_pictures_start_and_end() {
        let key = vp9_layers(&payload(false, true, false, 0, false, 0)).unwrap();
        assert_eq!(key.sid, 0);
        assert!(key.key_picture && key.temporal.frame_start && !key.end_of_frame);
        let s2 = vp9_layers(&payload(true, false, true, 2, true, 2)).unwrap();
        assert_eq!((s2.sid, s2.temporal.tid, s2.temporal.sync), (2, 2, true));
        assert!(s2.end_of_frame && !s2.key_picture && !s2.temporal.frame_start);
        // The second spatial layer of a key picture begins its frame, not the picture.
        let s1 = vp9_layers(&payload(false, true, false, 0, false, 1)).unwrap();
        assert!(!s1.key_picture && !s1.temporal.frame_start);
        // An inter picture's first packet starts the picture but is no key picture.
        let inter = vp9_layers(&payload(true, true, false, 1, false, 0)).unwrap();
        assert!(inter.temporal.frame_start && !inter.key_picture);
    }

    #[test]
    fn a_seven_bit_picture_id_or_none_moves_the_layer_byte() {
        // I set, 7-bit id.
        let l = vp9_layers(&[0xa8, 0x05, (1 << 5) | (1 << 1), 0]).unwrap();
        assert_eq!((l.sid, l.temporal.tid), (1, 1));
        // No picture id: the layer byte follows the first.
        let l = vp9_layers(&[0x28, 2 << 1]).unwrap();
        assert_eq!(l.sid, 2);
    }

    #[test]
    fn large_ids_are_capped_and_missing_or_truncated_indices_are_none() {
        let l = vp9_layers(&[0x28, (7 << 5) | (7 << 1)]).unwrap();
        assert_eq!((l.sid, l.temporal.tid), (TOP_LAYER, TOP_TEMPORAL));
        assert_eq!(vp9_layers(&[0x88, 0x01, 0x00]), None, "no L bit");
        assert_eq!(vp9_layers(&[]), None);
        assert_eq!(vp9_layers(&[0xa8, 0x81, 0x23]), None, "layer byte missing");
        assert_eq!(vp9_layers(&[0xa8]), None);
    }
}
