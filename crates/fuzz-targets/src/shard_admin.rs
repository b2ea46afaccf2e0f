//! Room API requests (already authorized, arbitrary contents) applied to a shard with two
//! participants in two rooms: the shard never panics, and a request naming one room never
//! removes the participant of the other.
use std::time::{Duration, Instant};

use livekit_protocol as lk;
use prost::Message;
use pylon_core::admin::{AdminRequest, DataSend, ParticipantUpdate, RoomOptions};
use pylon_core::data::{DataKind, Destinations};
use pylon_core::ids::{ParticipantIdentity, RoomName, SessionId, TrackSid};
use pylon_core::{JoinParams, Shard, ShardConfig};

/// One request from a chunk: the first byte picks the method, the rest is its protobuf body,
/// converted as the API edge converts it.
fn request(chunk: &[u8]) -> Option<AdminRequest> {
    let (&which, body) = chunk.split_first()?;
    let who = |r: lk::RoomParticipantIdentity| (RoomName::new(r.room), ParticipantIdentity::new(r.identity));
    Some(match which % 13 {
        0 => {
            let r = lk::CreateRoomRequest::decode(body).ok()?;
            let options = RoomOptions {
                max_participants: Some(r.max_participants),
                metadata: r.metadata,
                ..Default::default()
            };
            AdminRequest::CreateRoom {
                name: RoomName::new(r.name),
                options,
                record: None,
            }
        }
        1 => AdminRequest::ListRooms {
            names: lk::ListRoomsRequest::decode(body)
                .ok()?
                .names
                .into_iter()
                .map(RoomName::new)
                .collect(),
        },
        2 => AdminRequest::DeleteRoom {
            room: RoomName::new(lk::DeleteRoomRequest::decode(body).ok()?.room),
        },
        3 => AdminRequest::ListParticipants {
            room: RoomName::new(lk::ListParticipantsRequest::decode(body).ok()?.room),
        },
        4 => {
            let (room, identity) = who(lk::RoomParticipantIdentity::decode(body).ok()?);
            AdminRequest::GetParticipant { room, identity }
        }
        5 => {
            let (room, identity) = who(lk::RoomParticipantIdentity::decode(body).ok()?);
            AdminRequest::RemoveParticipant { room, identity }
        }
        6 => {
            let r = lk::MuteRoomTrackRequest::decode(body).ok()?;
            AdminRequest::MutePublishedTrack {
                room: RoomName::new(r.room),
                identity: ParticipantIdentity::new(r.identity),
                track: TrackSid::new(r.track_sid),
                muted: r.muted,
            }
        }
        7 => {
            let r = lk::UpdateParticipantRequest::decode(body).ok()?;
            let update = ParticipantUpdate {
                metadata: Some(r.metadata),
                name: Some(r.name),
                attributes: r.attributes,
                permission: None,
            };
            AdminRequest::UpdateParticipant {
                room: RoomName::new(r.room),
                identity: ParticipantIdentity::new(r.identity),
                update: Box::new(update),
            }
        }
        8 => {
            let r = lk::UpdateSubscriptionsRequest::decode(body).ok()?;
            AdminRequest::UpdateSubscriptions {
                room: RoomName::new(r.room),
                identity: ParticipantIdentity::new(r.identity),
                tracks: r.track_sids.into_iter().map(TrackSid::new).collect(),
                subscribe: r.subscribe,
            }
        }
        9 => {
            let r = lk::SendDataRequest::decode(body).ok()?;
            let data = DataSend {
                kind: DataKind::Reliable,
                payload: r.data,
                topic: r.topic,
                to: Destinations {
                    identities: r.destination_identities,
                    sids: vec![],
                },
                nonce: r.nonce,
            };
            AdminRequest::SendData {
                room: RoomName::new(r.room),
                data: Box::new(data),
            }
        }
        10 => {
            let r = lk::UpdateRoomMetadataRequest::decode(body).ok()?;
            AdminRequest::UpdateRoomMetadata {
                room: RoomName::new(r.room),
                metadata: r.metadata,
            }
        }
        _ => {
            let r = lk::MoveParticipantRequest::decode(body).ok()?;
            AdminRequest::MoveParticipant {
                room: RoomName::new(r.room),
                identity: ParticipantIdentity::new(r.identity),
                destination: RoomName::new(r.destination_room),
                token: String::new(),
                placement: Default::default(),
            }
        }
    })
}

fn names_room(req: &AdminRequest, room: &str) -> bool {
    match req {
        AdminRequest::DeleteRoom { room: r } => r.as_str() == room,
        AdminRequest::RemoveParticipant { room: r, .. } => r.as_str() == room,
        AdminRequest::MoveParticipant { room: r, .. } => r.as_str() == room,
        _ => false,
    }
}

pub fn run(data: &[u8]) {
    let mut now = Instant::now();
    let mut shard = Shard::new(ShardConfig::new("127.0.0.1:7882".parse().unwrap()), now, 0, 1);
    shard
        .join(now, JoinParams::standard(SessionId(1), "quiet", "bystander"))
        .unwrap();
    shard
        .join(now, JoinParams::standard(SessionId(2), "busy", "target"))
        .unwrap();
    let mut quiet_touched = false;
    for chunk in data.split(|b| *b == 0xff) {
        if let Some(req) = request(chunk) {
            quiet_touched |= names_room(&req, "quiet");
            let _ = shard.admin(now, req);
        }
        now += Duration::from_millis(10);
        shard.handle_timeout(now);
        while shard.poll_output().is_some() {}
    }
    if !quiet_touched {
        assert!(
            shard.participant_count() >= 1,
            "the bystander was removed by requests for another room"
        );
    }
}
