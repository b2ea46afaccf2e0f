//! The embedded TURN server's sockets (`turn:` block): the sans-IO core is `pylon-turn`.
//!
//! One task owns the core. It reads the TURN/UDP port itself and takes everything else as
//! events from a bounded channel: frames from TURN/TLS (or plain TCP behind a TLS load
//! balancer) connections, one task each, and datagrams from relay sockets, one task each.
//! A relay socket is bound per allocation in `relay_range_start..=relay_range_end`; the relay
//! reaches only this node's media port (`rtc.node_ip`:`rtc.udp_port`), where relayed media
//! arrives like any client's, from `node_ip`:<relay port>.
//!
//! Bounds: at most [`MAX_STREAMS`] TCP/TLS connections; a connection must finish its TLS
//! handshake within [`HANDSHAKE_TIMEOUT`] and is closed after [`IDLE_TIMEOUT`] without a frame;
//! a frame is at most 64 KiB by construction (a 16-bit length); a slow reader's queue holds
//! [`OUT_QUEUE`] frames and drops beyond that; the core never waits on a socket.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use livekit_protocol as lk;
use pylon_turn::{
    Client, FromClient, PeerPolicy, RelayBinder, ServerConfig, Transport, TurnSecret, TurnServer,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// TCP/TLS connections at once; more are closed as they are accepted.
pub const MAX_STREAMS: usize = 1024;
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TURN clients refresh well within this, and media flows far more often.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Frames queued for one connection's writer.
pub const OUT_QUEUE: usize = 256;
/// Events queued for the core task (frames from streams, datagrams from relays).
const EVENT_QUEUE: usize = 4096;
/// Allocations the node holds at most.
const MAX_ALLOCATIONS: usize = 10_000;

#[derive(Clone, Debug)]
pub struct TurnTls {
    pub bind: SocketAddr,
    /// `None` with `external_tls`: a load balancer terminated TLS, this port is plain TCP.
    pub acceptor: Option<Arc<rustls::ServerConfig>>,
    /// The port clients are told (`turns:<domain>:<port>`).
    pub advertised_port: u16,
}

#[derive(Clone, Debug)]
pub struct TurnConfig {
    pub udp: Option<SocketAddr>,
    pub tls: Option<TurnTls>,
    pub domain: Option<String>,
    pub relay_bind: IpAddr,
    pub node_ip: IpAddr,
    /// The only peer relays reach.
    pub media: SocketAddr,
    pub relay_range: (u16, u16),
    pub ttl: Duration,
    pub per_participant_limit: u32,
    pub secret: TurnSecret,
}

impl TurnConfig {
    pub fn minter(&self) -> Minter {
        let mut urls = Vec::new();
        if let Some(udp) = self.udp {
            let host = match self.node_ip {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            };
            urls.push(format!("turn:{host}:{}?transport=udp", udp.port()));
        }
        if let (Some(tls), Some(domain)) = (&self.tls, &self.domain) {
            urls.push(format!("turns:{domain}:{}?transport=tcp", tls.advertised_port));
        }
        Minter {
            secret: self.secret.clone(),
            ttl: self.ttl,
            urls,
        }
    }
}

/// Gives each participant a credential of its own in the join and reconnect responses.
#[derive(Debug)]
pub struct Minter {
    secret: TurnSecret,
    ttl: Duration,
    urls: Vec<String>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl pylon_core::IceCredentials for Minter {
    fn ice_servers(&self, participant: &str) -> Vec<lk::IceServer> {
        let c = self.secret.mint(participant, unix_now(), self.ttl.as_secs());
        vec![lk::IceServer {
            urls: self.urls.clone(),
            username: c.username,
            credential: c.password,
        }]
    }
}

/// Read a PEM certificate chain and key into a TLS server config; the error says what is wrong.
pub fn load_tls(cert_file: &str, key_file: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {cert_file}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{cert_file} holds no PEM certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("cannot read a private key from {key_file}: {e}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("{cert_file} and {key_file} do not make a usable certificate: {e}"))?;
    Ok(Arc::new(config))
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct TurnStats {
    pub allocations: AtomicUsize,
    pub allocations_total: AtomicU64,
    pub auth_failures: AtomicU64,
    pub dropped: AtomicU64,
    pub streams: AtomicUsize,
    /// Refused peers by class ([`pylon_turn::Refusal::as_str`]).
    pub peer_refusals: std::sync::Mutex<Vec<(&'static str, u64)>>,
}

enum Event {
    StreamOpen(SocketAddr, mpsc::Sender<Vec<u8>>),
    StreamFrame(SocketAddr, Vec<u8>),
    StreamClosed(SocketAddr),
    /// A datagram from a peer to a relay socket: `buf[..len]`. The buffer goes back to the
    /// socket's reader through `back`, so relaying allocates nothing in steady state.
    Peer {
        relay: SocketAddr,
        peer: SocketAddr,
        buf: Vec<u8>,
        len: usize,
        back: mpsc::UnboundedSender<Vec<u8>>,
    },
}

/// Bytes read per datagram on a relay socket: what reaches it is the media port's output,
/// never above the path MTU.
const RELAY_BUF: usize = 2048;

/// Bind the listeners and start the TURN server. Errors name the port that failed.
pub async fn start(config: TurnConfig, stats: Arc<TurnStats>) -> anyhow::Result<()> {
    use anyhow::Context;
    let udp = match config.udp {
        Some(addr) => Some(Arc::new({
            // Answer from the address clients are told (`turn:<node_ip>`), as the media port
            // does (`worker::source_ip`).
            let addr = crate::worker::source_ip(addr, config.node_ip)
                .map_or(addr, |ip| SocketAddr::new(ip, addr.port()));
            UdpSocket::bind(addr)
                .await
                .with_context(|| format!("binding turn.udp_port {addr}"))?
        })),
        None => None,
    };
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    if let Some(tls) = config.tls.clone() {
        let listener = TcpListener::bind(tls.bind)
            .await
            .with_context(|| format!("binding turn.tls_port {}", tls.bind))?;
        tokio::spawn(accept(listener, tls.acceptor.clone(), tx.clone(), stats.clone()));
    }
    info!(udp = ?config.udp, tls = ?config.tls.as_ref().map(|t| t.bind), media = %config.media, "TURN server listening");
    let core = TurnServer::new(
        ServerConfig {
            policy: PeerPolicy::new(vec![config.media]),
            secret: config.secret.clone(),
            per_participant_limit: config.per_participant_limit,
            max_allocations: MAX_ALLOCATIONS,
        },
        std::time::Instant::now(),
    );
    let binder = Relays {
        bind: config.relay_bind,
        node_ip: config.node_ip,
        range: config.relay_range,
        next: config.relay_range.0,
        sockets: HashMap::new(),
        events: tx,
    };
    tokio::spawn(run_core(core, udp, rx, binder, stats));
    Ok(())
}

/// Relay sockets, one per allocation.
struct Relays {
    bind: IpAddr,
    node_ip: IpAddr,
    range: (u16, u16),
    next: u16,
    sockets: HashMap<SocketAddr, (Arc<UdpSocket>, JoinHandle<()>)>,
    events: mpsc::Sender<Event>,
}

impl RelayBinder for Relays {
    fn bind(&mut self, v6: bool) -> Option<SocketAddr> {
        if v6 != self.node_ip.is_ipv6() {
            return None;
        }
        let (start, end) = self.range;
        let span = u32::from(end - start) + 1;
        for _ in 0..span.min(64) {
            let port = self.next;
            self.next = if self.next >= end { start } else { self.next + 1 };
            let relayed = SocketAddr::new(self.node_ip, port);
            if self.sockets.contains_key(&relayed) {
                continue;
            }
            let Ok(std_socket) = std::net::UdpSocket::bind((self.bind, port)) else {
                continue;
            };
            if std_socket.set_nonblocking(true).is_err() {
                continue;
            }
            let Ok(socket) = UdpSocket::from_std(std_socket) else {
                continue;
            };
            let socket = Arc::new(socket);
            let reader = tokio::spawn(read_relay(socket.clone(), relayed, self.events.clone()));
            self.sockets.insert(relayed, (socket, reader));
            return Some(relayed);
        }
        warn!(range = ?self.range, "TURN: no free relay port");
        None
    }
}

impl Relays {
    fn release(&mut self, relayed: SocketAddr) {
        if let Some((_, reader)) = self.sockets.remove(&relayed) {
            reader.abort();
        }
    }
}

async fn read_relay(socket: Arc<UdpSocket>, relay: SocketAddr, events: mpsc::Sender<Event>) {
    let (back, mut returned) = mpsc::unbounded_channel();
    loop {
        let mut buf = returned.try_recv().unwrap_or_else(|_| vec![0u8; RELAY_BUF]);
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let event = Event::Peer {
            relay,
            peer,
            buf,
            len,
            back: back.clone(),
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

async fn recv_udp(udp: &Option<Arc<UdpSocket>>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match udp {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn run_core(
    mut core: TurnServer,
    udp: Option<Arc<UdpSocket>>,
    mut events: mpsc::Receiver<Event>,
    mut relays: Relays,
    stats: Arc<TurnStats>,
) {
    let mut inbound = vec![0u8; 65536];
    let mut out = Vec::with_capacity(2048);
    let mut streams: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = recv_udp(&udp, &mut inbound) => {
                let Ok((n, from)) = r else { continue };
                let client = Client { transport: Transport::Udp, addr: from };
                let now = std::time::Instant::now();
                let action = core.from_client(now, unix_now(), client, &inbound[..n], &mut relays, &mut out);
                act(action, client, &out, &udp, &streams, &relays);
            }
            ev = events.recv() => {
                let Some(ev) = ev else { return };
                let now = std::time::Instant::now();
                match ev {
                    Event::StreamOpen(addr, tx) => {
                        streams.insert(addr, tx);
                    }
                    Event::StreamClosed(addr) => {
                        streams.remove(&addr);
                        core.client_gone(Client { transport: Transport::Stream, addr });
                    }
                    Event::StreamFrame(addr, frame) => {
                        let client = Client { transport: Transport::Stream, addr };
                        let action = core.from_client(now, unix_now(), client, &frame, &mut relays, &mut out);
                        act(action, client, &out, &udp, &streams, &relays);
                    }
                    Event::Peer { relay, peer, buf, len, back } => {
                        if let Some(client) = core.from_peer(now, relay, peer, &buf[..len], &mut out) {
                            send_to_client(client, &out, &udp, &streams);
                        }
                        let _ = back.send(buf);
                    }
                }
            }
            _ = tick.tick() => {
                core.handle_timeout(std::time::Instant::now());
                publish(&core, &stats);
            }
        }
        // Allocations deleted by a request or expired by the tick: close their relay sockets.
        while let Some(r) = core.poll_released() {
            relays.release(r);
        }
    }
}

fn publish(core: &TurnServer, stats: &TurnStats) {
    let s = core.stats();
    stats
        .allocations
        .store(core.allocation_count(), Ordering::Relaxed);
    stats.allocations_total.store(s.allocations, Ordering::Relaxed);
    stats.auth_failures.store(s.auth_failures, Ordering::Relaxed);
    stats.dropped.store(s.dropped, Ordering::Relaxed);
    if let Ok(mut r) = stats.peer_refusals.lock() {
        r.clear();
        r.extend(s.peer_refusals.iter().map(|(k, v)| (*k, *v)));
        r.sort();
    }
}

fn act(
    action: FromClient<'_>,
    client: Client,
    out: &[u8],
    udp: &Option<Arc<UdpSocket>>,
    streams: &HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    relays: &Relays,
) {
    match action {
        FromClient::Nothing => {}
        FromClient::Reply => send_to_client(client, out, udp, streams),
        FromClient::Relay { relay, peer, data } => {
            if let Some((socket, _)) = relays.sockets.get(&relay) {
                // A full socket buffer drops the datagram, as the network would.
                let _ = socket.try_send_to(data, peer);
            }
        }
    }
}

fn send_to_client(
    client: Client,
    out: &[u8],
    udp: &Option<Arc<UdpSocket>>,
    streams: &HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
) {
    match client.transport {
        Transport::Udp => {
            if let Some(s) = udp {
                let _ = s.try_send_to(out, client.addr);
            }
        }
        Transport::Stream => {
            if let Some(tx) = streams.get(&client.addr) {
                // A slow reader loses frames; nobody else waits for it.
                let _ = tx.try_send(out.to_vec());
            }
        }
    }
}

async fn accept(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    events: mpsc::Sender<Event>,
    stats: Arc<TurnStats>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                debug!("TURN accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if stats.streams.load(Ordering::Relaxed) >= MAX_STREAMS {
            debug!(%addr, "TURN: too many connections; closing a new one");
            continue;
        }
        let _ = stream.set_nodelay(true);
        stats.streams.fetch_add(1, Ordering::Relaxed);
        let (events, stats, acceptor) = (events.clone(), stats.clone(), acceptor.clone());
        tokio::spawn(async move {
            match acceptor {
                Some(a) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, a.accept(stream)).await {
                    Ok(Ok(tls)) => serve_stream(tls, addr, events).await,
                    Ok(Err(e)) => debug!(%addr, "TURN/TLS handshake failed: {e}"),
                    Err(_) => debug!(%addr, "TURN/TLS handshake timed out"),
                },
                None => serve_stream(stream, addr, events).await,
            }
            stats.streams.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// One TCP/TLS client: frames in, queued frames out, until either side ends.
async fn serve_stream<S: AsyncRead + AsyncWrite + Send + 'static>(
    stream: S,
    addr: SocketAddr,
    events: mpsc::Sender<Event>,
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(OUT_QUEUE);
    if events.send(Event::StreamOpen(addr, tx)).await.is_err() {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let mut buf = vec![0u8; 70_000];
    let mut have = 0;
    'conn: loop {
        let n = match tokio::time::timeout(IDLE_TIMEOUT, rd.read(&mut buf[have..])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => n,
        };
        have += n;
        let mut at = 0;
        while let Some(len) = pylon_turn::stun::stream_frame_len(&buf[at..have]) {
            let Ok(len) = len else {
                debug!(%addr, "TURN: a stream frame that is neither STUN nor ChannelData; closing");
                break 'conn;
            };
            if have - at < len {
                break;
            }
            if events
                .send(Event::StreamFrame(addr, buf[at..at + len].to_vec()))
                .await
                .is_err()
            {
                break 'conn;
            }
            at += len;
        }
        buf.copy_within(at..have, 0);
        have -= at;
    }
    writer.abort();
    let _ = events.send(Event::StreamClosed(addr)).await;
}
