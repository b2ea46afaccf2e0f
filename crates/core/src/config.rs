//! Settings the runtime hands to a shard; plain values, parsed and checked by the server.

use std::net::SocketAddr;
use std::time::Duration;

/// Room defaults (LiveKit `room.*` keys).
#[derive(Clone, Debug)]
pub struct RoomDefaults {
    /// Close a room that nobody joined within this time.
    pub empty_timeout: Duration,
    /// Close a room this long after its last participant left.
    pub departure_timeout: Duration,
    /// 0 = unlimited.
    pub max_participants: u32,
}

impl Default for RoomDefaults {
    fn default() -> Self {
        Self {
            empty_timeout: Duration::from_secs(300),
            departure_timeout: Duration::from_secs(20),
            max_participants: 0,
        }
    }
}

/// Mints per-participant ICE servers (the embedded TURN server's credentials). It reads the
/// wall clock, so it lives in the runtime; the core only asks.
pub trait IceCredentials: Send + Sync + std::fmt::Debug {
    fn ice_servers(&self, participant: &str) -> Vec<livekit_protocol::IceServer>;
}

/// Everything a shard needs to know about its node.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// The address advertised as the ICE host candidate (node_ip : rtc.udp_port).
    pub udp_candidate: SocketAddr,
    /// The address advertised as the passive ICE/TCP host candidate (node_ip : rtc.tcp_port),
    /// if TCP media is on.
    pub tcp_candidate: Option<SocketAddr>,
    /// STUN/TURN servers clients are told to use (join and reconnect responses).
    pub ice_servers: Vec<livekit_protocol::IceServer>,
    /// The node's embedded TURN server, which gives each participant its own short-lived
    /// credential in every join and reconnect response.
    pub ice_credentials: Option<std::sync::Arc<dyn IceCredentials>>,
    pub room: RoomDefaults,
    pub region: String,
    pub node_id: String,
    /// A participant whose WebSocket is gone may resume within this window.
    pub resume_window: Duration,
    /// A participant with no media-path packets for this long is considered gone.
    pub transport_timeout: Duration,
    /// The first participant and track key this shard hands out. Keys name tracks on relays,
    /// so the shards of one node start far apart (worker `i` at `i << 48`) and every track key
    /// is unique in the node: a node link carries tracks of several of its workers.
    pub key_base: u64,
    /// A home room instance that is idle reports `RoomIdle` and waits for the runtime's
    /// `close_room` (a node's directory may be placing a participant in it meanwhile);
    /// otherwise the shard closes it itself.
    pub rooms_closed_by_runtime: bool,
    /// The participants of a region whose link went down are kept this long (shown with
    /// connection quality `LOST`), so a short partition does not make them leave and rejoin.
    pub region_grace: Duration,
    /// Downlink congestion control (LiveKit's `rtc.congestion_control`).
    pub congestion_control: CongestionControl,
}

/// Downlink congestion control (LiveKit's `rtc.congestion_control` keys): a bandwidth
/// estimate per subscriber connection (str0m's TWCC estimator) and the allocator that fits
/// the subscriber's video into it (`allocator.rs`, `downlink.rs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CongestionControl {
    pub enabled: bool,
    /// Video a subscriber's link cannot carry at its lowest layer is paused (and the
    /// subscriber told with `StreamStateUpdate`) rather than sent anyway.
    pub allow_pause: bool,
}

impl ShardConfig {
    pub fn new(udp_candidate: SocketAddr) -> Self {
        Self {
            udp_candidate,
            tcp_candidate: None,
            ice_servers: Vec::new(),
            ice_credentials: None,
            room: RoomDefaults::default(),
            region: String::new(),
            node_id: String::new(),
            resume_window: Duration::from_secs(15),
            transport_timeout: Duration::from_secs(10),
            key_base: 0,
            rooms_closed_by_runtime: false,
            region_grace: Duration::from_secs(15),
            congestion_control: CongestionControl::default(),
        }
    }
}

/// The LiveKit server version we advertise. Clients gate features on it (RPC needs
/// ≥ 1.8.0; SVC simulcast only above 1.13.6), so it names the LiveKit release whose
/// behaviour we match, not Pylon's own version.
pub const LIVEKIT_COMPAT_VERSION: &str = "1.13.5";

/// The signalling protocol level we advertise (see livekit-protocol.md §2.4).
pub const SERVER_PROTOCOL: i32 = 17;

/// Keepalive interval and timeout sent in JoinResponse, in seconds (must be > 0).
pub const PING_INTERVAL_SECS: i32 = 5;
pub const PING_TIMEOUT_SECS: i32 = 15;
