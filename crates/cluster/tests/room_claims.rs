//! Claiming a room is atomic: of nodes racing to open one room, exactly one creates it and
//! the others get the winner's record. Records can be updated and deleted (fenced by epoch). A
//! home that died, or restarted and no longer holds the room, is taken over.

mod common;

use common::*;
use pylon_cluster::{Claim, Directory, Epoch, NewRoom, RoomSettings};
use pylon_core::ids::{RoomName, RoomSid};

fn proposal(sid: &str) -> NewRoom {
    NewRoom {
        sid: RoomSid::new(sid),
        metadata: format!("from {sid}"),
        settings: RoomSettings {
            empty_timeout_secs: 300,
            departure_timeout_secs: 20,
            max_participants: 50,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_have_exactly_one_winner() {
    let redis = RedisServer::start();
    let a = directory(&redis.target(), "node-a");
    let b = directory(&redis.target(), "node-b");
    a.renew(&info(7001)).await.unwrap();
    b.renew(&info(7002)).await.unwrap();

    let (mut wins_a, mut wins_b) = (0, 0);
    for i in 0..50 {
        let room = RoomName::new(format!("race-{i}"));
        let (pa, pb) = (proposal("RM_aaaaaaaaaaaa"), proposal("RM_bbbbbbbbbbbb"));
        let (ca, cb) = tokio::join!(a.claim_room(&room, &pa), b.claim_room(&room, &pb));
        let (ca, cb) = (ca.unwrap(), cb.unwrap());
        let (winner, loser) = match (&ca, &cb) {
            (Claim::Created(_), Claim::Joined(_)) => {
                wins_a += 1;
                (ca.record(), cb.record())
            }
            (Claim::Joined(_), Claim::Created(_)) => {
                wins_b += 1;
                (cb.record(), ca.record())
            }
            other => panic!("not exactly one winner: {other:?}"),
        };
        assert_eq!(winner, loser, "the loser sees the winner's record");
        assert_eq!(a.room(&room).await.unwrap().as_ref(), Some(winner));
        let expected_sid = if winner.home.as_str() == "node-a" {
            "RM_aaaaaaaaaaaa"
        } else {
            "RM_bbbbbbbbbbbb"
        };
        assert_eq!(winner.sid.as_str(), expected_sid);
        assert_eq!(
            a.instances(&room).await.unwrap(),
            [node("node-a"), node("node-b")]
        );
    }
    assert_eq!(wins_a + wins_b, 50);
}

#[tokio::test]
async fn a_record_keeps_what_its_creator_gave() {
    let redis = RedisServer::start();
    let a = directory(&redis.target(), "node-a");
    a.renew(&info(7001)).await.unwrap();
    let room = RoomName::new("name with spaces: and colons");
    let Claim::Created(r) = a.claim_room(&room, &proposal("RM_cccccccccccc")).await.unwrap() else {
        panic!("expected creation");
    };
    assert_eq!(
        (r.name.clone(), r.sid.as_str(), r.home.as_str()),
        (room.clone(), "RM_cccccccccccc", "node-a")
    );
    assert_eq!(r.settings, proposal("x").settings);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        r.created_at_ms.abs_diff(now_ms) < 60_000,
        "created {} vs now {now_ms}",
        r.created_at_ms
    );
    // Claiming again as home is a join, not a new epoch.
    assert_eq!(
        a.claim_room(&room, &proposal("RM_dddddddddddd")).await.unwrap(),
        Claim::Joined(r.clone())
    );
    assert_eq!(a.rooms().await.unwrap(), [r]);
}

#[tokio::test]
async fn metadata_updates_and_fenced_deletes() {
    let redis = RedisServer::start();
    let a = directory(&redis.target(), "node-a");
    let b: Directory = directory(&redis.target(), "node-b");
    a.renew(&info(7001)).await.unwrap();
    b.renew(&info(7002)).await.unwrap();
    let room = RoomName::new("meeting");
    let created = a
        .claim_room(&room, &proposal("RM_aaaaaaaaaaaa"))
        .await
        .unwrap()
        .into_record();
    b.claim_room(&room, &proposal("RM_bbbbbbbbbbbb")).await.unwrap();

    let updated = b
        .update_metadata(&room, "{\"topic\":\"ü\"}")
        .await
        .unwrap()
        .expect("room exists");
    assert_eq!(updated.metadata, "{\"topic\":\"ü\"}");
    assert_eq!(updated.epoch, created.epoch, "metadata does not change the owner");
    assert_eq!(
        b.update_metadata(&RoomName::new("nope"), "x").await.unwrap(),
        None
    );

    // A stale home (wrong epoch) cannot delete; the current one can, and everything goes.
    assert!(!a
        .delete_room(&room, Some(Epoch(created.epoch.0 - 1)))
        .await
        .unwrap());
    assert!(a.room(&room).await.unwrap().is_some());
    assert!(a.delete_room(&room, Some(created.epoch)).await.unwrap());
    assert!(a.room(&room).await.unwrap().is_none());
    assert!(a.instances(&room).await.unwrap().is_empty());
    assert!(a.rooms().await.unwrap().is_empty());
    let mut raw = redis.raw().await;
    for kind in ["room:", "instances:", "identities:", "slots:"] {
        let n: i64 = raw_cmd(&mut raw, &["EXISTS", &key(kind, "meeting")]).await;
        assert_eq!(n, 0, "{kind} left behind");
    }
    for n in ["node-a", "node-b"] {
        let held: Vec<String> = raw_cmd(&mut raw, &["SMEMBERS", &key("held:", n)]).await;
        assert!(held.is_empty(), "{n} still holds {held:?}");
    }
    // Unfenced delete (Room API) of a room that is gone: nothing to delete.
    assert!(!b.delete_room(&room, None).await.unwrap());
}

#[tokio::test]
async fn a_room_whose_home_died_is_taken_over_with_a_higher_epoch() {
    let redis = RedisServer::start();
    let a = directory(&redis.target(), "node-a");
    let b = directory(&redis.target(), "node-b");
    a.renew(&info(7001)).await.unwrap();
    b.renew(&info(7002)).await.unwrap();
    let room = RoomName::new("orphan");
    let first = a
        .claim_room(&room, &proposal("RM_aaaaaaaaaaaa"))
        .await
        .unwrap()
        .into_record();
    assert!(matches!(
        b.claim_room(&room, &proposal("RM_bbbbbbbbbbbb")).await.unwrap(),
        Claim::Joined(_)
    ));

    kill_lease(&mut redis.raw().await, "node-a").await;
    let Claim::TookOver(taken) = b.claim_room(&room, &proposal("RM_bbbbbbbbbbbb")).await.unwrap() else {
        panic!("expected a take-over");
    };
    assert_eq!(taken.sid, first.sid, "the room keeps its sid");
    assert_eq!(taken.home, node("node-b"));
    assert!(taken.epoch > first.epoch);
    // The old home's fenced delete no longer applies.
    assert!(!a.delete_room(&room, Some(first.epoch)).await.unwrap());
    assert!(b.room(&room).await.unwrap().is_some());
}

#[tokio::test]
async fn a_home_restarted_under_its_name_gives_up_the_rooms_its_former_process_held() {
    let redis = RedisServer::start();
    let a = directory(&redis.target(), "node-a");
    let b = directory(&redis.target(), "node-b");
    a.renew(&info(7001)).await.unwrap();
    b.renew(&info(7002)).await.unwrap();
    let (shared, alone) = (RoomName::new("shared"), RoomName::new("alone"));
    let first = a
        .claim_room(&shared, &proposal("RM_aaaaaaaaaaaa"))
        .await
        .unwrap()
        .into_record();
    a.claim_room(&alone, &proposal("RM_aaaaaaaaaaab")).await.unwrap();
    assert!(matches!(
        b.claim_room(&shared, &proposal("RM_bbbbbbbbbbbb")).await.unwrap(),
        Claim::Joined(_)
    ));

    // node-a's process restarts before its lease lapses: the new one registers holding
    // nothing (what the server does on its first round).
    let a = directory(&redis.target(), "node-a");
    a.reregister(&info(7001), &[]).await.unwrap();
    assert!(
        a.room(&alone).await.unwrap().is_none(),
        "a room nobody holds any more is gone"
    );
    let kept = b
        .room(&shared)
        .await
        .unwrap()
        .expect("a room node-b holds is kept");
    assert_eq!((kept.sid, kept.home), (first.sid.clone(), node("node-a")));

    // The survivor's next claim (its take-over after the link dropped) makes it home, although
    // node-a is alive: node-a no longer holds the room.
    let Claim::TookOver(taken) = b.claim_room(&shared, &proposal("RM_bbbbbbbbbbbb")).await.unwrap() else {
        panic!("expected a take-over from the restarted home");
    };
    assert_eq!((taken.sid, taken.home.clone()), (first.sid, node("node-b")));
    assert!(taken.epoch > first.epoch);
    // The restarted node joining the room again finds node-b its home.
    let Claim::Joined(joined) = a.claim_room(&shared, &proposal("RM_aaaaaaaaaaac")).await.unwrap() else {
        panic!("expected node-a to join node-b's room");
    };
    assert_eq!(joined.home, node("node-b"));
}
