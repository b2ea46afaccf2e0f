//! Room API requests (already authorized, arbitrary contents) applied to a shard with two
//! participants in two rooms: the shard never panics, and a request naming one room never
//! removes the participant of the other.
#![no_main]
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use livekit_protocol as lk;
use prost::Message;
use pylon_core::admin::AdminRequest;
use pylon_core::ids::SessionId;
use pylon_core::{JoinParams, Shard, ShardConfig};

/// One request from a chunk: the first byte picks the method, the rest is its protobuf body.
fn request(chunk: &[u8]) -> Option<AdminRequest> {
    let (&which, body) = chunk.split_first()?;
    Some(match which % 13 {
        0 => AdminRequest::CreateRoom(Box::new(lk::CreateRoomRequest::decode(body).ok()?)),
        1 => AdminRequest::ListRooms(lk::ListRoomsRequest::decode(body).ok()?),
        2 => AdminRequest::DeleteRoom(lk::DeleteRoomRequest::decode(body).ok()?),
        3 => AdminRequest::ListParticipants(lk::ListParticipantsRequest::decode(body).ok()?),
        4 => AdminRequest::GetParticipant(lk::RoomParticipantIdentity::decode(body).ok()?),
        5 => AdminRequest::RemoveParticipant(lk::RoomParticipantIdentity::decode(body).ok()?),
        6 => AdminRequest::MutePublishedTrack(lk::MuteRoomTrackRequest::decode(body).ok()?),
        7 => AdminRequest::UpdateParticipant(lk::UpdateParticipantRequest::decode(body).ok()?),
        8 => AdminRequest::UpdateSubscriptions(lk::UpdateSubscriptionsRequest::decode(body).ok()?),
        9 => AdminRequest::SendData(lk::SendDataRequest::decode(body).ok()?),
        10 => AdminRequest::UpdateRoomMetadata(lk::UpdateRoomMetadataRequest::decode(body).ok()?),
        _ => AdminRequest::MoveParticipant {
            req: lk::MoveParticipantRequest::decode(body).ok()?,
            token: String::new(),
        },
    })
}

fn names_room(req: &AdminRequest, room: &str) -> bool {
    match req {
        AdminRequest::DeleteRoom(r) => r.room == room,
        AdminRequest::RemoveParticipant(r) => r.room == room,
        AdminRequest::MoveParticipant { req, .. } => req.room == room,
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
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
});
