//! Server-side administration of rooms and participants (what the Room API asks for).
//!
//! Each request is already parsed and authorized by the API edge into the core's types; here
//! it is applied to the shard and its effects reach the participants (Leave, mute requests,
//! updates, data). A request about a participant goes to the shard hosting it; one about a
//! room goes to every place of the room, each acting on what it hosts, and the runtime merges
//! the answers (participant lists, room summaries).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use livekit_protocol as lk;
use lk::signal_response::Message as Resp;
use prost::Message;

use crate::data::{DataKind, Destinations};
use crate::ids::{ParticipantIdentity, ParticipantKey, ParticipantSid, RoomName, TrackSid};
use crate::participant::{departed, source_name};
use crate::peer::PcKind;
use crate::room::{Placement, RoomRecord};
use crate::shard::{event, update, Shard, ShardEvent};

/// Settings of a room created by the API (`None`: the node's defaults).
#[derive(Debug, Clone, Default)]
pub struct RoomOptions {
    pub empty_timeout: Option<Duration>,
    pub departure_timeout: Option<Duration>,
    pub max_participants: Option<u32>,
    pub metadata: String,
}

/// Permissions the API may set on a participant.
#[derive(Debug, Clone, Default)]
pub struct PermissionUpdate {
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_publish_data: bool,
    pub can_update_metadata: bool,
    pub hidden: bool,
    pub can_publish_sources: Vec<lk::TrackSource>,
}

/// Changes to a participant (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct ParticipantUpdate {
    pub metadata: Option<String>,
    pub name: Option<String>,
    /// An empty value deletes the attribute.
    pub attributes: HashMap<String, String>,
    pub permission: Option<PermissionUpdate>,
}

/// A server-originated data packet.
#[derive(Debug, Clone)]
pub struct DataSend {
    pub kind: DataKind,
    pub payload: Vec<u8>,
    pub topic: Option<String>,
    pub to: Destinations,
    pub nonce: Vec<u8>,
}

/// A Room API request, authorized.
#[derive(Debug, Clone)]
pub enum AdminRequest {
    CreateRoom {
        name: RoomName,
        options: RoomOptions,
        /// The room's record when another place already minted it (the node's directory).
        record: Option<RoomRecord>,
    },
    /// The room instances here (all, or those named).
    ListRooms {
        names: Vec<RoomName>,
    },
    DeleteRoom {
        room: RoomName,
    },
    /// The participants of the room hosted here.
    ListParticipants {
        room: RoomName,
    },
    GetParticipant {
        room: RoomName,
        identity: ParticipantIdentity,
    },
    RemoveParticipant {
        room: RoomName,
        identity: ParticipantIdentity,
    },
    MutePublishedTrack {
        room: RoomName,
        identity: ParticipantIdentity,
        track: TrackSid,
        muted: bool,
    },
    UpdateParticipant {
        room: RoomName,
        identity: ParticipantIdentity,
        update: Box<ParticipantUpdate>,
    },
    UpdateSubscriptions {
        room: RoomName,
        identity: ParticipantIdentity,
        tracks: Vec<TrackSid>,
        subscribe: bool,
    },
    SendData {
        room: RoomName,
        data: Box<DataSend>,
    },
    UpdateRoomMetadata {
        room: RoomName,
        metadata: String,
    },
    /// Move a participant to another room; `token` lets it rejoin the destination room (sent
    /// to it in RoomMovedResponse); `placement` places the destination's instance here.
    MoveParticipant {
        room: RoomName,
        identity: ParticipantIdentity,
        destination: RoomName,
        token: String,
        placement: Placement,
    },
}

/// One room instance here, for listings the runtime merges across places.
#[derive(Debug, Clone)]
pub struct RoomSummary {
    /// As this instance sees the room (counts include mirrors).
    pub info: lk::Room,
    pub home: bool,
    /// Participants and publishers hosted here.
    pub hosted: u32,
    pub hosted_publishers: u32,
}

/// The answer to an [`AdminRequest`], one variant per response.
#[derive(Debug, Clone)]
pub enum AdminResponse {
    Room(lk::Room),
    Rooms(Vec<RoomSummary>),
    RoomDeleted,
    Participants(Vec<lk::ParticipantInfo>),
    Participant(lk::ParticipantInfo),
    ParticipantRemoved,
    TrackMuted(lk::TrackInfo),
    SubscriptionsUpdated,
    DataSent,
    ParticipantMoved,
}

/// Why a request failed; the API edge maps each to a Twirp code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdminError {
    #[error("requested room does not exist")]
    RoomNotFound,
    #[error("participant does not exist")]
    ParticipantNotFound,
    #[error("track is not found")]
    TrackNotFound,
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
}

impl From<crate::limits::LimitError> for AdminError {
    fn from(e: crate::limits::LimitError) -> Self {
        AdminError::InvalidArgument(e.to_string())
    }
}

impl Shard {
    pub fn admin(&mut self, now: Instant, req: AdminRequest) -> Result<AdminResponse, AdminError> {
        let out = match req {
            AdminRequest::CreateRoom {
                name,
                options,
                record,
            } => AdminResponse::Room(self.create_room(now, name, options, record)?),
            AdminRequest::ListRooms { names } => AdminResponse::Rooms(self.list_rooms(&names)),
            AdminRequest::DeleteRoom { room } => {
                self.delete_room(now, &room)?;
                AdminResponse::RoomDeleted
            }
            AdminRequest::ListParticipants { room } => {
                // A room that is not open has no participants (LiveKit answers an empty list).
                let participants = self
                    .members(&room)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|k| self.info_of(k))
                    .collect();
                AdminResponse::Participants(participants)
            }
            AdminRequest::GetParticipant { room, identity } => {
                let key = self.participant_key(&room, &identity)?;
                AdminResponse::Participant(self.info_of(key).expect("member"))
            }
            AdminRequest::RemoveParticipant { room, identity } => {
                let key = self.participant_key(&room, &identity)?;
                self.remove_participant(
                    now,
                    key,
                    lk::DisconnectReason::ParticipantRemoved,
                    Some(lk::leave_request::Action::Disconnect),
                );
                AdminResponse::ParticipantRemoved
            }
            AdminRequest::MutePublishedTrack {
                room,
                identity,
                track,
                muted,
            } => AdminResponse::TrackMuted(self.mute_track(&room, &identity, &track, muted)?),
            AdminRequest::UpdateParticipant {
                room,
                identity,
                update,
            } => AdminResponse::Participant(self.update_participant(now, &room, &identity, *update)?),
            AdminRequest::UpdateSubscriptions {
                room,
                identity,
                tracks,
                subscribe,
            } => {
                let key = self.participant_key(&room, &identity)?;
                self.on_update_subscription(now, key, &tracks, subscribe);
                AdminResponse::SubscriptionsUpdated
            }
            AdminRequest::SendData { room, data } => {
                self.api_send_data(now, &room, *data)?;
                AdminResponse::DataSent
            }
            AdminRequest::UpdateRoomMetadata { room, metadata } => {
                AdminResponse::Room(self.update_room_metadata(&room, metadata)?)
            }
            AdminRequest::MoveParticipant {
                room,
                identity,
                destination,
                token,
                placement,
            } => {
                self.move_participant(now, &room, &identity, destination, token, placement)?;
                AdminResponse::ParticipantMoved
            }
        };
        self.drain_dirty(now);
        Ok(out)
    }

    /// The participants of `room` hosted here.
    fn members(&self, room: &RoomName) -> Result<Vec<ParticipantKey>, AdminError> {
        let r = self.rooms.get(room).ok_or(AdminError::RoomNotFound)?;
        Ok(r.members
            .iter()
            .copied()
            .filter(|k| self.participants.contains_key(k))
            .collect())
    }

    fn participant_key(
        &self,
        room: &RoomName,
        identity: &ParticipantIdentity,
    ) -> Result<ParticipantKey, AdminError> {
        self.members(room)?
            .into_iter()
            .find(|k| &self.participants[k].identity == identity)
            .ok_or(AdminError::ParticipantNotFound)
    }

    fn create_room(
        &mut self,
        now: Instant,
        name: RoomName,
        o: RoomOptions,
        record: Option<RoomRecord>,
    ) -> Result<lk::Room, AdminError> {
        if name.as_str().is_empty() {
            return Err(AdminError::InvalidArgument("room name is required".into()));
        }
        crate::limits::check_room_name(name.as_str())?;
        crate::limits::check_metadata(&o.metadata)?;
        if !self.rooms.contains_key(&name) {
            let record = match record {
                Some(r) => r,
                None => {
                    let mut r = self.mint_record(now);
                    r.settings = apply_options(r.settings, &o);
                    r.metadata = o.metadata;
                    r
                }
            };
            tracing::info!(room = %name, sid = %record.sid, "room created by API");
            let placement = Placement {
                record: Some(record),
                home: true,
                anchor: false,
                peers: Vec::new(),
            };
            self.ensure_room(now, &name, &placement);
        }
        Ok(self.room_info(&name).expect("room exists"))
    }

    fn list_rooms(&self, names: &[RoomName]) -> Vec<RoomSummary> {
        let mut rooms: Vec<RoomSummary> = self
            .rooms
            .values()
            .filter(|r| names.is_empty() || names.contains(&r.name))
            .filter_map(|r| {
                let hosted_publishers = r
                    .members
                    .iter()
                    .filter(|k| self.participants.get(k).is_some_and(|p| !p.tracks.is_empty()))
                    .count() as u32;
                Some(RoomSummary {
                    info: self.room_info(&r.name)?,
                    home: r.home,
                    hosted: r.members.len() as u32,
                    hosted_publishers,
                })
            })
            .collect();
        rooms.sort_by(|a, b| a.info.name.cmp(&b.info.name));
        rooms
    }

    fn delete_room(&mut self, now: Instant, name: &RoomName) -> Result<(), AdminError> {
        for key in self.members(name)? {
            self.remove_participant(
                now,
                key,
                lk::DisconnectReason::RoomDeleted,
                Some(lk::leave_request::Action::Disconnect),
            );
        }
        self.close_room(now, name);
        tracing::info!(room = %name, "room deleted by API");
        Ok(())
    }

    fn mute_track(
        &mut self,
        room: &RoomName,
        identity: &ParticipantIdentity,
        track: &TrackSid,
        muted: bool,
    ) -> Result<lk::TrackInfo, AdminError> {
        let key = self.participant_key(room, identity)?;
        let tkey = self
            .track_sids
            .get(track)
            .copied()
            .filter(|k| self.tracks.get(k).is_some_and(|t| t.owner == key))
            .ok_or(AdminError::TrackNotFound)?;
        let t = self.tracks.get_mut(&tkey).expect("checked above");
        if !muted && t.info.muted {
            return Err(AdminError::FailedPrecondition("remote unmute not enabled".into()));
        }
        let changed = t.info.muted != muted;
        t.info.muted = muted;
        let info = t.info.clone();
        if changed {
            let p = self.participants.get_mut(&key).expect("member");
            p.bump_version();
            let session = p.session;
            let req = lk::MuteTrackRequest {
                sid: track.as_str().to_string(),
                muted,
            };
            self.send(session, Resp::Mute(req));
            self.announce(key);
        }
        Ok(info)
    }

    fn update_participant(
        &mut self,
        now: Instant,
        room: &RoomName,
        identity: &ParticipantIdentity,
        u: ParticipantUpdate,
    ) -> Result<lk::ParticipantInfo, AdminError> {
        let key = self.participant_key(room, identity)?;
        crate::limits::check_metadata(u.metadata.as_deref().unwrap_or(""))?;
        crate::limits::check_name(u.name.as_deref().unwrap_or(""))?;
        let p = self.participants.get_mut(&key).expect("member");
        crate::limits::check_attributes(&p.attributes, &u.attributes)?;
        if let Some(m) = u.metadata {
            p.metadata = m;
        }
        if let Some(n) = u.name {
            p.name = n;
        }
        crate::limits::apply_attributes(&mut p.attributes, &u.attributes);
        let mut revoked_publish = false;
        let mut revoked_subscribe = false;
        let mut revoked_data = false;
        if let Some(perm) = u.permission {
            revoked_publish = p.permission.can_publish && !perm.can_publish;
            revoked_subscribe = p.permission.can_subscribe && !perm.can_subscribe;
            revoked_data = p.permission.can_publish_data && !perm.can_publish_data;
            p.permission.can_publish = perm.can_publish;
            p.permission.can_subscribe = perm.can_subscribe;
            p.permission.can_publish_data = perm.can_publish_data;
            p.permission.can_update_metadata = perm.can_update_metadata;
            p.permission.hidden = perm.hidden;
            p.permission.can_publish_sources = perm
                .can_publish_sources
                .iter()
                .filter_map(|s| source_name(*s))
                .map(str::to_string)
                .collect();
        }
        p.bump_version();
        if revoked_publish {
            while let Some(&tkey) = self.participants[&key].tracks.first() {
                let sid = self.tracks.get(&tkey).map(|t| t.sid.as_str().to_string());
                self.unpublish(now, key, tkey);
                if let Some(track_sid) = sid {
                    self.send_to(
                        key,
                        Resp::TrackUnpublished(lk::TrackUnpublishedResponse { track_sid }),
                    );
                }
            }
        }
        if revoked_subscribe {
            let subscribed: Vec<_> = self.participants[&key].downtracks.keys().copied().collect();
            for t in subscribed {
                self.unsubscribe(key, t);
            }
            if !self.participants[&key].data_subs.is_empty() {
                self.drop_data_subscriptions(key);
                self.send_data_handles(key);
            }
        }
        if revoked_data {
            self.drop_published_data_tracks(key);
        }
        self.announce(key);
        Ok(self.info_of(key).expect("member"))
    }

    fn api_send_data(&mut self, now: Instant, room: &RoomName, d: DataSend) -> Result<(), AdminError> {
        self.members(room)?;
        let kind = match d.kind {
            DataKind::Lossy => lk::data_packet::Kind::Lossy,
            DataKind::Reliable => lk::data_packet::Kind::Reliable,
        } as i32;
        let packet = lk::DataPacket {
            kind,
            destination_identities: d.to.identities.clone(),
            value: Some(lk::data_packet::Value::User(lk::UserPacket {
                payload: d.payload,
                destination_sids: d.to.sids.clone(),
                destination_identities: d.to.identities.clone(),
                topic: d.topic,
                nonce: d.nonce,
                ..Default::default()
            })),
            ..Default::default()
        };
        self.send_data(now, room, packet.encode_to_vec(), d.kind, d.to);
        Ok(())
    }

    fn update_room_metadata(&mut self, name: &RoomName, metadata: String) -> Result<lk::Room, AdminError> {
        crate::limits::check_metadata(&metadata)?;
        let room = self.rooms.get_mut(name).ok_or(AdminError::RoomNotFound)?;
        room.metadata = metadata;
        let info = self.room_info(name).expect("room exists");
        let msg = Resp::RoomUpdate(lk::RoomUpdate {
            room: Some(info.clone()),
        });
        self.broadcast(name, msg, None);
        Ok(info)
    }

    /// Move a hosted participant, with its published tracks and its connections, to another
    /// room (its instance here is created if needed). The source room sees it leave, the
    /// destination room sees it join, and the participant gets RoomMovedResponse;
    /// subscriptions follow auto-subscribe.
    fn move_participant(
        &mut self,
        now: Instant,
        room: &RoomName,
        identity: &ParticipantIdentity,
        dest: RoomName,
        token: String,
        placement: Placement,
    ) -> Result<(), AdminError> {
        if dest.as_str().is_empty() {
            return Err(AdminError::InvalidArgument("destination room is required".into()));
        }
        if *room == dest {
            return Err(AdminError::InvalidArgument(
                "destination room cannot be the same as source room".into(),
            ));
        }
        crate::limits::check_room_name(dest.as_str())?;
        let key = self.participant_key(room, identity)?;
        if self.find_identity(&dest, identity).is_some() {
            return Err(AdminError::AlreadyExists(
                "a participant with this identity is already in the destination room".into(),
            ));
        }
        if self.rooms.get(&dest).is_some_and(|r| r.is_full()) {
            return Err(AdminError::FailedPrecondition(
                "room has exceeded its max participants".into(),
            ));
        }
        self.ensure_room(now, &dest, &placement);
        self.leave_for_move(now, key);

        // Join the destination room.
        let p = self.participants.get_mut(&key).expect("member");
        p.room = dest.clone();
        p.bump_version();
        for tkey in p.tracks.clone() {
            if let Some(t) = self.tracks.get_mut(&tkey) {
                t.room = dest.clone();
            }
        }
        let p = &self.participants[&key];
        let (sid, session, hidden) = (p.sid.clone(), p.session, p.permission.hidden);
        let me = p.info(&self.tracks);
        self.rooms.get_mut(&dest).expect("ensured above").add(key);
        tracing::info!(from = %room, to = %dest, participant = %sid, "participant moved");
        self.emit(ShardEvent::ParticipantMoved {
            from: room.clone(),
            to: dest.clone(),
            identity: identity.clone(),
            sid: sid.clone(),
        });
        let room_info = self.room_info(&dest);
        self.webhook(
            now,
            event::PARTICIPANT_JOINED,
            room_info.clone(),
            Some(me.clone()),
            None,
        );
        let moved = lk::RoomMovedResponse {
            room: room_info,
            token,
            participant: Some(me.clone()),
            other_participants: self.others_info(key, &dest),
        };
        self.send(session, Resp::RoomMoved(moved));
        if !hidden {
            self.broadcast(&dest, update(vec![me]), Some(key));
            self.relay_participant(key);
        }
        let tracks = self.participants[&key].tracks.clone();
        self.auto_subscribe_to_tracks(now, &tracks);
        if self.participants[&key].peer(PcKind::Subscriber).connected {
            self.auto_subscribe_all(now, key);
        }
        self.close_instance_if_unused(room);
        Ok(())
    }

    /// The source-room half of a move: nobody there stays subscribed to the participant, nor
    /// it to them, and the room (here and at its other places) sees it leave.
    fn leave_for_move(&mut self, now: Instant, key: ParticipantKey) {
        let p = &self.participants[&key];
        let source = p.room.clone();
        let sid: ParticipantSid = p.sid.clone();
        let hidden = p.permission.hidden;
        let subscribers: Vec<(ParticipantKey, crate::ids::TrackKey)> = p
            .tracks
            .iter()
            .filter_map(|t| self.tracks.get(t))
            .flat_map(|t| t.subscribers.iter().map(move |s| (*s, t.key)))
            .collect();
        for (sub, t) in subscribers {
            self.unsubscribe(sub, t);
        }
        for t in self.participants[&key].tracks.clone() {
            if let Some(track) = self.tracks.get_mut(&t) {
                track.sinks.clear();
            }
        }
        let subscribed: Vec<_> = self.participants[&key].downtracks.keys().copied().collect();
        for t in subscribed {
            self.unsubscribe(key, t);
        }
        if let Some(r) = self.rooms.get_mut(&source) {
            r.remove(key, now);
        }
        let p = self.participants.get_mut(&key).expect("member");
        let gone = departed(p.info(&self.tracks), lk::DisconnectReason::UnknownReason);
        p.bump_version();
        if !hidden {
            self.broadcast(&source, update(vec![gone.clone()]), None);
            let links = self
                .rooms
                .get(&source)
                .map(|r| r.links.clone())
                .unwrap_or_default();
            for place in links {
                let msg = crate::relay::RelayMessage::Left {
                    room: source.clone(),
                    sid: sid.clone(),
                    info: Box::new(gone.clone()),
                };
                self.relay(place, msg);
            }
        }
        let info = self.room_info(&source);
        self.webhook(now, event::PARTICIPANT_LEFT, info, Some(gone), None);
    }
}

fn apply_options(mut s: crate::config::RoomDefaults, o: &RoomOptions) -> crate::config::RoomDefaults {
    if let Some(t) = o.empty_timeout {
        s.empty_timeout = t;
    }
    if let Some(t) = o.departure_timeout {
        s.departure_timeout = t;
    }
    if let Some(m) = o.max_participants {
        s.max_participants = m;
    }
    s
}

/// The settings a room created with `options` gets on a node whose defaults are `defaults`.
pub fn room_settings(
    defaults: crate::config::RoomDefaults,
    options: &RoomOptions,
) -> crate::config::RoomDefaults {
    apply_options(defaults, options)
}
