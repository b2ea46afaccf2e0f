//! The client survives Redis going away and coming back (a new, empty process on the same
//! port): calls fail fast while it is down, the probe says so, and the same `Directory` works
//! again afterwards. A node may also start before Redis does.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pylon_cluster::{DirectoryError, Lease, COMMAND_TIMEOUT, PROBE_TIMEOUT};
use pylon_core::ids::RoomName;

/// Slack for a loaded machine on top of the documented deadlines.
const SLACK: Duration = Duration::from_secs(3);

#[tokio::test]
async fn the_same_directory_works_again_after_a_redis_restart() {
    let mut redis = RedisServer::start();
    let a = directory(&redis.target(), "node-a");
    assert_eq!(a.renew(&info(7001)).await.unwrap(), Lease::Acquired);
    a.add_instance(&RoomName::new("before")).await.unwrap();
    a.probe().await.unwrap();

    redis.stop();
    let started = Instant::now();
    let e = a.probe().await.unwrap_err();
    assert!(matches!(e, DirectoryError::Unavailable(_)), "{e}");
    assert!(
        started.elapsed() < PROBE_TIMEOUT + SLACK,
        "probe took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let e = a.renew(&info(7001)).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        started.elapsed() < COMMAND_TIMEOUT + SLACK,
        "renew took {:?}",
        started.elapsed()
    );
    assert!(a.nodes().await.is_err());

    redis.restart();
    // Reconnection is on demand: the next call (after at most one failed try) works.
    let deadline = Instant::now() + Duration::from_secs(10);
    let lease = loop {
        match a.renew(&info(7001)).await {
            Ok(lease) => break lease,
            Err(e) if Instant::now() < deadline => eprintln!("retrying: {e}"),
            Err(e) => panic!("never reconnected: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        lease,
        Lease::Acquired,
        "the new Redis is empty: the node must re-register"
    );
    a.probe().await.unwrap();
    assert_eq!(a.nodes().await.unwrap().len(), 1);
    assert!(
        a.instances(&RoomName::new("before")).await.unwrap().is_empty(),
        "data did not survive"
    );
}

#[tokio::test]
async fn a_dead_connection_is_replaced_without_a_failed_call() {
    let mut redis = RedisServer::start();
    let a = directory(&redis.target(), "node-a");
    a.renew(&info(7001)).await.unwrap();
    // Redis restarts between two calls (nothing was in flight): the stale connection's
    // failure is noticed and the call is sent again on a new connection.
    redis.restart();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(a.renew(&info(7001)).await.unwrap(), Lease::Acquired);
}

#[tokio::test]
async fn a_node_can_start_before_redis() {
    let port = free_port();
    let target = pylon_cluster::Target::direct("127.0.0.1", port);
    let a = directory(&target, "node-a");
    assert!(matches!(a.probe().await, Err(DirectoryError::Unavailable(_))));
    assert!(a.renew(&info(7001)).await.unwrap_err().is_transient());

    let mut redis = RedisServer::start();
    redis.stop();
    redis.port = port;
    redis.restart();
    a.probe().await.unwrap();
    assert_eq!(a.renew(&info(7001)).await.unwrap(), Lease::Acquired);
}
