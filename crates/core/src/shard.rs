//! The shard: a sans-IO engine that owns a set of rooms, their participants and every
//! participant's str0m peer connections.
//!
//! The runtime feeds it signalling requests, UDP datagrams and timeouts, each with `now`,
//! and drains [`Output`]s: signal responses to sessions, sessions to close, and datagrams to
//! transmit. Nothing here reads a clock, spawns a task or takes a lock; one worker thread
//! owns one shard by `&mut`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use livekit_protocol as lk;
use rand::rngs::StdRng;
use rand::SeedableRng;
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Candidate, Input, Rtc};
use tracing::{debug, info, warn};

use rustc_hash::FxHashMap;

use crate::config::{ShardConfig, LIVEKIT_COMPAT_VERSION, SERVER_PROTOCOL};
use crate::ids::{ParticipantKey, ParticipantSid, RoomName, RoomSid, SessionId, TrackSid};
use crate::participant::{Participant, PcKind, Peer, TrackKey};
use crate::room::Room;

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
}

/// A join, already authenticated and parsed by the signalling edge.
#[derive(Debug, Clone)]
pub struct JoinParams {
    pub session: SessionId,
    pub room: RoomName,
    pub identity: crate::ids::ParticipantIdentity,
    pub name: String,
    pub metadata: String,
    pub attributes: HashMap<String, String>,
    pub permission: pylon_auth::ParticipantPermission,
    /// `ParticipantInfo.Kind` from the token.
    pub kind: i32,
    pub auto_subscribe: bool,
    /// The client's signalling protocol level.
    pub protocol: i32,
}

impl JoinParams {
    /// A standard participant with LiveKit's default grants (publish, subscribe, data),
    /// auto-subscribing, at the current protocol: what tests, fuzz targets and benchmarks join
    /// with.
    pub fn standard(session: SessionId, room: &str, identity: &str) -> Self {
        let grant = pylon_auth::VideoGrant {
            room_join: true,
            room: room.into(),
            ..Default::default()
        };
        Self {
            session,
            room: RoomName::new(room),
            identity: crate::ids::ParticipantIdentity::new(identity),
            name: String::new(),
            metadata: String::new(),
            attributes: HashMap::new(),
            permission: grant.permission(),
            kind: 0,
            auto_subscribe: true,
            protocol: SERVER_PROTOCOL,
        }
    }
}

/// A resume (`reconnect=1`) of an existing participant session.
#[derive(Debug, Clone)]
pub struct ResumeParams {
    pub session: SessionId,
    pub room: RoomName,
    pub identity: crate::ids::ParticipantIdentity,
    pub sid: ParticipantSid,
}

/// Why a join was refused; each maps to one HTTP status at the edge.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("room has exceeded its max participants")]
    RoomFull,
    #[error("could not create peer connection: {0}")]
    Rtc(String),
}

/// Housekeeping (timeouts of sessions and rooms) runs at most this often.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(500);

pub struct Shard {
    pub(crate) config: ShardConfig,
    pub(crate) rng: StdRng,
    /// A point in time and the unix milliseconds it corresponds to, for wire timestamps.
    clock_base: (Instant, i64),
    pub(crate) rooms: HashMap<RoomName, Room>,
    // Keys we mint ourselves (never chosen by a client): the fast, non-DoS-resistant hash.
    pub(crate) participants: FxHashMap<ParticipantKey, Participant>,
    pub(crate) sessions: FxHashMap<SessionId, ParticipantKey>,
    pub(crate) ufrags: HashMap<String, (ParticipantKey, PcKind)>,
    pub(crate) addrs: HashMap<SocketAddr, (ParticipantKey, PcKind)>,
    pub(crate) tracks: HashMap<TrackSid, (ParticipantKey, TrackKey)>,
    next_key: u64,
    pub(crate) next_track: u64,
    pub(crate) outputs: VecDeque<Output>,
    /// Peers written to since they were last drained.
    pub(crate) dirty: Vec<(ParticipantKey, PcKind)>,
    /// Time of the last datagram received: forwarded packets wait in their subscribers' peers
    /// until [`Shard::poll_output`] drains them at this time.
    last_receive: Instant,
    /// Reused buffer of subscriber keys for fan-out (no allocation per packet).
    pub(crate) fanout: Vec<ParticipantKey>,
    next_housekeeping: Instant,
    pub(crate) stats: ShardStats,
    /// The counters as last logged (they are logged when they change).
    logged_stats: ShardStats,
    /// Reused by `handle_timeout` for the peers whose timers expired.
    due_scratch: Vec<(ParticipantKey, PcKind)>,
    /// One DTLS certificate for every peer of the shard: generating one per peer costs a
    /// key generation per join (as mediasoup does per worker).
    dtls_cert: Option<str0m::config::DtlsCert>,
}

/// Counters the runtime exports as metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ShardStats {
    pub datagrams_in: u64,
    pub rtp_in: u64,
    pub rtp_out: u64,
    pub datagrams_dropped: u64,
    pub data_packets_forwarded: u64,
}

impl Shard {
    /// `unix_ms` is the wall-clock time at `now`; `seed` seeds sid generation.
    pub fn new(config: ShardConfig, now: Instant, unix_ms: i64, seed: u64) -> Self {
        Self {
            config,
            rng: StdRng::seed_from_u64(seed),
            clock_base: (now, unix_ms),
            rooms: HashMap::new(),
            participants: FxHashMap::default(),
            sessions: FxHashMap::default(),
            ufrags: HashMap::new(),
            addrs: HashMap::new(),
            tracks: HashMap::new(),
            next_key: 1,
            next_track: 1,
            outputs: VecDeque::new(),
            dirty: Vec::new(),
            last_receive: now,
            fanout: Vec::new(),
            next_housekeeping: now,
            stats: ShardStats::default(),
            logged_stats: ShardStats::default(),
            due_scratch: Vec::new(),
            dtls_cert: str0m::crypto::from_feature_flags()
                .dtls_provider
                .generate_certificate(),
        }
    }

    pub fn stats(&self) -> ShardStats {
        self.stats
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn participant_count(&self) -> usize {
        self.participants.len()
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

    /// The next output. Packets forwarded by [`Shard::receive`] leave here: the subscribers written to are
    /// drained only once the caller has fed every datagram it had and asks for output, so each
    /// subscriber's packets come out back to back (one batched send) instead of interleaved
    /// with every other subscriber's.
    pub fn poll_output(&mut self) -> Option<Output> {
        if self.outputs.is_empty() && !self.dirty.is_empty() {
            self.drain_dirty(self.last_receive);
        }
        self.outputs.pop_front()
    }

    /// The next instant at which [`Shard::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Instant {
        let peers = self
            .participants
            .values()
            .flat_map(|p| [p.publisher.next_timeout, p.subscriber.next_timeout]);
        peers.fold(self.next_housekeeping, Instant::min)
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

    /// Send `msg` to every connected member of `room` except `except`.
    pub(crate) fn broadcast(
        &mut self,
        room: &RoomName,
        msg: lk::signal_response::Message,
        except: Option<ParticipantKey>,
    ) {
        let Some(r) = self.rooms.get(room) else { return };
        for key in &r.participants {
            if Some(*key) == except {
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

    /// Tell the room (including the participant itself) about a change to `key`.
    pub(crate) fn broadcast_participant(&mut self, key: ParticipantKey) {
        let Some(p) = self.participants.get(&key) else {
            return;
        };
        if p.permission.hidden {
            let info = p.info();
            let session = p.session;
            self.send(session, update(vec![info]));
            return;
        }
        let (room, info) = (p.room.clone(), p.info());
        self.broadcast(&room, update(vec![info]), None);
    }

    pub(crate) fn new_peer(&mut self, now: Instant) -> Result<Peer, JoinError> {
        let mut builder = Rtc::builder();
        if let Some(cert) = &self.dtls_cert {
            builder = builder.set_dtls_cert(cert.clone());
        }
        let mut rtc = builder
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_h264(true)
            .enable_vp9(true)
            .enable_av1(true)
            .build(now);
        let candidate =
            Candidate::host(self.config.udp_candidate, "udp").map_err(|e| JoinError::Rtc(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        Ok(Peer::new(rtc, ufrag, now))
    }

    pub(crate) fn mint_room_sid(&mut self) -> RoomSid {
        RoomSid::generate(&mut self.rng)
    }

    pub(crate) fn next_participant_key(&mut self) -> ParticipantKey {
        let k = ParticipantKey(self.next_key);
        self.next_key += 1;
        k
    }

    /// A datagram arrived on the media socket.
    pub fn receive(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, buf: &[u8]) {
        self.stats.datagrams_in += 1;
        let Some((key, pc)) = self.route(source, buf) else {
            self.stats.datagrams_dropped += 1;
            return;
        };
        let Ok(receive) = Receive::new(Protocol::Udp, source, destination, buf) else {
            self.stats.datagrams_dropped += 1;
            return;
        };
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        p.last_rx = now;
        if let Err(e) = p.peer_mut(pc).rtc.handle_input(Input::Receive(now, receive)) {
            debug!(participant = %p.sid, ?pc, "rtc refused datagram: {e}");
        }
        self.drain(now, key, pc);
        self.last_receive = now;
    }

    /// Find the peer a datagram belongs to: STUN by its username (our ufrag), anything
    /// else by the source address that STUN established.
    fn route(&mut self, source: SocketAddr, buf: &[u8]) -> Option<(ParticipantKey, PcKind)> {
        if let Some(found) = self.addrs.get(&source) {
            return Some(*found);
        }
        let stun = str0m::ice::StunMessage::parse(buf).ok()?;
        let (local, _remote) = stun.split_username()?;
        let found = *self.ufrags.get(local)?;
        let (key, pc) = found;
        let peer = self.participants.get_mut(&key)?.peer_mut(pc);
        if peer.addrs.len() >= crate::participant::MAX_PEER_ADDRS {
            let oldest = peer.addrs.remove(0);
            self.addrs.remove(&oldest);
        }
        peer.addrs.push(source);
        self.addrs.insert(source, found);
        Some(found)
    }

    /// Drive every peer whose timer expired, and the shard's own housekeeping.
    pub fn handle_timeout(&mut self, now: Instant) {
        // The scratch list keeps its capacity between calls: no allocation per timeout.
        let mut due = std::mem::take(&mut self.due_scratch);
        due.clear();
        due.extend(
            self.participants
                .values()
                .flat_map(|p| {
                    [
                        (p.key, PcKind::Publisher, p.publisher.next_timeout),
                        (p.key, PcKind::Subscriber, p.subscriber.next_timeout),
                    ]
                })
                .filter(|(_, _, t)| *t <= now)
                .map(|(k, pc, _)| (k, pc)),
        );
        for &(key, pc) in &due {
            if let Some(p) = self.participants.get_mut(&key) {
                if let Err(e) = p.peer_mut(pc).rtc.handle_input(Input::Timeout(now)) {
                    debug!(participant = %p.sid, ?pc, "rtc timeout error: {e}");
                }
            }
            self.drain(now, key, pc);
        }
        self.due_scratch = due;
        self.drain_dirty(now);
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING_INTERVAL;
            self.housekeeping(now);
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        if self.stats != self.logged_stats {
            let s = &self.stats;
            debug!(
                datagrams_in = s.datagrams_in,
                datagrams_dropped = s.datagrams_dropped,
                rtp_in = s.rtp_in,
                rtp_out = s.rtp_out,
                data_forwarded = s.data_packets_forwarded,
                "shard counters"
            );
            self.logged_stats = self.stats;
        }
        let cfg = &self.config;
        let gone: Vec<ParticipantKey> = self
            .participants
            .values()
            .filter(|p| {
                let lost = p.session_lost_at.is_some_and(|t| now >= t + cfg.resume_window);
                let silent = now.saturating_duration_since(p.last_rx) >= cfg.transport_timeout;
                p.session.is_none() && (lost || silent)
            })
            .map(|p| p.key)
            .collect();
        for key in gone {
            info!(participant = ?key, "participant gone: signal closed and transport silent");
            self.remove_participant(now, key, lk::DisconnectReason::ConnectionTimeout, None);
        }
        let closing: Vec<RoomName> = self
            .rooms
            .values()
            .filter_map(|r| r.should_close(now).map(|why| (r.name.clone(), why)))
            .map(|(name, why)| {
                info!(room = %name, ?why, "closing room");
                name
            })
            .collect();
        for name in closing {
            self.close_room(now, &name);
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
            }
        }
    }

    /// The session sent something we cannot accept: disconnect that participant only.
    pub fn protocol_violation(&mut self, now: Instant, session: SessionId, why: &str) {
        let Some(key) = self.sessions.get(&session).copied() else {
            self.outputs.push_back(Output::Close(session));
            return;
        };
        if let Some(p) = self.participants.get(&key) {
            // One line per violation, whatever the error text holds (SDP errors span lines).
            let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
            warn!(participant = %p.sid, identity = %p.identity, "disconnecting participant: {why}");
        }
        self.remove_participant(
            now,
            key,
            lk::DisconnectReason::StateMismatch,
            Some(lk::leave_request::Action::Disconnect),
        );
    }

    /// Poll one peer until it has nothing more to say, handling its events.
    pub(crate) fn drain(&mut self, now: Instant, key: ParticipantKey, pc: PcKind) {
        loop {
            let Some(p) = self.participants.get_mut(&key) else {
                return;
            };
            let sid = &p.sid;
            let peer = match pc {
                PcKind::Publisher => &mut p.publisher,
                PcKind::Subscriber => &mut p.subscriber,
            };
            let out = match peer.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    warn!(participant = %sid, ?pc, "peer connection failed: {e}");
                    peer.next_timeout = now + Duration::from_secs(1);
                    return;
                }
            };
            match out {
                str0m::Output::Timeout(t) => {
                    peer.next_timeout = t;
                    return;
                }
                str0m::Output::Transmit(t) => self.outputs.push_back(Output::Transmit(t)),
                str0m::Output::Event(e) => self.on_event(now, key, pc, e),
            }
        }
    }

    /// Poll every peer that was written to. Each first gets a timeout tick at `now`: str0m
    /// queues written RTP and releases it on a timeout, so without the tick forwarded packets
    /// would wait for the next `handle_timeout` (a scan of every peer) instead of leaving now.
    pub(crate) fn drain_dirty(&mut self, now: Instant) {
        // A subscriber is marked once per packet forwarded to it; drain each peer once.
        self.dirty.sort_unstable();
        self.dirty.dedup();
        while let Some((key, pc)) = self.dirty.pop() {
            if let Some(p) = self.participants.get_mut(&key) {
                let _ = p.peer_mut(pc).rtc.handle_input(Input::Timeout(now));
            }
            self.drain(now, key, pc);
        }
    }

    pub(crate) fn remember_ufrag(&mut self, key: ParticipantKey, pc: PcKind) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let peer = p.peer_mut(pc);
        let ufrag = peer.rtc.direct_api().local_ice_credentials().ufrag;
        if ufrag != peer.ufrag {
            let old = std::mem::replace(&mut peer.ufrag, ufrag.clone());
            self.ufrags.remove(&old);
        }
        self.ufrags.insert(ufrag, (key, pc));
    }

    /// Remove a participant: tell them (if `leave`), tell the room, free its tracks.
    pub fn remove_participant(
        &mut self,
        now: Instant,
        key: ParticipantKey,
        reason: lk::DisconnectReason,
        leave: Option<lk::leave_request::Action>,
    ) {
        let Some(mut p) = self.participants.remove(&key) else {
            return;
        };
        info!(room = %p.room, participant = %p.sid, identity = %p.identity, ?reason, "participant left");
        if let Some(s) = p.session.take() {
            if let Some(action) = leave {
                self.send(Some(s), leave_msg(reason, action));
            }
            self.outputs.push_back(Output::Close(s));
            self.sessions.remove(&s);
        }
        self.ufrags.retain(|_, (k, _)| *k != key);
        self.addrs.retain(|_, (k, _)| *k != key);
        let room_info = self.room_info(&p.room);
        for t in std::mem::take(&mut p.tracks) {
            self.tracks.remove(&t.sid);
            let (who, track) = (p.info(), t.info.clone());
            self.webhook(
                now,
                event::TRACK_UNPUBLISHED,
                room_info.clone(),
                Some(who),
                Some(track),
            );
            for sub in t.subscribers {
                self.unsubscribe(sub, t.key);
            }
        }
        for (tkey, dt) in p.downtracks.drain() {
            if let Some(publisher) = self.participants.get_mut(&dt.publisher) {
                if let Some(t) = publisher.tracks.iter_mut().find(|t| t.key == tkey) {
                    t.subscribers.retain(|s| *s != key);
                }
            }
        }
        p.publisher.rtc.disconnect();
        p.subscriber.rtc.disconnect();
        if let Some(room) = self.rooms.get_mut(&p.room) {
            room.remove(key, now);
        }
        let departed = p.departed_info(reason);
        if !p.permission.hidden {
            self.broadcast(&p.room.clone(), update(vec![departed.clone()]), None);
        }
        let name = if p.active {
            event::PARTICIPANT_LEFT
        } else {
            event::PARTICIPANT_CONNECTION_ABORTED
        };
        let room = self.room_info(&p.room);
        self.webhook(now, name, room, Some(departed), None);
        self.drain_dirty(now);
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

    /// Close a room: tell the notifier. Members must already be gone.
    pub(crate) fn close_room(&mut self, now: Instant, name: &RoomName) {
        let info = self.room_info(name);
        if self.rooms.remove(name).is_some() {
            self.webhook(now, event::ROOM_FINISHED, info, None, None);
        }
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
