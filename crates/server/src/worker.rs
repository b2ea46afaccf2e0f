//! Media workers: one thread per core (`pylon-media-<i>`), each owning a [`Shard`] and its own
//! `SO_REUSEPORT` socket on the node's one UDP media port.
//!
//! Everything reaches a worker as a message in its inbox: commands from the signalling and
//! API edge, relay messages from the shards of other workers (a room spread over workers),
//! datagrams that landed on another worker's socket (hand-off, see `demux.rs`), and routing
//! updates. A worker answers sessions through each session's bounded channel. The shard is
//! driven with `Instant::now()` read here, at the edge, never inside the core. Nothing on the
//! media path takes a lock: the inbox is a lock-free queue, hand-off buffers go home through
//! a bounded lock-free queue, and the directory's mutex is taken only for joins, departures
//! and idle rooms.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use livekit_protocol as lk;
use pylon_core::admin::{AdminError, AdminRequest, AdminResponse};
use pylon_core::ids::{ParticipantSid, PlaceId, RoomName, SessionId, Tier};
use pylon_core::relay::RelayMessage;
use pylon_core::{JoinError, JoinParams, Output, Received, ResumeParams, Shard, ShardConfig, ShardEvent};
use pylon_relay::LinkHandle;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::cluster::ClusterEvent;
use crate::demux::Demux;
use crate::directory::{Directory, Idle, WorkerId};
use crate::egress::{Batch, Batcher};
use crate::handoff::{give_back, Handoff, Pool};
use crate::metrics::ShardGauges;
use crate::steer::Steered;
use crate::tcp::{Outgoing, TcpLink};

/// Messages a session's WebSocket pump receives from its worker.
#[derive(Debug)]
pub enum SessionEvent {
    Message(Box<lk::SignalResponse>),
    Close,
}

/// How many signal messages may wait for a slow WebSocket before the session is cut.
pub const SESSION_QUEUE: usize = 1024;

/// Inbox messages handled per wake-up before the socket gets a turn: bounds the latency one
/// busy source adds to the others.
const INBOX_BATCH: usize = 256;

/// Rounds of timers handled per wake-up when more fall due while they are handled (a paced
/// connection's next packet): bounds how long the socket and the inbox wait meanwhile.
pub const TIMER_ROUNDS: usize = 32;

/// Receive calls (each up to quinn-udp's batch of datagrams) per wake-up before outputs are
/// flushed: bounds the latency added by batching.
const RECV_CALLS: usize = 4;

/// Largest coalesced receive buffer: the kernel's GRO limit for one UDP socket read.
const RECV_BUF: usize = 64 * 1024;

/// Media messages (relayed RTP, handed-off datagrams) that may wait in one worker's inbox;
/// beyond this the sender drops them, as a congested network would, rather than grow memory
/// behind a stuck worker.
const MAX_QUEUED_MEDIA: usize = 16_384;

/// How often the shard's counters are copied to the metrics endpoint.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);

pub type SessionTx = mpsc::Sender<SessionEvent>;

/// Requests from signalling tasks and the API to a worker.
pub enum Command {
    Join {
        params: Box<JoinParams>,
        out: SessionTx,
        reply: oneshot::Sender<Result<ParticipantSid, JoinError>>,
    },
    Resume {
        params: ResumeParams,
        out: SessionTx,
    },
    Signal {
        session: SessionId,
        cmd: Box<pylon_core::SignalCommand>,
    },
    Violation {
        session: SessionId,
        why: String,
    },
    /// The client sent signal messages faster than its budget allows (`session.rs`).
    Flood {
        session: SessionId,
    },
    Closed {
        session: SessionId,
    },
    /// The node drains: every participant hosted here is told to reconnect elsewhere.
    EvictAll,
    Admin {
        req: Box<AdminRequest>,
        reply: oneshot::Sender<Result<AdminResponse, AdminError>>,
    },
    /// The room's instance here (its node's anchor) is the room's home now.
    BecomeHome {
        room: RoomName,
    },
    /// Link the room's instance here (its node's anchor) to more nodes.
    LinkRoom {
        room: RoomName,
        places: Vec<PlaceId>,
    },
}

/// A routing fact for the receiving worker's demux.
#[derive(Debug)]
pub enum Route {
    Ufrag(String, Option<WorkerId>),
    Address(SocketAddr, Option<WorkerId>),
}

/// A fault tests can inject (debug builds only).
#[cfg(debug_assertions)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The worker thread panics.
    Panic,
    /// The worker thread stops turning (blocks for an hour).
    Stall,
}

/// Everything a worker's inbox carries.
pub enum Inbox {
    Command(Command),
    Relay {
        from: PlaceId,
        msg: RelayMessage,
    },
    /// A run of relay messages from one place, in order; `media` of them are counted in
    /// `queued_media`.
    RelayBatch {
        from: PlaceId,
        msgs: Vec<RelayMessage>,
        media: usize,
    },
    /// The node's link to another node (by index) is up, replaced, or down (`None`).
    /// A link to another node (tier `Node`) or region (tier `Region`); indexes are shared
    /// by both tiers.
    NodeLink {
        place: PlaceId,
        link: Option<LinkHandle>,
    },
    Datagram(Handoff),
    /// A frame from an ICE/TCP connection (media: may be dropped).
    Tcp {
        link: Arc<TcpLink>,
        buf: Vec<u8>,
    },
    /// An ICE/TCP connection this worker adopted closed.
    TcpClosed(Arc<TcpLink>),
    Route(Route),
    #[cfg(debug_assertions)]
    Fault(Fault),
}

/// A worker's liveness, read by the node's watchdog.
#[derive(Default)]
pub struct WorkerHealth {
    /// Milliseconds since the process's epoch at the worker's last loop turn.
    pub last_turn_ms: AtomicU64,
}

/// Handle to send to a worker. Cheap to clone.
#[derive(Clone)]
pub struct WorkerHandle {
    pub id: WorkerId,
    tx: mpsc::UnboundedSender<Inbox>,
    /// Media messages waiting in the inbox.
    queued_media: Arc<AtomicUsize>,
    /// Where hand-off buffers borrowed from this worker go back.
    returns: SyncSender<Vec<u8>>,
    pub health: Arc<WorkerHealth>,
}

impl WorkerHandle {
    pub fn send(&self, cmd: Command) {
        // A failed send means the worker is gone; the watchdog takes the node down.
        let _ = self.tx.send(Inbox::Command(cmd));
    }

    /// Control messages (state, routes) are never dropped.
    fn send_control(&self, msg: Inbox) {
        let _ = self.tx.send(msg);
    }

    /// Media is dropped when the worker is this far behind.
    fn send_media(&self, msg: Inbox) -> bool {
        if self.queued_media.load(Ordering::Relaxed) >= MAX_QUEUED_MEDIA {
            return false;
        }
        self.queued_media.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(msg).is_err() {
            self.queued_media.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// A frame from an ICE/TCP connection; `false` if the worker is too far behind to take it.
    pub fn tcp_frame(&self, link: Arc<TcpLink>, buf: Vec<u8>) -> bool {
        self.send_media(Inbox::Tcp { link, buf })
    }

    /// An ICE/TCP connection this worker adopted closed.
    pub fn tcp_closed(&self, link: Arc<TcpLink>) {
        self.send_control(Inbox::TcpClosed(link));
    }

    /// Give back a buffer borrowed from this worker's pool.
    pub fn give_back(&self, buf: Vec<u8>) {
        give_back(&self.returns, buf);
    }

    /// A relay message from another place: media may be dropped, state never is.
    pub fn relay_from(&self, from: PlaceId, msg: RelayMessage) -> bool {
        if msg.is_media() {
            self.send_media(Inbox::Relay { from, msg })
        } else {
            self.send_control(Inbox::Relay { from, msg });
            true
        }
    }

    /// A run of relay messages from another place, in order, with one wake of the worker;
    /// `msgs` is left empty. Returns how many media messages were dropped because the worker
    /// is far behind (then all of the run's media are; state never is).
    pub fn relay_batch(&self, from: PlaceId, msgs: &mut Vec<RelayMessage>) -> usize {
        if msgs.len() <= 1 {
            // One message needs no list (and no allocation to carry it).
            return msgs.pop().map_or(0, |m| usize::from(!self.relay_from(from, m)));
        }
        let (media, dropped) = pylon_core::relay::admit_batch(msgs, &self.queued_media, MAX_QUEUED_MEDIA);
        // The next run's list starts as large as this one.
        let batch = std::mem::replace(msgs, Vec::with_capacity(msgs.len()));
        if !batch.is_empty() {
            self.send_control(Inbox::RelayBatch {
                from,
                msgs: batch,
                media,
            });
        }
        dropped
    }

    /// The node's link to another node changed.
    pub fn node_link(&self, place: PlaceId, link: Option<LinkHandle>) {
        self.send_control(Inbox::NodeLink { place, link });
    }

    #[cfg(debug_assertions)]
    pub fn fault(&self, fault: Fault) {
        let _ = self.tx.send(Inbox::Fault(fault));
    }
}

/// What every worker shares with the node.
#[derive(Clone)]
pub struct Shared {
    pub directory: Arc<Mutex<Directory>>,
    /// With a region: where rooms that closed here are reported (unregistered in Redis).
    pub cluster: Option<mpsc::UnboundedSender<ClusterEvent>>,
    pub notifier: crate::webhook::Notifier,
    /// The time `WorkerHealth::last_turn_ms` counts from.
    pub epoch: Instant,
}

/// The node's workers.
pub struct Workers {
    pub handles: Vec<WorkerHandle>,
    pub threads: Vec<std::thread::JoinHandle<()>>,
}

/// A UDP socket on `addr` that other workers' sockets may share (`SO_REUSEPORT`).
fn media_socket(addr: SocketAddr, shared: bool) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The source address media goes out from: `rtc.node_ip` when the socket is bound to every
/// address and node_ip is one of this host's. The kernel would otherwise pick the source by
/// route, which on a host with several addresses can be another than the one clients sent to,
/// and a client only accepts ICE answers from the address it asked. A node_ip that is not
/// local (a 1:1 NAT's public address) leaves the choice to the kernel, which is then right.
pub fn source_ip(bind: SocketAddr, node_ip: std::net::IpAddr) -> Option<std::net::IpAddr> {
    let local = std::net::UdpSocket::bind((node_ip, 0)).is_ok();
    (bind.ip().is_unspecified() && local && !node_ip.is_unspecified()).then_some(node_ip)
}

/// Start `count` workers on the media port `bind`, advertising `config.udp_candidate`.
pub fn spawn(
    count: usize,
    bind: SocketAddr,
    config: ShardConfig,
    shared: Shared,
    gauges: &[Arc<ShardGauges>],
) -> std::io::Result<Workers> {
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        sockets.push(media_socket(bind, count > 1)?);
    }
    let src_ip = source_ip(bind, config.udp_candidate.ip());
    let mut handles = Vec::with_capacity(count);
    let mut parts = Vec::with_capacity(count);
    for id in 0..count {
        let (tx, rx) = mpsc::unbounded_channel();
        let pool = Pool::default();
        let handle = WorkerHandle {
            id: id as WorkerId,
            tx,
            queued_media: Arc::default(),
            returns: pool.returns(),
            health: Arc::default(),
        };
        handles.push(handle);
        parts.push((rx, pool));
    }
    let mut threads = Vec::with_capacity(count);
    for (id, ((rx, pool), socket)) in parts.into_iter().zip(sockets).enumerate() {
        let peers = handles.clone();
        let (mut config, shared, gauges) = (config.clone(), shared.clone(), gauges[id].clone());
        config.key_base = (id as u64) << 48;
        let thread = std::thread::Builder::new()
            .name(format!("pylon-media-{id}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("current-thread runtime builds");
                rt.block_on(async move {
                    let socket = UdpSocket::from_std(socket).expect("socket registers with tokio");
                    let parts = Parts {
                        id: id as WorkerId,
                        config,
                        src_ip,
                        socket,
                        peers,
                        pool,
                        shared,
                        gauges,
                    };
                    Worker::new(parts).run(rx).await;
                });
            })?;
        threads.push(thread);
    }
    Ok(Workers { handles, threads })
}

struct Parts {
    id: WorkerId,
    config: ShardConfig,
    src_ip: Option<std::net::IpAddr>,
    socket: UdpSocket,
    peers: Vec<WorkerHandle>,
    pool: Pool,
    shared: Shared,
    gauges: Arc<ShardGauges>,
}

struct Worker {
    id: WorkerId,
    shard: Shard,
    socket: UdpSocket,
    /// What every datagram is sent from ([`source_ip`]).
    src_ip: Option<std::net::IpAddr>,
    local: SocketAddr,
    /// The passive ICE/TCP candidate, if TCP media is on.
    tcp_local: Option<SocketAddr>,
    /// ICE/TCP connections this worker adopted, by the client's address.
    tcp_links: HashMap<SocketAddr, Arc<TcpLink>>,
    sessions: HashMap<SessionId, SessionTx>,
    /// Receive buffers (one per datagram of a batch, each big enough for a GRO read).
    bufs: Vec<Vec<u8>>,
    meta: Vec<quinn_udp::RecvMeta>,
    peers: Vec<WorkerHandle>,
    /// Our hand-off buffers.
    pool: Pool,
    demux: Demux,
    /// STUN requests handed to us this turn: source → the worker they landed on.
    landed: HashMap<SocketAddr, WorkerId>,
    /// Addresses we told another worker are ours: address → that worker.
    routed: HashMap<SocketAddr, WorkerId>,
    /// Our peers' flows taken off other workers' sockets (`steer.rs`); `None` with one
    /// worker, or if the epoll set could not be made.
    steered: Option<Steered>,
    /// The media socket's bound address, which steered flows bind too.
    bind: SocketAddr,
    shared: Shared,
    gauges: Arc<ShardGauges>,
    next_publish: Instant,
    /// When the gauges were last published, and the media bytes then.
    published_at: Instant,
    published_bytes: u64,
    /// Time spent working (not waiting for input) since the gauges were last published.
    busy: Duration,
    /// Kernel UDP features of the media socket (GSO, GRO).
    udp: quinn_udp::UdpSocketState,
    egress: Batcher,
    counters: WorkerCounters,
    /// Reused list of the shard's events to act on after a drain.
    events: Vec<ShardEvent>,
    /// The node's links to other nodes, by index.
    node_links: Vec<Option<LinkHandle>>,
    /// This turn's relay messages for each other worker and each node link, by index.
    to_workers: Vec<Vec<RelayMessage>>,
    to_links: Vec<Vec<RelayMessage>>,
}

/// What the worker counts beyond its shard.
#[derive(Default, Clone, Copy)]
struct WorkerCounters {
    /// Datagrams no worker owns.
    unroutable: u64,
    handed_off: u64,
    media_dropped: u64,
}

/// Whether a receive that returned `n` datagrams left its socket empty: on Linux `recvmmsg` on
/// a non-blocking socket returns fewer than it was offered only when the queue ran dry.
fn drained_by(n: usize) -> bool {
    cfg!(any(target_os = "linux", target_os = "android")) && n < quinn_udp::BATCH_SIZE
}

/// One receive batch's slices over the worker's receive buffers (one buffer per slot).
fn io_slices(bufs: &mut [Vec<u8>]) -> [std::io::IoSliceMut<'_>; quinn_udp::BATCH_SIZE] {
    let mut it = bufs.iter_mut();
    std::array::from_fn(|_| std::io::IoSliceMut::new(it.next().expect("one buffer per slot")))
}

/// Wait for a steered flow's datagrams; never, without steering.
async fn steered_ready(steered: Option<&mut Steered>) -> std::io::Result<()> {
    match steered {
        Some(s) => s.wait().await,
        None => std::future::pending().await,
    }
}

fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Worker {
    fn new(p: Parts) -> Self {
        let local = p.config.udp_candidate;
        let tcp_local = p.config.tcp_candidate;
        let seed = rand::random();
        let udp = quinn_udp::UdpSocketState::new((&p.socket).into()).expect("UDP socket state");
        let bind = p.socket.local_addr().expect("a bound socket has an address");
        let steered = (p.peers.len() > 1)
            .then(|| {
                Steered::new(crate::steer::cap(p.peers.len()))
                    .map_err(|e| warn!(worker = p.id, "flow steering off: {e}"))
                    .ok()
            })
            .flatten();
        let egress = Batcher::new(udp.max_gso_segments());
        let batch = quinn_udp::BATCH_SIZE;
        info!(
            worker = p.id,
            gso_segments = udp.max_gso_segments(),
            gro_segments = udp.gro_segments(),
            "media worker starting"
        );
        Self {
            id: p.id,
            udp,
            egress,
            shard: Shard::new(p.config, Instant::now(), unix_ms_now(), seed),
            socket: p.socket,
            src_ip: p.src_ip,
            local,
            tcp_local,
            tcp_links: HashMap::new(),
            sessions: HashMap::new(),
            bufs: (0..batch).map(|_| vec![0; RECV_BUF]).collect(),
            meta: vec![quinn_udp::RecvMeta::default(); batch],
            peers: p.peers,
            pool: p.pool,
            demux: Demux::default(),
            landed: HashMap::new(),
            routed: HashMap::new(),
            steered,
            bind,
            shared: p.shared,
            gauges: p.gauges,
            next_publish: Instant::now(),
            published_at: Instant::now(),
            published_bytes: 0,
            busy: Duration::ZERO,
            counters: WorkerCounters::default(),
            events: Vec::new(),
            node_links: Vec::new(),
            to_workers: Vec::new(),
            to_links: Vec::new(),
        }
    }

    fn me(&self) -> &WorkerHandle {
        &self.peers[self.id as usize]
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Inbox>) {
        info!(worker = self.id, udp = %self.local, "media worker running");
        let mut woke = Instant::now();
        loop {
            self.flush();
            self.beat();
            self.busy += woke.elapsed();
            let deadline = tokio::time::Instant::from_std(self.shard.poll_timeout());
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => {
                        self.inbox(msg);
                        for _ in 1..INBOX_BATCH {
                            match rx.try_recv() {
                                Ok(msg) => self.inbox(msg),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                r = self.socket.readable() => match r {
                    Ok(()) => self.receive(),
                    Err(e) => debug!("udp readiness error: {e}"),
                },
                r = steered_ready(self.steered.as_mut()) => match r {
                    Ok(()) => self.receive_steered(),
                    Err(e) => debug!("steered flows' readiness error: {e}"),
                },
                _ = tokio::time::sleep_until(deadline) => {}
            }
            let mut now = Instant::now();
            woke = now;
            // Timers that fall due while the turn's timers are handled are handled in the same
            // turn, up to `TIMER_ROUNDS` times. With congestion control on, str0m's pacer asks
            // for a timeout 1 µs after every packet it releases; waiting for the runtime's timer
            // (1 ms resolution) instead let each subscriber have one packet a millisecond.
            let mut rounds = 0;
            while now >= self.shard.poll_timeout() && rounds < TIMER_ROUNDS {
                self.shard.handle_timeout(now);
                now = Instant::now();
                rounds += 1;
            }
            if now >= self.next_publish {
                self.next_publish = now + METRICS_INTERVAL;
                self.publish_gauges(now);
            }
        }
        info!(worker = self.id, "media worker stopped");
    }

    /// Record a loop turn for the watchdog.
    fn beat(&self) {
        let ms = self.shared.epoch.elapsed().as_millis() as u64;
        self.me().health.last_turn_ms.store(ms, Ordering::Relaxed);
    }

    /// Copy the shard's counters to the metrics endpoint (about once a second), with the
    /// share of the interval spent working and the media rate over it.
    fn publish_gauges(&mut self, now: Instant) {
        let s = self.shard.stats();
        let g = &self.gauges;
        let c = self.counters;
        g.datagrams_in
            .store(s.datagrams_in + c.unroutable, Ordering::Relaxed);
        g.datagrams_dropped
            .store(s.datagrams_dropped + c.unroutable, Ordering::Relaxed);
        g.handed_off.store(c.handed_off, Ordering::Relaxed);
        let steered = self.steered.as_ref().map_or(0, Steered::len);
        g.steered_flows.store(steered as u64, Ordering::Relaxed);
        g.media_dropped.store(c.media_dropped, Ordering::Relaxed);
        g.rooms.store(self.shard.room_count() as u64, Ordering::Relaxed);
        g.participants
            .store(self.shard.participant_count() as u64, Ordering::Relaxed);
        let (published, subscribed) = self.shard.track_counts();
        g.tracks_published.store(published as u64, Ordering::Relaxed);
        g.tracks_subscribed.store(subscribed as u64, Ordering::Relaxed);
        let bytes: u64 = (s.media_in.iter().chain(&s.media_out)).map(|c| c.bytes).sum();
        let elapsed = now.saturating_duration_since(self.published_at).as_secs_f64();
        if elapsed > 0.0 {
            let rate = bytes.saturating_sub(self.published_bytes) as f64 / elapsed;
            g.bytes_per_sec.store(rate as u64, Ordering::Relaxed);
            let busy = (self.busy.as_secs_f64() / elapsed).min(1.0);
            g.busy_permille.store((busy * 1000.0) as u64, Ordering::Relaxed);
        }
        (self.published_at, self.published_bytes, self.busy) = (now, bytes, Duration::ZERO);
        *g.stats.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// Read what the socket holds (batched, GRO-coalesced), up to a bound.
    fn receive(&mut self) {
        for _ in 0..RECV_CALLS {
            let mut short = None;
            let n = {
                let (socket, udp, bufs, meta) = (&self.socket, &self.udp, &mut self.bufs, &mut self.meta);
                let mut slices = io_slices(bufs);
                let read = socket.try_io(Interest::READABLE, || {
                    let n = udp.recv(socket.into(), &mut slices, meta)?;
                    // A short batch emptied the socket: answering WouldBlock clears the
                    // readiness now (tokio clears it only then) instead of after one more
                    // system call to learn it. A datagram arriving later signals again.
                    if drained_by(n) {
                        short = Some(n);
                        return Err(std::io::ErrorKind::WouldBlock.into());
                    }
                    Ok(n)
                });
                match (read, short) {
                    (Ok(n), _) => n,
                    (Err(e), Some(n)) if e.kind() == std::io::ErrorKind::WouldBlock => n,
                    (Err(e), _) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                    (Err(e), _) => {
                        debug!("udp recv error: {e}");
                        return;
                    }
                }
            };
            self.dispatch(n);
            if short.is_some() {
                return;
            }
        }
    }

    /// Read what the steered flows found ready hold, up to a bound per flow (more waits for
    /// the next turn: the epoll set stays ready).
    fn receive_steered(&mut self) {
        let Some(steered) = self.steered.as_mut() else {
            return;
        };
        let ready = steered.take_ready();
        let mut more = false;
        for &token in &ready {
            let mut drained = false;
            for _ in 0..RECV_CALLS {
                let Some(steered) = self.steered.as_ref() else {
                    return;
                };
                let mut slices = io_slices(&mut self.bufs);
                match steered.recv(token, &mut slices, &mut self.meta) {
                    Ok(0) => drained = true,
                    Ok(n) => {
                        self.dispatch(n);
                        drained = drained_by(n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => drained = true,
                    // A connected socket reports the peer's ICMP errors (port unreachable);
                    // the peer's own timeouts decide what that means.
                    Err(e) => {
                        debug!("steered flow recv error: {e}");
                        drained = true;
                    }
                }
                if drained {
                    break;
                }
            }
            more |= !drained;
        }
        if let Some(steered) = self.steered.as_mut() {
            steered.give_back_ready(ready);
            if more {
                steered.more();
            }
        }
    }

    /// Hand the `n` datagrams just read into `bufs` (GRO-coalesced ones split) to the shard.
    fn dispatch(&mut self, n: usize) {
        let now = Instant::now();
        for i in 0..n {
            let m = self.meta[i];
            let stride = m.stride.max(1);
            let mut at = 0;
            while at < m.len {
                let end = (at + stride).min(m.len);
                let buf = std::mem::take(&mut self.bufs[i]);
                self.datagram(now, m.addr, &buf[at..end]);
                self.bufs[i] = buf;
                at = end;
            }
        }
    }

    /// One datagram from our socket: ours, another worker's, or nobody's.
    fn datagram(&mut self, now: Instant, source: SocketAddr, bytes: &[u8]) {
        if self.shard.receive(now, source, self.local, bytes) == Received::Handled {
            return;
        }
        match self.demux.owner(source, bytes) {
            Some(owner) if owner != self.id => self.hand_off(owner, source, bytes),
            _ => self.counters.unroutable += 1,
        }
    }

    fn hand_off(&mut self, owner: WorkerId, source: SocketAddr, bytes: &[u8]) {
        let Some(handoff) = self.pool.package(self.id, source, bytes) else {
            self.counters.unroutable += 1;
            return;
        };
        if self.peers[owner as usize].send_media(Inbox::Datagram(handoff)) {
            self.counters.handed_off += 1;
        } else {
            self.counters.media_dropped += 1;
        }
    }

    /// A frame from an ICE/TCP connection: ours (the shard takes it, and adopts the connection
    /// once it accepted a STUN request from it), another worker's (a STUN request routed by
    /// its USERNAME), or nobody's.
    fn tcp_frame(&mut self, now: Instant, link: Arc<TcpLink>, buf: Vec<u8>) {
        let Some(local) = self.tcp_local else {
            link.give_back(buf);
            return;
        };
        if self.shard.receive_tcp(now, link.source, local, &buf) == Received::Handled {
            if link.owner() != Some(self.id) && self.shard.reaches_over_tcp(link.source) {
                link.adopt(self.id);
                self.tcp_links.insert(link.source, link.clone());
            }
            link.give_back(buf);
            return;
        }
        match self.demux.owner_by_ufrag(&buf) {
            Some(owner) if owner != self.id => {
                if self.peers[owner as usize].tcp_frame(link, buf) {
                    self.counters.handed_off += 1;
                } else {
                    self.counters.media_dropped += 1;
                }
            }
            _ => {
                self.counters.unroutable += 1;
                link.give_back(buf);
            }
        }
    }

    fn inbox(&mut self, msg: Inbox) {
        let now = Instant::now();
        match msg {
            Inbox::Command(cmd) => self.command(now, cmd),
            Inbox::Relay { from, msg } => {
                if msg.is_media() {
                    self.me().queued_media.fetch_sub(1, Ordering::Relaxed);
                }
                self.shard.relay_input(now, from, msg);
            }
            Inbox::RelayBatch { from, msgs, media } => {
                self.me().queued_media.fetch_sub(media, Ordering::Relaxed);
                for msg in msgs {
                    self.shard.relay_input(now, from, msg);
                }
            }
            Inbox::NodeLink { place, link } => self.node_link(now, place, link),
            Inbox::Datagram(h) => {
                self.me().queued_media.fetch_sub(1, Ordering::Relaxed);
                // A STUN request (RFC 7983: first byte 0..=3) may teach the shard the address;
                // the worker it landed on is then told.
                if h.buf.first().is_some_and(|b| *b < 4) {
                    self.landed.insert(h.source, h.from);
                }
                let _ = self.shard.receive(now, h.source, self.local, &h.buf);
                give_back(&self.peers[h.from as usize].returns, h.buf);
            }
            Inbox::Tcp { link, buf } => {
                self.me().queued_media.fetch_sub(1, Ordering::Relaxed);
                self.tcp_frame(now, link, buf);
            }
            Inbox::TcpClosed(link) => {
                if self
                    .tcp_links
                    .get(&link.source)
                    .is_some_and(|l| Arc::ptr_eq(l, &link))
                {
                    self.tcp_links.remove(&link.source);
                }
            }
            Inbox::Route(Route::Ufrag(ufrag, owner)) => self.demux.set_ufrag(ufrag, owner),
            Inbox::Route(Route::Address(addr, owner)) => self.demux.set_address(addr, owner),
            #[cfg(debug_assertions)]
            Inbox::Fault(f) => inject(self.id, f),
        }
    }

    fn command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Join { params, out, reply } => {
                let (session, room, identity) =
                    (params.session, params.room.clone(), params.identity.clone());
                self.sessions.insert(session, out);
                let result = self.shard.join(now, *params);
                match &result {
                    Ok(sid) => self.tell_cluster(ClusterEvent::Joined {
                        room,
                        identity,
                        sid: sid.clone(),
                    }),
                    Err(_) => {
                        self.sessions.remove(&session);
                        self.directory().participant_left(&room, &identity, self.id);
                    }
                }
                let _ = reply.send(result);
            }
            Command::Resume { params, out } => {
                self.sessions.insert(params.session, out);
                self.shard.resume(now, params);
            }
            Command::Signal { session, cmd } => self.shard.signal(now, session, *cmd),
            Command::Violation { session, why } => self.shard.protocol_violation(now, session, &why),
            Command::Flood { session } => self.shard.disconnect_session(
                now,
                session,
                &format!(
                    "signal messages over the budget ({} at once, {} a second)",
                    crate::session::SIGNAL_BURST,
                    crate::session::SIGNAL_RATE
                ),
                livekit_protocol::DisconnectReason::SignalClose,
            ),
            Command::Admin { req, reply } => {
                let _ = reply.send(self.shard.admin(now, *req));
            }
            Command::EvictAll => self.shard.evict_all(now),
            Command::Closed { session } => {
                self.sessions.remove(&session);
                self.shard.session_closed(now, session);
            }
            Command::LinkRoom { room, places } => self.shard.link_room(now, &room, &places),
            Command::BecomeHome { room } => self.shard.become_home(now, &room),
        }
    }

    /// A node or region link came up, was replaced, or went down.
    fn node_link(&mut self, now: Instant, place: PlaceId, link: Option<LinkHandle>) {
        let i = place.index as usize;
        if self.node_links.len() <= i {
            self.node_links.resize(i + 1, None);
        }
        let up = link.is_some();
        let was_up = std::mem::replace(&mut self.node_links[i], link).is_some();
        match (was_up, up) {
            (_, true) => self.shard.place_up(now, place),
            (true, false) => self.shard.place_down(now, place),
            (false, false) => {}
        }
    }

    fn directory(&self) -> std::sync::MutexGuard<'_, Directory> {
        // A panic while holding the lock takes the node down (the watchdog sees the dead
        // worker); the directory itself stays consistent enough to answer until then.
        self.shared.directory.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn flush(&mut self) {
        let now = Instant::now();
        let mut cut = Vec::new();
        let mut events = std::mem::take(&mut self.events);
        loop {
            self.drain_outputs(&mut cut, &mut events);
            if events.is_empty() {
                break;
            }
            // Events may make the shard say more (closing an idle room): drain again.
            for e in events.drain(..) {
                self.event(now, e);
            }
        }
        self.events = events;
        // quinn-udp turns GSO off when the path refuses it; batch no larger from then on.
        if self.udp.max_gso_segments() < self.egress.max_segments() {
            warn!("the network path refused UDP GSO; sending datagrams one by one from now on");
            self.egress.set_max_segments(self.udp.max_gso_segments());
        }
        self.landed.clear();
        for session in cut {
            if let Some(tx) = self.sessions.remove(&session) {
                let _ = tx.try_send(SessionEvent::Close);
            }
            self.shard.session_closed(now, session);
        }
    }

    /// Hand every output of the shard to where it goes; events are kept for the caller.
    fn drain_outputs(&mut self, cut: &mut Vec<SessionId>, events: &mut Vec<ShardEvent>) {
        let (socket, udp, src_ip) = (&self.socket, &self.udp, self.src_ip);
        let mut send = |b: Batch<'_>| send_batch(socket, udp, src_ip, &b);
        while let Some(out) = self.shard.poll_output() {
            match out {
                Output::Transmit(t) if t.proto == str0m::net::Protocol::Tcp => {
                    let Some(link) = self.tcp_links.get(&t.destination) else {
                        continue;
                    };
                    let mut buf = self.pool.buffer();
                    let framed = crate::framing::frame_into(&mut buf, &t.contents);
                    str0m::net::recycle(t.contents);
                    if framed.is_err() {
                        continue;
                    }
                    if let Err(o) = link.send(Outgoing { from: self.id, buf }) {
                        // The client reads too slowly (or is gone): drop, as a full path would.
                        give_back(&self.peers[self.id as usize].returns, o.buf);
                        self.counters.media_dropped += 1;
                    }
                }
                Output::Transmit(t) => {
                    self.egress.push(t.destination, &t.contents, &mut send);
                    // Copied into the batch: str0m writes the next datagram into this buffer.
                    str0m::net::recycle(t.contents);
                }
                Output::Signal(session, msg) => {
                    let Some(tx) = self.sessions.get(&session) else {
                        continue;
                    };
                    match tx.try_send(SessionEvent::Message(msg)) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            warn!(%session, "signal queue full; cutting the session");
                            cut.push(session);
                        }
                        // The session task has ended. It handed this worker every request
                        // it read (a Leave, say) and its `Command::Closed` comes after them
                        // (`CloseGuard`), on the same channel. Ending the session here
                        // instead would put the participant into "awaiting resume" before
                        // that Leave is read, and the room would see it go only at the
                        // resume timeout (seen in CI: test_regions.py, 2026-12-03).
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
                Output::Webhook(event) => self.shared.notifier.notify(event),
                Output::Close(session) => {
                    if let Some(tx) = self.sessions.remove(&session) {
                        let _ = tx.try_send(SessionEvent::Close);
                    }
                }
                // Held until the outputs are drained: one hand-off per place per turn.
                Output::Relay(place, msg) => {
                    let out = match place.tier {
                        Tier::Worker => &mut self.to_workers,
                        Tier::Node | Tier::Region => &mut self.to_links,
                    };
                    let i = place.index as usize;
                    if out.len() <= i {
                        out.resize_with(i + 1, Vec::new);
                    }
                    out[i].push(msg);
                }
                Output::Event(e) => events.push(e),
            }
        }
        self.egress.finish(&mut send);
        self.flush_relays();
    }

    /// Hand this turn's relay messages to each place, one batch each.
    fn flush_relays(&mut self) {
        let from = PlaceId::worker(self.id);
        for (i, msgs) in self.to_workers.iter_mut().enumerate() {
            if msgs.is_empty() {
                continue;
            }
            let dropped = match self.peers.get(i) {
                Some(peer) => peer.relay_batch(from, msgs),
                None => {
                    msgs.clear();
                    0
                }
            };
            self.counters.media_dropped += dropped as u64;
        }
        for (i, msgs) in self.to_links.iter_mut().enumerate() {
            if msgs.is_empty() {
                continue;
            }
            // A link that is down takes nothing; the rooms exchange snapshots again when it
            // is back.
            let dropped = match self.node_links.get(i) {
                Some(Some(link)) => link.send_batch(msgs),
                _ => {
                    msgs.clear();
                    0
                }
            };
            self.counters.media_dropped += dropped as u64;
        }
    }

    fn event(&mut self, now: Instant, e: ShardEvent) {
        match e {
            ShardEvent::ParticipantLeft { room, identity, sid } => {
                self.directory().participant_left(&room, &identity, self.id);
                self.tell_cluster(ClusterEvent::Left { room, identity, sid });
            }
            ShardEvent::ParticipantMoved {
                from,
                to,
                identity,
                sid,
            } => {
                self.directory().participant_moved(&from, &to, &identity, self.id);
                self.tell_cluster(ClusterEvent::Left {
                    room: from,
                    identity: identity.clone(),
                    sid: sid.clone(),
                });
                self.tell_cluster(ClusterEvent::Joined {
                    room: to,
                    identity,
                    sid,
                });
            }
            ShardEvent::RoomIdle { room, sid } => {
                let idle = self.directory().room_idle(&room, &sid);
                match idle {
                    Idle::Closed(opened) => {
                        self.shard.close_room(now, &room);
                        self.tell_cluster(ClusterEvent::RoomClosed { room, opened });
                    }
                    // Someone is on their way (placed, not yet joined): ask again later.
                    Idle::Busy => self.shard.keep_room(&room),
                }
            }
            ShardEvent::RoomClosed { .. } => {}
            ShardEvent::AddressLearned(addr) => {
                if let Some(&w) = self.landed.get(&addr) {
                    self.peers[w as usize].send_control(Inbox::Route(Route::Address(addr, Some(self.id))));
                    self.routed.insert(addr, w);
                    self.steer(addr);
                }
            }
            ShardEvent::AddressForgotten(addr) => {
                if let Some(w) = self.routed.remove(&addr) {
                    self.peers[w as usize].send_control(Inbox::Route(Route::Address(addr, None)));
                }
                if let Some(steered) = self.steered.as_mut() {
                    steered.remove(addr);
                }
            }
            ShardEvent::UfragAdded(ufrag) => self.tell_others(|| Route::Ufrag(ufrag.clone(), Some(self.id))),
            ShardEvent::UfragRemoved(ufrag) => self.tell_others(|| Route::Ufrag(ufrag.clone(), None)),
        }
    }

    /// Take `addr`'s datagrams off the socket they land on (`steer.rs`). The landing worker
    /// was told the route as well: what is in flight, or all of it if steering fails, still
    /// comes by hand-off.
    fn steer(&mut self, addr: SocketAddr) {
        let Some(steered) = self.steered.as_mut() else {
            return;
        };
        if let Err(e) = steered.add(self.bind, addr) {
            debug!(worker = self.id, peer = %addr, "flow not steered: {e}");
        }
    }

    /// With a region: what Redis must learn (sent to the cluster's task, never awaited here).
    fn tell_cluster(&self, event: ClusterEvent) {
        if let Some(tx) = &self.shared.cluster {
            let _ = tx.send(event);
        }
    }

    fn tell_others(&self, route: impl Fn() -> Route) {
        for p in self.peers.iter().filter(|p| p.id != self.id) {
            p.send_control(Inbox::Route(route()));
        }
    }
}

/// Carry out an injected fault (only debug builds can send one).
#[cfg(debug_assertions)]
fn inject(worker: WorkerId, fault: Fault) {
    warn!(worker, ?fault, "injected fault");
    match fault {
        Fault::Panic => panic!("injected fault: worker {worker} panics"),
        Fault::Stall => std::thread::sleep(Duration::from_secs(3600)),
    }
}

/// Send one batch. UDP semantics: a full socket buffer drops it, as the network would. A
/// batch the path refuses as GSO (quinn-udp then turns GSO off for the socket) goes out
/// datagram by datagram.
fn send_batch(
    socket: &UdpSocket,
    udp: &quinn_udp::UdpSocketState,
    src_ip: Option<std::net::IpAddr>,
    b: &Batch<'_>,
) {
    let transmit = quinn_udp::Transmit {
        destination: b.destination,
        ecn: None,
        contents: b.contents,
        segment_size: b.segment_size,
        src_ip,
    };
    match socket.try_io(Interest::WRITABLE, || udp.try_send(socket.into(), &transmit)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => match b.segment_size {
            Some(size) if udp.max_gso_segments() == 1 => {
                for d in b.contents.chunks(size) {
                    let one = quinn_udp::Transmit {
                        contents: d,
                        segment_size: None,
                        ..transmit
                    };
                    let _ = socket.try_io(Interest::WRITABLE, || udp.try_send(socket.into(), &one));
                }
            }
            _ => debug!(to = %b.destination, "udp send failed: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::source_ip;

    #[test]
    fn media_goes_out_from_node_ip_only_when_bound_everywhere_and_node_ip_is_ours() {
        let any = "0.0.0.0:7882".parse().unwrap();
        let lo = "127.0.0.1".parse().unwrap();
        assert_eq!(source_ip(any, lo), Some(lo));
        assert_eq!(
            source_ip("127.0.0.1:7882".parse().unwrap(), lo),
            None,
            "bound to one address"
        );
        // A 1:1 NAT's public address is not on any interface: the kernel picks.
        assert_eq!(source_ip(any, "203.0.113.7".parse().unwrap()), None);
    }
}
