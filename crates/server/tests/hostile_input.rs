//! Hostile input never panics the shard and never disturbs another participant.
//!
//! Seeded random datagrams, signal frames (through the signalling edge's parser, as a
//! WebSocket frame would go) and Room API requests are thrown at a shard with joined
//! participants; afterwards the untouched participant is still there and still answered.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use livekit_protocol as lk;
use prost::Message;
use pylon_core::admin::{AdminRequest, DataSend, ParticipantUpdate, PermissionUpdate, RoomOptions};
use pylon_core::data::{DataKind, Destinations};
use pylon_core::ids::{ParticipantIdentity, RoomName, SessionId, TrackSid};
use pylon_core::{JoinParams, Output, Shard, ShardConfig};
use rand::{Rng, RngCore, SeedableRng};

/// Hand a decoded request to the shard as the session pump does.
fn signal(shard: &mut Shard, now: Instant, session: SessionId, req: lk::SignalRequest) {
    match pylon_server::wire::signal_command(req) {
        Ok(cmd) => shard.signal(now, session, cmd),
        Err(e) => shard.protocol_violation(now, session, &e.to_string()),
    }
}

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
        let _ = s.receive(now, src, dst, &buf);
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
    signal(&mut s, now, SessionId(1), req);
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
    signal(&mut s, now, SessionId(2), ping);
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
                signal(&mut s, now, SessionId(session), req);
            }
        }
        now += Duration::from_millis(1);
        s.handle_timeout(now);
        drain(&mut s);
    }
    let ping = lk::SignalRequest {
        message: Some(lk::signal_request::Message::Ping(1)),
    };
    signal(&mut s, now, victim, ping);
    assert!(drain(&mut s)
        .iter()
        .any(|o| matches!(o, Output::Signal(v, _) if *v == victim)));
}

/// Room API requests with arbitrary (authorized) contents: names from a small pool so they
/// often hit, sizes around the limits. The shard never panics, and nothing addressed to room
/// "r" touches the participant in room "elsewhere".
#[test]
fn random_admin_requests_never_panic_or_touch_other_rooms() {
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
        let room = RoomName::new(rooms[rng.random_range(0..rooms.len())]);
        let identity = ParticipantIdentity::new(names[rng.random_range(0..names.len())]);
        let big = "m".repeat(rng.random_range(0..70_000));
        let req = match rng.random_range(0..12) {
            0 => AdminRequest::CreateRoom {
                name: room,
                options: RoomOptions {
                    metadata: big,
                    max_participants: Some(rng.random_range(0..3)),
                    ..Default::default()
                },
                record: None,
            },
            1 => AdminRequest::ListParticipants { room },
            2 => AdminRequest::GetParticipant { room, identity },
            3 => AdminRequest::MutePublishedTrack {
                room,
                identity,
                track: TrackSid::new(format!("TR_{i}")),
                muted: rng.random(),
            },
            4 => AdminRequest::UpdateParticipant {
                room,
                identity,
                update: Box::new(ParticipantUpdate {
                    metadata: Some(big),
                    name: Some("n".repeat(rng.random_range(0..300))),
                    attributes: [("k".repeat(rng.random_range(0..300)), "v".into())].into(),
                    permission: rng.random::<bool>().then(|| PermissionUpdate {
                        can_publish: rng.random(),
                        can_subscribe: rng.random(),
                        can_publish_sources: vec![lk::TrackSource::Camera],
                        ..Default::default()
                    }),
                }),
            },
            5 => AdminRequest::UpdateSubscriptions {
                room,
                identity,
                tracks: vec![TrackSid::new(format!("TR_{}", rng.random_range(0..5)))],
                subscribe: rng.random(),
            },
            6 => AdminRequest::SendData {
                room,
                data: Box::new(DataSend {
                    kind: if rng.random() {
                        DataKind::Lossy
                    } else {
                        DataKind::Reliable
                    },
                    payload: vec![0; rng.random_range(0..20_000)],
                    topic: None,
                    to: Destinations {
                        identities: vec![identity.as_str().to_string()],
                        sids: vec![],
                    },
                    nonce: vec![],
                }),
            },
            7 => AdminRequest::UpdateRoomMetadata { room, metadata: big },
            8 => AdminRequest::MoveParticipant {
                room: room.clone(),
                identity,
                destination: RoomName::new(rooms[rng.random_range(0..rooms.len())]),
                token: String::new(),
                placement: Default::default(),
            },
            9 => AdminRequest::ListRooms { names: vec![room] },
            10 => AdminRequest::RemoveParticipant {
                room: if room.as_str() == "r" {
                    room
                } else {
                    RoomName::new("r")
                },
                identity,
            },
            _ => AdminRequest::DeleteRoom {
                room: RoomName::new("r"),
            },
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
        AdminRequest::GetParticipant {
            room: RoomName::new("elsewhere"),
            identity: ParticipantIdentity::new("carol"),
        },
    );
    assert!(
        carol.is_ok(),
        "a participant of another room was disturbed: {carol:?}"
    );
}
