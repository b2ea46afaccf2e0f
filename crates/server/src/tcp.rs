//! ICE over TCP (RFC 6544) on `rtc.tcp_port`: clients whose network blocks UDP reach the
//! node's passive TCP candidate; every packet travels in an RFC 4571 frame (`framing.rs`).
//!
//! One task per connection reads frames and hands them to a media worker as messages, the way
//! a datagram that landed on the wrong worker's socket is handed over (`handoff.rs`): until the
//! connection is adopted, frames go to a worker chosen by the client's address, which routes
//! a STUN request by its USERNAME to the worker hosting that peer (`demux.rs`); once the owning
//! shard accepted a STUN request from the connection (integrity checked), that worker adopts
//! it and every later frame goes straight there. What the worker sends back goes through the
//! connection's bounded queue to its writer task, which coalesces queued frames into one write.
//!
//! Bounds (a hostile client must not stall others or grow memory):
//! - a frame over [`crate::framing::MAX_FRAME`] closes the connection;
//! - a connection not adopted within [`HANDSHAKE_TIMEOUT`] is closed (slow drip, idle, junk),
//!   and at most [`MAX_PENDING`] such connections are open at once (more are closed on accept);
//! - an adopted connection that sends nothing for [`IDLE_TIMEOUT`] is closed (ICE consent
//!   checks come every few seconds);
//! - the queue to a slow reader holds [`OUT_QUEUE`] frames, after a kernel send buffer of
//!   [`SEND_BUFFER`]; beyond that packets are dropped, as a congested UDP path would drop them.
//!   Workers never wait on a connection.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::directory::WorkerId;
use crate::framing::Deframer;
use crate::handoff::{give_back, Pool};
use crate::worker::WorkerHandle;

/// A connection must be adopted (a STUN request its peer's shard accepted) within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An adopted connection silent this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections not adopted yet, at most; more are closed as they are accepted.
pub const MAX_PENDING: usize = 1024;

/// Frames waiting for one connection's writer.
pub const OUT_QUEUE: usize = 256;

/// The kernel's send buffer per connection: media is real-time, so a deep buffer only adds
/// delay (and kernel memory per connection); past it the bounded queue drops.
const SEND_BUFFER: usize = 256 * 1024;

/// Bytes coalesced into one write.
const WRITE_BATCH: usize = 64 * 1024;

/// Buffers one connection keeps for the frames it hands to workers.
const IN_POOL: usize = 64;

const NO_OWNER: u32 = u32::MAX;

/// A frame for a connection's writer: the framed bytes, in a buffer of worker `from`'s pool.
pub struct Outgoing {
    pub from: WorkerId,
    pub buf: Vec<u8>,
}

/// One ICE/TCP connection as the media workers see it.
pub struct TcpLink {
    /// The client's address (its end of the connection).
    pub source: SocketAddr,
    out: mpsc::Sender<Outgoing>,
    /// The worker that adopted the connection, or [`NO_OWNER`].
    owner: AtomicU32,
    /// Where the buffers of the frames this connection handed over go back.
    returns: SyncSender<Vec<u8>>,
}

impl TcpLink {
    pub fn owner(&self) -> Option<WorkerId> {
        match self.owner.load(Ordering::Relaxed) {
            NO_OWNER => None,
            w => Some(w),
        }
    }

    /// Worker `w` hosts the peer this connection reaches: send every frame there from now on.
    pub fn adopt(&self, w: WorkerId) {
        self.owner.store(w, Ordering::Relaxed);
    }

    /// Queue framed bytes for the client; gives them back if the queue is full or the
    /// connection is gone.
    pub fn send(&self, msg: Outgoing) -> Result<(), Outgoing> {
        self.out.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(m) | mpsc::error::TrySendError::Closed(m) => m,
        })
    }

    /// Give back the buffer of a frame this connection handed over.
    pub fn give_back(&self, buf: Vec<u8>) {
        give_back(&self.returns, buf);
    }
}

/// What the listener's tasks share.
struct Ctx {
    workers: Vec<WorkerHandle>,
    pending: AtomicUsize,
    stats: Arc<TcpStats>,
}

/// Counters for the metrics endpoint.
#[derive(Default)]
pub struct TcpStats {
    pub accepted: std::sync::atomic::AtomicU64,
    pub refused: std::sync::atomic::AtomicU64,
    pub open: AtomicUsize,
}

/// Accept ICE/TCP connections on `listener` until the process ends.
pub async fn serve(listener: TcpListener, workers: Vec<WorkerHandle>, stats: Arc<TcpStats>) {
    let ctx = Arc::new(Ctx {
        workers,
        pending: AtomicUsize::new(0),
        stats,
    });
    // Accept failures in a row (out of file descriptors and the like): logged when they
    // start and when they end, not every time.
    let mut failing = 0u64;
    loop {
        let (stream, source) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                if failing == 0 {
                    warn!("ICE/TCP accept failed, retrying every 100 ms: {e}");
                }
                failing += 1;
                // Back off instead of spinning; connections wait in the listen backlog.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if failing > 0 {
            info!(failures = failing, "ICE/TCP accepting again");
            failing = 0;
        }
        if ctx.pending.load(Ordering::Relaxed) >= MAX_PENDING {
            ctx.stats.refused.fetch_add(1, Ordering::Relaxed);
            debug!(%source, "ICE/TCP connection refused: {MAX_PENDING} connections are still in their handshake");
            continue;
        }
        ctx.pending.fetch_add(1, Ordering::Relaxed);
        ctx.stats.accepted.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(ctx.clone(), stream, source));
    }
}

/// Bind the ICE/TCP listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    info!(%addr, "ICE/TCP media listening");
    Ok(listener)
}

async fn connection(ctx: Arc<Ctx>, stream: TcpStream, source: SocketAddr) {
    ctx.stats.open.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
    let (mut rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel(OUT_QUEUE);
    let pool = Pool::with_capacity(IN_POOL);
    let link = Arc::new(TcpLink {
        source,
        out: tx,
        owner: AtomicU32::new(NO_OWNER),
        returns: pool.returns(),
    });
    let writer = tokio::spawn(write_loop(wr, rx, ctx.clone()));
    let home = {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        source.hash(&mut h);
        (h.finish() % ctx.workers.len() as u64) as usize
    };
    let mut deframer = Deframer::default();
    let mut deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut pending = true;
    let why = 'read: loop {
        let n = match tokio::time::timeout_at(deadline, rd.read(deframer.spare())).await {
            Err(_) if pending => break "no ICE handshake in time",
            Err(_) => break "idle",
            Ok(Ok(0)) => break "closed by the client",
            Ok(Ok(n)) => n,
            Ok(Err(_)) => break "read error",
        };
        deframer.commit(n);
        while let Some(frame) = deframer.next_frame() {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    debug!(%source, "ICE/TCP framing error: {e}");
                    break 'read "framing error";
                }
            };
            let mut buf = pool.buffer();
            buf.extend_from_slice(frame);
            let to = link.owner().map_or(home, |w| w as usize);
            // A worker far behind drops the frame (counted there), as a congested path would.
            let _ = ctx.workers[to].tcp_frame(link.clone(), buf);
        }
        if pending && link.owner().is_some() {
            pending = false;
            ctx.pending.fetch_sub(1, Ordering::Relaxed);
        }
        if !pending {
            deadline = Instant::now() + IDLE_TIMEOUT;
        }
    };
    debug!(%source, owner = ?link.owner(), "ICE/TCP connection closed: {why}");
    if pending {
        ctx.pending.fetch_sub(1, Ordering::Relaxed);
    }
    writer.abort();
    if let Some(w) = link.owner() {
        ctx.workers[w as usize].tcp_closed(link);
    }
    ctx.stats.open.fetch_sub(1, Ordering::Relaxed);
}

/// Write what the workers queue for the client, coalescing whatever is waiting into one write.
async fn write_loop(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Outgoing>, ctx: Arc<Ctx>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while let Some(first) = rx.recv().await {
        batch.clear();
        let mut next = Some(first);
        while let Some(o) = next.take() {
            batch.extend_from_slice(&o.buf);
            if let Some(w) = ctx.workers.get(o.from as usize) {
                w.give_back(o.buf);
            }
            if batch.len() < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if wr.write_all(&batch).await.is_err() {
            break;
        }
    }
}
