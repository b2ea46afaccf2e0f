//! Connection quality: every [`QUALITY_INTERVAL`] each participant hosted here is scored from
//! what its transport did in that window, and the room is told what changed
//! (`ConnectionQualityUpdate`, as LiveKit's SDKs expect it).
//!
//! - **Loss** is the worse of two directions: upstream, the sequence numbers of its published
//!   streams that never arrived (`loss.rs`); downstream, what its subscriber connection reports
//!   lost in RTCP receiver reports against the packets we sent it.
//! - **RTT** comes from those receiver reports (str0m's per-stream stats).
//! - A score in MOS terms (1 to 4.5) follows from a simplified E-model; EXCELLENT from
//!   [`EXCELLENT_MOS`], GOOD from [`GOOD_MOS`], else POOR. A participant whose transport has
//!   been silent for two windows, or whose signalling is gone, is LOST.
//! - Jitter and bitrate against the track's announced layers are not scored yet.
//!
//! Participants hosted at other places are scored there and arrive as `RelayMessage::Quality`
//! (`membership.rs: show_quality`); a new member is sent the whole table once.

use std::time::{Duration, Instant};

use livekit_protocol as lk;
use lk::ConnectionQuality as Q;

use crate::ids::{ParticipantKey, ParticipantSid, RoomName};
use crate::shard::Shard;

/// How often qualities are scored and changes sent.
pub const QUALITY_INTERVAL: Duration = Duration::from_secs(4);
/// At least this score is EXCELLENT (about 2 % loss on a short path).
pub const EXCELLENT_MOS: f32 = 4.0;
/// At least this score is GOOD (about 7 % loss).
pub const GOOD_MOS: f32 = 3.5;
/// Fewer packets than this in a direction say nothing about its loss.
const MIN_PACKETS: u64 = 20;

/// One participant's transport over the current window, and what the room was last told.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkQuality {
    /// Upstream: packets that arrived and sequence numbers given up as lost.
    pub up_received: u64,
    pub up_lost: u64,
    /// Downstream: packets sent and what receiver reports counted lost.
    pub down_sent: u64,
    pub down_lost: u64,
    /// The worst round trip reported in the window.
    pub rtt: Option<Duration>,
    /// The quality last announced (`None`: never).
    pub announced: Option<Q>,
}

impl LinkQuality {
    pub fn rtt_seen(&mut self, rtt: Duration) {
        self.rtt = Some(self.rtt.map_or(rtt, |r| r.max(rtt)));
    }

    /// Close the window: its loss fraction and round trip.
    fn close_window(&mut self) -> (f32, Duration) {
        let fraction = |lost: u64, total: u64| {
            if total < MIN_PACKETS {
                0.0
            } else {
                (lost as f64 / total as f64).min(1.0) as f32
            }
        };
        let up = fraction(self.up_lost, self.up_received + self.up_lost);
        let down = fraction(self.down_lost, self.down_sent);
        let rtt = self.rtt.unwrap_or_default();
        (
            self.up_received,
            self.up_lost,
            self.down_sent,
            self.down_lost,
            self.rtt,
        ) = (0, 0, 0, 0, None);
        (up.max(down), rtt)
    }
}

/// The mean opinion score (1 to 4.5) of a call with this loss fraction and round trip: the
/// ITU-T G.107 E-model, simplified as WebRTC stacks usually do (one-way delay = half the
/// round trip plus a fixed 20 ms of buffering; loss impairment of a codec with loss
/// concealment).
pub fn mos(loss: f32, rtt: Duration) -> f32 {
    let d = rtt.as_secs_f32() * 1000.0 / 2.0 + 20.0;
    let delay = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    let loss = if loss.is_nan() { 0.0 } else { loss.clamp(0.0, 1.0) };
    let impairment = 30.0 * (1.0 + 15.0 * loss).ln();
    let r = (93.2 - delay - impairment).clamp(0.0, 100.0);
    1.0 + 0.035 * r + 7.0e-6 * r * (r - 60.0) * (100.0 - r)
}

/// The quality a score means.
pub fn quality_of(mos: f32) -> Q {
    if mos >= EXCELLENT_MOS {
        Q::Excellent
    } else if mos >= GOOD_MOS {
        Q::Good
    } else {
        Q::Poor
    }
}

fn info(sid: &ParticipantSid, quality: Q, score: f32) -> lk::ConnectionQualityInfo {
    lk::ConnectionQualityInfo {
        participant_sid: sid.to_string(),
        quality: quality as i32,
        score,
    }
}

impl Shard {
    /// Every [`QUALITY_INTERVAL`]: score the participants hosted here and tell each room.
    pub(crate) fn update_qualities(&mut self, now: Instant) {
        let rooms: Vec<RoomName> = self.rooms.keys().cloned().collect();
        for room in rooms {
            let Some(r) = self.rooms.get(&room) else {
                continue;
            };
            let members = r.members.clone();
            let mut changed: Vec<(ParticipantSid, Q, f32)> = Vec::new();
            for key in &members {
                let Some((sid, quality, score)) = self.score(now, *key) else {
                    continue;
                };
                let Some(p) = self.participants.get_mut(key) else {
                    continue;
                };
                if p.link.announced != Some(quality) {
                    p.link.announced = Some(quality);
                    changed.push((sid, quality, score));
                }
            }
            self.announce_qualities(&room, &changed);
        }
    }

    /// One participant's quality for the window that ends now.
    fn score(&mut self, now: Instant, key: ParticipantKey) -> Option<(ParticipantSid, Q, f32)> {
        let tracks: Vec<_> = self
            .participants
            .get(&key)
            .map(|p| p.tracks.clone())
            .unwrap_or_default();
        let (mut received, mut lost) = (0, 0);
        for t in &tracks {
            let Some(t) = self.tracks.get_mut(t) else {
                continue;
            };
            let [r, l] = std::mem::take(&mut t.upstream);
            (received, lost) = (received + r, lost + l);
        }
        let p = self.participants.get_mut(&key)?;
        p.link.up_received += received;
        p.link.up_lost += lost;
        let (loss, rtt) = p.link.close_window();
        let silent = now.saturating_duration_since(p.last_rx) >= 2 * QUALITY_INTERVAL;
        if silent || p.session.is_none() {
            return Some((p.sid.clone(), Q::Lost, 0.0));
        }
        let score = mos(loss, rtt);
        Some((p.sid.clone(), quality_of(score), score))
    }

    /// Send a room's changes to its members and pass them on to the room's other places.
    fn announce_qualities(&mut self, room: &RoomName, changed: &[(ParticipantSid, Q, f32)]) {
        if changed.is_empty() {
            return;
        }
        let updates: Vec<_> = changed.iter().map(|(sid, q, s)| info(sid, *q, *s)).collect();
        let msg = lk::signal_response::Message::ConnectionQuality(lk::ConnectionQualityUpdate { updates });
        self.broadcast(room, msg, None);
        for q in [Q::Excellent, Q::Good, Q::Poor, Q::Lost] {
            let sids: Vec<ParticipantSid> = (changed.iter())
                .filter(|(_, quality, _)| *quality == q)
                .map(|(sid, _, _)| sid.clone())
                .collect();
            if !sids.is_empty() {
                self.relay_quality(room, None, q, &sids);
            }
        }
    }

    /// What a joining participant is told after its join response: the known quality of
    /// everyone in the room (`None`: nothing known yet).
    pub(crate) fn quality_table(&self, room: &RoomName) -> Option<lk::signal_response::Message> {
        let r = self.rooms.get(room)?;
        let hosted = (r.members.iter())
            .filter_map(|k| self.participants.get(k))
            .filter_map(|p| p.link.announced.map(|q| (&p.sid, q)));
        let mirrored = (r.remotes.iter())
            .filter_map(|k| self.remotes.get(k))
            .filter_map(|m| m.quality.map(|q| (&m.sid, q)));
        let updates: Vec<_> = hosted
            .chain(mirrored)
            .map(|(sid, q)| info(sid, q, mos_of_quality(q)))
            .collect();
        if updates.is_empty() {
            return None;
        }
        Some(lk::signal_response::Message::ConnectionQuality(
            lk::ConnectionQualityUpdate { updates },
        ))
    }
}

/// A representative score for a quality (the table sent to joiners, and qualities relayed from
/// other places, keep no scores).
pub(crate) fn mos_of_quality(q: Q) -> f32 {
    match q {
        Q::Excellent => 4.5,
        Q::Good => (EXCELLENT_MOS + GOOD_MOS) / 2.0,
        Q::Poor => 2.5,
        Q::Lost => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_fall_with_loss_and_delay() {
        let clean = mos(0.0, Duration::from_millis(20));
        assert!(clean > 4.3, "{clean}");
        assert_eq!(quality_of(mos(0.01, Duration::from_millis(50))), Q::Excellent);
        assert_eq!(quality_of(mos(0.05, Duration::from_millis(50))), Q::Good);
        assert_eq!(quality_of(mos(0.10, Duration::from_millis(50))), Q::Poor);
        assert_eq!(
            quality_of(mos(0.0, Duration::from_millis(900))),
            Q::Poor,
            "a very long path"
        );
        // Hostile numbers: still a score in range.
        for (loss, rtt) in [(f32::NAN, 0), (-1.0, 0), (7.0, 0), (0.0, u32::MAX as u64)] {
            let s = mos(loss, Duration::from_millis(rtt));
            assert!((1.0..=4.5).contains(&s), "{s}");
        }
    }

    #[test]
    fn a_window_with_few_packets_says_nothing_about_loss() {
        let mut l = LinkQuality {
            up_received: 5,
            up_lost: 5,
            ..Default::default()
        };
        assert_eq!(l.close_window().0, 0.0);
        l.down_sent = 1000;
        l.down_lost = 100;
        l.up_received = 1000;
        l.up_lost = 10;
        let (loss, _) = l.close_window();
        assert!((loss - 0.1).abs() < 1e-6, "the worse direction: {loss}");
        assert_eq!(l.close_window().0, 0.0, "the window starts again");
    }
}
