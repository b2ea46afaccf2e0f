//! Downlink allocation: which layer of each video track a subscriber receives, given the
//! bandwidth estimate of the connection its media leaves on (str0m's TWCC estimator).
//!
//! Pure arithmetic, no clock and no I/O; `downlink.rs` feeds it every housekeeping turn. The
//! policy follows LiveKit's stream allocator in outline:
//! - audio is served first and is never paused;
//! - then every video track gets its lowest layer, screen shares before cameras; a track the
//!   budget cannot start is paused (`allow_pause`) or kept on its lowest layer;
//! - what is left raises tracks rung by rung in the same order, up to what each subscriber
//!   asked for. Keeping a rung costs its rate; going above the rung a track has needs
//!   [`UPGRADE_HEADROOM`] more (a new simulcast layer: a keyframe) or [`TEMPORAL_HEADROOM`]
//!   more (a temporal layer of the same one), so a small fluctuation of the estimate does not
//!   make a track climb and fall back at every turn.
//!
//! Over time, `Grant::settle` moves a track down a simulcast layer on a second of low estimates
//! and up on four seconds of high ones (`downlink.rs`), and [`ClimbBackoff`] makes a track
//! whose climbs keep failing wait longer before the next.
//!
//! A track's ladder has a [`Rung`] per simulcast layer and temporal layer: the temporal
//! layers of a simulcast layer (7.5, 15, 30 fps) are the finer steps between it and the next.
//! A stream without temporal layers costs the same on all three rungs of a layer, so the
//! allocator walks over them for free.

use std::time::{Duration, Instant};

use crate::forwarder::{Layer, MAX_LAYERS, TOP_LAYER};
use crate::temporal::{TEMPORAL_LAYERS, TOP_TEMPORAL};

/// Rungs of a track's ladder.
pub const RUNGS: usize = MAX_LAYERS * TEMPORAL_LAYERS;

/// One step of a track's ladder: a simulcast layer at a temporal layer. Every temporal layer
/// of a simulcast layer comes before the next simulcast layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rung(u8);

impl Rung {
    /// The low layer's base temporal layer.
    pub const LOWEST: Rung = Rung(0);
    /// The top layer with every frame.
    pub const TOP: Rung = Rung(RUNGS as u8 - 1);

    pub fn new(layer: Layer, temporal: u8) -> Rung {
        let l = layer.min(TOP_LAYER);
        Rung(l * TEMPORAL_LAYERS as u8 + temporal.min(TOP_TEMPORAL))
    }

    /// Every frame of `layer`.
    pub fn top_of(layer: Layer) -> Rung {
        Rung::new(layer, TOP_TEMPORAL)
    }

    pub fn layer(self) -> Layer {
        self.0 / TEMPORAL_LAYERS as u8
    }

    pub fn temporal(self) -> u8 {
        self.0 % TEMPORAL_LAYERS as u8
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    fn next(self) -> Rung {
        Rung((self.0 + 1).min(Rung::TOP.0))
    }
}

/// Going up one layer (or resuming a paused track) needs this much more than its rate.
pub const UPGRADE_HEADROOM: f64 = 1.15;

/// Going up a temporal layer within the simulcast layer a track has needs only this much more:
/// it needs no keyframe and is undone at the next frame, so a tight fit is cheap to try.
pub const TEMPORAL_HEADROOM: f64 = 1.03;

/// How far over the estimate a track's steps up (a temporal step within the simulcast layer it
/// is on, a climb to a higher layer) and the rungs it keeps may take the allocation, as shares
/// of the estimate (one allowance for all of a subscriber's tracks). str0m's estimate settles
/// below what a link carries (a 1,200 kbit/s link at 950–1,150, `bench/limits.sh`), which left
/// such a link on the top layer's 7.5 fps rung where its 15 fps one fits. Such a step needs no
/// keyframe, and `Grant::settle` gives it back at the first estimate that no longer carries it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slack {
    /// For a temporal step a track does not have yet.
    pub step: f64,
    /// For rungs a track already has (a temporal layer or a simulcast layer's base alike:
    /// str0m's estimate of a full link restarts at 0.85 of what was acknowledged after each
    /// overuse): more than for a step, so that the dips of an
    /// estimate that sits below the link (str0m's falls by 5 % at a time, from 1,070 to
    /// 960 kbit/s in 3 s on that 1,200 kbit/s link while it carried the 15 fps rung) do not
    /// take the rung away and give it back every few seconds. 0.30: that rung (1,148 kbit/s
    /// with audio) is kept down to an estimate of 883 kbit/s. At 0.20 it went at 932 and
    /// 973, and climbing back took two seconds at 1,054 or more, which str0m's estimate,
    /// wandering 930–1,410 kbit/s on that link, often took ten seconds to give: 8 of 30
    /// `bench/limits.sh` runs had a subscriber under 0.80 of its link (2 of 22 at 0.30). What
    /// guards the link instead is the queue: while one stands there is no slack at all
    /// ([`Slack::NONE`]).
    pub keep: f64,
    /// For a rung of a simulcast layer above the one a track is on (a climb, its headroom
    /// included, or a climb granted that waits for its keyframe): less than for a temporal
    /// step, since a climb costs a keyframe and a failed one holds the next
    /// ([`ClimbBackoff`]). Without it a link whose next layer fits with a few per cent to spare
    /// waited for an estimate at the link's own rate for two whole seconds: `bench/limits.sh`'s
    /// 300 kbit/s subscriber, its next layer's first rung 282 kbit/s on the link, sat on the
    /// low layer's 231 in most runs while str0m's estimate wandered between 250 and 290.
    pub layer: f64,
}

impl Slack {
    /// Where no queue stands on the subscriber's path.
    pub const CLEAR: Slack = Slack {
        step: 0.10,
        keep: 0.30,
        layer: 0.05,
    };
    /// While a queue stands (`standing_queue.rs`): the estimate is already more than the link
    /// carries.
    pub const NONE: Slack = Slack {
        step: 0.0,
        keep: 0.0,
        layer: 0.0,
    };
}

/// A window shorter than this is not used to measure a layer's rate.
const MIN_WINDOW_MS: u64 = 200;

/// What an audio track is assumed to need until it has been measured (Opus with RED).
pub const DEFAULT_AUDIO_BPS: u64 = 64_000;

/// The bitrate of each simulcast layer of a track, per temporal layer: the RTP payload that
/// reaches this place, the unit str0m's estimate is in (it counts what a packet carries after
/// its RTP header, padding's included, and nothing of the headers). Priced with every header
/// (RTP, SRTP, UDP and IP, 58 bytes a packet) as it once was, a rung cost a tenth to a sixth
/// more than the same unit of the estimate (audio's 100-byte packets most): on
/// `bench/limits.sh`'s 300 kbit/s link str0m's estimate sat at 269 kbit/s, the link carries
/// the middle layer's 7.5 fps rung (240 kbit/s of payload with audio, 0.93 of the link on the
/// wire), and the allocator, pricing it at 278, kept the subscriber a rung below (0.77).
///
/// A rung's rate is measured over the last [`RATE_WINDOWS`] windows (two seconds at the
/// 500 ms housekeeping turn), not per window: an encoder near its budget sends a layer's base
/// temporal layer in lumps (a 640x360 noisy camera from libwebrtc: one 31 kB frame, then
/// frames of a hundred bytes), so one window measured 0 and the next 500 kbit/s. Smoothed per
/// window, the price of such a rung swung between 140 and 260 kbit/s, and a subscriber near
/// the limit climbed in a trough and fell back at the next peak (`test_quality.py`, 400 kbit/s).
#[derive(Clone, Copy, Debug, Default)]
pub struct LayerRates {
    bytes: [u64; RUNGS],
    packets: [u64; RUNGS],
    /// Frames begun in the window (counted only where packets carry a temporal layer).
    frames: [u64; RUNGS],
    /// Bits and frames of each rung in each of the last closed windows, oldest overwritten
    /// first (`next`), and each window's length in milliseconds.
    past_bits: [[u64; RUNGS]; RATE_WINDOWS],
    past_frames: [[u64; RUNGS]; RATE_WINDOWS],
    past_ms: [u64; RATE_WINDOWS],
    next: usize,
    /// The last measured rate of each layer's temporal layer alone (bits per second); 0:
    /// never seen. Packets without a temporal layer count as the base.
    bps: [u64; RUNGS],
    /// The last measured frame rate of each layer's temporal layer alone, in thousandths of
    /// a frame per second; 0: never counted.
    mfps: [u64; RUNGS],
}

/// Windows a rate is measured over.
pub const RATE_WINDOWS: usize = 4;

impl LayerRates {
    /// Count one packet of temporal layer `temporal` (0 when the stream has none), which
    /// begins a frame when `frame_start` (hot path: three additions).
    #[inline]
    pub fn add(&mut self, layer: Layer, temporal: u8, frame_start: bool, payload: usize) {
        let r = Rung::new(layer, temporal).index();
        self.bytes[r] += payload as u64;
        self.packets[r] += 1;
        self.frames[r] += u64::from(frame_start);
    }

    /// Close a window of `elapsed_ms`. A rung that carried packets in it gets its rate over
    /// the last [`RATE_WINDOWS`] windows, or over those since it was last silent; a silent
    /// one keeps its last rate, so that a layer not relayed here for now is still priced when
    /// a subscriber could climb to it.
    pub fn close_window(&mut self, elapsed_ms: u64) {
        if elapsed_ms < MIN_WINDOW_MS {
            return;
        }
        let w = self.next;
        self.next = (w + 1) % RATE_WINDOWS;
        self.past_ms[w] = elapsed_ms;
        for l in 0..RUNGS {
            self.past_bits[w][l] = self.bytes[l] * 8;
            self.past_frames[w][l] = self.frames[l];
            let sent = self.packets[l] > 0;
            self.bytes[l] = 0;
            self.packets[l] = 0;
            self.frames[l] = 0;
            if !sent {
                continue;
            }
            let (mut bits, mut frames, mut ms) = (0, 0, 0);
            for back in 0..RATE_WINDOWS {
                let i = (w + RATE_WINDOWS - back) % RATE_WINDOWS;
                if self.past_ms[i] == 0 || (back > 0 && self.past_bits[i][l] == 0) {
                    break;
                }
                bits += self.past_bits[i][l];
                frames += self.past_frames[i][l];
                ms += self.past_ms[i];
            }
            self.bps[l] = bits * 1000 / ms;
            self.mfps[l] = frames * 1_000_000 / ms;
        }
    }

    /// The last measured frame rate of simulcast layer `layer` at each temporal layer, with
    /// the layers below it (thousandths of a frame per second), as `temporal_for_fps` takes
    /// it; `None` when no frame of the layer was counted here (no temporal layers, or not
    /// arrived yet).
    pub fn frame_rates(&self, layer: Layer) -> Option<[u64; TEMPORAL_LAYERS]> {
        let out: [u64; TEMPORAL_LAYERS] =
            std::array::from_fn(|t| up_to(&self.mfps, Rung::new(layer, t as u8)));
        (out[TEMPORAL_LAYERS - 1] > 0).then_some(out)
    }

    /// The last measured rate of a rung: its layer's temporal layers up to the rung's
    /// (0: the layer was never measured here).
    pub fn bps(&self, rung: Rung) -> u64 {
        up_to(&self.bps, rung)
    }
}

/// How the bytes of one scalable (VP9 SVC) stream divide between its spatial layers, over the
/// last [`RATE_WINDOWS`] windows: what receiving the layers up to one of them costs, as a
/// share of the whole stream. A subscriber of an SVC stream gets every spatial layer up to
/// the one it is granted, so that rung costs the layers below it too; [`LayerRates`] measures
/// the stream as one (its temporal layers, and frames, are counted across spatial layers).
#[derive(Clone, Copy, Debug, Default)]
pub struct SpatialShares {
    bytes: [u64; MAX_LAYERS],
    past: [[u64; MAX_LAYERS]; RATE_WINDOWS],
    next: usize,
    /// Thousandths of the stream carried by the spatial layers up to each one; 0: not yet
    /// measured.
    permille: [u64; MAX_LAYERS],
}

impl SpatialShares {
    /// Count one packet of spatial layer `sid` (hot path: one addition).
    #[inline]
    pub fn add(&mut self, sid: Layer, payload: usize) {
        self.bytes[usize::from(sid).min(MAX_LAYERS - 1)] += payload as u64;
    }

    /// Close a window (at the same turns as [`LayerRates::close_window`]). A silent window
    /// keeps the shares measured before it.
    pub fn close_window(&mut self) {
        if self.bytes.iter().all(|b| *b == 0) {
            return;
        }
        self.past[self.next] = std::mem::take(&mut self.bytes);
        self.next = (self.next + 1) % RATE_WINDOWS;
        let per_layer: [u64; MAX_LAYERS] = std::array::from_fn(|l| self.past.iter().map(|w| w[l]).sum());
        let total: u64 = per_layer.iter().sum();
        let mut up_to = 0;
        for (l, bytes) in per_layer.iter().enumerate() {
            up_to += bytes;
            self.permille[l] = up_to * 1000 / total;
        }
    }

    /// What the spatial layers up to `sid` cost, out of `whole` for the stream; `None` until
    /// a window was measured.
    pub fn price(&self, whole: u64, sid: Layer) -> Option<u64> {
        let share = self.permille[usize::from(sid).min(MAX_LAYERS - 1)];
        (self.permille[MAX_LAYERS - 1] > 0).then_some(whole * share / 1000)
    }
}

/// A per-rung measure summed over a rung's layer from its base temporal layer up to the rung.
fn up_to(per_rung: &[u64; RUNGS], rung: Rung) -> u64 {
    let base = Rung::new(rung.layer(), 0).index();
    per_rung[base..=rung.index()].iter().sum()
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
    /// The highest rung this subscriber asked for; `None`: nothing to send now (disabled, or
    /// no layer live). Audio: `Some(Rung::LOWEST)`. Layers the publisher does not send have
    /// the rate of the best one it does, so they cost nothing more.
    pub max: Option<Rung>,
    /// The rung being forwarded now (`None`: paused or not started).
    pub current: Option<Rung>,
    /// The rung a climb to a higher layer that waits for that layer's keyframe was granted
    /// (`None`: no such climb). Keeping it costs what it sends, without the headroom a climb
    /// needs: the climb was judged with that headroom already, and one given up before its
    /// keyframe came (a publisher that answers keyframe requests late, or a keyframe interval
    /// of two seconds) costs the link nothing but counts as a failed climb.
    pub climbing: Option<Rung>,
    /// The rate of each rung, bits per second, never lower than the rung below.
    pub rates: [u64; RUNGS],
}

impl Want {
    /// What the first rung above `at` (up to `max`) that costs more would add; 0: none.
    pub fn next_step(&self, at: Rung) -> u64 {
        let Some(max) = self.max else { return 0 };
        let here = self.rates[at.index()];
        self.rates[at.index()..=max.index().max(at.index())]
            .iter()
            .find(|&&r| r > here)
            .map_or(0, |r| r - here)
    }
}

/// What a track may receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Any rung up to this one.
    UpTo(Rung),
    /// Nothing: the budget cannot carry even its lowest layer.
    Paused,
}

impl Default for Grant {
    fn default() -> Self {
        Grant::UpTo(Rung::TOP)
    }
}

impl Grant {
    /// Paused below every layer.
    fn rank(self) -> u8 {
        match self {
            Grant::Paused => 0,
            Grant::UpTo(r) => r.0 + 1,
        }
    }

    /// The grant a track moves to from `self`, given what the allocation grants at the
    /// latest estimate (`latest`), at the highest estimate of the last second
    /// (`sustained_low`: below that, the link has been narrower for a whole second) and at the
    /// lowest of the last four seconds (`sustained_high`: the link has carried that much for
    /// four seconds; `downlink.rs`'s `UP_TURNS`). A track changes simulcast layer down only on
    /// the first and up only on the second, so an estimate that wobbles moves nobody between
    /// layers; a temporal step within the layer it has is given back at once (`latest`): that
    /// needs no keyframe, and it drains a link the last step overfilled before the estimate
    /// falls further.
    pub fn settle(self, latest: Grant, sustained_low: Grant, sustained_high: Grant) -> Grant {
        let settled = if self.rank() > sustained_low.rank() {
            sustained_low
        } else if self.rank() < sustained_high.rank() {
            sustained_high
        } else {
            self
        };
        match (self, latest) {
            (Grant::UpTo(have), Grant::UpTo(now))
                if now < have && now.layer() == have.layer() && latest.rank() < settled.rank() =>
            {
                latest
            }
            _ => settled,
        }
    }
}

/// How soon a track may climb to a higher simulcast layer after its grant went down one.
/// Every climb costs a keyframe of the new layer, a burst that a link near its limit pays for
/// in queueing and loss (a frozen picture, lost audio); `Grant::settle` alone climbs again
/// after four seconds of a sufficient estimate (`downlink.rs`), so a link that cannot hold a
/// layer would retry it every few seconds. A layer lost within [`CLIMB_PROVEN`] of a climb is
/// a failed climb and doubles the wait before the next, up to [`CLIMB_WAIT_MAX`]; a fall after
/// every climb held longer than that waits [`CLIMB_WAIT_BASE`] again. LiveKit's allocator
/// backs off its probes after a failed one the same way. Temporal steps within a layer (no
/// keyframe) are never held.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClimbBackoff {
    /// The wait set by the last fall (zero: never fell).
    wait: Duration,
    /// No climb to a higher layer before this.
    until: Option<Instant>,
    /// The last climb to a higher layer.
    climbed: Option<Instant>,
}

/// The wait after a fall that follows no recent climb: less than `Grant::settle` waits anyway
/// (four seconds of estimates), so only failed climbs are held.
pub const CLIMB_WAIT_BASE: Duration = Duration::from_secs(2);
/// The longest wait between failed climbs.
pub const CLIMB_WAIT_MAX: Duration = Duration::from_secs(16);
/// A layer held this long after the climb to it was not a failed climb.
pub const CLIMB_PROVEN: Duration = Duration::from_secs(20);

impl ClimbBackoff {
    /// The grant a track moves to from `from` when the allocation settles on `to`: `to`, but
    /// capped at every frame of `from`'s layer while a climb to a higher layer is held back.
    /// Records climbs and falls.
    pub fn hold(&mut self, now: Instant, from: Grant, to: Grant) -> Grant {
        let (Grant::UpTo(have), Grant::UpTo(next)) = (from, to) else {
            return to;
        };
        if next.layer() > have.layer() {
            if self.until.is_some_and(|until| now < until) {
                return Grant::UpTo(Rung::top_of(have.layer()));
            }
            self.climbed = Some(now);
        } else if next.layer() < have.layer() {
            let failed = self
                .climbed
                .is_some_and(|at| now.saturating_duration_since(at) < CLIMB_PROVEN);
            self.wait = if failed {
                (self.wait * 2).clamp(CLIMB_WAIT_BASE * 2, CLIMB_WAIT_MAX)
            } else {
                CLIMB_WAIT_BASE
            };
            self.until = Some(now + self.wait);
        }
        to
    }

    /// The wait the last fall set.
    pub fn wait(&self) -> Duration {
        self.wait
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
    allocate_within(estimate, Slack::CLEAR, wants, allow_pause, grants)
}

/// [`allocate`], steps up and rungs kept taking the allocation at most `slack` (shares of the
/// estimate) over it.
pub fn allocate_within(
    estimate: u64,
    slack: Slack,
    wants: &[Want],
    allow_pause: bool,
    grants: &mut Vec<Grant>,
) -> Totals {
    grants.clear();
    grants.resize(wants.len(), Grant::Paused);
    let mut budget = estimate as f64;
    let mut totals = Totals::default();
    for w in wants {
        if let Some(max) = w.max {
            totals.desired += w.rates[max.index()];
        }
    }
    // Audio first, whatever the budget.
    for (w, g) in wants.iter().zip(grants.iter_mut()) {
        if w.class == Class::Audio {
            *g = Grant::UpTo(Rung::LOWEST);
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
    // Every video track's lowest rung.
    let mut granted: [Option<Rung>; 64] = [None; 64];
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
            granted[i] = Some(Rung::LOWEST);
        }
    }
    // Then up, one rung at a time per track, as far as the budget goes.
    for &i in order {
        let w = &wants[i];
        let (Some(max), Some(mut at)) = (w.max, granted[i]) else {
            continue;
        };
        while at < max {
            let next = at.next();
            let extra = w.rates[next.index()].saturating_sub(w.rates[at.index()]) as f64;
            let keeps = w.current.is_some_and(|c| c >= next);
            let pending = w.climbing.is_some_and(|c| c >= next);
            let temporal_step = w.current.is_some_and(|c| c.layer() == next.layer());
            let cost = match (keeps || pending, temporal_step) {
                (true, _) => extra,
                (false, true) => extra * TEMPORAL_HEADROOM,
                (false, false) => extra * UPGRADE_HEADROOM,
            };
            // A rung the track already has may take the budget below zero by the largest
            // slack, a temporal step it does not have yet by a smaller one, a new simulcast
            // layer by the smallest (one allowance for all of the subscriber's tracks, as the
            // budget is).
            let share = match (keeps, temporal_step) {
                (true, _) => slack.keep,
                (false, true) => slack.step,
                (false, false) => slack.layer,
            };
            let available = budget + estimate as f64 * share;
            // A rung that costs nothing more (a layer without temporal layers) is always taken.
            if extra > 0.0 && available < cost {
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
                totals.allocated += wants[i].rates[l.index()];
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

    /// Every rung of each layer at the layer's rate: no temporal layers.
    fn ladder(layers: [u64; 3]) -> [u64; RUNGS] {
        std::array::from_fn(|r| layers[r / TEMPORAL_LAYERS])
    }

    fn camera(max: Layer, current: Option<Layer>) -> Want {
        Want {
            class: Class::Camera,
            rank: u32::MAX,
            max: Some(Rung::top_of(max)),
            current: current.map(Rung::top_of),
            climbing: None,
            rates: ladder(SIMULCAST),
        }
    }

    fn audio() -> Want {
        let mut rates = [0; RUNGS];
        rates[0] = 60_000;
        Want {
            class: Class::Audio,
            rank: u32::MAX,
            max: Some(Rung::LOWEST),
            current: Some(Rung::LOWEST),
            climbing: None,
            rates,
        }
    }

    /// Every frame of `layer`.
    fn up(layer: Layer) -> Grant {
        Grant::UpTo(Rung::top_of(layer))
    }

    const AUDIO: Grant = Grant::UpTo(Rung::LOWEST);

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
        assert_eq!(g, [AUDIO, up(2), up(1)]);
        assert_eq!(t.allocated, 60_000 + 1_700_000 + 500_000);
        assert_eq!(t.desired, t.allocated);
    }

    #[test]
    fn a_narrow_link_gets_a_lower_layer_and_audio_first() {
        // 400 kbit/s: audio, then the camera's low layer; the middle one does not fit.
        let (g, t) = run(400_000, &[audio(), camera(2, Some(2))], true);
        assert_eq!(g, [AUDIO, up(0)]);
        assert_eq!(t.allocated, 210_000);
        assert_eq!(t.desired, 1_760_000, "worth probing for the top layer");
    }

    #[test]
    fn too_little_pauses_video_or_keeps_the_lowest_layer_without_allow_pause() {
        let wants = [audio(), camera(2, Some(0))];
        let (g, _) = run(100_000, &wants, true);
        assert_eq!(g, [AUDIO, Grant::Paused]);
        let (g, _) = run(100_000, &wants, false);
        assert_eq!(g, [AUDIO, up(0)]);
        // Audio is never paused, even with no budget at all.
        let (g, _) = run(0, &[audio()], true);
        assert_eq!(g, [AUDIO]);
    }

    #[test]
    fn screen_share_goes_before_cameras() {
        let screen = Want {
            class: Class::Screen,
            ..camera(2, Some(2))
        };
        // The camera was subscribed first, the screen share later: the screen share wins.
        let (g, _) = run(700_000, &[camera(2, Some(2)), screen], true);
        assert_eq!(g, [up(0), up(1)]);
        let (g, _) = run(200_000, &[camera(2, Some(0)), screen], true);
        assert_eq!(g, [Grant::Paused, up(0)]);
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
        assert_eq!(g, [up(0), up(1)]);
        let (g, _) = run(200_000, &[ranked(3), camera(2, Some(0)), ranked(1)], true);
        assert_eq!(g, [Grant::Paused, Grant::Paused, up(0)]);
        // A priority orders cameras among themselves; a screen share still goes first.
        let screen = Want {
            class: Class::Screen,
            ..camera(2, Some(0))
        };
        let (g, _) = run(200_000, &[ranked(1), screen], true);
        assert_eq!(g, [Grant::Paused, up(0)]);
    }

    #[test]
    fn climbing_needs_headroom_keeping_does_not() {
        // Exactly the top layer's rate: a track on it keeps it, a track below does not climb.
        let (g, _) = run(1_700_000, &[camera(2, Some(2))], true);
        assert_eq!(g, [up(2)]);
        let (g, _) = run(1_700_000, &[camera(2, Some(1))], true);
        assert_eq!(g, [up(1)]);
        let (g, _) = run(2_000_000, &[camera(2, Some(1))], true);
        assert_eq!(g, [up(2)]);
        // A paused track resumes only with headroom over its lowest layer.
        let (g, _) = run(160_000, &[camera(2, None)], true);
        assert_eq!(g, [Grant::Paused]);
        let (g, _) = run(180_000, &[camera(2, None)], true);
        assert_eq!(g, [up(0)]);
    }

    #[test]
    fn a_climb_waiting_for_its_keyframe_is_kept_without_headroom_and_with_a_climbs_slack() {
        // Granted the top layer, still on the middle one until the top layer's keyframe.
        let waiting = Want {
            climbing: Some(Rung::new(2, 0)),
            ..camera(2, Some(1))
        };
        // What the top layer sends, no more: the climb stands; a climb not yet granted would
        // need its headroom.
        // (The ladder has no temporal layers: the layer's other rungs cost nothing more.)
        let (g, _) = run(1_700_000, &[waiting], true);
        assert_eq!(g, [up(2)]);
        let (g, _) = run(1_700_000, &[camera(2, Some(1))], true);
        assert_eq!(g, [up(1)]);
        // Less than that by the slack a climb gets: still kept.
        let (g, _) = run(1_650_000, &[waiting], true);
        assert_eq!(g, [up(2)]);
        // Less than that by more: given up, with none of the allowance a layer that is sent
        // gets.
        let (g, _) = run(1_600_000, &[waiting], true);
        assert_eq!(g, [up(1)]);
        let sent = Want {
            current: Some(Rung::new(2, 0)),
            ..camera(2, Some(2))
        };
        let (g, _) = run(1_600_000, &[sent], true);
        assert_eq!(g, [up(2)]);
    }

    #[test]
    fn a_track_with_nothing_live_is_not_withheld_and_costs_nothing() {
        let idle = Want {
            max: None,
            current: None,
            ..camera(2, None)
        };
        let (g, t) = run(200_000, &[idle, camera(2, Some(0))], true);
        assert_eq!(g, [up(TOP_LAYER), up(0)]);
        assert_eq!(t.desired, 1_700_000);
    }

    #[test]
    fn an_svc_rung_costs_the_spatial_layers_below_it_too() {
        let mut s = SpatialShares::default();
        assert_eq!(s.price(1_000_000, 0), None, "nothing measured yet");
        // 100, 300 and 600 bytes per window on spatial layers 0, 1 and 2.
        for _ in 0..RATE_WINDOWS {
            s.add(0, 100);
            s.add(1, 300);
            s.add(2, 600);
            s.close_window();
        }
        assert_eq!(s.price(1_000_000, 0), Some(100_000));
        assert_eq!(s.price(1_000_000, 1), Some(400_000), "layers 0 and 1");
        assert_eq!(s.price(1_000_000, 2), Some(1_000_000), "the whole stream");
        // A silent window keeps the shares; the top layer stopping shifts them over the
        // windows it is gone.
        s.close_window();
        assert_eq!(s.price(1_000_000, 1), Some(400_000));
        for _ in 0..RATE_WINDOWS {
            s.add(0, 100);
            s.add(1, 300);
            s.close_window();
        }
        assert_eq!(s.price(1_000_000, 0), Some(250_000));
        assert_eq!(s.price(1_000_000, 1), Some(1_000_000));
        // A hostile layer id counts as the top layer.
        s.add(200, 10);
        s.close_window();
    }

    #[test]
    fn rates_are_measured_over_the_last_windows_and_kept_while_a_layer_is_silent() {
        let mut r = LayerRates::default();
        for _ in 0..100 {
            r.add(2, 0, false, 1000);
        }
        r.add(0, 0, false, 100);
        r.close_window(1000);
        let top = Rung::top_of(2);
        assert_eq!(
            r.bps(top),
            100 * 1000 * 8,
            "the payload, as str0m's estimate counts"
        );
        assert_eq!(r.bps(Rung::LOWEST), 100 * 8);
        // A silent window keeps the rate; a layer that sends again is measured from then on.
        r.close_window(1000);
        assert_eq!(r.bps(top), 100 * 1000 * 8);
        r.add(2, 0, false, 1000 * 100);
        r.close_window(500);
        assert_eq!(r.bps(top), 1_600_000);
        // Too short a window measures nothing; a hostile layer index is clamped.
        r.add(7, 9, false, 10);
        r.close_window(10);
        assert_eq!(r.bps(Rung::new(7, 9)), r.bps(top));
    }

    #[test]
    fn a_layer_sent_in_lumps_is_priced_at_its_mean_not_at_its_last_window() {
        let mut r = LayerRates::default();
        // One 30 kB frame every other 500 ms window, a 100-byte frame in between: 240 kbit/s
        // on average, 0.5 or 0.002 Mbit/s in any one window.
        let lump = |r: &mut LayerRates, big: bool| {
            let (packets, size) = if big { (25, 1200) } else { (1, 100) };
            for _ in 0..packets {
                r.add(1, 0, false, size);
            }
            r.close_window(500);
        };
        // Any four windows hold two of each: one big and one small frame per second.
        let mean = (25 * 1200 + 100) * 8;
        let mut seen = Vec::new();
        for i in 0..12 {
            lump(&mut r, i % 2 == 0);
            if i >= RATE_WINDOWS {
                seen.push(r.bps(Rung::new(1, 0)));
            }
        }
        assert!(seen.iter().all(|&bps| bps == mean), "{seen:?} vs {mean}");
    }

    #[test]
    fn a_layers_temporal_layers_are_priced_cumulatively() {
        let mut r = LayerRates::default();
        // T0 frames of 2,000 bytes at 7.5 fps, T1 of 1,000 at 7.5, T2 of 1,000 at 15.
        for (t, bytes, n) in [(0, 2000, 15), (1, 1000, 15), (2, 1000, 30)] {
            for _ in 0..n {
                r.add(1, t, true, bytes);
            }
        }
        r.close_window(2000);
        assert_eq!(r.bps(Rung::new(1, 0)), 120_000);
        assert_eq!(r.bps(Rung::new(1, 1)), 180_000);
        assert_eq!(r.bps(Rung::new(1, 2)), 300_000);
        // One packet per frame: 7.5 + 7.5 + 15 frames a second.
        assert_eq!(r.frame_rates(1), Some([7_500, 15_000, 30_000]));
        assert_eq!(r.frame_rates(0), None, "a layer with no frame counted");
    }

    #[test]
    fn frame_rates_count_frames_not_packets_and_follow_the_publisher() {
        let mut r = LayerRates::default();
        // 15 fps, three packets a frame: T0 every fourth frame, T1 every fourth, T2 the rest.
        let frame = |r: &mut LayerRates, t: u8| {
            for p in 0..3 {
                r.add(0, t, p == 0, 1000);
            }
        };
        for i in 0..15 {
            frame(&mut r, [0, 2, 1, 2][i % 4]);
        }
        r.close_window(1000);
        let [t0, t1, t2] = r.frame_rates(0).unwrap();
        assert_eq!(t2, 15_000);
        assert!(
            (3_000..=5_000).contains(&t0) && (7_000..=8_000).contains(&t1),
            "{t0} {t1}"
        );
        // The publisher halves its rate: the measurement follows, over the last windows.
        for i in 0..8 {
            frame(&mut r, [0, 2, 1, 2][i % 4]);
        }
        r.close_window(1000);
        assert_eq!(r.frame_rates(0).unwrap()[2], (15_000 + 8_000) / 2);
    }

    #[test]
    fn temporal_layers_are_the_finer_steps_between_simulcast_layers() {
        // The top layer's base temporal layer fits where the whole top layer does not.
        let mut rates = ladder(SIMULCAST);
        rates[6] = 680_000;
        rates[7] = 1_020_000;
        let cam = Want {
            rates,
            ..camera(2, Some(1))
        };
        let (g, t) = run(1_300_000, &[cam], true);
        assert_eq!(g, [Grant::UpTo(Rung::new(2, 1))]);
        assert_eq!(t.allocated, 1_020_000);
        // Within a layer, a temporal step needs little headroom; a new layer needs more.
        let on = |rung| {
            let mut w = cam;
            w.current = Some(rung);
            w
        };
        let (g, _) = run(1_040_000, &[on(Rung::new(2, 0))], true);
        assert_eq!(
            g,
            [Grant::UpTo(Rung::new(2, 1))],
            "680k + 340k x 1.03 fits 1,040k"
        );
        let (g, _) = run(650_000, &[on(Rung::top_of(1))], true);
        assert_eq!(
            g,
            [Grant::UpTo(Rung::top_of(1))],
            "500k + 180k x 1.15 does not fit 650k and the 5 % a climb may go over"
        );
        assert_eq!(cam.next_step(Rung::new(2, 1)), 680_000);
        // Flat rungs are no step at all: from the low layer, the next step is the middle one.
        assert_eq!(cam.next_step(Rung::new(0, 0)), 350_000);
        assert_eq!(cam.next_step(Rung::TOP), 0);
    }

    #[test]
    fn a_grant_falls_on_a_sustained_low_and_rises_on_a_sustained_high_only() {
        use Grant::*;
        // `latest` as low as the sustained low: the rules for simulcast layers.
        // The estimate stayed low a whole second: down.
        assert_eq!(up(2).settle(up(0), up(0), up(0)), up(0));
        assert_eq!(up(0).settle(Paused, Paused, Paused), Paused);
        // A dip shorter than that: the highest estimate of the second still carries it, even
        // though the latest does not.
        assert_eq!(up(2).settle(up(0), up(2), up(0)), up(2));
        // A peak: the lowest estimate of four seconds does not carry more; stay.
        assert_eq!(up(0).settle(up(2), up(2), up(0)), up(0));
        // Four seconds of room: up, and a paused track resumes.
        assert_eq!(up(0).settle(up(2), up(2), up(1)), up(1));
        assert_eq!(Paused.settle(up(0), up(0), up(0)), up(0));
    }

    #[test]
    fn a_layer_lost_soon_after_the_climb_makes_the_next_climb_wait_longer() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut b = ClimbBackoff::default();
        // Never fallen: a climb is taken at once.
        assert_eq!(b.hold(s(0), up(0), up(1)), up(1));
        // Lost 5 s later: a failed climb; the next waits twice the base.
        assert_eq!(b.hold(s(5), up(1), up(0)), up(0));
        assert_eq!(b.wait(), CLIMB_WAIT_BASE * 2);
        // Held back meanwhile at every frame of the layer it has; not a moment past the wait.
        assert_eq!(b.hold(s(6), Grant::UpTo(Rung::new(0, 1)), up(1)), up(0));
        assert_eq!(b.hold(s(8), up(0), up(2)), up(0));
        assert_eq!(b.hold(s(9), up(0), up(1)), up(1));
        // Lost again: the waits double up to the most.
        let mut at = 9;
        let mut waits = Vec::new();
        for _ in 0..4 {
            assert_eq!(b.hold(s(at + 3), up(1), up(0)), up(0));
            waits.push(b.wait().as_secs());
            at += 3 + b.wait().as_secs();
            assert_eq!(b.hold(s(at), up(0), up(1)), up(1));
        }
        assert_eq!(waits, [8, 16, 16, 16]);
        // A layer held longer than a failed climb lasts: the next fall waits the base again.
        let later = at + CLIMB_PROVEN.as_secs();
        assert_eq!(b.hold(s(later), up(1), up(0)), up(0));
        assert_eq!(b.wait(), CLIMB_WAIT_BASE);
        assert_eq!(b.hold(s(later + 2), up(0), up(1)), up(1));
    }

    #[test]
    fn temporal_steps_and_pauses_are_never_held() {
        let t0 = Instant::now();
        let mut b = ClimbBackoff::default();
        b.hold(t0, up(0), up(1));
        b.hold(t0, up(1), up(0));
        let at = |t| Grant::UpTo(Rung::new(0, t));
        // Within the layer it has, a track climbs while a new layer is held.
        assert_eq!(b.hold(t0, at(0), at(2)), at(2));
        // A paused track resumes (its lowest layer is not a climb).
        assert_eq!(b.hold(t0, Grant::Paused, at(0)), at(0));
        assert_eq!(b.hold(t0, at(0), up(1)), up(0));
    }

    #[test]
    fn a_temporal_step_is_given_back_at_the_latest_estimate() {
        let at = |t| Grant::UpTo(Rung::new(2, t));
        // The latest estimate no longer carries the top layer's 15 fps: back to 7.5 fps now,
        // while the highest estimate of the second would still keep it.
        assert_eq!(at(1).settle(at(0), at(1), at(0)), at(0));
        // Only within the layer: a lower simulcast layer waits for a sustained low.
        assert_eq!(at(1).settle(up(1), at(1), up(1)), at(1));
        assert_eq!(at(1).settle(up(1), at(0), up(1)), at(0));
    }

    #[test]
    fn temporal_steps_within_the_layer_may_use_the_slack_and_new_layers_a_smaller_one() {
        let mut rates = ladder(SIMULCAST);
        rates[6] = 680_000;
        rates[7] = 1_020_000;
        let on = |rung| Want {
            rates,
            ..camera(2, Some(rung))
        };
        // On the top layer at 7.5 fps, its 15 fps step (340k x 1.03 more) fits only with the
        // slack: taken.
        let needs = 680_000.0 + 340_000.0 * TEMPORAL_HEADROOM;
        let estimate = (needs / (1.0 + Slack::CLEAR.step / 2.0)) as u64;
        let mut w = on(2);
        w.current = Some(Rung::new(2, 0));
        let (g, t) = run(estimate, &[w], true);
        assert_eq!(g, [Grant::UpTo(Rung::new(2, 1))], "estimate {estimate}");
        assert!(t.allocated > estimate);
        // While a queue stands on the path there is no slack: not taken.
        let mut g = Vec::new();
        allocate_within(estimate, Slack::NONE, &[w], true, &mut g);
        assert_eq!(g, [Grant::UpTo(Rung::new(2, 0))]);
        // Without the slack it would not fit: a little less estimate than the slack covers.
        let (g, _) = run((needs / (1.0 + Slack::CLEAR.step * 1.5)) as u64, &[w], true);
        assert_eq!(g, [Grant::UpTo(Rung::new(2, 0))]);
        // From the middle layer, the top layer's first rung (180k x 1.15 more) gets the
        // smaller slack a climb gets: taken within it, not a little past it (where a temporal
        // step's would still cover it).
        let needs = 500_000.0 + 180_000.0 * UPGRADE_HEADROOM;
        let estimate = (needs / (1.0 + Slack::CLEAR.layer / 2.0)) as u64;
        let (g, _) = run(estimate, &[on(1)], true);
        assert_eq!(g, [Grant::UpTo(Rung::new(2, 0))], "estimate {estimate}");
        let estimate = (needs / (1.0 + Slack::CLEAR.layer * 1.5)) as u64;
        assert!(estimate as f64 * (1.0 + Slack::CLEAR.step) > needs);
        let (g, _) = run(estimate, &[on(1)], true);
        assert_eq!(g, [Grant::UpTo(Rung::top_of(1))], "estimate {estimate}");
        // Nor while a queue stands.
        let mut g = Vec::new();
        allocate_within(needs as u64 - 1, Slack::NONE, &[on(1)], true, &mut g);
        assert_eq!(g, [Grant::UpTo(Rung::top_of(1))]);
    }

    #[test]
    fn a_temporal_layer_a_track_has_is_kept_further_under_the_estimate_than_it_is_taken() {
        let mut rates = ladder(SIMULCAST);
        rates[6] = 680_000;
        rates[7] = 1_020_000;
        let at = |t: u8| Want {
            rates,
            current: Some(Rung::new(2, t)),
            ..camera(2, Some(2))
        };
        // 15 % under what the top layer's 15 fps costs: more than the allowance for taking
        // that step, less than the one for keeping it.
        let estimate = (1_020_000.0 * 0.85) as u64;
        assert!(estimate as f64 * (1.0 + Slack::CLEAR.step) < 1_020_000.0);
        let (g, _) = run(estimate, &[at(0)], true);
        assert_eq!(g, [Grant::UpTo(Rung::new(2, 0))], "not taken at 7.5 fps");
        let (g, _) = run(estimate, &[at(1)], true);
        assert_eq!(g, [Grant::UpTo(Rung::new(2, 1))], "kept at 15 fps");
        // While a queue stands it is not kept.
        let mut g = Vec::new();
        allocate_within(estimate, Slack::NONE, &[at(1)], true, &mut g);
        assert_eq!(g, [Grant::UpTo(Rung::new(2, 0))]);
        // So is the layer's base: just above 1 / (1 + keep) of the top layer's 7.5 fps it
        // stays, just under it the middle layer it is. Climbing to it from there needs the
        // whole step and its headroom under the estimate.
        let kept_down_to = 680_000.0 / (1.0 + Slack::CLEAR.keep);
        let (g, _) = run((kept_down_to * 1.02) as u64, &[at(0)], true);
        assert_eq!(g, [Grant::UpTo(Rung::new(2, 0))]);
        let (g, _) = run((kept_down_to * 0.98) as u64, &[at(0)], true);
        assert_eq!(g, [up(1)]);
        let (g, _) = run(600_000, &[camera(2, Some(1))], true);
        assert_eq!(g, [up(1)]);
    }

    #[test]
    fn many_tracks_do_not_panic() {
        let wants = vec![camera(2, Some(2)); 100];
        let (g, _) = run(1_000_000, &wants, true);
        assert_eq!(g.len(), 100);
        assert_eq!(g[99], Grant::default());
    }
}
