//! Re-registration after Redis lost its data restores everything a node holds, and never
//! clobbers a newer owner's record or a newer session's identity.

mod common;

use common::*;
use pylon_cluster::{Claim, HeldRoom, IdentityEntry, Lease, NewRoom, RoomSettings};
use pylon_core::ids::{ParticipantIdentity, ParticipantSid, RoomName, RoomSid};

fn new_room(sid: &str) -> NewRoom {
    NewRoom {
        sid: RoomSid::new(sid),
        metadata: "meta".into(),
        settings: RoomSettings {
            empty_timeout_secs: 10,
            departure_timeout_secs: 5,
            max_participants: 9,
        },
    }
}

fn person(identity: &str, sid: &str) -> (ParticipantIdentity, ParticipantSid) {
    (ParticipantIdentity::new(identity), ParticipantSid::new(sid))
}

async fn flushall(redis: &RedisServer) {
    let () = raw_cmd(&mut redis.raw().await, &["FLUSHALL"]).await;
}

#[tokio::test]
async fn reregistration_after_flushall_restores_everything() {
    let redis = RedisServer::start();
    let a = directory(&redis.target(), "node-a");
    let b = directory(&redis.target(), "node-b");
    a.renew(&info(7001)).await.unwrap();
    b.renew(&info(7002)).await.unwrap();
    let (town, lobby) = (RoomName::new("town"), RoomName::new("lobby"));
    let town_record = a
        .claim_room(&town, &new_room("RM_towntowntown"))
        .await
        .unwrap()
        .into_record();
    a.update_metadata(&town, "updated").await.unwrap();
    let town_record = pylon_cluster::RoomRecord {
        metadata: "updated".into(),
        ..town_record
    };
    b.claim_room(&town, &new_room("RM_xxxxxxxxxxxx")).await.unwrap();
    let lobby_record = b
        .claim_room(&lobby, &new_room("RM_lobbylobbylo"))
        .await
        .unwrap()
        .into_record();
    let alice = person("alice", "PA_alicealiceal");
    let bob = person("bob", "PA_bobbobbobbob");
    a.set_identity(&town, &alice.0, &alice.1).await.unwrap();
    a.reserve_slot(&town, 9).await.unwrap();
    b.set_identity(&town, &bob.0, &bob.1).await.unwrap();
    b.reserve_slot(&town, 9).await.unwrap();

    let a_holds = [HeldRoom {
        name: town.clone(),
        record: Some(town_record.clone()),
        participants: vec![alice.clone()],
    }];
    let b_holds = [
        HeldRoom {
            name: town.clone(),
            record: Some(town_record.clone()),
            participants: vec![bob.clone()],
        },
        HeldRoom {
            name: lobby.clone(),
            record: Some(lobby_record.clone()),
            participants: vec![],
        },
    ];

    flushall(&redis).await;
    assert!(a.nodes().await.unwrap().is_empty());
    // Each node notices on its next renewal and re-registers (twice: it is idempotent).
    for _ in 0..2 {
        assert_eq!(a.renew(&info(7001)).await.unwrap(), Lease::Acquired);
        assert!(a
            .reregister(&info(7001), &a_holds)
            .await
            .unwrap()
            .superseded
            .is_empty());
        assert_eq!(b.renew(&info(7002)).await.unwrap(), Lease::Acquired);
        assert!(b
            .reregister(&info(7002), &b_holds)
            .await
            .unwrap()
            .superseded
            .is_empty());
        assert_eq!(a.renew(&info(7001)).await.unwrap(), Lease::Held);
        flushall_if_first_round(&redis).await;
    }

    assert_eq!(a.nodes().await.unwrap().len(), 2);
    assert_eq!(a.room(&town).await.unwrap(), Some(town_record.clone()));
    assert_eq!(a.room(&lobby).await.unwrap(), Some(lobby_record.clone()));
    assert_eq!(a.rooms().await.unwrap().len(), 2);
    assert_eq!(
        a.instances(&town).await.unwrap(),
        [node("node-a"), node("node-b")]
    );
    assert_eq!(a.instances(&lobby).await.unwrap(), [node("node-b")]);
    assert_eq!(
        b.identity(&town, &alice.0).await.unwrap(),
        Some(IdentityEntry {
            node: node("node-a"),
            sid: alice.1.clone()
        })
    );
    assert_eq!(
        a.identity(&town, &bob.0).await.unwrap(),
        Some(IdentityEntry {
            node: node("node-b"),
            sid: bob.1
        })
    );
    assert_eq!(a.participant_count(&town).await.unwrap(), 2);
    // A claim after re-registration joins the restored room, and new epochs stay above it.
    assert_eq!(
        b.claim_room(&town, &new_room("RM_yyyyyyyyyyyy")).await.unwrap(),
        Claim::Joined(town_record.clone())
    );
    kill_lease(&mut redis.raw().await, "node-a").await;
    let taken = b
        .claim_room(&town, &new_room("RM_yyyyyyyyyyyy"))
        .await
        .unwrap()
        .into_record();
    assert!(taken.epoch > town_record.epoch && taken.epoch > lobby_record.epoch);

    // Re-registering without a room removes this node from it.
    a.reregister(&info(7001), &[]).await.unwrap();
    assert_eq!(b.instances(&town).await.unwrap(), [node("node-b")]);
    assert_eq!(b.identity(&town, &alice.0).await.unwrap(), None);
    assert_eq!(b.participant_count(&town).await.unwrap(), 1);
}

/// The loop above re-registers on an empty Redis twice; empty it again between the rounds.
async fn flushall_if_first_round(redis: &RedisServer) {
    let mut raw = redis.raw().await;
    let marker: Option<String> = raw_cmd(&mut raw, &["GET", "test:round"]).await;
    if marker.is_none() {
        flushall(redis).await;
        let () = raw_cmd(&mut raw, &["SET", "test:round", "2"]).await;
    }
}

#[tokio::test]
async fn reregistration_never_clobbers_a_newer_owner() {
    let redis = RedisServer::start();
    let a = directory(&redis.target(), "node-a");
    let b = directory(&redis.target(), "node-b");
    a.renew(&info(7001)).await.unwrap();
    b.renew(&info(7002)).await.unwrap();
    let room = RoomName::new("contested");
    // a created the room; a stalled, b took it over (a newer epoch); a's view is stale.
    let stale = a
        .claim_room(&room, &new_room("RM_aaaaaaaaaaaa"))
        .await
        .unwrap()
        .into_record();
    kill_lease(&mut redis.raw().await, "node-a").await;
    let newer = b
        .claim_room(&room, &new_room("RM_bbbbbbbbbbbb"))
        .await
        .unwrap()
        .into_record();
    assert!(newer.epoch > stale.epoch);
    let carol = person("carol", "PA_carolcarolca");
    let carol_on_b = person("carol", "PA_carol2carol2");
    b.set_identity(&room, &carol_on_b.0, &carol_on_b.1).await.unwrap();

    let a_holds = [HeldRoom {
        name: room.clone(),
        record: Some(stale.clone()),
        participants: vec![carol.clone()],
    }];
    let b_holds = [HeldRoom {
        name: room.clone(),
        record: Some(newer.clone()),
        participants: vec![carol_on_b.clone()],
    }];

    // Order 1: the newer owner re-registers first; the stale one's record is refused.
    flushall(&redis).await;
    b.reregister(&info(7002), &b_holds).await.unwrap();
    a.renew(&info(7001)).await.unwrap();
    let outcome = a.reregister(&info(7001), &a_holds).await.unwrap();
    assert_eq!(
        outcome.superseded,
        std::slice::from_ref(&newer),
        "a learns it is no longer home"
    );
    assert_eq!(a.room(&room).await.unwrap(), Some(newer.clone()));
    assert_eq!(
        a.identity(&room, &carol.0).await.unwrap(),
        Some(IdentityEntry {
            node: node("node-b"),
            sid: carol_on_b.1.clone()
        }),
        "the newer session on a live node keeps the identity"
    );
    assert_eq!(
        a.instances(&room).await.unwrap(),
        [node("node-a"), node("node-b")]
    );

    // Order 2: the stale one first; the newer owner's record then replaces it.
    flushall(&redis).await;
    a.reregister(&info(7001), &a_holds).await.unwrap();
    assert_eq!(a.room(&room).await.unwrap(), Some(stale.clone()));
    assert!(b
        .reregister(&info(7002), &b_holds)
        .await
        .unwrap()
        .superseded
        .is_empty());
    assert_eq!(a.room(&room).await.unwrap(), Some(newer.clone()));
    // Both orders end the same.
    assert_eq!(
        a.reregister(&info(7001), &a_holds).await.unwrap().superseded,
        [newer]
    );
}
