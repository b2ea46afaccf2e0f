//! Redis Sentinel: the directory finds the master through the sentinels, and follows a
//! failover (a new connection asks the sentinels again).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pylon_cluster::{Claim, Lease, NewRoom, RedisConfig, RoomSettings};
use pylon_core::ids::{RoomName, RoomSid};

const MASTER: &str = "pylon-test-master";

/// A sentinel process watching `master_port`, killed on drop.
struct Sentinel {
    port: u16,
    child: Child,
}

impl Sentinel {
    fn start(dir: &Path, master_port: u16) -> Self {
        let port = free_port();
        let conf = dir.join(format!("sentinel-{port}.conf"));
        let text = format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\n\
             sentinel monitor {MASTER} 127.0.0.1 {master_port} 1\n\
             sentinel down-after-milliseconds {MASTER} 1000\n\
             sentinel failover-timeout {MASTER} 10000\n",
            dir = dir.display()
        );
        std::fs::write(&conf, text).expect("sentinel config");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel (run scripts/setup-redis.sh)");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "sentinel did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, child }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(sentinel_port: u16) -> RedisConfig {
    let yaml = format!("sentinel_master_name: {MASTER}\nsentinel_addresses: ['127.0.0.1:{sentinel_port}']\n");
    serde_yaml::from_str(&yaml).expect("config")
}

fn new_room() -> NewRoom {
    NewRoom {
        sid: RoomSid::new("RM_ssssssssssss"),
        metadata: String::new(),
        settings: RoomSettings::default(),
    }
}

async fn info_field(conn: &mut redis::aio::MultiplexedConnection, field: &str) -> String {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(conn)
        .await
        .unwrap();
    let prefix = format!("{field}:");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or("")
        .trim()
        .to_string()
}

#[tokio::test]
async fn the_directory_follows_a_sentinel_failover() {
    let mut master = RedisServer::start();
    let replica = RedisServer::start_with(vec![
        "--replicaof".into(),
        "127.0.0.1".into(),
        master.port.to_string(),
    ]);
    let mut raw_master = master.raw().await;
    let start = Instant::now();
    while info_field(&mut raw_master, "connected_slaves").await != "1" {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "replica never connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sentinel = Sentinel::start(master.dir(), master.port);

    let target = config(sentinel.port).target().unwrap();
    let a = directory(&target, "node-a");
    assert_eq!(a.renew(&info(7001)).await.unwrap(), Lease::Acquired);
    let room = RoomName::new("replicated");
    let record = a.claim_room(&room, &new_room()).await.unwrap().into_record();
    // Let the write reach the replica before the master dies. WAIT gives up after its timeout
    // and says how many replicas acknowledged: on a loaded machine the replica may still be in
    // its first sync, so ask again until it has the write.
    let start = Instant::now();
    loop {
        let acked: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(5000)
            .query_async(&mut raw_master)
            .await
            .unwrap();
        if acked >= 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the replica did not acknowledge the room's write within 60 s"
        );
    }
    drop(raw_master);

    master.stop();
    let started = Instant::now();
    loop {
        match a.renew(&info(7001)).await {
            Ok(_) => break,
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(60),
                "no failover within 60 s; last error: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("failover followed after {:?}", started.elapsed());
    // The same directory now talks to the promoted replica, which has the data.
    let mut raw_replica = replica.raw().await;
    assert_eq!(info_field(&mut raw_replica, "role").await, "master");
    assert_eq!(
        a.claim_room(&room, &new_room()).await.unwrap(),
        Claim::Joined(record)
    );
    a.probe().await.unwrap();
}
