//! Per-subscriber forwarding state for one track: which layer goes out, and how sequence
//! numbers and timestamps are rewritten so the subscriber sees one continuous stream.
//!
//! Pure arithmetic on numbers the caller extracts from the packet; no allocation, no clock.
//! Layer choice policy lives in the caller: it sets a target, and the forwarder switches to
//! it at the next keyframe of that layer (a decoder cannot start mid-GOP).

use std::time::{Duration, Instant};

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
    },
    /// Not for this subscriber (other layer, stale, or waiting for a keyframe).
    Drop,
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
    last_out: Option<Out>,
    clock_rate: u32,
}

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
            last_out: None,
            clock_rate,
        }
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
    /// `keyframe_start` says whether it begins a keyframe (always true for audio).
    pub fn on_packet(
        &mut self,
        layer: Layer,
        seq: u64,
        timestamp: u32,
        keyframe_start: bool,
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
        let out_seq = seq.wrapping_add(self.seq_offset);
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
        assert_eq!(f.on_packet(0, 10, 1000, false, t), Decision::Drop);
        assert_eq!(
            f.on_packet(0, 11, 1000, true, t),
            Decision::Forward {
                seq: 11,
                timestamp: 1000,
                switched: true
            }
        );
        assert_eq!(
            f.on_packet(0, 12, 4000, false, t),
            Decision::Forward {
                seq: 12,
                timestamp: 4000,
                switched: false
            }
        );
    }

    #[test]
    fn switching_layers_keeps_sequence_continuous() {
        let t = Instant::now();
        let mut f = Forwarder::new(90_000);
        f.on_packet(0, 100, 5000, true, t);
        f.set_target(Some(2));
        assert!(f.wants_keyframe());
        // High layer delta frame: dropped; low layer still flows.
        assert_eq!(f.on_packet(2, 7000, 90, false, t), Decision::Drop);
        assert_eq!(
            f.on_packet(0, 101, 5000, false, t),
            Decision::Forward {
                seq: 101,
                timestamp: 5000,
                switched: false
            }
        );
        // High layer keyframe: switch, sequence continues at 102.
        let later = t + Duration::from_millis(33);
        let Decision::Forward {
            seq,
            timestamp,
            switched: true,
        } = f.on_packet(2, 7001, 90, true, later)
        else {
            panic!("switch expected")
        };
        assert_eq!(seq, 102);
        assert_eq!(timestamp, 5000 + 2970);
        assert_eq!(f.on_packet(0, 102, 8000, false, later), Decision::Drop);
        assert_eq!(
            f.on_packet(2, 7000, 90, false, later),
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
        assert_eq!(f.on_packet(1, 500, 10, false, t), Decision::Drop);
        assert!(matches!(
            f.on_packet(0, 40, 90, true, t),
            Decision::Forward { .. }
        ));
        assert_eq!(f.current(), Some(0));
        assert!(f.wants_keyframe(), "still converging on the target");
        // Layers above the target never start the stream.
        let mut g = Forwarder::new(90_000);
        g.set_target(Some(0));
        assert_eq!(g.on_packet(2, 9, 90, true, t), Decision::Drop);
        // A paused track starts on nothing.
        g.set_target(None);
        assert_eq!(g.on_packet(0, 9, 90, true, t), Decision::Drop);
    }

    #[test]
    fn rids_map_to_layers() {
        assert_eq!(layer_for_rid(Some("q")), 0);
        assert_eq!(layer_for_rid(Some("h")), 1);
        assert_eq!(layer_for_rid(Some("f")), 2);
        assert_eq!(layer_for_rid(None), 0);
    }
}
