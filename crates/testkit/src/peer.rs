//! One client-side peer connection: a str0m `Rtc` in RTP mode and the UDP socket it owns, or
//! (ICE over TCP) an active TCP candidate and the connections it opens.
//!
//! Each peer has its own socket because both of the server's peers for a participant share
//! one server address, so datagrams could not be told apart by source.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use str0m::channel::ChannelId;
use str0m::config::{CryptoProvider, DtlsCert};
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
    /// Relayed through the TURN server of the join response (its first `turn:` UDP URL): the
    /// only local candidate is the relayed address, and every datagram travels as ChannelData
    /// between the client's socket and the TURN server.
    Turn,
}

/// A client peer connection as every Pylon tool makes it: str0m in RTP mode sending Opus and
/// VP8, with a host candidate for `local` (the address its datagrams come from).
pub fn client_rtc(local: SocketAddr, cert: Option<&DtlsCert>, now: Instant) -> Result<Rtc, ClientError> {
    client_rtc_on(local, Transport::Udp, cert, now, false, None, false)
}

/// `client_rtc` with a crypto provider of the caller's: a test that wraps str0m's to learn
/// the SRTP keys its own client negotiated, so it can write SRTCP that str0m's API cannot.
pub fn client_rtc_with_crypto(
    local: SocketAddr,
    crypto: Arc<CryptoProvider>,
    now: Instant,
) -> Result<Rtc, ClientError> {
    client_rtc_on(local, Transport::Udp, None, now, false, Some(crypto), false)
}

/// `client_rtc`, also offering and accepting RFC 2198 redundant audio (RED) for Opus, as
/// libwebrtc does.
pub fn client_rtc_with_red(local: SocketAddr, now: Instant) -> Result<Rtc, ClientError> {
    client_rtc_on(local, Transport::Udp, None, now, true, None, false)
}

/// `client_rtc`, also offering and accepting VP9 (after VP8).
pub fn client_rtc_with_vp9(local: SocketAddr, now: Instant) -> Result<Rtc, ClientError> {
    client_rtc_on(local, Transport::Udp, None, now, false, None, true)
}

fn client_rtc_on(
    local: SocketAddr,
    transport: Transport,
    cert: Option<&DtlsCert>,
    now: Instant,
    red: bool,
    crypto: Option<Arc<CryptoProvider>>,
    vp9: bool,
) -> Result<Rtc, ClientError> {
    let mut builder = Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, red)
        .enable_vp8(true)
        .enable_vp9(vp9);
    if let Some(cert) = cert {
        builder = builder.set_dtls_cert(cert.clone());
    }
    if let Some(crypto) = crypto {
        builder = builder.set_crypto_provider(crypto);
    }
    let mut rtc = builder.build(now);
    let candidate = match transport {
        Transport::Udp => Candidate::host(local, "udp"),
        // For a relay, `local` is the relayed address.
        Transport::Turn => Candidate::relayed(local, local, "udp"),
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
    /// Through TURN: the allocation on the server's TURN server.
    pub turn: Option<TurnPath>,
}

/// Where a relayed peer's TURN server is and its credential (from the join response).
#[derive(Clone, Debug)]
pub struct TurnServerInfo {
    pub server: SocketAddr,
    pub username: String,
    pub password: String,
}

impl TurnServerInfo {
    /// The first `turn:<host>:<port>?transport=udp` URL of the join response.
    pub fn from_join(join: &livekit_protocol::JoinResponse) -> Option<Self> {
        join.ice_servers.iter().find_map(|s| {
            let url = s
                .urls
                .iter()
                .find(|u| u.starts_with("turn:") && u.ends_with("?transport=udp"))?;
            let host_port = url.strip_prefix("turn:")?.strip_suffix("?transport=udp")?;
            Some(TurnServerInfo {
                server: host_port.parse().ok()?,
                username: s.username.clone(),
                password: s.credential.clone(),
            })
        })
    }
}

/// One TURN request and its reply (the first datagram back from the server).
async fn turn_request(socket: &UdpSocket, server: SocketAddr, req: &[u8]) -> Result<Vec<u8>, ClientError> {
    socket.send_to(req, server).await?;
    let mut reply = vec![0u8; RECV_BUF];
    let recv = socket.recv_from(&mut reply);
    let (n, _) = tokio::time::timeout(std::time::Duration::from_secs(5), recv)
        .await
        .map_err(|_| ClientError::Protocol(format!("TURN server {server} did not answer")))??;
    reply.truncate(n);
    Ok(reply)
}

/// A peer's TURN allocation: ChannelData out, ChannelData (or Data indications) in. Channels
/// are bound on the first datagram to each peer; nothing is refreshed, so a relayed peer lives
/// for the allocation's lifetime (10 minutes), which is what tests and benchmarks need.
pub struct TurnPath {
    server: SocketAddr,
    session: pylon_turn::client::Session,
    channels: Vec<(SocketAddr, u16)>,
    buf: Vec<u8>,
    next_tx: u8,
}

impl TurnPath {
    /// Allocate a relay (the 401 challenge, then the authenticated Allocate).
    async fn allocate(
        socket: &UdpSocket,
        info: &TurnServerInfo,
    ) -> Result<(TurnPath, SocketAddr), ClientError> {
        use pylon_turn::stun::{attr, Class, Message};
        let mut session = pylon_turn::client::Session::new(&info.username, &info.password, pylon_turn::REALM);
        let mut buf = Vec::new();
        pylon_turn::client::allocate_unauthenticated(&mut buf, [1; 12]);
        let first = turn_request(socket, info.server, &buf).await?;
        let challenge = Message::parse(&first).map_err(|e| ClientError::Protocol(format!("TURN: {e}")))?;
        session.challenged(&challenge);
        session.allocate(&mut buf, [2; 12]);
        let second = turn_request(socket, info.server, &buf).await?;
        let m = Message::parse(&second).map_err(|e| ClientError::Protocol(format!("TURN: {e}")))?;
        let relayed = match (m.class, m.xor_address(attr::XOR_RELAYED_ADDRESS)) {
            (Class::Success, Some(a)) => a,
            _ => {
                return Err(ClientError::Protocol(format!(
                    "TURN Allocate refused: {:?}",
                    m.error_code()
                )))
            }
        };
        let path = TurnPath {
            server: info.server,
            session,
            channels: Vec::new(),
            buf,
            next_tx: 3,
        };
        Ok((path, relayed))
    }

    fn send(&mut self, socket: &UdpSocket, to: SocketAddr, payload: &[u8]) {
        let channel = match self.channels.iter().find(|(p, _)| *p == to) {
            Some((_, c)) => *c,
            None => {
                let c = 0x4000 + self.channels.len() as u16;
                self.next_tx = self.next_tx.wrapping_add(1);
                self.session
                    .channel_bind(&mut self.buf, [self.next_tx; 12], c, to);
                let _ = socket.try_send_to(&self.buf, self.server);
                self.channels.push((to, c));
                c
            }
        };
        pylon_turn::stun::write_channel_data(&mut self.buf, channel, payload, false);
        if let Err(e) = socket.try_send_to(&self.buf, self.server) {
            tracing::debug!(%to, "turn send failed: {e}");
        }
    }

    /// What a datagram from the TURN server carries: the peer it came from and its payload.
    /// Replies to our own requests (the channel bindings) carry nothing.
    fn unwrap<'a>(&self, source: SocketAddr, buf: &'a [u8]) -> Option<(SocketAddr, &'a [u8])> {
        if source != self.server {
            return None;
        }
        if let Some((number, data)) = pylon_turn::stun::parse_channel_data(buf) {
            let peer = self.channels.iter().find(|(_, c)| *c == number)?.0;
            return Some((peer, data));
        }
        let m = pylon_turn::stun::Message::parse(buf).ok()?;
        if m.method != pylon_turn::stun::Method::Data {
            return None;
        }
        Some((
            m.xor_address(pylon_turn::stun::attr::XOR_PEER_ADDRESS)?,
            m.get(pylon_turn::stun::attr::DATA)?,
        ))
    }
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
            Transport::Turn => {
                return Err(ClientError::Usage(
                    "a relayed peer is made with Peer::new_relayed".into(),
                ));
            }
        };
        let socket = UdpSocket::from_std(std_socket)?;
        let rtc = client_rtc_on(local, transport, cert, now, false, None, false)?;
        Ok(Peer {
            rtc,
            socket,
            local,
            next_timeout: now,
            connected: false,
            channels: HashMap::new(),
            tcp: (transport == Transport::Tcp).then(TcpPath::new),
            turn: None,
        })
    }

    /// A peer whose only candidate is a relay allocated on `turn`.
    pub async fn new_relayed(
        cert: Option<&DtlsCert>,
        ip: IpAddr,
        turn: &TurnServerInfo,
    ) -> Result<Peer, ClientError> {
        let socket = UdpSocket::bind((ip, 0)).await?;
        let (path, relayed) = TurnPath::allocate(&socket, turn).await?;
        let now = Instant::now();
        let rtc = client_rtc_on(relayed, Transport::Turn, cert, now, false, None, false)?;
        Ok(Peer {
            rtc,
            socket,
            local: relayed,
            next_timeout: now,
            connected: false,
            channels: HashMap::new(),
            tcp: None,
            turn: Some(path),
        })
    }

    /// Feed one datagram received on this peer's socket.
    pub fn receive(&mut self, now: Instant, source: SocketAddr, buf: &[u8]) -> Result<(), RtcError> {
        let proto = if self.tcp.is_some() {
            Protocol::Tcp
        } else {
            Protocol::Udp
        };
        let (source, buf) = match &self.turn {
            Some(turn) => match turn.unwrap(source, buf) {
                Some(x) => x,
                None => return Ok(()),
            },
            None => (source, buf),
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
                Output::Transmit(t) if self.turn.is_some() => {
                    if let Some(turn) = &mut self.turn {
                        turn.send(&self.socket, t.destination, &t.contents);
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
