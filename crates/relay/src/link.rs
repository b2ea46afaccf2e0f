//! An established link: the queue the node's workers send into, the task that writes it to
//! the connection, and the task that reads the peer's frames and delivers them.
//!
//! State and feedback go on one reliable unidirectional stream per direction (ordered,
//! length-prefixed frames); media goes as QUIC datagrams (unreliable, congestion-controlled,
//! so repair and rate stay per hop). Each direction's codec table is owned by one task, so
//! nothing is locked per packet.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use pylon_core::relay::RelayMessage;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::auth::Peer;
use crate::wire::{self, Body, CodecTable, Frame, Homes, RoomHome, WireError, MAX_FRAME};
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
}

/// What the writer task sends.
enum Outgoing {
    Message(RelayMessage),
    Homes(Vec<RoomHome>),
}

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

/// Start the tasks of an authenticated connection; returns the handle to send on it.
pub(crate) fn start(
    conn: quinn::Connection,
    peer: Peer,
    dialed: bool,
    inbound: Arc<dyn Inbound>,
    stats: Arc<RelayStats>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued_media = Arc::new(AtomicUsize::new(0));
    let handle = LinkHandle {
        peer,
        id: conn.stable_id(),
        dialed,
        conn: conn.clone(),
        tx,
        queued_media: queued_media.clone(),
    };
    stats.links_up.fetch_add(1, Ordering::Relaxed);
    let receiver = inbound.link_up(handle.clone());
    tokio::spawn(write(conn.clone(), rx, queued_media, stats.clone()));
    tokio::spawn(read(conn, handle, receiver, inbound, stats));
}

async fn write(
    conn: quinn::Connection,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    queued_media: Arc<AtomicUsize>,
    stats: Arc<RelayStats>,
) {
    let Ok(mut stream) = conn.open_uni().await else {
        return;
    };
    let mut codecs = CodecTable::default();
    let mut buf = Vec::with_capacity(1500);
    while let Some(out) = rx.recv().await {
        let msg = match out {
            Outgoing::Message(m) => m,
            Outgoing::Homes(rooms) => {
                let frame = Frame {
                    body: Some(Body::Homes(Homes { rooms })),
                };
                if write_control(&mut stream, &frame, &mut buf, &stats)
                    .await
                    .is_err()
                {
                    break;
                }
                continue;
            }
        };
        if msg.is_media() {
            queued_media.fetch_sub(1, Ordering::Relaxed);
        }
        // RTP goes as datagrams; data-track frames, which may exceed one, on the stream.
        let media = matches!(msg, RelayMessage::Rtp(_));
        let (announce, frame) = match wire::encode(&msg, &mut codecs) {
            Ok(f) => f,
            Err(e) => {
                debug!("relay message not encodable: {e}");
                continue;
            }
        };
        // A codec's announcement goes on the stream before the media that names it.
        if let Some(a) = announce {
            if write_control(&mut stream, &a, &mut buf, &stats).await.is_err() {
                break;
            }
        }
        let written = if media {
            buf.clear();
            frame
                .encode(&mut buf)
                .map(|_| send_datagram(&conn, &buf, &stats))
                .is_ok()
        } else {
            write_control(&mut stream, &frame, &mut buf, &stats).await.is_ok()
        };
        if !written {
            break;
        }
    }
    let _ = stream.finish();
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

fn send_datagram(conn: &quinn::Connection, bytes: &[u8], stats: &RelayStats) {
    let fits = conn.max_datagram_size().is_some_and(|max| bytes.len() <= max);
    // QUIC owns what it sends: one buffer per media datagram is the link's allocation.
    if fits && conn.send_datagram(Bytes::copy_from_slice(bytes)).is_ok() {
        add(&stats.packets_sent, 1);
        add(&stats.bytes_sent, bytes.len());
        return;
    }
    add(&stats.media_dropped, 1);
}

async fn read(
    conn: quinn::Connection,
    link: LinkHandle,
    mut receiver: Box<dyn Receiver>,
    inbound: Arc<dyn Inbound>,
    stats: Arc<RelayStats>,
) {
    let peer = &link.peer;
    let why = match conn.accept_uni().await {
        Ok(stream) => read_loop(&conn, stream, peer, &mut *receiver, &stats).await,
        Err(e) => e.to_string(),
    };
    info!(peer = %peer.node, region = %peer.region, "relay link down: {why}");
    stats.links_up.fetch_sub(1, Ordering::Relaxed);
    inbound.link_down(&link);
}

/// Read the peer's frames until the link ends; returns why it ended.
async fn read_loop(
    conn: &quinn::Connection,
    mut stream: quinn::RecvStream,
    peer: &Peer,
    receiver: &mut dyn Receiver,
    stats: &RelayStats,
) -> String {
    let mut codecs = CodecTable::default();
    let mut warned_media = false;
    loop {
        tokio::select! {
            frame = read_frame(&mut stream) => {
                let frame = match frame {
                    Ok(f) => f,
                    Err(why) => {
                        warn!(peer = %peer.node, "relay link closed: {why}");
                        conn.close(close::PROTOCOL.into(), why.as_bytes());
                        return why;
                    }
                };
                add(&stats.messages_received, 1);
                if let Some(Body::Homes(h)) = frame.body {
                    receiver.homes(h.rooms);
                    continue;
                }
                match wire::decode(frame, &mut codecs) {
                    Ok(Some(msg)) => receiver.message(msg),
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
                let bytes = match datagram {
                    Ok(b) => b,
                    Err(e) => return e.to_string(),
                };
                add(&stats.bytes_received, bytes.len());
                let decoded = wire::frame(&bytes).and_then(|f| wire::decode(f, &mut codecs));
                match decoded {
                    Ok(Some(msg @ RelayMessage::Rtp(_))) => {
                        add(&stats.packets_received, 1);
                        receiver.message(msg);
                    }
                    // Media may overtake its codec's announcement on the stream: dropped.
                    Err(WireError::UnknownCodec(_)) => add(&stats.media_dropped, 1),
                    other => {
                        add(&stats.media_dropped, 1);
                        if !std::mem::replace(&mut warned_media, true) {
                            warn!(peer = %peer.node, "relay datagram refused: {:?}", other.err());
                        }
                    }
                }
            }
        }
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
