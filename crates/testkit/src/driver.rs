//! The client's event loop: one tokio task owning the signalling WebSocket and both peers.
//!
//! It answers the server's subscriber offers, runs the publisher offer/answer cycle for
//! [`Command::Publish`] and [`Command::ConnectPublisher`], writes RTP and data for the
//! handle, and reports everything it sees as [`ClientEvent`]s.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use livekit_protocol as lk;
use lk::signal_request::Message as Req;
use lk::signal_response::Message as Resp;
use prost::Message as _;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, Reliability};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::rtp::{RtpPacket, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, Rtc};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{debug, warn};

use crate::data::{DataKind, ReceivedData};
use crate::error::ClientError;
use crate::event::ClientEvent;
use crate::peer::{PcKind, Peer, RECV_BUF};
use crate::sdp::{self, Msid};
use crate::track::{LocalTrack, ReceivedRtp, RemoteTrack, RtpOut, TrackSpec};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub(crate) type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

/// Datagrams read from one socket per wake-up before the loop polls its peers again, so a
/// flood on one socket cannot starve signalling and timers.
const MAX_DATAGRAMS_PER_WAKE: usize = 64;
/// The msid stream id of every published track.
const STREAM_ID: &str = "pylon-testkit";
/// First RTP sequence number of a published track (below 2^16: no ROC to signal).
const FIRST_SEQ: u64 = 1000;

/// What the handle asks the loop to do.
#[allow(clippy::large_enum_variant)] // few per client; boxing buys nothing here
pub(crate) enum Command {
    /// Negotiate the publisher connection (with its data channels) if not done; reply when
    /// it is connected and both channels are open.
    ConnectPublisher(Reply<()>),
    Publish(TrackSpec, Reply<LocalTrack>),
    WriteRtp {
        mid: Mid,
        rid: Option<Rid>,
        pt: Pt,
        rtp: RtpOut,
        video: bool,
    },
    SendData {
        kind: DataKind,
        bytes: Vec<u8>,
        reply: Reply<()>,
    },
    Signal(Req),
    /// Send `leave`, close the WebSocket and stop.
    Leave,
}

/// A publisher offer waiting for its answer.
struct PendingOffer {
    id: u32,
    offer: SdpPendingOffer,
    tracks: Vec<(Mid, TrackSpec, lk::TrackInfo, Reply<LocalTrack>)>,
}

/// The publisher side's negotiation state.
#[derive(Default)]
struct Publishing {
    last_offer_id: u32,
    /// Someone asked for the publisher connection (data channels) to exist.
    wanted: bool,
    channels_added: bool,
    /// AddTrack sent, waiting for `TrackPublishedResponse`, by cid.
    awaiting_published: HashMap<String, (TrackSpec, Reply<LocalTrack>)>,
    /// Published by the server, not yet in an offer.
    to_add: Vec<(TrackSpec, lk::TrackInfo, Reply<LocalTrack>)>,
    pending: Option<PendingOffer>,
    /// Negotiated, waiting for the connection to come up.
    awaiting_connect: Vec<(LocalTrack, Reply<LocalTrack>)>,
    ready_waiters: Vec<Reply<()>>,
}

#[allow(clippy::large_enum_variant)] // few per client; boxing buys nothing here
enum Wake {
    Command(Option<Command>),
    Signal(Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>),
    Udp(PcKind, std::io::Result<(usize, SocketAddr)>),
    Tcp(PcKind, SocketAddr, Vec<u8>),
    Timer,
}

/// The next frame on a peer's ICE/TCP connections; never, for a UDP peer.
async fn recv_tcp(tcp: &mut Option<crate::peer::TcpPath>) -> Option<(SocketAddr, Vec<u8>)> {
    match tcp {
        Some(t) => t.inbound.recv().await,
        None => std::future::pending().await,
    }
}

impl Wake {
    fn name(&self) -> &'static str {
        match self {
            Wake::Command(_) => "command",
            Wake::Signal(_) => "signal",
            Wake::Udp(..) => "udp",
            Wake::Tcp(..) => "tcp",
            Wake::Timer => "timer",
        }
    }
}

pub(crate) struct Driver {
    ws: Ws,
    ws_open: bool,
    publisher: Peer,
    subscriber: Peer,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<ClientEvent>,
    publishing: Publishing,
    /// From subscriber offers: mid → `mid_to_track_id`, and mid → `a=msid`.
    sub_track_ids: HashMap<String, String>,
    sub_msids: HashMap<String, Msid>,
    /// Subscribed tracks by mid.
    remote: HashMap<Mid, RemoteTrack>,
    /// Next sequence number per published mid.
    seqs: HashMap<(Mid, Option<Rid>), u64>,
    pub_buf: Vec<u8>,
    sub_buf: Vec<u8>,
    /// Reused between polls.
    rtc_events: Vec<Event>,
    /// Simulated loss on the subscriber connection (see `ClientOptions`).
    pub drop_every_nth_rtp: Option<u32>,
    sub_rtp_seen: u32,
    /// Simulated downlink delay on the subscriber connection (see `ClientOptions`), and the
    /// datagrams it holds: when each is due, its source, its bytes.
    pub downlink_delay: Option<std::time::Duration>,
    delayed: VecDeque<(Instant, SocketAddr, Vec<u8>)>,
    /// Pings every `ping_interval` of the join response, as the SDKs do, so that the server
    /// does not end a session that only carries media (`None`: never).
    pub ping_every: Option<std::time::Duration>,
    next_ping: Instant,
}

impl Driver {
    pub fn new(
        ws: Ws,
        publisher: Peer,
        subscriber: Peer,
        commands: mpsc::UnboundedReceiver<Command>,
        events: mpsc::UnboundedSender<ClientEvent>,
    ) -> Self {
        Self {
            ws,
            ws_open: true,
            publisher,
            subscriber,
            commands,
            events,
            publishing: Publishing::default(),
            sub_track_ids: HashMap::new(),
            sub_msids: HashMap::new(),
            remote: HashMap::new(),
            seqs: HashMap::new(),
            pub_buf: vec![0; RECV_BUF],
            sub_buf: vec![0; RECV_BUF],
            drop_every_nth_rtp: None,
            sub_rtp_seen: 0,
            downlink_delay: None,
            delayed: VecDeque::new(),
            rtc_events: Vec::new(),
            ping_every: None,
            next_ping: Instant::now(),
        }
    }

    pub async fn run(mut self) {
        let why = match self.run_loop().await {
            Ok(()) => "client left".to_string(),
            Err(e) => {
                warn!("test client stopped: {e}");
                e.to_string()
            }
        };
        self.fail_waiters(&why);
        self.emit(ClientEvent::Stopped(why));
    }

    async fn run_loop(&mut self) -> Result<(), ClientError> {
        loop {
            self.deliver_delayed()?;
            self.poll_peer(PcKind::Publisher)?;
            self.poll_peer(PcKind::Subscriber)?;
            self.maybe_ping().await?;
            let mut deadline = self.publisher.next_timeout.min(self.subscriber.next_timeout);
            if let Some((due, ..)) = self.delayed.front() {
                deadline = deadline.min(*due);
            }
            if self.ping_every.is_some() && self.ws_open {
                deadline = deadline.min(self.next_ping);
            }
            let wake = tokio::select! {
                c = self.commands.recv() => Wake::Command(c),
                m = self.ws.next(), if self.ws_open => Wake::Signal(m),
                r = self.publisher.socket.recv_from(&mut self.pub_buf) => Wake::Udp(PcKind::Publisher, r),
                r = self.subscriber.socket.recv_from(&mut self.sub_buf) => Wake::Udp(PcKind::Subscriber, r),
                Some((s, f)) = recv_tcp(&mut self.publisher.tcp) => Wake::Tcp(PcKind::Publisher, s, f),
                Some((s, f)) = recv_tcp(&mut self.subscriber.tcp) => Wake::Tcp(PcKind::Subscriber, s, f),
                _ = tokio::time::sleep_until(deadline.into()) => Wake::Timer,
            };
            debug!(wake = wake.name(), "driver wake");
            match wake {
                Wake::Command(None) | Wake::Command(Some(Command::Leave)) => {
                    self.leave().await;
                    return Ok(());
                }
                Wake::Command(Some(c)) => self.on_command(c).await?,
                Wake::Signal(m) => self.on_ws(m).await?,
                Wake::Udp(pc, r) => self.on_udp(pc, r)?,
                Wake::Tcp(pc, source, frame) => {
                    if let Err(e) = self.peer_mut(pc).receive(Instant::now(), source, &frame) {
                        debug!(?pc, "peer refused a frame: {e}");
                    }
                    self.poll_peer(pc)?;
                }
                // The next iteration ticks both peers.
                Wake::Timer => {}
            }
        }
    }

    fn emit(&self, e: ClientEvent) {
        // The handle may be gone; then nobody is interested.
        let _ = self.events.send(e);
    }

    fn peer_mut(&mut self, pc: PcKind) -> &mut Peer {
        match pc {
            PcKind::Publisher => &mut self.publisher,
            PcKind::Subscriber => &mut self.subscriber,
        }
    }

    // ---- UDP and str0m ----

    fn on_udp(&mut self, pc: PcKind, first: std::io::Result<(usize, SocketAddr)>) -> Result<(), ClientError> {
        let mut next = first;
        for _ in 0..MAX_DATAGRAMS_PER_WAKE {
            let (n, source) = match next {
                Ok(x) => x,
                // ICMP errors (a port closed) surface as recv errors; the peer copes.
                Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => {
                    debug!(?pc, "udp receive error: {e}");
                    return Ok(());
                }
            };
            let now = Instant::now();
            if pc == PcKind::Subscriber && self.simulated_loss(n) {
                next = self.subscriber.socket.try_recv_from(&mut self.sub_buf);
                continue;
            }
            if let (PcKind::Subscriber, Some(delay)) = (pc, self.downlink_delay) {
                self.delayed
                    .push_back((now + delay, source, self.sub_buf[..n].to_vec()));
                next = self.subscriber.socket.try_recv_from(&mut self.sub_buf);
                continue;
            }
            let (peer, buf) = match pc {
                PcKind::Publisher => (&mut self.publisher, &self.pub_buf),
                PcKind::Subscriber => (&mut self.subscriber, &self.sub_buf),
            };
            if let Err(e) = peer.receive(now, source, &buf[..n]) {
                debug!(?pc, "peer refused a datagram: {e}");
            }
            // In RTP mode str0m holds one received packet until polled: poll after each
            // datagram or the next one overwrites it.
            self.poll_peer(pc)?;
            let (peer, buf) = match pc {
                PcKind::Publisher => (&self.publisher, &mut self.pub_buf),
                PcKind::Subscriber => (&self.subscriber, &mut self.sub_buf),
            };
            next = peer.socket.try_recv_from(buf);
        }
        Ok(())
    }

    /// Hand the subscriber connection the held datagrams that are due, in arrival order.
    fn deliver_delayed(&mut self) -> Result<(), ClientError> {
        let now = Instant::now();
        while self.delayed.front().is_some_and(|(due, ..)| *due <= now) {
            let Some((_, source, bytes)) = self.delayed.pop_front() else {
                break;
            };
            if let Err(e) = self.subscriber.receive(now, source, &bytes) {
                debug!("subscriber peer refused a delayed datagram: {e}");
            }
            // RTP mode holds one received packet until polled (as in `on_udp`).
            self.poll_peer(PcKind::Subscriber)?;
        }
        Ok(())
    }

    /// Whether to drop this subscriber datagram (of length `n`, in `sub_buf`): every Nth RTP
    /// packet (version 2, payload type outside RTCP's 72..=79 range after the marker bit).
    fn simulated_loss(&mut self, n: usize) -> bool {
        let Some(every) = self.drop_every_nth_rtp else {
            return false;
        };
        let b = &self.sub_buf[..n];
        let is_rtp = n >= 12 && b[0] >> 6 == 2 && !(72..=79).contains(&(b[1] & 0x7f));
        // Resends pass, so that each loss is repaired by the first answer to its NACK (how
        // soon a client asks again is its own business).
        let resend = |pt: u8| {
            let codecs = self.subscriber.rtc.codec_config();
            codecs.params().iter().any(|p| p.resend() == Some(pt.into()))
        };
        if !is_rtp || resend(b[1] & 0x7f) {
            return false;
        }
        self.sub_rtp_seen += 1;
        self.sub_rtp_seen.is_multiple_of(every.max(1))
    }

    fn poll_peer(&mut self, pc: PcKind) -> Result<(), ClientError> {
        let mut events = std::mem::take(&mut self.rtc_events);
        let peer = self.peer_mut(pc);
        let polled = peer.tick(Instant::now()).and_then(|_| peer.poll(&mut events));
        for e in events.drain(..) {
            self.on_rtc_event(pc, e);
        }
        self.rtc_events = events;
        polled.map_err(rtc_failed(pc))
    }

    fn on_rtc_event(&mut self, pc: PcKind, e: Event) {
        match e {
            Event::Connected => {
                self.peer_mut(pc).connected = true;
                self.emit(ClientEvent::Connected(pc));
                self.check_publisher_ready();
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.peer_mut(pc).connected = false;
                self.emit(ClientEvent::Disconnected(pc));
            }
            Event::ChannelOpen(id, label) => {
                let Some(kind) = DataKind::from_label(&label) else {
                    debug!(?pc, label, "ignoring unknown data channel");
                    return;
                };
                self.peer_mut(pc).channels.insert(id, kind);
                self.emit(ClientEvent::ChannelOpen(pc, kind));
                self.check_publisher_ready();
            }
            Event::ChannelClose(id) => {
                self.peer_mut(pc).channels.remove(&id);
            }
            Event::ChannelData(d) => {
                let Some(kind) = self.peer_mut(pc).channels.get(&d.id).copied() else {
                    return;
                };
                match lk::DataPacket::decode(d.data.as_slice()) {
                    Ok(packet) => self.emit(ClientEvent::Data(ReceivedData { kind, pc, packet })),
                    Err(e) => warn!(?pc, ?kind, "undecodable data packet from the server: {e}"),
                }
            }
            Event::RtpPacket(pkt) if pc == PcKind::Subscriber => self.on_rtp(pkt),
            Event::MediaAdded(m) if pc == PcKind::Subscriber => {
                let track = self.remote_track(m.mid, m.kind);
                self.remote.insert(m.mid, track.clone());
                self.emit(ClientEvent::TrackSubscribed(track));
            }
            Event::MediaChanged(m) if pc == PcKind::Subscriber => {
                if m.direction == Direction::Inactive {
                    if let Some(t) = self.remote.get_mut(&m.mid) {
                        t.active = false;
                    }
                    self.emit(ClientEvent::TrackUnsubscribed(m.mid));
                } else if m.direction.is_receiving() {
                    let kind = self.subscriber.rtc.media(m.mid).map(|x| x.kind());
                    let track = self.remote_track(m.mid, kind.unwrap_or(MediaKind::Audio));
                    self.remote.insert(m.mid, track.clone());
                    self.emit(ClientEvent::TrackSubscribed(track));
                }
            }
            Event::KeyframeRequest(r) if pc == PcKind::Publisher => {
                self.emit(ClientEvent::KeyframeRequest(r.mid, r.rid));
            }
            _ => {}
        }
    }

    /// What the server's offers said about `mid`: `mid_to_track_id` first, then the msid.
    fn remote_track(&self, mid: Mid, kind: MediaKind) -> RemoteTrack {
        let key = mid.to_string();
        let msid = self.sub_msids.get(&key);
        let participant_sid = msid
            .and_then(|m| m.stream.split('|').next())
            .unwrap_or_default()
            .to_string();
        let from_msid = msid.map(|m| {
            let second = m.stream.split('|').nth(1).unwrap_or_default();
            if second.starts_with("TR_") {
                second.to_string()
            } else {
                m.track.clone()
            }
        });
        let track_sid = self
            .sub_track_ids
            .get(&key)
            .cloned()
            .or(from_msid)
            .unwrap_or_default();
        RemoteTrack {
            mid,
            kind,
            track_sid,
            participant_sid,
            active: true,
        }
    }

    fn on_rtp(&mut self, pkt: RtpPacket) {
        let ssrc = pkt.header.ssrc;
        let Some(mid) = self.subscriber.rtc.direct_api().stream_rx(&ssrc).map(|s| s.mid()) else {
            return;
        };
        let track_sid = self
            .remote
            .get(&mid)
            .map(|t| t.track_sid.clone())
            .unwrap_or_default();
        self.emit(ClientEvent::Rtp(ReceivedRtp {
            track_sid,
            mid,
            pt: pkt.header.payload_type,
            seq: *pkt.seq_no,
            timestamp: pkt.header.timestamp,
            marker: pkt.header.marker,
            payload: pkt.payload,
            received_at: std::time::SystemTime::now(),
        }));
    }

    // ---- commands from the handle ----

    async fn on_command(&mut self, c: Command) -> Result<(), ClientError> {
        match c {
            Command::ConnectPublisher(reply) => {
                self.publishing.wanted = true;
                self.publishing.ready_waiters.push(reply);
                self.maybe_offer().await?;
                self.check_publisher_ready();
            }
            Command::Publish(spec, reply) => {
                if self.publishing.awaiting_published.contains_key(&spec.cid) {
                    let _ = reply.send(Err(ClientError::Usage(format!(
                        "a track with cid {} is already being published",
                        spec.cid
                    ))));
                    return Ok(());
                }
                self.send(Req::AddTrack(spec.add_track_request())).await?;
                self.publishing
                    .awaiting_published
                    .insert(spec.cid.clone(), (spec, reply));
            }
            Command::WriteRtp {
                mid,
                rid,
                pt,
                rtp,
                video,
            } => self.write_rtp(mid, rid, pt, rtp, video),
            Command::SendData { kind, bytes, reply } => {
                let _ = reply.send(self.send_data(kind, &bytes));
            }
            Command::Signal(msg) => self.send(msg).await?,
            // Handled by the loop.
            Command::Leave => {}
        }
        Ok(())
    }

    fn write_rtp(&mut self, mid: Mid, rid: Option<Rid>, pt: Pt, rtp: RtpOut, video: bool) {
        let next = self.seqs.entry((mid, rid)).or_insert(FIRST_SEQ);
        let seq = *next;
        *next += 1;
        let mut api = self.publisher.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, rid) else {
            warn!(%mid, "no send stream for a published track; packet dropped");
            return;
        };
        let write = RtpWrite::new(pt, seq.into(), rtp.timestamp, Instant::now(), rtp.payload)
            .marker(rtp.marker)
            .nackable(video);
        tx.write_rtp(write);
    }

    fn send_data(&mut self, kind: DataKind, bytes: &[u8]) -> Result<(), ClientError> {
        let Some(id) = self.publisher.channel_of(kind) else {
            return Err(ClientError::Usage(format!(
                "publisher channel {} is not open (call connect_publisher first)",
                kind.label()
            )));
        };
        let Some(mut channel) = self.publisher.rtc.channel(id) else {
            return Err(ClientError::Closed(format!("channel {} is gone", kind.label())));
        };
        match channel.write(true, bytes) {
            Ok(true) => Ok(()),
            Ok(false) => Err(ClientError::Io(format!(
                "channel {} buffer is full",
                kind.label()
            ))),
            Err(e) => Err(ClientError::Io(format!("channel {} write: {e}", kind.label()))),
        }
    }

    async fn leave(&mut self) {
        if !self.ws_open {
            return;
        }
        let leave = lk::LeaveRequest {
            reason: lk::DisconnectReason::ClientInitiated as i32,
            action: lk::leave_request::Action::Disconnect as i32,
            ..Default::default()
        };
        let _ = self.send(Req::Leave(leave)).await;
        let _ = self.ws.close(None).await;
        self.ws_open = false;
    }

    // ---- signalling ----

    async fn maybe_ping(&mut self) -> Result<(), ClientError> {
        let Some(every) = self.ping_every else {
            return Ok(());
        };
        let now = Instant::now();
        if !self.ws_open || now < self.next_ping {
            return Ok(());
        }
        self.next_ping = now + every;
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.send(Req::PingReq(lk::Ping { timestamp, rtt: 0 })).await
    }

    async fn send(&mut self, msg: Req) -> Result<(), ClientError> {
        let req = lk::SignalRequest { message: Some(msg) };
        self.ws
            .send(WsMessage::Binary(req.encode_to_vec().into()))
            .await
            .map_err(|e| ClientError::Io(format!("websocket send: {e}")))
    }

    async fn on_ws(
        &mut self,
        m: Option<Result<WsMessage, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), ClientError> {
        let resp = match m {
            Some(Ok(WsMessage::Binary(b))) => lk::SignalResponse::decode(b.as_ref())
                .map_err(|e| ClientError::Protocol(format!("undecodable signal frame: {e}")))?,
            Some(Ok(WsMessage::Text(t))) => serde_json::from_str::<lk::SignalResponse>(t.as_str())
                .map_err(|e| ClientError::Protocol(format!("undecodable JSON signal frame: {e}")))?,
            Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => {
                self.ws_open = false;
                self.fail_waiters("signalling connection closed");
                self.emit(ClientEvent::SignalClosed);
                return Ok(());
            }
            Some(Ok(_)) => return Ok(()),
        };
        match resp.message {
            Some(msg) => self.on_signal(msg).await,
            None => Ok(()),
        }
    }

    async fn on_signal(&mut self, msg: Resp) -> Result<(), ClientError> {
        match msg {
            Resp::Offer(sd) => self.on_subscriber_offer(sd).await?,
            Resp::Answer(sd) => self.on_publisher_answer(sd).await?,
            Resp::Trickle(t) => self.on_trickle(&t),
            Resp::Update(u) => self.emit(ClientEvent::ParticipantUpdate(u.participants)),
            Resp::Leave(l) => self.emit(ClientEvent::Leave(l)),
            Resp::TrackPublished(tp) => self.on_track_published(tp).await?,
            Resp::RequestResponse(rr) => {
                self.on_request_response(&rr);
                self.emit(ClientEvent::Signal(Box::new(Resp::RequestResponse(rr))));
            }
            other => self.emit(ClientEvent::Signal(Box::new(other))),
        }
        Ok(())
    }

    async fn on_subscriber_offer(&mut self, sd: lk::SessionDescription) -> Result<(), ClientError> {
        let offer = SdpOffer::from_sdp_string(&sd.sdp)
            .map_err(|e| ClientError::Protocol(format!("unparseable subscriber offer: {e}")))?;
        self.sub_msids.extend(sdp::msids(&sd.sdp));
        self.sub_track_ids.extend(sd.mid_to_track_id);
        let answer = self
            .subscriber
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| ClientError::Protocol(format!("subscriber offer refused: {e}")))?;
        let answer = lk::SessionDescription {
            r#type: "answer".into(),
            sdp: answer.to_sdp_string(),
            id: sd.id,
            mid_to_track_id: HashMap::new(),
        };
        self.send(Req::Answer(answer)).await
    }

    async fn on_publisher_answer(&mut self, sd: lk::SessionDescription) -> Result<(), ClientError> {
        let Some(pending) = self.publishing.pending.take() else {
            return Err(ClientError::Protocol(format!(
                "publisher answer id {} without an offer",
                sd.id
            )));
        };
        if sd.id != pending.id {
            return Err(ClientError::Protocol(format!(
                "publisher answer id {} does not echo offer id {}",
                sd.id, pending.id
            )));
        }
        let answer = SdpAnswer::from_sdp_string(&sd.sdp)
            .map_err(|e| ClientError::Protocol(format!("unparseable publisher answer: {e}")))?;
        self.publisher
            .rtc
            .sdp_api()
            .accept_answer(pending.offer, answer)
            .map_err(|e| ClientError::Protocol(format!("publisher answer refused: {e}")))?;
        for (mid, spec, info, reply) in pending.tracks {
            let Some(pt) = negotiated_pt(&self.publisher.rtc, mid, spec.kind) else {
                let _ = reply.send(Err(ClientError::Protocol(format!(
                    "answer for mid {mid} accepts neither Opus nor VP8"
                ))));
                continue;
            };
            let track = LocalTrack {
                cid: spec.cid,
                sid: info.sid.clone(),
                kind: spec.kind,
                mid,
                pt,
                info,
                simulcast: spec.simulcast,
            };
            self.publishing.awaiting_connect.push((track, reply));
        }
        self.check_publisher_ready();
        self.maybe_offer().await
    }

    fn on_trickle(&mut self, t: &lk::TrickleRequest) {
        let init = serde_json::from_str::<serde_json::Value>(&t.candidate_init).ok();
        let Some(candidate) = init.as_ref().and_then(|v| v.get("candidate")?.as_str()) else {
            warn!("trickle with malformed candidate JSON: {:?}", t.candidate_init);
            return;
        };
        if candidate.is_empty() {
            return;
        }
        let Ok(c) = Candidate::from_sdp_string(candidate) else {
            debug!("unusable trickled candidate {candidate:?}");
            return;
        };
        let pc = if t.target == lk::SignalTarget::Subscriber as i32 {
            PcKind::Subscriber
        } else {
            PcKind::Publisher
        };
        self.peer_mut(pc).rtc.add_remote_candidate(c);
    }

    async fn on_track_published(&mut self, tp: lk::TrackPublishedResponse) -> Result<(), ClientError> {
        let Some((spec, reply)) = self.publishing.awaiting_published.remove(&tp.cid) else {
            self.emit(ClientEvent::Signal(Box::new(Resp::TrackPublished(tp))));
            return Ok(());
        };
        let Some(info) = tp.track else {
            let _ = reply.send(Err(ClientError::Protocol(
                "TrackPublishedResponse without track info".into(),
            )));
            return Ok(());
        };
        self.publishing.to_add.push((spec, info, reply));
        self.maybe_offer().await
    }

    fn on_request_response(&mut self, rr: &lk::RequestResponse) {
        if rr.reason == lk::request_response::Reason::Ok as i32 {
            return;
        }
        if let Some(lk::request_response::Request::AddTrack(req)) = &rr.request {
            if let Some((_, reply)) = self.publishing.awaiting_published.remove(&req.cid) {
                let _ = reply.send(Err(ClientError::NotAllowed(rr.message.clone())));
            }
        }
    }

    /// Make a publisher offer if something waits for one and no offer is outstanding.
    async fn maybe_offer(&mut self) -> Result<(), ClientError> {
        let p = &mut self.publishing;
        if p.pending.is_some() || (p.to_add.is_empty() && (p.channels_added || !p.wanted)) {
            return Ok(());
        }
        let mut api = self.publisher.rtc.sdp_api();
        if !p.channels_added {
            p.channels_added = true;
            api.add_channel_with_config(ChannelConfig {
                label: DataKind::Reliable.label().into(),
                ordered: true,
                reliability: Reliability::Reliable,
                ..Default::default()
            });
            api.add_channel_with_config(ChannelConfig {
                label: DataKind::Lossy.label().into(),
                ordered: false,
                reliability: Reliability::MaxRetransmits { retransmits: 0 },
                ..Default::default()
            });
        }
        let mut tracks = Vec::new();
        for (spec, info, reply) in p.to_add.drain(..) {
            let simulcast = (!spec.simulcast.is_empty()).then(|| {
                let mut s = Simulcast::new();
                for rid in &spec.simulcast {
                    s.add_send_layer(SimulcastLayer::new(rid));
                }
                s
            });
            let mid = api.add_media(
                spec.kind,
                Direction::SendOnly,
                Some(STREAM_ID.into()),
                Some(spec.cid.clone()),
                simulcast,
            );
            tracks.push((mid, spec, info, reply));
        }
        let Some((offer, pending)) = api.apply() else {
            for (_, _, _, reply) in tracks {
                let _ = reply.send(Err(ClientError::Usage("nothing to negotiate".into())));
            }
            return Ok(());
        };
        p.last_offer_id += 1;
        let id = p.last_offer_id;
        p.pending = Some(PendingOffer {
            id,
            offer: pending,
            tracks,
        });
        let sd = lk::SessionDescription {
            r#type: "offer".into(),
            sdp: offer.to_sdp_string(),
            id,
            mid_to_track_id: HashMap::new(),
        };
        self.send(Req::Offer(sd)).await
    }

    fn check_publisher_ready(&mut self) {
        if !self.publisher.connected {
            return;
        }
        for (track, reply) in self.publishing.awaiting_connect.drain(..) {
            let _ = reply.send(Ok(track));
        }
        if self.publisher.has_channels() {
            for reply in self.publishing.ready_waiters.drain(..) {
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Fail every request still waiting for the server.
    fn fail_waiters(&mut self, why: &str) {
        fn closed<T>(why: &str) -> Result<T, ClientError> {
            Err(ClientError::Closed(why.to_string()))
        }
        let p = &mut self.publishing;
        for (_, (_, reply)) in p.awaiting_published.drain() {
            let _ = reply.send(closed(why));
        }
        for (_, _, reply) in p.to_add.drain(..) {
            let _ = reply.send(closed(why));
        }
        if let Some(pending) = p.pending.take() {
            for (_, _, _, reply) in pending.tracks {
                let _ = reply.send(closed(why));
            }
        }
        for (_, reply) in p.awaiting_connect.drain(..) {
            let _ = reply.send(closed(why));
        }
        for reply in p.ready_waiters.drain(..) {
            let _ = reply.send(closed(why));
        }
    }
}

/// The payload type the answer accepted for our codec of `kind` on `mid`.
fn negotiated_pt(rtc: &Rtc, mid: Mid, kind: MediaKind) -> Option<Pt> {
    let want = match kind {
        MediaKind::Audio => Codec::Opus,
        MediaKind::Video => Codec::Vp8,
    };
    let cfg = rtc.codec_config();
    let ours = |pt: &Pt| cfg.find(|p| p.pt() == *pt && p.spec().codec == want).is_some();
    let media = rtc.media(mid)?;
    media
        .remote_pts()
        .iter()
        .copied()
        .find(|pt| ours(pt))
        .or_else(|| cfg.find(|p| p.spec().codec == want).map(|p| p.pt()))
}

fn rtc_failed(pc: PcKind) -> impl Fn(str0m::RtcError) -> ClientError {
    move |e| ClientError::Closed(format!("{pc:?} peer connection failed: {e}"))
}
