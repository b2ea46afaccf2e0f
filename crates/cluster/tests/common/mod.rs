//! Test harness: a real `redis-server` of our own on a free loopback port, killed on drop.
#![allow(dead_code)] // each test file uses its own part of the harness

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pylon_cluster::{Directory, NodeId, NodeInfo, RegionName, RelayAddr, Target};

/// How long a fresh `redis-server` may take to accept connections on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    extra_args: Vec<String>,
    dir: PathBuf,
}

/// A free loopback port (the OS's pick; released before redis binds it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

fn redis_server_binary() -> &'static str {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "redis-server is not installed: run scripts/setup-redis.sh (Debian package redis-server)"
    );
    "redis-server"
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with(Vec::new())
    }

    /// Start with more command-line options (TLS, replication).
    pub fn start_with(extra_args: Vec<String>) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "pylon-cluster-test-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut s = Self {
            port: free_port(),
            child: None,
            extra_args,
            dir,
        };
        s.spawn();
        s
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let child = Command::new(redis_server_binary())
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", self.dir.to_str().expect("utf-8 temp dir")])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        self.wait_listening();
    }

    fn wait_listening(&mut self) {
        let start = Instant::now();
        // With TLS only, the plain port is 0; then wait for the TLS port the caller named.
        let port = self.listening_port();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("redis-server exited at start: {status}");
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn listening_port(&self) -> u16 {
        let tls_port = self.extra_args.iter().position(|a| a == "--tls-port");
        match tls_port.and_then(|i| self.extra_args.get(i + 1)) {
            Some(p) => p.parse().expect("tls port"),
            None => self.port,
        }
    }

    /// Kill the server (its data is gone: no persistence).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A new, empty server on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn target(&self) -> Target {
        Target::direct("127.0.0.1", self.port)
    }

    /// A plain client for inspecting and corrupting the data behind the directory's back.
    pub async fn raw(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).expect("client");
        client
            .get_multiplexed_async_connection()
            .await
            .expect("raw connection")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub const REGION: &str = "test-region";

pub fn node(id: &str) -> NodeId {
    NodeId::parse(id).expect("node id")
}

pub fn region() -> RegionName {
    RegionName::parse(REGION).expect("region")
}

pub fn directory(target: &Target, id: &str) -> Directory {
    Directory::new(target, region(), node(id)).expect("directory")
}

pub fn info(port: u16) -> NodeInfo {
    NodeInfo {
        api_addr: None,
        relay_addr: RelayAddr::parse(&format!("127.0.0.1:{port}")).expect("relay addr"),
        participants: 0,
        started_at_ms: 1_700_000_000_000,
    }
}

/// The key of the documented schema (`pylon:{region}:<kind><name>`).
pub fn key(kind: &str, name: &str) -> String {
    format!("pylon:{{{REGION}}}:{kind}{name}")
}

/// Run a raw command, for setting up and inspecting.
pub async fn raw_cmd<T: redis::FromRedisValue>(
    conn: &mut redis::aio::MultiplexedConnection,
    args: &[&str],
) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(conn).await.expect("raw command")
}

/// A node dies as far as Redis can tell: its lease is gone (what expiry does, without the wait).
pub async fn kill_lease(conn: &mut redis::aio::MultiplexedConnection, id: &str) {
    let _: i64 = raw_cmd(conn, &["DEL", &key("node:", id)]).await;
}
