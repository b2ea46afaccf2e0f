//! Downlink allocation: which layer of each video track a subscriber receives, given the
//! bandwidth estimate of the connection its media leaves on (str0m's TWCC estimator).
//!
//! Pure arithmetic, no clock and no I/O; `downlink.rs` feeds it every housekeeping turn. The
//! policy follows LiveKit's stream allocator in outline:
//! - audio is served first and is never paused;
//! - then every video track gets its lowest layer, screen shares before cameras; a track the
//!   budget cannot start is paused (`allow_pause`) or kept on its lowest layer;
//! - what is left raises tracks layer by layer in the same order, up to what each subscriber
//!   asked for. Keeping a layer costs its rate; going above the layer a track has needs
//!   [`UPGRADE_HEADROOM`] more, so a small fluctuation of the estimate does not make a track
//!   climb and fall back at every turn.

use crate::forwarder::{Layer, MAX_LAYERS, TOP_LAYER};

/// Going up one layer (or resuming a paused track) needs this much more than its rate.
pub const UPGRADE_HEADROOM: f64 = 1.15;

/// A window shorter than this is not used to measure a layer's rate.
const MIN_WINDOW_MS: u64 = 200;

/// What an audio track is assumed to need until it has been measured (Opus with RED).
pub const DEFAULT_AUDIO_BPS: u64 = 64_000;

/// The bitrate of each simulcast layer of a track, measured from the bytes that reach this
/// place (payload only; the headers are counted by [`overhead`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct LayerRates {
    bytes: [u64; MAX_LAYERS],
    packets: [u64; MAX_LAYERS],
    /// The last measured rate of each layer (bits per second, headers included); 0: never seen.
    bps: [u64; MAX_LAYERS],
}

/// RTP, SRTP, UDP and IP headers of one packet, in bytes.
const PACKET_OVERHEAD: u64 = 12 + 10 + 8 + 20 + 8;

impl LayerRates {
    /// Count one packet (hot path: two additions).
    #[inline]
    pub fn add(&mut self, layer: Layer, payload: usize) {
        let l = (layer as usize).min(MAX_LAYERS - 1);
        self.bytes[l] += payload as u64;
        self.packets[l] += 1;
    }

    /// Close a window of `elapsed_ms`: a layer that carried packets gets its new rate (a
    /// quarter of the window's, three quarters of the old: a keyframe does not make a layer
    /// look twice as expensive); a silent one keeps its last rate, so that a layer not relayed
    /// here for now is still priced when a subscriber could climb to it.
    pub fn close_window(&mut self, elapsed_ms: u64) {
        if elapsed_ms < MIN_WINDOW_MS {
            return;
        }
        for l in 0..MAX_LAYERS {
            if self.packets[l] == 0 {
                continue;
            }
            let bits = (self.bytes[l] + self.packets[l] * PACKET_OVERHEAD) * 8;
            let rate = bits * 1000 / elapsed_ms;
            self.bps[l] = if self.bps[l] == 0 {
                rate
            } else {
                (self.bps[l] * 3 + rate) / 4
            };
            self.bytes[l] = 0;
            self.packets[l] = 0;
        }
    }

    /// The last measured rate of `layer` (0: never measured here).
    pub fn bps(&self, layer: Layer) -> u64 {
        self.bps[(layer as usize).min(MAX_LAYERS - 1)]
    }
}

/// A rate for a layer never measured here: the publisher's announced bitrate, else what
/// LiveKit's SDKs encode at that height (their default presets: 180p 160 kbit/s, 360p 450,
/// 720p 1.7 Mbit/s, 1080p 3 Mbit/s).
pub fn default_video_bps(height: u32) -> u64 {
    match height {
        0..=200 => 160_000,
        201..=400 => 450_000,
        401..=600 => 800_000,
        601..=800 => 1_700_000,
        _ => 3_000_000,
    }
}

/// Which tracks go first when the budget is short.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Audio,
    Screen,
    Camera,
}

/// One subscribed track, as the allocator sees it.
#[derive(Clone, Copy, Debug)]
pub struct Want {
    pub class: Class,
    /// Order within the class: lower first (the subscriber's priority, 1 highest;
    /// `u32::MAX` when it gave none). Ties keep the order of `wants`.
    pub rank: u32,
    /// The highest layer this subscriber asked for; `None`: nothing to send now (disabled, or
    /// no layer live). Audio: `Some(0)`. Layers the publisher does not send have the rate of
    /// the best one it does, so they cost nothing more.
    pub max: Option<Layer>,
    /// The layer being forwarded now (`None`: paused or not started).
    pub current: Option<Layer>,
    /// The rate of each layer, bits per second.
    pub rates: [u64; MAX_LAYERS],
}

/// What a track may receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Any layer up to this one.
    UpTo(Layer),
    /// Nothing: the budget cannot carry even its lowest layer.
    Paused,
}

impl Default for Grant {
    fn default() -> Self {
        Grant::UpTo(TOP_LAYER)
    }
}

impl Grant {
    /// Paused below every layer.
    fn rank(self) -> u8 {
        match self {
            Grant::Paused => 0,
            Grant::UpTo(l) => l + 1,
        }
    }

    /// The grant a track moves to from `self`, given what the allocation grants at the
    /// highest estimate of the last second (`sustained_low`: below that, the link has been
    /// narrower for a whole second) and at the lowest of the last two seconds (`sustained_high`:
    /// the link has carried that much for two seconds). A track goes down only on the first
    /// and up only on the second, so an estimate that wobbles moves nobody.
    pub fn settle(self, sustained_low: Grant, sustained_high: Grant) -> Grant {
        if self.rank() > sustained_low.rank() {
            sustained_low
        } else if self.rank() < sustained_high.rank() {
            sustained_high
        } else {
            self
        }
    }
}

/// The outcome of one allocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// What the grants will send, bits per second.
    pub allocated: u64,
    /// What everything wanted would send: the rate worth probing for.
    pub desired: u64,
}

/// Allocate `estimate` bits per second over `wants`, writing one grant per want to `grants`.
pub fn allocate(estimate: u64, wants: &[Want], allow_pause: bool, grants: &mut Vec<Grant>) -> Totals {
    grants.clear();
    grants.resize(wants.len(), Grant::Paused);
    let mut budget = estimate as f64;
    let mut totals = Totals::default();
    for w in wants {
        if let Some(max) = w.max {
            totals.desired += w.rates[max as usize];
        }
    }
    // Audio first, whatever the budget.
    for (w, g) in wants.iter().zip(grants.iter_mut()) {
        if w.class == Class::Audio {
            *g = Grant::UpTo(0);
            budget -= w.rates[0] as f64;
            totals.allocated += w.rates[0];
        }
    }
    // Video in priority order: screen shares, then cameras; within each, the subscriber's
    // priorities, then subscription order.
    let mut order: [usize; 64] = [0; 64];
    let video: usize = wants.len().min(order.len());
    for (slot, i) in order.iter_mut().zip(0..video) {
        *slot = i;
    }
    order[..video].sort_by_key(|&i| (wants[i].class, wants[i].rank));
    let order = &order[..video];
    // Every video track's lowest layer.
    let mut granted: [Option<Layer>; 64] = [None; 64];
    for &i in order {
        let w = &wants[i];
        if w.class == Class::Audio || w.max.is_none() {
            continue;
        }
        let cost = w.rates[0] as f64
            * if w.current.is_some() {
                1.0
            } else {
                UPGRADE_HEADROOM
            };
        if budget >= cost || !allow_pause {
            budget -= w.rates[0] as f64;
            granted[i] = Some(0);
        }
    }
    // Then up, one layer at a time per track, as far as the budget goes.
    for &i in order {
        let w = &wants[i];
        let (Some(max), Some(mut at)) = (w.max, granted[i]) else {
            continue;
        };
        while at < max {
            let next = at + 1;
            let extra = w.rates[next as usize].saturating_sub(w.rates[at as usize]) as f64;
            let keeps = w.current.is_some_and(|c| c >= next);
            let cost = if keeps { extra } else { extra * UPGRADE_HEADROOM };
            if budget < cost {
                break;
            }
            budget -= extra;
            at = next;
        }
        granted[i] = Some(at);
    }
    for &i in order {
        if wants[i].class == Class::Audio {
            continue;
        }
        grants[i] = match (wants[i].max, granted[i]) {
            // Nothing live to send: no layer is withheld.
            (None, _) => Grant::default(),
            (Some(_), Some(l)) => {
                totals.allocated += wants[i].rates[l as usize];
                Grant::UpTo(l)
            }
            (Some(_), None) => Grant::Paused,
        };
    }
    // Past the first 64 tracks: nothing withheld (a subscriber with that many video tracks is
    // an edge the allocator does not try to serve well).
    for g in grants.iter_mut().skip(order.len()) {
        *g = Grant::default();
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIMULCAST: [u64; 3] = [150_000, 500_000, 1_700_000];

    fn camera(max: Layer, current: Option<Layer>) -> Want {
        Want {
            class: Class::Camera,
            rank: u32::MAX,
            max: Some(max),
            current,
            rates: SIMULCAST,
        }
    }

    fn audio() -> Want {
        Want {
            class: Class::Audio,
            rank: u32::MAX,
            max: Some(0),
            current: Some(0),
            rates: [60_000, 0, 0],
        }
    }

    fn run(estimate: u64, wants: &[Want], allow_pause: bool) -> (Vec<Grant>, Totals) {
        let mut g = Vec::new();
        let t = allocate(estimate, wants, allow_pause, &mut g);
        (g, t)
    }

    #[test]
    fn plenty_of_bandwidth_grants_what_was_asked() {
        let (g, t) = run(
            10_000_000,
            &[audio(), camera(2, Some(2)), camera(1, Some(1))],
            true,
        );
        assert_eq!(g, [Grant::UpTo(0), Grant::UpTo(2), Grant::UpTo(1)]);
        assert_eq!(t.allocated, 60_000 + 1_700_000 + 500_000);
        assert_eq!(t.desired, t.allocated);
    }

    #[test]
    fn a_narrow_link_gets_a_lower_layer_and_audio_first() {
        // 400 kbit/s: audio, then the camera's low layer; the middle one does not fit.
        let (g, t) = run(400_000, &[audio(), camera(2, Some(2))], true);
        assert_eq!(g, [Grant::UpTo(0), Grant::UpTo(0)]);
        assert_eq!(t.allocated, 210_000);
        assert_eq!(t.desired, 1_760_000, "worth probing for the top layer");
    }

    #[test]
    fn too_little_pauses_video_or_keeps_the_lowest_layer_without_allow_pause() {
        let wants = [audio(), camera(2, Some(0))];
        let (g, _) = run(100_000, &wants, true);
        assert_eq!(g, [Grant::UpTo(0), Grant::Paused]);
        let (g, _) = run(100_000, &wants, false);
        assert_eq!(g, [Grant::UpTo(0), Grant::UpTo(0)]);
        // Audio is never paused, even with no budget at all.
        let (g, _) = run(0, &[audio()], true);
        assert_eq!(g, [Grant::UpTo(0)]);
    }

    #[test]
    fn screen_share_goes_before_cameras() {
        let screen = Want {
            class: Class::Screen,
            ..camera(2, Some(2))
        };
        // The camera was subscribed first, the screen share later: the screen share wins.
        let (g, _) = run(900_000, &[camera(2, Some(2)), screen], true);
        assert_eq!(g, [Grant::UpTo(0), Grant::UpTo(1)]);
        let (g, _) = run(200_000, &[camera(2, Some(0)), screen], true);
        assert_eq!(g, [Grant::Paused, Grant::UpTo(0)]);
    }

    #[test]
    fn the_subscribers_priorities_order_cameras_and_unranked_ones_come_last() {
        let ranked = |rank| Want {
            rank,
            ..camera(2, Some(0))
        };
        // Subscribed first but without a priority: the ranked camera is served first, and
        // the lower number wins between two ranked ones.
        let (g, _) = run(900_000, &[camera(2, Some(0)), ranked(2)], true);
        assert_eq!(g, [Grant::UpTo(0), Grant::UpTo(1)]);
        let (g, _) = run(200_000, &[ranked(3), camera(2, Some(0)), ranked(1)], true);
        assert_eq!(g, [Grant::Paused, Grant::Paused, Grant::UpTo(0)]);
        // A priority orders cameras among themselves; a screen share still goes first.
        let screen = Want {
            class: Class::Screen,
            ..camera(2, Some(0))
        };
        let (g, _) = run(200_000, &[ranked(1), screen], true);
        assert_eq!(g, [Grant::Paused, Grant::UpTo(0)]);
    }

    #[test]
    fn climbing_needs_headroom_keeping_does_not() {
        // Exactly the top layer's rate: a track on it keeps it, a track below does not climb.
        let (g, _) = run(1_700_000, &[camera(2, Some(2))], true);
        assert_eq!(g, [Grant::UpTo(2)]);
        let (g, _) = run(1_700_000, &[camera(2, Some(1))], true);
        assert_eq!(g, [Grant::UpTo(1)]);
        let (g, _) = run(2_000_000, &[camera(2, Some(1))], true);
        assert_eq!(g, [Grant::UpTo(2)]);
        // A paused track resumes only with headroom over its lowest layer.
        let (g, _) = run(160_000, &[camera(2, None)], true);
        assert_eq!(g, [Grant::Paused]);
        let (g, _) = run(180_000, &[camera(2, None)], true);
        assert_eq!(g, [Grant::UpTo(0)]);
    }

    #[test]
    fn a_track_with_nothing_live_is_not_withheld_and_costs_nothing() {
        let idle = Want {
            max: None,
            current: None,
            ..camera(2, None)
        };
        let (g, t) = run(200_000, &[idle, camera(2, Some(0))], true);
        assert_eq!(g, [Grant::UpTo(TOP_LAYER), Grant::UpTo(0)]);
        assert_eq!(t.desired, 1_700_000);
    }

    #[test]
    fn rates_are_measured_per_window_and_kept_while_a_layer_is_silent() {
        let mut r = LayerRates::default();
        for _ in 0..100 {
            r.add(2, 1000);
        }
        r.add(0, 100);
        r.close_window(1000);
        assert_eq!(r.bps(2), 100 * (1000 + PACKET_OVERHEAD) * 8);
        assert_eq!(r.bps(0), (100 + PACKET_OVERHEAD) * 8);
        // A silent window keeps the rate; a new one is averaged in.
        r.close_window(1000);
        assert_eq!(r.bps(2), 100 * (1000 + PACKET_OVERHEAD) * 8);
        r.add(2, 1000 * 100 - 100 * PACKET_OVERHEAD as usize);
        r.close_window(500);
        let (before, window) = (846_400, 1_508_128);
        assert_eq!(r.bps(2), (before * 3 + window) / 4);
        // Too short a window measures nothing; a hostile layer index is clamped.
        r.add(7, 10);
        r.close_window(10);
        assert_eq!(r.bps(7), r.bps(2));
    }

    #[test]
    fn a_grant_falls_on_a_sustained_low_and_rises_on_a_sustained_high_only() {
        use Grant::*;
        // The estimate stayed low a whole second: down.
        assert_eq!(UpTo(2).settle(UpTo(0), UpTo(0)), UpTo(0));
        assert_eq!(UpTo(0).settle(Paused, Paused), Paused);
        // A dip shorter than that: the highest estimate of the second still carries it.
        assert_eq!(UpTo(2).settle(UpTo(2), UpTo(0)), UpTo(2));
        // A peak: the lowest estimate of two seconds does not carry more; stay.
        assert_eq!(UpTo(0).settle(UpTo(2), UpTo(0)), UpTo(0));
        // Two seconds of room: up, and a paused track resumes.
        assert_eq!(UpTo(0).settle(UpTo(2), UpTo(1)), UpTo(1));
        assert_eq!(Paused.settle(UpTo(0), UpTo(0)), UpTo(0));
    }

    #[test]
    fn many_tracks_do_not_panic() {
        let wants = vec![camera(2, Some(2)); 100];
        let (g, _) = run(1_000_000, &wants, true);
        assert_eq!(g.len(), 100);
        assert_eq!(g[99], Grant::default());
    }
}
