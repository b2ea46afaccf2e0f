//! Identity → (node, sid): a new session takes the identity; an old session's departure
//! never clears a newer one; sessions on dead nodes are not found.

mod common;

use common::*;
use pylon_cluster::IdentityEntry;
use pylon_core::ids::{ParticipantIdentity, ParticipantSid, RoomName};

#[tokio::test]
async fn identities_are_set_and_cleared_only_by_their_session() {
    let redis = RedisServer::start();
    let a = directory(&redis.target(), "node-a");
    let b = directory(&redis.target(), "node-b");
    a.renew(&info(7001)).await.unwrap();
    b.renew(&info(7002)).await.unwrap();
    let room = RoomName::new("room");
    let alice = ParticipantIdentity::new("alice");
    let (old, new) = (
        ParticipantSid::new("PA_oldoldoldold"),
        ParticipantSid::new("PA_newnewnewnew"),
    );

    assert_eq!(a.identity(&room, &alice).await.unwrap(), None);
    assert_eq!(a.set_identity(&room, &alice, &old).await.unwrap(), None);
    let on_a = IdentityEntry {
        node: node("node-a"),
        sid: old.clone(),
    };
    assert_eq!(b.identity(&room, &alice).await.unwrap(), Some(on_a.clone()));

    // alice reconnects through node-b: the new session takes over and names the old one.
    assert_eq!(b.set_identity(&room, &alice, &new).await.unwrap(), Some(on_a));
    let on_b = IdentityEntry {
        node: node("node-b"),
        sid: new.clone(),
    };
    // The old session leaves later: it must not clear the new one.
    assert!(!a.clear_identity(&room, &alice, &old).await.unwrap());
    // Nor may another node clear it with the right sid.
    assert!(!a.clear_identity(&room, &alice, &new).await.unwrap());
    assert_eq!(a.identity(&room, &alice).await.unwrap(), Some(on_b));
    assert!(b.clear_identity(&room, &alice, &new).await.unwrap());
    assert_eq!(a.identity(&room, &alice).await.unwrap(), None);

    // An identity in another room is another entry.
    a.set_identity(&room, &alice, &old).await.unwrap();
    assert_eq!(
        a.identity(&RoomName::new("elsewhere"), &alice).await.unwrap(),
        None
    );

    // A session on a dead node is not found.
    kill_lease(&mut redis.raw().await, "node-a").await;
    assert_eq!(b.identity(&room, &alice).await.unwrap(), None);
}
