//! One client-side peer connection: a str0m `Rtc` in RTP mode and the UDP socket it owns, or
//! (ICE over TCP) an active TCP candidate and the connections it opens.
//!
//! Each peer has its own socket because both of the server's peers for a participant share
//! one server address, so datagrams could not be told apart by source.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use str0m::channel::ChannelId;
use str0m::config::DtlsCert;
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::data::DataKind;
use crate::error::ClientError;

/// Which of the client's two peer connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PcKind {
    /// The client offers and sends media and data.
    Publisher,
    /// The server offers and sends media and data.
    Subscriber,
}

/// How a client peer reaches the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    #[default]
    Udp,
    /// ICE over TCP only (RFC 6544): an active TCP host candidate, RFC 4571 framing; the
    /// server's UDP candidates are never paired.
    Tcp,
}

/// A client peer connection as every Pylon tool makes it: str0m in RTP mode sending Opus and
/// VP8, with a host candidate for `local` (the address its datagrams come from).
pub fn client_rtc(local: SocketAddr, cert: Option<&DtlsCert>, now: Instant) -> Result<Rtc, ClientError> {
    client_rtc_on(local, Transport::Udp, cert, now, false)
}

/// `client_rtc`, also offering and accepting RFC 2198 redundant audio (RED) for Opus, as
/// libwebrtc does.
pub fn client_rtc_with_red(local: SocketAddr, now: Instant) -> Result<Rtc, ClientError> {
    client_rtc_on(local, Transport::Udp, None, now, true)
}

fn client_rtc_on(
    local: SocketAddr,
    transport: Transport,
    cert: Option<&DtlsCert>,
    now: Instant,
    red: bool,
) -> Result<Rtc, ClientError> {
    let mut builder = Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, red)
        .enable_vp8(true);
    if let Some(cert) = cert {
        builder = builder.set_dtls_cert(cert.clone());
    }
    let mut rtc = builder.build(now);
    let candidate = match transport {
        Transport::Udp => Candidate::host(local, "udp"),
        Transport::Tcp => Candidate::builder()
            .tcp()
            .host(local)
            .tcptype(TcpType::Active)
            .build(),
    }
    .map_err(|e| ClientError::Usage(format!("host candidate for {local}: {e}")))?;
    rtc.add_local_candidate(candidate);
    Ok(rtc)
}

/// Largest datagram read.
pub(crate) const RECV_BUF: usize = 2048;

pub struct Peer {
    pub rtc: Rtc,
    pub socket: UdpSocket,
    pub local: SocketAddr,
    pub next_timeout: Instant,
    pub connected: bool,
    /// Open data channels by id.
    pub channels: HashMap<ChannelId, DataKind>,
    /// With ICE over TCP: the connections to the server's candidates.
    pub tcp: Option<TcpPath>,
}

/// The TCP connections of a peer using ICE over TCP, opened on the first packet to each
/// server candidate; frames received on any of them arrive on `inbound`.
pub struct TcpPath {
    conns: HashMap<SocketAddr, mpsc::UnboundedSender<Vec<u8>>>,
    inbound_tx: mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>,
    pub inbound: mpsc::UnboundedReceiver<(SocketAddr, Vec<u8>)>,
}

impl TcpPath {
    fn new() -> Self {
        let (inbound_tx, inbound) = mpsc::unbounded_channel();
        Self {
            conns: HashMap::new(),
            inbound_tx,
            inbound,
        }
    }

    fn send(&mut self, to: SocketAddr, payload: &[u8]) {
        let Ok(len) = u16::try_from(payload.len()) else {
            return;
        };
        let inbound = &self.inbound_tx;
        let tx = self
            .conns
            .entry(to)
            .or_insert_with(|| connect(to, inbound.clone()));
        let mut frame = Vec::with_capacity(2 + payload.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(payload);
        let _ = tx.send(frame);
    }
}

/// A connection to `to`: frames queued on the returned sender are written in order; frames
/// read are passed to `inbound`. It ends when the peer (the sender) is dropped.
fn connect(
    to: SocketAddr,
    inbound: mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>,
) -> mpsc::UnboundedSender<Vec<u8>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        let stream = match TcpStream::connect(to).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%to, "ICE/TCP connect failed: {e}");
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let reader = tokio::spawn(async move {
            while let Ok(len) = rd.read_u16().await {
                let mut buf = vec![0; len as usize];
                if rd.read_exact(&mut buf).await.is_err() || inbound.send((to, buf)).is_err() {
                    break;
                }
            }
        });
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
        reader.abort();
    });
    tx
}

impl Peer {
    /// A peer on a fresh socket on `ip` with a host candidate for it. It sends Opus and VP8.
    /// With [`Transport::Tcp`] the socket stays unused and the candidate is an active TCP one.
    pub fn new(
        cert: Option<&DtlsCert>,
        ip: IpAddr,
        transport: Transport,
        now: Instant,
    ) -> Result<Peer, ClientError> {
        let std_socket = std::net::UdpSocket::bind((ip, 0))?;
        std_socket.set_nonblocking(true)?;
        let local = match transport {
            Transport::Udp => std_socket.local_addr()?,
            // Active TCP candidates carry port 9 (RFC 6544 §4.5): the real port is the
            // connection's, unknown until it is opened.
            Transport::Tcp => SocketAddr::new(ip, 9),
        };
        let socket = UdpSocket::from_std(std_socket)?;
        let rtc = client_rtc_on(local, transport, cert, now, false)?;
        Ok(Peer {
            rtc,
            socket,
            local,
            next_timeout: now,
            connected: false,
            channels: HashMap::new(),
            tcp: (transport == Transport::Tcp).then(TcpPath::new),
        })
    }

    /// Feed one datagram received on this peer's socket.
    pub fn receive(&mut self, now: Instant, source: SocketAddr, buf: &[u8]) -> Result<(), RtcError> {
        let proto = if self.tcp.is_some() {
            Protocol::Tcp
        } else {
            Protocol::Udp
        };
        // Not STUN, DTLS, RTP or RTCP: nothing a peer connection can use.
        let Ok(receive) = Receive::new(proto, source, self.local, buf) else {
            return Ok(());
        };
        self.rtc.handle_input(Input::Receive(now, receive))
    }

    /// Tell the peer what time it is. str0m schedules its timers (ICE checks, DTLS, RTCP)
    /// from the last time it was given, so this runs before every poll, not only when
    /// the previous timeout expires.
    pub fn tick(&mut self, now: Instant) -> Result<(), RtcError> {
        self.rtc.handle_input(Input::Timeout(now))
    }

    /// Poll until str0m returns a timeout: transmit datagrams, collect events into `events`.
    pub fn poll(&mut self, events: &mut Vec<Event>) -> Result<(), RtcError> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => {
                    self.next_timeout = t;
                    return Ok(());
                }
                Output::Transmit(t) if t.proto == Protocol::Tcp => {
                    if let Some(tcp) = &mut self.tcp {
                        tcp.send(t.destination, &t.contents);
                    }
                }
                Output::Transmit(t) => {
                    // UDP semantics: a full socket buffer drops the datagram, as the network would.
                    if let Err(e) = self.socket.try_send_to(&t.contents, t.destination) {
                        tracing::debug!(to = %t.destination, "udp send failed: {e}");
                    }
                }
                Output::Event(e) => events.push(e),
            }
        }
    }

    /// The open channel of `kind`, if any.
    pub fn channel_of(&self, kind: DataKind) -> Option<ChannelId> {
        self.channels.iter().find(|(_, k)| **k == kind).map(|(id, _)| *id)
    }

    pub fn has_channels(&self) -> bool {
        self.channel_of(DataKind::Reliable).is_some() && self.channel_of(DataKind::Lossy).is_some()
    }
}
