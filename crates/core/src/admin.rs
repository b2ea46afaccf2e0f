//! Server-side administration of rooms and participants (what the Room API asks for).
//!
//! Each request is already parsed and authorized by the API edge; here it is applied to the
//! shard and its effects reach the participants (Leave, mute requests, updates, data).

use std::time::{Duration, Instant};

use livekit_protocol as lk;
use lk::signal_response::Message as Resp;
use prost::Message;

use crate::data::{DataKind, Destinations};
use crate::ids::{ParticipantKey, RoomName};
use crate::room::Room;
use crate::shard::Shard;

/// A Room API request, authorized.
#[derive(Debug, Clone)]
pub enum AdminRequest {
    CreateRoom(Box<lk::CreateRoomRequest>),
    ListRooms(lk::ListRoomsRequest),
    DeleteRoom(lk::DeleteRoomRequest),
    ListParticipants(lk::ListParticipantsRequest),
    GetParticipant(lk::RoomParticipantIdentity),
    RemoveParticipant(lk::RoomParticipantIdentity),
    MutePublishedTrack(lk::MuteRoomTrackRequest),
    UpdateParticipant(lk::UpdateParticipantRequest),
    UpdateSubscriptions(lk::UpdateSubscriptionsRequest),
    SendData(lk::SendDataRequest),
    UpdateRoomMetadata(lk::UpdateRoomMetadataRequest),
    /// Move a participant to another room on this node; `token` lets it rejoin the
    /// destination room (sent to it in RoomMovedResponse).
    MoveParticipant {
        req: lk::MoveParticipantRequest,
        token: String,
    },
}

/// The answer to an [`AdminRequest`], one variant per response message.
#[derive(Debug, Clone)]
pub enum AdminResponse {
    Room(lk::Room),
    Rooms(lk::ListRoomsResponse),
    RoomDeleted(lk::DeleteRoomResponse),
    Participants(lk::ListParticipantsResponse),
    Participant(lk::ParticipantInfo),
    ParticipantRemoved(lk::RemoveParticipantResponse),
    TrackMuted(lk::MuteRoomTrackResponse),
    SubscriptionsUpdated(lk::UpdateSubscriptionsResponse),
    DataSent(lk::SendDataResponse),
    ParticipantMoved(lk::MoveParticipantResponse),
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
            AdminRequest::CreateRoom(r) => AdminResponse::Room(self.create_room(now, *r)?),
            AdminRequest::ListRooms(r) => AdminResponse::Rooms(self.list_rooms(&r)),
            AdminRequest::DeleteRoom(r) => {
                self.delete_room(now, &RoomName::new(r.room))?;
                AdminResponse::RoomDeleted(lk::DeleteRoomResponse {})
            }
            AdminRequest::ListParticipants(r) => {
                // A room that is not open has no participants (LiveKit answers an empty list).
                let participants = self
                    .members(&RoomName::new(r.room))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|k| self.participants[&k].info())
                    .collect();
                AdminResponse::Participants(lk::ListParticipantsResponse { participants })
            }
            AdminRequest::GetParticipant(r) => {
                let key = self.participant_key(&r.room, &r.identity)?;
                AdminResponse::Participant(self.participants[&key].info())
            }
            AdminRequest::RemoveParticipant(r) => {
                let key = self.participant_key(&r.room, &r.identity)?;
                self.remove_participant(
                    now,
                    key,
                    lk::DisconnectReason::ParticipantRemoved,
                    Some(lk::leave_request::Action::Disconnect),
                );
                AdminResponse::ParticipantRemoved(lk::RemoveParticipantResponse {})
            }
            AdminRequest::MutePublishedTrack(r) => AdminResponse::TrackMuted(self.mute_track(r)?),
            AdminRequest::UpdateParticipant(r) => {
                AdminResponse::Participant(self.update_participant(now, r)?)
            }
            AdminRequest::UpdateSubscriptions(r) => {
                let key = self.participant_key(&r.room, &r.identity)?;
                let update = lk::UpdateSubscription {
                    track_sids: r.track_sids,
                    subscribe: r.subscribe,
                    participant_tracks: r.participant_tracks,
                };
                self.on_update_subscription(now, key, update);
                AdminResponse::SubscriptionsUpdated(lk::UpdateSubscriptionsResponse {})
            }
            AdminRequest::SendData(r) => {
                self.api_send_data(now, r)?;
                AdminResponse::DataSent(lk::SendDataResponse {})
            }
            AdminRequest::UpdateRoomMetadata(r) => AdminResponse::Room(self.update_room_metadata(r)?),
            AdminRequest::MoveParticipant { req, token } => {
                self.move_participant(now, req, token)?;
                AdminResponse::ParticipantMoved(lk::MoveParticipantResponse {})
            }
        };
        self.drain_dirty(now);
        Ok(out)
    }

    fn members(&self, room: &RoomName) -> Result<Vec<ParticipantKey>, AdminError> {
        let r = self.rooms.get(room).ok_or(AdminError::RoomNotFound)?;
        Ok(r.participants
            .iter()
            .copied()
            .filter(|k| self.participants.contains_key(k))
            .collect())
    }

    fn participant_key(&self, room: &str, identity: &str) -> Result<ParticipantKey, AdminError> {
        self.members(&RoomName::new(room))?
            .into_iter()
            .find(|k| self.participants[k].identity.as_str() == identity)
            .ok_or(AdminError::ParticipantNotFound)
    }

    fn create_room(&mut self, now: Instant, r: lk::CreateRoomRequest) -> Result<lk::Room, AdminError> {
        if r.name.is_empty() {
            return Err(AdminError::InvalidArgument("room name is required".into()));
        }
        crate::limits::check_room_name(&r.name)?;
        crate::limits::check_metadata(&r.metadata)?;
        let name = RoomName::new(r.name.clone());
        if !self.rooms.contains_key(&name) {
            let mut settings = self.config.room.clone();
            if r.empty_timeout > 0 {
                settings.empty_timeout = Duration::from_secs(r.empty_timeout.into());
            }
            if r.departure_timeout > 0 {
                settings.departure_timeout = Duration::from_secs(r.departure_timeout.into());
            }
            if r.max_participants > 0 {
                settings.max_participants = r.max_participants;
            }
            let sid = self.mint_room_sid();
            let mut room = Room::new(name.clone(), sid, settings, now, self.unix_ms(now));
            room.metadata = r.metadata;
            tracing::info!(room = %name, sid = %room.sid, "room created by API");
            self.rooms.insert(name.clone(), room);
            let info = self.room_info(&name);
            self.webhook(now, crate::shard::event::ROOM_STARTED, info, None, None);
        }
        Ok(self.room_info(&name).expect("room exists"))
    }

    fn list_rooms(&self, r: &lk::ListRoomsRequest) -> lk::ListRoomsResponse {
        let mut rooms: Vec<lk::Room> = self
            .rooms
            .keys()
            .filter(|n| r.names.is_empty() || r.names.iter().any(|x| x == n.as_str()))
            .filter_map(|n| self.room_info(n))
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        lk::ListRoomsResponse { rooms }
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

    fn mute_track(&mut self, r: lk::MuteRoomTrackRequest) -> Result<lk::MuteRoomTrackResponse, AdminError> {
        let key = self.participant_key(&r.room, &r.identity)?;
        let p = self.participants.get_mut(&key).expect("member");
        let i = p.track_by_sid(&r.track_sid).ok_or(AdminError::TrackNotFound)?;
        if !r.muted && p.tracks[i].info.muted {
            return Err(AdminError::FailedPrecondition("remote unmute not enabled".into()));
        }
        let changed = p.tracks[i].info.muted != r.muted;
        p.tracks[i].info.muted = r.muted;
        let track = p.tracks[i].info.clone();
        if changed {
            p.bump_version();
            let session = p.session;
            let req = lk::MuteTrackRequest {
                sid: r.track_sid,
                muted: r.muted,
            };
            self.send(session, Resp::Mute(req));
            self.broadcast_participant(key);
        }
        Ok(lk::MuteRoomTrackResponse { track: Some(track) })
    }

    fn update_participant(
        &mut self,
        now: Instant,
        r: lk::UpdateParticipantRequest,
    ) -> Result<lk::ParticipantInfo, AdminError> {
        let key = self.participant_key(&r.room, &r.identity)?;
        crate::limits::check_metadata(&r.metadata)?;
        crate::limits::check_name(&r.name)?;
        let p = self.participants.get_mut(&key).expect("member");
        crate::limits::check_attributes(&p.attributes, &r.attributes)?;
        if !r.metadata.is_empty() {
            p.metadata = r.metadata;
        }
        if !r.name.is_empty() {
            p.name = r.name;
        }
        for (k, v) in r.attributes {
            if v.is_empty() {
                p.attributes.remove(&k);
            } else {
                p.attributes.insert(k, v);
            }
        }
        let mut revoked_publish = false;
        let mut revoked_subscribe = false;
        if let Some(perm) = r.permission {
            revoked_publish = p.permission.can_publish && !perm.can_publish;
            revoked_subscribe = p.permission.can_subscribe && !perm.can_subscribe;
            p.permission.can_publish = perm.can_publish;
            p.permission.can_subscribe = perm.can_subscribe;
            p.permission.can_publish_data = perm.can_publish_data;
            p.permission.can_update_metadata = perm.can_update_metadata;
            p.permission.hidden = perm.hidden;
            p.permission.can_publish_sources = perm
                .can_publish_sources
                .iter()
                .filter_map(|s| lk::TrackSource::try_from(*s).ok())
                .filter_map(source_name)
                .map(str::to_string)
                .collect();
        }
        p.bump_version();
        if revoked_publish {
            while !self.participants[&key].tracks.is_empty() {
                let sid = self.participants[&key].tracks[0].sid.as_str().to_string();
                self.unpublish(now, key, 0);
                self.send_to(
                    key,
                    Resp::TrackUnpublished(lk::TrackUnpublishedResponse { track_sid: sid }),
                );
            }
        }
        if revoked_subscribe {
            let subscribed: Vec<_> = self.participants[&key].downtracks.keys().copied().collect();
            for t in subscribed {
                self.unsubscribe(key, t);
            }
        }
        self.broadcast_participant(key);
        Ok(self.participants[&key].info())
    }

    fn api_send_data(&mut self, now: Instant, r: lk::SendDataRequest) -> Result<(), AdminError> {
        let name = RoomName::new(r.room.clone());
        self.members(&name)?;
        let kind = if r.kind == lk::data_packet::Kind::Lossy as i32 {
            DataKind::Lossy
        } else {
            DataKind::Reliable
        };
        let packet = lk::DataPacket {
            kind: r.kind,
            destination_identities: r.destination_identities.clone(),
            value: Some(lk::data_packet::Value::User(lk::UserPacket {
                payload: r.data,
                destination_sids: r.destination_sids.clone(),
                destination_identities: r.destination_identities.clone(),
                topic: r.topic,
                nonce: r.nonce,
                ..Default::default()
            })),
            ..Default::default()
        };
        let to = Destinations {
            identities: r.destination_identities,
            sids: r.destination_sids,
        };
        self.send_data(now, &name, &packet.encode_to_vec(), kind, &to);
        Ok(())
    }

    fn update_room_metadata(&mut self, r: lk::UpdateRoomMetadataRequest) -> Result<lk::Room, AdminError> {
        let name = RoomName::new(r.room);
        crate::limits::check_metadata(&r.metadata)?;
        let room = self.rooms.get_mut(&name).ok_or(AdminError::RoomNotFound)?;
        room.metadata = r.metadata;
        let info = self.room_info(&name).expect("room exists");
        self.broadcast(
            &name,
            Resp::RoomUpdate(lk::RoomUpdate {
                room: Some(info.clone()),
            }),
            None,
        );
        Ok(info)
    }
}

impl Shard {
    /// Move a participant, with its published tracks and its connections, to another room
    /// on this node. The source room sees it leave, the destination room sees it join, and
    /// the participant gets RoomMovedResponse; subscriptions follow auto-subscribe.
    fn move_participant(
        &mut self,
        now: Instant,
        r: lk::MoveParticipantRequest,
        token: String,
    ) -> Result<(), AdminError> {
        if r.destination_room.is_empty() {
            return Err(AdminError::InvalidArgument("destination room is required".into()));
        }
        if r.room == r.destination_room {
            return Err(AdminError::InvalidArgument(
                "destination room cannot be the same as source room".into(),
            ));
        }
        crate::limits::check_room_name(&r.destination_room)?;
        let key = self.participant_key(&r.room, &r.identity)?;
        let dest = RoomName::new(r.destination_room);
        if let Some(room) = self.rooms.get(&dest) {
            if self
                .members(&dest)?
                .iter()
                .any(|k| self.participants[k].identity.as_str() == r.identity)
            {
                return Err(AdminError::AlreadyExists(
                    "a participant with this identity is already in the destination room".into(),
                ));
            }
            if room.is_full() {
                return Err(AdminError::FailedPrecondition(
                    "room has exceeded its max participants".into(),
                ));
            }
        } else {
            let sid = self.mint_room_sid();
            let room = Room::new(
                dest.clone(),
                sid,
                self.config.room.clone(),
                now,
                self.unix_ms(now),
            );
            tracing::info!(room = %dest, sid = %room.sid, "room created for a moved participant");
            self.rooms.insert(dest.clone(), room);
            let info = self.room_info(&dest);
            self.webhook(now, crate::shard::event::ROOM_STARTED, info, None, None);
        }

        // Leave the source room: nobody there stays subscribed to it, nor it to them.
        let source = self.participants[&key].room.clone();
        let subscribers: Vec<(ParticipantKey, crate::participant::TrackKey)> = self.participants[&key]
            .tracks
            .iter()
            .flat_map(|t| t.subscribers.iter().map(move |s| (*s, t.key)))
            .collect();
        for (sub, t) in subscribers {
            self.unsubscribe(sub, t);
        }
        let subscribed: Vec<_> = self.participants[&key].downtracks.keys().copied().collect();
        for t in subscribed {
            self.unsubscribe(key, t);
        }
        if let Some(room) = self.rooms.get_mut(&source) {
            room.remove(key, now);
        }
        let p = self.participants.get_mut(&key).expect("member");
        let departed = p.departed_info(lk::DisconnectReason::UnknownReason);
        p.bump_version();
        let hidden = p.permission.hidden;
        if !hidden {
            self.broadcast(&source, crate::shard::update(vec![departed.clone()]), None);
        }
        let info = self.room_info(&source);
        self.webhook(
            now,
            crate::shard::event::PARTICIPANT_LEFT,
            info,
            Some(departed),
            None,
        );

        // Join the destination room.
        let p = self.participants.get_mut(&key).expect("member");
        p.room = dest.clone();
        p.bump_version();
        let (sid, session, me) = (p.sid.clone(), p.session, p.info());
        self.rooms.get_mut(&dest).expect("ensured above").add(key);
        tracing::info!(from = %source, to = %dest, participant = %sid, "participant moved");
        let room_info = self.room_info(&dest);
        self.webhook(
            now,
            crate::shard::event::PARTICIPANT_JOINED,
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
            self.broadcast(&dest, crate::shard::update(vec![me]), Some(key));
        }
        self.auto_subscribe_to_publisher(now, key);
        if self.participants[&key].subscriber.connected {
            self.auto_subscribe_all(now, key);
        }
        Ok(())
    }
}

fn source_name(s: lk::TrackSource) -> Option<&'static str> {
    match s {
        lk::TrackSource::Camera => Some("camera"),
        lk::TrackSource::Microphone => Some("microphone"),
        lk::TrackSource::ScreenShare => Some("screen_share"),
        lk::TrackSource::ScreenShareAudio => Some("screen_share_audio"),
        lk::TrackSource::Unknown => None,
    }
}
