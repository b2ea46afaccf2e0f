//! Dynacast: a publisher hosted here is told (`SubscribedQualityUpdate`) which simulcast
//! layers anyone wants, so its SDK stops encoding and sending the others.
//!
//! What a track's subscribers want is the highest layer any of them asks for (each
//! `DownTrack::max_layer`, from `UpdateTrackSettings`), and the highest layer in any relay
//! sink's wish (a far place's aggregate, which includes its receivers' requests); every layer
//! up to that one stays on, as LiveKit does, so a lower layer is there to fall back to. With
//! no subscriber at all every layer goes off. More is asked at once; less only after
//! [`DOWNGRADE_HOLD`], so a subscriber that leaves and comes back, or a tile resized back and
//! forth, does not make the publisher's encoder flap.

use std::time::{Duration, Instant};

use livekit_protocol as lk;
use tracing::debug;

use crate::forwarder::{Layer, TOP_LAYER};
use crate::ids::TrackKey;
use crate::shard::Shard;
use crate::track::Origin;

/// How long a lower wish must hold before the publisher is told to stop layers.
pub const DOWNGRADE_HOLD: Duration = Duration::from_secs(3);

/// What was announced to the publisher of one track, and a pending downgrade.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dynacast {
    /// The highest layer announced as wanted (`Some(None)`: none). `None`: nothing announced
    /// yet; the publisher starts with every layer on.
    announced: Option<Option<Layer>>,
    lower_since: Option<Instant>,
}

impl Dynacast {
    /// The highest layer the publisher is currently asked to send.
    fn current(&self) -> Option<Layer> {
        self.announced.unwrap_or(Some(TOP_LAYER))
    }

    /// Given the highest layer wanted now (`None`: nobody wants the track), what to announce
    /// now, if anything.
    pub fn update(&mut self, now: Instant, wanted: Option<Layer>) -> Option<Option<Layer>> {
        let current = self.current();
        if wanted >= current {
            self.lower_since = None;
            if wanted == current {
                return None;
            }
        } else {
            let since = *self.lower_since.get_or_insert(now);
            if now < since + DOWNGRADE_HOLD {
                return None;
            }
            self.lower_since = None;
        }
        self.announced = Some(wanted);
        Some(wanted)
    }

    /// A downgrade waits for its hold to pass.
    pub fn pending(&self) -> bool {
        self.lower_since.is_some()
    }
}

impl Shard {
    /// Re-evaluate, after this turn's changes, the tracks whose wishes may have changed.
    pub(crate) fn flush_dynacast(&mut self, now: Instant) {
        while let Some(tkey) = self.dynacast_dirty.pop() {
            self.evaluate_dynacast(now, tkey);
        }
    }

    /// Housekeeping: downgrades whose hold may have passed.
    pub(crate) fn recheck_dynacast(&mut self, now: Instant) {
        let pending = std::mem::take(&mut self.dynacast_pending);
        for tkey in pending {
            self.evaluate_dynacast(now, tkey);
        }
    }

    /// Mark a track published here for re-evaluation (its receivers or sinks changed).
    pub(crate) fn dynacast_changed(&mut self, tkey: TrackKey) {
        if !self.dynacast_dirty.contains(&tkey) {
            self.dynacast_dirty.push(tkey);
        }
    }

    fn evaluate_dynacast(&mut self, now: Instant, tkey: TrackKey) {
        let Some(t) = self.tracks.get(&tkey) else {
            return;
        };
        if !t.kind.is_video() || !matches!(t.origin, Origin::Local { .. }) {
            return;
        }
        let local = t
            .subscribers
            .iter()
            .filter_map(|s| self.participants.get(s)?.downtracks.get(&tkey))
            .filter(|d| !d.disabled)
            .map(|d| d.max_layer)
            .max();
        let remote = t.sinks.iter().filter_map(|s| s.layers.top()).max();
        let wanted = local.max(remote);
        let (owner, sid) = (t.owner, t.sid.clone());
        let codec = t
            .info
            .mime_type
            .split_once('/')
            .map(|(_, c)| c.to_ascii_lowercase());
        let Some(t) = self.tracks.get_mut(&tkey) else {
            return;
        };
        let announce = t.dynacast.update(now, wanted);
        if t.dynacast.pending() && !self.dynacast_pending.contains(&tkey) {
            self.dynacast_pending.push(tkey);
        }
        let Some(top) = announce else {
            return;
        };
        debug!(track = %sid, ?top, "dynacast: layers wanted");
        let qualities: Vec<lk::SubscribedQuality> = [
            lk::VideoQuality::Low,
            lk::VideoQuality::Medium,
            lk::VideoQuality::High,
        ]
        .into_iter()
        .map(|q| lk::SubscribedQuality {
            quality: q as i32,
            enabled: top.is_some_and(|top| q as Layer <= top),
        })
        .collect();
        let update = lk::SubscribedQualityUpdate {
            track_sid: sid.to_string(),
            subscribed_codecs: codec
                .map(|codec| lk::SubscribedCodec {
                    codec,
                    qualities: qualities.clone(),
                })
                .into_iter()
                .collect(),
            subscribed_qualities: qualities,
        };
        let session = self.participants.get(&owner).and_then(|p| p.session);
        self.send(
            session,
            lk::signal_response::Message::SubscribedQualityUpdate(update),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_is_asked_at_once_less_only_after_the_hold() {
        let t = Instant::now();
        let mut d = Dynacast::default();
        // Everyone wants the top layer: the publisher already sends it, nothing to say.
        assert_eq!(d.update(t, Some(2)), None);
        // Only the low layer is wanted: announced once the hold has passed, not before.
        assert_eq!(d.update(t, Some(0)), None);
        assert!(d.pending());
        assert_eq!(d.update(t + Duration::from_secs(1), Some(0)), None);
        assert_eq!(d.update(t + DOWNGRADE_HOLD, Some(0)), Some(Some(0)));
        assert!(!d.pending());
        // Someone asks for the middle layer: at once.
        assert_eq!(d.update(t + DOWNGRADE_HOLD, Some(1)), Some(Some(1)));
        // Nobody for a moment, then back: the downgrade never happens.
        let later = t + Duration::from_secs(10);
        assert_eq!(d.update(later, None), None);
        assert_eq!(d.update(later + Duration::from_secs(1), Some(1)), None);
        assert!(!d.pending());
        assert_eq!(
            d.update(later + Duration::from_secs(5), Some(1)),
            None,
            "the hold restarted"
        );
        // Nobody, for long enough: every layer off.
        assert_eq!(d.update(later + Duration::from_secs(6), None), None);
        assert_eq!(d.update(later + Duration::from_secs(9), None), Some(None));
    }
}
