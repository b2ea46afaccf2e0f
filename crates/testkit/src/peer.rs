//! One client-side peer connection: a str0m `Rtc` in RTP mode and the UDP socket it owns.
//!
//! Each peer has its own socket because both of the server's peers for a participant share
//! one server address, so datagrams could not be told apart by source.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use str0m::channel::ChannelId;
use str0m::config::DtlsCert;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcError};
use tokio::net::UdpSocket;

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

/// A client peer connection as every Pylon tool makes it: str0m in RTP mode sending Opus and
/// VP8, with a host candidate for `local` (the address its datagrams come from).
pub fn client_rtc(local: SocketAddr, cert: Option<&DtlsCert>, now: Instant) -> Result<Rtc, ClientError> {
    let mut builder = Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true);
    if let Some(cert) = cert {
        builder = builder.set_dtls_cert(cert.clone());
    }
    let mut rtc = builder.build(now);
    let candidate = Candidate::host(local, "udp")
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
}

impl Peer {
    /// A peer on a fresh socket on `ip` with a host candidate for it. It sends Opus and VP8.
    pub fn new(cert: Option<&DtlsCert>, ip: IpAddr, now: Instant) -> Result<Peer, ClientError> {
        let std_socket = std::net::UdpSocket::bind((ip, 0))?;
        std_socket.set_nonblocking(true)?;
        let local = std_socket.local_addr()?;
        let socket = UdpSocket::from_std(std_socket)?;
        let rtc = client_rtc(local, cert, now)?;
        Ok(Peer {
            rtc,
            socket,
            local,
            next_timeout: now,
            connected: false,
            channels: HashMap::new(),
        })
    }

    /// Feed one datagram received on this peer's socket.
    pub fn receive(&mut self, now: Instant, source: SocketAddr, buf: &[u8]) -> Result<(), RtcError> {
        // Not STUN, DTLS, RTP or RTCP: nothing a peer connection can use.
        let Ok(receive) = Receive::new(Protocol::Udp, source, self.local, buf) else {
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
