//! A node of a region: its registration in the region's directory (Redis), its links to the
//! other nodes, and how their traffic reaches the workers.
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
//! **Failure.** A link down makes every worker drop the participants hosted over it (their
//! rooms stay linked and exchange snapshots again when the link is back). Redis down: rooms,
//! links and media go on, `/readyz` answers 503; Redis back (even empty): the lease is
//! re-acquired and everything this node holds is registered again.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pylon_cluster::{Claim, DirectoryError, HeldRoom, Lease, NewRoom, NodeId, NodeInfo, RoomSettings};
use pylon_core::ids::{ParticipantIdentity, ParticipantSid, PlaceId, RelayTrackId, RoomName, RoomSid, Tier};
use pylon_core::relay::{ParticipantState, RelayMessage};
use pylon_core::{RoomDefaults, RoomRecord};
use pylon_relay::{Inbound, LinkHandle, Receiver, Relay, RelayConfig};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};

use crate::api::{decode, Encoding};
use crate::config::ClusterConfig;
use crate::directory::{Directory, WorkerId};
use crate::worker::{Command, WorkerHandle};

/// Dead nodes' entries are reaped every this many lease renewals.
const REAP_EVERY: u64 = 10;

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

/// The links, by index (an index is never reused).
#[derive(Default)]
struct Links {
    index: HashMap<NodeId, u32>,
    names: Vec<NodeId>,
    current: Vec<Option<LinkHandle>>,
    /// Relay addresses of the live nodes, from their leases.
    addrs: HashMap<NodeId, String>,
    /// Room API addresses of the live nodes.
    apis: HashMap<NodeId, String>,
    dialing: HashSet<NodeId>,
}

impl Links {
    fn index_of(&mut self, node: &NodeId) -> u32 {
        if let Some(i) = self.index.get(node) {
            return *i;
        }
        let i = self.names.len() as u32;
        self.index.insert(node.clone(), i);
        self.names.push(node.clone());
        self.current.push(None);
        i
    }

    fn is_up(&self, node: &NodeId) -> bool {
        self.index
            .get(node)
            .and_then(|i| self.current[*i as usize].as_ref())
            .is_some_and(LinkHandle::is_open)
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

fn node_place(index: u32) -> PlaceId {
    PlaceId {
        tier: Tier::Node,
        index,
    }
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
                secret: config.secret.clone(),
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
            let place = node_place(self.links().index_of(node));
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
            self.workers[w as usize].send(Command::LinkRoom { room, places });
        }
    }

    /// Make sure a link to `node` is up, or give up at `deadline` (the lease maintenance
    /// keeps trying; the room's instances exchange snapshots whenever the link comes up).
    async fn ensure_link(&self, node: &NodeId, deadline: tokio::time::Instant) {
        loop {
            let notified = self.link_changed.notified();
            if self.links().is_up(node) {
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

    /// Dial `node` unless a link is up or a dial is under way.
    fn dial(&self, node: &NodeId) {
        let addr = {
            let mut links = self.links();
            if links.is_up(node) || links.dialing.contains(node) {
                return;
            }
            let Some(addr) = links.addrs.get(node).cloned() else {
                return;
            };
            links.dialing.insert(node.clone());
            addr
        };
        let (Some(relay), Some(me)) = (self.relay.get().cloned(), self.me.upgrade()) else {
            return;
        };
        let node = node.clone();
        tokio::spawn(async move {
            match resolve(&addr).await {
                Some(sock) => {
                    debug!(peer = %node, %sock, "dialling");
                    relay.dial(sock);
                    // The dial reports through `link_up`; allow another attempt after a while.
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                None => warn!(peer = %node, %addr, "cannot resolve the node's relay address"),
            }
            me.links().dialing.remove(&node);
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
            let renewed = match self.dir.renew(&info).await {
                Ok(Lease::Held) => Ok(()),
                Ok(Lease::Acquired) => self.reregister(&info).await,
                Err(e) => Err(e),
            };
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
                if node.as_str() > self.node().as_str() && !self.links().is_up(&node) {
                    self.dial(&node);
                }
            }
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

    fn broadcast(&self, index: u32, link: Option<LinkHandle>) {
        for w in &self.workers {
            w.node_link(index, link.clone());
        }
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
        let me = self.node().as_str();
        let peer = link.peer().node.clone();
        let receiver = |index: u32, cluster: Option<Arc<Cluster>>, link: LinkHandle| -> Box<dyn Receiver> {
            Box::new(NodeReceiver {
                place: node_place(index),
                cluster,
                link,
                tracks: HashMap::new(),
                owners: HashMap::new(),
            })
        };
        let Ok(node) = NodeId::parse(&peer) else {
            warn!(%peer, "a node with an invalid name linked; closing the link");
            link.close("invalid node name");
            return receiver(u32::MAX, None, link);
        };
        let dialer = |l: &LinkHandle| if l.dialed() { me.to_string() } else { peer.clone() };
        let (index, keep) = {
            let mut links = self.links();
            let index = links.index_of(&node);
            links.dialing.remove(&node);
            let slot = &mut links.current[index as usize];
            let keep = match slot.as_ref().filter(|old| old.is_open()) {
                // Both ends dialled at once: both keep the link the lower name dialled.
                Some(old)
                    if dialer(old) != dialer(&link) && dialer(old).as_str() == me.min(peer.as_str()) =>
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
            (index, keep)
        };
        if keep {
            info!(peer = %node, index, "node link up");
            self.broadcast(index, Some(link.clone()));
            self.link_changed.notify_waiters();
        } else {
            debug!(peer = %node, "duplicate link closed");
            link.close("duplicate link");
        }
        receiver(index, self.me.upgrade(), link)
    }

    fn link_down(&self, link: &LinkHandle) {
        let Ok(node) = NodeId::parse(&link.peer().node) else {
            return;
        };
        let index = {
            let mut links = self.links();
            let Some(&index) = links.index.get(&node) else {
                return;
            };
            let slot = &mut links.current[index as usize];
            if slot.as_ref().map(LinkHandle::id) != Some(link.id()) {
                return;
            }
            *slot = None;
            index
        };
        warn!(peer = %node, "node link down: its participants leave this node's rooms");
        self.broadcast(index, None);
        if let Some(me) = self.me.upgrade() {
            tokio::spawn(async move { me.take_over_from(node).await });
        }
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
    fn message(&mut self, msg: RelayMessage) {
        let Some(cluster) = self.cluster.clone() else {
            return;
        };
        let place = self.place;
        let to_worker = |w: WorkerId, msg: RelayMessage| {
            if let Some(h) = cluster.workers.get(w as usize) {
                h.relay_from(place, msg);
            }
        };
        let room = match &msg {
            RelayMessage::Rtp(r) => {
                if let Some(&w) = self.tracks.get(&r.track) {
                    to_worker(w, msg);
                }
                return;
            }
            // A track id carries its origin worker's key space (`key_base`).
            RelayMessage::Wish { track, .. } | RelayMessage::Keyframe { track } => {
                return to_worker((track.0 >> 48) as WorkerId, msg);
            }
            RelayMessage::Hello { room, .. }
            | RelayMessage::Bye { room }
            | RelayMessage::Participant { room, .. }
            | RelayMessage::Left { room, .. }
            | RelayMessage::Data { room, .. } => room.clone(),
        };
        let anchor = cluster.local().home(&room);
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
        to_worker(anchor, msg);
    }
}
