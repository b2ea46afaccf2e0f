//! The server harness: runs the real `pylon` binary on free loopback ports for one test.
//!
//! The process gets a generated YAML config (its own API key, free HTTP and UDP ports), its
//! stderr goes to a log file under `target/test-output/`, and it is killed on drop.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::ServerError;
use crate::token::ApiCredentials;

/// How long the server may take to answer its health check.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts with fresh ports when the server could not start (a port taken in between).
const START_ATTEMPTS: usize = 3;
/// The API key every harness server accepts.
pub const TEST_API_KEY: &str = "testkey";
/// Its secret (HS256 wants at least 32 bytes).
pub const TEST_API_SECRET: &str = "pylon-testkit-secret-0123456789abcdef";
/// Lines of the log shown in start-up errors.
const LOG_TAIL_LINES: usize = 40;

static NEXT_SERVER: AtomicU64 = AtomicU64::new(0);

/// What to start.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The `pylon` binary (in integration tests: `env!("CARGO_BIN_EXE_pylon")`).
    pub binary: PathBuf,
    /// Names the log file, e.g. the test's name.
    pub name: String,
    /// Extra YAML appended to the generated config (must not repeat its keys).
    pub extra_yaml: String,
    /// `RUST_LOG` for the server; `None` keeps the config's level (debug in dev mode).
    /// [`ServerOptions::new`] takes it from `PYLON_TEST_SERVER_LOG`.
    pub rust_log: Option<String>,
}

impl ServerOptions {
    pub fn new(binary: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        Self {
            binary: binary.into(),
            name: name.into(),
            extra_yaml: String::new(),
            rust_log: std::env::var("PYLON_TEST_SERVER_LOG").ok(),
        }
    }
}

/// Worker settings `scripts/test.sh` varies between runs of a suite: `PYLON_TEST_WORKERS`
/// (`rtc.workers`) and `PYLON_TEST_SPREAD` (`rtc.room_spread_threshold`).
fn rtc_from_env() -> String {
    let mut yaml = String::new();
    for (key, env) in [
        ("workers", "PYLON_TEST_WORKERS"),
        ("room_spread_threshold", "PYLON_TEST_SPREAD"),
    ] {
        if let Some(n) = std::env::var(env).ok().and_then(|v| v.parse::<usize>().ok()) {
            yaml.push_str(&format!("  {key}: {n}\n"));
        }
    }
    yaml
}

/// A running `pylon serve --dev`. Killed on drop.
pub struct Server {
    child: Child,
    http_port: u16,
    udp_port: u16,
    log_path: PathBuf,
    creds: ApiCredentials,
}

impl Server {
    /// Start `binary` with default options; `name` names the log file.
    pub async fn start(binary: impl Into<PathBuf>, name: &str) -> Result<Server, ServerError> {
        Self::start_with(ServerOptions::new(binary, name)).await
    }

    pub async fn start_with(opts: ServerOptions) -> Result<Server, ServerError> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&opts).await {
                Ok(s) => return Ok(s),
                // The ports were free when chosen; another process may have taken one since.
                Err(e @ ServerError::Exited { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ServerError::Setup("no start attempt made".into())))
    }

    async fn try_start(opts: &ServerOptions) -> Result<Server, ServerError> {
        let (http_port, udp_port, tcp_port) = free_ports()?;
        let dir = output_dir(&opts.binary);
        std::fs::create_dir_all(&dir)
            .map_err(|e| ServerError::Setup(format!("create {}: {e}", dir.display())))?;
        let stem = format!(
            "{}-{}-{}-{}",
            opts.name,
            std::process::id(),
            NEXT_SERVER.fetch_add(1, Ordering::Relaxed),
            unix_ms()
        );
        let config_path = dir.join(format!("{stem}.yaml"));
        let log_path = dir.join(format!("{stem}.log"));
        let yaml = format!(
            "port: {http_port}\nrtc:\n  udp_port: {udp_port}\n  tcp_port: {tcp_port}\n{}keys:\n  {TEST_API_KEY}: {TEST_API_SECRET}\n{}",
            rtc_from_env(),
            opts.extra_yaml
        );
        std::fs::write(&config_path, yaml)
            .map_err(|e| ServerError::Setup(format!("write {}: {e}", config_path.display())))?;
        let log = std::fs::File::create(&log_path)
            .map_err(|e| ServerError::Setup(format!("create {}: {e}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(|e| ServerError::Setup(format!("clone log handle: {e}")))?;
        let mut cmd = Command::new(&opts.binary);
        cmd.arg("serve")
            .arg("--dev")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .env_remove("LIVEKIT_KEYS")
            .env_remove("PYLON_CONFIG");
        match &opts.rust_log {
            Some(filter) => cmd.env("RUST_LOG", filter),
            None => cmd.env_remove("RUST_LOG"),
        };
        let child = cmd
            .spawn()
            .map_err(|e| ServerError::Setup(format!("spawn {}: {e}", opts.binary.display())))?;
        let mut server = Server {
            child,
            http_port,
            udp_port,
            log_path,
            creds: ApiCredentials {
                key: TEST_API_KEY.into(),
                secret: TEST_API_SECRET.into(),
            },
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<(), ServerError> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(ServerError::Exited {
                    status: status.to_string(),
                    log: self.log_path.display().to_string(),
                    tail: self.log_tail(),
                });
            }
            if let Ok((200, _)) = self.http_get("/").await {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(ServerError::NotReady {
                    after: READY_TIMEOUT,
                    log: self.log_path.display().to_string(),
                    tail: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    pub fn udp_port(&self) -> u16 {
        self.udp_port
    }

    /// `ws://127.0.0.1:PORT`, the URL clients are given.
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.http_port)
    }

    pub fn credentials(&self) -> &ApiCredentials {
        &self.creds
    }

    /// A token for `identity` to join `room` on this server.
    pub fn token(&self, room: &str, identity: &str) -> String {
        self.creds.join_token(room, identity)
    }

    /// Join `room` as `identity` and wait until the subscriber connection and its data
    /// channels are up, so what is published next reaches this client.
    pub async fn client(&self, room: &str, identity: &str) -> Result<crate::Client, crate::ClientError> {
        self.client_with(room, identity, crate::ClientOptions::default())
            .await
    }

    /// [`Server::client`] with options.
    pub async fn client_with(
        &self,
        room: &str,
        identity: &str,
        opts: crate::ClientOptions,
    ) -> Result<crate::Client, crate::ClientError> {
        let mut c = crate::Client::connect_with(&self.ws_url(), &self.token(room, identity), opts).await?;
        c.wait_until("the subscriber connection", |o| o.subscriber_ready())
            .await?;
        Ok(c)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// A plain HTTP/1.1 GET on the server; returns status and body.
    pub async fn http_get(&self, path: &str) -> Result<(u16, String), ServerError> {
        let http = |e: std::io::Error| ServerError::Http(e.to_string());
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.http_port))
            .await
            .map_err(http)?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.map_err(http)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.map_err(http)?;
        let text = String::from_utf8_lossy(&raw);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ServerError::Http(format!("no status line in {text:?}")))?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        Ok((status, body.to_string()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Free ports on loopback (bound to port 0, then released): HTTP (TCP), media (UDP) and
/// ICE/TCP, three different numbers. The kernel may give a UDP socket the number a TCP socket
/// holds, and pylon refuses a config whose rtc.tcp_port is also rtc.udp_port or the HTTP port,
/// so the UDP port is drawn again until it differs (the TCP sockets are held meanwhile).
fn free_ports() -> Result<(u16, u16, u16), ServerError> {
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let setup = |e: std::io::Error| ServerError::Setup(format!("find a free port: {e}"));
    let tcp = TcpListener::bind(any).map_err(setup)?;
    let ice_tcp = TcpListener::bind(any).map_err(setup)?;
    let (http, ice) = (
        tcp.local_addr().map_err(setup)?.port(),
        ice_tcp.local_addr().map_err(setup)?.port(),
    );
    for _ in 0..64 {
        let udp = UdpSocket::bind(any).map_err(setup)?;
        let media = udp.local_addr().map_err(setup)?.port();
        if media != http && media != ice {
            return Ok((http, media, ice));
        }
    }
    Err(ServerError::Setup(
        "no UDP port apart from the TCP ones in 64 draws".into(),
    ))
}

/// `target/test-output` next to the binary's profile directory, or `PYLON_TEST_OUTPUT`.
fn output_dir(binary: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("PYLON_TEST_OUTPUT") {
        return PathBuf::from(dir);
    }
    match binary.parent().and_then(Path::parent) {
        Some(target) => target.join("test-output"),
        None => std::env::temp_dir().join("pylon-test-output"),
    }
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}
