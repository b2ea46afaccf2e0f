//! Data tracks (LiveKit 1.10+): a participant publishes a named stream of frames, others
//! subscribe; see `docs/data-tracks.md` for the wire behaviour this follows.
//!
//! - **Signalling**: `PublishDataTrackRequest` (the client picks a 16-bit handle) is answered
//!   with the track's info (a fresh `DTR_` sid) or a `RequestResponse` carrying a copy of the
//!   request (clients match refusals by its handle). Others learn of data tracks only from the
//!   publisher's `ParticipantInfo.data_tracks`, always the complete list.
//! - **Subscriptions**: `UpdateDataSubscription` by sid; the server gives each subscription its
//!   own handle and sends the subscriber the whole `DataTrackSubscriberHandles` map after every
//!   change. A subscription the server cannot grant (permissions, unknown track) is not
//!   answered; the client times out, as with LiveKit.
//! - **Frames** travel as packets on the `_data_track` channel (unordered, no retransmits). The
//!   server reads a packet's 12-byte header, finds the publisher's track by the handle in it,
//!   and writes the packet to every subscriber with only the handle replaced by theirs (one
//!   reused buffer; nothing else of the packet is touched, so a frame's sequence stays whole).
//!
//! - **Across places** (workers, nodes, regions), like media: a subscription to a data track of
//!   a mirrored participant makes this place ask the place it mirrors the publisher from for
//!   the track's frames (`RelayMessage::DataWish`), once, whatever the number of subscribers
//!   here; a place on the way (a node's anchor, a region's gateway) asks its own source in
//!   turn while anyone beyond it wants them. Each packet then crosses each link once
//!   (`RelayMessage::DataFrame`, the publisher's handle kept) and every place rewrites the
//!   handle for its own subscribers. When the last subscriber here and beyond goes, the wish is
//!   withdrawn; when the mirror stops listing the track, its subscribers here are told the
//!   handle is gone.
//!
//! Bounded: [`limits::MAX_DATA_TRACKS`] published and [`limits::MAX_DATA_SUBSCRIPTIONS`]
//! received per participant; relayed tracks exist only while subscribed here or beyond, and
//! only for tracks a mirror lists; a packet is at most what the SCTP channel delivers.

use std::sync::Arc;
use std::time::Instant;

use livekit_protocol as lk;
use lk::request_response::Reason;
use lk::signal_response::Message as Resp;
use str0m::channel::ChannelData;
use tracing::debug;

use crate::command::PublishDataTrack;
use crate::ids::{DataTrackSid, ParticipantKey, PlaceId, RoomName};
use crate::limits;
use crate::peer::PeerRef;
use crate::relay::RelayMessage;
use crate::shard::Shard;

/// The data-track packet header every packet starts with.
pub const HEADER_LEN: usize = 12;

/// One data track a hosted participant publishes.
#[derive(Debug, Clone)]
pub struct DataTrack {
    pub handle: u16,
    pub sid: DataTrackSid,
    pub info: lk::DataTrackInfo,
    /// Local subscribers and the handle each knows this track by.
    pub subscribers: Vec<(ParticipantKey, u16)>,
    /// Places that asked for its frames.
    pub sinks: Vec<PlaceId>,
}

/// A data track of a participant hosted at another place, while this place relays its frames
/// (to subscribers here, or to places that asked this one).
#[derive(Debug, Clone)]
pub struct RelayedDataTrack {
    pub room: RoomName,
    /// The publisher's mirror here.
    pub owner: ParticipantKey,
    /// Where the frames come from: the place the mirror is from.
    pub place: PlaceId,
    /// Local subscribers and their handles.
    pub subscribers: Vec<(ParticipantKey, u16)>,
    /// Places that asked this one for the frames.
    pub sinks: Vec<PlaceId>,
    /// Whether this place asked `place` for them.
    pub wished: bool,
}

impl RelayedDataTrack {
    fn wanted(&self) -> bool {
        !self.subscribers.is_empty() || !self.sinks.is_empty()
    }
}

/// One data track a hosted participant receives.
#[derive(Debug, Clone)]
pub struct DataSub {
    /// The handle the subscriber knows it by.
    pub handle: u16,
    pub publisher: ParticipantKey,
    pub sid: DataTrackSid,
}

/// The publisher handle of a packet, if it is a data-track packet this server understands
/// (version 0, long enough, within [`crate::limits::MAX_DATA_TRACK_PACKET`]).
pub fn packet_handle(packet: &[u8]) -> Option<u16> {
    let size = HEADER_LEN..=crate::limits::MAX_DATA_TRACK_PACKET;
    if !size.contains(&packet.len()) || packet[0] >> 5 != 0 {
        return None;
    }
    let handle = u16::from_be_bytes([packet[2], packet[3]]);
    (handle != 0).then_some(handle)
}

impl Shard {
    pub(crate) fn on_publish_data_track(&mut self, key: ParticipantKey, req: PublishDataTrack) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let refusal = if !p.permission.can_publish_data {
            Some((Reason::NotAllowed, "not allowed to publish data"))
        } else if req.handle == 0 || req.handle > u32::from(u16::MAX) {
            Some((Reason::InvalidHandle, "handle must be 1..=65535"))
        } else if req.name.is_empty() || req.name.len() > limits::MAX_DATA_TRACK_NAME_LEN {
            Some((Reason::InvalidName, "name must be 1..=256 bytes"))
        } else if !matches!(
            lk::encryption::Type::try_from(req.encryption),
            Ok(lk::encryption::Type::None | lk::encryption::Type::Gcm)
        ) {
            Some((Reason::InvalidRequest, "unsupported encryption"))
        } else if p.data_tracks.iter().any(|t| u32::from(t.handle) == req.handle) {
            Some((Reason::DuplicateHandle, "handle already published"))
        } else if p.data_tracks.iter().any(|t| t.info.name == req.name) {
            Some((Reason::DuplicateName, "name already published"))
        } else if p.data_tracks.len() >= limits::MAX_DATA_TRACKS {
            Some((Reason::LimitExceeded, "too many data tracks"))
        } else {
            None
        };
        let session = p.session;
        let echo = lk::PublishDataTrackRequest {
            pub_handle: req.handle,
            name: req.name.clone(),
            encryption: req.encryption,
            frame_encoding: req.frame_encoding.clone(),
            schema: req.schema.clone(),
        };
        if let Some((reason, message)) = refusal {
            debug!(participant = %p.sid, handle = req.handle, ?reason, "data track refused");
            let rr = lk::RequestResponse {
                reason: reason as i32,
                message: message.into(),
                request: Some(lk::request_response::Request::PublishDataTrack(echo)),
                ..Default::default()
            };
            self.send(session, Resp::RequestResponse(rr));
            return;
        }
        let sid = DataTrackSid::generate(&mut self.rng);
        let info = lk::DataTrackInfo {
            pub_handle: req.handle,
            sid: sid.to_string(),
            name: req.name,
            encryption: req.encryption,
            frame_encoding: req.frame_encoding,
            schema: req.schema,
        };
        debug!(participant = %p.sid, track = %sid, name = %info.name, "data track published");
        p.data_tracks.push(DataTrack {
            handle: req.handle as u16,
            sid,
            info: info.clone(),
            subscribers: Vec::new(),
            sinks: Vec::new(),
        });
        p.bump_version();
        self.send(
            session,
            Resp::PublishDataTrackResponse(lk::PublishDataTrackResponse { info: Some(info) }),
        );
        self.announce(key);
    }

    pub(crate) fn on_unpublish_data_track(&mut self, key: ParticipantKey, handle: u32) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let session = p.session;
        let Some(i) = p.data_tracks.iter().position(|t| u32::from(t.handle) == handle) else {
            let rr = lk::RequestResponse {
                reason: Reason::NotFound as i32,
                message: "no data track with this handle".into(),
                request: Some(lk::request_response::Request::UnpublishDataTrack(
                    lk::UnpublishDataTrackRequest { pub_handle: handle },
                )),
                ..Default::default()
            };
            self.send(session, Resp::RequestResponse(rr));
            return;
        };
        let track = p.data_tracks.remove(i);
        p.bump_version();
        self.drop_data_subscribers(&track);
        let info = Some(track.info);
        self.send(
            session,
            Resp::UnpublishDataTrackResponse(lk::UnpublishDataTrackResponse { info }),
        );
        self.announce(key);
    }

    /// A publisher leaves: its data tracks' subscribers are told their handles are gone, and
    /// its own subscriptions end.
    pub(crate) fn close_data_tracks(&mut self, key: ParticipantKey) {
        self.drop_published_data_tracks(key);
        self.drop_data_subscriptions(key);
    }

    /// The participant's data tracks end (it leaves, or lost `can_publish_data`: as LiveKit,
    /// the publisher gets no unpublish response; others see the tracks gone from its info).
    pub(crate) fn drop_published_data_tracks(&mut self, key: ParticipantKey) {
        let tracks = self
            .participants
            .get_mut(&key)
            .map(|p| std::mem::take(&mut p.data_tracks))
            .unwrap_or_default();
        for t in &tracks {
            self.drop_data_subscribers(t);
        }
    }

    /// The participant's own data subscriptions end (it leaves, or lost `can_subscribe`).
    pub(crate) fn drop_data_subscriptions(&mut self, key: ParticipantKey) {
        let subs = self
            .participants
            .get_mut(&key)
            .map(|p| std::mem::take(&mut p.data_subs))
            .unwrap_or_default();
        for s in &subs {
            self.forget_data_subscriber(key, s);
        }
    }

    /// `key` no longer receives `sub`'s track (its `DataSub` is already gone).
    fn forget_data_subscriber(&mut self, key: ParticipantKey, sub: &DataSub) {
        if let Some(t) = self.data_track_mut(sub.publisher, &sub.sid) {
            t.subscribers.retain(|(k, _)| *k != key);
        } else if let Some(r) = self.relayed_data.get_mut(&sub.sid) {
            r.subscribers.retain(|(k, _)| *k != key);
            self.refresh_data_wish(&sub.sid);
        }
    }

    fn drop_data_subscribers(&mut self, track: &DataTrack) {
        for &(sub, _) in &track.subscribers {
            if let Some(s) = self.participants.get_mut(&sub) {
                s.data_subs.retain(|d| d.sid != track.sid);
            }
            self.send_data_handles(sub);
        }
    }

    fn data_track_mut(&mut self, publisher: ParticipantKey, sid: &DataTrackSid) -> Option<&mut DataTrack> {
        let p = self.participants.get_mut(&publisher)?;
        p.data_tracks.iter_mut().find(|t| &t.sid == sid)
    }

    pub(crate) fn on_data_subscription(&mut self, key: ParticipantKey, updates: Vec<(String, bool)>) {
        let mut changed = false;
        for (sid, subscribe) in updates {
            let Some(sid) = DataTrackSid::parse(&sid) else {
                continue;
            };
            changed |= if subscribe {
                self.subscribe_data(key, sid)
            } else {
                self.unsubscribe_data(key, &sid)
            };
        }
        if changed {
            self.send_data_handles(key);
        }
    }

    fn subscribe_data(&mut self, key: ParticipantKey, sid: DataTrackSid) -> bool {
        let Some(s) = self.participants.get(&key) else {
            return false;
        };
        if !s.permission.can_subscribe
            || s.data_subs.iter().any(|d| d.sid == sid)
            || s.data_subs.len() >= limits::MAX_DATA_SUBSCRIPTIONS
        {
            return false;
        }
        let (room, sub_sid, sub_identity) = (s.room.clone(), s.sid.clone(), s.identity.clone());
        // The publisher: a participant of the same room hosted here, or mirrored from another
        // place.
        let Some(publisher) = self.data_publisher(&room, &sid, None) else {
            debug!(track = %sid, "data subscription to a track nobody in the room publishes; not answered");
            return false;
        };
        let allow = match self.participants.get(&publisher) {
            Some(p) => p.subscribe_allow.as_ref(),
            None => self
                .remotes
                .get(&publisher)
                .and_then(|m| m.subscribe_allow.as_ref()),
        };
        if publisher == key || !allow.is_none_or(|a| a.allows_data(&sub_sid, &sub_identity, &sid)) {
            return false;
        }
        let Some(s) = self.participants.get_mut(&key) else {
            return false;
        };
        let Some(handle) = s.last_data_handle.checked_add(1) else {
            return false;
        };
        s.last_data_handle = handle;
        s.data_subs.push(DataSub {
            handle,
            publisher,
            sid: sid.clone(),
        });
        if let Some(t) = self.data_track_mut(publisher, &sid) {
            t.subscribers.push((key, handle));
        } else if let Some(m) = self.remotes.get(&publisher) {
            let (place, room) = (m.place, m.room.clone());
            self.relayed_data
                .entry(sid.clone())
                .or_insert_with(|| RelayedDataTrack {
                    room,
                    owner: publisher,
                    place,
                    subscribers: Vec::new(),
                    sinks: Vec::new(),
                    wished: false,
                })
                .subscribers
                .push((key, handle));
            self.refresh_data_wish(&sid);
        }
        true
    }

    /// The publisher (hosted here or mirrored) changed who may subscribe: subscriptions here
    /// to its data tracks that are no longer allowed end, and their subscribers are told
    /// (`SubscriptionPermissionUpdate`, as for media tracks, and a new handle map).
    pub(crate) fn enforce_data_permission(&mut self, owner: ParticipantKey) {
        let (owner_sid, allow, sids) = match (self.participants.get(&owner), self.remotes.get(&owner)) {
            (Some(p), _) => (
                p.sid.clone(),
                p.subscribe_allow.clone(),
                p.data_tracks.iter().map(|t| t.sid.clone()).collect::<Vec<_>>(),
            ),
            (None, Some(m)) => (
                m.sid.clone(),
                m.subscribe_allow.clone(),
                (m.info.data_tracks.iter())
                    .filter_map(|t| DataTrackSid::parse(&t.sid))
                    .collect(),
            ),
            _ => return,
        };
        let Some(allow) = allow else {
            return;
        };
        for sid in sids {
            let subscribers: Vec<ParticipantKey> = match self.data_track_mut(owner, &sid) {
                Some(t) => t.subscribers.iter().map(|(k, _)| *k).collect(),
                None => (self.relayed_data.get(&sid).filter(|r| r.owner == owner))
                    .map(|r| r.subscribers.iter().map(|(k, _)| *k).collect())
                    .unwrap_or_default(),
            };
            for sub in subscribers {
                let Some(s) = self.participants.get_mut(&sub) else {
                    continue;
                };
                if allow.allows_data(&s.sid, &s.identity, &sid) {
                    continue;
                }
                let Some(i) = s.data_subs.iter().position(|d| d.sid == sid) else {
                    continue;
                };
                let ended = s.data_subs.remove(i);
                self.forget_data_subscriber(sub, &ended);
                self.send_data_handles(sub);
                let upd = lk::SubscriptionPermissionUpdate {
                    participant_sid: owner_sid.to_string(),
                    track_sid: sid.to_string(),
                    allowed: false,
                };
                self.send_to(sub, Resp::SubscriptionPermissionUpdate(upd));
            }
        }
    }

    /// Who in `room` publishes data track `sid`: a participant hosted here, else a mirror (not
    /// one from `not_from`).
    fn data_publisher(
        &self,
        room: &RoomName,
        sid: &DataTrackSid,
        not_from: Option<PlaceId>,
    ) -> Option<ParticipantKey> {
        let r = self.rooms.get(room)?;
        let hosted = r.members.iter().copied().find(|k| {
            self.participants
                .get(k)
                .is_some_and(|p| p.data_tracks.iter().any(|t| &t.sid == sid))
        });
        hosted.or_else(|| {
            r.remotes.iter().copied().find(|k| {
                self.remotes.get(k).is_some_and(|m| {
                    Some(m.place) != not_from && m.info.data_tracks.iter().any(|t| t.sid == sid.as_str())
                })
            })
        })
    }

    /// Ask the relayed track's source for its frames, or withdraw the ask, as interest here
    /// and beyond changed; a track nobody wants any more is forgotten.
    fn refresh_data_wish(&mut self, sid: &DataTrackSid) {
        let Some(r) = self.relayed_data.get_mut(sid) else {
            return;
        };
        let want = r.wanted();
        if want != r.wished {
            r.wished = want;
            let (place, room) = (r.place, r.room.clone());
            let msg = RelayMessage::DataWish {
                room,
                track: sid.clone(),
                subscribe: want,
            };
            self.relay(place, msg);
        }
        if !want {
            self.relayed_data.remove(sid);
        }
    }

    /// Another place does (not) want the frames of data track `sid`, hosted or mirrored here.
    pub(crate) fn on_data_wish(
        &mut self,
        from: PlaceId,
        room: &RoomName,
        sid: DataTrackSid,
        subscribe: bool,
    ) {
        let linked = self.rooms.get(room).is_some_and(|r| r.links.contains(&from));
        let Some(publisher) = self.data_publisher(room, &sid, Some(from)) else {
            return;
        };
        let set = |sinks: &mut Vec<PlaceId>| {
            sinks.retain(|p| *p != from);
            if subscribe && linked {
                sinks.push(from);
            }
        };
        if let Some(t) = self.data_track_mut(publisher, &sid) {
            set(&mut t.sinks);
            return;
        }
        let Some(m) = self.remotes.get(&publisher) else {
            return;
        };
        // Split horizon: the places of one tier are fully meshed; `from` has its own link to
        // a source of the same tier.
        if m.place.tier == from.tier {
            return;
        }
        if !subscribe && !self.relayed_data.contains_key(&sid) {
            return;
        }
        let (place, owner) = (m.place, publisher);
        let r = self
            .relayed_data
            .entry(sid.clone())
            .or_insert_with(|| RelayedDataTrack {
                room: room.clone(),
                owner,
                place,
                subscribers: Vec::new(),
                sinks: Vec::new(),
                wished: false,
            });
        set(&mut r.sinks);
        self.refresh_data_wish(&sid);
    }

    /// A packet of a data track this place asked `from` for: to its subscribers here and the
    /// places beyond that asked for it.
    pub(crate) fn on_data_frame(&mut self, from: PlaceId, sid: &DataTrackSid, packet: Arc<[u8]>) {
        let Some(r) = self.relayed_data.get(sid).filter(|r| r.place == from) else {
            return;
        };
        if packet_handle(&packet).is_none() {
            return;
        }
        let mut subs = std::mem::take(&mut self.data_fanout);
        subs.clear();
        subs.extend_from_slice(&r.subscribers);
        let (room, sinks) = (r.room.clone(), r.sinks.clone());
        self.fan_out_data_track(&subs, &packet);
        self.data_fanout = subs;
        self.relay_data_frame(&room, sid, &sinks, &packet);
    }

    /// One data-track packet to each place that asked for the track: the same shared bytes.
    fn relay_data_frame(
        &mut self,
        room: &RoomName,
        sid: &DataTrackSid,
        sinks: &[PlaceId],
        packet: &Arc<[u8]>,
    ) {
        for &place in sinks {
            let msg = RelayMessage::DataFrame {
                room: room.clone(),
                track: sid.clone(),
                packet: packet.clone(),
            };
            self.relay(place, msg);
        }
    }

    /// Mirrors changed: relayed data tracks whose publisher's mirror is gone or no longer lists
    /// them are forgotten, and their subscribers here told their handles are gone.
    pub(crate) fn prune_relayed_data(&mut self) {
        let gone: Vec<DataTrackSid> = self
            .relayed_data
            .iter()
            .filter(|(sid, r)| {
                !self
                    .remotes
                    .get(&r.owner)
                    .is_some_and(|m| m.info.data_tracks.iter().any(|t| t.sid == sid.as_str()))
            })
            .map(|(sid, _)| sid.clone())
            .collect();
        for sid in gone {
            let Some(r) = self.relayed_data.remove(&sid) else {
                continue;
            };
            for (sub, _) in r.subscribers {
                if let Some(s) = self.participants.get_mut(&sub) {
                    s.data_subs.retain(|d| d.sid != sid);
                }
                self.send_data_handles(sub);
            }
        }
    }

    /// `place` wants nothing relayed any more (its link to `room` is gone).
    pub(crate) fn forget_data_sinks(&mut self, place: PlaceId, room: &RoomName) {
        let members: Vec<ParticipantKey> = self
            .rooms
            .get(room)
            .map(|r| r.members.clone())
            .unwrap_or_default();
        for k in members {
            if let Some(p) = self.participants.get_mut(&k) {
                for t in &mut p.data_tracks {
                    t.sinks.retain(|s| *s != place);
                }
            }
        }
        let relayed: Vec<DataTrackSid> = (self.relayed_data.iter())
            .filter(|(_, r)| &r.room == room && r.sinks.contains(&place))
            .map(|(sid, _)| sid.clone())
            .collect();
        for sid in relayed {
            if let Some(r) = self.relayed_data.get_mut(&sid) {
                r.sinks.retain(|s| *s != place);
            }
            self.refresh_data_wish(&sid);
        }
    }

    /// The link to `place` was (re)established for `room`: ask again for what this place
    /// relays from it (a restarted instance there forgot).
    pub(crate) fn repeat_data_wishes(&mut self, place: PlaceId, room: &RoomName) {
        let wishes: Vec<RelayMessage> = (self.relayed_data.iter())
            .filter(|(_, r)| r.place == place && &r.room == room && r.wished)
            .map(|(sid, r)| RelayMessage::DataWish {
                room: r.room.clone(),
                track: sid.clone(),
                subscribe: true,
            })
            .collect();
        for msg in wishes {
            self.relay(place, msg);
        }
    }

    fn unsubscribe_data(&mut self, key: ParticipantKey, sid: &DataTrackSid) -> bool {
        let Some(s) = self.participants.get_mut(&key) else {
            return false;
        };
        let Some(i) = s.data_subs.iter().position(|d| &d.sid == sid) else {
            return false;
        };
        let sub = s.data_subs.remove(i);
        self.forget_data_subscriber(key, &sub);
        true
    }

    /// The subscriber's whole map of handles (sent after every change).
    pub(crate) fn send_data_handles(&mut self, key: ParticipantKey) {
        let Some(s) = self.participants.get(&key) else {
            return;
        };
        let sub_handles = s
            .data_subs
            .iter()
            .filter_map(|d| {
                let (identity, sid) = match self.participants.get(&d.publisher) {
                    Some(p) => (&p.identity, &p.sid),
                    None => self.remotes.get(&d.publisher).map(|m| (&m.identity, &m.sid))?,
                };
                let track = lk::data_track_subscriber_handles::PublishedDataTrack {
                    publisher_identity: identity.to_string(),
                    publisher_sid: sid.to_string(),
                    track_sid: d.sid.to_string(),
                };
                Some((u32::from(d.handle), track))
            })
            .collect();
        let msg = Resp::DataTrackSubscriberHandles(lk::DataTrackSubscriberHandles { sub_handles });
        self.send_to(key, msg);
    }

    /// A packet on a publisher's `_data_track` channel: to each subscriber with its handle.
    pub(crate) fn on_data_track_packet(&mut self, _now: Instant, key: ParticipantKey, d: ChannelData) {
        let Some(handle) = packet_handle(&d.data) else {
            return;
        };
        let Some(p) = self.participants.get(&key) else {
            return;
        };
        let Some(t) = p.data_tracks.iter().find(|t| t.handle == handle) else {
            return;
        };
        let mut subs = std::mem::take(&mut self.data_fanout);
        subs.clear();
        subs.extend_from_slice(&t.subscribers);
        let relay = (!t.sinks.is_empty()).then(|| (p.room.clone(), t.sid.clone(), t.sinks.clone()));
        self.fan_out_data_track(&subs, &d.data);
        self.data_fanout = subs;
        if let Some((room, sid, sinks)) = relay {
            // One shared copy for every place; the publisher's handle stays (each place
            // rewrites it for its own subscribers).
            let packet: Arc<[u8]> = Arc::from(&d.data[..]);
            self.relay_data_frame(&room, &sid, &sinks, &packet);
        }
    }

    /// Write a data-track packet to each subscriber with its own handle.
    fn fan_out_data_track(&mut self, subs: &[(ParticipantKey, u16)], packet: &[u8]) {
        let mut buf = std::mem::take(&mut self.data_scratch);
        buf.clear();
        buf.extend_from_slice(packet);
        for &(sub, sub_handle) in subs {
            let Some(s) = self.participants.get_mut(&sub) else {
                continue;
            };
            let Some((channel, pc)) = s.data_channel(|c| c.track) else {
                continue;
            };
            buf[2..4].copy_from_slice(&sub_handle.to_be_bytes());
            if s.write_data(pc, channel, &buf) {
                self.stats.data_packets_forwarded += 1;
            }
            self.dirty.push(PeerRef { key: sub, pc });
        }
        self.data_scratch = buf;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_version_0_packets_with_a_header_and_a_handle_are_read() {
        let mut p = [0u8; 16];
        p[2..4].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(packet_handle(&p), Some(7));
        p[0] = 0b0001_1000; // start and final flags
        assert_eq!(packet_handle(&p), Some(7));
        assert_eq!(packet_handle(&p[..11]), None, "shorter than the header");
        p[0] = 0b0010_0000; // version 1
        assert_eq!(packet_handle(&p), None);
        p[0] = 0;
        p[2..4].copy_from_slice(&[0, 0]);
        assert_eq!(packet_handle(&p), None, "handle 0 is never valid");
        assert_eq!(packet_handle(&[]), None);
        let mut big = vec![0u8; crate::limits::MAX_DATA_TRACK_PACKET];
        big[2..4].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(packet_handle(&big), Some(7), "the SDKs' largest packet");
        big.push(0);
        assert_eq!(packet_handle(&big), None, "over the SDKs' transport MTU");
    }
}
