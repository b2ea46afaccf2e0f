//! An established link: the queue the node's workers send into, the task that writes it to
//! the connection, and the task that reads the peer's frames and delivers them.
//!
//! State and feedback go on one reliable unidirectional stream per direction (ordered,
//! length-prefixed frames); media goes as QUIC datagrams (unreliable, congestion-controlled,
//! so repair and rate stay per hop), or, between nodes of one region, as sealed UDP datagrams
//! on a socket of the link's own (`direct.rs`). Each direction's codec table is owned by one
//! task, so nothing is locked per packet.
//!
//! The direct path opens like this: each end binds a UDP socket for the link and names its
//! port on the stream (`Direct`); each end, knowing the peer's port, sends a probe (a sealed
//! empty frame) there with every 32nd media packet, which still goes by QUIC; the end a probe
//! reaches answers `Direct { confirmed }` on the stream, and from then on the prober sends its
//! media directly. A path the network does not carry (a firewall between nodes) is never
//! confirmed, and media stays on QUIC. A peer of an older version ignores `Direct`, so mixed
//! versions stay on QUIC too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use prost::Message;
use pylon_core::relay::{admit_batch, RelayMessage};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::auth::Peer;
use crate::direct::{self, Opener, Sealer};
use crate::wire::{self, Body, CodecTable, Direct, Frame, Homes, RoomHome, WireError, MAX_FRAME};
use crate::{Inbound, Receiver};

/// Media messages that may wait in a link's queue; beyond this they are dropped, as a
/// congested path would, instead of growing memory behind a slow link.
pub const MAX_QUEUED_MEDIA: usize = 8192;

/// QUIC application error codes a link closes with.
pub mod close {
    pub const DONE: u32 = 0;
    pub const REFUSED: u32 = 1;
    pub const PROTOCOL: u32 = 2;
}

/// What went over the node's links, for `/metrics`.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Media datagrams.
    pub packets_sent: AtomicU64,
    pub packets_received: AtomicU64,
    /// Frames on the reliable stream.
    pub messages_sent: AtomicU64,
    pub messages_received: AtomicU64,
    /// Media not sent (queue full, datagram too large) or not understood on arrival.
    pub media_dropped: AtomicU64,
    pub links_up: AtomicU64,
    /// Of the media datagrams, those that went by the direct path (`direct.rs`).
    pub direct_sent: AtomicU64,
    pub direct_received: AtomicU64,
    /// Handshakes refused (wrong secret, garbage, replays, versions).
    pub refused: AtomicU64,
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

/// A way to send on one link. Cheap to clone; workers keep one per peer.
#[derive(Clone)]
pub struct LinkHandle {
    peer: Peer,
    /// This connection's id, unique in the endpoint.
    id: usize,
    /// Whether this end dialled the connection.
    dialed: bool,
    conn: quinn::Connection,
    tx: mpsc::UnboundedSender<Outgoing>,
    queued_media: Arc<AtomicUsize>,
    /// The local port of the link's direct media path, if it has one.
    direct_port: Option<u16>,
}

/// What the writer task sends.
enum Outgoing {
    Message(RelayMessage),
    /// A worker's messages of one loop turn, in order: one hand-off, one wake of the writer.
    Batch(Vec<RelayMessage>),
    Homes(Vec<RoomHome>),
    /// The peer's direct probes arrived: tell it so.
    ConfirmDirect,
}

/// Media packets sent by QUIC between two probes of a direct path not yet confirmed.
const PROBE_EVERY: u64 = 32;

/// What a link's writer and reader share about its direct path.
#[derive(Default)]
struct DirectState {
    /// Where the peer receives direct media (learnt from its `Direct` frame).
    peer: OnceLock<SocketAddr>,
    /// The peer received our probes: send media directly.
    confirmed: AtomicBool,
}

/// The writer's half of a direct path.
struct DirectTx {
    socket: Arc<tokio::net::UdpSocket>,
    state: Arc<DirectState>,
    sealer: Sealer,
    buf: Vec<u8>,
    /// Media packets sent while the path was not confirmed.
    unconfirmed: u64,
}

/// The reader's half of a direct path.
struct DirectRx {
    socket: Arc<tokio::net::UdpSocket>,
    state: Arc<DirectState>,
    opener: Opener,
    buf: Vec<u8>,
    /// `Direct { confirmed }` was sent to the peer.
    confirmed_peer: bool,
}

/// Bind the link's UDP socket and derive its keys from the link's TLS session; `None` (media
/// stays on QUIC) if either fails.
fn bind_direct(conn: &quinn::Connection, dialed: bool, peer: &Peer) -> Option<(DirectTx, DirectRx)> {
    let mut material = [0u8; direct::KEYING_MATERIAL];
    if let Err(e) = conn.export_keying_material(&mut material, direct::LABEL, b"") {
        warn!(peer = %peer.node, "direct media path unavailable (no keying material): {e:?}");
        return None;
    }
    let ip = conn.local_ip().unwrap_or(match conn.remote_address() {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    let bound = std::net::UdpSocket::bind((ip, 0))
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .and_then(tokio::net::UdpSocket::from_std);
    let socket = match bound {
        Ok(s) => Arc::new(s),
        Err(e) => {
            warn!(peer = %peer.node, %ip, "direct media path unavailable (no UDP socket): {e}");
            return None;
        }
    };
    let (sealer, opener) = direct::split_keys(&material, dialed);
    let state = Arc::new(DirectState::default());
    let tx = DirectTx {
        socket: socket.clone(),
        state: state.clone(),
        sealer,
        buf: Vec::with_capacity(direct::MAX_DATAGRAM),
        unconfirmed: 0,
    };
    let rx = DirectRx {
        socket,
        state,
        opener,
        buf: vec![0; direct::MAX_DATAGRAM],
        confirmed_peer: false,
    };
    Some((tx, rx))
}

impl DirectTx {
    /// Send a media frame directly if the path is confirmed (true); else probe it now and
    /// then, and leave the frame to QUIC (false).
    fn send(&mut self, frame: &Frame, stats: &RelayStats) -> bool {
        let Some(&to) = self.state.peer.get() else {
            return false;
        };
        if !self.state.confirmed.load(Ordering::Relaxed) {
            if self.unconfirmed.is_multiple_of(PROBE_EVERY) {
                self.sealer.seal(&mut self.buf, |_| {});
                if let Err(e) = self.socket.try_send_to(&self.buf, to) {
                    debug!(%to, "direct media probe not sent: {e}");
                }
            }
            self.unconfirmed += 1;
            return false;
        }
        // Encoding into a Vec cannot fail: it grows.
        self.sealer
            .seal(&mut self.buf, |b| frame.encode(b).expect("a Vec grows"));
        match self.socket.try_send_to(&self.buf, to) {
            Ok(n) => {
                add(&stats.packets_sent, 1);
                add(&stats.direct_sent, 1);
                add(&stats.bytes_sent, n);
            }
            // A full socket buffer drops the packet, as a congested path would.
            Err(_) => add(&stats.media_dropped, 1),
        }
        true
    }
}

/// Bytes of media datagrams encoded into one allocation (about 30 video packets).
const DATAGRAM_BLOCK: usize = 32 * 1024;

/// Datagrams the reader takes without waiting before it hands what it has to the receiver
/// (`Receiver::flush`): bounds the latency batching adds to the first of them.
const READ_BATCH: usize = 64;

impl std::fmt::Debug for LinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkHandle")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl LinkHandle {
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The link's current round-trip time estimate (QUIC's smoothed RTT).
    pub fn rtt(&self) -> std::time::Duration {
        self.conn.rtt()
    }

    /// Queue a message for the peer; media (and data-track frames) are dropped (false) when
    /// the link is far behind or gone, state only when the link is gone.
    pub fn send(&self, msg: RelayMessage) -> bool {
        let media = msg.is_media();
        if media && self.queued_media.load(Ordering::Relaxed) >= MAX_QUEUED_MEDIA {
            return false;
        }
        if media {
            self.queued_media.fetch_add(1, Ordering::Relaxed);
        }
        self.tx.send(Outgoing::Message(msg)).is_ok()
    }

    /// Queue one loop turn's messages for the peer, in order, with one wake of the link's
    /// writer; `msgs` is left empty. Returns how many media messages were dropped because
    /// the link is far behind (then all of the batch's media are; state never is). A link
    /// that is gone takes nothing and counts nothing: the rooms exchange snapshots when it
    /// is back.
    pub fn send_batch(&self, msgs: &mut Vec<RelayMessage>) -> usize {
        if msgs.len() <= 1 {
            // One message needs no list (and no allocation to carry it).
            let sent = msgs.pop().is_none_or(|m| self.send(m));
            return usize::from(!sent && self.is_open());
        }
        let (media, dropped) = admit_batch(msgs, &self.queued_media, MAX_QUEUED_MEDIA);
        // The next turn's list starts as large as this one.
        let batch = std::mem::replace(msgs, Vec::with_capacity(msgs.len()));
        if batch.is_empty() {
            return dropped;
        }
        if self.tx.send(Outgoing::Batch(batch)).is_err() {
            self.queued_media.fetch_sub(media, Ordering::Relaxed);
            return 0;
        }
        dropped
    }

    /// The local UDP port of the link's direct media path (between nodes of one region).
    pub fn direct_port(&self) -> Option<u16> {
        self.direct_port
    }

    /// Tell the peer its direct probes arrived.
    fn confirm_direct(&self) -> bool {
        self.tx.send(Outgoing::ConfirmDirect).is_ok()
    }

    /// Tell a peer in another region which node is home of these rooms here.
    pub fn send_homes(&self, rooms: Vec<RoomHome>) -> bool {
        self.tx.send(Outgoing::Homes(rooms)).is_ok()
    }

    /// Whether the link is still up.
    pub fn is_open(&self) -> bool {
        !self.tx.is_closed() && self.conn.close_reason().is_none()
    }

    /// The connection's id (two links to one peer have different ones).
    pub fn id(&self) -> usize {
        self.id
    }

    /// Whether this end dialled the link (else the peer did).
    pub fn dialed(&self) -> bool {
        self.dialed
    }

    /// Close the link (both ends see it down).
    pub fn close(&self, why: &str) {
        self.conn.close(close::DONE.into(), why.as_bytes());
    }
}

/// Start the tasks of an authenticated connection; `direct`: try the direct media path
/// (between nodes of one region).
pub(crate) fn start(
    conn: quinn::Connection,
    peer: Peer,
    dialed: bool,
    direct: bool,
    inbound: Arc<dyn Inbound>,
    stats: Arc<RelayStats>,
) {
    let (direct_tx, direct_rx) = match direct.then(|| bind_direct(&conn, dialed, &peer)).flatten() {
        Some((tx, rx)) => (Some(tx), Some(rx)),
        None => (None, None),
    };
    let direct_port = (direct_rx.as_ref())
        .and_then(|d| d.socket.local_addr().ok())
        .map(|a| a.port());
    let (tx, rx) = mpsc::unbounded_channel();
    let queued_media = Arc::new(AtomicUsize::new(0));
    let handle = LinkHandle {
        peer,
        id: conn.stable_id(),
        dialed,
        conn: conn.clone(),
        tx,
        queued_media: queued_media.clone(),
        direct_port,
    };
    stats.links_up.fetch_add(1, Ordering::Relaxed);
    let receiver = inbound.link_up(handle.clone());
    tokio::spawn(write(
        conn.clone(),
        rx,
        queued_media,
        direct_tx,
        direct_port,
        stats.clone(),
    ));
    tokio::spawn(read(conn, handle, receiver, inbound, direct_rx, stats));
}

async fn write(
    conn: quinn::Connection,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    queued_media: Arc<AtomicUsize>,
    direct: Option<DirectTx>,
    direct_port: Option<u16>,
    stats: Arc<RelayStats>,
) {
    let Ok(stream) = conn.open_uni().await else {
        return;
    };
    let mut w = Writer {
        conn,
        stream,
        codecs: CodecTable::default(),
        buf: Vec::with_capacity(1500),
        datagrams: BytesMut::with_capacity(DATAGRAM_BLOCK),
        queued_media,
        direct,
        stats,
    };
    // Name the direct path's port first: the peer probes it once it knows.
    if let Some(port) = direct_port {
        if !w.direct_frame(port.into(), false).await {
            return;
        }
    }
    'link: while let Some(out) = rx.recv().await {
        let sent = match out {
            Outgoing::Message(m) => w.message(m).await,
            Outgoing::Batch(msgs) => {
                for m in msgs {
                    if !w.message(m).await {
                        break 'link;
                    }
                }
                true
            }
            Outgoing::Homes(rooms) => {
                let frame = Frame {
                    body: Some(Body::Homes(Homes { rooms })),
                };
                write_control(&mut w.stream, &frame, &mut w.buf, &w.stats)
                    .await
                    .is_ok()
            }
            Outgoing::ConfirmDirect => w.direct_frame(0, true).await,
        };
        if !sent {
            break;
        }
    }
    let _ = w.stream.finish();
}

/// The writer task's state: the connection, its stream, and this direction's codec table.
struct Writer {
    conn: quinn::Connection,
    stream: quinn::SendStream,
    codecs: CodecTable,
    buf: Vec<u8>,
    /// Where media datagrams are encoded: each is split off and handed to QUIC, sharing
    /// one allocation per block instead of one per datagram.
    datagrams: BytesMut,
    queued_media: Arc<AtomicUsize>,
    /// The direct media path, between nodes of one region.
    direct: Option<DirectTx>,
    stats: Arc<RelayStats>,
}

impl Writer {
    /// A `Direct` frame on the stream (our port, or that the peer's probes arrived); false
    /// when the link ended.
    async fn direct_frame(&mut self, port: u32, confirmed: bool) -> bool {
        let frame = Frame {
            body: Some(Body::Direct(Direct { port, confirmed })),
        };
        write_control(&mut self.stream, &frame, &mut self.buf, &self.stats)
            .await
            .is_ok()
    }

    /// Write one message; false when the link ended.
    async fn message(&mut self, msg: RelayMessage) -> bool {
        if msg.is_media() {
            self.queued_media.fetch_sub(1, Ordering::Relaxed);
        }
        // RTP goes as datagrams; data-track frames, which may exceed one, on the stream.
        let media = matches!(msg, RelayMessage::Rtp(_));
        let (announce, frame) = match wire::encode(&msg, &mut self.codecs) {
            Ok(f) => f,
            Err(e) => {
                debug!("relay message not encodable: {e}");
                return true;
            }
        };
        // A codec's announcement goes on the stream before the media that names it.
        if let Some(a) = announce {
            if write_control(&mut self.stream, &a, &mut self.buf, &self.stats)
                .await
                .is_err()
            {
                return false;
            }
        }
        if media && self.direct.as_mut().is_some_and(|d| d.send(&frame, &self.stats)) {
            return true;
        }
        if media {
            let len = frame.encoded_len();
            if self.datagrams.capacity() < len {
                // Reclaims the block when QUIC has let go of every datagram cut from it.
                self.datagrams.reserve(len.max(DATAGRAM_BLOCK));
            }
            frame
                .encode(&mut self.datagrams)
                .map(|_| send_datagram(&self.conn, self.datagrams.split().freeze(), &self.stats))
                .is_ok()
        } else {
            write_control(&mut self.stream, &frame, &mut self.buf, &self.stats)
                .await
                .is_ok()
        }
    }
}

/// One frame on the reliable stream (length-prefixed).
async fn write_control(
    stream: &mut quinn::SendStream,
    frame: &Frame,
    buf: &mut Vec<u8>,
    stats: &RelayStats,
) -> Result<(), ()> {
    buf.clear();
    frame.encode_length_delimited(buf).map_err(|_| ())?;
    stream
        .write_all(buf)
        .await
        .map_err(|e| debug!("relay stream closed: {e}"))?;
    add(&stats.messages_sent, 1);
    add(&stats.bytes_sent, buf.len());
    Ok(())
}

fn send_datagram(conn: &quinn::Connection, bytes: Bytes, stats: &RelayStats) {
    let len = bytes.len();
    let fits = conn.max_datagram_size().is_some_and(|max| len <= max);
    if fits && conn.send_datagram(bytes).is_ok() {
        add(&stats.packets_sent, 1);
        add(&stats.bytes_sent, len);
        return;
    }
    add(&stats.media_dropped, 1);
}

async fn read(
    conn: quinn::Connection,
    link: LinkHandle,
    mut receiver: Box<dyn Receiver>,
    inbound: Arc<dyn Inbound>,
    direct: Option<DirectRx>,
    stats: Arc<RelayStats>,
) {
    let peer = &link.peer;
    let why = match conn.accept_uni().await {
        Ok(stream) => read_loop(&conn, stream, &link, &mut *receiver, direct, &stats).await,
        Err(e) => e.to_string(),
    };
    info!(peer = %peer.node, region = %peer.region, "relay link down: {why}");
    stats.links_up.fetch_sub(1, Ordering::Relaxed);
    inbound.link_down(&link);
}

/// The next frame of the stream, handing the stream back: a read in progress lives across
/// the reader's turns (`tokio::select!` would drop and lose a partly read frame when media
/// arrives in the middle of it).
async fn next_frame(mut stream: quinn::RecvStream) -> (quinn::RecvStream, Result<Frame, String>) {
    let frame = read_frame(&mut stream).await;
    (stream, frame)
}

/// Until the direct path's socket has something to read (never without one).
async fn direct_readable(socket: Option<&tokio::net::UdpSocket>) {
    match socket {
        Some(s) => {
            if let Err(e) = s.readable().await {
                debug!("direct media socket: {e}");
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// Read the peer's frames until the link ends; returns why it ended.
async fn read_loop(
    conn: &quinn::Connection,
    stream: quinn::RecvStream,
    link: &LinkHandle,
    receiver: &mut dyn Receiver,
    mut direct: Option<DirectRx>,
    stats: &RelayStats,
) -> String {
    let peer = &link.peer;
    let mut codecs = CodecTable::default();
    let mut warned_media = false;
    let mut pending = std::pin::pin!(next_frame(stream));
    let socket = direct.as_ref().map(|d| d.socket.clone());
    loop {
        tokio::select! {
            (stream, frame) = &mut pending => {
                pending.set(next_frame(stream));
                let frame = match frame {
                    Ok(f) => f,
                    Err(why) => {
                        warn!(peer = %peer.node, "relay link closed: {why}");
                        conn.close(close::PROTOCOL.into(), why.as_bytes());
                        return why;
                    }
                };
                add(&stats.messages_received, 1);
                match frame.body {
                    Some(Body::Homes(h)) => {
                        receiver.homes(h.rooms);
                        continue;
                    }
                    Some(Body::Direct(d)) => {
                        peer_direct(conn, peer, direct.as_ref(), &d);
                        continue;
                    }
                    _ => {}
                }
                match wire::decode(frame, &mut codecs) {
                    Ok(Some(msg)) => {
                        receiver.message(msg);
                        receiver.flush();
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let why = format!("invalid frame: {e}");
                        warn!(peer = %peer.node, "relay link closed: {why}");
                        conn.close(close::PROTOCOL.into(), why.as_bytes());
                        return why;
                    }
                }
            }
            datagram = conn.read_datagram() => {
                // Take what else has already arrived, then hand it all over at once.
                let mut next = Some(datagram);
                let mut taken = 0;
                while let Some(datagram) = next {
                    let bytes = match datagram {
                        Ok(b) => b,
                        Err(e) => {
                            receiver.flush();
                            return e.to_string();
                        }
                    };
                    media(&bytes, peer, receiver, &mut codecs, &mut warned_media, stats);
                    taken += 1;
                    next = (taken < READ_BATCH).then(|| ready_datagram(conn)).flatten();
                }
                receiver.flush();
            }
            () = direct_readable(socket.as_deref()) => {
                if let Some(d) = direct.as_mut() {
                    direct_media(d, link, receiver, &mut codecs, &mut warned_media, stats);
                }
                receiver.flush();
            }
        }
    }
}

/// The peer named its direct path's port, or confirmed that our probes arrived there.
fn peer_direct(conn: &quinn::Connection, peer: &Peer, direct: Option<&DirectRx>, d: &Direct) {
    let Some(rx) = direct else {
        return debug!(peer = %peer.node, "direct media path offered; not used on this link");
    };
    if d.confirmed {
        if !rx.state.confirmed.swap(true, Ordering::Relaxed) {
            info!(peer = %peer.node, "direct media path confirmed: media to the peer leaves by UDP");
        }
        return;
    }
    match u16::try_from(d.port).ok().filter(|p| *p != 0) {
        Some(port) => {
            let _ = rx
                .state
                .peer
                .set(SocketAddr::new(conn.remote_address().ip(), port));
        }
        None => warn!(peer = %peer.node, port = d.port, "direct media path with an invalid port; ignored"),
    }
}

/// The direct datagrams that have arrived (at most a batch), to the receiver.
fn direct_media(
    d: &mut DirectRx,
    link: &LinkHandle,
    receiver: &mut dyn Receiver,
    codecs: &mut CodecTable,
    warned: &mut bool,
    stats: &RelayStats,
) {
    for _ in 0..READ_BATCH {
        let (n, from) = match d.socket.try_recv_from(&mut d.buf) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => return debug!(peer = %link.peer.node, "direct media socket: {e}"),
        };
        match d.opener.open(&mut d.buf[..n]) {
            Ok(plain) => {
                if !d.confirmed_peer {
                    d.confirmed_peer = link.confirm_direct();
                }
                // An empty frame is a probe.
                if !plain.is_empty() {
                    add(&stats.direct_received, 1);
                    media(plain, &link.peer, receiver, codecs, warned, stats);
                }
            }
            Err(e) => {
                add(&stats.bytes_received, n);
                add(&stats.media_dropped, 1);
                if !std::mem::replace(warned, true) {
                    warn!(peer = %link.peer.node, %from, "relay datagram refused (logged once per link): {e}");
                }
            }
        }
    }
}

/// One media datagram from the peer, to the receiver.
fn media(
    bytes: &[u8],
    peer: &Peer,
    receiver: &mut dyn Receiver,
    codecs: &mut CodecTable,
    warned: &mut bool,
    stats: &RelayStats,
) {
    add(&stats.bytes_received, bytes.len());
    match wire::frame(bytes).and_then(|f| wire::decode(f, codecs)) {
        Ok(Some(msg @ RelayMessage::Rtp(_))) => {
            add(&stats.packets_received, 1);
            receiver.message(msg);
        }
        // Media may overtake its codec's announcement on the stream: dropped.
        Err(WireError::UnknownCodec(_)) => add(&stats.media_dropped, 1),
        other => {
            add(&stats.media_dropped, 1);
            if !std::mem::replace(warned, true) {
                warn!(peer = %peer.node, "relay datagram refused: {:?}", other.err());
            }
        }
    }
}

/// A datagram that has already arrived, without waiting for one (dropping the unfinished
/// read leaves nothing behind: the datagram queue is the connection's).
fn ready_datagram(conn: &quinn::Connection) -> Option<Result<Bytes, quinn::ConnectionError>> {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let read = std::pin::pin!(conn.read_datagram());
    match read.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => Some(r),
        Poll::Pending => None,
    }
}

/// One length-prefixed frame from the stream, bounded by [`MAX_FRAME`].
async fn read_frame(stream: &mut quinn::RecvStream) -> Result<Frame, String> {
    let len = read_varint(stream).await?;
    if len > MAX_FRAME as u64 {
        return Err(format!("frame of {len} bytes exceeds {MAX_FRAME}"));
    }
    let mut body = vec![0u8; len as usize];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|e| format!("stream ended: {e}"))?;
    wire::frame(&body).map_err(|e| e.to_string())
}

/// A protobuf length prefix (LEB128, at most 10 bytes).
async fn read_varint(stream: &mut quinn::RecvStream) -> Result<u64, String> {
    let mut value = 0u64;
    for i in 0..10 {
        let b = stream.read_u8().await.map_err(|e| format!("stream ended: {e}"))?;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("malformed frame length".into())
}
