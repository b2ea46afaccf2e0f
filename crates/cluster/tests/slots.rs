//! Region-wide participant slots against `max_participants`: atomic reservation, release,
//! and no leak of a dead node's count.

mod common;

use common::*;
use pylon_cluster::Reservation;
use pylon_core::ids::RoomName;

#[tokio::test]
async fn reservations_stop_at_the_limit_and_come_back_on_release() {
    let redis = RedisServer::start();
    let a = directory(&redis.target(), "node-a");
    let b = directory(&redis.target(), "node-b");
    a.renew(&info(7001)).await.unwrap();
    b.renew(&info(7002)).await.unwrap();
    let room = RoomName::new("small");

    assert_eq!(
        a.reserve_slot(&room, 3).await.unwrap(),
        Reservation::Reserved { count: 1 }
    );
    assert_eq!(
        b.reserve_slot(&room, 3).await.unwrap(),
        Reservation::Reserved { count: 2 }
    );
    assert_eq!(
        b.reserve_slot(&room, 3).await.unwrap(),
        Reservation::Reserved { count: 3 }
    );
    assert_eq!(
        a.reserve_slot(&room, 3).await.unwrap(),
        Reservation::Full { count: 3 }
    );
    assert_eq!(a.participant_count(&room).await.unwrap(), 3);

    assert_eq!(b.release_slot(&room).await.unwrap(), 1);
    assert_eq!(
        a.reserve_slot(&room, 3).await.unwrap(),
        Reservation::Reserved { count: 3 }
    );
    // Releasing more than reserved never goes below zero.
    assert_eq!(b.release_slot(&room).await.unwrap(), 0);
    assert_eq!(b.release_slot(&room).await.unwrap(), 0);
    assert_eq!(a.participant_count(&room).await.unwrap(), 2);
    // No limit.
    for _ in 0..10 {
        assert!(matches!(
            b.reserve_slot(&room, 0).await.unwrap(),
            Reservation::Reserved { .. }
        ));
    }
    assert_eq!(a.participant_count(&room).await.unwrap(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservations_never_exceed_the_limit() {
    let redis = RedisServer::start();
    let a = directory(&redis.target(), "node-a");
    let b = directory(&redis.target(), "node-b");
    a.renew(&info(7001)).await.unwrap();
    b.renew(&info(7002)).await.unwrap();
    let room = RoomName::new("popular");
    let attempts = (0..20).map(|i| {
        let (d, room) = (if i % 2 == 0 { a.clone() } else { b.clone() }, room.clone());
        tokio::spawn(async move { d.reserve_slot(&room, 7).await })
    });
    let mut reserved = 0;
    for t in attempts.collect::<Vec<_>>() {
        if let Reservation::Reserved { count } = t.await.unwrap().unwrap() {
            assert!(count <= 7);
            reserved += 1;
        }
    }
    assert_eq!(reserved, 7);
    assert_eq!(a.participant_count(&room).await.unwrap(), 7);
}

#[tokio::test]
async fn a_dead_nodes_participants_stop_counting() {
    let redis = RedisServer::start();
    let a = directory(&redis.target(), "node-a");
    let b = directory(&redis.target(), "node-b");
    a.renew(&info(7001)).await.unwrap();
    b.renew(&info(7002)).await.unwrap();
    let room = RoomName::new("room");
    a.add_instance(&room).await.unwrap();
    b.add_instance(&room).await.unwrap();
    for _ in 0..2 {
        a.reserve_slot(&room, 4).await.unwrap();
        b.reserve_slot(&room, 4).await.unwrap();
    }
    assert_eq!(
        a.reserve_slot(&room, 4).await.unwrap(),
        Reservation::Full { count: 4 }
    );

    let mut raw = redis.raw().await;
    kill_lease(&mut raw, "node-b").await;
    assert_eq!(a.participant_count(&room).await.unwrap(), 2);
    assert_eq!(
        a.reserve_slot(&room, 4).await.unwrap(),
        Reservation::Reserved { count: 3 }
    );
    a.reap_dead_nodes().await.unwrap();
    let fields: Vec<String> = raw_cmd(&mut raw, &["HKEYS", &key("slots:", "room")]).await;
    assert_eq!(fields, ["node-a"], "the dead node's count is deleted");
}
