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
