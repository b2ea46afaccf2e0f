//! Each subscriber's downlink: str0m's TWCC bandwidth estimate of the connection its media
//! leaves on, and the allocation that fits its video into it (`allocator.rs`), run every
//! housekeeping turn.
//!
//! A grant only caps a [`DownTrack`](crate::track::DownTrack)'s target layer; the forwarder
//! still switches at keyframes. A paused track is announced with `StreamStateUpdate`
//! (`PAUSED`, then `ACTIVE` when it resumes), as LiveKit's SDKs expect. str0m is told the
//! rate worth probing for (what every subscribed track would send at the layers asked for),
//! so that a subscriber whose link widens climbs back.

use std::time::Instant;

use livekit_protocol as lk;
use str0m::bwe::Bitrate;
use tracing::{debug, info};

use crate::allocator::{
    allocate_within, default_video_bps, Class, Grant, Rung, Slack, Want, DEFAULT_AUDIO_BPS, RUNGS,
};
use crate::forwarder::{Layer, MAX_LAYERS};
use crate::ids::{ParticipantKey, TrackKey};
use crate::shard::Shard;
use crate::standing_queue::StandingQueue;
use crate::temporal::TEMPORAL_LAYERS;
use crate::track::{DownTrack, Track};

/// A subscriber connection's bandwidth estimate and what str0m was last asked to probe for.
#[derive(Debug, Default, Clone, Copy)]
pub struct Downlink {
    /// The latest TWCC estimate (bits per second) while str0m can probe; `None` when
    /// congestion control is off or the client sends no transport-wide feedback: nothing is
    /// withheld then.
    pub estimate: Option<u64>,
    /// The rate str0m was last told to probe toward.
    pub desired: u64,
    /// The rate str0m was last told to sustain, padding what media does not fill.
    pub minimum: u64,
    /// While video is held below what the subscriber asked for: when str0m is next asked to
    /// probe for more, and whether the turn before lowered the desired rate to prepare it.
    next_probe: Option<Instant>,
    lowered: bool,
    /// The wait between probes ([`PROBE_INTERVAL`] until one found nothing; zero: not set),
    /// and what was allocated when the last probe began.
    probe_wait: std::time::Duration,
    probed_from: Option<u64>,
    /// What the last allocation sends.
    pub allocated: u64,
    /// The estimate at each of the last [`SAMPLES`] allocation turns (`u64::MAX`: none),
    /// newest at `turn % SAMPLES`.
    samples: [u64; SAMPLES],
    turn: usize,
    /// Whether a queue stands on the path, from the receiver's round trips.
    pub queue: StandingQueue,
    /// When the last standing queue drained: padding stays held for [`PAD_COOLDOWN`] after
    /// ([`PAD_CAP_SHARE_DRAINED`]).
    drained_at: Option<Instant>,
    /// The estimate when the queue that stands now was found (`None` while none stands, or
    /// when there was no estimate): nothing is allocated above it until the queue drained
    /// ([`Downlink::ceiling`]).
    found_at: Option<u64>,
}

/// What padding is held under while a queue stands on the path: this share of the estimate.
/// Media then leaves room for the queue to drain.
const PAD_CAP_SHARE: f64 = 0.8;
/// How long padding stays held after a standing queue drained: the estimate it would pad up
/// to again is the one that filled the queue.
const PAD_COOLDOWN: std::time::Duration = std::time::Duration::from_secs(20);
/// What padding is held under in the [`PAD_COOLDOWN`] after a drain: this share of the
/// estimate. Not [`PAD_CAP_SHARE`]: a queue usually drains because the video dropped a rung,
/// and str0m's estimate grows only with what is sent. Held under 0.8 of an estimate that the
/// lower rung already fills to 0.77, nothing was padded and the estimate stalled: on
/// `bench/limits.sh`'s 700 kbit/s link the video dropped to the 334 kbit/s rung at an estimate
/// of 433 kbit/s, which then grew 70 kbit/s in 20 s, and the subscriber spent the measured
/// window at 0.61 of its link. A queue that stood again in that time restarted the hold.
const PAD_CAP_SHARE_DRAINED: f64 = 0.95;

/// Below this estimate a subscriber's forwarded video is paced by str0m (at 1.1x the
/// estimate) instead of leaving in one burst per loop turn. On a link this narrow one large
/// frame is a noticeable share of a second of the link: a 30 kB keyframe, or a lump of a layer
/// whose encoder is near its budget, sent at once overflows an access link's queue (30 kB is
/// 0.6 s of 400 kbit/s; a 25 kB queue drops the rest) and the losses cost a freeze. Paced, it
/// arrives late by the same 0.6 s but whole. Above it bursts are a few tens of milliseconds of
/// the link, and pacing would cost every subscriber a timer wake-up per release.
pub const PACE_BELOW_BPS: u64 = 1_500_000;

/// Paced video still queued at a layer switch is discarded when the link would take longer
/// than this to carry it at the estimate (`forward.rs`): the switch's keyframe needs none of
/// it, and sent it is that much delay, or, on a link that narrowed, seconds of a layer the
/// link no longer carries in its queue. A shorter backlog (a frame or two being paced out)
/// goes out: discarding it would cost frames and save nothing a viewer notices.
pub const DISCARD_BACKLOG_OVER: std::time::Duration = std::time::Duration::from_millis(200);

/// Turns over which a high estimate must last before video goes up, a simulcast layer, a
/// temporal layer or resuming: four seconds. str0m's estimate overshoots a link it pads into
/// for about two seconds at a time, and two seconds were all a climb needed:
/// - `bench/limits.sh`'s 700 kbit/s link (about 650 kbit/s of payload) read 745–860 for two
///   seconds after 610–670, and took the top layer's first rung (720 with audio) in nine runs of
///   thirteen, giving it back after 5–12 s each time;
/// - its 300 kbit/s link read 370–390 and took the middle layer's 15 fps rung (340) for 1–4 s,
///   which filled its 25 kB queue; at the rung below, 0.97 of the link with the resends, the
///   queue then stayed full (audio 0.55–0.6 s late) for the rest of the run in half the runs.
const UP_TURNS: usize = 8;
/// Allocation turns remembered.
const SAMPLES: usize = UP_TURNS;
/// Turns over which a low estimate must last before video goes down: one second.
const DOWN_TURNS: usize = 2;

impl Downlink {
    /// Whether forwarded video is paced ([`PACE_BELOW_BPS`]; never without an estimate).
    pub fn paced(&self) -> bool {
        self.estimate.is_some_and(|e| e < PACE_BELOW_BPS)
    }

    /// Whether `bytes` of paced video waiting to leave are more than the link carries in
    /// [`DISCARD_BACKLOG_OVER`] at the estimate.
    pub fn backlog_is_stale(&self, bytes: usize) -> bool {
        self.estimate.is_some_and(|e| {
            let bits = bytes as u128 * 8;
            bits * 1_000_000 > u128::from(e) * DISCARD_BACKLOG_OVER.as_micros()
        })
    }

    /// A round trip the receiver reported at `now`, judged with the others of its turn at the
    /// next allocation turn ([`Downlink::settle_queue`]).
    pub fn on_rtt(&mut self, now: Instant, rtt: std::time::Duration) {
        self.queue.on_rtt(now, rtt);
    }

    /// Whether a queue stands on the path, from the round trips reported since the last turn,
    /// when that changes (`standing_queue.rs`); padding is held under [`PAD_CAP_SHARE`] of
    /// the estimate while one stands, and under [`PAD_CAP_SHARE_DRAINED`] for
    /// [`PAD_COOLDOWN`] after.
    pub fn settle_queue(&mut self, now: Instant) -> Option<bool> {
        let standing = self.queue.settle()?;
        if standing {
            self.found_at = self.estimate;
        } else {
            self.drained_at = Some(now);
            self.found_at = None;
        }
        Some(standing)
    }

    /// An estimate as the allocation may use it: no higher than the estimate at which the
    /// queue that stands now was found. The link was full at that estimate already; a rise
    /// while the queue stands is str0m's loss controller, which goes on raising it at a few
    /// per cent of loss, not room. Allocated into, it overfills the queue: in
    /// `test_quality.py`'s 400 kbit/s test under a CPU hog the estimate rose from 332 to
    /// 404 kbit/s while a queue stood, a temporal step was taken within it, and the video
    /// froze 1.3 s. A dip below it and back (a temporal layer given back and taken again)
    /// stays free.
    pub fn ceiling(&self, estimate: u64) -> u64 {
        self.found_at.map_or(estimate, |found| estimate.min(found))
    }

    /// The rate padding is held under at `now`, if any.
    fn pad_cap(&self, now: Instant) -> Option<u64> {
        let share = if self.queue.standing() {
            PAD_CAP_SHARE
        } else if self.drained_at.is_some_and(|at| now < at + PAD_COOLDOWN) {
            PAD_CAP_SHARE_DRAINED
        } else {
            return None;
        };
        let estimate = self.ceiling(self.estimate.unwrap_or(crate::peer::INITIAL_ESTIMATE_BPS));
        Some((estimate as f64 * share) as u64)
    }

    /// Record this turn's estimate; returns the highest of the last second and the lowest of
    /// the last four: the estimates a track goes down and up by (`Grant::settle`).
    fn sample(&mut self) -> (u64, u64) {
        self.turn += 1;
        self.samples[self.turn % SAMPLES] = self.estimate.unwrap_or(u64::MAX);
        let recent = |n: usize| (0..n).map(|i| self.samples[(self.turn + SAMPLES - i) % SAMPLES]);
        let high = recent(DOWN_TURNS).max().unwrap_or(u64::MAX);
        // Until enough turns were seen, climbing is judged on what was seen.
        let low = recent(self.turn.min(UP_TURNS)).min().unwrap_or(u64::MAX);
        (high, low)
    }

    /// The rates to give str0m this turn, if they change: (minimum, desired). Desired is what
    /// every track would send at the layers asked for (`wanted`). While less than that is
    /// allocated:
    /// - the minimum is the allocation plus the next step up (`step`): str0m pads up to it
    ///   (never above its estimate), so the estimate can grow while the video it would carry
    ///   is held back (str0m's estimate grows only with what is sent);
    /// - every [`PROBE_INTERVAL`] the desired rate is lowered to the estimate for one turn
    ///   and raised again the next, which str0m answers with a probe; after a probe that
    ///   found nothing (no more allocated by the next one) the wait doubles, up to
    ///   [`PROBE_INTERVAL_MAX`]. A probe into a link that is full already fills its queue:
    ///   the estimate it leaves is higher for a turn and lower for seconds (a 300 kbit/s
    ///   link: 417 kbit/s, then 190), and the dip takes temporal layers away.
    fn next_rates(&mut self, now: Instant, wanted: u64, step: u64) -> Option<(u64, u64)> {
        let held = self.estimate.is_some() && self.allocated < wanted;
        // str0m caps every probe at twice the desired rate and takes a probe's result as its
        // estimate even when it is lower: a desired rate below the estimate would pull the
        // estimate down to it (at start-up, when little has been measured yet, to a few
        // hundred kbit/s). So the desired rate never goes below the estimate.
        let floor = self.estimate.unwrap_or(crate::peer::INITIAL_ESTIMATE_BPS);
        let wanted = wanted.max(floor);
        let minimum = if held {
            (self.allocated + step + step / 8).min(wanted)
        } else {
            0
        };
        let minimum = self.pad_cap(now).map_or(minimum, |cap| minimum.min(cap));
        let set = if self.lowered {
            // The probe begins: the one before it found room if more is allocated now than
            // when it began.
            self.lowered = false;
            let found = |from: u64| self.allocated as f64 > from as f64 * (1.0 + PROBE_FOUND);
            self.probe_wait = match self.probed_from {
                Some(from) if !found(from) => (self.probe_wait * 2).clamp(PROBE_INTERVAL, PROBE_INTERVAL_MAX),
                _ => PROBE_INTERVAL,
            };
            self.probed_from = Some(self.allocated);
            self.next_probe = Some(now + self.probe_wait);
            Some(wanted)
        } else if held && !self.queue.standing() && self.next_probe.is_some_and(|at| now >= at) {
            self.lowered = true;
            Some(floor)
        } else {
            let last = self.desired as f64;
            let moved = (wanted as f64 - last).abs() > last * DESIRED_CHANGE;
            if moved && wanted > self.desired {
                // More is asked for: probing for it starts over.
                self.probed_from = None;
                self.next_probe = self.next_probe.map(|at| at.min(now + PROBE_INTERVAL));
            }
            moved.then_some(wanted)
        };
        if held && self.next_probe.is_none() {
            self.next_probe = Some(now + PROBE_INTERVAL);
        }
        if !held {
            self.next_probe = None;
            self.probed_from = None;
        }
        let desired = set.unwrap_or(self.desired);
        if desired == self.desired && minimum == self.minimum {
            return None;
        }
        self.desired = desired;
        self.minimum = minimum.min(desired);
        Some((self.minimum, desired))
    }
}

/// The desired rate is passed on to str0m when it moved by more than this fraction.
const DESIRED_CHANGE: f64 = 0.1;

/// While a subscriber's video is held below what it asked for, str0m probes for more this
/// often. str0m probes when the desired rate rises above its estimate; a link that widened
/// while the subscriber received little would otherwise be found only by str0m's stagnation
/// probe, 15 s later (its application-limited probes do not run while the low layer fills
/// most of the old estimate).
const PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3);
/// The longest wait between probes that find nothing: a link that widens is found within it
/// (`test_quality.py` waits 40 s for the climb back to the top layer when the limit lifts).
const PROBE_INTERVAL_MAX: std::time::Duration = std::time::Duration::from_secs(12);
/// A probe found room when the allocation rose by more than this share by the next probe.
const PROBE_FOUND: f64 = 0.05;

/// Reused buffers of the allocation (no allocation per turn once warm).
#[derive(Default)]
pub(crate) struct AllocScratch {
    subscribers: Vec<ParticipantKey>,
    keys: Vec<TrackKey>,
    wants: Vec<Want>,
    grants: Vec<Grant>,
    grants_high: Vec<Grant>,
    grants_latest: Vec<Grant>,
    changed: Vec<lk::StreamStateInfo>,
}

impl Shard {
    /// Close every track's rate window and allocate each estimated downlink.
    pub(crate) fn allocate_downlinks(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.rates_window).as_millis() as u64;
        self.rates_window = now;
        for t in self.tracks.values_mut() {
            t.rates.close_window(elapsed);
            t.spatial.close_window();
        }
        // A subscriber's frame-rate request follows the publisher's measured frame rates.
        for p in self.participants.values_mut() {
            for dt in p.downtracks.values_mut().filter(|dt| dt.fps != 0) {
                if let Some(t) = self.tracks.get(&dt.track) {
                    dt.follow_frame_rates(&t.rates);
                }
            }
        }
        if !self.config.congestion_control.enabled {
            return;
        }
        let allow_pause = self.config.congestion_control.allow_pause;
        let mut scratch = std::mem::take(&mut self.alloc);
        let mut subscribers = std::mem::take(&mut scratch.subscribers);
        subscribers.clear();
        subscribers.extend(
            self.participants
                .iter()
                .filter(|(_, p)| !p.downtracks.is_empty())
                .map(|(k, _)| *k),
        );
        for &key in &subscribers {
            self.allocate_downlink(now, key, allow_pause, &mut scratch);
        }
        scratch.subscribers = subscribers;
        self.alloc = scratch;
    }

    fn allocate_downlink(
        &mut self,
        now: Instant,
        key: ParticipantKey,
        allow_pause: bool,
        s: &mut AllocScratch,
    ) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        if let Some(standing) = p.downlink.settle_queue(now) {
            let (rtt, base, estimate) = (
                p.downlink.queue.judged(),
                p.downlink.queue.base(),
                p.downlink.estimate,
            );
            debug!(participant = %p.sid, ?rtt, ?base, standing, ?estimate, "standing queue on the downlink");
        }
        // No estimate (yet, or any more): nothing is withheld.
        let estimate = p.downlink.ceiling(p.downlink.estimate.unwrap_or(u64::MAX));
        let (down_by, up_by) = p.downlink.sample();
        let (down_by, up_by) = (p.downlink.ceiling(down_by), p.downlink.ceiling(up_by));
        let p = &**p;
        s.keys.clear();
        s.keys.extend(p.downtracks.keys().copied());
        // Subscription order within a class: tracks keys grow with publication.
        s.keys.sort_unstable();
        s.wants.clear();
        for tk in &s.keys {
            let (Some(dt), Some(t)) = (p.downtracks.get(tk), self.tracks.get(tk)) else {
                s.wants.push(Want {
                    class: Class::Camera,
                    rank: u32::MAX,
                    max: None,
                    current: None,
                    climbing: None,
                    rates: [0; RUNGS],
                });
                continue;
            };
            s.wants.push(want(dt, t, now));
        }
        // No temporal step over the estimate while a queue stands on the path.
        let standing = p.downlink.queue.standing();
        let slack = if standing { Slack::NONE } else { Slack::CLEAR };
        let allocate = |estimate, grants: &mut Vec<Grant>| {
            allocate_within(estimate, slack, &s.wants, allow_pause, grants)
        };
        let totals = allocate(down_by, &mut s.grants);
        allocate(up_by, &mut s.grants_high);
        // At the latest estimate: the same allocation as at the highest of the last second
        // whenever the latest is that highest (a flat or rising estimate).
        if estimate == down_by {
            s.grants_latest.clone_from(&s.grants);
        } else {
            allocate(estimate, &mut s.grants_latest);
        }
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        s.changed.clear();
        let mut allocated = 0;
        // The smallest step up any held track could take next.
        let mut step = u64::MAX;
        let turn = s
            .keys
            .iter()
            .zip(&s.grants_latest)
            .zip(&s.grants)
            .zip(&s.grants_high)
            .zip(&s.wants);
        for ((((tk, latest), low), high), w) in turn {
            let Some(dt) = p.downtracks.get_mut(tk) else {
                continue;
            };
            if dt.kind.is_audio() {
                allocated += w.rates[0];
                continue;
            }
            let settled = dt.grant.settle(*latest, *low, *high);
            let grant = &no_climb(standing, dt.grant, dt.climb.hold(now, dt.grant, settled));
            match (grant, w.max) {
                (Grant::UpTo(r), Some(max)) => {
                    let r = (*r).min(max);
                    allocated += w.rates[r.index()];
                    let next = w.next_step(r);
                    if next > 0 {
                        step = step.min(next);
                    }
                }
                (Grant::Paused, Some(_)) => step = step.min(w.rates[0]),
                _ => {}
            }
            if dt.grant == *grant {
                continue;
            }
            debug!(subscriber = %p.sid, track = %dt.track_sid, from = ?dt.grant, to = ?grant, estimate, rates = ?w.rates, current = ?w.current, climb_wait = ?dt.climb.wait(), "downlink grant");
            let state = match (dt.grant, *grant) {
                (Grant::Paused, Grant::UpTo(_)) => Some(lk::StreamState::Active),
                (Grant::UpTo(_), Grant::Paused) => Some(lk::StreamState::Paused),
                _ => None,
            };
            if let Some(state) = state {
                info!(subscriber = %p.sid, track = %dt.track_sid, estimate, ?state, "video paused or resumed for the subscriber's bandwidth");
                s.changed.push(lk::StreamStateInfo {
                    participant_sid: dt.publisher_sid.to_string(),
                    track_sid: dt.track_sid.to_string(),
                    state: state as i32,
                });
            }
            dt.grant = *grant;
        }
        p.downlink.allocated = allocated;
        tracing::trace!(subscriber = %p.sid, estimate, down_by, up_by, allocated, desired = totals.desired, "downlink turn");
        let step = if step == u64::MAX { 0 } else { step };
        if let Some((minimum, desired)) = p.downlink.next_rates(now, totals.desired, step) {
            debug!(subscriber = %p.sid, minimum, desired, estimate, "downlink rates for str0m");
            let down = p.down_pc();
            p.peer_mut(down)
                .rtc
                .bwe()
                .set_bitrate(Bitrate::bps(minimum), Bitrate::bps(desired));
            self.dirty.push(crate::peer::PeerRef { key, pc: down });
        }
        if !s.changed.is_empty() {
            let msg = lk::signal_response::Message::StreamStateUpdate(lk::StreamStateUpdate {
                stream_states: std::mem::take(&mut s.changed),
            });
            self.send_to(key, msg);
        }
    }
}

/// While a queue stands on the subscriber's path (`standing_queue.rs`) a track does not climb
/// to a higher layer (a keyframe into a full queue), nor resume: the link is full already, and
/// the estimate can still rise above what it carries (str0m's loss controller raises it at a
/// few per cent of loss). Temporal steps within its layer stay free: a track that fell to its
/// base temporal layer in a dip of the estimate comes back up without waiting for the queue.
fn no_climb(standing: bool, have: Grant, next: Grant) -> Grant {
    match (have, next) {
        (Grant::UpTo(h), Grant::UpTo(n)) if standing && n.layer() > h.layer() => {
            Grant::UpTo(Rung::top_of(h.layer()))
        }
        (Grant::Paused, Grant::UpTo(_)) if standing => have,
        _ => next,
    }
}

/// What the allocator needs of one subscribed track.
fn want(dt: &DownTrack, t: &Track, now: Instant) -> Want {
    if dt.kind.is_audio() {
        let measured = t.rates.bps(Rung::LOWEST);
        let mut rates = [0; RUNGS];
        rates[0] = if measured > 0 { measured } else { DEFAULT_AUDIO_BPS };
        return Want {
            class: Class::Audio,
            rank: u32::MAX,
            max: Some(Rung::LOWEST),
            current: Some(Rung::LOWEST),
            climbing: None,
            rates,
        };
    }
    let class = if t.info.source == lk::TrackSource::ScreenShare as i32 {
        Class::Screen
    } else {
        Class::Camera
    };
    // Granted up to what the subscriber asked for; layers above the best live one cost
    // nothing more (the forwarder never goes above the best live layer).
    let best = if dt.disabled || dt.mid.is_none() {
        None
    } else {
        t.best_layer(now)
    };
    let max = best.map(|_| Rung::new(dt.max_layer, dt.asked_temporal(dt.max_layer)));
    let mut rates = [0; RUNGS];
    let mut floor = 0;
    for (r, rate) in rates.iter_mut().enumerate() {
        let rung = Rung::new((r / TEMPORAL_LAYERS) as u8, (r % TEMPORAL_LAYERS) as u8);
        // (An SVC stream's rungs are its spatial layers, priced by their share of it.)
        if !t.svc && best.is_some_and(|b| rung.layer() > b) {
            *rate = floor;
            continue;
        }
        *rate = layer_bps(t, rung).max(floor);
        floor = *rate;
    }
    Want {
        class,
        rank: dt.priority.map_or(u32::MAX, |p| p.get()),
        max,
        // Of an SVC stream, the spatial layer forwarded (the rungs are spatial layers).
        current: dt.forwarder.current().map(|l| {
            let l = if t.svc { dt.forwarder.spatial() } else { l };
            Rung::new(l, dt.forwarder.temporal())
        }),
        climbing: climbing(dt, t.svc),
        rates,
    }
}

/// The grant of a climb to a higher layer that waits for that layer's keyframe (of an SVC
/// stream, a key picture for a higher spatial layer), up to every frame of that layer.
fn climbing(dt: &DownTrack, svc: bool) -> Option<Rung> {
    let f = &dt.forwarder;
    let to = match (svc, f.current(), f.target()) {
        (true, _, _) if f.wants_key_picture() => f.spatial_target(),
        (false, Some(c), Some(t)) if t > c => t,
        _ => return None,
    };
    match dt.grant {
        Grant::UpTo(r) => Some(r.min(Rung::top_of(to))),
        Grant::Paused => None,
    }
}

/// A rung's rate: measured where its layer reaches this place, else what the publisher
/// announced for the layer, else what LiveKit's SDKs encode at its height (an unmeasured
/// layer has no cheaper temporal rungs). A measurement is capped a little above the announced
/// maximum: above it are keyframe bursts (which a keyframe request of another subscriber's
/// causes), not what the layer costs.
fn layer_bps(t: &Track, rung: Rung) -> u64 {
    let announced = t
        .info
        .layers
        .iter()
        .find(|l| l.quality == i32::from(rung.layer()));
    let capped = |measured: u64, layer: Option<&lk::VideoLayer>| match layer {
        Some(l) if l.bitrate > 0 => measured.min(u64::from(l.bitrate) * 6 / 5),
        _ => measured,
    };
    let measured = if t.svc {
        // One stream: its rate at the rung's temporal layer (measured under the simulcast
        // layer it arrives as; capped by the top announced layer, which is the whole
        // stream's), times the share of the spatial layers up to the rung's.
        let whole = (0..MAX_LAYERS as Layer)
            .map(|l| t.rates.bps(Rung::new(l, rung.temporal())))
            .max()
            .unwrap_or(0);
        let top = t.info.layers.iter().max_by_key(|l| l.quality);
        t.spatial.price(capped(whole, top), rung.layer()).unwrap_or(0)
    } else {
        capped(t.rates.bps(rung), announced)
    };
    if measured > 0 {
        return measured;
    }
    match announced {
        Some(l) if l.bitrate > 0 => u64::from(l.bitrate),
        Some(l) => default_video_bps(l.height.min(l.width)),
        // No layers announced: a single stream at the track's size.
        None => default_video_bps(t.info.height.min(t.info.width)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// A subscriber held at 300 kbit/s of the 1.4 Mbit/s it asked for, on an estimate of
    /// 370 kbit/s, the next step 100 kbit/s up.
    fn held() -> Downlink {
        Downlink {
            estimate: Some(370_000),
            allocated: 300_000,
            ..Downlink::default()
        }
    }

    #[test]
    fn a_backlog_is_stale_past_what_the_link_carries_in_200_ms() {
        // 400 kbit/s carries 10 kB in 200 ms.
        let d = Downlink {
            estimate: Some(400_000),
            ..Downlink::default()
        };
        assert!(!d.backlog_is_stale(9_000), "a frame or two being paced out");
        assert!(d.backlog_is_stale(11_000));
        assert!(
            d.backlog_is_stale(187_000),
            "seconds of a layer the link left behind"
        );
        assert!(
            !Downlink::default().backlog_is_stale(187_000),
            "no estimate: never paced"
        );
    }

    #[test]
    fn while_a_queue_stands_tracks_take_no_higher_layer_and_do_not_resume() {
        let (low, high) = (Grant::UpTo(Rung::new(1, 0)), Grant::UpTo(Rung::new(1, 1)));
        let up = Grant::UpTo(Rung::new(2, 0));
        assert_eq!(
            no_climb(true, low, high),
            high,
            "a temporal step within the layer"
        );
        assert_eq!(no_climb(true, low, up), Grant::UpTo(Rung::top_of(1)));
        assert_eq!(no_climb(true, Grant::Paused, low), Grant::Paused);
        assert_eq!(no_climb(true, high, low), low);
        assert_eq!(no_climb(true, low, Grant::Paused), Grant::Paused);
        assert_eq!(no_climb(false, low, up), up);
        assert_eq!(no_climb(false, Grant::Paused, low), low);
    }

    #[test]
    fn video_goes_down_on_a_second_of_low_estimates_and_up_on_four_seconds_of_high_ones() {
        let mut d = Downlink::default();
        for e in [600, 610, 750, 760, 770, 780] {
            d.estimate = Some(e);
            let (high, low) = d.sample();
            assert_eq!(high, e, "rising: the latest is the highest of the second");
            assert_eq!(low, 600, "nothing climbs on less than four seconds");
        }
        for e in [790, 800, 805] {
            d.estimate = Some(e);
            d.sample();
        }
        d.estimate = Some(810);
        assert_eq!(d.sample(), (810, 750), "four seconds after the rise");
        d.estimate = Some(500);
        assert_eq!(d.sample(), (810, 500), "a dip: down only if it lasts a second");
        d.estimate = Some(520);
        assert_eq!(d.sample(), (520, 500));
    }

    #[test]
    fn probes_that_find_nothing_come_less_often_and_one_that_finds_room_resets_the_wait() {
        let t0 = Instant::now();
        let mut d = held();
        let mut probes = Vec::new();
        let turn = |d: &mut Downlink, ms: u64, probes: &mut Vec<u64>| {
            if let Some((_, desired)) = d.next_rates(t0 + MS(ms), 1_400_000, 100_000) {
                if desired == 370_000 {
                    probes.push(ms);
                }
            }
        };
        for ms in (0..60_000).step_by(500) {
            turn(&mut d, ms, &mut probes);
        }
        // Lowered for a probe 3 s after the hold began, then 3 s after each probe began (the
        // turn after), each gap doubling after a probe found nothing, up to 12 s.
        assert_eq!(probes, [3_000, 6_500, 13_000, 25_500, 38_000, 50_500]);
        // Something climbed after the probe that began at 51 s: the gap after the next one is
        // 3 s again, and doubles again after that one found nothing more.
        d.allocated = 400_000;
        probes.clear();
        for ms in (60_000..80_000).step_by(500) {
            turn(&mut d, ms, &mut probes);
        }
        assert_eq!(probes, [63_000, 66_500, 73_000]);
    }

    #[test]
    fn a_standing_queue_holds_padding_under_most_of_the_estimate_until_after_it_drained() {
        let t0 = Instant::now();
        let mut d = held();
        assert_eq!(
            d.next_rates(t0, 1_400_000, 100_000),
            Some((412_500, 1_400_000)),
            "pads for the next step"
        );
        d.on_rtt(t0, MS(2));
        assert_eq!(d.settle_queue(t0), None);
        d.on_rtt(t0 + MS(1_000), MS(470));
        assert_eq!(d.settle_queue(t0 + MS(1_000)), Some(true));
        let (minimum, _) = d
            .next_rates(t0 + MS(1_500), 1_400_000, 100_000)
            .expect("the minimum drops");
        assert_eq!(minimum, 296_000, "0.8 of the estimate");
        // No probe while the queue stands, however long it waits.
        assert_eq!(d.next_rates(t0 + MS(60_000), 1_400_000, 100_000), None);
        // Drained: probes go on at once, padding stays held (under more of the estimate) for a
        // while, then pads for the next step again.
        d.on_rtt(t0 + MS(61_000), MS(3));
        assert_eq!(d.settle_queue(t0 + MS(61_000)), Some(false));
        let probe = d.next_rates(t0 + MS(61_500), 1_400_000, 100_000);
        assert_eq!(
            probe,
            Some((351_500, 370_000)),
            "the desired rate lowered for a probe"
        );
        d.next_rates(t0 + MS(62_000), 1_400_000, 100_000);
        assert_eq!(d.minimum, 351_500, "0.95 of the estimate");
        let after = t0 + MS(61_000) + PAD_COOLDOWN;
        d.next_rates(after, 1_400_000, 100_000); // (a probe's lowered turn)
        d.next_rates(after + MS(500), 1_400_000, 100_000);
        assert_eq!(d.minimum, 412_500);
    }

    #[test]
    fn after_a_drain_a_rung_dropped_to_is_padded_so_the_estimate_can_grow() {
        // bench/limits.sh's 700 kbit/s link, run 3 of 0d509e4: a queue found at 555 kbit/s,
        // the video dropped to the 334 kbit/s rung (the next one up 208 kbit/s more), and the
        // queue drained at an estimate of 433 kbit/s.
        let t0 = Instant::now();
        let mut d = Downlink {
            estimate: Some(555_000),
            allocated: 334_000,
            ..Downlink::default()
        };
        d.on_rtt(t0, MS(1));
        d.settle_queue(t0);
        d.on_rtt(t0 + MS(2_000), MS(236));
        assert_eq!(d.settle_queue(t0 + MS(2_000)), Some(true));
        d.estimate = Some(433_000);
        d.on_rtt(t0 + MS(4_000), MS(1));
        assert_eq!(d.settle_queue(t0 + MS(4_000)), Some(false));
        for ms in (4_500..8_000).step_by(500) {
            d.next_rates(t0 + MS(ms), 1_750_000, 208_000);
        }
        // Held under 0.8 of the estimate (346 kbit/s), 12 kbit/s would be padded.
        assert_eq!(d.minimum, 411_350, "0.95 of the estimate");
        assert!(
            d.minimum > d.allocated + 70_000,
            "padding for the estimate to grow on"
        );
    }

    #[test]
    fn while_a_queue_stands_nothing_is_allocated_above_the_estimate_it_was_found_at() {
        let t0 = Instant::now();
        let mut d = held();
        d.estimate = Some(332_000);
        assert_eq!(d.ceiling(404_000), 404_000, "no queue: the estimate as it is");
        d.on_rtt(t0, MS(2));
        d.settle_queue(t0);
        d.on_rtt(t0 + MS(1_000), MS(470));
        assert_eq!(d.settle_queue(t0 + MS(1_000)), Some(true));
        // str0m's loss controller raises the estimate while the queue stands.
        d.estimate = Some(404_000);
        assert_eq!(d.ceiling(404_000), 332_000);
        assert_eq!(d.ceiling(250_000), 250_000, "a dip below it is a dip");
        d.next_rates(t0 + MS(1_500), 1_400_000, 100_000);
        assert_eq!(d.minimum, 265_600, "padding held under 0.8 of 332 kbit/s");
        d.on_rtt(t0 + MS(9_000), MS(3));
        assert_eq!(d.settle_queue(t0 + MS(9_000)), Some(false));
        assert_eq!(d.ceiling(404_000), 404_000, "drained: the estimate as it is");
    }
}
