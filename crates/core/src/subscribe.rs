//! Subscribing: who may receive which track, creating and parking a receiver's media
//! sections, keyframe requests, and what a room's other places are asked to relay here.

use std::time::Instant;

use livekit_protocol as lk;
use lk::signal_response::Message as Resp;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};
use tracing::debug;

use crate::command::SubscriptionPermission;
use crate::forwarder::{Forwarder, TOP_LAYER};
use crate::ids::{ParticipantKey, TrackKey, TrackSid};
use crate::msid::Msid;
use crate::participant::allows;
use crate::peer::{PcKind, PeerRef};
use crate::relay::RelayMessage;
use crate::shard::Shard;
use crate::track::{DownTrack, LayerMask, Origin};
use crate::vp8_munger::Vp8Munger;

/// Audio is not resent (no NACK for Opus); a token cache.
const RTX_CACHE_AUDIO: (usize, std::time::Duration) = (16, std::time::Duration::from_millis(200));
/// Queued resends are dropped while they are over 15 % of what a stream sends (str0m's
/// default).
const RTX_RATIO_CAP: Option<f32> = Some(0.15);

/// Give every video stream `p` receives (answered already) a resend cache of `window`. str0m
/// re-creates the cache, so what it held is gone: called only when the window steps.
pub(crate) fn size_resend_caches(p: &mut crate::participant::Participant, window: std::time::Duration) {
    let mids: Vec<Mid> = p
        .downtracks
        .values()
        .filter(|d| d.kind.is_video() && !d.awaiting_answer)
        .filter_map(|d| d.mid)
        .collect();
    let mut api = p.peer_mut(PcKind::Subscriber).rtc.direct_api();
    for mid in mids {
        size_resend_cache(&mut api, mid, MediaKind::Video, window);
    }
}

/// Size the resend cache of the stream sent on `mid`: `window` (the subscriber's, `resend.rs`)
/// for video; audio is never resent (a token cache).
fn size_resend_cache(
    api: &mut str0m::change::DirectApi<'_>,
    mid: Mid,
    kind: MediaKind,
    window: std::time::Duration,
) {
    let Some(tx) = api.stream_tx_by_mid(mid, None) else {
        return;
    };
    let (packets, age) = if kind.is_video() {
        (crate::resend::MAX_PACKETS, window)
    } else {
        RTX_CACHE_AUDIO
    };
    tx.set_rtx_cache(packets, age, RTX_RATIO_CAP);
}

impl Shard {
    /// Who may subscribe to the tracks of `owner` (hosted here or mirrored).
    fn subscribe_allow_of(&self, owner: ParticipantKey) -> Option<&SubscriptionPermission> {
        match self.participants.get(&owner) {
            Some(p) => p.subscribe_allow.as_ref(),
            None => self.remotes.get(&owner).and_then(|m| m.subscribe_allow.as_ref()),
        }
    }

    pub(crate) fn may_subscribe(&self, sub: ParticipantKey, tkey: TrackKey) -> bool {
        let (Some(s), Some(t)) = (self.participants.get(&sub), self.tracks.get(&tkey)) else {
            return false;
        };
        t.owner != sub
            && s.room == t.room
            && s.permission.can_subscribe
            && allows(self.subscribe_allow_of(t.owner), &s.sid, &s.identity, &t.sid)
    }

    /// Subscribe every auto-subscribing, connected participant of the tracks' room to them.
    pub(crate) fn auto_subscribe_to_tracks(&mut self, now: Instant, tracks: &[TrackKey]) {
        let Some(room) = tracks
            .first()
            .and_then(|k| self.tracks.get(k))
            .map(|t| t.room.clone())
        else {
            return;
        };
        let Some(r) = self.rooms.get(&room) else {
            return;
        };
        let subs: Vec<ParticipantKey> = r
            .members
            .iter()
            .copied()
            .filter(|k| {
                self.participants.get(k).is_some_and(|s| {
                    // Dual PC: once the subscriber connection is up (`auto_subscribe_all`
                    // covers what came before). Single PC: from the JoinResponse on.
                    s.auto_subscribe && (s.single_pc() || s.peer(PcKind::Subscriber).connected)
                })
            })
            .collect();
        for sub in subs {
            for &t in tracks {
                if self.may_subscribe(sub, t) {
                    self.subscribe(now, sub, t);
                }
            }
        }
    }

    /// Subscribe `sub` to every track in its room (its subscriber connection just came up).
    pub(crate) fn auto_subscribe_all(&mut self, now: Instant, sub: ParticipantKey) {
        let Some(s) = self.participants.get(&sub) else {
            return;
        };
        if !s.auto_subscribe {
            return;
        }
        let Some(room) = self.rooms.get(&s.room) else {
            return;
        };
        let owners = room.members.iter().chain(&room.remotes);
        let all: Vec<TrackKey> = owners
            .flat_map(|k| {
                let hosted = self.participants.get(k).map(|p| p.tracks.as_slice());
                let mirrored = self.remotes.get(k).map(|m| m.tracks.as_slice());
                hosted.or(mirrored).unwrap_or_default().iter().copied()
            })
            .collect();
        for t in all {
            if self.may_subscribe(sub, t) {
                self.subscribe(now, sub, t);
            }
        }
    }

    pub(crate) fn subscribe(&mut self, _now: Instant, sub: ParticipantKey, tkey: TrackKey) {
        let Some(t) = self.tracks.get_mut(&tkey) else {
            return;
        };
        let Some(s) = self.participants.get_mut(&sub) else {
            return;
        };
        if s.downtracks.contains_key(&tkey) {
            return;
        }
        debug!(subscriber = %s.sid, track = %t.sid, "subscribing");
        let clock_rate = if t.kind.is_audio() { 48_000 } else { 90_000 };
        let msid = Msid::of(&t.owner_sid, &t.sid);
        let reused = if s.single_pc() {
            // A slot is picked when the client offers (`single_pc.rs`).
            s.single.add(tkey);
            None
        } else {
            let reused = match s.negotiation.take_back(&t.sid) {
                // Its own section, whose removal the client was not offered yet: it stays.
                Some(parked) => Some(parked),
                None => {
                    // Any section that still announces it stops (it may be back after a
                    // partition, or subscribed again).
                    s.negotiation.retire_msid(&t.sid);
                    if s.client.recycle_sections {
                        // A dormant section it never had: it announces this track now, with this
                        // track's payload types.
                        s.negotiation.recycle(t.kind, &t.sid, msid).map(|mut p| {
                            p.pt_map.clear();
                            p
                        })
                    } else {
                        None
                    }
                }
            };
            if reused.is_none() {
                // A new section, in the next offer.
                s.negotiation.adds.push(tkey);
            }
            reused
        };
        let (mid, forwarder, vp8, pt_map) = match reused {
            // The section's outgoing stream goes on: forwarding resumes at the track's next
            // keyframe (audio: next packet), sequence numbers and picture ids continuing
            // where they stopped.
            Some(parked) => {
                let mut forwarder = parked.forwarder;
                forwarder.restart(t.kind.is_audio());
                (Some(parked.mid), forwarder, parked.vp8, parked.pt_map)
            }
            None => (None, Forwarder::new(clock_rate), Vp8Munger::default(), Vec::new()),
        };
        s.downtracks.insert(
            tkey,
            DownTrack {
                track: tkey,
                track_sid: t.sid.clone(),
                publisher_sid: t.owner_sid.clone(),
                kind: t.kind,
                mid,
                forwarder,
                vp8,
                pt_map,
                send_ssrc: None,
                disabled: false,
                max_layer: TOP_LAYER,
                fps: 0,
                max_temporal: [crate::temporal::TOP_TEMPORAL; crate::forwarder::MAX_LAYERS],
                awaiting_answer: true,
                grant: Default::default(),
                climb: Default::default(),
                priority: None,
            },
        );
        t.subscribers.push(sub);
        self.negotiate(sub);
    }

    pub(crate) fn unsubscribe(&mut self, sub: ParticipantKey, tkey: TrackKey) {
        let Some(s) = self.participants.get_mut(&sub) else {
            return;
        };
        let Some(dt) = s.downtracks.remove(&tkey) else {
            return;
        };
        debug!(subscriber = %s.sid, track = %dt.track_sid, "unsubscribing");
        if s.single_pc() {
            s.single.release(dt);
        } else {
            s.negotiation.park(dt);
        }
        if let Some(t) = self.tracks.get_mut(&tkey) {
            t.subscribers.retain(|k| *k != sub);
        }
        self.update_wish(tkey);
        self.negotiate(sub);
    }

    /// Apply a subscription request (from the client, or the Room API on its behalf).
    pub(crate) fn on_update_subscription(
        &mut self,
        now: Instant,
        key: ParticipantKey,
        sids: &[TrackSid],
        subscribe: bool,
    ) {
        for sid in sids {
            let Some(&tkey) = self.track_sids.get(sid) else {
                continue;
            };
            if !subscribe {
                self.unsubscribe(key, tkey);
            } else if self.may_subscribe(key, tkey) {
                self.subscribe(now, key, tkey);
            } else if let Some(t) = self.tracks.get(&tkey) {
                let upd = lk::SubscriptionPermissionUpdate {
                    participant_sid: t.owner_sid.as_str().to_string(),
                    track_sid: sid.as_str().to_string(),
                    allowed: false,
                };
                self.send_to(key, Resp::SubscriptionPermissionUpdate(upd));
            }
        }
    }

    /// After `owner`'s subscription permission changed: unsubscribe (and tell) whoever may
    /// no longer receive its tracks here, auto-subscribe whoever now may.
    pub(crate) fn enforce_subscription_permission(&mut self, now: Instant, owner: ParticipantKey) {
        let tracks: Vec<TrackKey> = match (self.participants.get(&owner), self.remotes.get(&owner)) {
            (Some(p), _) => p.tracks.clone(),
            (None, Some(m)) => m.tracks.clone(),
            _ => return,
        };
        for &tkey in &tracks {
            let Some(t) = self.tracks.get(&tkey) else {
                continue;
            };
            let (owner_sid, track_sid) = (t.owner_sid.as_str().to_string(), t.sid.as_str().to_string());
            for sub in t.subscribers.clone() {
                if !self.may_subscribe(sub, tkey) {
                    self.unsubscribe(sub, tkey);
                    let upd = lk::SubscriptionPermissionUpdate {
                        participant_sid: owner_sid.clone(),
                        track_sid: track_sid.clone(),
                        allowed: false,
                    };
                    self.send_to(sub, Resp::SubscriptionPermissionUpdate(upd));
                }
            }
        }
        self.auto_subscribe_to_tracks(now, &tracks);
        self.enforce_data_permission(owner);
    }

    /// Make (or schedule) a subscriber offer carrying every queued change.
    pub(crate) fn negotiate(&mut self, key: ParticipantKey) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let Some(subscriber) = p.subscriber.as_mut() else {
            return self.single_pc_changed(key);
        };
        let Some(sd) = p.negotiation.offer(&mut subscriber.rtc, &mut p.downtracks) else {
            return;
        };
        debug!(participant = %p.sid, id = sd.id, sections = sd.mid_to_track_id.len(), "subscriber offer");
        let session = p.session;
        self.send(session, Resp::Offer(sd));
        let peer = PeerRef {
            key,
            pc: PcKind::Subscriber,
        };
        self.remember_ufrag(peer);
        self.dirty.push(peer);
    }

    /// After an answer: size the new send streams' resend caches, then start each new
    /// receiver (a keyframe from its publisher, and the layers it needs from the origin).
    pub(crate) fn start_new_downtracks(&mut self, now: Instant, key: ParticipantKey) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let fresh: Vec<(TrackKey, Mid, MediaKind)> = p
            .downtracks
            .values_mut()
            .filter(|d| d.awaiting_answer)
            .filter_map(|d| {
                let mid = d.mid?;
                d.awaiting_answer = false;
                Some((d.track, mid, d.kind))
            })
            .collect();
        // Resends are kept for the NACK window only (str0m's default, 3 s and 1,024 packets per
        // stream, was most of the memory per subscribed video track).
        let window = p.resend.current();
        let mut api = p.peer_mut(PcKind::Subscriber).rtc.direct_api();
        for &(_, mid, kind) in &fresh {
            size_resend_cache(&mut api, mid, kind, window);
        }
        for (tkey, _, _) in fresh {
            self.update_wish(tkey);
            self.request_keyframe(now, tkey);
        }
    }

    /// Ask for a keyframe of a track, throttled per track: from the publisher (every layer it
    /// sends) if it is hosted here, else from the place that relays it.
    pub(crate) fn request_keyframe(&mut self, now: Instant, tkey: TrackKey) {
        let Some(t) = self.tracks.get_mut(&tkey) else {
            return;
        };
        if !t.keyframe_request_due(now) {
            return;
        }
        let owner = t.owner;
        match &t.origin {
            Origin::Relayed { place, id, .. } => {
                let msg = RelayMessage::Keyframe { track: *id };
                let place = *place;
                self.relay(place, msg);
            }
            Origin::Local { mid, rids, .. } => {
                let (mid, rids) = (*mid, *rids);
                let Some(p) = self.participants.get_mut(&owner) else {
                    return;
                };
                let mut api = p.publisher.rtc.direct_api();
                let mut any = false;
                for rid in rids.iter().flatten() {
                    if let Some(rx) = api.stream_rx_by_mid(mid, Some(*rid)) {
                        rx.request_keyframe(KeyframeRequestKind::Pli);
                        self.stats.plis_out += 1;
                        any = true;
                    }
                }
                if !any {
                    if let Some(rx) = api.stream_rx_by_mid(mid, None) {
                        rx.request_keyframe(KeyframeRequestKind::Pli);
                        self.stats.plis_out += 1;
                        any = true;
                    }
                }
                debug!(publisher = %p.sid, %mid, sent = any, "keyframe request");
                self.dirty.push(PeerRef {
                    key: owner,
                    pc: PcKind::Publisher,
                });
            }
        }
    }

    /// For a relayed track: tell its origin which layers the receivers here and the places it
    /// is relayed on to need, when that changed (none: stop relaying it here). For a track
    /// published here: its publisher may need telling (`dynacast.rs`).
    pub(crate) fn update_wish(&mut self, tkey: TrackKey) {
        let Some(t) = self.tracks.get(&tkey) else {
            return;
        };
        if t.is_local() {
            if t.kind.is_video() {
                self.dynacast_changed(tkey);
            }
            return;
        }
        let Origin::Relayed {
            place, id, wished, ..
        } = t.origin
        else {
            return;
        };
        let receivers = t
            .subscribers
            .iter()
            .filter_map(|s| self.participants.get(s)?.downtracks.get(&tkey))
            .fold(LayerMask::NONE, |m, d| m.union(d.wanted_layers()));
        // Places it is relayed on to want their layers from the origin too.
        let wanted = t.sinks.iter().fold(receivers, |m, s| m.union(s.layers));
        if wanted == wished {
            return;
        }
        if let Some(Origin::Relayed { wished, .. }) = self.tracks.get_mut(&tkey).map(|t| &mut t.origin) {
            *wished = wanted;
        }
        self.relay(
            place,
            RelayMessage::Wish {
                track: id,
                layers: wanted,
            },
        );
    }
}
