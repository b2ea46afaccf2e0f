//! An in-memory network of shards and str0m clients on a virtual clock.
//!
//! No sockets, no threads, no wall time: clients and shards exchange datagrams by function
//! call, and shards exchange relay messages the way worker threads and nodes do, so a room
//! spread over several places runs deterministically. Shards are grouped into nodes: shards of
//! one node link at the worker tier, and each node's anchor (its first shard holding the room)
//! links to the other nodes' anchors at the node tier. The harness plays the directories: the
//! first shard a room's participant joins becomes the room's home, later instances are linked
//! to the earlier ones. Used by the forwarding micro-benchmark and by the relay tests.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use livekit_protocol as lk;
use lk::signal_request::Message as Req;
use lk::signal_response::Message as Resp;
use pylon_core::ids::{PlaceId, RoomName, RoomSid, SessionId, Tier};
use pylon_core::relay::RelayMessage;
use pylon_core::{
    JoinParams, Output, Placement, RoomDefaults, RoomRecord, Shard, ShardConfig, SignalCommand,
};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId};
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Event, Input, Rtc};

/// Virtual time advanced per step of [`Net::run_for`].
pub const STEP: Duration = Duration::from_millis(2);

/// A datagram in flight: source, destination, bytes.
pub type Datagram = (SocketAddr, SocketAddr, Vec<u8>);

/// One client-side peer connection.
pub struct Peer {
    pub rtc: Rtc,
    pub addr: SocketAddr,
    pub connected: bool,
    pub media: Vec<Mid>,
    pub rtp_received: u64,
    /// The payload type and payload of the last RTP packet received.
    pub last_rtp: Option<(Pt, Vec<u8>)>,
    /// The RTP marker of the last RTP packet received.
    pub last_marker: Option<bool>,
    /// The SSRC and transport-wide sequence number of the last RTP packet received.
    pub last_ssrc: Option<u32>,
    pub last_twcc: Option<u16>,
    /// Every RTP packet received (sequence number, payload), in arrival order, once a test
    /// sets this to `Some` (off by default: benchmarks receive millions).
    pub recorded: Option<Vec<(u64, Vec<u8>)>>,
    pub channels: Vec<(ChannelId, String)>,
    pub data_received: Vec<Vec<u8>>,
    /// RTCP sender reports received, with the virtual time of each (`Event::SenderFeedback`).
    pub sender_reports: Vec<Instant>,
}

impl Peer {
    fn new(addr: SocketAddr, now: Instant) -> Peer {
        // A loopback-style test address always makes a valid host candidate.
        let rtc = pylon_testkit::client_rtc(addr, None, now).expect("host candidate");
        Peer {
            rtc,
            addr,
            connected: false,
            media: Vec::new(),
            rtp_received: 0,
            last_rtp: None,
            last_marker: None,
            last_ssrc: None,
            last_twcc: None,
            recorded: None,
            channels: Vec::new(),
            data_received: Vec::new(),
            sender_reports: Vec::new(),
        }
    }
}

/// A participant's client: its two peer connections and what the server told it.
pub struct Client {
    pub shard: usize,
    pub session: SessionId,
    pub identity: String,
    pub publisher: Peer,
    pub subscriber: Peer,
    pub pending_offer: Option<SdpPendingOffer>,
    next_offer_id: u32,
    /// Every signal message the server sent, in order.
    pub signals: Vec<Resp>,
    pub closed: bool,
}

impl Client {
    /// The participants this client was last told about (by identity) and their state.
    pub fn known_participants(&self) -> HashMap<String, lk::ParticipantInfo> {
        let mut known = HashMap::new();
        for s in &self.signals {
            let infos = match s {
                Resp::Join(j) => j.other_participants.clone(),
                Resp::Update(u) => u.participants.clone(),
                _ => continue,
            };
            for p in infos {
                let newer = known
                    .get(&p.identity)
                    .is_none_or(|old: &lk::ParticipantInfo| p.version >= old.version || p.sid != old.sid);
                if newer {
                    known.insert(p.identity.clone(), p);
                }
            }
        }
        known
            .into_iter()
            .filter(|(_, p)| p.state != lk::participant_info::State::Disconnected as i32)
            .collect()
    }
}

struct RoomEntry {
    record: RoomRecord,
    home: usize,
    instances: Vec<usize>,
}

/// The whole in-memory network: shards, clients, the virtual clock.
pub struct Net {
    pub shards: Vec<Shard>,
    /// The node each shard belongs to.
    node_of: Vec<usize>,
    pub clients: Vec<Client>,
    pub now: Instant,
    rooms: HashMap<String, RoomEntry>,
    /// Datagrams shards transmitted, waiting for delivery to clients.
    pub to_clients: VecDeque<Datagram>,
    /// Datagrams clients transmitted, waiting for delivery to a shard.
    pub to_shards: VecDeque<Datagram>,
    /// Relay messages in flight: from, to, message.
    pub relays: VecDeque<(usize, usize, RelayMessage)>,
    /// Every webhook the shards emitted.
    pub webhooks: Vec<lk::WebhookEvent>,
    /// RTP packets relayed between shards: (from, to) → count.
    pub relayed_rtp: HashMap<(usize, usize), u64>,
    /// Data-track packets relayed between shards: (from, to) → count.
    pub relayed_data_frames: HashMap<(usize, usize), u64>,
    /// The tier of links between shards of different nodes (`Region`: each node is a region).
    cross_tier: Tier,
    /// Links cut (both directions): their relay messages are lost.
    cut: Vec<(usize, usize)>,
    /// Client addresses whose RTCP is lost on the way to the shards (what [`Net::inject`]
    /// delivers still arrives).
    pub rtcp_lost_from: Vec<SocketAddr>,
    next_sid: u64,
}

/// The `i`th packet of a small VP8 stream: 320x180, a keyframe every 30 packets.
pub fn vp8_packet(i: u64) -> Vec<u8> {
    let body = [0x42u8; 200];
    if i.is_multiple_of(30) {
        pylon_testkit::vp8::keyframe_start(320, 180, &body)
    } else {
        pylon_testkit::vp8::delta_start(&body)
    }
}

/// The address shard `i` advertises.
pub fn shard_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1 + i as u8], 7882))
}

impl Net {
    /// `shards` shards on one node (worker links only).
    pub fn new(shards: usize, now: Instant) -> Net {
        Self::with_nodes(&[shards], now)
    }

    /// `shards` shards on one node with downlink congestion control on, pausing allowed
    /// (`rtc.congestion_control`): TWCC feedback reaches the estimator and the allocator.
    pub fn with_congestion_control(shards: usize, now: Instant) -> Net {
        Self::with_config(shards, now, |c| {
            c.congestion_control.enabled = true;
            c.congestion_control.allow_pause = true;
        })
    }

    /// `shards` shards on one node, each configured by `configure` too.
    pub fn with_config(shards: usize, now: Instant, configure: impl Fn(&mut ShardConfig)) -> Net {
        Self::build(&[shards], now, Tier::Node, Duration::from_secs(15), &configure)
    }

    /// Shards on several nodes: `nodes[n]` shards on node `n`, numbered in order.
    pub fn with_nodes(nodes: &[usize], now: Instant) -> Net {
        Self::build(nodes, now, Tier::Node, Duration::from_secs(15), &|_| {})
    }

    /// Shards in several regions (one node each, `nodes[n]` shards in region `n`); a silent
    /// region's participants are kept for `grace`.
    pub fn with_regions(nodes: &[usize], grace: Duration, now: Instant) -> Net {
        Self::build(nodes, now, Tier::Region, grace, &|_| {})
    }

    fn build(
        nodes: &[usize],
        now: Instant,
        cross_tier: Tier,
        grace: Duration,
        configure: &dyn Fn(&mut ShardConfig),
    ) -> Net {
        let node_of: Vec<usize> = nodes
            .iter()
            .enumerate()
            .flat_map(|(n, count)| std::iter::repeat_n(n, *count))
            .collect();
        let shards = (0..node_of.len())
            .map(|i| {
                let mut config = ShardConfig::new(shard_addr(i));
                config.key_base = (i as u64) << 48;
                config.region_grace = grace;
                configure(&mut config);
                Shard::new(config, now, 1_800_000_000_000, i as u64 + 1)
            })
            .collect();
        Net {
            shards,
            node_of,
            clients: Vec::new(),
            now,
            rooms: HashMap::new(),
            to_clients: VecDeque::new(),
            to_shards: VecDeque::new(),
            relays: VecDeque::new(),
            webhooks: Vec::new(),
            relayed_rtp: HashMap::new(),
            relayed_data_frames: HashMap::new(),
            cross_tier,
            cut: Vec::new(),
            rtcp_lost_from: Vec::new(),
            next_sid: 1,
        }
    }

    /// The tier of the link between two shards.
    pub fn tier(&self, a: usize, b: usize) -> Tier {
        if self.node_of[a] == self.node_of[b] {
            Tier::Worker
        } else {
            self.cross_tier
        }
    }

    /// Shard `other` as a place seen from shard `me`.
    fn place_seen_from(&self, me: usize, other: usize) -> PlaceId {
        PlaceId {
            tier: self.tier(me, other),
            index: other as u32,
        }
    }

    /// Cut the link between shards `a` and `b`: what is in flight and what follows is lost,
    /// and both find the link down (as the runtime reports a silent link).
    pub fn cut_link(&mut self, a: usize, b: usize) {
        self.cut.push((a, b));
        for (me, other) in [(a, b), (b, a)] {
            let place = self.place_seen_from(me, other);
            self.shards[me].place_down(self.now, place);
        }
        self.settle();
    }

    /// The link between `a` and `b` is back.
    pub fn heal_link(&mut self, a: usize, b: usize) {
        self.cut.retain(|l| *l != (a, b) && *l != (b, a));
        for (me, other) in [(a, b), (b, a)] {
            let place = self.place_seen_from(me, other);
            self.shards[me].place_up(self.now, place);
        }
        self.settle();
    }

    /// Where a new participant of `room` on `shard` sits, as the directories decide: linked to
    /// the room's other instances on its node, and, if it is its node's anchor, to the other
    /// nodes' anchors.
    fn place(&mut self, room: &str, shard: usize) -> Placement {
        let next_sid = &mut self.next_sid;
        let entry = self.rooms.entry(room.to_string()).or_insert_with(|| {
            *next_sid += 1;
            RoomEntry {
                record: RoomRecord {
                    sid: RoomSid::new(format!("RM_sim{next_sid}")),
                    creation_unix_ms: 1_800_000_000_000,
                    metadata: String::new(),
                    settings: RoomDefaults::default(),
                },
                home: shard,
                instances: Vec::new(),
            }
        });
        if !entry.instances.contains(&shard) {
            entry.instances.push(shard);
        }
        let node_of = &self.node_of;
        let anchor = |node: usize| entry.instances.iter().copied().find(|i| node_of[*i] == node);
        let me_anchor = anchor(node_of[shard]) == Some(shard);
        let mut peers = Vec::new();
        for &i in &entry.instances {
            if i == shard {
                continue;
            }
            if node_of[i] == node_of[shard] {
                peers.push(PlaceId::worker(i as u32));
            } else if me_anchor && anchor(node_of[i]) == Some(i) {
                peers.push(PlaceId {
                    tier: self.cross_tier,
                    index: i as u32,
                });
            }
        }
        Placement {
            record: Some(entry.record.clone()),
            home: entry.home == shard,
            anchor: me_anchor,
            peers,
        }
    }

    /// Join `identity` to `room` on `shard`; returns the client's index.
    pub fn join(&mut self, shard: usize, room: &str, identity: &str) -> usize {
        let i = self.clients.len();
        let session = SessionId(i as u64 + 1);
        let mut params = JoinParams::standard(session, room, identity);
        params.placement = self.place(room, shard);
        let now = self.now;
        self.shards[shard].join(now, params).expect("join");
        let base = 10_000 + 2 * i as u16;
        let addr = |port: u16| SocketAddr::from(([10, 0, 1, 1], port));
        self.clients.push(Client {
            shard,
            session,
            identity: identity.to_string(),
            publisher: Peer::new(addr(base), now),
            subscriber: Peer::new(addr(base + 1), now),
            pending_offer: None,
            next_offer_id: 1,
            signals: Vec::new(),
            closed: false,
        });
        i
    }

    /// Make client `c`'s subscriber connection learn its SRTP keys
    /// ([`crate::srtcp::capturing_provider`]), so a test can write SRTCP as that client.
    /// Call it right after [`Net::join`], before the connection is negotiated.
    pub fn capture_subscriber_keys(&mut self, c: usize) {
        let peer = &mut self.clients[c].subscriber;
        assert!(!peer.connected, "the subscriber connection is already up");
        let crypto = crate::srtcp::capturing_provider();
        peer.rtc =
            pylon_testkit::client_rtc_with_crypto(peer.addr, crypto, self.now).expect("host candidate");
    }

    /// Send a request from client `c` through the signalling edge's parser.
    pub fn signal(&mut self, c: usize, msg: Req) {
        let req = lk::SignalRequest { message: Some(msg) };
        let session = self.clients[c].session;
        let shard = self.clients[c].shard;
        let now = self.now;
        match pylon_server::wire::signal_command(req) {
            Ok(cmd) => self.shards[shard].signal(now, session, cmd),
            Err(e) => self.shards[shard].protocol_violation(now, session, &e.to_string()),
        }
    }

    /// Send a core command from client `c` directly.
    pub fn command(&mut self, c: usize, cmd: SignalCommand) {
        let (session, shard, now) = (self.clients[c].session, self.clients[c].shard, self.now);
        self.shards[shard].signal(now, session, cmd);
    }

    fn client_by_session(&mut self, shard: usize, session: SessionId) -> Option<usize> {
        self.clients
            .iter()
            .position(|c| c.shard == shard && c.session == session)
    }

    /// Handle what shard `s` asked for: answer offers, apply answers, queue datagrams and
    /// relay messages.
    fn drain_shard(&mut self, s: usize) {
        while let Some(out) = self.shards[s].poll_output() {
            match out {
                Output::Transmit(t) => {
                    self.to_clients
                        .push_back((t.source, t.destination, t.contents.to_vec()));
                    str0m::net::recycle(t.contents);
                }
                Output::Relay(place, msg) => {
                    let to = place.index as usize;
                    if matches!(msg, RelayMessage::Rtp(_)) {
                        *self.relayed_rtp.entry((s, to)).or_default() += 1;
                    }
                    if matches!(msg, RelayMessage::DataFrame { .. }) {
                        *self.relayed_data_frames.entry((s, to)).or_default() += 1;
                    }
                    self.relays.push_back((s, to, msg));
                }
                Output::Webhook(w) => self.webhooks.push(*w),
                Output::Event(_) => {}
                Output::Close(session) => {
                    if let Some(c) = self.client_by_session(s, session) {
                        self.clients[c].closed = true;
                    }
                }
                Output::Signal(session, resp) => {
                    let Some(c) = self.client_by_session(s, session) else {
                        continue;
                    };
                    let Some(msg) = resp.message else { continue };
                    self.on_signal(c, &msg);
                    self.clients[c].signals.push(msg);
                }
            }
        }
    }

    fn on_signal(&mut self, c: usize, msg: &Resp) {
        match msg {
            Resp::Offer(sd) => {
                let offer = SdpOffer::from_sdp_string(&sd.sdp).expect("server offer parses");
                let answer = self.clients[c]
                    .subscriber
                    .rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .expect("accept offer");
                let reply = lk::SessionDescription {
                    r#type: "answer".into(),
                    sdp: answer.to_sdp_string(),
                    id: sd.id,
                    ..Default::default()
                };
                self.signal(c, Req::Answer(reply));
            }
            Resp::Answer(sd) => {
                let answer = SdpAnswer::from_sdp_string(&sd.sdp).expect("server answer parses");
                if let Some(pending) = self.clients[c].pending_offer.take() {
                    self.clients[c]
                        .publisher
                        .rtc
                        .sdp_api()
                        .accept_answer(pending, answer)
                        .expect("accept answer");
                }
            }
            _ => {}
        }
    }

    fn peer_by_addr(&mut self, addr: SocketAddr) -> Option<&mut Peer> {
        self.clients.iter_mut().find_map(|c| {
            if c.publisher.addr == addr {
                Some(&mut c.publisher)
            } else if c.subscriber.addr == addr {
                Some(&mut c.subscriber)
            } else {
                None
            }
        })
    }

    /// Poll one client peer until it times out, queueing what it transmits.
    pub fn poll_peer(peer: &mut Peer, to_shards: &mut VecDeque<Datagram>) {
        loop {
            match peer.rtc.poll_output().expect("client rtc") {
                str0m::Output::Timeout(_) => return,
                str0m::Output::Transmit(t) => {
                    to_shards.push_back((t.source, t.destination, t.contents.to_vec()));
                    str0m::net::recycle(t.contents);
                }
                str0m::Output::Event(e) => match e {
                    Event::Connected => peer.connected = true,
                    Event::MediaAdded(m) => peer.media.push(m.mid),
                    Event::RtpPacket(p) => {
                        peer.rtp_received += 1;
                        peer.last_rtp = Some((p.header.payload_type, p.payload.to_vec()));
                        peer.last_marker = Some(p.header.marker);
                        peer.last_ssrc = Some(*p.header.ssrc);
                        peer.last_twcc = p.header.ext_vals.transport_cc.or(peer.last_twcc);
                        if let Some(r) = &mut peer.recorded {
                            r.push((*p.seq_no, p.payload.to_vec()));
                        }
                    }
                    Event::ChannelOpen(id, label) => peer.channels.push((id, label)),
                    Event::ChannelData(d) => peer.data_received.push(d.data),
                    Event::SenderFeedback(f) => peer.sender_reports.push(f.received_at),
                    _ => {}
                },
            }
        }
    }

    fn shard_by_addr(addr: SocketAddr) -> usize {
        usize::from(match addr.ip() {
            std::net::IpAddr::V4(v4) => v4.octets()[3].saturating_sub(1),
            std::net::IpAddr::V6(_) => 0,
        })
    }

    /// Deliver everything queued, in every direction, until the network is quiet.
    pub fn settle(&mut self) {
        loop {
            for s in 0..self.shards.len() {
                self.drain_shard(s);
            }
            let mut moved = false;
            while let Some((src, dst, data)) = self.to_clients.pop_front() {
                moved = true;
                let now = self.now;
                let mut to_shards = std::mem::take(&mut self.to_shards);
                if let Some(peer) = self.peer_by_addr(dst) {
                    if let Ok(r) = Receive::new(Protocol::Udp, src, dst, &data) {
                        peer.rtc
                            .handle_input(Input::Receive(now, r))
                            .expect("client input");
                    }
                    // RTP mode keeps one received packet: poll after every datagram.
                    Self::poll_peer(peer, &mut to_shards);
                }
                self.to_shards = to_shards;
            }
            for c in &mut self.clients {
                Self::poll_peer(&mut c.publisher, &mut self.to_shards);
                Self::poll_peer(&mut c.subscriber, &mut self.to_shards);
            }
            while let Some((src, dst, data)) = self.to_shards.pop_front() {
                moved = true;
                // RTCP (RFC 5761 §4: version 2, packet type 192..=223) from a muted address.
                let rtcp = data.len() >= 2 && data[0] >> 6 == 2 && (192..=223).contains(&data[1]);
                if rtcp && self.rtcp_lost_from.contains(&src) {
                    continue;
                }
                let s = Self::shard_by_addr(dst);
                let _ = self.shards[s].receive(self.now, src, dst, &data);
            }
            while let Some((from, to, msg)) = self.relays.pop_front() {
                moved = true;
                if self.cut.contains(&(from, to)) || self.cut.contains(&(to, from)) {
                    continue;
                }
                let place = self.place_seen_from(to, from);
                self.shards[to].relay_input(self.now, place, msg);
            }
            if !moved {
                return;
            }
        }
    }

    /// Deliver a datagram from `from` to shard `shard` now, past [`Net::rtcp_lost_from`].
    pub fn inject(&mut self, from: SocketAddr, shard: usize, data: &[u8]) {
        let _ = self.shards[shard].receive(self.now, from, shard_addr(shard), data);
        self.settle();
    }

    /// Advance the virtual clock by `d` in steps, driving every timer.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += STEP;
            let now = self.now;
            for s in &mut self.shards {
                if s.poll_timeout() <= now {
                    s.handle_timeout(now);
                }
            }
            for c in &mut self.clients {
                c.publisher
                    .rtc
                    .handle_input(Input::Timeout(now))
                    .expect("timeout");
                c.subscriber
                    .rtc
                    .handle_input(Input::Timeout(now))
                    .expect("timeout");
            }
            self.settle();
        }
    }

    /// Send the offer `apply` produced for client `c`'s publisher.
    fn send_offer(&mut self, c: usize, offer: SdpOffer, pending: SdpPendingOffer) {
        let client = &mut self.clients[c];
        client.pending_offer = Some(pending);
        let id = client.next_offer_id;
        client.next_offer_id += 1;
        let sd = lk::SessionDescription {
            r#type: "offer".into(),
            sdp: offer.to_sdp_string(),
            id,
            ..Default::default()
        };
        self.signal(c, Req::Offer(sd));
    }

    /// Ask to publish a camera or microphone track (`cid` is also its name).
    fn add_track(&mut self, c: usize, kind: MediaKind, cid: &str) {
        let (ty, source) = if kind.is_video() {
            (lk::TrackType::Video, lk::TrackSource::Camera)
        } else {
            (lk::TrackType::Audio, lk::TrackSource::Microphone)
        };
        let add = lk::AddTrackRequest {
            cid: cid.into(),
            name: cid.into(),
            r#type: ty as i32,
            source: source as i32,
            width: 1280,
            height: 720,
            ..Default::default()
        };
        self.signal(c, Req::AddTrack(add));
    }

    /// AddTrack, then offer a send-only m-line of `kind` (with the client's data channels the
    /// first time); returns its mid once negotiated.
    pub fn publish(&mut self, c: usize, kind: MediaKind, cid: &str) -> Mid {
        self.add_track(c, kind, cid);
        let client = &mut self.clients[c];
        let mut api = client.publisher.rtc.sdp_api();
        let first = client.publisher.media.is_empty() && client.next_offer_id == 1;
        if first {
            for label in [
                pylon_core::data::RELIABLE_LABEL,
                pylon_core::data::LOSSY_LABEL,
                pylon_core::data::DATA_TRACK_LABEL,
            ] {
                api.add_channel_with_config(ChannelConfig {
                    label: label.into(),
                    ..Default::default()
                });
            }
        }
        let mid = api.add_media(
            kind,
            Direction::SendOnly,
            Some("s".into()),
            Some(cid.into()),
            None,
        );
        let (offer, pending) = api.apply().expect("an offer");
        self.send_offer(c, offer, pending);
        mid
    }

    /// Stop sending on `mid` (the SDKs unpublish by renegotiating the section inactive).
    pub fn unpublish(&mut self, c: usize, mid: Mid) {
        let mut api = self.clients[c].publisher.rtc.sdp_api();
        api.set_direction(mid, Direction::Inactive);
        let (offer, pending) = api.apply().expect("an offer");
        self.send_offer(c, offer, pending);
    }

    /// Publish again on a section `unpublish` made inactive, as a new track (`cid`): the way a
    /// client reuses its own transceiver.
    pub fn republish(&mut self, c: usize, mid: Mid, cid: &str) {
        let kind = self.clients[c]
            .publisher
            .rtc
            .media(mid)
            .map(|m| m.kind())
            .expect("published mid");
        self.add_track(c, kind, cid);
        let mut api = self.clients[c].publisher.rtc.sdp_api();
        api.set_direction(mid, Direction::SendOnly);
        let (offer, pending) = api.apply().expect("an offer");
        self.send_offer(c, offer, pending);
    }

    /// Offer and accept RFC 2198 redundant audio (RED) on both of client `c`'s connections, as
    /// libwebrtc does; call right after `join`, before anything is negotiated.
    pub fn enable_red(&mut self, c: usize) {
        let now = self.now;
        let client = &mut self.clients[c];
        for peer in [&mut client.publisher, &mut client.subscriber] {
            peer.rtc = pylon_testkit::client_rtc_with_red(peer.addr, now).expect("host candidate");
        }
    }

    /// Offer and accept VP9 (after VP8) on both of client `c`'s connections; call right after
    /// `join`, before anything is negotiated.
    pub fn enable_vp9(&mut self, c: usize) {
        let now = self.now;
        let client = &mut self.clients[c];
        for peer in [&mut client.publisher, &mut client.subscriber] {
            peer.rtc = pylon_testkit::client_rtc_with_vp9(peer.addr, now).expect("host candidate");
        }
    }

    /// The payload type client `c`'s publisher connection uses for VP9.
    pub fn vp9_pt(&self, c: usize) -> Pt {
        self.video_pt(c, str0m::format::Codec::Vp9)
    }

    /// The payload type client `c`'s publisher connection uses for VP8.
    pub fn vp8_pt(&self, c: usize) -> Pt {
        self.video_pt(c, str0m::format::Codec::Vp8)
    }

    fn video_pt(&self, c: usize, codec: str0m::format::Codec) -> Pt {
        self.clients[c]
            .publisher
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
            .expect("codec configured")
    }

    /// The payload types client `c`'s connection `pc` uses for Opus and for RED (if negotiated).
    pub fn opus_pts(&self, c: usize, publisher: bool) -> (Pt, Option<Pt>) {
        let client = &self.clients[c];
        let peer = if publisher {
            &client.publisher
        } else {
            &client.subscriber
        };
        let opus = peer
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == str0m::format::Codec::Opus)
            .expect("opus configured");
        (opus.pt(), opus.red())
    }

    /// Send one RTP packet on the client's publisher `mid` (VP8 for video, a token Opus
    /// payload for audio).
    pub fn write_rtp(&mut self, c: usize, mid: Mid, seq: u64, ts: u32, payload: Vec<u8>) {
        let rtc = &self.clients[c].publisher.rtc;
        let kind = rtc.media(mid).map(|m| m.kind()).expect("published mid");
        let codec = if kind.is_video() {
            str0m::format::Codec::Vp8
        } else {
            str0m::format::Codec::Opus
        };
        let pt = rtc
            .codec_config()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
            .expect("codec negotiated");
        self.write_rtp_as(c, mid, pt, seq, ts, payload);
    }

    /// Send one RTP packet of payload type `pt` on the client's publisher `mid`.
    pub fn write_rtp_as(&mut self, c: usize, mid: Mid, pt: Pt, seq: u64, ts: u32, payload: Vec<u8>) {
        self.write_rtp_marked(c, mid, pt, seq, ts, true, payload);
    }

    /// [`Self::write_rtp_as`] with the RTP marker as given.
    #[allow(clippy::too_many_arguments)]
    pub fn write_rtp_marked(
        &mut self,
        c: usize,
        mid: Mid,
        pt: Pt,
        seq: u64,
        ts: u32,
        marker: bool,
        payload: Vec<u8>,
    ) {
        let now = self.now;
        let rtc = &mut self.clients[c].publisher.rtc;
        let kind = rtc.media(mid).map(|m| m.kind()).expect("published mid");
        let mut api = rtc.direct_api();
        let tx = api.stream_tx_by_mid(mid, None).expect("send stream");
        tx.write_rtp(
            RtpWrite::new(pt, seq.into(), ts, now, payload)
                .marker(marker)
                .nackable(kind.is_video()),
        );
    }

    /// Send a data packet on the client's reliable publisher channel.
    pub fn send_data(&mut self, c: usize, bytes: &[u8]) -> bool {
        self.send_on_channel(c, pylon_core::data::RELIABLE_LABEL, bytes)
    }

    /// Send a message on the client's publisher channel of this label.
    pub fn send_on_channel(&mut self, c: usize, label: &str, bytes: &[u8]) -> bool {
        let peer = &mut self.clients[c].publisher;
        let Some((id, _)) = peer.channels.iter().find(|(_, l)| l == label).cloned() else {
            return false;
        };
        peer.rtc
            .channel(id)
            .is_some_and(|mut ch| ch.write(true, bytes).is_ok())
    }

    /// Every room this harness placed, with its instances.
    pub fn room_instances(&self, room: &str) -> Vec<usize> {
        self.rooms
            .get(room)
            .map(|r| r.instances.clone())
            .unwrap_or_default()
    }

    /// The room's name as a typed id.
    pub fn room(name: &str) -> RoomName {
        RoomName::new(name)
    }
}
