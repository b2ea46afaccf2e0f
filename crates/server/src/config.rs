//! Server configuration: LiveKit's `livekit.yaml` keys where the concept exists.
//!
//! Parsed once at start-up into typed values. Unknown keys and keys for features Pylon does
//! not have yet are refused with a message naming the key, so an operator never runs with a
//! setting silently ignored.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use livekit_protocol as lk;
use pylon_auth::KeySet;
use pylon_core::{RoomDefaults, ShardConfig};
use serde::Deserialize;

/// Why the configuration was refused. Always the operator's to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid config: {0}")]
    Yaml(String),
    #[error("invalid config key `{key}`: {why}")]
    Invalid { key: &'static str, why: String },
    #[error("config key `{0}` is not supported by this version of Pylon")]
    Unsupported(&'static str),
}

/// One of `rtc.turn_servers`.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TurnServerFile {
    pub host: String,
    pub port: u16,
    /// `udp`, `tcp` or `tls`.
    pub protocol: Option<String>,
    pub username: Option<String>,
    pub credential: Option<String>,
}

/// LiveKit's `turn:` block (its embedded TURN server).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnFile {
    pub enabled: Option<bool>,
    pub domain: Option<String>,
    pub udp_port: Option<u16>,
    pub tls_port: Option<u16>,
    pub external_tls: Option<bool>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub relay_range_start: Option<u16>,
    pub relay_range_end: Option<u16>,
    pub bind_addresses: Option<Vec<String>>,
    pub ttl_seconds: Option<i64>,
    pub per_user_relay_allocation_limit: Option<i64>,
    pub allow_restricted_peer_cidrs: Option<Vec<String>>,
    pub deny_peer_cidrs: Option<Vec<String>>,
}

/// The YAML file as written by an operator. Field names are LiveKit's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub port: Option<u16>,
    pub bind_addresses: Option<Vec<String>>,
    #[serde(default)]
    pub rtc: RtcFile,
    pub keys: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub room: RoomFile,
    #[serde(default)]
    pub logging: LoggingFile,
    pub region: Option<String>,
    pub development: Option<bool>,
    pub redis: Option<pylon_cluster::RedisConfig>,
    /// Pylon's own: links to the other nodes of the region (used with `redis`).
    #[serde(default)]
    pub relay: RelayFile,
    pub webhook: Option<WebhookFile>,
    pub turn: Option<TurnFile>,
    pub prometheus_port: Option<u16>,
    /// Pylon's own: the demo page (`/demo/`).
    #[serde(default)]
    pub demo: DemoFile,
    /// Pylon's own: how a node that was told to stop (SIGTERM) drains.
    #[serde(default)]
    pub drain: DrainFile,
    /// When the node counts as full (LiveKit's `limit:`).
    #[serde(default)]
    pub limit: LimitFile,
}

/// LiveKit's `limit:` keys that decide when a node is full; 0 or absent is no limit.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitFile {
    /// Tracks published plus subscriptions on the node.
    pub num_tracks: Option<i64>,
    /// Media bytes per second in and out.
    pub bytes_per_sec: Option<f64>,
}

/// When the node is full: `/readyz` answers 503 so the load balancer sends new clients to
/// other nodes (its rooms and participants go on), as LiveKit takes a full node out of
/// placement.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Limits {
    pub num_tracks: Option<u64>,
    pub bytes_per_sec: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainFile {
    /// Seconds after SIGTERM before the node's participants are told to reconnect elsewhere.
    pub migrate_after: Option<u64>,
    /// Seconds after SIGTERM after which the process exits even if not empty.
    pub timeout: Option<u64>,
}

/// How a node drains (`drain:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainConfig {
    pub migrate_after: Duration,
    pub timeout: Duration,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            migrate_after: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoFile {
    /// Serve the demo page (default: on in dev mode, off otherwise).
    pub enabled: Option<bool>,
    /// Path of `livekit-client.umd.js` (default: the project's npm install).
    pub livekit_client_js: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtcFile {
    pub udp_port: Option<u16>,
    pub tcp_port: Option<u16>,
    pub node_ip: Option<String>,
    pub use_external_ip: Option<bool>,
    pub port_range_start: Option<u16>,
    pub port_range_end: Option<u16>,
    /// STUN servers clients are told to use (the join response's ICE servers).
    pub stun_servers: Option<Vec<String>>,
    /// TURN servers clients are told to use.
    pub turn_servers: Option<Vec<TurnServerFile>>,
    /// LiveKit's buffer tuning: str0m sizes its own buffers; accepted without effect.
    pub packet_buffer_size: Option<u64>,
    pub packet_buffer_size_video: Option<u64>,
    pub packet_buffer_size_audio: Option<u64>,
    /// Downlink congestion control (LiveKit's keys; off by default, unlike LiveKit: see
    /// `docs/benchmarks.md`, "Downlink congestion control").
    pub congestion_control: Option<CongestionControlFile>,
    /// Keyframe-request spacing per quality: Pylon spaces requests per track itself.
    pub pli_throttle: Option<serde_yaml::Value>,
    /// Interface and address filters for gathered candidates: Pylon advertises one address.
    pub interfaces: Option<serde_yaml::Value>,
    pub ips: Option<serde_yaml::Value>,
    /// Pylon's own: media worker threads (0 or absent: one per available core).
    pub workers: Option<usize>,
    /// Pylon's own: participants a room's instance on one worker takes before the room spreads
    /// to another worker.
    pub room_spread_threshold: Option<usize>,
    /// Pylon's own: serve single peer connection signalling on `/rtc/v1` (today's SDKs'
    /// default; on unless set false). Off: `/rtc/v1` answers 404 and every SDK falls back to
    /// `/rtc` (dual PC), as before Pylon had it.
    pub single_peer_connection: Option<bool>,
}

/// Pylon's own `relay:` block: how the nodes of a region reach each other.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayFile {
    /// UDP port of the node-to-node listener (QUIC). Default 7890.
    pub port: Option<u16>,
    /// What other nodes dial: `host` or `host:port` (default: `rtc.node_ip` and `relay.port`).
    pub address: Option<String>,
    /// This node's name in the region (default: the host name and the relay port).
    pub node_name: Option<String>,
    /// Peer regions: name -> address of that region's relay gateway (`host:port`; in
    /// Kubernetes a Cilium global service of one name in every cluster).
    #[serde(default)]
    pub regions: std::collections::BTreeMap<String, String>,
    /// Seconds a silent remote region's participants are kept (default 15).
    pub grace_period: Option<u64>,
    /// Regions prove membership with this (shared by all regions, distinct from API keys);
    /// required once `regions` is set.
    pub secret: Option<String>,
    /// Media to the other nodes of the region as sealed UDP datagrams, each link on a UDP
    /// port of its own (ephemeral), instead of QUIC datagrams on `relay.port` (default true;
    /// a link whose direct path the network does not carry stays on QUIC by itself).
    pub direct_media: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomFile {
    pub auto_create: Option<bool>,
    pub empty_timeout: Option<u64>,
    pub departure_timeout: Option<u64>,
    pub max_participants: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    pub api_key: Option<String>,
    #[serde(default)]
    pub urls: Vec<String>,
    /// Pylon's own key (LiveKit has no equivalent): events buffered per URL.
    pub queue_size: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingFile {
    pub level: Option<String>,
    pub json: Option<bool>,
}

/// Command-line overrides (they win over the file).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub dev: bool,
    pub bind: Option<IpAddr>,
    pub port: Option<u16>,
    pub udp_port: Option<u16>,
    /// `rtc.tcp_port` (0 turns ICE/TCP off).
    pub tcp_port: Option<u16>,
    pub node_ip: Option<IpAddr>,
    pub keys: Option<String>,
    /// `relay.secret`, from the environment (`PYLON_RELAY_SECRET`): applied when
    /// `relay.regions` is set.
    pub relay_secret: Option<String>,
    /// `redis.password`, from the environment (`PYLON_REDIS_PASSWORD`).
    pub redis_password: Option<String>,
    /// `redis.sentinel_password`, from the environment (`PYLON_REDIS_SENTINEL_PASSWORD`).
    pub redis_sentinel_password: Option<String>,
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: IpAddr,
    pub http_port: u16,
    pub udp_port: u16,
    /// ICE over TCP (RFC 6544 passive candidates, RFC 4571 framing) on this port; `None`
    /// when `rtc.tcp_port` is 0.
    pub tcp_port: Option<u16>,
    pub node_ip: IpAddr,
    pub keys: KeySet,
    pub room: RoomDefaults,
    pub auto_create: bool,
    pub log_level: String,
    pub region: String,
    pub dev: bool,
    /// What SIGTERM does (`drain:`).
    pub drain: DrainConfig,
    /// When the node is full (`limit:`).
    pub limits: Limits,
    /// What clients are told to use besides the node itself (`rtc.stun_servers`,
    /// `rtc.turn_servers`), in the join and reconnect responses.
    pub ice_servers: Vec<livekit_protocol::IceServer>,
    /// Keys accepted without effect, and other notes worth an operator's attention: logged
    /// once at start-up.
    pub warnings: Vec<String>,
    pub webhook: Option<crate::webhook::WebhookConfig>,
    pub demo: Option<crate::demo::DemoConfig>,
    /// Serve Prometheus metrics on this port (same bind address), as LiveKit does.
    pub prometheus_port: Option<u16>,
    /// Media worker threads (at least 1).
    pub workers: usize,
    /// Participants on one worker's instance of a room before the room spreads.
    pub room_spread_threshold: usize,
    /// `/rtc/v1` (single peer connection) is served; otherwise it answers 404.
    pub single_peer_connection: bool,
    /// Set when a `redis:` block makes this node one of a region's.
    pub cluster: Option<ClusterConfig>,
    /// The embedded TURN server (`turn.enabled`).
    pub turn: Option<crate::turn::TurnConfig>,
    /// Downlink bandwidth estimation and allocation (`rtc.congestion_control`).
    pub congestion_control: pylon_core::CongestionControl,
}

/// `rtc.congestion_control`, as in LiveKit's `livekit.yaml`.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct CongestionControlFile {
    /// Estimate each subscriber's downlink and fit its video into it (default false).
    pub enabled: Option<bool>,
    /// Pause video the downlink cannot carry at its lowest layer (default false).
    pub allow_pause: Option<bool>,
    /// LiveKit's probe tuning: str0m's estimator probes by its own rules.
    #[serde(flatten)]
    pub tuning: std::collections::BTreeMap<String, serde_yaml::Value>,
}

/// A node of a region: its directory in Redis and its links to the other nodes.
#[derive(Clone)]
pub struct ClusterConfig {
    pub redis: pylon_cluster::Target,
    /// The region's name in Redis keys (`region`, or `default` when unset).
    pub region: pylon_cluster::RegionName,
    pub node: pylon_cluster::NodeId,
    /// Where the relay listens.
    pub relay_bind: SocketAddr,
    /// What other nodes dial.
    pub relay_address: pylon_cluster::RelayAddr,
    /// Where other nodes forward Room API requests (the relay address's host, `port`).
    pub api_address: String,
    /// Nodes prove membership with this (derived from the API secret every node shares).
    pub secret: Vec<u8>,
    /// Links to other regions, when `relay.regions` is set.
    pub regions: Option<RegionsConfig>,
    /// Media to the region's other nodes by UDP beside the QUIC link (`relay.direct_media`).
    pub direct_media: bool,
}

/// The other regions a region links to (`relay.regions`, `relay.grace_period`, `relay.secret`).
#[derive(Clone)]
pub struct RegionsConfig {
    /// Each peer region's relay gateway address (`host:port`).
    pub peers: Vec<(pylon_cluster::RegionName, String)>,
    /// How long a silent remote region's participants are kept.
    pub grace_period: std::time::Duration,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for RegionsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionsConfig")
            .field("peers", &self.peers)
            .field("grace_period", &self.grace_period)
            .finish_non_exhaustive()
    }
}

/// A silent remote region's participants are kept this long by default.
pub const DEFAULT_GRACE_PERIOD: std::time::Duration = std::time::Duration::from_secs(15);

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis", &self.redis)
            .field("region", &self.region)
            .field("node", &self.node)
            .field("relay_bind", &self.relay_bind)
            .field("relay_address", &self.relay_address)
            .field("regions", &self.regions)
            .finish_non_exhaustive()
    }
}

/// The node-to-node relay's default UDP port.
pub const DEFAULT_RELAY_PORT: u16 = 7890;

pub const DEFAULT_HTTP_PORT: u16 = 7880;
/// A room stays on one worker up to this many participants there, then spreads: a worker
/// forwards a meeting of this size (every participant publishing audio and video) with room
/// to spare, and big rooms (webinars, town halls) use every core.
pub const DEFAULT_ROOM_SPREAD_THRESHOLD: usize = 16;
/// More workers than this is a configuration mistake (and more threads than any node has).
const MAX_WORKERS: usize = 256;
pub const DEFAULT_UDP_PORT: u16 = 7882;
/// LiveKit's default `rtc.tcp_port`.
pub const DEFAULT_TCP_PORT: u16 = 7881;
/// The key pair `--dev` accepts, as LiveKit's `--dev` does.
pub const DEV_API_KEY: &str = "devkey";
pub const DEV_API_SECRET: &str = "secret";

impl Config {
    pub fn load(path: Option<&Path>, o: &Overrides) -> Result<Self, ConfigError> {
        let file = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                parse_yaml(&text)?
            }
            None => FileConfig::default(),
        };
        Self::resolve(file, o)
    }

    pub fn resolve(mut f: FileConfig, o: &Overrides) -> Result<Self, ConfigError> {
        refuse_unsupported(&f)?;
        // Secrets from the environment (a Kubernetes Secret) override the file's.
        if let (Some(p), Some(r)) = (&o.redis_password, f.redis.as_mut()) {
            r.password = p.clone();
        }
        if let (Some(p), Some(r)) = (&o.redis_sentinel_password, f.redis.as_mut()) {
            r.sentinel_password = p.clone();
        }
        if let Some(s) = o.relay_secret.as_ref().filter(|_| !f.relay.regions.is_empty()) {
            f.relay.secret = Some(s.clone());
        }
        let drain = resolve_drain(&f.drain)?;
        let limits = Limits {
            num_tracks: f.limit.num_tracks.filter(|n| *n > 0).map(|n| n as u64),
            bytes_per_sec: f.limit.bytes_per_sec.filter(|b| b.is_finite() && *b > 0.0),
        };
        let dev = o.dev || f.development.unwrap_or(false);
        let bind = resolve_bind(&f, o, dev)?;
        let keys = resolve_keys(&f, o, dev)?;
        let node_ip = resolve_node_ip(&f, o, bind, dev)?;
        let level = f
            .logging
            .level
            .clone()
            .unwrap_or_else(|| if dev { "debug" } else { "info" }.into());
        if !["trace", "debug", "info", "warn", "error"].contains(&level.as_str()) {
            return Err(ConfigError::Invalid {
                key: "logging.level",
                why: format!("{level:?} is not one of trace, debug, info, warn, error"),
            });
        }
        let http_port = o.port.or(f.port).unwrap_or(DEFAULT_HTTP_PORT);
        let warnings = check_rtc_and_turn(&f)?;
        let ice_servers = ice_servers(&f.rtc)?;
        let udp_port = (o.udp_port.or(f.rtc.udp_port))
            .or(f.rtc.port_range_start)
            .unwrap_or(DEFAULT_UDP_PORT);
        if udp_port == 0 {
            return Err(ConfigError::Invalid {
                key: "rtc.udp_port",
                why: "must not be 0".into(),
            });
        }
        let tcp_port = match o.tcp_port.or(f.rtc.tcp_port).unwrap_or(DEFAULT_TCP_PORT) {
            0 => None,
            p if p == udp_port => {
                // Different protocols could share a number, but operators open ports by
                // number: one that means two things is almost always a typo.
                return Err(ConfigError::Invalid {
                    key: "rtc.tcp_port",
                    why: format!("{p} is also rtc.udp_port; pick another port, or 0 to turn ICE/TCP off"),
                });
            }
            p if p == http_port => {
                return Err(ConfigError::Invalid {
                    key: "rtc.tcp_port",
                    why: format!("{p} is also the HTTP port; pick another port, or 0 to turn ICE/TCP off"),
                });
            }
            p => Some(p),
        };
        let webhook = resolve_webhook(f.webhook.as_ref(), &keys)?;
        let workers = match f.rtc.workers {
            None | Some(0) => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Some(n) if n > MAX_WORKERS => {
                return Err(ConfigError::Invalid {
                    key: "rtc.workers",
                    why: format!("{n} is more than {MAX_WORKERS}"),
                })
            }
            Some(n) => n,
        };
        let room_spread_threshold = match f.rtc.room_spread_threshold {
            Some(0) => {
                return Err(ConfigError::Invalid {
                    key: "rtc.room_spread_threshold",
                    why: "must be at least 1".into(),
                })
            }
            Some(n) => n,
            None => DEFAULT_ROOM_SPREAD_THRESHOLD,
        };
        let demo = f.demo.enabled.unwrap_or(dev).then(|| crate::demo::DemoConfig {
            client_js: f
                .demo
                .livekit_client_js
                .clone()
                .unwrap_or_else(|| crate::demo::DEFAULT_CLIENT_JS.into())
                .into(),
            mint: dev.then(|| first_key(&keys)).flatten(),
        });
        let cluster = resolve_cluster(&f, &keys, bind, node_ip, http_port)?;
        let turn = resolve_turn(
            &f,
            &keys,
            TurnContext {
                bind,
                node_ip,
                udp_port,
                tcp_port,
                http_port,
                relay_port: cluster.as_ref().map(|c| c.relay_bind.port()),
            },
        )?;
        let defaults = RoomDefaults::default();
        let room = RoomDefaults {
            empty_timeout: f
                .room
                .empty_timeout
                .map(Duration::from_secs)
                .unwrap_or(defaults.empty_timeout),
            departure_timeout: f
                .room
                .departure_timeout
                .map(Duration::from_secs)
                .unwrap_or(defaults.departure_timeout),
            max_participants: f.room.max_participants.unwrap_or(0),
        };
        Ok(Self {
            bind,
            http_port,
            udp_port,
            tcp_port,
            node_ip,
            keys,
            room,
            ice_servers,
            warnings,
            auto_create: f.room.auto_create.unwrap_or(true),
            log_level: level,
            webhook,
            demo,
            prometheus_port: f.prometheus_port,
            workers,
            room_spread_threshold,
            single_peer_connection: f.rtc.single_peer_connection.unwrap_or(true),
            cluster,
            turn,
            congestion_control: {
                let cc = f.rtc.congestion_control.clone().unwrap_or_default();
                pylon_core::CongestionControl {
                    // Off unless asked for: str0m's pacer costs 2-3x the CPU per forwarded
                    // packet and holds media back when receivers' feedback is late
                    // (docs/benchmarks.md, "Downlink congestion control").
                    enabled: cc.enabled.unwrap_or(false),
                    allow_pause: cc.allow_pause.unwrap_or(false),
                }
            },
            region: f.region.unwrap_or_default(),
            dev,
            drain,
            limits,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.http_port)
    }

    pub fn udp_bind_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.udp_port)
    }

    /// Where the ICE/TCP listener binds, if TCP media is on.
    pub fn tcp_bind_addr(&self) -> Option<SocketAddr> {
        self.tcp_port.map(|p| SocketAddr::new(self.bind, p))
    }

    pub fn shard_config(&self) -> ShardConfig {
        let mut c = ShardConfig::new(SocketAddr::new(self.node_ip, self.udp_port));
        c.tcp_candidate = self.tcp_port.map(|p| SocketAddr::new(self.node_ip, p));
        c.ice_servers = self.ice_servers.clone();
        c.ice_credentials = self
            .turn
            .as_ref()
            .map(|t| Arc::new(t.minter()) as Arc<dyn pylon_core::IceCredentials>);
        c.room = self.room.clone();
        c.region = self.region.clone();
        c.rooms_closed_by_runtime = true;
        c.congestion_control = self.congestion_control;
        if let Some(r) = self.cluster.as_ref().and_then(|c| c.regions.as_ref()) {
            c.region_grace = r.grace_period;
        }
        c
    }
}

/// Parse YAML text into the file structure, naming the offending key on error.
pub fn parse_yaml(text: &str) -> Result<FileConfig, ConfigError> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    serde_yaml::from_str(text).map_err(|e| ConfigError::Yaml(e.to_string()))
}

/// LiveKit's `rtc:` and `turn:` keys Pylon has no equivalent for: refused with what to do
/// instead; tuning keys with no effect here are accepted with a warning (returned).
fn check_rtc_and_turn(f: &FileConfig) -> Result<Vec<String>, ConfigError> {
    let set_node_ip =
        "set rtc.node_ip (or --node-ip, or the NODE_IP environment variable) to the address clients reach";
    if f.rtc.use_external_ip == Some(true) {
        return Err(ConfigError::Invalid {
            key: "rtc.use_external_ip",
            why: format!("Pylon does not discover its public address with STUN: {set_node_ip}, and remove use_external_ip"),
        });
    }
    for (present, key) in [
        (f.rtc.interfaces.is_some(), "rtc.interfaces"),
        (f.rtc.ips.is_some(), "rtc.ips"),
    ] {
        if present {
            return Err(ConfigError::Invalid {
                key,
                why: format!("Pylon advertises one media address per node, not a filtered set: {set_node_ip}, and remove this key"),
            });
        }
    }
    match (f.rtc.port_range_start, f.rtc.port_range_end) {
        (None, Some(_)) => {
            return Err(ConfigError::Invalid {
                key: "rtc.port_range_start",
                why: "port_range_end without port_range_start; Pylon needs one UDP port: set rtc.udp_port"
                    .into(),
            })
        }
        (Some(s), Some(e)) if s > e => {
            return Err(ConfigError::Invalid {
                key: "rtc.port_range_end",
                why: format!("{e} is below port_range_start {s}"),
            })
        }
        _ => {}
    }
    let mut warnings = Vec::new();
    if let Some(start) = f.rtc.port_range_start {
        warnings.push(match f.rtc.udp_port {
            None => format!(
                "rtc.port_range_start/port_range_end: Pylon serves every participant's media on one UDP port; \
                 using {start}, the first of the range (set rtc.udp_port to choose another)"
            ),
            Some(p) => format!("rtc.port_range_start/port_range_end are unused: all media goes to rtc.udp_port {p}"),
        });
    }
    let no_effect = [
        (
            f.rtc.packet_buffer_size.is_some(),
            "rtc.packet_buffer_size",
            "str0m sizes its own buffers",
        ),
        (
            f.rtc.packet_buffer_size_video.is_some(),
            "rtc.packet_buffer_size_video",
            "str0m sizes its own buffers",
        ),
        (
            f.rtc.packet_buffer_size_audio.is_some(),
            "rtc.packet_buffer_size_audio",
            "str0m sizes its own buffers",
        ),
        (
            f.rtc.pli_throttle.is_some(),
            "rtc.pli_throttle",
            "Pylon spaces keyframe requests per track itself",
        ),
    ];
    for (present, key, why) in no_effect {
        if present {
            warnings.push(format!("{key} has no effect: {why}"));
        }
    }
    if let Some(cc) = f.rtc.congestion_control.as_ref().filter(|c| !c.tuning.is_empty()) {
        let keys: Vec<&str> = cc.tuning.keys().map(String::as_str).collect();
        warnings.push(format!(
            "rtc.congestion_control: {} have no effect: Pylon's estimator (str0m's) probes by its own rules",
            keys.join(", ")
        ));
    }
    Ok(warnings)
}

/// What the `turn:` block is checked against.
struct TurnContext {
    bind: IpAddr,
    node_ip: IpAddr,
    udp_port: u16,
    tcp_port: Option<u16>,
    http_port: u16,
    relay_port: Option<u16>,
}

/// LiveKit's `turn:` block. Off unless `enabled`; then every key either works or is refused
/// with what to do.
fn resolve_turn(
    f: &FileConfig,
    keys: &KeySet,
    cx: TurnContext,
) -> Result<Option<crate::turn::TurnConfig>, ConfigError> {
    use crate::turn::{TurnConfig, TurnTls};
    let Some(t) = f.turn.as_ref().filter(|t| t.enabled == Some(true)) else {
        return Ok(None);
    };
    let invalid = |key: &'static str, why: String| ConfigError::Invalid { key, why };
    let udp_port = t.udp_port.filter(|p| *p != 0);
    let tls_port = t.tls_port.filter(|p| *p != 0);
    if udp_port.is_none() && tls_port.is_none() {
        return Err(invalid(
            "turn.enabled",
            "TURN is on but neither turn.udp_port nor turn.tls_port is set: set udp_port (3478 is usual) \
             and/or tls_port (5349, or 443 behind a TLS load balancer)"
                .into(),
        ));
    }
    let bind =
        match t.bind_addresses.as_deref() {
            None | Some([]) => cx.bind,
            Some([one]) => one
                .parse()
                .map_err(|_| invalid("turn.bind_addresses", format!("{one:?} is not an IP address")))?,
            Some(_) => return Err(invalid(
                "turn.bind_addresses",
                "Pylon's TURN server listens on one address: list one (or none, for the node's bind address)"
                    .into(),
            )),
        };
    if let Some(p) = udp_port {
        if p == cx.udp_port || Some(p) == cx.relay_port {
            return Err(invalid(
                "turn.udp_port",
                format!("{p} is already the media port (rtc.udp_port) or the node link (relay.port); pick another, e.g. 3478"),
            ));
        }
    }
    let domain = t.domain.clone().filter(|d| !d.is_empty());
    let tls = match tls_port {
        None => None,
        Some(p) => {
            if p == cx.http_port || Some(p) == cx.tcp_port || Some(p) == f.prometheus_port {
                return Err(invalid(
                    "turn.tls_port",
                    format!("{p} is already the HTTP port, rtc.tcp_port or prometheus_port; pick another, e.g. 5349"),
                ));
            }
            let Some(d) = domain.as_deref() else {
                return Err(invalid(
                    "turn.domain",
                    "turn.tls_port is set, so clients need a name to check the certificate against: set turn.domain"
                        .into(),
                ));
            };
            if !d.contains('.')
                || !d
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                return Err(invalid("turn.domain", format!("{d:?} is not a domain name")));
            }
            let acceptor = if t.external_tls == Some(true) {
                None
            } else {
                let (Some(cert), Some(key)) = (t.cert_file.as_deref(), t.key_file.as_deref()) else {
                    return Err(invalid(
                        "turn.cert_file",
                        "turn.tls_port needs turn.cert_file and turn.key_file, or external_tls: true when a load \
                         balancer terminates TLS"
                            .into(),
                    ));
                };
                Some(crate::turn::load_tls(cert, key).map_err(|why| invalid("turn.cert_file", why))?)
            };
            Some(TurnTls {
                bind: SocketAddr::new(bind, p),
                acceptor,
                // Behind a TLS load balancer clients reach 443, as LiveKit advertises.
                advertised_port: if t.external_tls == Some(true) { 443 } else { p },
            })
        }
    };
    let (start, end) = match (t.relay_range_start.unwrap_or(0), t.relay_range_end.unwrap_or(0)) {
        (0, _) | (_, 0) => (30000, 40000),
        (s, e) if s > e => {
            return Err(invalid(
                "turn.relay_range_end",
                format!("{e} is below relay_range_start {s}"),
            ))
        }
        (s, e) => (s, e),
    };
    // The range may contain other ports of the node (LiveKit's sample has 1024-30000 around
    // turn.udp_port 3478): a relay socket is bound without SO_REUSEPORT, so a port in use is
    // skipped, never shared.
    let ttl = match t.ttl_seconds {
        None => 300,
        Some(s) if s <= 0 => 300,
        Some(s) => s.min(86_400) as u64,
    };
    let per_participant_limit = match t.per_user_relay_allocation_limit {
        None => 12,
        Some(n) if n <= 0 => 0,
        Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
    };
    for (key, cidrs) in [
        ("turn.allow_restricted_peer_cidrs", &t.allow_restricted_peer_cidrs),
        ("turn.deny_peer_cidrs", &t.deny_peer_cidrs),
    ] {
        if cidrs.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(invalid(
                key,
                "Pylon's TURN server relays only to this node's own media port (rtc.node_ip, rtc.udp_port), \
                 so there is no other peer to allow or deny: remove this key"
                    .into(),
            ));
        }
    }
    let (_, secret) = first_key(keys).ok_or_else(|| {
        invalid(
            "turn.enabled",
            "TURN credentials are derived from an API key: configure keys".into(),
        )
    })?;
    Ok(Some(TurnConfig {
        udp: udp_port.map(|p| SocketAddr::new(bind, p)),
        tls,
        domain,
        relay_bind: bind,
        node_ip: cx.node_ip,
        media: SocketAddr::new(cx.node_ip, cx.udp_port),
        relay_range: (start, end),
        ttl: Duration::from_secs(ttl),
        per_participant_limit,
        secret: pylon_turn::TurnSecret::derive(secret.as_bytes()),
    }))
}

/// `rtc.stun_servers` and `rtc.turn_servers` as the join response's ICE servers.
fn ice_servers(f: &RtcFile) -> Result<Vec<lk::IceServer>, ConfigError> {
    let mut out = Vec::new();
    for s in f.stun_servers.iter().flatten() {
        if s.is_empty() {
            return Err(ConfigError::Invalid {
                key: "rtc.stun_servers",
                why: "an empty entry; write host:port".into(),
            });
        }
        let url = if s.starts_with("stun:") {
            s.clone()
        } else {
            format!("stun:{s}")
        };
        out.push(lk::IceServer {
            urls: vec![url],
            ..Default::default()
        });
    }
    for t in f.turn_servers.iter().flatten() {
        let url = match t.protocol.as_deref().unwrap_or("udp") {
            "udp" => format!("turn:{}:{}?transport=udp", t.host, t.port),
            "tcp" => format!("turn:{}:{}?transport=tcp", t.host, t.port),
            "tls" => format!("turns:{}:{}?transport=tcp", t.host, t.port),
            other => {
                return Err(ConfigError::Invalid {
                    key: "rtc.turn_servers",
                    why: format!("protocol {other:?} is not one of udp, tcp, tls"),
                })
            }
        };
        if t.host.is_empty() {
            return Err(ConfigError::Invalid {
                key: "rtc.turn_servers",
                why: "an entry without a host".into(),
            });
        }
        out.push(lk::IceServer {
            urls: vec![url],
            username: t.username.clone().unwrap_or_default(),
            credential: t.credential.clone().unwrap_or_default(),
        });
    }
    Ok(out)
}

fn refuse_unsupported(f: &FileConfig) -> Result<(), ConfigError> {
    let unsupported = [
        (f.room.auto_create == Some(false), "room.auto_create"),
        (f.logging.json == Some(true), "logging.json"),
    ];
    match unsupported.iter().find(|(present, _)| *present) {
        Some((_, key)) => Err(ConfigError::Unsupported(key)),
        None => Ok(()),
    }
}

/// The `redis:` and `relay:` blocks, when `redis` is set.
fn resolve_cluster(
    f: &FileConfig,
    keys: &KeySet,
    bind: IpAddr,
    node_ip: IpAddr,
    http_port: u16,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(redis) = &f.redis else {
        let r = &f.relay;
        let any =
            r.port.is_some() || r.address.is_some() || r.node_name.is_some() || r.direct_media.is_some();
        if any || !r.regions.is_empty() || r.grace_period.is_some() || r.secret.is_some() {
            return Err(ConfigError::Invalid {
                key: "relay",
                why: "links between nodes and regions need a region directory: set `redis` too".into(),
            });
        }
        return Ok(None);
    };
    let invalid = |key: &'static str| {
        move |e: pylon_cluster::InvalidName| ConfigError::Invalid {
            key,
            why: e.to_string(),
        }
    };
    let target = redis.target().map_err(|e| ConfigError::Invalid {
        key: "redis",
        why: e.to_string(),
    })?;
    let region = match f.region.as_deref() {
        None | Some("") => "default",
        Some(r) => r,
    };
    let region = pylon_cluster::RegionName::parse(region).map_err(invalid("region"))?;
    let port = f.relay.port.unwrap_or(DEFAULT_RELAY_PORT);
    if port == 0 {
        return Err(ConfigError::Invalid {
            key: "relay.port",
            why: "must not be 0".into(),
        });
    }
    let address = match f.relay.address.as_deref() {
        None => SocketAddr::new(node_ip, port).to_string(),
        Some(a) if a.parse::<IpAddr>().is_ok() => {
            SocketAddr::new(a.parse().expect("checked"), port).to_string()
        }
        Some(a) if a.contains(':') => a.to_string(),
        Some(host) => format!("{host}:{port}"),
    };
    let relay_address = pylon_cluster::RelayAddr::parse(&address).map_err(invalid("relay.address"))?;
    let host = match address.rsplit_once(':') {
        Some((host, _)) => host,
        None => address.as_str(),
    };
    let api_address = format!("{host}:{http_port}");
    let name = match &f.relay.node_name {
        Some(n) => n.clone(),
        None => format!("{}-{port}", host_name()),
    };
    let node = pylon_cluster::NodeId::parse(&name).map_err(invalid("relay.node_name"))?;
    let (_, secret) = first_key(keys).ok_or(ConfigError::Invalid {
        key: "keys",
        why: "nodes of a region prove membership with the API secret: configure keys".into(),
    })?;
    let regions = resolve_regions(&f.relay, &region, &secret)?;
    Ok(Some(ClusterConfig {
        redis: target,
        region,
        node,
        relay_bind: SocketAddr::new(bind, port),
        relay_address,
        api_address,
        secret: secret.into_bytes(),
        regions,
        direct_media: f.relay.direct_media.unwrap_or(true),
    }))
}

fn resolve_drain(d: &DrainFile) -> Result<DrainConfig, ConfigError> {
    let defaults = DrainConfig::default();
    let c = DrainConfig {
        migrate_after: d
            .migrate_after
            .map_or(defaults.migrate_after, Duration::from_secs),
        timeout: d.timeout.map_or(defaults.timeout, Duration::from_secs),
    };
    if c.timeout <= c.migrate_after {
        return Err(ConfigError::Invalid {
            key: "drain.timeout",
            why: format!(
                "must be longer than drain.migrate_after ({} s): participants are asked to move before the node stops",
                c.migrate_after.as_secs()
            ),
        });
    }
    Ok(c)
}

/// `relay.regions`, `relay.grace_period` and `relay.secret`.
fn resolve_regions(
    r: &RelayFile,
    mine: &pylon_cluster::RegionName,
    api_secret: &str,
) -> Result<Option<RegionsConfig>, ConfigError> {
    let invalid = |key: &'static str, why: String| ConfigError::Invalid { key, why };
    if r.regions.is_empty() {
        if r.grace_period.is_some() || r.secret.is_some() {
            return Err(invalid(
                "relay.regions",
                "`relay.grace_period` and `relay.secret` are for links to other regions: list them in `relay.regions`".into(),
            ));
        }
        return Ok(None);
    }
    let secret = match r.secret.as_deref() {
        None | Some("") => {
            return Err(invalid(
                "relay.secret",
                "regions prove membership with a secret they all share: set `relay.secret`".into(),
            ))
        }
        Some(s) if s == api_secret => {
            return Err(invalid(
                "relay.secret",
                "must differ from the API keys' secret (a client API key must not open region links)".into(),
            ))
        }
        Some(s) => s.as_bytes().to_vec(),
    };
    let mut peers = Vec::new();
    for (name, address) in &r.regions {
        let region = pylon_cluster::RegionName::parse(name)
            .map_err(|e| invalid("relay.regions", format!("{name:?}: {e}")))?;
        if &region == mine {
            return Err(invalid(
                "relay.regions",
                format!("{name:?} is this node's own region (`region`)"),
            ));
        }
        let has_port = address
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !has_port {
            return Err(invalid(
                "relay.regions",
                format!("{name}: {address:?} is not host:port"),
            ));
        }
        peers.push((region, address.clone()));
    }
    let grace_period = match r.grace_period {
        None => DEFAULT_GRACE_PERIOD,
        Some(0) => return Err(invalid("relay.grace_period", "must be at least 1 second".into())),
        Some(s) => std::time::Duration::from_secs(s),
    };
    Ok(Some(RegionsConfig {
        peers,
        grace_period,
        secret,
    }))
}

/// The machine's host name (a pod's name on Kubernetes), reduced to what a node name allows.
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    if name.is_empty() {
        "pylon".into()
    } else {
        name
    }
}

fn resolve_bind(f: &FileConfig, o: &Overrides, dev: bool) -> Result<IpAddr, ConfigError> {
    if let Some(ip) = o.bind {
        return Ok(ip);
    }
    if o.dev {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    match f.bind_addresses.as_deref() {
        None | Some([]) => Ok(if dev {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }),
        Some([one]) => one.parse().map_err(|_| ConfigError::Invalid {
            key: "bind_addresses",
            why: format!("{one:?} is not an IP address"),
        }),
        Some(_) => Err(ConfigError::Invalid {
            key: "bind_addresses",
            why: "only one bind address is supported".into(),
        }),
    }
}

fn resolve_node_ip(f: &FileConfig, o: &Overrides, bind: IpAddr, dev: bool) -> Result<IpAddr, ConfigError> {
    if let Some(ip) = o.node_ip {
        return Ok(ip);
    }
    if let Some(s) = &f.rtc.node_ip {
        return s.parse().map_err(|_| ConfigError::Invalid {
            key: "rtc.node_ip",
            why: format!("{s:?} is not an IP address"),
        });
    }
    if !bind.is_unspecified() {
        return Ok(bind);
    }
    if dev {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    Err(ConfigError::Invalid {
        key: "rtc.node_ip",
        why: "required when binding all interfaces: the address clients reach this node's UDP port on".into(),
    })
}

/// The key the dev-mode demo page signs with: the dev key if present, else any.
fn first_key(keys: &KeySet) -> Option<(String, String)> {
    let key = if keys.secret(DEV_API_KEY).is_some() {
        DEV_API_KEY.to_string()
    } else {
        keys.key_names().into_iter().next()?
    };
    let secret = String::from_utf8(keys.secret(&key)?.to_vec()).ok()?;
    Some((key, secret))
}

fn resolve_webhook(
    w: Option<&WebhookFile>,
    keys: &KeySet,
) -> Result<Option<crate::webhook::WebhookConfig>, ConfigError> {
    let Some(w) = w else { return Ok(None) };
    if w.urls.is_empty() {
        return Ok(None);
    }
    let api_key = w.api_key.clone().ok_or_else(|| ConfigError::Invalid {
        key: "webhook.api_key",
        why: "required to sign webhooks".into(),
    })?;
    let secret = keys.secret(&api_key).ok_or_else(|| ConfigError::Invalid {
        key: "webhook.api_key",
        why: format!("{api_key:?} is not one of the configured keys"),
    })?;
    let urls = w
        .urls
        .iter()
        .map(|u| {
            let uri: hyper::Uri = u
                .parse()
                .map_err(|e| ConfigError::Invalid { key: "webhook.urls", why: format!("{u:?}: {e}") })?;
            match uri.scheme_str() {
                Some("http") if uri.host().is_some() => Ok(uri),
                Some("https") => Err(ConfigError::Invalid {
                    key: "webhook.urls",
                    why: format!("{u:?}: https webhook URLs are not supported yet; use http (e.g. to a local TLS proxy)"),
                }),
                _ => Err(ConfigError::Invalid { key: "webhook.urls", why: format!("{u:?} is not an http URL") }),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(crate::webhook::WebhookConfig {
        urls,
        api_key,
        secret: secret.to_vec(),
        queue_size: w.queue_size.unwrap_or(crate::webhook::QUEUE_CAPACITY),
    }))
}

fn resolve_keys(f: &FileConfig, o: &Overrides, dev: bool) -> Result<KeySet, ConfigError> {
    let mut keys = KeySet::new();
    let invalid = |e: pylon_auth::KeyError| ConfigError::Invalid {
        key: "keys",
        why: e.to_string(),
    };
    if let Some(s) = &o.keys {
        // `--keys "key: secret"`, as LiveKit's flag takes them.
        for pair in s.split(',') {
            let (k, v) = pair.split_once(':').ok_or_else(|| ConfigError::Invalid {
                key: "keys",
                why: "--keys takes \"key: secret\" pairs separated by commas".into(),
            })?;
            keys.insert(k.trim(), v.trim()).map_err(invalid)?;
        }
    }
    for (k, v) in f.keys.iter().flatten() {
        keys.insert(k, v).map_err(invalid)?;
    }
    if keys.is_empty() && dev {
        keys.insert(DEV_API_KEY, DEV_API_SECRET).map_err(invalid)?;
    }
    if keys.is_empty() {
        return Err(ConfigError::Invalid {
            key: "keys",
            why: "at least one API key is required (or run with --dev)".into(),
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> Overrides {
        Overrides {
            dev: true,
            ..Default::default()
        }
    }

    #[test]
    fn dev_mode_defaults() {
        let c = Config::resolve(FileConfig::default(), &dev()).unwrap();
        assert_eq!(c.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.http_port, 7880);
        assert_eq!(c.udp_port, 7882);
        assert_eq!(c.tcp_port, Some(7881), "ICE/TCP on LiveKit's default port");
        assert!(c.keys.secret("devkey").is_some());
    }

    #[test]
    fn tcp_port_zero_turns_ice_tcp_off_and_a_clash_is_refused() {
        let f = parse_yaml("rtc:\n  tcp_port: 0\n").unwrap();
        let c = Config::resolve(f, &dev()).unwrap();
        assert_eq!((c.tcp_port, c.shard_config().tcp_candidate), (None, None));
        let f = parse_yaml("rtc:\n  tcp_port: 9881\n").unwrap();
        let c = Config::resolve(f, &dev()).unwrap();
        assert_eq!(
            c.shard_config().tcp_candidate,
            Some("127.0.0.1:9881".parse().unwrap())
        );
        for clash in ["rtc:\n  tcp_port: 7882\n", "port: 9000\nrtc:\n  tcp_port: 9000\n"] {
            let e = Config::resolve(parse_yaml(clash).unwrap(), &dev())
                .unwrap_err()
                .to_string();
            assert!(e.contains("rtc.tcp_port"), "{e}");
        }
    }

    #[test]
    fn livekit_yaml_keys_are_read() {
        let f = parse_yaml(
            "port: 9000\nrtc:\n  udp_port: 9002\n  node_ip: 10.0.0.5\nkeys:\n  k: s\nroom:\n  empty_timeout: 7\n  departure_timeout: 3\n  max_participants: 4\nlogging:\n  level: warn\n",
        )
        .unwrap();
        let c = Config::resolve(f, &Overrides::default()).unwrap();
        assert_eq!((c.http_port, c.udp_port), (9000, 9002));
        assert_eq!(c.node_ip.to_string(), "10.0.0.5");
        assert_eq!(c.room.max_participants, 4);
        assert_eq!(c.room.departure_timeout, Duration::from_secs(3));
        assert_eq!(c.log_level, "warn");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse_yaml("port: 1\nbogus: 2\n").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = parse_yaml("rtc:\n  udp_prot: 2\n").unwrap_err().to_string();
        assert!(e.contains("udp_prot"), "{e}");
    }

    #[test]
    fn invalid_values_are_named() {
        let e = parse_yaml("port: nope\n").unwrap_err().to_string();
        assert!(e.contains("port"), "{e}");
        let f = parse_yaml("logging:\n  level: loud\n").unwrap();
        let e = Config::resolve(f, &dev()).unwrap_err().to_string();
        assert!(e.contains("logging.level"), "{e}");
    }

    #[test]
    fn webhook_needs_a_configured_key_and_http_urls() {
        let f = parse_yaml("webhook:\n  api_key: nope\n  urls: [\"http://127.0.0.1:9/\"]\n").unwrap();
        let e = Config::resolve(f, &dev()).unwrap_err().to_string();
        assert!(e.contains("webhook.api_key"), "{e}");
        let f = parse_yaml("webhook:\n  api_key: devkey\n  urls: [\"ftp://x/\"]\n").unwrap();
        let e = Config::resolve(f, &dev()).unwrap_err().to_string();
        assert!(e.contains("webhook.urls"), "{e}");
        let f = parse_yaml("webhook:\n  api_key: devkey\n  urls: [\"http://127.0.0.1:9/hook\"]\n").unwrap();
        assert_eq!(Config::resolve(f, &dev()).unwrap().webhook.unwrap().urls.len(), 1);
    }

    /// LiveKit's `config-sample.yaml` `rtc:` and `turn:` blocks, every key set.
    const LIVEKIT_SAMPLE_RTC: &str = "rtc:
  port_range_start: 50000
  port_range_end: 60000
  tcp_port: 7881
  packet_buffer_size: 500
  stun_servers:
    - stun.example.com:3478
  turn_servers:
    - host: myhost.com
      port: 443
      protocol: tls
      username: \"u\"
      credential: \"c\"
  congestion_control:
    enabled: true
    allow_pause: true
    probe_mode: padding
  pli_throttle:
    low_quality: 500ms
    mid_quality: 1s
    high_quality: 1s
turn:
  enabled: false
  udp_port: 3478
  tls_port: 5349
  relay_range_start: 1024
  relay_range_end: 30000
  external_tls: true
  domain: turn.myhost.com
  cert_file: /path/to/cert.pem
  key_file: /path/to/key.pem
";

    #[test]
    fn livekit_sample_rtc_and_turn_blocks_work_or_are_refused_with_what_to_do() {
        let c = Config::resolve(parse_yaml(LIVEKIT_SAMPLE_RTC).unwrap(), &dev())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.udp_port, 50000,
            "one UDP port, the first of the operator's range"
        );
        assert_eq!(c.tcp_port, Some(7881));
        let urls: Vec<&str> = c.ice_servers.iter().map(|s| s.urls[0].as_str()).collect();
        assert_eq!(
            urls,
            ["stun:stun.example.com:3478", "turns:myhost.com:443?transport=tcp"]
        );
        assert_eq!(
            (
                c.ice_servers[1].username.as_str(),
                c.ice_servers[1].credential.as_str()
            ),
            ("u", "c")
        );
        assert_eq!(
            c.shard_config().ice_servers,
            c.ice_servers,
            "clients are given them"
        );
        assert_eq!(
            c.shard_config().congestion_control,
            pylon_core::CongestionControl {
                enabled: true,
                allow_pause: true
            },
            "rtc.congestion_control is LiveKit's"
        );
        let off = "rtc:\n  congestion_control:\n    enabled: false\n";
        let off = Config::resolve(parse_yaml(off).unwrap(), &dev()).unwrap();
        assert!(!off.congestion_control.enabled);
        let default = Config::resolve(parse_yaml("").unwrap(), &dev()).unwrap();
        assert_eq!(
            default.congestion_control,
            pylon_core::CongestionControl {
                enabled: false,
                allow_pause: false
            },
            "off unless asked for (LiveKit's default is on; docs/benchmarks.md says why not here)"
        );
        let warned = c.warnings.join("\n");
        for key in [
            "port_range_start",
            "packet_buffer_size",
            "pli_throttle",
            "probe_mode",
        ] {
            assert!(warned.contains(key), "{key} is accepted with a warning: {warned}");
        }
        // What Pylon cannot do is refused, naming the key and what to do instead.
        for (extra, key, advice) in [
            (
                "rtc:\n  use_external_ip: true\n",
                "rtc.use_external_ip",
                "rtc.node_ip",
            ),
            (
                "rtc:\n  interfaces:\n    includes: [en0]\n",
                "rtc.interfaces",
                "rtc.node_ip",
            ),
            (
                "rtc:\n  port_range_start: 9\n  port_range_end: 8\n",
                "rtc.port_range_end",
                "below",
            ),
            (
                "rtc:\n  turn_servers:\n    - host: h\n      port: 1\n      protocol: quic\n",
                "rtc.turn_servers",
                "udp, tcp, tls",
            ),
        ] {
            let e = Config::resolve(parse_yaml(extra).unwrap(), &dev())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains(advice), "{extra}: {e}");
        }
    }

    #[test]
    fn the_turn_block_works_or_is_refused_with_what_to_do() {
        let on = LIVEKIT_SAMPLE_RTC.replace("  enabled: false", "  enabled: true");
        let c = Config::resolve(parse_yaml(&on).unwrap(), &dev()).unwrap_or_else(|e| panic!("{e}"));
        let t = c.turn.as_ref().expect("TURN on");
        assert_eq!(t.udp.map(|a| a.port()), Some(3478));
        assert_eq!(t.relay_range, (1024, 30000));
        assert_eq!(t.ttl, Duration::from_secs(300));
        assert_eq!(t.per_participant_limit, 12);
        let tls = t.tls.as_ref().expect("TLS port");
        assert!(
            tls.acceptor.is_none(),
            "external_tls: plain TCP behind the load balancer"
        );
        let servers = pylon_core::IceCredentials::ice_servers(&t.minter(), "PA_x");
        assert_eq!(
            servers[0].urls,
            [
                format!("turn:{}:3478?transport=udp", c.node_ip),
                "turns:turn.myhost.com:443?transport=tcp".to_string()
            ]
        );
        assert!(servers[0].username.ends_with(":PA_x"));
        assert!(
            c.shard_config().ice_credentials.is_some(),
            "join responses carry them"
        );

        let base = "turn:\n  enabled: true\n";
        let ttl = |extra: &str| {
            let f = parse_yaml(&format!("{base}  udp_port: 3478\n{extra}")).unwrap();
            Config::resolve(f, &dev()).unwrap().turn.unwrap().ttl.as_secs()
        };
        assert_eq!(ttl("  ttl_seconds: 0\n"), 300);
        assert_eq!(ttl("  ttl_seconds: 999999\n"), 86_400);
        for (extra, key, advice) in [
            ("", "turn.enabled", "udp_port"),
            ("  tls_port: 5349\n", "turn.domain", "set turn.domain"),
            ("  tls_port: 5349\n  domain: t.example.com\n", "turn.cert_file", "external_tls"),
            (
                "  tls_port: 5349\n  domain: t.example.com\n  cert_file: /nonexistent.pem\n  key_file: /nonexistent.key\n",
                "turn.cert_file",
                "cannot read",
            ),
            ("  tls_port: 5349\n  domain: localhost\n  external_tls: true\n", "turn.domain", "not a domain"),
            ("  udp_port: 7882\n", "turn.udp_port", "media port"),
            ("  udp_port: 3478\n  relay_range_start: 9000\n  relay_range_end: 8000\n", "turn.relay_range_end", "below"),
            ("  udp_port: 3478\n  allow_restricted_peer_cidrs: [10.0.0.0/8]\n", "turn.allow_restricted_peer_cidrs", "remove"),
            ("  udp_port: 3478\n  deny_peer_cidrs: [10.0.0.0/8]\n", "turn.deny_peer_cidrs", "remove"),
            ("  udp_port: 3478\n  bind_addresses: [0.0.0.0, \"::\"]\n", "turn.bind_addresses", "one address"),
        ] {
            let yaml = format!("{base}{extra}");
            let e = Config::resolve(parse_yaml(&yaml).unwrap(), &dev())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains(advice), "{yaml}: {e}");
        }
    }

    #[test]
    fn workers_default_to_the_cores_and_are_bounded() {
        let c = Config::resolve(FileConfig::default(), &dev()).unwrap();
        assert!(c.workers >= 1);
        assert_eq!(c.room_spread_threshold, DEFAULT_ROOM_SPREAD_THRESHOLD);
        assert!(c.single_peer_connection, "/rtc/v1 is served unless turned off");
        let f = parse_yaml("rtc:\n  workers: 3\n  room_spread_threshold: 2\n").unwrap();
        let c = Config::resolve(f, &dev()).unwrap();
        assert_eq!((c.workers, c.room_spread_threshold), (3, 2));
        let f = parse_yaml("rtc:\n  workers: 100000\n").unwrap();
        let e = Config::resolve(f, &dev()).unwrap_err().to_string();
        assert!(e.contains("rtc.workers"), "{e}");
        let f = parse_yaml("rtc:\n  room_spread_threshold: 0\n").unwrap();
        let e = Config::resolve(f, &dev()).unwrap_err().to_string();
        assert!(e.contains("rtc.room_spread_threshold"), "{e}");
    }

    #[test]
    fn a_region_node_reads_livekits_redis_block_and_pylons_relay_block() {
        let f = parse_yaml(
            "keys:\n  k: a-secret\nregion: eu-west\nredis:\n  address: redis.svc:6380\n  db: 2\nrelay:\n  port: 7999\n  address: pylon-0.pylon\n  node_name: pylon-0\n",
        )
        .unwrap();
        let c = Config::resolve(f, &dev())
            .unwrap()
            .cluster
            .expect("a node of a region");
        assert_eq!(c.region.as_str(), "eu-west");
        assert_eq!(c.node.as_str(), "pylon-0");
        assert_eq!(c.relay_address.as_str(), "pylon-0.pylon:7999");
        assert_eq!(c.api_address, format!("pylon-0.pylon:{DEFAULT_HTTP_PORT}"));
        assert_eq!(c.relay_bind.port(), 7999);
        assert_eq!(c.secret, b"a-secret");
        assert!(c.direct_media, "direct media between nodes is on by default");
        let off =
            parse_yaml("keys:\n  k: s\nredis:\n  address: r:1\nrelay:\n  direct_media: false\n").unwrap();
        let c = Config::resolve(off, &dev()).unwrap().cluster.expect("a node");
        assert!(!c.direct_media);
    }

    #[test]
    fn regions_are_read_from_pylons_relay_block() {
        let f = parse_yaml(
            "keys:\n  k: api-secret\nregion: eu\nredis:\n  address: r:1\nrelay:\n  regions:\n    us-east: pylon-relay-us-east.pylon.svc.cluster.local:7890\n    ap: 10.0.0.9:7890\n  grace_period: 20\n  secret: region-secret\n",
        )
        .unwrap();
        let c = Config::resolve(f, &dev()).unwrap().cluster.unwrap();
        let r = c.regions.expect("links to other regions");
        let peers: Vec<(&str, &str)> = r.peers.iter().map(|(n, a)| (n.as_str(), a.as_str())).collect();
        assert_eq!(
            peers,
            [
                ("ap", "10.0.0.9:7890"),
                ("us-east", "pylon-relay-us-east.pylon.svc.cluster.local:7890")
            ]
        );
        assert_eq!(r.grace_period, std::time::Duration::from_secs(20));
        assert_eq!(r.secret, b"region-secret");
        let f = parse_yaml(
            "keys:\n  k: s\nredis:\n  address: r:1\nrelay:\n  regions: {us: \"g:1\"}\n  secret: x\n",
        )
        .unwrap();
        let r = Config::resolve(f, &dev())
            .unwrap()
            .cluster
            .unwrap()
            .regions
            .unwrap();
        assert_eq!(r.grace_period, DEFAULT_GRACE_PERIOD);
    }

    #[test]
    fn drain_keys_and_secrets_from_the_environment() {
        let c = Config::resolve(FileConfig::default(), &dev()).unwrap();
        assert_eq!(c.drain, DrainConfig::default());
        let f = parse_yaml("drain:\n  migrate_after: 5\n  timeout: 120\n").unwrap();
        let c = Config::resolve(f, &dev()).unwrap();
        assert_eq!(c.drain.migrate_after, Duration::from_secs(5));
        assert_eq!(c.drain.timeout, Duration::from_secs(120));
        let f = parse_yaml("limit:\n  num_tracks: 400\n  bytes_per_sec: 0\n").unwrap();
        let c = Config::resolve(f, &dev()).unwrap();
        assert_eq!((c.limits.num_tracks, c.limits.bytes_per_sec), (Some(400), None));
        let e = parse_yaml("limit:\n  num_trax: 4\n").unwrap_err().to_string();
        assert!(e.contains("num_trax"), "{e}");
        let f = parse_yaml("drain:\n  migrate_after: 30\n  timeout: 30\n").unwrap();
        let e = Config::resolve(f, &dev()).unwrap_err().to_string();
        assert!(e.contains("drain.timeout"), "{e}");

        // PYLON_RELAY_SECRET and PYLON_REDIS_PASSWORD (a Kubernetes Secret) beat the file.
        let yaml =
            "keys:\n  k: s\nredis:\n  address: r:1\n  password: file\nrelay:\n  regions: {us: \"g:1\"}\n";
        let o = Overrides {
            relay_secret: Some("from-env".into()),
            redis_password: Some("env-password".into()),
            ..dev()
        };
        let c = Config::resolve(parse_yaml(yaml).unwrap(), &o)
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(c.regions.unwrap().secret, b"from-env");
        assert_eq!(c.redis.credentials.password.as_deref(), Some("env-password"));
        // PYLON_REDIS_SENTINEL_PASSWORD likewise, for the sentinels.
        let yaml = "keys:\n  k: s\nredis:\n  sentinel_master_name: m\n  sentinel_addresses: [\"s:1\"]\n";
        let o = Overrides {
            redis_sentinel_password: Some("sentinel-env".into()),
            ..dev()
        };
        let c = Config::resolve(parse_yaml(yaml).unwrap(), &o)
            .unwrap()
            .cluster
            .unwrap();
        let pylon_cluster::Server::Sentinel { credentials, .. } = &c.redis.server else {
            panic!("a sentinel target: {:?}", c.redis);
        };
        assert_eq!(credentials.password.as_deref(), Some("sentinel-env"));
        // Without regions the secret from the environment is not an error (one chart for all).
        let c = Config::resolve(parse_yaml("keys:\n  k: s\nredis:\n  address: r:1\n").unwrap(), &o).unwrap();
        assert!(c.cluster.unwrap().regions.is_none());
    }

    #[test]
    fn relay_defaults_follow_node_ip_and_the_host_name() {
        let f = parse_yaml("keys:\n  k: s\nredis:\n  address: 127.0.0.1:6379\n").unwrap();
        let c = Config::resolve(f, &dev()).unwrap().cluster.unwrap();
        assert_eq!(c.region.as_str(), "default");
        assert_eq!(
            c.relay_address.as_str(),
            format!("127.0.0.1:{DEFAULT_RELAY_PORT}")
        );
        assert!(
            c.node.as_str().ends_with(&format!("-{DEFAULT_RELAY_PORT}")),
            "{}",
            c.node.as_str()
        );
    }

    #[test]
    fn region_misconfigurations_are_named() {
        let cases = [
            ("keys:\n  k: s\nredis:\n  cluster_addresses: [a:1]\n", "cluster"),
            ("keys:\n  k: s\nredis:\n  address: \"\"\n", "redis.address"),
            ("keys:\n  k: s\nrelay:\n  port: 7890\n", "redis"),
            (
                "keys:\n  k: s\nredis:\n  address: r:1\nrelay:\n  node_name: \"bad name\"\n",
                "relay.node_name",
            ),
            (
                "keys:\n  k: s\nredis:\n  address: r:1\nregion: \"eu west\"\n",
                "region",
            ),
            (
                "keys:\n  k: s\nredis:\n  address: r:1\nrelay:\n  port: 0\n",
                "relay.port",
            ),
            ("keys:\n  k: s\nredis:\n  address: r:1\n  bogus: 1\n", "bogus"),
            ("keys:\n  k: s\nrelay:\n  regions: {us: \"g:7890\"}\n", "redis"),
            (
                "keys:\n  k: s\nredis:\n  address: r:1\nrelay:\n  regions: {us: \"g:7890\"}\n",
                "relay.secret",
            ),
            (
                "keys:\n  k: s\nredis:\n  address: r:1\nrelay:\n  regions: {us: \"g:7890\"}\n  secret: s\n",
                "differ from the API",
            ),
            (
                "keys:\n  k: s\nregion: us\nredis:\n  address: r:1\nrelay:\n  regions: {us: \"g:7890\"}\n  secret: x\n",
                "own region",
            ),
            (
                "keys:\n  k: s\nredis:\n  address: r:1\nrelay:\n  regions: {us: \"gateway\"}\n  secret: x\n",
                "host:port",
            ),
            (
                "keys:\n  k: s\nredis:\n  address: r:1\nrelay:\n  regions: {us: \"g:1\"}\n  secret: x\n  grace_period: 0\n",
                "relay.grace_period",
            ),
            ("keys:\n  k: s\nredis:\n  address: r:1\nrelay:\n  secret: x\n", "relay.regions"),
        ];
        for (yaml, named) in cases {
            let e = parse_yaml(yaml)
                .and_then(|f| Config::resolve(f, &dev()))
                .map(|_| ())
                .unwrap_err();
            assert!(e.to_string().contains(named), "{yaml:?}: {e}");
        }
    }

    #[test]
    fn production_needs_keys_and_node_ip() {
        let e = Config::resolve(FileConfig::default(), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("keys"), "{e}");
        let f = parse_yaml("keys:\n  k: s\n").unwrap();
        let e = Config::resolve(f, &Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("rtc.node_ip"), "{e}");
    }
}
