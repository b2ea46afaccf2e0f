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

use std::time::{Duration, Instant};

use crate::forwarder::{Layer, TOP_LAYER};
use crate::relay::MediaPacket;
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

/// Where a picture ends when the publisher's encoder dropped its upper spatial layers.
///
/// libwebrtc's VP9 encoder drops the upper spatial layers of a picture when it falls behind
/// (a busy CPU, or its rate control after a key picture), and the publisher then sends that
/// picture with no RTP marker at all: the last packet of the highest layer it did send carries
/// E but not M. A libwebrtc receiver completes a picture at its marker, so that picture never
/// completes, nothing that follows decodes, and the receiver stalls until the next key picture,
/// whose next drop breaks it again. (Seen with the Python SDK's VP9 camera on a busy machine:
/// a Chromium viewer decoded 16 frames in 20 s with nothing lost, asking for a key picture
/// every 3 s, while a third of the pictures arrived without a marker.)
///
/// Only the packet after tells where the picture ended: a higher layer of the same picture
/// (same RTP timestamp), or the next picture. So the last packet of each spatial layer frame
/// that has no marker is held until the stream's next packet, and released before it: with the
/// marker set when the next packet begins another picture; otherwise told which layer comes
/// next, so that a receiver forwarded fewer layers knows it ends its picture. A packet held
/// longer than [`HOLD_LIMIT`] (the stream stopped) is released as the end of its picture.
/// The cost: the end of each lower layer frame waits for the next packet, which libwebrtc
/// sends right after it (all of a picture's layers come from one encoder call); when the upper
/// layers were dropped, that is one frame interval.
#[derive(Debug, Default)]
pub struct PictureEnds {
    held: Option<Held>,
}

#[derive(Debug)]
struct Held {
    packet: MediaPacket,
    at: Instant,
}

/// A held packet, to be forwarded now.
#[derive(Debug)]
pub struct Released {
    /// Its marker set when the picture ended with it.
    pub packet: MediaPacket,
    /// The picture goes on with this spatial layer: the packet ends the picture for a receiver
    /// forwarded the layers up to one below it. 0 when nothing more is known.
    pub next_layer: Layer,
}

/// How long a packet waits for the next one before it is taken as its picture's end.
pub const HOLD_LIMIT: Duration = Duration::from_millis(200);

impl PictureEnds {
    /// The stream's next packet `next` (with its layers `l`) arrived. Returns the held packet
    /// to forward before it, if any, and whether `next` is not to be forwarded now (held
    /// itself, or a duplicate of the held one). No allocation: holding clones a packet, whose payload is shared.
    pub fn arrive(
        &mut self,
        next: &MediaPacket,
        l: Option<Vp9Layers>,
        now: Instant,
    ) -> (Option<Released>, bool) {
        let released = match self.held.take() {
            // A late packet (a retransmission) tells nothing about the held one; a duplicate
            // of it is dropped.
            Some(h) if next.seq <= h.packet.seq => {
                let duplicate = next.seq == h.packet.seq;
                self.held = Some(h);
                return (None, duplicate);
            }
            Some(Held { mut packet, .. }) if next.seq == packet.seq + 1 => {
                let next_layer = match l {
                    Some(l) if next.timestamp == packet.timestamp => l.sid,
                    _ if next.timestamp == packet.timestamp => 0,
                    _ => {
                        packet.marker = true;
                        0
                    }
                };
                Some(Released { packet, next_layer })
            }
            // Packets in between are missing: nothing is known, it goes as it came.
            Some(Held { packet, .. }) => Some(Released {
                packet,
                next_layer: 0,
            }),
            None => None,
        };
        let hold = !next.marker && l.is_some_and(|l| l.end_of_frame);
        if hold {
            self.held = Some(Held {
                packet: next.clone(),
                at: now,
            });
        }
        (released, hold)
    }

    /// The held packet once it has waited [`HOLD_LIMIT`], as the end of its picture.
    pub fn expire(&mut self, now: Instant) -> Option<MediaPacket> {
        if self
            .held
            .as_ref()
            .is_none_or(|h| now.saturating_duration_since(h.at) < HOLD_LIMIT)
        {
            return None;
        }
        let mut packet = self.held.take()?.packet;
        packet.marker = true;
        Some(packet)
    }
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

    fn packet(seq: u64, timestamp: u32, marker: bool, sid: u8) -> (MediaPacket, Option<Vp9Layers>) {
        let p = payload(sid > 0, true, true, 0, false, sid);
        let l = vp9_layers(&p);
        let m = MediaPacket {
            layer: 2,
            best: Some(2),
            seq,
            timestamp,
            marker,
            keyframe: false,
            params: None,
            red: false,
            ext: Default::default(),
            payload: p.into(),
        };
        (m, l)
    }

    #[test]
    fn a_picture_without_its_upper_layers_ends_where_the_next_one_begins() {
        let now = Instant::now();
        let mut ends = PictureEnds::default();
        // A whole picture: S0 and S1 wait for the layer after them; S2 carries the marker.
        let (s0, l0) = packet(10, 1000, false, 0);
        let (r, hold) = ends.arrive(&s0, l0, now);
        assert!(r.is_none() && hold, "the end of S0 waits");
        let (s1, l1) = packet(11, 1000, false, 1);
        let (r, hold) = ends.arrive(&s1, l1, now);
        let r = r.expect("S0 goes before S1");
        assert_eq!((r.packet.seq, r.packet.marker, r.next_layer), (10, false, 1));
        assert!(hold);
        let (s2, l2) = packet(12, 1000, true, 2);
        let (r, hold) = ends.arrive(&s2, l2, now);
        let r = r.unwrap();
        assert_eq!((r.packet.seq, r.packet.marker, r.next_layer), (11, false, 2));
        assert!(!hold, "the marked end of the picture goes at once");
        // The encoder dropped S1 and S2: the next picture's first packet ends it.
        let (a, la) = packet(13, 4000, false, 0);
        assert!(ends.arrive(&a, la, now).1);
        let (b, lb) = packet(14, 7000, false, 0);
        let (r, hold) = ends.arrive(&b, lb, now);
        let r = r.unwrap();
        assert_eq!((r.packet.seq, r.packet.marker), (13, true));
        assert!(hold);
        // A retransmission passes and the held packet keeps waiting; its duplicate is dropped.
        let (late, ll) = packet(9, 1000, false, 0);
        assert!(matches!(ends.arrive(&late, ll, now), (None, false)));
        assert!(matches!(ends.arrive(&b, lb, now), (None, true)));
        // After a gap nothing is known: it goes as it came.
        let (c, lc) = packet(17, 10000, false, 0);
        let r = ends.arrive(&c, lc, now).0.unwrap();
        assert_eq!((r.packet.seq, r.packet.marker, r.next_layer), (14, false, 0));
        // A stream that stops: its last held packet ends its picture after the limit.
        assert!(ends.expire(now).is_none());
        let last = ends.expire(now + HOLD_LIMIT).expect("released at the limit");
        assert_eq!((last.seq, last.marker), (17, true));
        assert!(ends.expire(now + HOLD_LIMIT).is_none());
        // A packet without layer indices is never held.
        let (mut plain, _) = packet(18, 13000, false, 0);
        plain.payload = vec![0x80u8, 1, 2].into();
        assert!(matches!(
            ends.arrive(&plain, vp9_layers(&plain.payload), now),
            (None, false)
        ));
    }
}
