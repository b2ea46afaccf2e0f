//! A node of a region: its registration in the region's directory (Redis), its links to the
//! other nodes and to other regions, and how their traffic reaches the workers.
//!
//! **Placement across nodes.** Any node accepts a client and hosts it. The first participant
//! of a room on a node makes the node *open* the room in Redis (claim its record — the first
//! node becomes the room's home — and register the node's instance), read the room's other
//! instances, make sure a link to each is up, and only then place the join on a worker: that
//! worker is the room's **anchor** on this node and holds the room's node links (the core
//! relays between the node's workers and the other nodes through it). After the join, the
//! instances are read again: a node that registered meanwhile is linked too, so two nodes
//! opening one room at once always end up linked (whichever read second sees the other).
//!
//! **Links.** One QUIC link per pair of nodes (`pylon_relay`). The lower node name dials the
//! higher every second while both are alive; a join that needs a link dials at once. Should
//! both ends dial at once, both keep the link dialled by the lower name. A link's index is its
//! [`PlaceId`] (tier `Node`) for the process's lifetime. Every worker holds a clone of each
//! link's handle (sent in its inbox), so sending needs no lock.
//!
//! **Inbound routing** is owned by each link's reader task ([`NodeReceiver`]): state and data
//! go to the room's anchor (asked of the node directory), media to the worker that anchors the
//! track's room (learnt from the state that announced the track), wishes and keyframe requests
//! to the worker whose key space the track id is in (`key_base`).
//!
//! **Regions** (`relay.regions`). In each region the room's home node is its gateway: its
//! anchor holds the room's links to the other regions' homes (tier `Region`, keyed by region
//! and node: `PeerId`). Homes find each other through `Homes` frames: each announces its
//! rooms to every peer region (when it opens one, and every 2 s), over any link to that region
//! or by dialling the region's gateway address; a receiver that is not the room's home answers
//! with its region's home, and the two homes link. A region link down keeps the far
//! participants for `relay.grace_period` (the core shows them `LOST`).
//!
//! **Failure.** A link down makes every worker drop the participants hosted over it (their
//! rooms stay linked and exchange snapshots again when the link is back). Redis down: rooms,
//! links and media go on, `/readyz` answers 503; Redis back (even empty): the lease is
//! re-acquired and everything this node holds is registered again.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pylon_cluster::{
    Claim, DirectoryError, HeldRoom, Lease, NewRoom, NodeId, NodeInfo, RegionName, RoomSettings,
};
use pylon_core::ids::{ParticipantIdentity, ParticipantSid, PlaceId, RelayTrackId, RoomName, RoomSid, Tier};
use pylon_core::relay::{ParticipantState, RelayMessage};
use pylon_core::{RoomDefaults, RoomRecord};
use pylon_relay::{Inbound, LinkHandle, Receiver, Relay, RelayConfig, RoomHome, Secrets};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};

use crate::api::{decode, Encoding};
use crate::config::ClusterConfig;
use crate::directory::{Directory, WorkerId};
use crate::worker::{Command, WorkerHandle};

/// Dead nodes' entries are reaped every this many lease renewals.
const REAP_EVERY: u64 = 10;

/// The rooms this node is home of are announced to every peer region every this many lease
/// renewals (the periodic exchange that repairs missed announcements).
const ANNOUNCE_EVERY: u64 = 2;

/// How long a join waits for the links to the room's other nodes.
const LINK_TIMEOUT: Duration = Duration::from_secs(2);

/// A room as this node opened it in the region's directory.
#[derive(Debug, Clone)]
pub struct ClusterRoom {
    pub record: pylon_cluster::RoomRecord,
    /// Whether this node is the room's home.
    pub home: bool,
}

/// What a node needs to host the first participant of a room.
#[derive(Debug, Clone)]
pub struct OpenedRoom {
    pub room: ClusterRoom,
    /// The room's record as the core sees it.
    pub record: RoomRecord,
    /// The other nodes with an instance, as places.
    pub peers: Vec<PlaceId>,
}

/// What workers tell the cluster (it talks to Redis for them).
#[derive(Debug)]
pub enum ClusterEvent {
    /// The room's last instance on this node closed.
    RoomClosed {
        room: RoomName,
        opened: Option<ClusterRoom>,
    },
    /// A participant session is hosted here (joined, or moved in).
    Joined {
        room: RoomName,
        identity: ParticipantIdentity,
        sid: ParticipantSid,
    },
    /// ... and is not any more (left, replaced, moved out).
    Left {
        room: RoomName,
        identity: ParticipantIdentity,
        sid: ParticipantSid,
    },
}

/// The other end of a link: a node of this region, or a node of another region (node names
/// are unique only within a region).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum PeerId {
    Node(NodeId),
    Region(RegionName, NodeId),
}

impl PeerId {
    fn tier(&self) -> Tier {
        match self {
            PeerId::Node(_) => Tier::Node,
            PeerId::Region(..) => Tier::Region,
        }
    }

    /// The order that decides which of two links both ends dialled survives.
    fn key(region: &str, node: &str) -> String {
        format!("{region}/{node}")
    }
}

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerId::Node(n) => write!(f, "{n}"),
            PeerId::Region(r, n) => write!(f, "{n} (region {r})"),
        }
    }
}

/// The links, by index (an index is never reused; node and region links share the indexes).
#[derive(Default)]
struct Links {
    index: HashMap<PeerId, u32>,
    names: Vec<PeerId>,
    current: Vec<Option<LinkHandle>>,
    /// Relay addresses of the live nodes, from their leases.
    addrs: HashMap<NodeId, String>,
    /// Room API addresses of the live nodes.
    apis: HashMap<NodeId, String>,
    /// Rooms to link over a region link once it is up.
    pending: HashMap<PeerId, HashSet<RoomName>>,
    dialing: HashSet<PeerId>,
    /// Peer regions whose gateway is being dialled.
    dialing_gateway: HashSet<RegionName>,
}

impl Links {
    fn index_of(&mut self, peer: &PeerId) -> u32 {
        if let Some(i) = self.index.get(peer) {
            return *i;
        }
        let i = self.names.len() as u32;
        self.index.insert(peer.clone(), i);
        self.names.push(peer.clone());
        self.current.push(None);
        i
    }

    fn place_of(&mut self, peer: &PeerId) -> PlaceId {
        PlaceId {
            tier: peer.tier(),
            index: self.index_of(peer),
        }
    }

    fn is_up(&self, peer: &PeerId) -> bool {
        self.index
            .get(peer)
            .and_then(|i| self.current[*i as usize].as_ref())
            .is_some_and(LinkHandle::is_open)
    }

    /// An open link to any node of `region`.
    fn to_region(&self, region: &RegionName) -> Option<LinkHandle> {
        (self.names.iter().zip(&self.current))
            .filter(|(p, _)| matches!(p, PeerId::Region(r, _) if r == region))
            .filter_map(|(_, l)| l.as_ref().filter(|l| l.is_open()))
            .next()
            .cloned()
    }
}

pub struct Cluster {
    pub dir: pylon_cluster::Directory,
    config: ClusterConfig,
    me: Weak<Cluster>,
    relay: OnceLock<Arc<Relay>>,
    links: Mutex<Links>,
    link_changed: Notify,
    workers: Vec<WorkerHandle>,
    local: Arc<Mutex<Directory>>,
    defaults: RoomDefaults,
    /// The lease is live (Redis answered the last renewal).
    ready: AtomicBool,
    started_at_ms: u64,
    /// The sessions hosted here, by room and identity (what re-registration tells Redis).
    sessions: Mutex<HashMap<RoomName, HashMap<ParticipantIdentity, ParticipantSid>>>,
    /// Forwards Room API requests to other nodes.
    pub http: crate::region_api::HttpClient,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Cluster {
    /// Bind the relay and start the lease and link maintenance. Needs a tokio runtime.
    pub fn start(
        config: ClusterConfig,
        workers: Vec<WorkerHandle>,
        local: Arc<Mutex<Directory>>,
        defaults: RoomDefaults,
        events: mpsc::UnboundedReceiver<ClusterEvent>,
    ) -> anyhow::Result<Arc<Cluster>> {
        let dir = pylon_cluster::Directory::new(&config.redis, config.region.clone(), config.node.clone())?;
        let cluster = Arc::new_cyclic(|me| Cluster {
            dir,
            config: config.clone(),
            me: me.clone(),
            relay: OnceLock::new(),
            links: Mutex::default(),
            link_changed: Notify::new(),
            workers,
            local,
            defaults,
            ready: AtomicBool::new(false),
            started_at_ms: unix_ms(),
            sessions: Mutex::default(),
            http: crate::region_api::client(),
        });
        let relay = Relay::bind(
            RelayConfig {
                bind: config.relay_bind,
                node: config.node.as_str().to_string(),
                region: config.region.as_str().to_string(),
                secrets: Secrets {
                    cluster: config.secret.clone(),
                    regions: config.regions.as_ref().map(|r| r.secret.clone()),
                },
                direct_media: config.direct_media,
            },
            cluster.clone(),
        )?;
        let _ = cluster.relay.set(relay);
        info!(
            node = %config.node,
            region = %config.region,
            relay = %config.relay_bind,
            advertised = %config.relay_address,
            "node of a region: directory in Redis, relay listening"
        );
        tokio::spawn(cluster.clone().maintain());
        tokio::spawn(cluster.clone().handle_events(events));
        Ok(cluster)
    }

    /// Whether the node is registered in the region (Redis answered its last renewal).
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The links up now: (peer node, peer region, round-trip time), for the metrics.
    pub fn link_report(&self) -> Vec<(String, String, Duration)> {
        (self.links().current.iter().flatten())
            .filter(|l| l.is_open())
            .map(|l| (l.peer().node.clone(), l.peer().region.clone(), l.rtt()))
            .collect()
    }

    pub fn relay_stats(&self) -> Option<Arc<pylon_relay::RelayStats>> {
        self.relay.get().map(|r| r.stats().clone())
    }

    pub fn node(&self) -> &NodeId {
        &self.config.node
    }

    fn links(&self) -> MutexGuard<'_, Links> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<RoomName, HashMap<ParticipantIdentity, ParticipantSid>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn local(&self) -> MutexGuard<'_, Directory> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What this node proposes when it claims a room that may not exist yet.
    fn new_room(&self) -> NewRoom {
        let d = &self.defaults;
        NewRoom {
            sid: RoomSid::generate(&mut rand::rng()),
            metadata: String::new(),
            settings: RoomSettings {
                empty_timeout_secs: d.empty_timeout.as_secs() as u32,
                departure_timeout_secs: d.departure_timeout.as_secs() as u32,
                max_participants: d.max_participants,
            },
        }
    }

    /// Open `room` on this node (its first participant here is about to be placed): claim
    /// it in the region, find its other instances and link to them.
    pub async fn open_room(&self, room: &RoomName) -> Result<OpenedRoom, DirectoryError> {
        let claim = self.dir.claim_room(room, &self.new_room()).await?;
        if let Claim::TookOver(r) = &claim {
            info!(%room, epoch = %r.epoch, "room's home node is gone: this node is its home now");
        }
        let record = claim.into_record();
        let home = &record.home == self.node();
        let peers = self.link_instances(room, &[]).await?;
        Ok(OpenedRoom {
            record: core_record(&record),
            room: ClusterRoom { record, home },
            peers,
        })
    }

    /// The room's instances on other nodes not in `known`, linked (waiting at most
    /// [`LINK_TIMEOUT`] for links that are not up).
    async fn link_instances(
        &self,
        room: &RoomName,
        known: &[PlaceId],
    ) -> Result<Vec<PlaceId>, DirectoryError> {
        let nodes: Vec<NodeId> = (self.dir.instances(room).await?.into_iter())
            .filter(|n| n != self.node())
            .collect();
        let mut places = Vec::new();
        for node in &nodes {
            let place = self.links().place_of(&PeerId::Node(node.clone()));
            if !known.contains(&place) {
                places.push(place);
            }
        }
        let deadline = tokio::time::Instant::now() + LINK_TIMEOUT;
        for node in &nodes {
            self.ensure_link(node, deadline).await;
        }
        Ok(places)
    }

    /// After the first join of a room here was placed: link any instance that registered
    /// while this node was opening the room.
    pub async fn recheck_room(&self, room: RoomName, known: Vec<PlaceId>) {
        // The room's home here tells the other regions at once (not at the next round).
        if self.local().region_gateway(&room).is_some() {
            self.announce(vec![room.clone()]);
        }
        let places = match self.link_instances(&room, &known).await {
            Ok(p) if !p.is_empty() => p,
            Ok(_) => return,
            Err(e) => return debug!(%room, "re-reading the room's instances failed: {e}"),
        };
        let anchor = {
            let mut d = self.local();
            d.add_node_peers(&room, &places);
            d.home(&room)
        };
        if let Some(w) = anchor {
            info!(%room, ?places, "room's instances on other nodes found after opening it");
            self.link_room(w, room, places);
        }
    }

    /// Make sure a link to `node` is up, or give up at `deadline` (the lease maintenance
    /// keeps trying; the room's instances exchange snapshots whenever the link comes up).
    async fn ensure_link(&self, node: &NodeId, deadline: tokio::time::Instant) {
        loop {
            let notified = self.link_changed.notified();
            if self.links().is_up(&PeerId::Node(node.clone())) {
                return;
            }
            if !self.links().addrs.contains_key(node) {
                self.live_nodes().await;
            }
            self.dial(node);
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                warn!(peer = %node, "no link to a node holding the room yet; its participants appear once it is up");
                return;
            }
        }
    }

    /// Dial `node` of this region unless a link is up or a dial is under way.
    fn dial(&self, node: &NodeId) {
        let peer = PeerId::Node(node.clone());
        let addr = self.links().addrs.get(node).cloned();
        if let Some(addr) = addr {
            self.dial_peer(peer, addr);
        }
    }

    /// Dial `peer` at `addr` unless a link is up or a dial is under way.
    fn dial_peer(&self, peer: PeerId, addr: String) {
        {
            let mut links = self.links();
            // A gateway dial under way may reach this very node: its link would replace the
            // other (a flicker the far side would see); the next announcement tries again.
            let gateway_dial = matches!(&peer, PeerId::Region(r, _) if links.dialing_gateway.contains(r));
            if gateway_dial || links.is_up(&peer) || !links.dialing.insert(peer.clone()) {
                return;
            }
        }
        self.spawn_dial(addr, peer.to_string(), move |links| {
            links.dialing.remove(&peer);
        });
    }

    /// Resolve `addr` and dial it; `done` runs once another attempt may start (the dial
    /// itself reports through `link_up`).
    fn spawn_dial(&self, addr: String, what: String, done: impl FnOnce(&mut Links) + Send + 'static) {
        let (Some(relay), Some(me)) = (self.relay.get().cloned(), self.me.upgrade()) else {
            return;
        };
        tokio::spawn(async move {
            match resolve(&addr).await {
                Some(sock) => {
                    debug!(peer = %what, %sock, "dialling");
                    relay.dial(sock);
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                // Logged at debug: a region cut off may stay unresolvable for long; the
                // missing link is what operators see (warned when a room needs it).
                None => debug!(peer = %what, %addr, "cannot resolve the relay address"),
            }
            done(&mut me.links());
        });
    }

    /// The region's live nodes (None if Redis cannot say); their addresses are noted.
    pub async fn live_nodes(&self) -> Option<Vec<NodeId>> {
        match self.dir.nodes().await {
            Ok(nodes) => {
                let mut links = self.links();
                links.addrs = (nodes.iter())
                    .map(|n| (n.id.clone(), n.info.relay_addr.as_str().to_string()))
                    .collect();
                links.apis = (nodes.iter())
                    .filter_map(|n| Some((n.id.clone(), n.info.api_addr.clone()?)))
                    .collect();
                Some(nodes.into_iter().map(|n| n.id).collect())
            }
            Err(e) => {
                debug!("listing the region's nodes failed: {e}");
                None
            }
        }
    }

    /// The nodes holding an instance of `room` (None if Redis cannot say).
    pub async fn room_nodes(&self, room: &RoomName) -> Option<Vec<NodeId>> {
        let nodes = self.dir.instances(room).await.ok()?;
        if nodes
            .iter()
            .any(|n| n != self.node() && !self.links().apis.contains_key(n))
        {
            self.live_nodes().await;
        }
        Some(nodes)
    }

    /// Where `node`'s Room API listens.
    pub fn api_addr(&self, node: &NodeId) -> Option<String> {
        self.links().apis.get(node).cloned()
    }

    /// A Room API request changed the room everywhere: keep its record in step.
    pub(crate) async fn room_changed(&self, method: &str, room: &RoomName, enc: Encoding, body: &[u8]) {
        let result = match method {
            "DeleteRoom" => self.dir.delete_room(room, None).await.map(|_| ()),
            "UpdateRoomMetadata" => match decode::<livekit_protocol::UpdateRoomMetadataRequest>(enc, body) {
                Ok(r) => self.dir.update_metadata(room, &r.metadata).await.map(|_| ()),
                Err(_) => Ok(()),
            },
            _ => Ok(()),
        };
        if let Err(e) = result {
            debug!(%room, method, "updating the room's record failed: {e}");
        }
    }

    /// Renew the lease every second (re-registering everything after Redis lost it), and
    /// keep a link to every live node (the lower name dials).
    async fn maintain(self: Arc<Self>) {
        let mut tick = tokio::time::interval(pylon_cluster::RENEW_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut registered = false;
        for turn in 0u64.. {
            tick.tick().await;
            if turn % REAP_EVERY == REAP_EVERY - 1 {
                // Dead nodes' entries are ignored by readers; this frees them.
                if let Ok(reaped) = self.dir.reap_dead_nodes().await {
                    if !reaped.is_empty() {
                        info!(?reaped, "forgot the entries of nodes whose lease expired");
                    }
                }
            }
            let info = NodeInfo {
                relay_addr: self.config.relay_address.clone(),
                api_addr: Some(self.config.api_address.clone()),
                participants: self.local().participants() as u32,
                started_at_ms: self.started_at_ms,
            };
            // The first registration asserts what this process holds (nothing yet) rather
            // than renewing: a lease still held under this node's name is a former process's
            // (a restart within the lease's lifetime), and the rooms it held are not held now.
            let renewed = if !registered {
                self.reregister(&info).await
            } else {
                match self.dir.renew(&info).await {
                    Ok(Lease::Held) => Ok(()),
                    Ok(Lease::Acquired) => self.reregister(&info).await,
                    Err(e) => Err(e),
                }
            };
            registered |= renewed.is_ok();
            let was = self.ready.swap(renewed.is_ok(), Ordering::Relaxed);
            match (&renewed, was) {
                (Err(e), true) => warn!("region directory unreachable; not ready for new clients: {e}"),
                (Ok(()), false) => info!("registered in the region's directory; ready"),
                _ => {}
            }
            if renewed.is_err() {
                continue;
            }
            for node in self.live_nodes().await.unwrap_or_default() {
                if node.as_str() > self.node().as_str() && !self.links().is_up(&PeerId::Node(node.clone())) {
                    self.dial(&node);
                }
            }
            if turn % ANNOUNCE_EVERY == 0 {
                let rooms = self.local().home_rooms();
                self.announce(rooms);
            }
        }
    }

    /// Tell every peer region that this node is home of `rooms` (over any link to a node of
    /// that region, else by dialling the region's gateway address).
    fn announce(&self, rooms: Vec<RoomName>) {
        let Some(regions) = &self.config.regions else {
            return;
        };
        if rooms.is_empty() {
            return;
        }
        let homes: Vec<RoomHome> = (rooms.iter())
            .map(|room| RoomHome {
                room: room.as_str().to_string(),
                node: self.node().as_str().to_string(),
                address: self.config.relay_address.as_str().to_string(),
            })
            .collect();
        for (region, gateway) in &regions.peers {
            let link = self.links().to_region(region);
            match link {
                Some(link) => {
                    link.send_homes(homes.clone());
                }
                None => self.dial_gateway(region, gateway),
            }
        }
    }

    /// Dial a peer region's gateway (any of its nodes answers); the next announcement goes
    /// over the link.
    fn dial_gateway(&self, region: &RegionName, gateway: &str) {
        if !self.links().dialing_gateway.insert(region.clone()) {
            return;
        }
        let region = region.clone();
        self.spawn_dial(
            gateway.to_string(),
            format!("gateway of region {region}"),
            move |links| {
                links.dialing_gateway.remove(&region);
            },
        );
    }

    /// A peer region (over `link`) says which of its nodes is home of these rooms. Where
    /// this node is the room's home here, the two homes link the room (dialling the other
    /// if no link to it is up); where another node here is, the sender is told which; a
    /// room this region does not hold is ignored (its first join here will be announced).
    /// An entry naming another node than the sender is such an answer and is never answered.
    async fn on_homes(&self, region: RegionName, link: LinkHandle, homes: Vec<RoomHome>) {
        let mut answers = Vec::new();
        for h in homes {
            let room_ok = !h.room.is_empty() && pylon_core::limits::check_room_name(&h.room).is_ok();
            let (true, Ok(node)) = (room_ok, NodeId::parse(&h.node)) else {
                debug!(%region, room = %h.room, node = %h.node, "invalid room home announced; ignored");
                continue;
            };
            let room = RoomName::new(h.room);
            let from_sender = link.peer().node == h.node;
            let peer = PeerId::Region(region.clone(), node);
            let gateway = self.local().region_gateway(&room);
            if let Some(anchor) = gateway {
                let (place, up) = {
                    let mut links = self.links();
                    let place = links.place_of(&peer);
                    let up = links.is_up(&peer);
                    if !up {
                        links
                            .pending
                            .entry(peer.clone())
                            .or_default()
                            .insert(room.clone());
                    }
                    (place, up)
                };
                if up {
                    self.link_room(anchor, room, vec![place]);
                } else {
                    self.dial_peer(peer, h.address);
                }
                continue;
            }
            if !from_sender {
                continue;
            }
            let home = match self.dir.room(&room).await {
                Ok(Some(record)) => record.home,
                Ok(None) => continue,
                Err(e) => {
                    debug!(%room, "reading the room's record failed: {e}");
                    continue;
                }
            };
            if !self.links().addrs.contains_key(&home) {
                self.live_nodes().await;
            }
            if let Some(address) = self.links().addrs.get(&home).cloned() {
                answers.push(RoomHome {
                    room: room.as_str().to_string(),
                    node: home.as_str().to_string(),
                    address,
                });
            }
        }
        if !answers.is_empty() {
            link.send_homes(answers);
        }
    }

    /// A link to `dead` went down: once its lease has had time to lapse, claim the rooms it
    /// was home of that this node holds. Redis decides atomically: if `dead` is alive (only the
    /// link broke) nothing changes; of several survivors exactly one becomes home, and its
    /// anchor then owns the room's timeouts and sends `room_finished`.
    async fn take_over_from(&self, dead: NodeId) {
        tokio::time::sleep(pylon_cluster::LEASE_TTL + Duration::from_secs(1)).await;
        let rooms: Vec<RoomName> = (self.local().cluster_rooms().into_iter())
            .filter(|(_, o)| o.as_ref().is_some_and(|o| !o.home && o.record.home == dead))
            .map(|(name, _)| name)
            .collect();
        for room in rooms {
            match self.dir.claim_room(&room, &self.new_room()).await {
                Ok(Claim::TookOver(record)) | Ok(Claim::Created(record)) => {
                    info!(%room, epoch = %record.epoch, former = %dead, "the room's home node is gone: this node is its home now");
                    let anchor = self.local().became_home(&room, record);
                    if let Some(w) = anchor {
                        self.workers[w as usize].send(Command::BecomeHome { room });
                    }
                }
                Ok(Claim::Joined(record)) => {
                    debug!(%room, home = %record.home, "the room's home is still alive or another node took over");
                    self.local().set_cluster_record(&room, record);
                }
                Err(e) => debug!(%room, "taking over the room failed: {e}"),
            }
        }
    }

    /// The node stops: its links close (peers drop its participants at once instead of after
    /// the link timeout) and it leaves the region's directory.
    pub async fn shutdown(&self) {
        if let Some(relay) = self.relay.get() {
            relay.close();
        }
        match tokio::time::timeout(Duration::from_secs(1), self.dir.leave()).await {
            Ok(Ok(())) => info!("left the region's directory"),
            _ => warn!("could not leave the region's directory; the lease expires on its own"),
        }
    }

    /// Tell the directory everything this node holds (after Redis lost it).
    async fn reregister(&self, info: &NodeInfo) -> Result<(), DirectoryError> {
        let held = self.local().cluster_rooms();
        let rooms: Vec<HeldRoom> = {
            let sessions = self.sessions();
            (held.into_iter())
                .map(|(name, opened)| HeldRoom {
                    participants: (sessions.get(&name).into_iter().flatten())
                        .map(|(i, s)| (i.clone(), s.clone()))
                        .collect(),
                    name,
                    record: opened.filter(|o| o.home).map(|o| o.record),
                })
                .collect()
        };
        let n = rooms.len();
        let r = self.dir.reregister(info, &rooms).await?;
        info!(
            rooms = n,
            superseded = r.superseded.len(),
            "re-registered with the region's directory"
        );
        Ok(())
    }

    async fn handle_events(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<ClusterEvent>) {
        while let Some(e) = events.recv().await {
            match e {
                ClusterEvent::Joined { room, identity, sid } => {
                    (self.sessions().entry(room.clone()).or_default()).insert(identity.clone(), sid.clone());
                    if let Err(e) = self.dir.set_identity(&room, &identity, &sid).await {
                        debug!(%room, %identity, "registering the identity failed: {e}");
                    }
                }
                ClusterEvent::Left { room, identity, sid } => {
                    {
                        let mut sessions = self.sessions();
                        if let Some(r) = sessions.get_mut(&room) {
                            if r.get(&identity) == Some(&sid) {
                                r.remove(&identity);
                            }
                            if r.is_empty() {
                                sessions.remove(&room);
                            }
                        }
                    }
                    if let Err(e) = self.dir.clear_identity(&room, &identity, &sid).await {
                        debug!(%room, %identity, "clearing the identity failed: {e}");
                    }
                }
                ClusterEvent::RoomClosed { room, opened } => {
                    let result = match opened {
                        Some(o) if o.home => self
                            .dir
                            .delete_room(&room, Some(o.record.epoch))
                            .await
                            .map(|_| ()),
                        _ => self.dir.remove_instance(&room).await,
                    };
                    match result {
                        Ok(()) => debug!(%room, "room's instance here unregistered"),
                        // Re-registration will state what this node holds.
                        Err(e) => debug!(%room, "unregistering the room failed: {e}"),
                    }
                }
            }
        }
    }

    /// Link the instance of `room` on worker `anchor` to more places.
    fn link_room(&self, anchor: WorkerId, room: RoomName, places: Vec<PlaceId>) {
        self.workers[anchor as usize].send(Command::LinkRoom { room, places });
    }

    fn broadcast(&self, place: PlaceId, link: Option<LinkHandle>) {
        for w in &self.workers {
            w.node_link(place, link.clone());
        }
    }

    /// Who a link's peer is, as this node keys its links.
    fn peer_id(&self, link: &LinkHandle) -> Option<PeerId> {
        let peer = link.peer();
        let node = NodeId::parse(&peer.node).ok()?;
        if peer.region == self.config.region.as_str() {
            return Some(PeerId::Node(node));
        }
        let region = RegionName::parse(&peer.region).ok()?;
        Some(PeerId::Region(region, node))
    }
}

/// The cluster's room record as the core takes it.
fn core_record(r: &pylon_cluster::RoomRecord) -> RoomRecord {
    RoomRecord {
        sid: r.sid.clone(),
        creation_unix_ms: r.created_at_ms as i64,
        metadata: r.metadata.clone(),
        settings: RoomDefaults {
            empty_timeout: Duration::from_secs(r.settings.empty_timeout_secs.into()),
            departure_timeout: Duration::from_secs(r.settings.departure_timeout_secs.into()),
            max_participants: r.settings.max_participants,
        },
    }
}

async fn resolve(addr: &str) -> Option<SocketAddr> {
    if let Ok(a) = addr.parse() {
        return Some(a);
    }
    tokio::net::lookup_host(addr).await.ok()?.next()
}

impl Inbound for Cluster {
    fn link_up(&self, link: LinkHandle) -> Box<dyn Receiver> {
        let me = PeerId::key(self.config.region.as_str(), self.node().as_str());
        let receiver =
            |place: PlaceId, cluster: Option<Arc<Cluster>>, link: LinkHandle| -> Box<dyn Receiver> {
                Box::new(NodeReceiver {
                    place,
                    cluster,
                    link,
                    tracks: HashMap::new(),
                    owners: HashMap::new(),
                    held: Vec::new(),
                })
            };
        let Some(peer) = self.peer_id(&link) else {
            warn!(peer = %link.peer().node, region = %link.peer().region, "a node with an invalid name linked; closing the link");
            link.close("invalid node name");
            return receiver(node_place(u32::MAX), None, link);
        };
        let theirs = PeerId::key(&link.peer().region, &link.peer().node);
        let dialer = |l: &LinkHandle| if l.dialed() { me.clone() } else { theirs.clone() };
        let (place, keep, pending) = {
            let mut links = self.links();
            let place = links.place_of(&peer);
            links.dialing.remove(&peer);
            let slot = &mut links.current[place.index as usize];
            let keep = match slot.as_ref().filter(|old| old.is_open()) {
                // Both ends dialled at once: both keep the link the lower name dialled.
                Some(old)
                    if dialer(old) != dialer(&link) && dialer(old) == me.clone().min(theirs.clone()) =>
                {
                    false
                }
                Some(old) => {
                    old.close("replaced by a newer link");
                    true
                }
                None => true,
            };
            if keep {
                *slot = Some(link.clone());
            }
            let pending = if keep { links.pending.remove(&peer) } else { None };
            (place, keep, pending)
        };
        if keep {
            info!(%peer, index = place.index, "link up");
            self.broadcast(place, Some(link.clone()));
            self.link_changed.notify_waiters();
            // Rooms both homes hold, waiting for this region link.
            for room in pending.into_iter().flatten() {
                if let Some(anchor) = self.local().region_gateway(&room) {
                    self.link_room(anchor, room, vec![place]);
                }
            }
        } else {
            debug!(%peer, "duplicate link closed");
            link.close("duplicate link");
        }
        receiver(place, self.me.upgrade(), link)
    }

    fn link_down(&self, link: &LinkHandle) {
        let Some(peer) = self.peer_id(link) else {
            return;
        };
        let place = {
            let mut links = self.links();
            let Some(&index) = links.index.get(&peer) else {
                return;
            };
            let slot = &mut links.current[index as usize];
            if slot.as_ref().map(LinkHandle::id) != Some(link.id()) {
                return;
            }
            *slot = None;
            PlaceId {
                tier: peer.tier(),
                index,
            }
        };
        self.broadcast(place, None);
        match peer {
            PeerId::Node(node) => {
                warn!(peer = %node, "node link down: its participants leave this node's rooms");
                if let Some(me) = self.me.upgrade() {
                    tokio::spawn(async move { me.take_over_from(node).await });
                }
            }
            PeerId::Region(..) => {
                warn!(%peer, "region link down: its participants are kept for the grace period");
            }
        }
    }
}

fn node_place(index: u32) -> PlaceId {
    PlaceId {
        tier: Tier::Node,
        index,
    }
}

/// Routes one link's messages to the workers; owned by the link's reader task.
struct NodeReceiver {
    place: PlaceId,
    cluster: Option<Arc<Cluster>>,
    link: LinkHandle,
    /// The worker anchoring each relayed track's room here.
    tracks: HashMap<RelayTrackId, WorkerId>,
    /// Each remote participant's tracks (forgotten when it leaves).
    owners: HashMap<(RoomName, ParticipantSid), Vec<RelayTrackId>>,
    /// Messages held for each worker until the link's reader flushes (one wake per run).
    held: Vec<Vec<RelayMessage>>,
}

impl NodeReceiver {
    fn learn(&mut self, room: &RoomName, state: &ParticipantState, anchor: WorkerId) {
        let Some(sid) = ParticipantSid::parse(&state.info.sid) else {
            return;
        };
        let ids: Vec<RelayTrackId> = state.tracks.iter().map(|(_, id)| *id).collect();
        for id in &ids {
            self.tracks.insert(*id, anchor);
        }
        self.owners.insert((room.clone(), sid), ids);
    }

    /// Hold a message for a worker until the next flush.
    fn hold(&mut self, w: WorkerId, msg: RelayMessage) {
        let w = w as usize;
        if self.cluster.as_ref().is_some_and(|c| w < c.workers.len()) {
            if self.held.len() <= w {
                self.held.resize_with(w + 1, Vec::new);
            }
            self.held[w].push(msg);
        }
    }

    fn forget(&mut self, room: &RoomName, sid: Option<&ParticipantSid>) {
        let gone: Vec<(RoomName, ParticipantSid)> = (self.owners.keys())
            .filter(|(r, s)| r == room && sid.is_none_or(|x| x == s))
            .cloned()
            .collect();
        for key in gone {
            for id in self.owners.remove(&key).unwrap_or_default() {
                self.tracks.remove(&id);
            }
        }
    }
}

impl Receiver for NodeReceiver {
    fn homes(&mut self, homes: Vec<RoomHome>) {
        let (Some(cluster), Ok(region)) = (self.cluster.clone(), RegionName::parse(&self.link.peer().region))
        else {
            return;
        };
        if self.place.tier != Tier::Region {
            return debug!(peer = %self.link.peer().node, "room homes from a node of this region; ignored");
        }
        let link = self.link.clone();
        tokio::spawn(async move { cluster.on_homes(region, link, homes).await });
    }

    fn flush(&mut self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        for (w, held) in self.held.iter_mut().enumerate() {
            if let Some(h) = cluster.workers.get(w).filter(|_| !held.is_empty()) {
                h.relay_batch(self.place, held);
            }
        }
    }

    fn message(&mut self, msg: RelayMessage) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        let place = self.place;
        let room = match &msg {
            RelayMessage::Rtp(r) => {
                if let Some(&w) = self.tracks.get(&r.track) {
                    self.hold(w, msg);
                }
                return;
            }
            // A track id carries its origin worker's key space (`key_base`).
            RelayMessage::Wish { track, .. } | RelayMessage::Keyframe { track } => {
                return self.hold((track.0 >> 48) as WorkerId, msg);
            }
            RelayMessage::Hello { room, .. }
            | RelayMessage::Bye { room }
            | RelayMessage::Participant { room, .. }
            | RelayMessage::Left { room, .. }
            | RelayMessage::Data { room, .. }
            | RelayMessage::Quality { room, .. }
            // Data tracks are relayed by the room's instance linked to the other node: its
            // anchor, which passes them to and from its other workers.
            | RelayMessage::DataWish { room, .. }
            | RelayMessage::DataFrame { room, .. } => room.clone(),
        };
        // Another region talks to the room's home here (its gateway), and to no other node.
        let anchor = match place.tier {
            Tier::Region => cluster.local().region_gateway(&room),
            _ => cluster.local().home(&room),
        };
        let Some(anchor) = anchor else {
            // No instance here (it closed): say so, so the sender stops waiting for us.
            if let RelayMessage::Hello { reply: true, .. } = msg {
                debug!(%room, peer = %self.link.peer().node, "hello for a room not held here");
                self.link.send(RelayMessage::Bye { room });
            }
            return;
        };
        match &msg {
            RelayMessage::Hello { participants, .. } => {
                self.forget(&room, None);
                for p in participants {
                    self.learn(&room, p, anchor);
                }
            }
            RelayMessage::Participant { state, .. } => self.learn(&room, state, anchor),
            RelayMessage::Left { sid, .. } => self.forget(&room, Some(sid)),
            RelayMessage::Bye { .. } => self.forget(&room, None),
            _ => {}
        }
        self.hold(anchor, msg);
    }
}
