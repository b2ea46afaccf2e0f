//! The media worker: one thread that owns a [`Shard`] and the UDP media socket.
//!
//! Signalling tasks talk to it only through [`Command`] messages; it answers through each
//! session's bounded channel. The shard is driven with `Instant::now()` read here, at the
//! edge, never inside the core.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use livekit_protocol as lk;
use pylon_core::ids::{ParticipantSid, SessionId};
use pylon_core::{JoinError, JoinParams, Output, ResumeParams, Shard, ShardConfig};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::egress::{Batch, Batcher};
use crate::metrics::ShardGauges;

/// Messages a session's WebSocket pump receives from the worker.
#[derive(Debug)]
pub enum SessionEvent {
    Message(Box<lk::SignalResponse>),
    Close,
}

/// How many signal messages may wait for a slow WebSocket before the session is cut.
pub const SESSION_QUEUE: usize = 1024;

/// Datagrams read per wake-up before outputs are flushed: bounds latency added by batching.
const RECV_BATCH: usize = 64;

/// Largest datagram we accept; WebRTC keeps packets under the path MTU.
const MAX_DATAGRAM: usize = 2048;
/// How often the shard's counters are copied to the metrics endpoint.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);

pub type SessionTx = mpsc::Sender<SessionEvent>;

/// Requests from signalling tasks to the worker.
pub enum Command {
    Join {
        params: JoinParams,
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
    Closed {
        session: SessionId,
    },
    Admin {
        req: pylon_core::admin::AdminRequest,
        reply: oneshot::Sender<Result<pylon_core::admin::AdminResponse, pylon_core::admin::AdminError>>,
    },
}

/// Handle to send commands to the worker.
#[derive(Clone)]
pub struct WorkerHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl WorkerHandle {
    pub fn send(&self, cmd: Command) {
        // The worker outlives every session; a failed send means the node is shutting down.
        let _ = self.tx.send(cmd);
    }
}

/// Start the worker thread on `socket`, advertising `config.udp_candidate`.
pub fn spawn(
    config: ShardConfig,
    socket: std::net::UdpSocket,
    notifier: crate::webhook::Notifier,
    gauges: Arc<ShardGauges>,
) -> std::io::Result<WorkerHandle> {
    let (tx, rx) = mpsc::unbounded_channel();
    socket.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("pylon-media".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("current-thread runtime builds");
            rt.block_on(async move {
                let socket = UdpSocket::from_std(socket).expect("socket registers with tokio");
                Worker::new(config, socket, notifier, gauges).run(rx).await;
            });
        })?;
    Ok(WorkerHandle { tx })
}

struct Worker {
    shard: Shard,
    socket: UdpSocket,
    local: SocketAddr,
    sessions: HashMap<SessionId, SessionTx>,
    buf: Vec<u8>,
    notifier: crate::webhook::Notifier,
    gauges: Arc<ShardGauges>,
    next_publish: Instant,
    /// Kernel UDP features of the media socket (GSO).
    udp: quinn_udp::UdpSocketState,
    egress: Batcher,
}

impl Worker {
    fn new(
        config: ShardConfig,
        socket: UdpSocket,
        notifier: crate::webhook::Notifier,
        gauges: Arc<ShardGauges>,
    ) -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let local = config.udp_candidate;
        let seed = rand::random();
        let udp = quinn_udp::UdpSocketState::new((&socket).into()).expect("UDP socket state");
        let egress = Batcher::new(udp.max_gso_segments());
        info!(gso_segments = udp.max_gso_segments(), "egress batching");
        Self {
            udp,
            egress,
            shard: Shard::new(config, Instant::now(), unix_ms, seed),
            socket,
            local,
            sessions: HashMap::new(),
            buf: vec![0; MAX_DATAGRAM],
            notifier,
            gauges,
            next_publish: Instant::now(),
        }
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        info!(udp = %self.local, "media worker running");
        loop {
            self.flush();
            let deadline = tokio::time::Instant::from_std(self.shard.poll_timeout());
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                r = self.socket.recv_from(&mut self.buf) => {
                    match r {
                        Ok((n, src)) => {
                            let _ = self.shard.receive(Instant::now(), src, self.local, &self.buf[..n]);
                            self.drain_socket();
                        }
                        Err(e) => debug!("udp recv error: {e}"),
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {}
            }
            let now = Instant::now();
            if now >= self.shard.poll_timeout() {
                self.shard.handle_timeout(now);
            }
            if now >= self.next_publish {
                self.next_publish = now + METRICS_INTERVAL;
                self.publish_gauges();
            }
        }
        info!("media worker stopped");
    }

    /// Copy the shard's counters to the metrics endpoint (about once a second).
    fn publish_gauges(&self) {
        let s = self.shard.stats();
        let g = &self.gauges;
        g.datagrams_in.store(s.datagrams_in, Ordering::Relaxed);
        g.datagrams_dropped.store(s.datagrams_dropped, Ordering::Relaxed);
        g.rtp_in.store(s.rtp_in, Ordering::Relaxed);
        g.rtp_out.store(s.rtp_out, Ordering::Relaxed);
        g.data_forwarded
            .store(s.data_packets_forwarded, Ordering::Relaxed);
        g.rooms.store(self.shard.room_count() as u64, Ordering::Relaxed);
        g.participants
            .store(self.shard.participant_count() as u64, Ordering::Relaxed);
    }

    /// Read what is already queued on the socket, up to a batch, without waiting.
    fn drain_socket(&mut self) {
        for _ in 1..RECV_BATCH {
            match self.socket.try_recv_from(&mut self.buf) {
                Ok((n, src)) => {
                    let _ = self
                        .shard
                        .receive(Instant::now(), src, self.local, &self.buf[..n]);
                }
                Err(_) => return,
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Join { params, out, reply } => {
                let session = params.session;
                self.sessions.insert(session, out);
                let result = self.shard.join(now, params);
                if result.is_err() {
                    self.sessions.remove(&session);
                }
                let _ = reply.send(result);
            }
            Command::Resume { params, out } => {
                self.sessions.insert(params.session, out);
                self.shard.resume(now, params);
            }
            Command::Signal { session, cmd } => self.shard.signal(now, session, *cmd),
            Command::Violation { session, why } => self.shard.protocol_violation(now, session, &why),
            Command::Admin { req, reply } => {
                let _ = reply.send(self.shard.admin(now, req));
            }
            Command::Closed { session } => {
                self.sessions.remove(&session);
                self.shard.session_closed(now, session);
            }
        }
    }

    fn flush(&mut self) {
        let now = Instant::now();
        let mut cut = Vec::new();
        let (socket, udp) = (&self.socket, &self.udp);
        let mut send = |b: Batch<'_>| send_batch(socket, udp, &b);
        while let Some(out) = self.shard.poll_output() {
            match out {
                Output::Transmit(t) => self.egress.push(t.destination, &t.contents, &mut send),
                Output::Signal(session, msg) => {
                    let Some(tx) = self.sessions.get(&session) else {
                        continue;
                    };
                    if tx.try_send(SessionEvent::Message(msg)).is_err() {
                        warn!(%session, "signal queue full or closed; cutting the session");
                        cut.push(session);
                    }
                }
                Output::Webhook(event) => self.notifier.notify(event),
                Output::Relay(..) | Output::Event(_) => {}
                Output::Close(session) => {
                    if let Some(tx) = self.sessions.remove(&session) {
                        let _ = tx.try_send(SessionEvent::Close);
                    }
                }
            }
        }
        self.egress.finish(&mut send);
        // quinn-udp turns GSO off when the path refuses it; batch no larger from then on.
        if self.udp.max_gso_segments() < self.egress.max_segments() {
            warn!("the network path refused UDP GSO; sending datagrams one by one from now on");
            self.egress.set_max_segments(self.udp.max_gso_segments());
        }
        for session in cut {
            if let Some(tx) = self.sessions.remove(&session) {
                let _ = tx.try_send(SessionEvent::Close);
            }
            self.shard.session_closed(now, session);
        }
    }
}

/// Send one batch. UDP semantics: a full socket buffer drops it, as the network would. A
/// batch the path refuses as GSO (quinn-udp then turns GSO off for the socket) goes out
/// datagram by datagram.
fn send_batch(socket: &UdpSocket, udp: &quinn_udp::UdpSocketState, b: &Batch<'_>) {
    let transmit = quinn_udp::Transmit {
        destination: b.destination,
        ecn: None,
        contents: b.contents,
        segment_size: b.segment_size,
        src_ip: None,
    };
    match socket.try_io(Interest::WRITABLE, || udp.try_send(socket.into(), &transmit)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => match b.segment_size {
            Some(size) if udp.max_gso_segments() == 1 => {
                for d in b.contents.chunks(size) {
                    let _ = socket.try_send_to(d, b.destination);
                }
            }
            _ => debug!(to = %b.destination, "udp send failed: {e}"),
        },
    }
}
