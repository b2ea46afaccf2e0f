//! Per-subscriber forwarding state for one track: which layer goes out, and how sequence
//! numbers and timestamps are rewritten so the subscriber sees one continuous stream.
//!
//! Pure arithmetic on numbers the caller extracts from the packet; no allocation, no clock.
//! Layer choice policy lives in the caller: it sets a target, and the forwarder switches to
//! it at the next keyframe of that layer (a decoder cannot start mid-GOP).
//!
//! Within a simulcast layer that has temporal layers (`temporal.rs`), the forwarder also
//! keeps a temporal target: frames above it are dropped and the outgoing sequence numbers
//! close over them, so the subscriber sees a continuous stream at a lower frame rate. It goes
//! down at the next frame start and up at the next frame start of a higher layer that is a
//! layer sync (Y), as LiveKit's VP8 selector does.

use std::time::{Duration, Instant};

use crate::temporal::{Temporal, TOP_TEMPORAL};

/// Simulcast layer index: 0 = low (`q`, or the only layer), 1 = medium (`h`), 2 = high (`f`).
pub type Layer = u8;

/// Highest layer index we track.
pub const MAX_LAYERS: usize = 3;
/// The top layer (`f`).
pub const TOP_LAYER: Layer = MAX_LAYERS as Layer - 1;

/// Map a simulcast rid to a layer index, as LiveKit's SDKs name them.
pub fn layer_for_rid(rid: Option<&str>) -> Layer {
    match rid {
        Some("f") => 2,
        Some("h") => 1,
        _ => 0,
    }
}

/// What to do with one incoming packet for one subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send it with these rewritten numbers; `switched` marks the first packet of a newly
    /// selected layer (codec-level numbering may need rebasing there).
    Forward {
        seq: u64,
        timestamp: u32,
        switched: bool,
        /// The last packet of the highest spatial layer this subscriber gets of the picture
        /// (SVC): it carries the RTP marker that the dropped layers above would have.
        end_of_picture: bool,
    },
    /// Not for this subscriber (other layer, stale, or waiting for a keyframe).
    Drop,
    /// The newest packet of the current layer, above the subscriber's spatial or temporal
    /// layer: not sent, and the outgoing numbering closes over it (and, for VP8, the PictureID
    /// numbering over its picture: `vp8_munger.rs`).
    Skip,
}

/// Runs of incoming sequence numbers skipped for the temporal layer since the last layer
/// switch (start, end exclusive), oldest first: a late packet (a retransmission, say) goes
/// out under the number it would have had, so its outgoing number is found by counting the
/// skips after it.
#[derive(Debug, Clone, Copy, Default)]
struct Skipped {
    runs: [(u64, u64); SKIP_RUNS],
    len: usize,
    /// Packets older than this can no longer be numbered (their runs were forgotten).
    horizon: u64,
}

/// Skipped runs remembered: a run is one dropped frame, so about half a second of a 30 fps
/// stream thinned to its base layer.
const SKIP_RUNS: usize = 16;

impl Skipped {
    fn clear(&mut self, from: u64) {
        self.len = 0;
        self.horizon = from;
    }

    fn push(&mut self, seq: u64) {
        if self.len > 0 && self.runs[self.len - 1].1 == seq {
            self.runs[self.len - 1].1 = seq + 1;
            return;
        }
        if self.len == SKIP_RUNS {
            self.horizon = self.runs[0].1;
            self.runs.copy_within(1.., 0);
            self.len -= 1;
        }
        self.runs[self.len] = (seq, seq + 1);
        self.len += 1;
    }

    /// How many skipped numbers come after `seq`; `None` when `seq` is past what is
    /// remembered or was itself skipped.
    fn after(&self, seq: u64) -> Option<u64> {
        if seq < self.horizon {
            return None;
        }
        let mut n = 0;
        for &(a, b) in self.runs[..self.len].iter().rev() {
            if seq >= b {
                break;
            }
            if seq >= a {
                return None;
            }
            n += b - a;
        }
        Some(n)
    }
}

/// Forwarding state of one subscribed track.
#[derive(Debug, Clone)]
pub struct Forwarder {
    current: Option<Layer>,
    target: Option<Layer>,
    seq_offset: u64,
    ts_offset: u32,
    /// First incoming sequence number forwarded from the current layer.
    switch_seq: u64,
    /// Highest incoming sequence number of the current layer forwarded or skipped.
    highest_in: u64,
    last_out: Option<Out>,
    clock_rate: u32,
    /// The temporal layer forwarded now, and the one to converge to on each simulcast layer
    /// (a layer the forwarder is leaving or climbing from can have another than the one it
    /// converges to: `DownTrack::temporal_targets`).
    temporal: u8,
    temporal_target: [u8; MAX_LAYERS],
    /// Within an SVC stream (`svc.rs`): the highest spatial layer forwarded now, and the one
    /// to converge to.
    spatial: Layer,
    spatial_target: Layer,
    skipped: Skipped,
    /// RTP timestamps of the pictures skipped last, newest at `skipped_at`: a late packet of
    /// one of them is dropped with the rest of its picture.
    skipped_pictures: [Option<u32>; SKIPPED_PICTURES],
    skipped_at: usize,
}

/// Skipped pictures remembered by timestamp (a retransmission comes within a round trip, a
/// few frames at most).
const SKIPPED_PICTURES: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Out {
    seq: u64,
    timestamp: u32,
    at: Instant,
}

impl Forwarder {
    /// A forwarder for a stream with the given RTP clock rate (90 kHz video, 48 kHz audio).
    pub fn new(clock_rate: u32) -> Self {
        Self {
            current: None,
            target: Some(0),
            seq_offset: 0,
            ts_offset: 0,
            switch_seq: 0,
            highest_in: 0,
            last_out: None,
            clock_rate,
            temporal: TOP_TEMPORAL,
            temporal_target: [TOP_TEMPORAL; MAX_LAYERS],
            spatial: TOP_LAYER,
            spatial_target: TOP_LAYER,
            skipped: Skipped::default(),
            skipped_pictures: [None; SKIPPED_PICTURES],
            skipped_at: 0,
        }
    }

    /// The highest spatial layer of an SVC stream forwarded now.
    pub fn spatial(&self) -> Layer {
        self.spatial
    }

    /// The highest spatial layer of an SVC stream to converge to.
    pub fn spatial_target(&self) -> Layer {
        self.spatial_target
    }

    /// Choose the highest spatial layer of an SVC stream to converge to: down at the next
    /// picture, up at the next key picture. Streams without spatial layers ignore it.
    pub fn set_spatial_target(&mut self, s: Layer) {
        self.spatial_target = s.min(TOP_LAYER);
    }

    /// True while an SVC stream's spatial target is above what is forwarded: only a key
    /// picture can raise it.
    pub fn wants_key_picture(&self) -> bool {
        self.current.is_some() && self.spatial_target > self.spatial
    }

    /// The temporal layer forwarded now (frames above it are dropped).
    pub fn temporal(&self) -> u8 {
        self.temporal
    }

    /// The temporal layer to converge to on the layer forwarded now (or, before any, on the
    /// target).
    pub fn temporal_target(&self) -> u8 {
        self.temporal_target_of(self.current.or(self.target).unwrap_or(0))
    }

    /// The temporal layer to converge to on simulcast layer `layer`.
    fn temporal_target_of(&self, layer: Layer) -> u8 {
        self.temporal_target[usize::from(layer.min(TOP_LAYER))]
    }

    /// Choose the temporal layer to converge to on every layer (0: the base layer only;
    /// [`TOP_TEMPORAL`]: every frame). Streams without temporal layers ignore it.
    pub fn set_temporal_target(&mut self, t: u8) {
        self.set_temporal_targets([t; MAX_LAYERS]);
    }

    /// Choose the temporal layer to converge to on each simulcast layer: the one forwarded
    /// now follows its own, and a switch to another starts on that layer's.
    pub fn set_temporal_targets(&mut self, targets: [u8; MAX_LAYERS]) {
        self.temporal_target = targets.map(|t| t.min(TOP_TEMPORAL));
    }

    pub fn current(&self) -> Option<Layer> {
        self.current
    }

    pub fn target(&self) -> Option<Layer> {
        self.target
    }

    /// True while the target layer is not yet being forwarded (a keyframe is needed).
    pub fn wants_keyframe(&self) -> bool {
        self.target.is_some() && self.target != self.current
    }

    /// Choose the layer to converge to; `None` pauses the track.
    pub fn set_target(&mut self, target: Option<Layer>) {
        self.target = target;
        if target.is_none() {
            self.current = None;
        }
    }

    /// Start over on another stream (a section given to a new track, or a track subscribed
    /// again), sequence numbers and timestamps continuing where this forwarder stopped. Audio
    /// resumes at its next packet. Video waits for a target, which its first packet sets, and
    /// until then wishes for every layer up to the receiver's cap (`DownTrack::wanted_layers`),
    /// so that whichever layer the publisher sends can start it.
    pub fn restart(&mut self, audio: bool) {
        self.current = None;
        self.target = audio.then_some(0);
    }

    /// Decide for one packet of `layer` with extended sequence `seq` and RTP `timestamp`.
    /// `keyframe_start` says whether it begins a keyframe (always true for audio); `temporal`
    /// is its temporal layer, when the stream has them.
    pub fn on_packet(
        &mut self,
        layer: Layer,
        seq: u64,
        timestamp: u32,
        keyframe_start: bool,
        temporal: Option<Temporal>,
        now: Instant,
    ) -> Decision {
        self.decide(layer, seq, timestamp, keyframe_start, temporal, None, now)
    }

    /// [`Self::on_packet`] for a packet of an SVC stream (`svc.rs`): it starts a keyframe only
    /// at a key picture's first packet, and spatial layers above the subscriber's are dropped
    /// with the outgoing numbering closed over them.
    pub fn on_svc_packet(
        &mut self,
        layer: Layer,
        seq: u64,
        timestamp: u32,
        l: crate::svc::Vp9Layers,
        now: Instant,
    ) -> Decision {
        self.decide(
            layer,
            seq,
            timestamp,
            l.key_picture,
            Some(l.temporal),
            Some(l),
            now,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        layer: Layer,
        seq: u64,
        timestamp: u32,
        keyframe_start: bool,
        temporal: Option<Temporal>,
        svc: Option<crate::svc::Vp9Layers>,
        now: Instant,
    ) -> Decision {
        // Converge on the target at its keyframe. While nothing is forwarded yet, start on the
        // first keyframe of any layer up to the target: a subscriber sees video as soon as
        // possible, and moves up when the target layer's keyframe comes.
        let starting = self.current.is_none() && self.target.is_some_and(|t| layer <= t);
        let switched =
            keyframe_start && self.current != self.target && (Some(layer) == self.target || starting);
        if switched {
            self.switch_to(layer, seq, timestamp, now);
        }
        if Some(layer) != self.current || seq < self.switch_seq {
            return Decision::Drop;
        }
        // A duplicate of the newest packet is not newer: skipping it again would shift the
        // numbering of everything after it.
        let newest = switched || seq > self.highest_in;
        let mut end_of_picture = false;
        if let Some(l) = svc {
            // Down at any picture, up only at a key picture (the layers above refer to the
            // ones below only there).
            let moves =
                self.spatial_target < self.spatial || (l.key_picture && self.spatial_target > self.spatial);
            if l.temporal.frame_start && newest && moves {
                self.spatial = self.spatial_target;
            }
            if l.sid > self.spatial {
                return self.skip(seq, timestamp, newest && !switched);
            }
            end_of_picture = l.end_of_frame && l.sid == self.spatial;
        }
        if let Some(t) = temporal {
            let target = self.temporal_target_of(layer);
            if t.frame_start && newest {
                if target < self.temporal {
                    self.temporal = target;
                } else if t.tid > self.temporal && t.tid <= target && t.sync {
                    self.temporal = t.tid;
                }
            }
            if t.tid > self.temporal {
                // A late packet above the temporal layer (a retransmission of what was lost
                // on the way here) goes out in its place when its picture was never seen:
                // which layer that picture was could not be told when the frames after it
                // went out, so their numbering left room for it, and a libwebrtc receiver
                // holds back the frames after the hole that are neither base layer nor layer
                // sync (LiveKit forwards such packets too). Of a picture that was skipped, it
                // is dropped with the rest of it.
                if newest || self.skipped_pictures.contains(&Some(timestamp)) {
                    return self.skip(seq, timestamp, newest && !switched);
                }
            }
        }
        let out_seq = if newest {
            self.highest_in = seq;
            seq.wrapping_add(self.seq_offset)
        } else {
            // Late: numbered as it would have been, before the skips that followed it.
            match self.skipped.after(seq) {
                Some(n) => seq.wrapping_add(self.seq_offset).wrapping_add(n),
                None => return Decision::Drop,
            }
        };
        let out_ts = timestamp.wrapping_add(self.ts_offset);
        let newest = self.last_out.is_none_or(|o| out_seq > o.seq);
        if newest {
            self.last_out = Some(Out {
                seq: out_seq,
                timestamp: out_ts,
                at: now,
            });
        }
        Decision::Forward {
            seq: out_seq,
            timestamp: out_ts,
            switched,
            end_of_picture,
        }
    }

    /// A packet above the subscriber's spatial or temporal layer: the newest is skipped (the
    /// outgoing numbering closes over it, and its picture is remembered by `timestamp`),
    /// anything else (late, or the first of a switch) dropped.
    fn skip(&mut self, seq: u64, timestamp: u32, newest: bool) -> Decision {
        if !newest {
            return Decision::Drop;
        }
        self.seq_offset = self.seq_offset.wrapping_sub(1);
        self.skipped.push(seq);
        self.highest_in = seq;
        if self.skipped_pictures[self.skipped_at] != Some(timestamp) {
            self.skipped_at = (self.skipped_at + 1) % SKIPPED_PICTURES;
            self.skipped_pictures[self.skipped_at] = Some(timestamp);
        }
        Decision::Skip
    }

    /// The last `n` packets forwarded never left (`forward.rs` discarded them from the send
    /// queue at a switch): number what comes next as if they had never been forwarded, so the
    /// receiver sees no hole to ask for. Only the newest packet forwarded, the one the
    /// discarded ones preceded, is renumbered by the caller.
    pub fn rewind(&mut self, n: u64) {
        self.seq_offset = self.seq_offset.wrapping_sub(n);
        if let Some(last) = &mut self.last_out {
            last.seq = last.seq.wrapping_sub(n);
        }
    }

    fn switch_to(&mut self, layer: Layer, seq: u64, timestamp: u32, now: Instant) {
        match self.last_out {
            None => {
                self.seq_offset = 0;
                self.ts_offset = 0;
            }
            Some(last) => {
                self.seq_offset = (last.seq + 1).wrapping_sub(seq);
                let elapsed = now
                    .saturating_duration_since(last.at)
                    .max(Duration::from_millis(1));
                let ticks = elapsed.as_micros() as u64 * u64::from(self.clock_rate) / 1_000_000;
                let out_ts = last.timestamp.wrapping_add(ticks.max(1) as u32);
                self.ts_offset = out_ts.wrapping_sub(timestamp);
            }
        }
        self.switch_seq = seq;
        self.highest_in = seq;
        self.skipped.clear(seq);
        // A keyframe: every frame after it can be decoded, whatever its temporal layer, and
        // (a key picture) up to any spatial layer.
        self.temporal = self.temporal_target_of(layer);
        self.spatial = self.spatial_target;
        self.current = Some(layer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_keyframe_starts_forwarding_unchanged() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000);
        assert_eq!(f.on_packet(0, 10, 1000, false, None, t), Decision::Drop);
        assert_eq!(
            f.on_packet(0, 11, 1000, true, None, t),
            Decision::Forward {
                seq: 11,
                timestamp: 1000,
                switched: true,
                end_of_picture: false
            }
        );
        assert_eq!(
            f.on_packet(0, 12, 4000, false, None, t),
            Decision::Forward {
                seq: 12,
                timestamp: 4000,
                switched: false,
                end_of_picture: false
            }
        );
    }

    #[test]
    fn a_rewind_at_a_switch_numbers_on_from_the_last_packet_that_left() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000);
        f.set_target(Some(1));
        for seq in 100..110 {
            f.on_packet(1, seq, 5000, seq == 100, None, t);
        }
        // 109 went out as 109; the low layer's keyframe switches to it at 110, and the
        // four packets before it (106..=109) never left.
        f.set_target(Some(0));
        let Decision::Forward {
            seq, switched: true, ..
        } = f.on_packet(0, 40, 900, true, None, t)
        else {
            panic!("switch expected")
        };
        assert_eq!(seq, 110);
        f.rewind(4);
        // The caller sends the keyframe's first packet as 106; the next follow it.
        for (incoming, out) in [(41, 107), (42, 108)] {
            let Decision::Forward { seq, .. } = f.on_packet(0, incoming, 900, false, None, t) else {
                panic!("forward expected")
            };
            assert_eq!(seq, out);
        }
    }

    #[test]
    fn switching_layers_keeps_sequence_continuous() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000);
        f.on_packet(0, 100, 5000, true, None, t);
        f.set_target(Some(2));
        assert!(f.wants_keyframe());
        // High layer delta frame: dropped; low layer still flows.
        assert_eq!(f.on_packet(2, 7000, 90, false, None, t), Decision::Drop);
        assert_eq!(
            f.on_packet(0, 101, 5000, false, None, t),
            Decision::Forward {
                seq: 101,
                timestamp: 5000,
                switched: false,
                end_of_picture: false
            }
        );
        // High layer keyframe: switch, sequence continues at 102.
        let later = t + Duration::from_millis(33);
        let Decision::Forward {
            seq,
            timestamp,
            switched: true,
            ..
        } = f.on_packet(2, 7001, 90, true, None, later)
        else {
            panic!("switch expected")
        };
        assert_eq!(seq, 102);
        assert_eq!(timestamp, 5000 + 2970);
        assert_eq!(f.on_packet(0, 102, 8000, false, None, later), Decision::Drop);
        assert_eq!(
            f.on_packet(2, 7000, 90, false, None, later),
            Decision::Drop,
            "stale packet of new layer"
        );
    }

    #[test]
    fn starts_on_a_lower_layer_while_the_target_has_no_keyframe_yet() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000);
        f.set_target(Some(1));
        // The target layer is announced but sends no keyframe; the low layer's keyframe starts
        // the stream rather than leaving the subscriber with no video.
        assert_eq!(f.on_packet(1, 500, 10, false, None, t), Decision::Drop);
        assert!(matches!(
            f.on_packet(0, 40, 90, true, None, t),
            Decision::Forward { .. }
        ));
        assert_eq!(f.current(), Some(0));
        assert!(f.wants_keyframe(), "still converging on the target");
        // Layers above the target never start the stream.
        let mut g = Forwarder::new(90_000);
        g.set_target(Some(0));
        assert_eq!(g.on_packet(2, 9, 90, true, None, t), Decision::Drop);
        // A paused track starts on nothing.
        g.set_target(None);
        assert_eq!(g.on_packet(0, 9, 90, true, None, t), Decision::Drop);
    }

    /// Frames of one packet each in libwebrtc's three-layer pattern (T0 T2 T1 T2 ...), the
    /// first a keyframe; the first T1 and T2 after each T0 are layer syncs.
    fn temporal_frame(i: u64) -> Temporal {
        let tid = [0, 2, 1, 2][(i % 4) as usize];
        Temporal {
            tid,
            sync: i % 4 == 1 || i % 4 == 2,
            frame_start: true,
        }
    }

    fn sent(f: &mut Forwarder, seqs: std::ops::Range<u64>, t: Instant) -> Vec<u64> {
        seqs.filter_map(
            |i| match f.on_packet(0, i, i as u32 * 3000, i == 0, Some(temporal_frame(i)), t) {
                Decision::Forward { seq, .. } => Some(seq),
                _ => None,
            },
        )
        .collect()
    }

    #[test]
    fn a_temporal_target_thins_frames_and_the_numbering_stays_continuous() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000);
        f.set_temporal_target(0);
        // Only the T0 frames (every fourth) go out, numbered one after another.
        assert_eq!(sent(&mut f, 0..12, t), vec![0, 1, 2]);
        assert_eq!(f.temporal(), 0);
        // Up to T1: from its next sync frame (12 is T0, 14 the T1 sync).
        f.set_temporal_target(1);
        assert_eq!(sent(&mut f, 12..20, t), vec![3, 4, 5, 6]);
        assert_eq!(f.temporal(), 1);
        // Up to every frame: from the next T2 sync (21).
        f.set_temporal_target(2);
        assert_eq!(sent(&mut f, 20..24, t), vec![7, 8, 9, 10]);
        // Down again: at the next frame start, without a gap.
        f.set_temporal_target(0);
        assert_eq!(sent(&mut f, 24..29, t), vec![11, 12]);
    }

    #[test]
    fn each_layer_follows_its_own_temporal_target_across_a_switch() {
        let t = Instant::now();
        let frame = |f: &mut Forwarder, layer: Layer, i: u64, key: bool| {
            let ts = i as u32 * 3000;
            matches!(
                f.on_packet(layer, i, ts, key, Some(temporal_frame(i)), t),
                Decision::Forward { .. }
            )
        };
        let mut f = Forwarder::new(90_000);
        // Climbing from layer 0 to layer 1 at 7.5 fps: layer 0 keeps every frame while the
        // layer 1 keyframe is awaited.
        f.set_temporal_targets([2, 0, 0]);
        f.set_target(Some(0));
        assert!(frame(&mut f, 0, 0, true));
        f.set_target(Some(1));
        let kept = (1..8).filter(|&i| frame(&mut f, 0, i, false)).count();
        assert_eq!(kept, 7, "every frame of the layer the climb starts from");
        assert_eq!(f.temporal_target(), 2);
        // Layer 1's keyframe: from there its own target, the base only.
        assert!(frame(&mut f, 1, 100, true));
        assert_eq!(f.current(), Some(1));
        assert_eq!(f.temporal(), 0);
        let kept: Vec<u64> = (101..109).filter(|&i| frame(&mut f, 1, i, false)).collect();
        assert_eq!(kept, vec![104, 108], "T0 frames only");
        // Granted every frame of layer 1: from its next T2 sync (109) on.
        f.set_temporal_targets([2, 2, 0]);
        let kept = (109..113).filter(|&i| frame(&mut f, 1, i, false)).count();
        assert_eq!(kept, 4);
        // Falling back to layer 0: layer 1 drops to its base at once, before layer 0's
        // keyframe comes.
        f.set_temporal_targets([2, 0, 0]);
        f.set_target(Some(0));
        let kept: Vec<u64> = (113..121).filter(|&i| frame(&mut f, 1, i, false)).collect();
        assert_eq!(kept, vec![116, 120]);
        assert!(frame(&mut f, 0, 121, true));
        assert_eq!((f.current(), f.temporal()), (Some(0), 2));
    }

    #[test]
    fn a_skipped_frame_says_so_and_a_late_packet_keeps_its_number() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000);
        f.set_temporal_target(1);
        let base = |i| Temporal {
            tid: 0,
            sync: false,
            frame_start: i == 0,
        };
        // A T0 frame of two packets (0, 1), then a T2 frame (2), then T0 (3) while 1 is lost.
        assert!(matches!(
            f.on_packet(0, 0, 0, true, Some(base(0)), t),
            Decision::Forward { seq: 0, .. }
        ));
        let t2 = Temporal {
            tid: 2,
            sync: true,
            frame_start: true,
        };
        assert_eq!(f.on_packet(0, 2, 3000, false, Some(t2), t), Decision::Skip);
        assert!(matches!(
            f.on_packet(0, 3, 6000, false, Some(base(0)), t),
            Decision::Forward { seq: 2, .. }
        ));
        // 1 arrives late (a retransmission): it keeps the number it would have had.
        assert!(matches!(
            f.on_packet(0, 1, 0, false, Some(base(1)), t),
            Decision::Forward { seq: 1, .. }
        ));
        // A late packet of the skipped frame stays dropped.
        assert_eq!(f.on_packet(0, 2, 3000, false, Some(t2), t), Decision::Drop);
        // A skipped packet arriving twice in a row is skipped once: the numbering after it
        // does not shift.
        assert_eq!(f.on_packet(0, 4, 9000, false, Some(t2), t), Decision::Skip);
        assert_eq!(f.on_packet(0, 4, 9000, false, Some(t2), t), Decision::Drop);
        assert!(matches!(
            f.on_packet(0, 5, 12000, false, Some(base(0)), t),
            Decision::Forward { seq: 3, .. }
        ));
        // A forwarded packet arriving twice goes out under the same number.
        assert!(matches!(
            f.on_packet(0, 5, 12000, false, Some(base(0)), t),
            Decision::Forward { seq: 3, .. }
        ));
    }

    #[test]
    fn a_late_frame_above_the_temporal_layer_goes_out_in_its_place_unless_it_was_skipped() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000);
        f.set_temporal_target(1);
        let frame = |tid, start| Temporal {
            tid,
            sync: false,
            frame_start: start,
        };
        assert!(matches!(
            f.on_packet(0, 0, 0, true, Some(frame(0, true)), t),
            Decision::Forward { seq: 0, .. }
        ));
        // A T2 frame (1) is lost whole before the server; T1 (2) comes, numbered after it.
        assert!(matches!(
            f.on_packet(0, 2, 6000, false, Some(frame(1, true)), t),
            Decision::Forward { seq: 2, .. }
        ));
        // Its retransmission: nothing said which layer it was when 2 went out, so it fills
        // the place 2 left for it (a receiver would wait for it otherwise).
        assert!(matches!(
            f.on_packet(0, 1, 3000, false, Some(frame(2, true)), t),
            Decision::Forward { seq: 1, .. }
        ));
        // A T2 frame whose first packet (3) was lost: its second (4) is skipped, and the
        // first, late, is dropped with it.
        assert_eq!(
            f.on_packet(0, 4, 9000, false, Some(frame(2, false)), t),
            Decision::Skip
        );
        assert!(matches!(
            f.on_packet(0, 5, 12000, false, Some(frame(0, true)), t),
            Decision::Forward { seq: 4, .. }
        ));
        assert_eq!(
            f.on_packet(0, 3, 9000, false, Some(frame(2, true)), t),
            Decision::Drop
        );
        // A T1 frame forwarded before the layer went down to T0 keeps its late packets.
        assert!(matches!(
            f.on_packet(0, 6, 15000, false, Some(frame(1, true)), t),
            Decision::Forward { seq: 5, .. }
        ));
        f.set_temporal_target(0);
        assert!(matches!(
            f.on_packet(0, 8, 18000, false, Some(frame(0, true)), t),
            Decision::Forward { seq: 7, .. }
        ));
        assert!(matches!(
            f.on_packet(0, 7, 15000, false, Some(frame(1, false)), t),
            Decision::Forward { seq: 6, .. }
        ));
    }

    #[test]
    fn a_late_frame_stamped_zero_that_was_never_skipped_goes_out_too() {
        // Before anything was skipped, no picture counts as skipped: not even one whose RTP
        // timestamp is 0, where the clock wraps.
        let t = Instant::now();
        let mut f = Forwarder::new(90_000);
        f.set_temporal_target(1);
        let frame = |tid| Temporal {
            tid,
            sync: false,
            frame_start: true,
        };
        assert!(matches!(
            f.on_packet(0, 10, u32::MAX - 2999, true, Some(frame(0)), t),
            Decision::Forward { seq: 10, .. }
        ));
        assert!(matches!(
            f.on_packet(0, 12, 3000, false, Some(frame(1)), t),
            Decision::Forward { seq: 12, .. }
        ));
        assert!(matches!(
            f.on_packet(0, 11, 0, false, Some(frame(2)), t),
            Decision::Forward { seq: 11, .. }
        ));
    }

    #[test]
    fn many_skips_forget_the_oldest_and_late_packets_before_them_are_dropped() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000);
        f.set_temporal_target(0);
        let sent = sent(&mut f, 0..200, t);
        assert_eq!(sent, (0..50).collect::<Vec<_>>());
        // Packet 4 (T0) arriving again long after: its skips are forgotten, so it is dropped
        // rather than sent under a wrong number.
        let late = Temporal {
            tid: 0,
            sync: false,
            frame_start: true,
        };
        assert_eq!(f.on_packet(0, 4, 0, false, Some(late), t), Decision::Drop);
        // A recent one is numbered as before.
        assert!(matches!(
            f.on_packet(0, 196, 0, false, Some(late), t),
            Decision::Forward { seq: 49, .. }
        ));
    }

    /// A VP9 packet that is a whole frame of spatial layer `sid`, base temporal layer.
    fn vp9_frame(sid: Layer, key_picture: bool) -> crate::svc::Vp9Layers {
        crate::svc::Vp9Layers {
            sid,
            temporal: Temporal {
                tid: 0,
                sync: false,
                frame_start: sid == 0,
            },
            end_of_frame: true,
            key_picture,
        }
    }

    /// One packet per spatial layer frame of an L3 SVC stream, all in the stream's layer 2:
    /// `pictures` pictures from `seq`, the first a key picture when `key`. Returns, per
    /// packet, its spatial layer and what the forwarder decided.
    fn svc_pictures(
        f: &mut Forwarder,
        seq: u64,
        pictures: u64,
        key: bool,
        t: Instant,
    ) -> Vec<(Layer, Decision)> {
        let mut out = Vec::new();
        for p in 0..pictures {
            for sid in 0..3u8 {
                let l = vp9_frame(sid, key && p == 0 && sid == 0);
                let n = seq + p * 3 + u64::from(sid);
                out.push((sid, f.on_svc_packet(2, n, (n / 3) as u32 * 3000, l, t)));
            }
        }
        out
    }

    fn forwarded(d: &[(Layer, Decision)]) -> Vec<(Layer, u64, bool)> {
        d.iter()
            .filter_map(|(sid, d)| match d {
                Decision::Forward {
                    seq, end_of_picture, ..
                } => Some((*sid, *seq, *end_of_picture)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_svc_subscriber_gets_the_spatial_layers_up_to_its_own_and_moves_up_at_key_pictures() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000);
        f.set_target(Some(2));
        f.set_spatial_target(0);
        // Nothing starts before a key picture.
        let d = svc_pictures(&mut f, 0, 1, false, t);
        assert!(forwarded(&d).is_empty());
        // From the key picture: spatial layer 0 only, numbered without gaps, each packet
        // ending its picture (it carries the marker the dropped layers would have).
        let d = svc_pictures(&mut f, 3, 2, true, t);
        assert_eq!(forwarded(&d), vec![(0, 3, true), (0, 4, true)]);
        assert!(d.iter().all(|(sid, d)| *sid == 0 || *d == Decision::Skip));
        // Asking for more waits for a key picture, and asks for one meanwhile.
        f.set_spatial_target(2);
        assert!(f.wants_key_picture());
        let d = svc_pictures(&mut f, 9, 1, false, t);
        assert_eq!(forwarded(&d), vec![(0, 5, true)]);
        let d = svc_pictures(&mut f, 12, 1, true, t);
        assert_eq!(forwarded(&d), vec![(0, 6, false), (1, 7, false), (2, 8, true)]);
        assert!(!f.wants_key_picture());
        // Asking for less takes effect at the next picture, key or not.
        f.set_spatial_target(1);
        let d = svc_pictures(&mut f, 15, 1, false, t);
        assert_eq!(forwarded(&d), vec![(0, 9, false), (1, 10, true)]);
        assert_eq!(f.spatial(), 1);
    }

    #[test]
    fn an_svc_target_change_mid_picture_waits_for_the_next_picture() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000);
        f.set_target(Some(2));
        assert_eq!(forwarded(&svc_pictures(&mut f, 0, 1, true, t)).len(), 3);
        let l = |sid: Layer| vp9_frame(sid, false);
        assert!(matches!(
            f.on_svc_packet(2, 3, 3000, l(0), t),
            Decision::Forward { .. }
        ));
        f.set_spatial_target(0);
        // The picture under way keeps its layers.
        assert!(matches!(
            f.on_svc_packet(2, 4, 3000, l(1), t),
            Decision::Forward { .. }
        ));
        assert!(matches!(
            f.on_svc_packet(2, 5, 3000, l(2), t),
            Decision::Forward {
                end_of_picture: true,
                ..
            }
        ));
        // A late packet of a dropped layer is not sent.
        assert!(matches!(
            f.on_svc_packet(2, 6, 6000, l(0), t),
            Decision::Forward { seq: 6, .. }
        ));
        assert_eq!(f.on_svc_packet(2, 7, 6000, l(1), t), Decision::Skip);
        assert_eq!(f.on_svc_packet(2, 7, 6000, l(1), t), Decision::Drop);
    }

    #[test]
    fn rids_map_to_layers() {
        assert_eq!(layer_for_rid(Some("q")), 0);
        assert_eq!(layer_for_rid(Some("h")), 1);
        assert_eq!(layer_for_rid(Some("f")), 2);
        assert_eq!(layer_for_rid(None), 0);
    }
}
