//! Relay input: what the room's instances at other places tell this one. Participants
//! hosted elsewhere become mirrors here (clients see them like any other), their tracks
//! become relayed tracks local participants can subscribe to, and the wishes and keyframe
//! requests of other places reach the tracks published here.

use std::time::Instant;

use livekit_protocol as lk;
use tracing::{debug, info};

use crate::ids::{
    ParticipantIdentity, ParticipantKey, ParticipantSid, PlaceId, RelayTrackId, RoomName, TrackKey,
};
use crate::participant::{departed, RemoteParticipant};
use crate::relay::{ParticipantState, RelayMessage};
use crate::shard::{update, Shard};
use crate::track::{codec_from_mime, Origin, Track};

impl Shard {
    /// A message from the instance of a room at another place.
    pub fn relay_input(&mut self, now: Instant, from: PlaceId, msg: RelayMessage) {
        self.stats.relay_in += 1;
        match msg {
            RelayMessage::Rtp(r) => return self.on_relay_rtp(now, from, r),
            RelayMessage::Hello {
                room,
                reply,
                participants,
            } => self.on_hello(now, from, room, reply, participants),
            RelayMessage::Bye { room } => self.on_bye(now, from, &room),
            RelayMessage::Participant { room, state } => {
                if self.rooms.get(&room).is_some_and(|r| r.links.contains(&from)) {
                    self.upsert_mirror(now, from, &room, *state);
                }
            }
            RelayMessage::Left { room, sid, info } => {
                if let Some(key) = self.mirror_by_sid(&room, from, &sid) {
                    self.remove_mirror(now, key, *info);
                }
            }
            RelayMessage::Data { room, packet } => {
                self.deliver_data(&room, &packet);
                for place in self.onward_links(&room, Some(from)) {
                    let msg = RelayMessage::Data {
                        room: room.clone(),
                        packet: packet.clone(),
                    };
                    self.relay(place, msg);
                }
            }
            RelayMessage::Wish { track, layers } => {
                let tkey = TrackKey(track.0);
                let Some(t) = self
                    .tracks
                    .get_mut(&tkey)
                    .filter(|t| t.is_local() || t.relayable_to(from))
                else {
                    return;
                };
                if t.set_sink(from, layers) {
                    debug!(track = %t.sid, place = %from, "track relayed to a new place");
                    // A new place's receivers start at a keyframe.
                    t.last_keyframe_request = None;
                    self.request_keyframe(now, tkey);
                }
                // A relayed track asks its own origin for what its sinks want too.
                self.update_wish(tkey);
            }
            RelayMessage::Keyframe { track } => self.request_keyframe(now, TrackKey(track.0)),
            RelayMessage::Quality { room, quality, sids } => {
                self.show_quality(&room, Some(from), quality, &sids);
            }
            RelayMessage::DataWish {
                room,
                track,
                subscribe,
            } => self.on_data_wish(from, &room, track, subscribe),
            RelayMessage::DataFrame { track, packet, .. } => return self.on_data_frame(from, &track, packet),
        }
        self.drain_dirty(now);
    }

    fn on_hello(
        &mut self,
        now: Instant,
        from: PlaceId,
        room: RoomName,
        reply: bool,
        participants: Vec<ParticipantState>,
    ) {
        let Some(r) = self.rooms.get_mut(&room) else {
            // Our instance closed meanwhile: say so, so the sender does not wait for us.
            debug!(%room, place = %from, "hello for a room not held here");
            if reply {
                self.relay(from, RelayMessage::Bye { room });
            }
            return;
        };
        let fresh = r.link(from);
        let settled = r.answered(from);
        info!(%room, place = %from, fresh, "room linked");
        // A Hello is a snapshot: mirrors of that place it no longer lists are gone.
        let listed: Vec<ParticipantSid> = participants
            .iter()
            .filter_map(|s| ParticipantSid::parse(&s.info.sid))
            .collect();
        let stale: Vec<ParticipantKey> = r
            .remotes
            .iter()
            .copied()
            .filter(|k| {
                self.remotes
                    .get(k)
                    .is_some_and(|m| m.place == from && !listed.contains(&m.sid))
            })
            .collect();
        for key in stale {
            let info = departed(
                self.remotes[&key].info.clone(),
                lk::DisconnectReason::UnknownReason,
            );
            self.remove_mirror(now, key, info);
        }
        for state in participants {
            self.upsert_mirror(now, from, &room, state);
        }
        self.repeat_data_wishes(from, &room);
        if reply {
            let participants = self.snapshot(&room, from);
            let hello = RelayMessage::Hello {
                room: room.clone(),
                reply: false,
                participants,
            };
            self.relay(from, hello);
        }
        if settled {
            self.finish_joins(now, &room);
        }
    }

    fn on_bye(&mut self, now: Instant, from: PlaceId, room: &RoomName) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        r.links.retain(|p| *p != from);
        if r.answered(from) {
            self.finish_joins(now, room);
        }
        info!(%room, place = %from, "room unlinked");
        self.forget_place(now, from, room);
    }

    /// The participants hosted at `from` leave `room` here, and `from` wants nothing relayed
    /// any more.
    pub(crate) fn forget_place(&mut self, now: Instant, from: PlaceId, room: &RoomName) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let theirs: Vec<ParticipantKey> = r
            .remotes
            .iter()
            .copied()
            .filter(|k| self.remotes.get(k).is_some_and(|m| m.place == from))
            .collect();
        for key in theirs {
            let info = departed(
                self.remotes[&key].info.clone(),
                lk::DisconnectReason::UnknownReason,
            );
            self.remove_mirror(now, key, info);
        }
        // The place wants nothing relayed any more: its sinks go, and relayed tracks ask
        // their origins for less.
        self.forget_data_sinks(from, room);
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let owners: Vec<ParticipantKey> = r.members.iter().chain(&r.remotes).copied().collect();
        let tracks: Vec<TrackKey> = owners
            .iter()
            .flat_map(|k| {
                let hosted = self.participants.get(k).map(|p| p.tracks.as_slice());
                let mirrored = self.remotes.get(k).map(|m| m.tracks.as_slice());
                hosted.or(mirrored).unwrap_or_default().iter().copied()
            })
            .collect();
        for tkey in tracks {
            if let Some(t) = self.tracks.get_mut(&tkey) {
                t.set_sink(from, crate::track::LayerMask::NONE);
            }
            self.update_wish(tkey);
        }
    }

    fn mirror_by_sid(&self, room: &RoomName, place: PlaceId, sid: &ParticipantSid) -> Option<ParticipantKey> {
        let r = self.rooms.get(room)?;
        r.remotes.iter().copied().find(|k| {
            self.remotes
                .get(k)
                .is_some_and(|m| m.place == place && &m.sid == sid)
        })
    }

    /// Create or update the mirror of a participant hosted at `from`.
    fn upsert_mirror(&mut self, now: Instant, from: PlaceId, room: &RoomName, state: ParticipantState) {
        if !self.rooms.contains_key(room) {
            return;
        }
        let Some(sid) = ParticipantSid::parse(&state.info.sid) else {
            debug!(place = %from, "relayed participant without a valid sid; ignored");
            return;
        };
        let key = match self.mirror_by_sid(room, from, &sid) {
            Some(key) => {
                let m = &self.remotes[&key];
                if state.info.version < m.info.version {
                    return;
                }
                key
            }
            None => {
                // The same session, now reached through another place (the far region's
                // home moved, or its link is back under a new place): the old path's mirror
                // goes first, so clients never hold two and the old one's grace period, when
                // it ends, removes nobody.
                let elsewhere = (self.rooms[room].remotes.iter())
                    .find(|k| {
                        self.remotes
                            .get(k)
                            .is_some_and(|m| m.sid == sid && m.place != from)
                    })
                    .copied();
                if let Some(old) = elsewhere {
                    info!(%room, participant = %sid, place = %from, "participant now reached through another place");
                    let info = departed(
                        self.remotes[&old].info.clone(),
                        lk::DisconnectReason::UnknownReason,
                    );
                    self.remove_mirror(now, old, info);
                }
                if !self.replace_older_duplicate(now, room, &state.info)
                    || !self.drop_older_mirrors(now, room, &state.info)
                {
                    debug!(%room, participant = %sid, "a newer session of the identity is here; ignored");
                    return;
                }
                let key = self.next_participant_key();
                let m = RemoteParticipant {
                    key,
                    place: from,
                    room: room.clone(),
                    sid: sid.clone(),
                    identity: ParticipantIdentity::new(state.info.identity.clone()),
                    info: state.info.clone(),
                    subscribe_allow: None,
                    tracks: Vec::new(),
                    quality: None,
                };
                debug!(%room, participant = %sid, place = %from, "mirror added");
                self.remotes.insert(key, m);
                if let Some(r) = self.rooms.get_mut(room) {
                    r.add_remote(key);
                }
                key
            }
        };
        let permission_changed = {
            let m = self.remotes.get_mut(&key).expect("ensured above");
            m.info = state.info.clone();
            let changed = m.subscribe_allow != state.subscribe_allow;
            m.subscribe_allow = state.subscribe_allow;
            changed
        };
        let added = self.reconcile_mirror_tracks(key, from, &state.info, &state.tracks);
        self.prune_relayed_data();
        self.broadcast(room, update(vec![state.info]), None);
        if let Some(onward) = self.mirror_state(key) {
            for place in self.onward_links(room, Some(from)) {
                let msg = RelayMessage::Participant {
                    room: room.clone(),
                    state: Box::new(onward.clone()),
                };
                self.relay(place, msg);
            }
        }
        if permission_changed {
            self.enforce_subscription_permission(now, key);
        } else if !added.is_empty() {
            self.auto_subscribe_to_tracks(now, &added);
        }
    }

    /// A participant hosted elsewhere has the identity of one hosted here: the newer session
    /// wins, as on one node (the older one is told `DUPLICATE_IDENTITY`). The host of the
    /// older session does the removing, so each side decides alone and both agree. Returns
    /// false if the session hosted here is the newer one (the other is not mirrored).
    fn replace_older_duplicate(&mut self, now: Instant, room: &RoomName, info: &lk::ParticipantInfo) -> bool {
        let identity = ParticipantIdentity::new(info.identity.clone());
        let Some(key) = self.find_identity(room, &identity) else {
            return true;
        };
        let Some(p) = self.participants.get(&key) else {
            return true;
        };
        let ours = (p.joined_at_ms, p.sid.as_str());
        if ours > (info.joined_at_ms, info.sid.as_str()) {
            return false;
        }
        info!(%room, %identity, "the identity joined again at another place: the older session here leaves");
        self.remove_participant(
            now,
            key,
            lk::DisconnectReason::DuplicateIdentity,
            Some(lk::leave_request::Action::Disconnect),
        );
        true
    }

    /// Mirrors of `info`'s identity (another session, hosted elsewhere) that joined before it
    /// leave the room here, before it is announced: clients key participants by identity, so
    /// the older one's departure must come first. A session whose host died keeps its mirror
    /// until the link to that host times out; a rejoin elsewhere must not wait for that.
    /// Returns false if a newer session of the identity is mirrored here already.
    pub(crate) fn drop_older_mirrors(
        &mut self,
        now: Instant,
        room: &RoomName,
        info: &lk::ParticipantInfo,
    ) -> bool {
        let Some(r) = self.rooms.get(room) else {
            return true;
        };
        let theirs = (info.joined_at_ms, info.sid.as_str());
        let mut older = Vec::new();
        for k in &r.remotes {
            let Some(m) = self.remotes.get(k) else { continue };
            if m.identity.as_str() != info.identity || m.sid.as_str() == info.sid {
                continue;
            }
            if (m.info.joined_at_ms, m.sid.as_str()) > theirs {
                return false;
            }
            older.push(*k);
        }
        for key in older {
            let info = departed(
                self.remotes[&key].info.clone(),
                lk::DisconnectReason::DuplicateIdentity,
            );
            info!(%room, identity = %info.identity, "the identity joined again elsewhere: its older session's mirror leaves");
            self.remove_mirror(now, key, info);
        }
        true
    }

    /// Make the mirror's relayed tracks match what its host says it publishes; returns the
    /// tracks that are new.
    fn reconcile_mirror_tracks(
        &mut self,
        key: ParticipantKey,
        from: PlaceId,
        info: &lk::ParticipantInfo,
        ids: &[(crate::ids::TrackSid, RelayTrackId)],
    ) -> Vec<TrackKey> {
        let current = self.remotes[&key].tracks.clone();
        let mut keep = Vec::new();
        let mut added = Vec::new();
        for (sid, id) in ids {
            let Some(ti) = info.tracks.iter().find(|t| t.sid == sid.as_str()) else {
                continue;
            };
            if let Some(&tkey) = self.relayed.get(&(from, *id)) {
                if let Some(t) = self.tracks.get_mut(&tkey) {
                    t.info = ti.clone();
                }
                keep.push(tkey);
                continue;
            }
            let tkey = self.next_track_key();
            let m = &self.remotes[&key];
            let kind = if ti.r#type == lk::TrackType::Audio as i32 {
                str0m::media::MediaKind::Audio
            } else {
                str0m::media::MediaKind::Video
            };
            let track = Track {
                key: tkey,
                sid: sid.clone(),
                owner: key,
                owner_sid: m.sid.clone(),
                room: m.room.clone(),
                kind,
                codec: codec_from_mime(&ti.mime_type),
                loss: Default::default(),
                info: ti.clone(),
                origin: Origin::Relayed {
                    place: from,
                    id: *id,
                    best: None,
                    wished: crate::track::LayerMask::NONE,
                },
                subscribers: Vec::new(),
                sinks: Vec::new(),
                last_keyframe_request: None,
                dynacast: Default::default(),
                speech: Default::default(),
                upstream: [0; 2],
                rates: Default::default(),
                svc: false,
                spatial: Default::default(),
                picture_ends: Default::default(),
            };
            self.tracks.insert(tkey, track);
            self.track_sids.insert(sid.clone(), tkey);
            self.relayed.insert((from, *id), tkey);
            keep.push(tkey);
            added.push(tkey);
        }
        for tkey in current.iter().filter(|k| !keep.contains(k)) {
            self.drop_track(*tkey);
        }
        if let Some(m) = self.remotes.get_mut(&key) {
            m.tracks = keep;
        }
        added
    }

    /// A mirrored participant is gone: its tracks go, the room and the places it was relayed
    /// on to are told `info`.
    fn remove_mirror(&mut self, now: Instant, key: ParticipantKey, info: lk::ParticipantInfo) {
        let Some(m) = self.remotes.get(&key) else {
            return;
        };
        let (from, sid) = (m.place, m.sid.clone());
        let Some(room) = self.drop_mirror(key) else {
            return;
        };
        if let Some(r) = self.rooms.get_mut(&room) {
            r.remove(key, now);
        }
        for place in self.onward_links(&room, Some(from)) {
            let msg = RelayMessage::Left {
                room: room.clone(),
                sid: sid.clone(),
                info: Box::new(info.clone()),
            };
            self.relay(place, msg);
        }
        self.broadcast(&room, update(vec![info]), None);
        self.close_instance_if_unused(&room);
    }

    /// Forget a mirror and its tracks; returns its room.
    pub(crate) fn drop_mirror(&mut self, key: ParticipantKey) -> Option<RoomName> {
        let m = self.remotes.remove(&key)?;
        for tkey in m.tracks {
            self.drop_track(tkey);
        }
        self.prune_relayed_data();
        Some(m.room)
    }
}

impl Track {
    /// Whether this relayed track may be relayed on to `place`: never over a link of the tier
    /// it came in on (the places of one tier are fully meshed, each has it from the origin).
    pub(crate) fn relayable_to(&self, place: PlaceId) -> bool {
        matches!(self.origin, Origin::Relayed { place: origin, .. } if origin.tier != place.tier)
    }
}
