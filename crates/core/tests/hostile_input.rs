//! Hostile input never panics the shard and never disturbs another participant.
//!
//! Seeded random datagrams and signal frames are thrown at a shard with two joined
//! participants; afterwards the untouched participant is still there and still answered.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use livekit_protocol as lk;
use prost::Message;
use pylon_core::ids::SessionId;
use pylon_core::{JoinParams, Output, Shard, ShardConfig};
use rand::{Rng, RngCore, SeedableRng};

fn join(shard: &mut Shard, now: Instant, session: u64, identity: &str) {
    let params = JoinParams::standard(SessionId(session), "r", identity);
    shard.join(now, params).expect("join succeeds");
}

fn drain(shard: &mut Shard) -> Vec<Output> {
    std::iter::from_fn(|| shard.poll_output()).collect()
}

fn shard(now: Instant) -> Shard {
    let addr: SocketAddr = "127.0.0.1:7882".parse().unwrap();
    Shard::new(ShardConfig::new(addr), now, 1_800_000_000_000, 7)
}

#[test]
fn random_datagrams_never_panic_and_leave_rooms_intact() {
    let mut now = Instant::now();
    let mut s = shard(now);
    join(&mut s, now, 1, "alice");
    join(&mut s, now, 2, "bob");
    drain(&mut s);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let dst: SocketAddr = "127.0.0.1:7882".parse().unwrap();
    for i in 0..20_000 {
        let len = rng.random_range(0..1500);
        let mut buf = vec![0u8; len];
        rng.fill_bytes(&mut buf);
        // Make some look like STUN, RTP and DTLS so deeper parsers are reached.
        match (i % 4, buf.first_mut()) {
            (0, Some(b)) => *b = 0x00,
            (1, Some(b)) => *b = 0x80,
            (2, Some(b)) => *b = 22,
            _ => {}
        }
        s.receive(now, src, dst, &buf);
        now += Duration::from_micros(50);
    }
    s.handle_timeout(now);
    drain(&mut s);
    assert_eq!(s.participant_count(), 2);
}

#[test]
fn garbage_signal_disconnects_only_the_sender() {
    let now = Instant::now();
    let mut s = shard(now);
    join(&mut s, now, 1, "alice");
    join(&mut s, now, 2, "bob");
    drain(&mut s);
    // A valid protobuf of the wrong type (ParticipantInfo) decoded as a SignalRequest.
    let wrong = lk::ParticipantInfo {
        sid: "PA_x".into(),
        identity: "x".into(),
        ..Default::default()
    };
    let req = lk::SignalRequest::decode(wrong.encode_to_vec().as_slice()).unwrap_or_default();
    s.signal(now, SessionId(1), req);
    let out = drain(&mut s);
    assert!(
        out.iter().any(|o| matches!(o, Output::Close(SessionId(1)))),
        "sender is cut: {out:?}"
    );
    assert!(
        !out.iter().any(|o| matches!(o, Output::Close(SessionId(2)))),
        "bystander kept"
    );
    assert_eq!(s.participant_count(), 1);
    // Bob is still served: a ping gets a pong.
    let ping = lk::SignalRequest {
        message: Some(lk::signal_request::Message::Ping(5)),
    };
    s.signal(now, SessionId(2), ping);
    let out = drain(&mut s);
    assert!(out.iter().any(|o| matches!(o, Output::Signal(SessionId(2), m)
        if matches!(m.message, Some(lk::signal_response::Message::Pong(_))))));
}

#[test]
fn random_signal_requests_never_panic() {
    let mut now = Instant::now();
    let mut s = shard(now);
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let mut session = 100;
    join(&mut s, now, session, "victim");
    let victim = SessionId(session);
    for _ in 0..1_000 {
        session += 1;
        join(&mut s, now, session, "attacker");
        for _ in 0..4 {
            let len = rng.random_range(0..300);
            let mut buf = vec![0u8; len];
            rng.fill_bytes(&mut buf);
            if let Ok(req) = lk::SignalRequest::decode(buf.as_slice()) {
                s.signal(now, SessionId(session), req);
            }
        }
        now += Duration::from_millis(1);
        s.handle_timeout(now);
        drain(&mut s);
    }
    let ping = lk::SignalRequest {
        message: Some(lk::signal_request::Message::Ping(1)),
    };
    s.signal(now, victim, ping);
    assert!(drain(&mut s)
        .iter()
        .any(|o| matches!(o, Output::Signal(v, _) if *v == victim)));
}

/// Room API requests with arbitrary (authorized) contents: names from a small pool so they
/// often hit, sizes around the limits. The shard never panics, and nothing addressed to room
/// "r" touches the participant in room "elsewhere".
#[test]
fn random_admin_requests_never_panic_or_touch_other_rooms() {
    use pylon_core::admin::AdminRequest;
    let mut now = Instant::now();
    let mut s = shard(now);
    join(&mut s, now, 1, "alice");
    join(&mut s, now, 2, "bob");
    s.join(now, JoinParams::standard(SessionId(3), "elsewhere", "carol"))
        .expect("join");
    drain(&mut s);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let rooms = ["r", "r", "other", "", "x-new"];
    let names = ["alice", "bob", "carol", "nobody", ""];
    for i in 0..3_000u32 {
        let room = rooms[rng.random_range(0..rooms.len())].to_string();
        let identity = names[rng.random_range(0..names.len())].to_string();
        let big = "m".repeat(rng.random_range(0..70_000));
        let req = match rng.random_range(0..12) {
            0 => AdminRequest::CreateRoom(Box::new(lk::CreateRoomRequest {
                name: room,
                metadata: big,
                max_participants: rng.random_range(0..3),
                ..Default::default()
            })),
            1 => AdminRequest::ListParticipants(lk::ListParticipantsRequest { room }),
            2 => AdminRequest::GetParticipant(lk::RoomParticipantIdentity {
                room,
                identity,
                ..Default::default()
            }),
            3 => AdminRequest::MutePublishedTrack(lk::MuteRoomTrackRequest {
                room,
                identity,
                track_sid: format!("TR_{i}"),
                muted: rng.random(),
            }),
            4 => AdminRequest::UpdateParticipant(lk::UpdateParticipantRequest {
                room,
                identity,
                metadata: big,
                name: "n".repeat(rng.random_range(0..300)),
                attributes: [("k".repeat(rng.random_range(0..300)), "v".into())].into(),
                permission: rng.random::<bool>().then(|| lk::ParticipantPermission {
                    can_publish: rng.random(),
                    can_subscribe: rng.random(),
                    can_publish_sources: vec![rng.random_range(-1..6)],
                    ..Default::default()
                }),
            }),
            5 => AdminRequest::UpdateSubscriptions(lk::UpdateSubscriptionsRequest {
                room,
                identity,
                track_sids: vec![format!("TR_{}", rng.random_range(0..5))],
                subscribe: rng.random(),
                ..Default::default()
            }),
            6 => AdminRequest::SendData(lk::SendDataRequest {
                room,
                data: vec![0; rng.random_range(0..20_000)],
                kind: rng.random_range(-1..3),
                destination_identities: vec![identity],
                ..Default::default()
            }),
            7 => AdminRequest::UpdateRoomMetadata(lk::UpdateRoomMetadataRequest { room, metadata: big }),
            8 => AdminRequest::MoveParticipant {
                req: lk::MoveParticipantRequest {
                    room: room.clone(),
                    identity,
                    destination_room: rooms[rng.random_range(0..rooms.len())].to_string(),
                },
                token: String::new(),
            },
            9 => AdminRequest::ListRooms(lk::ListRoomsRequest { names: vec![room] }),
            10 => AdminRequest::RemoveParticipant(lk::RoomParticipantIdentity {
                room: if room == "r" { room } else { "r".into() },
                identity,
                ..Default::default()
            }),
            _ => AdminRequest::DeleteRoom(lk::DeleteRoomRequest { room: "r".into() }),
        };
        let _ = s.admin(now, req);
        now += Duration::from_millis(3);
        s.handle_timeout(now);
        drain(&mut s);
        if i % 100 == 0 {
            // Refill room "r" so requests keep finding someone.
            let _ = s.join(
                now,
                JoinParams::standard(SessionId(1000 + u64::from(i)), "r", "alice"),
            );
        }
    }
    let carol = s.admin(
        now,
        AdminRequest::GetParticipant(lk::RoomParticipantIdentity {
            room: "elsewhere".into(),
            identity: "carol".into(),
            ..Default::default()
        }),
    );
    assert!(
        carol.is_ok(),
        "a participant of another room was disturbed: {carol:?}"
    );
}
