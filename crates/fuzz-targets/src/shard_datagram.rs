//! Arbitrary datagrams into a shard with a joined participant.
use std::time::Instant;

use pylon_core::ids::SessionId;
use pylon_core::{JoinParams, Shard, ShardConfig};

pub fn run(data: &[u8]) {
    let now = Instant::now();
    let mut shard = Shard::new(ShardConfig::new("127.0.0.1:7882".parse().unwrap()), now, 0, 1);
    let p = JoinParams::standard(SessionId(1), "r", "a");
    shard.join(now, p).unwrap();
    let _ = shard.receive(
        now,
        "127.0.0.1:5000".parse().unwrap(),
        "127.0.0.1:7882".parse().unwrap(),
        data,
    );
    while shard.poll_output().is_some() {}
    assert_eq!(shard.participant_count(), 1);
}
