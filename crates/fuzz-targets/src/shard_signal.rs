//! Structured fuzzing of the signalling state machine: a joined participant sends arbitrary
//! decoded requests; a bystander must stay in the room.
use std::time::{Duration, Instant};

use prost::Message;
use pylon_core::ids::SessionId;
use pylon_core::{JoinParams, Shard, ShardConfig};

fn params(session: u64, identity: &str) -> JoinParams {
    JoinParams::standard(SessionId(session), "r", identity)
}

pub fn run(data: &[u8]) {
    let mut now = Instant::now();
    let mut shard = Shard::new(ShardConfig::new("127.0.0.1:7882".parse().unwrap()), now, 0, 1);
    shard.join(now, params(1, "bystander")).unwrap();
    shard.join(now, params(2, "fuzzer")).unwrap();
    for chunk in data.split(|b| *b == 0xff) {
        if let Ok(req) = livekit_protocol::SignalRequest::decode(chunk) {
            // Through the signalling edge's parser, as a WebSocket frame would go.
            match pylon_server::wire::signal_command(req) {
                Ok(cmd) => shard.signal(now, SessionId(2), cmd),
                Err(e) => shard.protocol_violation(now, SessionId(2), &e.to_string()),
            }
        }
        now += Duration::from_millis(10);
        shard.handle_timeout(now);
        while shard.poll_output().is_some() {}
    }
    assert!(shard.participant_count() >= 1);
}
