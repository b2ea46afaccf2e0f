//! The TURN server as a state machine: datagrams and stream frames in, replies and relayed
//! payloads out, time passed in. The driver owns the sockets (`crates/server/src/turn.rs`).
//!
//! Scope is what WebRTC clients use: UDP relays (REQUESTED-TRANSPORT 17) reached over UDP,
//! TCP or TLS; Allocate, Refresh, CreatePermission, ChannelBind, Send and Data indications,
//! ChannelData, and Binding. Not built: RFC 6062 TCP relays, EVEN-PORT and reservations, DTLS,
//! SHA-256 integrity (clients fall back to the RFC 5389 key libwebrtc uses).

use crate::credentials::{TurnSecret, REALM};
use crate::peer::{PeerPolicy, Refusal};
use crate::stun::{self, attr, Class, Message, Method, Writer};
use hmac::{Hmac, Mac};
use rustc_hash::FxHashMap;
use sha2::Sha256;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// A nonce older than this gets 438 Stale Nonce and the client retries with a fresh one.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(3600);
/// Permissions and channels one allocation may hold; a WebRTC client needs one or two.
pub const MAX_PEERS_PER_ALLOCATION: usize = 16;
const UDP: u8 = 17;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub policy: PeerPolicy,
    pub secret: TurnSecret,
    /// Allocations one participant may hold at once (0: no limit); LiveKit's
    /// `per_user_relay_allocation_limit`.
    pub per_participant_limit: u32,
    /// Allocations the whole server holds at most.
    pub max_allocations: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    /// TCP or TLS: one connection per client, frames padded to four bytes.
    Stream,
}

/// A client's 5-tuple as the server sees it (the listening side is implied by the transport).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Client {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// Binds relay sockets for new allocations: the driver's sockets, a fake in tests.
pub trait RelayBinder {
    /// A fresh relayed transport address of this family, or `None` when none is free.
    fn bind(&mut self, v6: bool) -> Option<SocketAddr>;
}

/// What to do with a client's message.
#[derive(Debug, PartialEq, Eq)]
pub enum FromClient<'a> {
    /// Nothing to send (dropped, or an indication that goes nowhere).
    Nothing,
    /// Send the output buffer back to the client.
    Reply,
    /// Send `data` from the relay socket `relay` to `peer`.
    Relay {
        relay: SocketAddr,
        peer: SocketAddr,
        data: &'a [u8],
    },
}

/// Counters for metrics.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub allocations: u64,
    pub auth_failures: u64,
    pub peer_refusals: FxHashMap<&'static str, u64>,
    pub dropped: u64,
}

#[derive(Debug)]
struct Channel {
    number: u16,
    peer: SocketAddr,
    expires: Instant,
}

#[derive(Debug)]
struct Allocation {
    relay: SocketAddr,
    expires: Instant,
    username: String,
    participant: String,
    key: [u8; 16],
    allocate_transaction: [u8; 12],
    permissions: Vec<(IpAddr, Instant)>,
    channels: Vec<Channel>,
}

impl Allocation {
    fn permitted(&self, now: Instant, ip: IpAddr) -> bool {
        self.permissions.iter().any(|(p, exp)| *p == ip && *exp > now)
    }
}

pub struct TurnServer {
    config: ServerConfig,
    allocations: FxHashMap<Client, Allocation>,
    by_relay: FxHashMap<SocketAddr, Client>,
    per_participant: FxHashMap<String, u32>,
    nonce_key: [u8; 32],
    epoch: Instant,
    released: VecDeque<SocketAddr>,
    stats: Stats,
}

/// A request that passed authentication.
struct Authed {
    key: [u8; 16],
    username: String,
    participant: String,
}

impl TurnServer {
    pub fn new(config: ServerConfig, now: Instant) -> Self {
        TurnServer {
            config,
            allocations: FxHashMap::default(),
            by_relay: FxHashMap::default(),
            per_participant: FxHashMap::default(),
            nonce_key: rand::random(),
            epoch: now,
            released: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// Relay sockets the driver should close (expired or deleted allocations).
    pub fn poll_released(&mut self) -> Option<SocketAddr> {
        self.released.pop_front()
    }

    /// A client's message. `unix_now` is the wall clock in seconds (credential expiry); any
    /// reply is written to `out`.
    pub fn from_client<'a>(
        &mut self,
        now: Instant,
        unix_now: u64,
        client: Client,
        bytes: &'a [u8],
        binder: &mut impl RelayBinder,
        out: &mut Vec<u8>,
    ) -> FromClient<'a> {
        if bytes.first().is_some_and(|b| b >> 6 == 0b01) {
            return self.channel_data(now, client, bytes);
        }
        let Ok(msg) = Message::parse(bytes) else {
            self.stats.dropped += 1;
            return FromClient::Nothing;
        };
        match (msg.class, msg.method) {
            (Class::Request, Method::Binding) => {
                Writer::new(out, Method::Binding, Class::Success, msg.transaction)
                    .xor_address(attr::XOR_MAPPED_ADDRESS, client.addr)
                    .fingerprint();
                FromClient::Reply
            }
            (Class::Indication, Method::Send) => self.send_indication(now, client, &msg),
            (
                Class::Request,
                Method::Allocate | Method::Refresh | Method::CreatePermission | Method::ChannelBind,
            ) => {
                let Some(auth) = self.authenticate(now, unix_now, client, &msg, out) else {
                    return FromClient::Reply;
                };
                let mut unknown = Vec::new();
                for k in msg.unknown_required() {
                    unknown.extend_from_slice(&k.to_be_bytes());
                }
                if !unknown.is_empty() {
                    Writer::new(out, msg.method, Class::Error, msg.transaction)
                        .error(420, "Unknown Attribute")
                        .raw(attr::UNKNOWN_ATTRIBUTES, &unknown)
                        .integrity(&auth.key)
                        .fingerprint();
                    return FromClient::Reply;
                }
                match msg.method {
                    Method::Allocate => self.allocate(now, client, &msg, auth, binder, out),
                    Method::Refresh => self.refresh(now, client, &msg, &auth, out),
                    Method::CreatePermission => self.create_permission(now, client, &msg, &auth, out),
                    _ => self.channel_bind(now, client, &msg, &auth, out),
                }
                FromClient::Reply
            }
            _ => {
                self.stats.dropped += 1;
                FromClient::Nothing
            }
        }
    }

    /// A datagram that reached relay socket `relay` from `peer`. Returns the client to send
    /// `out` to, or `None` when it is dropped (no allocation or no permission).
    pub fn from_peer(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<Client> {
        let client = *self.by_relay.get(&relay)?;
        let a = self.allocations.get(&client)?;
        if !a.permitted(now, peer.ip()) || data.len() > usize::from(u16::MAX) - 64 {
            self.stats.dropped += 1;
            return None;
        }
        if let Some(ch) = a.channels.iter().find(|c| c.peer == peer && c.expires > now) {
            stun::write_channel_data(out, ch.number, data, client.transport == Transport::Stream);
        } else {
            let tx: [u8; 12] = rand::random();
            Writer::new(out, Method::Data, Class::Indication, tx)
                .xor_address(attr::XOR_PEER_ADDRESS, peer)
                .raw(attr::DATA, data)
                .finish();
        }
        Some(client)
    }

    /// A stream client disconnected: its allocation goes with it.
    pub fn client_gone(&mut self, client: Client) {
        self.remove(client);
    }

    /// Expire allocations, permissions and channels. Call about once a second.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<Client> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(c, _)| *c)
            .collect();
        for c in expired {
            self.remove(c);
        }
        for a in self.allocations.values_mut() {
            a.permissions.retain(|(_, exp)| *exp > now);
            a.channels.retain(|c| c.expires > now);
        }
    }

    fn remove(&mut self, client: Client) {
        let Some(a) = self.allocations.remove(&client) else {
            return;
        };
        self.by_relay.remove(&a.relay);
        if let Some(n) = self.per_participant.get_mut(&a.participant) {
            *n -= 1;
            if *n == 0 {
                self.per_participant.remove(&a.participant);
            }
        }
        self.released.push_back(a.relay);
    }

    fn channel_data<'a>(&mut self, now: Instant, client: Client, bytes: &'a [u8]) -> FromClient<'a> {
        let relayed = stun::parse_channel_data(bytes).and_then(|(number, data)| {
            let a = self.allocations.get(&client)?;
            let ch = a
                .channels
                .iter()
                .find(|c| c.number == number && c.expires > now)?;
            Some(FromClient::Relay {
                relay: a.relay,
                peer: ch.peer,
                data,
            })
        });
        relayed.unwrap_or_else(|| {
            self.stats.dropped += 1;
            FromClient::Nothing
        })
    }

    fn send_indication<'a>(&mut self, now: Instant, client: Client, msg: &Message<'a>) -> FromClient<'a> {
        let relayed = (|| {
            let a = self.allocations.get(&client)?;
            let peer = msg.xor_address(attr::XOR_PEER_ADDRESS)?;
            let data = msg.get(attr::DATA)?;
            let allowed =
                a.permitted(now, peer.ip()) && self.config.policy.check_addr(peer, a.relay.is_ipv6()).is_ok();
            allowed.then_some(FromClient::Relay {
                relay: a.relay,
                peer,
                data,
            })
        })();
        relayed.unwrap_or_else(|| {
            self.stats.dropped += 1;
            FromClient::Nothing
        })
    }

    fn nonce(&self, now: Instant, client: Client) -> [u8; 24] {
        let secs = now.saturating_duration_since(self.epoch).as_secs() as u32;
        self.nonce_for(secs, client)
    }

    fn nonce_for(&self, secs: u32, client: Client) -> [u8; 24] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.nonce_key).expect("any key length");
        mac.update(&secs.to_be_bytes());
        mac.update(client.addr.to_string().as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut raw = [0u8; 12];
        raw[..4].copy_from_slice(&secs.to_be_bytes());
        raw[4..].copy_from_slice(&tag[..8]);
        let mut hex = [0u8; 24];
        for (i, b) in raw.iter().enumerate() {
            hex[2 * i] = b"0123456789abcdef"[usize::from(b >> 4)];
            hex[2 * i + 1] = b"0123456789abcdef"[usize::from(b & 0xF)];
        }
        hex
    }

    /// `Some(true)`: ours and fresh; `Some(false)`: ours and stale; `None`: not ours.
    fn nonce_fresh(&self, now: Instant, client: Client, nonce: &[u8]) -> Option<bool> {
        let secs_hex = std::str::from_utf8(nonce.get(..8)?).ok()?;
        let secs = u32::from_str_radix(secs_hex, 16).ok()?;
        if nonce != self.nonce_for(secs, client) {
            return None;
        }
        let age = now
            .saturating_duration_since(self.epoch)
            .as_secs()
            .saturating_sub(u64::from(secs));
        Some(age < NONCE_LIFETIME.as_secs())
    }

    fn challenge(
        &mut self,
        now: Instant,
        client: Client,
        msg: &Message<'_>,
        code: u16,
        reason: &str,
        out: &mut Vec<u8>,
    ) {
        let nonce = self.nonce(now, client);
        Writer::new(out, msg.method, Class::Error, msg.transaction)
            .error(code, reason)
            .raw(attr::REALM, REALM.as_bytes())
            .raw(attr::NONCE, &nonce)
            .fingerprint();
    }

    /// Long-term credential check (RFC 8489 §9.2). On failure the error is in `out`.
    fn authenticate(
        &mut self,
        now: Instant,
        unix_now: u64,
        client: Client,
        msg: &Message<'_>,
        out: &mut Vec<u8>,
    ) -> Option<Authed> {
        let (Some(username), Some(nonce), true) = (msg.username(), msg.nonce(), msg.has_integrity()) else {
            // The first request of every client: the challenge, not a failure.
            self.challenge(now, client, msg, 401, "Unauthorized", out);
            return None;
        };
        match self.nonce_fresh(now, client, nonce) {
            Some(true) => {}
            Some(false) => {
                self.challenge(now, client, msg, 438, "Stale Nonce", out);
                return None;
            }
            None => {
                self.stats.auth_failures += 1;
                self.challenge(now, client, msg, 401, "Unauthorized", out);
                return None;
            }
        }
        if let Some(a) = self.allocations.get(&client) {
            if a.username != username {
                self.stats.auth_failures += 1;
                Writer::new(out, msg.method, Class::Error, msg.transaction)
                    .error(441, "Wrong Credentials")
                    .fingerprint();
                return None;
            }
            if msg.verify_integrity(&a.key) {
                return Some(Authed {
                    key: a.key,
                    username: a.username.clone(),
                    participant: a.participant.clone(),
                });
            }
        } else {
            let expiry = (msg.method == Method::Allocate).then_some(unix_now);
            if let Ok(v) = self.config.secret.verify(username, expiry) {
                if msg.verify_integrity(&v.key) {
                    return Some(Authed {
                        key: v.key,
                        username: username.to_owned(),
                        participant: v.participant,
                    });
                }
            }
        }
        self.stats.auth_failures += 1;
        self.challenge(now, client, msg, 401, "Unauthorized", out);
        None
    }

    fn reply_error(out: &mut Vec<u8>, msg: &Message<'_>, key: &[u8; 16], code: u16, reason: &str) {
        Writer::new(out, msg.method, Class::Error, msg.transaction)
            .error(code, reason)
            .integrity(key)
            .fingerprint();
    }

    fn refuse_peer(&mut self, out: &mut Vec<u8>, msg: &Message<'_>, key: &[u8; 16], why: Refusal) {
        *self.stats.peer_refusals.entry(why.as_str()).or_default() += 1;
        Self::reply_error(out, msg, key, 403, "Forbidden");
    }

    fn allocate(
        &mut self,
        now: Instant,
        client: Client,
        msg: &Message<'_>,
        auth: Authed,
        binder: &mut impl RelayBinder,
        out: &mut Vec<u8>,
    ) {
        if let Some(a) = self.allocations.get(&client) {
            if a.allocate_transaction == msg.transaction {
                // A retransmitted Allocate: the same answer again.
                let (relay, key, left) = (a.relay, a.key, a.expires.saturating_duration_since(now));
                Self::allocate_success(out, msg, client, relay, left, &key);
            } else {
                Self::reply_error(out, msg, &auth.key, 437, "Allocation Mismatch");
            }
            return;
        }
        match msg.requested_transport() {
            None => return Self::reply_error(out, msg, &auth.key, 400, "Bad Request"),
            Some(UDP) => {}
            Some(_) => return Self::reply_error(out, msg, &auth.key, 442, "Unsupported Transport Protocol"),
        }
        let v6 = match msg.requested_family_v6() {
            None => !self.config.policy.media().iter().any(|m| m.is_ipv4()),
            Some(Ok(v6)) => v6,
            Some(Err(())) => return Self::reply_error(out, msg, &auth.key, 400, "Bad Request"),
        };
        if !self.config.policy.media().iter().any(|m| m.is_ipv6() == v6) {
            return Self::reply_error(out, msg, &auth.key, 440, "Address Family not Supported");
        }
        let held = self.per_participant.get(&auth.participant).copied().unwrap_or(0);
        let limit = self.config.per_participant_limit;
        if limit > 0 && held >= limit {
            return Self::reply_error(out, msg, &auth.key, 486, "Allocation Quota Reached");
        }
        if self.allocations.len() >= self.config.max_allocations {
            return Self::reply_error(out, msg, &auth.key, 508, "Insufficient Capacity");
        }
        let Some(relay) = binder.bind(v6) else {
            return Self::reply_error(out, msg, &auth.key, 508, "Insufficient Capacity");
        };
        let lifetime = requested_lifetime(msg.lifetime());
        *self.per_participant.entry(auth.participant.clone()).or_default() += 1;
        self.by_relay.insert(relay, client);
        self.allocations.insert(
            client,
            Allocation {
                relay,
                expires: now + lifetime,
                username: auth.username,
                participant: auth.participant,
                key: auth.key,
                allocate_transaction: msg.transaction,
                permissions: Vec::new(),
                channels: Vec::new(),
            },
        );
        self.stats.allocations += 1;
        Self::allocate_success(out, msg, client, relay, lifetime, &auth.key);
    }

    fn allocate_success(
        out: &mut Vec<u8>,
        msg: &Message<'_>,
        client: Client,
        relay: SocketAddr,
        lifetime: Duration,
        key: &[u8; 16],
    ) {
        Writer::new(out, Method::Allocate, Class::Success, msg.transaction)
            .xor_address(attr::XOR_RELAYED_ADDRESS, relay)
            .u32(attr::LIFETIME, lifetime.as_secs() as u32)
            .xor_address(attr::XOR_MAPPED_ADDRESS, client.addr)
            .integrity(key)
            .fingerprint();
    }

    fn refresh(&mut self, now: Instant, client: Client, msg: &Message<'_>, auth: &Authed, out: &mut Vec<u8>) {
        let Some(a) = self.allocations.get_mut(&client) else {
            return Self::reply_error(out, msg, &auth.key, 437, "Allocation Mismatch");
        };
        let lifetime = if msg.lifetime() == Some(0) {
            self.remove(client);
            Duration::ZERO
        } else {
            let l = requested_lifetime(msg.lifetime());
            a.expires = now + l;
            l
        };
        Writer::new(out, Method::Refresh, Class::Success, msg.transaction)
            .u32(attr::LIFETIME, lifetime.as_secs() as u32)
            .integrity(&auth.key)
            .fingerprint();
    }

    fn create_permission(
        &mut self,
        now: Instant,
        client: Client,
        msg: &Message<'_>,
        auth: &Authed,
        out: &mut Vec<u8>,
    ) {
        let Some(a) = self.allocations.get(&client) else {
            return Self::reply_error(out, msg, &auth.key, 437, "Allocation Mismatch");
        };
        let relay_v6 = a.relay.is_ipv6();
        let mut peers = [None; MAX_PEERS_PER_ALLOCATION];
        let mut n = 0;
        for p in msg.peer_addresses() {
            let Some(p) = p else {
                return Self::reply_error(out, msg, &auth.key, 400, "Bad Request");
            };
            if let Err(why) = self.config.policy.check_ip(p.ip(), relay_v6) {
                return self.refuse_peer(out, msg, &auth.key, why);
            }
            if n == MAX_PEERS_PER_ALLOCATION {
                return Self::reply_error(out, msg, &auth.key, 508, "Insufficient Capacity");
            }
            peers[n] = Some(p.ip());
            n += 1;
        }
        if n == 0 {
            return Self::reply_error(out, msg, &auth.key, 400, "Bad Request");
        }
        let a = self.allocations.get_mut(&client).expect("checked above");
        for ip in peers.iter().flatten() {
            a.permissions.retain(|(p, _)| p != ip);
            if a.permissions.len() >= MAX_PEERS_PER_ALLOCATION {
                return Self::reply_error(out, msg, &auth.key, 508, "Insufficient Capacity");
            }
            a.permissions.push((*ip, now + PERMISSION_LIFETIME));
        }
        Writer::new(out, Method::CreatePermission, Class::Success, msg.transaction)
            .integrity(&auth.key)
            .fingerprint();
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        client: Client,
        msg: &Message<'_>,
        auth: &Authed,
        out: &mut Vec<u8>,
    ) {
        let Some(a) = self.allocations.get(&client) else {
            return Self::reply_error(out, msg, &auth.key, 437, "Allocation Mismatch");
        };
        let (Some(number), Some(peer)) = (msg.channel_number(), msg.xor_address(attr::XOR_PEER_ADDRESS))
        else {
            return Self::reply_error(out, msg, &auth.key, 400, "Bad Request");
        };
        if !(0x4000..=0x4FFF).contains(&number) {
            return Self::reply_error(out, msg, &auth.key, 400, "Bad Request");
        }
        if let Err(why) = self.config.policy.check_addr(peer, a.relay.is_ipv6()) {
            return self.refuse_peer(out, msg, &auth.key, why);
        }
        let conflict = a
            .channels
            .iter()
            .any(|c| (c.number == number) != (c.peer == peer));
        if conflict {
            return Self::reply_error(out, msg, &auth.key, 400, "Bad Request");
        }
        let a = self.allocations.get_mut(&client).expect("checked above");
        if let Some(c) = a.channels.iter_mut().find(|c| c.number == number) {
            c.expires = now + CHANNEL_LIFETIME;
        } else if a.channels.len() >= MAX_PEERS_PER_ALLOCATION {
            return Self::reply_error(out, msg, &auth.key, 508, "Insufficient Capacity");
        } else {
            a.channels.push(Channel {
                number,
                peer,
                expires: now + CHANNEL_LIFETIME,
            });
        }
        a.permissions.retain(|(p, _)| *p != peer.ip());
        a.permissions.push((peer.ip(), now + PERMISSION_LIFETIME));
        Writer::new(out, Method::ChannelBind, Class::Success, msg.transaction)
            .integrity(&auth.key)
            .fingerprint();
    }
}

fn requested_lifetime(asked: Option<u32>) -> Duration {
    asked
        .map(|s| Duration::from_secs(u64::from(s)))
        .unwrap_or(DEFAULT_LIFETIME)
        .clamp(DEFAULT_LIFETIME, MAX_LIFETIME)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{self, Session};
    use crate::credentials::Credential;

    const NODE: &str = "10.200.0.1:7882";
    const UNIX: u64 = 1_700_000_000;

    struct Ports(u16);
    impl RelayBinder for Ports {
        fn bind(&mut self, _v6: bool) -> Option<SocketAddr> {
            self.0 += 1;
            Some(SocketAddr::new("10.200.0.1".parse().unwrap(), self.0))
        }
    }

    struct Fixture {
        server: TurnServer,
        now: Instant,
        ports: Ports,
        out: Vec<u8>,
        secret: TurnSecret,
    }

    fn client(port: u16) -> Client {
        Client {
            transport: Transport::Udp,
            addr: SocketAddr::new("203.0.113.9".parse().unwrap(), port),
        }
    }

    impl Fixture {
        fn new(limit: u32) -> Self {
            let secret = TurnSecret::derive(b"api-secret");
            let now = Instant::now();
            let config = ServerConfig {
                policy: PeerPolicy::new(vec![NODE.parse().unwrap()]),
                secret: secret.clone(),
                per_participant_limit: limit,
                max_allocations: 100,
            };
            Fixture {
                server: TurnServer::new(config, now),
                now,
                ports: Ports(30000),
                out: Vec::new(),
                secret,
            }
        }

        fn credential(&self, who: &str) -> Credential {
            self.secret.mint(who, UNIX, 300)
        }

        /// Send `req` and return the reply's class and error code.
        fn ask(&mut self, c: Client, req: &[u8]) -> (Class, Option<u16>) {
            let r = self
                .server
                .from_client(self.now, UNIX, c, req, &mut self.ports, &mut self.out);
            assert_eq!(r, FromClient::Reply);
            let m = Message::parse(&self.out).expect("replies parse");
            (m.class, m.error_code())
        }

        /// The 401 dance: a session with a nonce and an allocation.
        fn allocated(&mut self, c: Client, who: &str) -> (Session, SocketAddr) {
            let cred = self.credential(who);
            let mut s = Session::new(&cred.username, &cred.password, REALM);
            let mut buf = Vec::new();
            client::allocate_unauthenticated(&mut buf, [1; 12]);
            assert_eq!(self.ask(c, &buf), (Class::Error, Some(401)));
            s.challenged(&Message::parse(&self.out).unwrap());
            s.allocate(&mut buf, [2; 12]);
            assert_eq!(self.ask(c, &buf), (Class::Success, None));
            let m = Message::parse(&self.out).unwrap();
            assert!(
                m.verify_integrity(&s.key),
                "the success is signed with the client's key"
            );
            (s, m.xor_address(attr::XOR_RELAYED_ADDRESS).unwrap())
        }
    }

    #[test]
    fn allocate_after_the_challenge_and_relay_both_ways() {
        let mut f = Fixture::new(12);
        let c = client(5000);
        let (s, relay) = f.allocated(c, "PA_1");
        let node: SocketAddr = NODE.parse().unwrap();
        let mut buf = Vec::new();
        // No permission yet: a Send goes nowhere.
        client::send_indication(&mut buf, [3; 12], node, b"ping");
        let r = f
            .server
            .from_client(f.now, UNIX, c, &buf, &mut f.ports, &mut f.out);
        assert_eq!(r, FromClient::Nothing);
        s.create_permission(&mut buf, [4; 12], node);
        assert_eq!(f.ask(c, &buf), (Class::Success, None));
        client::send_indication(&mut buf, [5; 12], node, b"ping");
        let r = f
            .server
            .from_client(f.now, UNIX, c, &buf, &mut f.ports, &mut f.out);
        assert_eq!(
            r,
            FromClient::Relay {
                relay,
                peer: node,
                data: b"ping"
            }
        );
        // The node answers: a Data indication to the client.
        let to = f.server.from_peer(f.now, relay, node, b"pong", &mut f.out);
        assert_eq!(to, Some(c));
        let m = Message::parse(&f.out).unwrap();
        assert_eq!((m.method, m.class), (Method::Data, Class::Indication));
        assert_eq!(m.get(attr::DATA), Some(&b"pong"[..]));
        // A channel: ChannelData both ways.
        s.channel_bind(&mut buf, [6; 12], 0x4000, node);
        assert_eq!(f.ask(c, &buf), (Class::Success, None));
        stun::write_channel_data(&mut buf, 0x4000, b"media", false);
        let r = f
            .server
            .from_client(f.now, UNIX, c, &buf, &mut f.ports, &mut f.out);
        assert_eq!(
            r,
            FromClient::Relay {
                relay,
                peer: node,
                data: b"media"
            }
        );
        assert_eq!(
            f.server.from_peer(f.now, relay, node, b"back", &mut f.out),
            Some(c)
        );
        assert_eq!(stun::parse_channel_data(&f.out), Some((0x4000, &b"back"[..])));
        // Someone else writing to the relay port is dropped: no permission.
        let stranger: SocketAddr = "198.51.100.7:9".parse().unwrap();
        assert_eq!(f.server.from_peer(f.now, relay, stranger, b"x", &mut f.out), None);
    }

    #[test]
    fn forbidden_peers_get_403() {
        let mut f = Fixture::new(12);
        let c = client(5001);
        let (s, _) = f.allocated(c, "PA_1");
        let mut buf = Vec::new();
        for peer in [
            "127.0.0.1:7882",
            "10.0.0.1:7882",
            "169.254.169.254:80",
            "0.0.0.0:7882",
            "100.100.100.200:80",
            "8.8.8.8:53",
        ] {
            s.create_permission(&mut buf, [7; 12], peer.parse().unwrap());
            assert_eq!(f.ask(c, &buf), (Class::Error, Some(403)), "{peer}");
        }
        for peer in ["[::1]:7882", "[::ffff:127.0.0.1]:7882", "[64:ff9b::a9fe:a9fe]:80"] {
            s.create_permission(&mut buf, [8; 12], peer.parse().unwrap());
            assert_eq!(f.ask(c, &buf), (Class::Error, Some(403)), "{peer}");
        }
        // The node, but not its media port.
        s.channel_bind(&mut buf, [9; 12], 0x4001, "10.200.0.1:7880".parse().unwrap());
        assert_eq!(f.ask(c, &buf), (Class::Error, Some(403)));
        let refused: u64 = f.server.stats().peer_refusals.values().sum();
        assert_eq!(refused, 10);
    }

    #[test]
    fn wrong_expired_and_foreign_credentials_are_refused() {
        let mut f = Fixture::new(12);
        let c = client(5002);
        let mut buf = Vec::new();
        client::allocate_unauthenticated(&mut buf, [1; 12]);
        f.ask(c, &buf);
        let challenge = Message::parse(&f.out).unwrap().nonce().unwrap().to_vec();
        let good = f.credential("PA_1");
        let expired = f.secret.mint("PA_1", UNIX - 600, 300);
        let foreign = TurnSecret::derive(b"other").mint("PA_1", UNIX, 300);
        for (user, pass) in [
            (good.username.as_str(), "wrong"),
            (expired.username.as_str(), expired.password.as_str()),
            (foreign.username.as_str(), foreign.password.as_str()),
            ("nobody", "x"),
        ] {
            let mut s = Session::new(user, pass, REALM);
            s.nonce = challenge.clone();
            s.allocate(&mut buf, [2; 12]);
            assert_eq!(f.ask(c, &buf), (Class::Error, Some(401)), "{user}");
        }
        // A nonce the server never gave.
        let mut s = Session::new(&good.username, &good.password, REALM);
        s.nonce = b"00000000aaaaaaaaaaaaaaaa".to_vec();
        s.allocate(&mut buf, [3; 12]);
        assert_eq!(f.ask(c, &buf), (Class::Error, Some(401)));
        assert_eq!(f.server.allocation_count(), 0);
    }

    #[test]
    fn expiry_is_checked_on_allocate_not_on_refresh() {
        let mut f = Fixture::new(12);
        let c = client(5003);
        let (s, _) = f.allocated(c, "PA_1");
        let mut buf = Vec::new();
        s.refresh(&mut buf, [4; 12], 600);
        let r = f
            .server
            .from_client(f.now, UNIX + 10_000, c, &buf, &mut f.ports, &mut f.out);
        assert_eq!(r, FromClient::Reply);
        assert_eq!(Message::parse(&f.out).unwrap().class, Class::Success);
    }

    #[test]
    fn a_stale_nonce_gets_438_with_a_new_one() {
        let mut f = Fixture::new(12);
        let c = client(5004);
        let (mut s, _) = f.allocated(c, "PA_1");
        let mut buf = Vec::new();
        let mut stale = 0;
        // A client refreshing every 500 s for 8,000 s: each nonce goes stale after an hour.
        for i in 0..16u8 {
            f.now += Duration::from_secs(500);
            f.server.handle_timeout(f.now);
            s.refresh(&mut buf, [i; 12], 600);
            if f.ask(c, &buf) == (Class::Error, Some(438)) {
                stale += 1;
                s.challenged(&Message::parse(&f.out).unwrap());
                s.refresh(&mut buf, [i + 100; 12], 600);
            }
            assert_eq!(f.ask(c, &buf), (Class::Success, None));
        }
        assert_eq!(stale, 2);
    }

    #[test]
    fn refresh_zero_deletes_and_releases_the_relay() {
        let mut f = Fixture::new(12);
        let c = client(5005);
        let (s, relay) = f.allocated(c, "PA_1");
        let mut buf = Vec::new();
        s.refresh(&mut buf, [4; 12], 0);
        assert_eq!(f.ask(c, &buf), (Class::Success, None));
        assert_eq!(f.server.poll_released(), Some(relay));
        assert_eq!(f.server.allocation_count(), 0);
        s.create_permission(&mut buf, [5; 12], NODE.parse().unwrap());
        assert_eq!(f.ask(c, &buf), (Class::Error, Some(437)));
    }

    #[test]
    fn allocations_expire_and_permissions_lapse() {
        let mut f = Fixture::new(12);
        let c = client(5006);
        let (s, relay) = f.allocated(c, "PA_1");
        let node: SocketAddr = NODE.parse().unwrap();
        let mut buf = Vec::new();
        s.create_permission(&mut buf, [4; 12], node);
        f.ask(c, &buf);
        f.now += PERMISSION_LIFETIME + Duration::from_secs(1);
        f.server.handle_timeout(f.now);
        assert_eq!(f.server.from_peer(f.now, relay, node, b"x", &mut f.out), None);
        f.now += DEFAULT_LIFETIME;
        f.server.handle_timeout(f.now);
        assert_eq!(f.server.poll_released(), Some(relay));
        assert_eq!(f.server.allocation_count(), 0);
    }

    #[test]
    fn a_client_that_refreshes_keeps_relaying_for_an_hour() {
        let mut f = Fixture::new(12);
        let c = client(5010);
        let (mut s, relay) = f.allocated(c, "PA_1");
        let node: SocketAddr = NODE.parse().unwrap();
        let mut buf = Vec::new();
        s.channel_bind(&mut buf, [3; 12], 0x4000, node);
        assert_eq!(f.ask(c, &buf), (Class::Success, None));
        // As libwebrtc does: permissions every 4 minutes, the allocation and channel before
        // they lapse, a fresh nonce when one goes stale.
        for minute in 1..=60u8 {
            f.now += Duration::from_secs(60);
            f.server.handle_timeout(f.now);
            if minute % 4 == 0 {
                for (i, refresh) in [0u8, 1].into_iter().enumerate() {
                    let tx = [minute.wrapping_mul(2).wrapping_add(i as u8); 12];
                    if refresh == 0 {
                        s.channel_bind(&mut buf, tx, 0x4000, node);
                    } else {
                        s.refresh(&mut buf, tx, 600);
                    }
                    if f.ask(c, &buf) == (Class::Error, Some(438)) {
                        s.challenged(&Message::parse(&f.out).unwrap());
                        let tx = [tx[0].wrapping_add(128); 12];
                        if refresh == 0 {
                            s.channel_bind(&mut buf, tx, 0x4000, node);
                        } else {
                            s.refresh(&mut buf, tx, 600);
                        }
                    }
                    assert_eq!(f.ask(c, &buf), (Class::Success, None), "minute {minute}");
                }
            }
            stun::write_channel_data(&mut buf, 0x4000, b"rtp", false);
            let r = f
                .server
                .from_client(f.now, UNIX, c, &buf, &mut f.ports, &mut f.out);
            assert_eq!(
                r,
                FromClient::Relay {
                    relay,
                    peer: node,
                    data: b"rtp"
                },
                "minute {minute}"
            );
            assert_eq!(
                f.server.from_peer(f.now, relay, node, b"rtcp", &mut f.out),
                Some(c)
            );
        }
        assert_eq!(f.server.poll_released(), None);
    }

    #[test]
    fn the_per_participant_quota_gives_486() {
        let mut f = Fixture::new(2);
        f.allocated(client(6000), "PA_1");
        f.allocated(client(6001), "PA_1");
        let cred = f.credential("PA_1");
        let mut s = Session::new(&cred.username, &cred.password, REALM);
        let mut buf = Vec::new();
        client::allocate_unauthenticated(&mut buf, [1; 12]);
        f.ask(client(6002), &buf);
        s.challenged(&Message::parse(&f.out).unwrap());
        s.allocate(&mut buf, [2; 12]);
        assert_eq!(f.ask(client(6002), &buf), (Class::Error, Some(486)));
        // Another participant is not limited by PA_1's allocations.
        f.allocated(client(6003), "PA_2");
    }

    #[test]
    fn a_retransmitted_allocate_gets_the_same_relay_and_another_gets_437() {
        let mut f = Fixture::new(12);
        let c = client(5007);
        let (s, relay) = f.allocated(c, "PA_1");
        let mut buf = Vec::new();
        s.allocate(&mut buf, [2; 12]);
        assert_eq!(f.ask(c, &buf), (Class::Success, None));
        let again = Message::parse(&f.out)
            .unwrap()
            .xor_address(attr::XOR_RELAYED_ADDRESS);
        assert_eq!(again, Some(relay));
        s.allocate(&mut buf, [3; 12]);
        assert_eq!(f.ask(c, &buf), (Class::Error, Some(437)));
    }

    #[test]
    fn tcp_relays_unsupported_and_unknown_attributes_refused() {
        let mut f = Fixture::new(12);
        let c = client(5008);
        let (s, _) = f.allocated(client(5009), "PA_1");
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf, Method::Allocate, Class::Request, [9; 12]);
        w.raw(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]);
        w.raw(attr::USERNAME, s.username.as_bytes())
            .raw(attr::REALM, &s.realm)
            .raw(attr::NONCE, &f.server.nonce(f.now, c))
            .integrity(&s.key)
            .fingerprint();
        assert_eq!(f.ask(c, &buf), (Class::Error, Some(442)));
        let mut w = Writer::new(&mut buf, Method::Allocate, Class::Request, [10; 12]);
        w.raw(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .raw(attr::EVEN_PORT, &[0x80, 0, 0, 0]);
        w.raw(attr::USERNAME, s.username.as_bytes())
            .raw(attr::REALM, &s.realm)
            .raw(attr::NONCE, &f.server.nonce(f.now, c))
            .integrity(&s.key)
            .fingerprint();
        assert_eq!(f.ask(c, &buf), (Class::Error, Some(420)));
    }

    #[test]
    fn garbage_is_dropped_without_a_reply() {
        let mut f = Fixture::new(12);
        for junk in [&b""[..], &[0u8; 19], &[0x40, 0x00, 0xff, 0xff], &[0xff; 64]] {
            let r = f
                .server
                .from_client(f.now, UNIX, client(1), junk, &mut f.ports, &mut f.out);
            assert_eq!(r, FromClient::Nothing);
        }
    }
}
