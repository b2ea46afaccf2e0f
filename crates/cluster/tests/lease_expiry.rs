//! A node that stops renewing its lease disappears from the region within 5 s, and what it
//! held stops counting and is reaped.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pylon_cluster::{Lease, NewRoom, RoomSettings, LEASE_TTL, RENEW_INTERVAL};
use pylon_core::ids::{ParticipantIdentity, ParticipantSid, RoomName, RoomSid};

#[tokio::test]
async fn a_node_that_stops_renewing_disappears_within_five_seconds() {
    let redis = RedisServer::start();
    let a = directory(&redis.target(), "node-a");
    let b = directory(&redis.target(), "node-b");
    assert_eq!(
        a.renew(&info(7001)).await.unwrap(),
        Lease::Acquired,
        "first registration"
    );
    assert_eq!(a.renew(&info(7001)).await.unwrap(), Lease::Held);
    b.renew(&info(7002)).await.unwrap();

    // b hosts someone in a room that a is home of, and a room of its own.
    let room = RoomName::new("town");
    let new = NewRoom {
        sid: RoomSid::new("RM_aaaaaaaaaaaa"),
        metadata: String::new(),
        settings: RoomSettings::default(),
    };
    a.claim_room(&room, &new).await.unwrap();
    b.claim_room(&room, &new).await.unwrap();
    let own = RoomName::new("b-only");
    b.claim_room(
        &own,
        &NewRoom {
            sid: RoomSid::new("RM_bbbbbbbbbbbb"),
            ..new.clone()
        },
    )
    .await
    .unwrap();
    let identity = ParticipantIdentity::new("bob");
    b.set_identity(&room, &identity, &ParticipantSid::new("PA_bbbbbbbbbbbb"))
        .await
        .unwrap();
    b.reserve_slot(&room, 0).await.unwrap();

    let listed = a.nodes().await.unwrap();
    assert_eq!(
        listed.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        ["node-a", "node-b"]
    );
    assert_eq!(listed[1].info, info(7002));

    // b stops renewing at `stopped`; a keeps renewing on the real interval.
    b.renew(&info(7002)).await.unwrap();
    let stopped = Instant::now();
    let gone_after = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stopped.elapsed() >= RENEW_INTERVAL {
            a.renew(&info(7001)).await.unwrap();
        }
        let ids: Vec<_> = a.nodes().await.unwrap().into_iter().map(|n| n.id).collect();
        if !ids.contains(&node("node-b")) {
            assert!(ids.contains(&node("node-a")), "the renewing node stays");
            break stopped.elapsed();
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "node-b never disappeared"
        );
    };
    assert!(
        gone_after <= Duration::from_secs(5),
        "node-b disappeared after {gone_after:?}"
    );
    assert!(
        gone_after >= LEASE_TTL - Duration::from_millis(500),
        "expired early: {gone_after:?}"
    );

    // What b held no longer counts, even before reaping.
    assert_eq!(a.instances(&room).await.unwrap(), [node("node-a")]);
    assert_eq!(a.identity(&room, &identity).await.unwrap(), None);
    assert_eq!(a.participant_count(&room).await.unwrap(), 0);

    // Reaping deletes it: b's own room (home dead, no live instance) goes entirely.
    assert_eq!(a.reap_dead_nodes().await.unwrap(), [node("node-b")]);
    assert!(a.room(&own).await.unwrap().is_none());
    assert!(a.room(&room).await.unwrap().is_some(), "a's room stays");
    let mut raw = redis.raw().await;
    let ids: Vec<String> = raw_cmd(&mut raw, &["HKEYS", &key("identities:", "town")]).await;
    assert!(ids.is_empty(), "{ids:?}");
    let members: Vec<String> = raw_cmd(&mut raw, &["SMEMBERS", &key("nodes", "")]).await;
    assert_eq!(members, ["node-a"]);

    // b comes back: its lease is new, so it must re-register.
    assert_eq!(b.renew(&info(7002)).await.unwrap(), Lease::Acquired);
}

#[tokio::test]
async fn a_leaving_node_disappears_at_once_and_its_rooms_pass_to_others() {
    let redis = RedisServer::start();
    let a = directory(&redis.target(), "node-a");
    let b = directory(&redis.target(), "node-b");
    a.renew(&info(7001)).await.unwrap();
    b.renew(&info(7002)).await.unwrap();
    let room = RoomName::new("shared");
    let new = NewRoom {
        sid: RoomSid::new("RM_aaaaaaaaaaaa"),
        metadata: "m".into(),
        settings: RoomSettings::default(),
    };
    let created = a.claim_room(&room, &new).await.unwrap().into_record();
    b.claim_room(&room, &new).await.unwrap();

    a.leave().await.unwrap();
    assert_eq!(b.nodes().await.unwrap().len(), 1);
    assert_eq!(b.instances(&room).await.unwrap(), [node("node-b")]);
    let kept = b
        .room(&room)
        .await
        .unwrap()
        .expect("b still has an instance, so the room stays");
    assert_eq!(kept.home, node("node-a"));
    let pylon_cluster::Claim::TookOver(taken) = b.claim_room(&room, &new).await.unwrap() else {
        panic!("b should take the room over");
    };
    assert_eq!(
        (taken.home.as_str(), &taken.sid, &taken.metadata),
        ("node-b", &created.sid, &created.metadata)
    );
    assert!(taken.epoch > created.epoch);
}
