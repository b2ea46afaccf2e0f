//! Which nodes hold an instance of a room: add, remove, list; dead nodes are never listed.

mod common;

use common::*;
use pylon_core::ids::RoomName;

#[tokio::test]
async fn instances_are_added_removed_and_listed_for_live_nodes_only() {
    let redis = RedisServer::start();
    let nodes: Vec<_> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| directory(&redis.target(), n))
        .collect();
    for (i, d) in nodes.iter().enumerate() {
        d.renew(&info(7001 + i as u16)).await.unwrap();
    }
    let room = RoomName::new("spread");
    let other = RoomName::new("other");
    assert!(nodes[0].instances(&room).await.unwrap().is_empty());
    for d in &nodes {
        d.add_instance(&room).await.unwrap();
        d.add_instance(&room).await.unwrap(); // idempotent
    }
    nodes[2].add_instance(&other).await.unwrap();
    assert_eq!(
        nodes[0].instances(&room).await.unwrap(),
        [node("node-a"), node("node-b"), node("node-c")]
    );

    nodes[1].remove_instance(&room).await.unwrap();
    assert_eq!(
        nodes[0].instances(&room).await.unwrap(),
        [node("node-a"), node("node-c")]
    );

    // node-c dies: not listed anywhere, before and after reaping.
    let mut raw = redis.raw().await;
    kill_lease(&mut raw, "node-c").await;
    assert_eq!(nodes[0].instances(&room).await.unwrap(), [node("node-a")]);
    assert!(nodes[0].instances(&other).await.unwrap().is_empty());
    let members: Vec<String> = raw_cmd(&mut raw, &["SMEMBERS", &key("instances:", "spread")]).await;
    assert_eq!(members.len(), 2, "still stored until reaped: {members:?}");
    assert_eq!(nodes[0].reap_dead_nodes().await.unwrap(), [node("node-c")]);
    let members: Vec<String> = raw_cmd(&mut raw, &["SMEMBERS", &key("instances:", "spread")]).await;
    assert_eq!(members, ["node-a"]);
    let held: i64 = raw_cmd(&mut raw, &["EXISTS", &key("held:", "node-c")]).await;
    assert_eq!(held, 0);
    assert!(
        nodes[0].reap_dead_nodes().await.unwrap().is_empty(),
        "reaping is idempotent"
    );
}
