//! Room instances and who is in them: creating and closing instances, linking them to the
//! room's other places, telling everyone about a participant, and removing one.

use std::time::Instant;

use livekit_protocol as lk;
use tracing::{debug, info};

use crate::ids::{ParticipantKey, ParticipantSid, PlaceId, RelayTrackId, RoomName, RoomSid, Tier};
use crate::participant::departed;
use crate::relay::{ParticipantState, RelayMessage};
use crate::room::{Placement, Room, RoomRecord};
use crate::shard::{event, leave_msg, update, Output, Shard, ShardEvent};

/// How long a join into a new instance waits for the room's other places to send their
/// snapshots. In-process they answer in microseconds; the bound covers a place that is gone.
pub const LINK_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

impl Shard {
    /// A fresh record for a room this shard is the only place of.
    pub(crate) fn mint_record(&mut self, now: Instant) -> RoomRecord {
        RoomRecord {
            sid: RoomSid::generate(&mut self.rng),
            creation_unix_ms: self.unix_ms(now),
            metadata: String::new(),
            settings: self.config.room.clone(),
        }
    }

    /// Make sure `name` has an instance here, linked to the places in `placement`.
    pub(crate) fn ensure_room(&mut self, now: Instant, name: &RoomName, placement: &Placement) {
        if !self.rooms.contains_key(name) {
            let record = match &placement.record {
                Some(r) => r.clone(),
                None => self.mint_record(now),
            };
            let room = Room::new(name.clone(), record, placement.home, placement.anchor, now);
            info!(room = %name, sid = %room.sid, home = room.home, "room instance created");
            self.rooms.insert(name.clone(), room);
            if placement.home {
                let info = self.room_info(name);
                self.webhook(now, event::ROOM_STARTED, info, None, None);
            }
        }
        for &place in &placement.peers {
            let room = self.rooms.get_mut(name).expect("ensured above");
            if room.link(place) {
                // Joins here wait (briefly) for the place's snapshot, so their join response
                // lists the participants hosted there too.
                room.awaiting.push(place);
                let until = *room.awaiting_until.get_or_insert(now + LINK_WAIT);
                self.link_deadline = Some(self.link_deadline.map_or(until, |d| d.min(until)));
                self.ask_snapshot(name, place);
            }
        }
    }

    /// Link this instance of `name` to more places (learnt after it was created): each is
    /// sent a snapshot and asked for its own. Unknown rooms and linked places are skipped.
    pub fn link_room(&mut self, now: Instant, name: &RoomName, places: &[PlaceId]) {
        for &place in places {
            let Some(room) = self.rooms.get_mut(name) else {
                return;
            };
            if room.link(place) {
                self.ask_snapshot(name, place);
            }
        }
        self.drain_dirty(now);
    }

    /// The instance here becomes the room's home (the former home's place is gone): it owns
    /// the room's timeouts and sends `room_finished` from now on.
    pub fn become_home(&mut self, now: Instant, name: &RoomName) {
        if let Some(r) = self.rooms.get_mut(name) {
            info!(room = %name, "this instance is the room's home now");
            r.home = true;
            if r.population() == 0 && r.vacated_at.is_none() {
                r.vacated_at = Some(now);
            }
        }
    }

    fn rooms_linked_to(&self, place: PlaceId) -> Vec<RoomName> {
        (self.rooms.values())
            .filter(|r| r.links.contains(&place))
            .map(|r| r.name.clone())
            .collect()
    }

    /// The link to `place` is down (the place may be gone, or only the path to it): the
    /// participants hosted there leave every room here, and their wishes go. The rooms stay
    /// linked to the place, so they exchange snapshots again when it is back ([`Shard::place_up`]).
    ///
    /// A region's participants are kept for `region_grace` instead (shown with connection
    /// quality `LOST`): the region may only be cut off for a while, and its participants
    /// should not leave and rejoin for every short partition.
    pub fn place_down(&mut self, now: Instant, place: PlaceId) {
        let region = place.tier == Tier::Region;
        if region && !self.silent_places.iter().any(|(p, _)| *p == place) {
            self.silent_places.push((place, now + self.config.region_grace));
        }
        for room in self.rooms_linked_to(place) {
            if self.rooms.get_mut(&room).is_some_and(|r| r.answered(place)) {
                self.finish_joins(now, &room);
            }
            if region {
                info!(%room, %place, "region link down: its participants are kept for the grace period");
                self.announce_quality(&room, place, lk::ConnectionQuality::Lost);
            } else {
                info!(%room, %place, "link down: its participants leave the room here");
                self.forget_place(now, place, &room);
            }
        }
        self.drain_dirty(now);
    }

    /// The link to `place` is up (again): every room linked to it sends its snapshot and asks
    /// for the place's (a place that no longer holds the room answers `Bye`).
    pub fn place_up(&mut self, now: Instant, place: PlaceId) {
        let was_silent = self.silent_places.iter().any(|(p, _)| *p == place);
        self.silent_places.retain(|(p, _)| *p != place);
        let rooms = self.rooms_linked_to(place);
        for room in rooms {
            if was_silent {
                self.announce_quality(&room, place, lk::ConnectionQuality::Excellent);
            }
            self.ask_snapshot(&room, place);
        }
        self.drain_dirty(now);
    }

    /// Region places silent for their whole grace period: their participants leave.
    pub(crate) fn expire_silent_places(&mut self, now: Instant) {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.silent_places)
            .into_iter()
            .partition(|(_, until)| *until <= now);
        self.silent_places = kept;
        for (place, _) in gone {
            for room in self.rooms_linked_to(place) {
                info!(%room, %place, "region silent for the grace period: its participants leave");
                self.forget_place(now, place, &room);
            }
        }
        self.drain_dirty(now);
    }

    /// The participants hosted at `place` (a region that went silent, or came back) have
    /// this connection quality: shown here and at the room's other places of other tiers.
    fn announce_quality(&mut self, room: &RoomName, place: PlaceId, quality: lk::ConnectionQuality) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let sids: Vec<ParticipantSid> = (r.remotes.iter())
            .filter_map(|k| self.remotes.get(k))
            .filter(|m| m.place == place)
            .map(|m| m.sid.clone())
            .collect();
        self.show_quality(room, Some(place), quality, &sids);
    }

    /// Show the room's local participants the connection quality of these mirrored
    /// participants, and pass it on (split horizon, like all mirrored state).
    pub(crate) fn show_quality(
        &mut self,
        room: &RoomName,
        from: Option<PlaceId>,
        quality: lk::ConnectionQuality,
        sids: &[ParticipantSid],
    ) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        // Mirrors here whose quality changes (clients are not told the same quality twice).
        let mirrored: Vec<ParticipantSid> = (sids.iter())
            .filter(|sid| {
                r.remotes.iter().any(|k| {
                    self.remotes
                        .get(k)
                        .is_some_and(|m| &m.sid == *sid && m.quality != Some(quality))
                })
            })
            .cloned()
            .collect();
        if mirrored.is_empty() {
            return;
        }
        for key in r.remotes.clone() {
            if let Some(m) = self.remotes.get_mut(&key).filter(|m| mirrored.contains(&m.sid)) {
                m.quality = Some(quality);
            }
        }
        let updates = (mirrored.iter())
            .map(|sid| lk::ConnectionQualityInfo {
                participant_sid: sid.as_str().to_string(),
                quality: quality as i32,
                score: crate::quality::mos_of_quality(quality),
            })
            .collect();
        let msg = lk::signal_response::Message::ConnectionQuality(lk::ConnectionQualityUpdate { updates });
        self.broadcast(room, msg, None);
        self.relay_quality(room, from, quality, &mirrored);
    }

    /// Tell the room's other places (split horizon: not back over `from`'s tier) that these
    /// participants have this quality.
    pub(crate) fn relay_quality(
        &mut self,
        room: &RoomName,
        from: Option<PlaceId>,
        quality: lk::ConnectionQuality,
        sids: &[ParticipantSid],
    ) {
        for place in self.onward_links(room, from) {
            let msg = RelayMessage::Quality {
                room: room.clone(),
                quality,
                sids: sids.to_vec(),
            };
            self.relay(place, msg);
        }
    }

    /// Send `place` this instance's snapshot of `room`, asking for its own in return.
    fn ask_snapshot(&mut self, room: &RoomName, place: PlaceId) {
        let participants = self.snapshot(room, place);
        let hello = RelayMessage::Hello {
            room: room.clone(),
            reply: true,
            participants,
        };
        self.relay(place, hello);
    }

    /// Send the join responses (and first subscriber offers) that waited for the room's
    /// linked places to answer.
    pub(crate) fn finish_joins(&mut self, now: Instant, name: &RoomName) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let joining = std::mem::take(&mut room.joining);
        for key in joining {
            self.send_join_response(now, key);
        }
        self.drain_dirty(now);
    }

    /// Rooms whose linked places did not answer within [`LINK_WAIT`]: their joins go ahead
    /// (participants of those places appear as their snapshots arrive).
    pub(crate) fn expire_link_waits(&mut self, now: Instant) {
        if self.link_deadline.is_none_or(|d| d > now) {
            return;
        }
        let expired: Vec<RoomName> = self
            .rooms
            .values_mut()
            .filter(|r| r.awaiting_until.is_some_and(|t| t <= now))
            .map(|r| {
                debug!(room = %r.name, places = ?r.awaiting, "linked places did not answer in time");
                r.awaiting.clear();
                r.awaiting_until = None;
                r.name.clone()
            })
            .collect();
        for name in expired {
            self.finish_joins(now, &name);
        }
        self.link_deadline = self.rooms.values().filter_map(|r| r.awaiting_until).min();
    }

    /// What a link to `to` is told of `room`: the participants hosted here, and the mirrors
    /// that came over links of another tier than `to`'s (split horizon: an anchor passes its
    /// node's workers' participants to other nodes, and other nodes' to its workers).
    pub(crate) fn snapshot(&self, room: &RoomName, to: PlaceId) -> Vec<ParticipantState> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        let hosted = r.members.iter().filter_map(|k| self.participant_state(*k));
        let mirrored = r
            .remotes
            .iter()
            .filter(|k| self.remotes.get(k).is_some_and(|m| m.place.tier != to.tier))
            .filter_map(|k| self.mirror_state(*k));
        hosted.chain(mirrored).collect()
    }

    /// A mirror as this place relays it on: its host's description, its tracks under the keys
    /// they have here.
    pub(crate) fn mirror_state(&self, key: ParticipantKey) -> Option<ParticipantState> {
        let m = self.remotes.get(&key)?;
        let tracks = m
            .tracks
            .iter()
            .filter_map(|k| self.tracks.get(k))
            .map(|t| (t.sid.clone(), RelayTrackId::from(t.key)))
            .collect();
        Some(ParticipantState {
            info: m.info.clone(),
            tracks,
            subscribe_allow: m.subscribe_allow.clone(),
        })
    }

    /// The room's links a message that arrived from `from` may travel on (every link when it
    /// originated here).
    pub(crate) fn onward_links(&self, room: &RoomName, from: Option<PlaceId>) -> Vec<PlaceId> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        r.links
            .iter()
            .copied()
            .filter(|p| from.is_none_or(|f| *p != f && p.tier != f.tier))
            .collect()
    }

    /// A hosted participant as other places see it; hidden participants are not shown.
    pub(crate) fn participant_state(&self, key: ParticipantKey) -> Option<ParticipantState> {
        let p = self.participants.get(&key)?;
        if p.permission.hidden {
            return None;
        }
        let tracks = p
            .tracks
            .iter()
            .filter_map(|k| self.tracks.get(k))
            .map(|t| (t.sid.clone(), RelayTrackId::from(t.key)))
            .collect();
        Some(ParticipantState {
            info: p.info(&self.tracks),
            tracks,
            subscribe_allow: p.subscribe_allow.clone(),
        })
    }

    /// Tell the linked places of the participant's room about it.
    pub(crate) fn relay_participant(&mut self, key: ParticipantKey) {
        let Some(state) = self.participant_state(key) else {
            return;
        };
        let room = self.participants[&key].room.clone();
        for place in self.onward_links(&room, None) {
            let msg = RelayMessage::Participant {
                room: room.clone(),
                state: Box::new(state.clone()),
            };
            self.relay(place, msg);
        }
    }

    /// Tell the room (the participant included, and the room's other places) about a change
    /// to a hosted participant. A hidden participant is told alone.
    pub(crate) fn announce(&mut self, key: ParticipantKey) {
        let Some(p) = self.participants.get(&key) else {
            return;
        };
        let info = p.info(&self.tracks);
        if p.permission.hidden {
            let session = p.session;
            self.send(session, update(vec![info]));
            return;
        }
        let room = p.room.clone();
        self.broadcast(&room, update(vec![info]), None);
        self.relay_participant(key);
    }

    /// Every participant hosted here leaves, told to reconnect (LiveKit `Leave`, action
    /// `RECONNECT`, reason `SERVER_SHUTDOWN`): the node drains, and the SDKs come back through
    /// the load balancer onto another node. The other places see them leave.
    pub fn evict_all(&mut self, now: Instant) {
        let hosted: Vec<ParticipantKey> = self.participants.keys().copied().collect();
        for key in hosted {
            self.remove_participant(
                now,
                key,
                lk::DisconnectReason::ServerShutdown,
                Some(lk::leave_request::Action::Reconnect),
            );
        }
        self.drain_dirty(now);
    }

    /// Remove a hosted participant: tell them (if `leave`), tell the room and its other
    /// places, free its tracks and subscriptions.
    pub fn remove_participant(
        &mut self,
        now: Instant,
        key: ParticipantKey,
        reason: lk::DisconnectReason,
        leave: Option<lk::leave_request::Action>,
    ) {
        let Some(p) = self.participants.get(&key) else {
            return;
        };
        info!(room = %p.room, participant = %p.sid, identity = %p.identity, ?reason, "participant left");
        self.close_data_tracks(key);
        let Some(p) = self.participants.get(&key) else {
            return;
        };
        let info = p.info(&self.tracks);
        let (room, sid, identity, active, hidden) = (
            p.room.clone(),
            p.sid.clone(),
            p.identity.clone(),
            p.active,
            p.permission.hidden,
        );
        let room_info = self.room_info(&room);
        for tkey in self.participants[&key].tracks.clone() {
            if let Some(track) = self.drop_track(tkey) {
                self.webhook(
                    now,
                    event::TRACK_UNPUBLISHED,
                    room_info.clone(),
                    Some(info.clone()),
                    Some(track.info),
                );
            }
        }
        for tkey in self.participants[&key]
            .downtracks
            .keys()
            .copied()
            .collect::<Vec<_>>()
        {
            self.unsubscribe(key, tkey);
        }
        let mut p = self.participants.remove(&key).expect("looked up above");
        if let Some(s) = p.session.take() {
            if let Some(action) = leave {
                self.send(Some(s), leave_msg(reason, action));
            }
            self.outputs.push_back(Output::Close(s));
            self.sessions.remove(&s);
        }
        self.forget_peers(&p);
        self.detached.remove(&key);
        p.publisher.rtc.disconnect();
        if let Some(s) = p.subscriber.as_mut() {
            s.rtc.disconnect();
        }
        if let Some(r) = self.rooms.get_mut(&room) {
            r.remove(key, now);
        }
        let departed = departed(info, reason);
        if !hidden {
            self.broadcast(&room, update(vec![departed.clone()]), None);
            let links = self.rooms.get(&room).map(|r| r.links.clone()).unwrap_or_default();
            for place in links {
                let msg = RelayMessage::Left {
                    room: room.clone(),
                    sid: sid.clone(),
                    info: Box::new(departed.clone()),
                };
                self.relay(place, msg);
            }
        }
        let name = if active {
            event::PARTICIPANT_LEFT
        } else {
            event::PARTICIPANT_CONNECTION_ABORTED
        };
        let room_info = self.room_info(&room);
        self.webhook(now, name, room_info, Some(departed), None);
        self.emit(ShardEvent::ParticipantLeft {
            room: room.clone(),
            identity,
            sid: sid.clone(),
        });
        self.close_instance_if_unused(&room);
        self.drain_dirty(now);
    }

    /// An instance that is not the room's home ends when it serves nobody: no participant
    /// hosted here, and no bridge between tiers (an anchor relaying its node's workers'
    /// participants to other nodes stays while those workers host someone).
    /// A node's anchor is closed by the runtime instead (see [`Shard::anchor_idle`]).
    pub(crate) fn close_instance_if_unused(&mut self, name: &RoomName) {
        let unused = self
            .rooms
            .get(name)
            .is_some_and(|r| !r.home && !r.anchor && r.members.is_empty() && !self.bridges(r));
        if unused {
            debug!(room = %name, "instance serves nobody; it closes");
            self.end_instance(name);
        }
    }

    /// Whether the instance relays mirrors that came over one tier onto links of another.
    fn bridges(&self, r: &Room) -> bool {
        r.remotes
            .iter()
            .filter_map(|k| self.remotes.get(k))
            .any(|m| r.links.iter().any(|l| l.tier != m.place.tier && *l != m.place))
    }

    /// Whether a node's anchor that is not the room's home serves nobody on its node: no
    /// member here and no mirror of a participant on another worker of the node. It then
    /// reports `RoomIdle`, and the runtime closes it unless someone was placed meanwhile.
    pub(crate) fn anchor_idle(&self, r: &Room) -> bool {
        r.anchor
            && !r.home
            && r.members.is_empty()
            && r.joining.is_empty()
            && !r
                .remotes
                .iter()
                .filter_map(|k| self.remotes.get(k))
                .any(|m| m.place.tier == crate::ids::Tier::Worker)
    }

    /// Close a room (its home instance): tell the notifier. Members must already be gone.
    /// For a node's anchor that is not the home, the runtime grants what it reported idle.
    pub fn close_room(&mut self, now: Instant, name: &RoomName) {
        let Some(r) = self.rooms.get(name) else { return };
        if !r.home {
            if r.anchor && self.anchor_idle(r) {
                self.end_instance(name);
                return;
            }
            return self.close_instance_if_unused(name);
        }
        let info = self.room_info(name);
        self.end_instance(name);
        self.webhook(now, event::ROOM_FINISHED, info, None, None);
    }

    /// Drop the instance: its links are told, its mirrors forgotten.
    fn end_instance(&mut self, name: &RoomName) {
        let Some(room) = self.rooms.remove(name) else {
            return;
        };
        for key in &room.remotes {
            self.drop_mirror(*key);
        }
        // Sinks of other places on the tracks of the room's hosted members go with the link;
        // members are gone (or leaving) by now.
        for place in &room.links {
            self.relay(*place, RelayMessage::Bye { room: name.clone() });
        }
        self.emit(ShardEvent::RoomClosed {
            room: name.clone(),
            sid: room.sid.clone(),
        });
    }

    /// The runtime refused to close an idle room (a participant was placed in it meanwhile):
    /// keep it, and report it again if it is still idle at the next check.
    pub fn keep_room(&mut self, name: &RoomName) {
        if let Some(r) = self.rooms.get_mut(name) {
            r.idle_reported = false;
        }
    }

    /// Home instances' idle deadlines, for tests: the earliest time a room may close.
    pub fn next_room_deadline(&self) -> Option<Instant> {
        self.rooms.values().filter_map(Room::next_deadline).min()
    }
}
