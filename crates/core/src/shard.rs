//! The shard: a sans-IO engine that owns the instances of rooms at one place (a media worker
//! thread), the participants hosted there with their str0m peer connections, and mirrors of
//! the participants hosted at the places its rooms are linked to.
//!
//! The runtime feeds it signalling commands, UDP datagrams, relay messages and timeouts,
//! each with `now`, and drains [`Output`]s: signal responses to sessions, sessions to close,
//! datagrams to transmit, webhooks, relay messages for other places, and events for the
//! node's directory. Nothing here reads a clock, spawns a task or takes a lock; one worker
//! thread owns one shard by `&mut`. The work is split by concept: `signal` (join, resume,
//! commands), `publish`, `subscribe`, `forward` (media in and out), `datachannel`,
//! `mirror` (relay input), `admin`; state lives in its owners (`Room`, `Participant`,
//! `Track`, `DownTrack`, `SubscriberNegotiation`, `Timers`).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use livekit_protocol as lk;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rustc_hash::{FxHashMap, FxHashSet};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::Input;
use tracing::{debug, info, warn};

use crate::client::ClientTraits;
use crate::config::{ShardConfig, LIVEKIT_COMPAT_VERSION, SERVER_PROTOCOL};
use crate::ids::{
    ParticipantIdentity, ParticipantKey, ParticipantSid, PlaceId, RelayTrackId, RoomName, RoomSid, SessionId,
    TrackKey, TrackSid,
};
use crate::participant::{Participant, RemoteParticipant};
use crate::peer::{NotRun, PcKind, PeerFactory, PeerRef, Remote, MAX_PEER_ADDRS};
use crate::relay::RelayMessage;
use crate::room::{Placement, Room};
use crate::timers::Timers;
use crate::track::Track;

/// What the shard asks the runtime to do.
#[derive(Debug)]
pub enum Output {
    /// Send this message on the session's WebSocket.
    Signal(SessionId, Box<lk::SignalResponse>),
    /// Close the session's WebSocket once the messages queued before this are sent.
    Close(SessionId),
    /// Send a datagram.
    Transmit(Transmit),
    /// A webhook event for the notifier (room, participant and track lifecycle).
    Webhook(Box<lk::WebhookEvent>),
    /// A message for a room's instance at another place.
    Relay(PlaceId, RelayMessage),
    /// Bookkeeping for whoever places rooms and routes datagrams.
    Event(ShardEvent),
}

/// What the node's directory and demux need to know about this shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardEvent {
    /// A participant hosted here is gone (left, removed, timed out, replaced, moved away).
    ParticipantLeft {
        room: RoomName,
        identity: ParticipantIdentity,
        sid: ParticipantSid,
    },
    /// A participant hosted here moved to another room.
    ParticipantMoved {
        from: RoomName,
        to: RoomName,
        identity: ParticipantIdentity,
        sid: ParticipantSid,
    },
    /// A home instance has been empty past its timeout. With a runtime that places rooms
    /// ([`ShardConfig::rooms_closed_by_runtime`]) it stays until [`Shard::close_room`].
    RoomIdle { room: RoomName, sid: RoomSid },
    /// The room's instance here ended.
    RoomClosed { room: RoomName, sid: RoomSid },
    /// A source address was proven (by a STUN request str0m accepted) to reach a peer here.
    AddressLearned(SocketAddr),
    /// ... and no longer does.
    AddressForgotten(SocketAddr),
    /// An ICE username fragment names a peer connection here.
    UfragAdded(String),
    /// ... and no longer does.
    UfragRemoved(String),
}

/// A join, already authenticated and parsed by the signalling edge.
#[derive(Debug, Clone)]
pub struct JoinParams {
    pub session: SessionId,
    pub room: RoomName,
    pub identity: ParticipantIdentity,
    pub name: String,
    pub metadata: String,
    pub attributes: HashMap<String, String>,
    pub permission: pylon_auth::ParticipantPermission,
    /// `ParticipantInfo.Kind` from the token.
    pub kind: i32,
    pub auto_subscribe: bool,
    /// The client's signalling protocol level.
    pub protocol: i32,
    /// Where the room's instance here sits among the room's others.
    pub placement: Placement,
    /// What the client can take (from its `ClientInfo`).
    pub client: ClientTraits,
    /// One peer connection for both directions (`/rtc/v1`; `single_pc.rs`).
    pub single_pc: bool,
    /// The publisher offer that came with the join request (`/rtc/v1`): SDP and offer id,
    /// answered right after the JoinResponse.
    pub publisher_offer: Option<(String, u32)>,
}

impl JoinParams {
    /// A standard participant with LiveKit's default grants (publish, subscribe, data),
    /// auto-subscribing, at the current protocol, in a standalone room: what tests, fuzz
    /// targets and benchmarks join with.
    pub fn standard(session: SessionId, room: &str, identity: &str) -> Self {
        let grant = pylon_auth::VideoGrant {
            room_join: true,
            room: room.into(),
            ..Default::default()
        };
        Self {
            session,
            room: RoomName::new(room),
            identity: ParticipantIdentity::new(identity),
            name: String::new(),
            metadata: String::new(),
            attributes: HashMap::new(),
            permission: grant.permission(),
            kind: 0,
            auto_subscribe: true,
            protocol: SERVER_PROTOCOL,
            placement: Placement::default(),
            client: ClientTraits::default(),
            single_pc: false,
            publisher_offer: None,
        }
    }
}

/// A resume (`reconnect=1`) of an existing participant session.
#[derive(Debug, Clone)]
pub struct ResumeParams {
    pub session: SessionId,
    pub room: RoomName,
    pub identity: ParticipantIdentity,
    pub sid: ParticipantSid,
}

/// Why a join was refused; each maps to one HTTP status at the edge.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("room has exceeded its max participants")]
    RoomFull,
    #[error("could not create peer connection: {0}")]
    Rtc(String),
    /// A service the node depends on to place the join is unreachable (the runtime's).
    #[error("service unavailable: {0}")]
    Unavailable(String),
}

/// Whether a datagram belonged to this shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// A peer here took it (or it was a malformed packet for one).
    Handled,
    /// Neither its source address nor its STUN username names a peer here: the runtime may
    /// know another place that hosts it.
    NotMine,
}

/// Housekeeping (participant and room timeouts, dynacast holds, active speakers) runs at most
/// this often.
const HOUSEKEEPING_INTERVAL: Duration = crate::speakers::SPEAKER_INTERVAL;

/// Counters the runtime exports as metrics (each only grows).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShardStats {
    pub datagrams_in: u64,
    pub rtp_in: u64,
    pub rtp_out: u64,
    pub datagrams_dropped: u64,
    pub data_packets_forwarded: u64,
    pub relay_in: u64,
    pub relay_out: u64,
    /// Media from hosted publishers, by kind ([`KIND_AUDIO`], [`KIND_VIDEO`]).
    pub media_in: [PacketCount; 2],
    /// Media written to hosted subscribers, by kind.
    pub media_out: [PacketCount; 2],
    /// Packets hosted publishers sent that never arrived (see [`crate::loss`]).
    pub lost_in: u64,
    /// Packets subscribers here report lost (their receiver reports).
    pub lost_out: u64,
    /// NACKs received from subscribers / sent to publishers.
    pub nacks_in: u64,
    pub nacks_out: u64,
    /// Keyframe requests (PLI) received from subscribers / sent to publishers.
    pub plis_in: u64,
    pub plis_out: u64,
    /// Joins that reached signalling (a `JoinResponse` sent), LiveKit's `signal_connected`.
    pub joins_signalled: u64,
    /// Joins whose first peer connection came up, LiveKit's `rtc_connected`.
    pub joins_connected: u64,
    /// From the join request to the first peer connection up.
    pub join_latency: LatencyHistogram,
}

impl ShardStats {
    /// Add another shard's counters (a node's total over its workers).
    pub fn add(&mut self, o: &ShardStats) {
        self.datagrams_in += o.datagrams_in;
        self.rtp_in += o.rtp_in;
        self.rtp_out += o.rtp_out;
        self.datagrams_dropped += o.datagrams_dropped;
        self.data_packets_forwarded += o.data_packets_forwarded;
        self.relay_in += o.relay_in;
        self.relay_out += o.relay_out;
        for (a, b) in
            (self.media_in.iter_mut().chain(&mut self.media_out)).zip(o.media_in.iter().chain(&o.media_out))
        {
            a.packets += b.packets;
            a.bytes += b.bytes;
        }
        self.lost_in += o.lost_in;
        self.lost_out += o.lost_out;
        self.nacks_in += o.nacks_in;
        self.nacks_out += o.nacks_out;
        self.plis_in += o.plis_in;
        self.plis_out += o.plis_out;
        self.joins_signalled += o.joins_signalled;
        self.joins_connected += o.joins_connected;
        let (h, x) = (&mut self.join_latency, &o.join_latency);
        for (a, b) in h.buckets.iter_mut().zip(x.buckets) {
            *a += b;
        }
        h.sum_ms += x.sum_ms;
        h.count += x.count;
    }
}

/// Index of audio and video in [`ShardStats::media_in`] and `media_out`.
pub const KIND_AUDIO: usize = 0;
pub const KIND_VIDEO: usize = 1;

pub(crate) fn kind_index(kind: str0m::media::MediaKind) -> usize {
    if kind.is_audio() {
        KIND_AUDIO
    } else {
        KIND_VIDEO
    }
}

/// Packets and bytes (RTP payload plus the 12-byte fixed header).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PacketCount {
    pub packets: u64,
    pub bytes: u64,
}

impl PacketCount {
    pub(crate) fn add(&mut self, payload: usize) {
        self.packets += 1;
        self.bytes += payload as u64 + 12;
    }
}

/// A histogram of milliseconds with fixed bucket bounds ([`LatencyHistogram::BOUNDS_MS`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Observations at most `BOUNDS_MS[i]` (not cumulative); the last slot is `+Inf`.
    pub buckets: [u64; LatencyHistogram::BOUNDS_MS.len() + 1],
    pub sum_ms: u64,
    pub count: u64,
}

impl LatencyHistogram {
    pub const BOUNDS_MS: [u64; 10] = [50, 100, 200, 300, 500, 750, 1000, 2000, 5000, 10000];

    pub fn observe(&mut self, ms: u64) {
        let i = Self::BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(Self::BOUNDS_MS.len());
        self.buckets[i] += 1;
        self.sum_ms += ms;
        self.count += 1;
    }
}

pub struct Shard {
    pub(crate) config: ShardConfig,
    pub(crate) rng: StdRng,
    /// A point in time and the unix milliseconds it corresponds to, for wire timestamps.
    clock_base: (Instant, i64),
    // Room names and sids are chosen by clients: the DoS-resistant hash.
    pub(crate) rooms: HashMap<RoomName, Room>,
    // Keys we mint ourselves (never chosen by a client): the fast hash.
    pub(crate) participants: FxHashMap<ParticipantKey, Box<Participant>>,
    pub(crate) remotes: FxHashMap<ParticipantKey, RemoteParticipant>,
    pub(crate) tracks: FxHashMap<TrackKey, Track>,
    pub(crate) track_sids: HashMap<TrackSid, TrackKey>,
    /// Mirrors of relayed tracks by their name on the link.
    pub(crate) relayed: FxHashMap<(PlaceId, RelayTrackId), TrackKey>,
    pub(crate) sessions: FxHashMap<SessionId, ParticipantKey>,
    pub(crate) ufrags: HashMap<String, PeerRef>,
    pub(crate) addrs: HashMap<Remote, PeerRef>,
    next_key: u64,
    pub(crate) outputs: VecDeque<Output>,
    /// Peers changed since they were last drained (a negotiation, a keyframe request, data):
    /// each gets a full timeout tick before it is polled.
    pub(crate) dirty: Vec<PeerRef>,
    /// Peers that forwarded RTP was written to since they were last drained and that need
    /// nothing else: each only has its written packets released (`Rtc::release_rtp`).
    pub(crate) written: Vec<PeerRef>,
    /// Tracks published here whose wanted layers may have changed (`dynacast.rs`).
    pub(crate) dynacast_dirty: Vec<TrackKey>,
    /// Tracks published here with a dynacast downgrade waiting for its hold.
    pub(crate) dynacast_pending: Vec<TrackKey>,
    /// Single-PC participants whose subscriptions changed this turn (`Shard::flush_single_pc`).
    pub(crate) single_pc_due: Vec<ParticipantKey>,
    /// Time of the last datagram received: forwarded packets wait in their subscribers' peers
    /// until [`Shard::poll_output`] drains them at this time.
    last_receive: Instant,
    pub(crate) timers: Timers,
    /// The peers due in this [`Shard::handle_timeout`] (kept for its capacity).
    due: Vec<PeerRef>,
    /// Hosted participants whose signal session is gone, or whose connection failed: the
    /// only ones housekeeping looks at.
    pub(crate) detached: FxHashSet<ParticipantKey>,
    next_housekeeping: Instant,
    /// When connection qualities are next scored (`quality.rs`).
    next_quality: Instant,
    pub(crate) stats: ShardStats,
    /// The counters as last logged (they are logged when they change).
    logged_stats: ShardStats,
    pub(crate) peers: PeerFactory,
    /// Reused buffer of participant keys for fan-outs (no allocation per packet).
    pub(crate) fanout: Vec<ParticipantKey>,
    /// Reused buffer of the relay sinks a packet goes to.
    pub(crate) sinks: Vec<crate::track::Sink>,
    /// Scratch for the SVC packets released at housekeeping (`Shard::expire_picture_ends`).
    pub(crate) fanout_tracks: Vec<(TrackKey, crate::relay::MediaPacket)>,
    /// Reused by the data-track fan-out: its subscribers, and the packet being rewritten.
    pub(crate) data_fanout: Vec<(ParticipantKey, u16)>,
    /// Data tracks of participants hosted at other places that this place relays (to its
    /// subscribers, or on to other places).
    pub(crate) relayed_data: FxHashMap<crate::ids::DataTrackSid, crate::datatrack::RelayedDataTrack>,
    pub(crate) data_scratch: Vec<u8>,
    /// The earliest time a room stops waiting for its linked places' snapshots.
    pub(crate) link_deadline: Option<Instant>,
    /// Region places whose link is down, and when their participants go.
    pub(crate) silent_places: Vec<(PlaceId, Instant)>,
    /// When the tracks' rate windows were last closed (`downlink.rs`).
    pub(crate) rates_window: Instant,
    pub(crate) alloc: crate::downlink::AllocScratch,
}

impl Shard {
    /// `unix_ms` is the wall-clock time at `now`; `seed` seeds sid generation.
    pub fn new(config: ShardConfig, now: Instant, unix_ms: i64, seed: u64) -> Self {
        let key_base = config.key_base;
        Self {
            peers: PeerFactory::new(
                config.udp_candidate,
                config.tcp_candidate,
                config.congestion_control.enabled,
            ),
            config,
            rng: StdRng::seed_from_u64(seed),
            clock_base: (now, unix_ms),
            rooms: HashMap::new(),
            participants: FxHashMap::default(),
            remotes: FxHashMap::default(),
            tracks: FxHashMap::default(),
            track_sids: HashMap::new(),
            relayed: FxHashMap::default(),
            sessions: FxHashMap::default(),
            ufrags: HashMap::new(),
            addrs: HashMap::new(),
            next_key: key_base + 1,
            outputs: VecDeque::new(),
            dirty: Vec::new(),
            written: Vec::new(),
            dynacast_dirty: Vec::new(),
            dynacast_pending: Vec::new(),
            single_pc_due: Vec::new(),
            last_receive: now,
            timers: Timers::default(),
            due: Vec::new(),
            detached: FxHashSet::default(),
            next_housekeeping: now,
            next_quality: now + crate::quality::QUALITY_INTERVAL,
            stats: ShardStats::default(),
            logged_stats: ShardStats::default(),
            fanout: Vec::new(),
            sinks: Vec::new(),
            fanout_tracks: Vec::new(),
            data_fanout: Vec::new(),
            relayed_data: FxHashMap::default(),
            data_scratch: Vec::new(),
            link_deadline: None,
            silent_places: Vec::new(),
            rates_window: now,
            alloc: Default::default(),
        }
    }

    pub fn stats(&self) -> ShardStats {
        self.stats
    }

    /// Room instances here.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Participants hosted here.
    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    /// Tracks published by participants hosted here, and subscriptions of participants
    /// hosted here (LiveKit's `track_published_total` and `track_subscribed_total` gauges).
    pub fn track_counts(&self) -> (usize, usize) {
        let published = self.tracks.values().filter(|t| t.is_local()).count();
        let subscribed = self.participants.values().map(|p| p.downtracks.len()).sum();
        (published, subscribed)
    }

    /// Inactive subscriber media sections kept for reuse, over all participants here, and the
    /// msids of recycled ones: what subscriptions that came and went still cost.
    pub fn parked_sections(&self) -> (usize, usize) {
        let n = |f: fn(&Participant) -> usize| self.participants.values().map(|p| f(p)).sum();
        (
            n(|p| p.negotiation.parked.len()),
            n(|p| p.negotiation.msids.len()),
        )
    }

    pub(crate) fn unix_ms(&self, now: Instant) -> i64 {
        let (base, ms) = self.clock_base;
        ms + now.saturating_duration_since(base).as_millis() as i64
    }

    pub(crate) fn server_info(&self) -> lk::ServerInfo {
        lk::ServerInfo {
            edition: lk::server_info::Edition::Standard as i32,
            version: LIVEKIT_COMPAT_VERSION.to_string(),
            protocol: SERVER_PROTOCOL,
            region: self.config.region.clone(),
            node_id: self.config.node_id.clone(),
            debug_info: format!("pylon {}", env!("CARGO_PKG_VERSION")),
            agent_protocol: 0,
        }
    }

    /// The next output. Packets forwarded by [`Shard::receive`] leave here: the subscribers
    /// written to are drained only once the caller has fed every datagram it had and asks for
    /// output, so each subscriber's packets come out back to back (one batched send) instead
    /// of interleaved with every other subscriber's.
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.outputs.is_empty() && !(self.dirty.is_empty() && self.written.is_empty()) {
            self.drain_dirty(self.last_receive);
        }
        self.outputs.pop_front()
    }

    /// The next instant at which [`Shard::handle_timeout`] must be called.
    pub fn poll_timeout(&mut self) -> Instant {
        let t = match self.timers.next_deadline() {
            Some(t) => t.min(self.next_housekeeping),
            None => self.next_housekeeping,
        };
        self.link_deadline.map_or(t, |d| d.min(t))
    }

    pub(crate) fn emit(&mut self, event: ShardEvent) {
        self.outputs.push_back(Output::Event(event));
    }

    pub(crate) fn relay(&mut self, place: PlaceId, msg: RelayMessage) {
        self.stats.relay_out += 1;
        self.outputs.push_back(Output::Relay(place, msg));
    }

    pub(crate) fn send(&mut self, session: Option<SessionId>, msg: lk::signal_response::Message) {
        if let Some(s) = session {
            let resp = lk::SignalResponse { message: Some(msg) };
            self.outputs.push_back(Output::Signal(s, Box::new(resp)));
        }
    }

    pub(crate) fn send_to(&mut self, key: ParticipantKey, msg: lk::signal_response::Message) {
        let session = self.participants.get(&key).and_then(|p| p.session);
        self.send(session, msg);
    }

    /// Send `msg` to every connected participant of `room` hosted here, except `except` and
    /// those still waiting for their join response (which will carry the news).
    pub(crate) fn broadcast(
        &mut self,
        room: &RoomName,
        msg: lk::signal_response::Message,
        except: Option<ParticipantKey>,
    ) {
        let Some(r) = self.rooms.get(room) else { return };
        for key in &r.members {
            if Some(*key) == except || r.joining.contains(key) {
                continue;
            }
            if let Some(s) = self.participants.get(key).and_then(|p| p.session) {
                let resp = lk::SignalResponse {
                    message: Some(msg.clone()),
                };
                self.outputs.push_back(Output::Signal(s, Box::new(resp)));
            }
        }
    }

    pub(crate) fn info_of(&self, key: ParticipantKey) -> Option<lk::ParticipantInfo> {
        self.participants.get(&key).map(|p| p.info(&self.tracks))
    }

    pub(crate) fn next_participant_key(&mut self) -> ParticipantKey {
        let k = ParticipantKey(self.next_key);
        self.next_key += 1;
        k
    }

    pub(crate) fn next_track_key(&mut self) -> TrackKey {
        let k = TrackKey(self.next_key);
        self.next_key += 1;
        k
    }

    /// A datagram arrived on the media socket.
    pub fn receive(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        buf: &[u8],
    ) -> Received {
        self.receive_on(now, Protocol::Udp, source, destination, buf)
    }

    /// A packet arrived on an ICE/TCP connection from `source` (one RFC 4571 frame).
    pub fn receive_tcp(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        buf: &[u8],
    ) -> Received {
        self.receive_on(now, Protocol::Tcp, source, destination, buf)
    }

    fn receive_on(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        buf: &[u8],
    ) -> Received {
        let remote = Remote { proto, addr: source };
        let known = self.addrs.get(&remote).copied();
        let (peer, stun) = match known {
            Some(p) => (p, false),
            None => match self.peer_by_stun_username(buf) {
                Some(p) => (p, true),
                None => return Received::NotMine,
            },
        };
        self.stats.datagrams_in += 1;
        self.last_receive = now;
        let Ok(receive) = Receive::new(proto, source, destination, buf) else {
            self.stats.datagrams_dropped += 1;
            return Received::Handled;
        };
        let Some(p) = self.participants.get_mut(&peer.key) else {
            return Received::Handled;
        };
        p.last_rx = now;
        match p
            .peer_mut(peer.pc)
            .contained(|rtc| rtc.handle_input(Input::Receive(now, receive)))
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!(participant = %p.sid, pc = ?peer.pc, "rtc refused datagram: {e}"),
            Err(NotRun::Panicked) => {
                self.connection_panicked(now, peer);
                return Received::Handled;
            }
            Err(NotRun::Failed) => return Received::Handled,
        }
        let before = self.outputs.len();
        self.drain(now, peer);
        if stun && self.answered(before, remote) {
            self.learn_address(peer, remote);
        }
        Received::Handled
    }

    /// Whether an ICE/TCP connection from `source` reaches a peer here (a STUN request from it
    /// was accepted).
    pub fn reaches_over_tcp(&self, source: SocketAddr) -> bool {
        self.addrs.contains_key(&Remote {
            proto: Protocol::Tcp,
            addr: source,
        })
    }

    /// The peer a STUN request is for, by its USERNAME (`our-ufrag:their-ufrag`).
    fn peer_by_stun_username(&self, buf: &[u8]) -> Option<PeerRef> {
        let stun = str0m::ice::StunMessage::parse(buf).ok()?;
        let (local, _remote) = stun.split_username()?;
        self.ufrags.get(local).copied()
    }

    /// Whether the outputs queued since `since` include a datagram to `to`: str0m answers a
    /// STUN request only once its integrity checked out.
    fn answered(&self, since: usize, to: Remote) -> bool {
        self.outputs
            .range(since..)
            .any(|o| matches!(o, Output::Transmit(t) if t.destination == to.addr && t.proto == to.proto))
    }

    /// Route `source` to `peer` from now on (the oldest address is forgotten beyond
    /// [`MAX_PEER_ADDRS`]).
    fn learn_address(&mut self, peer: PeerRef, source: Remote) {
        let Some(p) = self.participants.get_mut(&peer.key) else {
            return;
        };
        let addrs = &mut p.peer_mut(peer.pc).addrs;
        if addrs.contains(&source) {
            return;
        }
        let evicted = (addrs.len() >= MAX_PEER_ADDRS).then(|| addrs.remove(0));
        addrs.push(source);
        if let Some(old) = evicted {
            self.addrs.remove(&old);
            self.address_event(old, false);
        }
        if let Some(previous) = self.addrs.insert(source, peer) {
            // The address moved between peers (a client reusing a port): the old one lets go.
            if let Some(q) = self.participants.get_mut(&previous.key) {
                q.peer_mut(previous.pc).addrs.retain(|a| *a != source);
            }
        } else {
            self.address_event(source, true);
        }
    }

    /// Tell the runtime's UDP demultiplexer that a source address is (no longer) ours. ICE/TCP
    /// connections are routed by the runtime itself, connection by connection.
    fn address_event(&mut self, remote: Remote, learned: bool) {
        if remote.proto != Protocol::Udp {
            return;
        }
        self.emit(if learned {
            ShardEvent::AddressLearned(remote.addr)
        } else {
            ShardEvent::AddressForgotten(remote.addr)
        });
    }

    /// Drive every peer whose timer expired, and the shard's own housekeeping.
    ///
    /// Each peer due is driven once per call: one that asks again for a time not after `now`
    /// waits for the next call. str0m can do that (with congestion control on, its pacer
    /// asked for `now` over and over in the in-memory simulation), and taking it at its word
    /// would spin this call forever with `now` standing still.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        while let Some(peer) = self.timers.pop_due(now) {
            due.push(peer);
        }
        for peer in due.drain(..) {
            if let Some(p) = self.participants.get_mut(&peer.key) {
                match p
                    .peer_mut(peer.pc)
                    .contained(|rtc| rtc.handle_input(Input::Timeout(now)))
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => debug!(participant = %p.sid, pc = ?peer.pc, "rtc timeout error: {e}"),
                    Err(NotRun::Panicked) => {
                        self.connection_panicked(now, peer);
                        continue;
                    }
                    Err(NotRun::Failed) => continue,
                }
            }
            self.drain(now, peer);
        }
        self.due = due;
        self.drain_dirty(now);
        self.expire_link_waits(now);
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING_INTERVAL;
            self.housekeeping(now);
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        self.expire_silent_places(now);
        self.recheck_dynacast(now);
        self.update_speakers();
        self.expire_picture_ends(now);
        self.allocate_downlinks(now);
        if now >= self.next_quality {
            self.next_quality = now + crate::quality::QUALITY_INTERVAL;
            self.update_qualities(now);
        }
        if self.stats != self.logged_stats {
            let s = &self.stats;
            debug!(
                datagrams_in = s.datagrams_in,
                datagrams_dropped = s.datagrams_dropped,
                rtp_in = s.rtp_in,
                rtp_out = s.rtp_out,
                data_forwarded = s.data_packets_forwarded,
                relay_in = s.relay_in,
                relay_out = s.relay_out,
                "shard counters"
            );
            self.logged_stats = self.stats;
        }
        let cfg = &self.config;
        let mut gone = Vec::new();
        for key in &self.detached {
            let Some(p) = self.participants.get(key) else {
                continue;
            };
            if p.peers().any(|(_, c)| c.failed) {
                gone.push((*key, lk::DisconnectReason::MediaFailure));
                continue;
            }
            let lost = p.session_lost_at.is_some_and(|t| now >= t + cfg.resume_window);
            let silent = now.saturating_duration_since(p.last_rx) >= cfg.transport_timeout;
            if p.session.is_none() && (lost || silent) {
                gone.push((*key, lk::DisconnectReason::ConnectionTimeout));
            }
        }
        for (key, reason) in gone {
            if reason == lk::DisconnectReason::MediaFailure {
                info!(participant = ?key, "participant gone: its peer connection failed");
                let action = lk::leave_request::Action::Reconnect;
                self.remove_participant(now, key, reason, Some(action));
            } else {
                info!(participant = ?key, "participant gone: signal closed and transport silent");
                self.remove_participant(now, key, reason, None);
            }
        }
        let idle: Vec<(RoomName, RoomSid)> = self
            .rooms
            .values()
            .filter(|r| !r.idle_reported && (r.should_close(now).is_some() || self.anchor_idle(r)))
            .map(|r| (r.name.clone(), r.sid.clone()))
            .collect();
        for (room, _) in &idle {
            if let Some(r) = self.rooms.get_mut(room) {
                r.idle_reported = true;
            }
        }
        for (room, sid) in idle {
            info!(%room, "room idle");
            if self.config.rooms_closed_by_runtime {
                self.emit(ShardEvent::RoomIdle { room, sid });
            } else {
                self.close_room(now, &room);
            }
        }
    }

    /// The session's WebSocket is gone. The participant stays for a resume until its
    /// transport goes silent or the resume window passes.
    pub fn session_closed(&mut self, now: Instant, session: SessionId) {
        let Some(key) = self.sessions.remove(&session) else {
            return;
        };
        if let Some(p) = self.participants.get_mut(&key) {
            if p.session == Some(session) {
                debug!(participant = %p.sid, "signal connection closed; awaiting resume");
                p.session = None;
                p.session_lost_at = Some(now);
                self.detached.insert(key);
            }
        }
    }

    /// The session sent something we cannot accept: disconnect that participant only.
    pub fn protocol_violation(&mut self, now: Instant, session: SessionId, why: &str) {
        self.disconnect_session(now, session, why, lk::DisconnectReason::StateMismatch);
    }

    /// Remove the session's participant for `why` (logged once), telling it `reason` with
    /// `Leave` (action DISCONNECT: the client must not come back on its own).
    pub fn disconnect_session(
        &mut self,
        now: Instant,
        session: SessionId,
        why: &str,
        reason: lk::DisconnectReason,
    ) {
        let Some(key) = self.sessions.get(&session).copied() else {
            self.outputs.push_back(Output::Close(session));
            return;
        };
        if let Some(p) = self.participants.get(&key) {
            // One line per violation, whatever the error text holds (SDP errors span lines).
            let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
            warn!(participant = %p.sid, identity = %p.identity, "disconnecting participant: {why}");
        }
        self.remove_participant(now, key, reason, Some(lk::leave_request::Action::Disconnect));
        self.drain_dirty(now);
    }

    /// Poll one peer until it has nothing more to say, handling its events.
    pub(crate) fn drain(&mut self, now: Instant, peer: PeerRef) {
        loop {
            let Some(p) = self.participants.get_mut(&peer.key) else {
                return;
            };
            let sid = &p.sid;
            let conn = match (peer.pc, p.subscriber.as_mut()) {
                (PcKind::Subscriber, Some(s)) => s,
                _ => &mut p.publisher,
            };
            if conn.failed {
                return;
            }
            // Not contained (`Peer::contained`): str0m parses the client's input in
            // `handle_input`, which is; wrapping every poll too cost 2.3 % more instructions
            // per forwarded packet (`bench/forwarding.sh 10`: 20,294 → 20,766).
            let out = match conn.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    // A failed connection never recovers; housekeeping ends the participant.
                    warn!(participant = %sid, pc = ?peer.pc, "peer connection failed: {e}");
                    conn.failed = true;
                    self.timers.cancel(peer);
                    self.detached.insert(peer.key);
                    return;
                }
            };
            match out {
                str0m::Output::Timeout(t) => {
                    conn.next_timeout = t;
                    self.timers.schedule(peer, t);
                    return;
                }
                str0m::Output::Transmit(t) => self.outputs.push_back(Output::Transmit(t)),
                str0m::Output::Event(e) => self.on_event(now, peer, e),
            }
        }
    }

    /// str0m panicked on `peer`'s input ([`crate::peer::Peer::contained`]): the connection is
    /// failed, and the participant is ended at the next housekeeping, brought forward to
    /// now, with `MEDIA_FAILURE` and a reconnect request (as any failed connection). Logged
    /// once: a failed connection is never called again (`NotRun::Failed`, skipped quietly).
    fn connection_panicked(&mut self, now: Instant, peer: PeerRef) {
        if let Some(p) = self.participants.get(&peer.key) {
            warn!(participant = %p.sid, pc = ?peer.pc, "str0m panicked on this connection's input; ending the participant");
        }
        self.timers.cancel(peer);
        self.detached.insert(peer.key);
        self.next_housekeeping = self.next_housekeeping.min(now);
    }

    /// Poll every peer that was changed or written to. A changed peer first gets a timeout
    /// tick at `now`; one that was only written to gets its written RTP released at `now`
    /// (`Rtc::release_rtp`: the part of a tick that makes queued RTP sendable, without the
    /// ICE, SCTP and RTCP timers that are not due). Without either, forwarded packets would
    /// wait for the peer's next timer instead of leaving now.
    pub(crate) fn drain_dirty(&mut self, now: Instant) {
        if !self.dynacast_dirty.is_empty() {
            self.flush_dynacast(now);
        }
        if !self.single_pc_due.is_empty() {
            self.flush_single_pc();
        }
        // A subscriber is marked once per packet forwarded to it; drain each peer once.
        self.dirty.sort_unstable();
        self.dirty.dedup();
        self.written.sort_unstable();
        self.written.dedup();
        if !self.dirty.is_empty() {
            let dirty = &self.dirty;
            self.written.retain(|p| dirty.binary_search(p).is_err());
        }
        loop {
            let (peer, full) = match self.dirty.pop() {
                Some(peer) => (peer, true),
                None => match self.written.pop() {
                    Some(peer) => (peer, false),
                    None => break,
                },
            };
            if let Some(p) = self.participants.get_mut(&peer.key) {
                let ticked = p.peer_mut(peer.pc).contained(|rtc| {
                    if full {
                        rtc.handle_input(Input::Timeout(now))
                    } else {
                        rtc.release_rtp(now)
                    }
                });
                match ticked {
                    Ok(_) => {}
                    Err(NotRun::Panicked) => {
                        self.connection_panicked(now, peer);
                        continue;
                    }
                    Err(NotRun::Failed) => continue,
                }
            }
            self.drain(now, peer);
        }
    }

    /// Index the peer's current ICE ufrag (it changes on an ICE restart).
    pub(crate) fn remember_ufrag(&mut self, peer: PeerRef) {
        let Some(p) = self.participants.get_mut(&peer.key) else {
            return;
        };
        let conn = p.peer_mut(peer.pc);
        let ufrag = conn.rtc.direct_api().local_ice_credentials().ufrag;
        if self.ufrags.get(&ufrag) == Some(&peer) {
            return;
        }
        if ufrag != conn.ufrag {
            let old = std::mem::replace(&mut conn.ufrag, ufrag.clone());
            if self.ufrags.remove(&old).is_some() {
                self.emit(ShardEvent::UfragRemoved(old));
            }
        }
        self.ufrags.insert(ufrag.clone(), peer);
        self.emit(ShardEvent::UfragAdded(ufrag));
    }

    /// Drop a departing participant's entries from the demux indexes.
    pub(crate) fn forget_peers(&mut self, p: &Participant) {
        for (pc, conn) in p.peers() {
            if self.ufrags.remove(&conn.ufrag).is_some() {
                self.emit(ShardEvent::UfragRemoved(conn.ufrag.clone()));
            }
            for a in &conn.addrs {
                if self.addrs.get(a).is_some_and(|r| r.key == p.key) {
                    self.addrs.remove(a);
                    self.address_event(*a, false);
                }
            }
            self.timers.cancel(PeerRef { key: p.key, pc });
        }
    }
}

/// Webhook event names (livekit-protocol.md §6.2).
pub mod event {
    pub const ROOM_STARTED: &str = "room_started";
    pub const ROOM_FINISHED: &str = "room_finished";
    pub const PARTICIPANT_JOINED: &str = "participant_joined";
    pub const PARTICIPANT_LEFT: &str = "participant_left";
    pub const PARTICIPANT_CONNECTION_ABORTED: &str = "participant_connection_aborted";
    pub const TRACK_PUBLISHED: &str = "track_published";
    pub const TRACK_UNPUBLISHED: &str = "track_unpublished";
}

impl Shard {
    /// Queue a webhook event about `room` (and optionally a participant and a track).
    pub(crate) fn webhook(
        &mut self,
        now: Instant,
        name: &str,
        room: Option<lk::Room>,
        participant: Option<lk::ParticipantInfo>,
        track: Option<lk::TrackInfo>,
    ) {
        let id = crate::ids::EventId::generate(&mut self.rng);
        let ev = lk::WebhookEvent {
            event: name.to_string(),
            room,
            participant,
            track,
            id: id.as_str().to_string(),
            created_at: self.unix_ms(now) / 1000,
            ..Default::default()
        };
        self.outputs.push_back(Output::Webhook(Box::new(ev)));
    }
}

pub(crate) fn update(participants: Vec<lk::ParticipantInfo>) -> lk::signal_response::Message {
    lk::signal_response::Message::Update(lk::ParticipantUpdate { participants })
}

pub(crate) fn leave_msg(
    reason: lk::DisconnectReason,
    action: lk::leave_request::Action,
) -> lk::signal_response::Message {
    lk::signal_response::Message::Leave(lk::LeaveRequest {
        can_reconnect: action != lk::leave_request::Action::Disconnect,
        reason: reason as i32,
        action: action as i32,
        regions: None,
    })
}
