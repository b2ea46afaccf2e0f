//! Keeps a subscriber's VP8 picture numbering continuous across simulcast layer switches.
//!
//! Each simulcast layer is its own VP8 encoder with its own PictureID, TL0PICIDX and
//! KEYIDX counters. A subscriber's decoder sees one stream, and libwebrtc's frame buffer
//! drops frames whose PictureID is older than the last one it decoded — even a keyframe.
//! So after a switch to a layer whose counters happen to be behind, every frame would be
//! discarded until the receiver gives up and asks for a keyframe (about three seconds of
//! frozen video). LiveKit's server rewrites these fields for the same reason.
//!
//! At a switch the munger picks offsets that make the new layer's first frame follow the
//! last forwarded one; the rewrite itself is a [`Vp8Patch`] that str0m applies while
//! serialising the packet, so the shared payload is never copied or modified.

use str0m::rtp::{Vp8Descriptor, Vp8Patch};

/// PictureID modulus by descriptor width.
const PICTURE_ID_15: u16 = 0x8000;
const PICTURE_ID_7: u16 = 0x80;
/// KEYIDX is five bits.
const KEY_IDX_MOD: u8 = 32;

/// Per-subscriber, per-track rewrite state.
#[derive(Debug, Clone, Default)]
pub struct Vp8Munger {
    /// What is added to an incoming PictureID, by the incoming PictureID it applies from,
    /// oldest first: each picture skipped for the subscriber's temporal layer lowers the
    /// offset of the pictures after it, and a late packet (a retransmission) takes the
    /// offset its picture had. Empty: 0.
    offsets: [(u16, u16); OFFSETS],
    len: usize,
    /// The offset of PictureIDs older than every one kept (the last forgotten).
    base: u16,
    /// The newest incoming PictureID forwarded or skipped.
    newest: Option<u16>,
    tl0_offset: u8,
    key_idx_offset: u8,
    /// Fields as last sent, for the newest packet forwarded so far.
    last: Option<Sent>,
}

/// PictureID offsets remembered: one per skipped picture, so about half a second of a 30 fps
/// stream thinned to its base layer; a retransmission comes within a round trip.
const OFFSETS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u64,
    picture_id: Option<u16>,
    tl0: Option<u8>,
    key_idx: Option<u8>,
}

impl Vp8Munger {
    /// Rewrite one forwarded packet. `out_seq` is the sequence number it goes out with and
    /// `switched` says the forwarder just changed layer at this packet. Returns the patch to
    /// apply, or `None` when the packet goes out unchanged.
    pub fn rewrite(
        &mut self,
        payload: &[u8],
        d: &Vp8Descriptor,
        out_seq: u64,
        switched: bool,
    ) -> Option<Vp8Patch> {
        let m = picture_id_modulus(payload);
        if switched {
            self.len = 0;
            self.base = 0;
            self.newest = None;
            if let Some(last) = self.last {
                if let (Some(prev), Some(now)) = (last.picture_id, d.picture_id()) {
                    self.push(now % m, (prev + 1).wrapping_sub(now) % m);
                }
                if let (Some(prev), Some(now)) = (last.tl0, d.tl0_pic_idx()) {
                    self.tl0_offset = prev.wrapping_add(1).wrapping_sub(now);
                }
                if let (Some(prev), Some(now)) = (last.key_idx, d.key_idx()) {
                    self.key_idx_offset = (prev + 1).wrapping_sub(now) % KEY_IDX_MOD;
                }
            }
        }
        let (picture_id, picture_offset) = match d.picture_id().map(|p| p % m) {
            Some(p) => {
                self.saw(p, m);
                let o = self.offset_for(p, m);
                (Some(p.wrapping_add(o) % m), o)
            }
            None => (None, 0),
        };
        let tl0 = d.tl0_pic_idx().map(|t| t.wrapping_add(self.tl0_offset));
        let key_idx = d
            .key_idx()
            .map(|k| k.wrapping_add(self.key_idx_offset) % KEY_IDX_MOD);
        if self.last.is_none_or(|l| out_seq > l.seq) {
            self.last = Some(Sent {
                seq: out_seq,
                picture_id,
                tl0,
                key_idx,
            });
        }
        if picture_offset == 0 && self.tl0_offset == 0 && self.key_idx_offset == 0 {
            return None;
        }
        let mut b = d.patch();
        if let Some(p) = picture_id {
            b = b.picture_id(p);
        }
        if let Some(t) = tl0 {
            b = b.tl0_pic_idx(t);
        }
        if let Some(k) = key_idx {
            b = b.key_idx(k);
        }
        // Every value was reduced to its field's width, so building cannot fail; if it ever
        // did, sending the packet unchanged is the safe fallback.
        b.build().ok()
    }

    /// The last `n` packets rewritten never left (`Forwarder::rewind`): the numbering goes on
    /// from before them. Their PictureIDs stay used; the keyframe that follows needs no
    /// frame before it.
    pub fn rewind(&mut self, n: u64) {
        if let Some(last) = &mut self.last {
            last.seq = last.seq.wrapping_sub(n);
        }
    }

    /// A packet the subscriber will not see (its temporal layer is dropped): the first of its
    /// picture to come (whichever packet that is: the one that began the picture may have
    /// been lost) makes the PictureIDs after it close over the picture, so the receiver sees
    /// no missing frame.
    pub fn skip(&mut self, payload: &[u8], d: &Vp8Descriptor) {
        let m = picture_id_modulus(payload);
        let Some(p) = d.picture_id().map(|p| p % m) else {
            return;
        };
        if !self.saw(p, m) {
            return;
        }
        let offset = self.offset_for(p, m).wrapping_add(m - 1) % m;
        self.push((p + 1) % m, offset);
    }

    /// Note incoming PictureID `p`; true when it is newer than any seen before.
    fn saw(&mut self, p: u16, m: u16) -> bool {
        let newer = self.newest.is_none_or(|n| n != p && at_or_after(p, n, m));
        if newer {
            self.newest = Some(p);
        }
        newer
    }

    /// The offset for incoming PictureID `p`: the newest one that applies from it or before.
    fn offset_for(&self, p: u16, m: u16) -> u16 {
        self.offsets[..self.len]
            .iter()
            .rev()
            .find(|&&(from, _)| at_or_after(p, from, m))
            .map_or(self.base, |&(_, o)| o)
    }

    fn push(&mut self, from: u16, offset: u16) {
        if self.len == OFFSETS {
            self.base = self.offsets[0].1;
            self.offsets.copy_within(1.., 0);
            self.len -= 1;
        }
        self.offsets[self.len] = (from, offset);
        self.len += 1;
    }
}

/// `a` is `b` or comes after it, PictureIDs counting modulo `m` (a power of two: a stream
/// may switch between the 7- and 15-bit forms, so `b` may be wider than `m`).
fn at_or_after(a: u16, b: u16, m: u16) -> bool {
    a.wrapping_sub(b) % m < m / 2
}

/// Modulus of the PictureID field: 2^15 when the descriptor carries the 15-bit form (M bit
/// set, as libwebrtc always sends), else 2^7.
fn picture_id_modulus(payload: &[u8]) -> u16 {
    match payload {
        [x, ext, pid, ..] if x & 0x80 != 0 && ext & 0x80 != 0 && pid & 0x80 != 0 => PICTURE_ID_15,
        _ => PICTURE_ID_7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VP8 payload with a 15-bit PictureID, TL0PICIDX and TID/KEYIDX, then one byte of
    /// VP8 payload header (keyframe bit clear when `key`).
    fn payload(picture_id: u16, tl0: u8, key_idx: u8, key: bool) -> Vec<u8> {
        vec![
            0x90, // X=1, S=1, PID=0
            0xf0, // I, L, T, K
            0x80 | (picture_id >> 8) as u8,
            picture_id as u8,
            tl0,
            key_idx & 0x1f,
            if key { 0x00 } else { 0x01 },
            0,
            0,
        ]
    }

    fn rewrite(m: &mut Vp8Munger, p: &[u8], seq: u64, switched: bool) -> Option<Vp8Patch> {
        m.rewrite(p, &Vp8Descriptor::parse(p).unwrap(), seq, switched)
    }

    fn sent(m: &Vp8Munger) -> (Option<u16>, Option<u8>, Option<u8>) {
        let s = m.last.unwrap();
        (s.picture_id, s.tl0, s.key_idx)
    }

    #[test]
    fn unchanged_until_the_first_switch() {
        let mut m = Vp8Munger::default();
        for (i, pid) in (100..110u16).enumerate() {
            let p = payload(pid, 7, 1, i == 0);
            assert!(rewrite(&mut m, &p, i as u64, i == 0).is_none());
        }
        assert_eq!(sent(&m), (Some(109), Some(7), Some(1)));
    }

    #[test]
    fn a_switch_to_a_layer_behind_continues_the_numbering() {
        let mut m = Vp8Munger::default();
        for (i, pid) in (20_000..20_010u16).enumerate() {
            rewrite(&mut m, &payload(pid, 50, 4, false), i as u64, i == 0);
        }
        // The new layer's counters are far behind: a receiver would drop its frames.
        assert!(rewrite(&mut m, &payload(300, 9, 0, true), 10, true).is_some());
        assert_eq!(sent(&m), (Some(20_010), Some(51), Some(5)));
        // Following frames of the new layer keep the same offset.
        assert!(rewrite(&mut m, &payload(301, 10, 0, false), 11, false).is_some());
        assert_eq!(sent(&m), (Some(20_011), Some(52), Some(5)));
        // A late packet of the old layer does not move the reference point.
        rewrite(&mut m, &payload(20_009, 50, 4, false), 9, false);
        assert_eq!(sent(&m), (Some(20_011), Some(52), Some(5)));
    }

    fn skip(m: &mut Vp8Munger, p: &[u8]) {
        m.skip(p, &Vp8Descriptor::parse(p).unwrap());
    }

    #[test]
    fn pictures_of_a_dropped_temporal_layer_leave_no_gap() {
        let mut m = Vp8Munger::default();
        rewrite(&mut m, &payload(10, 1, 0, true), 0, true);
        // Picture 11 is not sent (two packets); 12 goes out as 11.
        skip(&mut m, &payload(11, 1, 0, false));
        skip(&mut m, &payload(11, 1, 0, false));
        assert!(rewrite(&mut m, &payload(12, 2, 0, false), 1, false).is_some());
        assert_eq!(sent(&m), (Some(11), Some(2), Some(0)));
        // At 15 bits, 0 follows 0x7fff.
        let mut w = Vp8Munger::default();
        rewrite(&mut w, &payload(0x7ffe, 1, 0, true), 0, true);
        skip(&mut w, &payload(0x7fff, 1, 0, false));
        rewrite(&mut w, &payload(0, 1, 0, false), 1, false);
        assert_eq!(sent(&w).0, Some(0x7fff));
    }

    #[test]
    fn a_skipped_picture_is_closed_over_whichever_of_its_packets_comes_first() {
        let mut m = Vp8Munger::default();
        rewrite(&mut m, &payload(10, 1, 0, true), 0, true);
        // Picture 11's first packet was lost before the server; its second is skipped, and
        // so is the first when it comes again, late.
        skip(&mut m, &payload(11, 1, 0, false));
        rewrite(&mut m, &payload(12, 2, 0, false), 1, false);
        skip(&mut m, &payload(11, 1, 0, false));
        assert_eq!(sent(&m).0, Some(11));
        rewrite(&mut m, &payload(13, 2, 0, false), 2, false);
        assert_eq!(sent(&m).0, Some(12), "one picture closed over, once");
    }

    #[test]
    fn a_late_packet_keeps_the_picture_id_its_picture_went_out_with() {
        let mut m = Vp8Munger::default();
        rewrite(&mut m, &payload(10, 1, 0, true), 0, true);
        // A packet of picture 11 was lost; picture 12 is skipped before it comes again.
        rewrite(&mut m, &payload(11, 2, 0, false), 2, false);
        skip(&mut m, &payload(12, 2, 0, false));
        rewrite(&mut m, &payload(13, 3, 0, false), 3, false);
        assert_eq!(sent(&m).0, Some(12));
        let late = payload(11, 2, 0, false);
        assert!(
            rewrite(&mut m, &late, 1, false).is_none(),
            "picture 11 goes out as 11, unchanged"
        );
        // A whole picture lost and sent late goes out in the room left for it.
        let mut w = Vp8Munger::default();
        rewrite(&mut w, &payload(20, 1, 0, true), 0, true);
        skip(&mut w, &payload(21, 1, 0, false));
        rewrite(&mut w, &payload(23, 2, 0, false), 2, false);
        assert_eq!(sent(&w).0, Some(22));
        skip(&mut w, &payload(24, 2, 0, false));
        assert!(rewrite(&mut w, &payload(22, 1, 0, false), 1, false).is_some());
        assert_eq!(
            w.offset_for(22, PICTURE_ID_15),
            PICTURE_ID_15 - 1,
            "22 goes out as 21"
        );
        assert_eq!(w.offset_for(25, PICTURE_ID_15), PICTURE_ID_15 - 2, "25 as 23");
        // Offsets older than the sixteen kept are the last one forgotten.
        for p in 26..46 {
            skip(&mut w, &payload(p, 2, 0, false));
        }
        assert_eq!(w.offset_for(30, PICTURE_ID_15), PICTURE_ID_15 - 6);
        assert_eq!(w.offset_for(22, PICTURE_ID_15), PICTURE_ID_15 - 6, "forgotten");
    }

    #[test]
    fn picture_ids_wrap_at_fifteen_bits() {
        let mut m = Vp8Munger::default();
        rewrite(&mut m, &payload(0x7fff, 255, 31, true), 0, true);
        rewrite(&mut m, &payload(5000, 0, 0, true), 1, true);
        assert_eq!(sent(&m), (Some(0), Some(0), Some(0)));
    }
}
