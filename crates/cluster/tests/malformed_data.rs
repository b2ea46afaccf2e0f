//! Hostile data: garbage under the directory's keys gives a classified `Malformed` error
//! naming the key (or, in listings, leaves the bad entry out) — never a panic.

mod common;

use common::*;
use pylon_cluster::{DirectoryError, HeldRoom, NewRoom, RoomSettings};
use pylon_core::ids::{ParticipantIdentity, ParticipantSid, RoomName, RoomSid};

const GARBAGE: &[u8] = b"\xff\xfe\x00garbage\x80";

async fn set_raw(conn: &mut redis::aio::MultiplexedConnection, key: &str, value: &[u8]) {
    let () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(conn)
        .await
        .unwrap();
}

async fn hset_raw(conn: &mut redis::aio::MultiplexedConnection, key: &str, field: &str, value: &[u8]) {
    let _: i64 = redis::cmd("HSET")
        .arg(key)
        .arg(field)
        .arg(value)
        .query_async(conn)
        .await
        .unwrap();
}

fn assert_malformed<T: std::fmt::Debug>(r: Result<T, DirectoryError>, expected_key: &str) {
    match r {
        Err(DirectoryError::Malformed { key, reason }) => {
            assert_eq!(key, expected_key, "reason: {reason}");
            assert!(!reason.is_empty());
        }
        other => panic!("expected Malformed at {expected_key}, got {other:?}"),
    }
}

fn new_room() -> NewRoom {
    NewRoom {
        sid: RoomSid::new("RM_aaaaaaaaaaaa"),
        metadata: String::new(),
        settings: RoomSettings::default(),
    }
}

#[tokio::test]
async fn garbage_under_room_keys_is_a_classified_error() {
    let redis = RedisServer::start();
    let a = directory(&redis.target(), "node-a");
    a.renew(&info(7001)).await.unwrap();
    let mut raw = redis.raw().await;
    let room = RoomName::new("bad");
    let room_key = key("room:", "bad");

    // A string where a hash belongs.
    set_raw(&mut raw, &room_key, GARBAGE).await;
    assert_malformed(a.room(&room).await, &room_key);
    assert_malformed(a.claim_room(&room, &new_room()).await, &room_key);
    assert_malformed(
        a.delete_room(&room, Some(pylon_cluster::Epoch(1))).await,
        &room_key,
    );

    // A hash with unreadable fields.
    let _: i64 = raw_cmd(&mut raw, &["DEL", &room_key]).await;
    for (field, value) in [
        ("sid", &b"RM_aaaaaaaaaaaa"[..]),
        ("created_ms", b"yesterday"),
        ("home", GARBAGE),
    ] {
        hset_raw(&mut raw, &room_key, field, value).await;
    }
    assert_malformed(a.room(&room).await, &room_key);
    assert_malformed(a.claim_room(&room, &new_room()).await, &room_key);
    assert_malformed(a.update_metadata(&room, "m").await, &room_key);
    // The listing leaves it out; an unfenced delete (an operator's cleanup) removes it.
    let _: i64 = raw_cmd(&mut raw, &["SADD", &key("rooms", ""), "bad"]).await;
    let good = RoomName::new("good");
    a.claim_room(&good, &new_room()).await.unwrap();
    assert_eq!(
        a.rooms()
            .await
            .unwrap()
            .iter()
            .map(|r| r.name.clone())
            .collect::<Vec<_>>(),
        [good]
    );
    assert!(a.delete_room(&room, None).await.unwrap());
    assert!(matches!(
        a.claim_room(&room, &new_room()).await.unwrap(),
        pylon_cluster::Claim::Created(_)
    ));

    // Instances: a string where a set belongs.
    let instances_key = key("instances:", "other");
    set_raw(&mut raw, &instances_key, GARBAGE).await;
    assert_malformed(a.instances(&RoomName::new("other")).await, &instances_key);
}

#[tokio::test]
async fn garbage_identities_and_counts_are_classified_errors() {
    let redis = RedisServer::start();
    let a = directory(&redis.target(), "node-a");
    a.renew(&info(7001)).await.unwrap();
    let mut raw = redis.raw().await;
    let room = RoomName::new("r");
    let ids_key = key("identities:", "r");
    let who = ParticipantIdentity::new("mallory");

    hset_raw(&mut raw, &ids_key, "mallory", GARBAGE).await;
    assert_malformed(a.identity(&room, &who).await, &ids_key);
    hset_raw(&mut raw, &ids_key, "mallory", b"node-a not-a-sid").await;
    assert_malformed(a.identity(&room, &who).await, &ids_key);
    // Setting replaces an unreadable entry (there is no older session to name).
    assert_eq!(
        a.set_identity(&room, &who, &ParticipantSid::new("PA_xxxxxxxxxxxx"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        a.identity(&room, &who).await.unwrap().unwrap().sid.as_str(),
        "PA_xxxxxxxxxxxx"
    );
    set_raw(&mut raw, &ids_key, GARBAGE).await;
    assert_malformed(a.identity(&room, &who).await, &ids_key);

    let slots_key = key("slots:", "r");
    hset_raw(&mut raw, &slots_key, "node-a", b"lots").await;
    assert_malformed(a.reserve_slot(&room, 10).await, &slots_key);
    assert_malformed(a.release_slot(&room).await, &slots_key);
    assert_malformed(a.participant_count(&room).await, &slots_key);
    hset_raw(&mut raw, &slots_key, "node-a", b"1.5").await;
    assert_malformed(a.reserve_slot(&room, 10).await, &slots_key);

    // Re-registration rebuilds what it needs, whatever was there.
    let held = HeldRoom {
        name: room.clone(),
        record: None,
        participants: vec![(who.clone(), ParticipantSid::new("PA_mmmmmmmmmmmm"))],
    };
    a.reregister(&info(7001), &[held]).await.unwrap();
    assert_eq!(
        a.identity(&room, &who).await.unwrap().unwrap().sid.as_str(),
        "PA_mmmmmmmmmmmm"
    );
    assert_eq!(a.participant_count(&room).await.unwrap(), 1);
}

#[tokio::test]
async fn garbage_leases_are_left_out_of_the_node_list() {
    let redis = RedisServer::start();
    let a = directory(&redis.target(), "node-a");
    a.renew(&info(7001)).await.unwrap();
    let mut raw = redis.raw().await;
    for (id, value) in [
        ("bytes", GARBAGE),
        ("json", b"{\"node\":\"json\"}"),
        ("other", b"{}"),
    ] {
        let _: i64 = raw_cmd(&mut raw, &["SADD", &key("nodes", ""), id]).await;
        set_raw(&mut raw, &key("node:", id), value).await;
    }
    // A lease key of the wrong type, and an id that is not a node id.
    let _: i64 = raw_cmd(&mut raw, &["SADD", &key("nodes", ""), "wrongtype", "bad:id"]).await;
    let _: i64 = raw_cmd(&mut raw, &["HSET", &key("node:", "wrongtype"), "f", "v"]).await;
    set_raw(&mut raw, &key("node:", "bad:id"), b"{}").await;
    let nodes = a.nodes().await.unwrap();
    assert_eq!(
        nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["node-a"]
    );

    // A lease record that claims to be another node's is refused too.
    let forged = format!("{{\"node\":\"node-a\",\"region\":\"{REGION}\",\"relay_addr\":\"1.2.3.4:5\",\"participants\":0,\"started_at_ms\":0}}");
    let _: i64 = raw_cmd(&mut raw, &["SADD", &key("nodes", ""), "forger"]).await;
    set_raw(&mut raw, &key("node:", "forger"), forged.as_bytes()).await;
    assert_eq!(a.nodes().await.unwrap().len(), 1);
    // Garbage in the epoch counter is overwritten by the next claim.
    set_raw(&mut raw, &key("epoch", ""), GARBAGE).await;
    let r = a
        .claim_room(&RoomName::new("fresh"), &new_room())
        .await
        .unwrap()
        .into_record();
    assert!(
        r.epoch.0 > 1_600_000_000_000_000,
        "epoch from Redis's clock: {}",
        r.epoch
    );
    // Reaping copes with the garbage.
    a.reap_dead_nodes().await.unwrap();
}
