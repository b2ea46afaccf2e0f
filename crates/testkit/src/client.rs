//! The test client handle: joins a room over `/rtc`, then drives its event loop by message.
//!
//! Requests (publish, connect the publisher, send data) wait for the server with the
//! client's timeout. Everything the loop reports is recorded in [`Observed`]; tests wait on
//! conditions over it with [`Client::wait_until`].

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use livekit_protocol as lk;
use lk::signal_response::Message as Resp;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

use crate::data::DataKind;
use crate::driver::{Command, Driver, Reply, Ws};
use crate::error::ClientError;
use crate::event::{ClientEvent, Observed};
use crate::peer::Peer;
use crate::track::{LocalTrack, RtpOut, TrackSpec};

/// Default bound on every wait: long enough for a loaded CI machine, short enough that a
/// broken server fails the test instead of hanging it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// The signalling protocol level the client announces (what livekit-client 2.x sends).
pub const PROTOCOL: i32 = 17;

/// How a client joins.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Bound on every request and on [`Client::wait_until`].
    pub timeout: Duration,
    pub auto_subscribe: bool,
    pub protocol: i32,
    /// `sdk` query parameter.
    pub sdk: String,
    /// Keep received RTP payloads in [`Observed::rtp`] (counters always run). Turn off for
    /// long-running load.
    pub record_media: bool,
    /// Drop every Nth RTP datagram arriving on the subscriber connection (before decryption),
    /// as a lossy network would; resends (RTX), RTCP, STUN and DTLS always pass. `None`: no
    /// loss.
    pub drop_every_nth_rtp: Option<u32>,
    /// Hold every datagram arriving on the subscriber connection this long before the client
    /// reads it, as a long or bufferbloated downlink would (RTP, RTCP and STUN alike, so the
    /// server's round-trip measure sees it). `None`: delivered at once.
    pub downlink_delay: Option<Duration>,
    /// Address the client's media sockets bind (and offer as their host candidate). Loopback
    /// by default; a server in another network namespace needs this side's veth address.
    pub local_ip: std::net::IpAddr,
    /// UDP, ICE over TCP only, or relayed through the server's TURN server only.
    pub transport: crate::peer::Transport,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            auto_subscribe: true,
            protocol: PROTOCOL,
            sdk: "rust".into(),
            record_media: true,
            drop_every_nth_rtp: None,
            downlink_delay: None,
            local_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            transport: Default::default(),
        }
    }
}

/// A joined participant: publisher and subscriber peer connections over one WebSocket.
pub struct Client {
    join: lk::JoinResponse,
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<ClientEvent>,
    observed: Observed,
    timeout: Duration,
    task: JoinHandle<()>,
}

impl Client {
    /// Join with default options. `url` is the server's `ws://host:port`.
    pub async fn connect(url: &str, token: &str) -> Result<Client, ClientError> {
        Self::connect_with(url, token, ClientOptions::default()).await
    }

    pub async fn connect_with(url: &str, token: &str, opts: ClientOptions) -> Result<Client, ClientError> {
        let url = format!(
            "{}/rtc?access_token={token}&protocol={}&auto_subscribe={}&sdk={}",
            url.trim_end_matches('/'),
            opts.protocol,
            if opts.auto_subscribe { 1 } else { 0 },
            opts.sdk
        );
        let connect = tokio_tungstenite::connect_async(url);
        let (mut ws, _) = tokio::time::timeout(opts.timeout, connect)
            .await
            .map_err(|_| timeout("the WebSocket upgrade", opts.timeout))?
            .map_err(refusal)?;
        let first = tokio::time::timeout(opts.timeout, first_response(&mut ws))
            .await
            .map_err(|_| timeout("the JoinResponse", opts.timeout))??;
        let join = match first {
            Resp::Join(j) => j,
            Resp::Leave(l) => return Err(ClientError::LeftBeforeJoin { reason: l.reason }),
            other => {
                return Err(ClientError::Protocol(format!(
                    "first message is not join: {other:?}"
                )))
            }
        };
        if join.participant.is_none() {
            return Err(ClientError::Protocol("JoinResponse without participant".into()));
        }
        let now = Instant::now();
        // One certificate for both peers: key generation is the expensive part of a peer.
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate();
        let (publisher, subscriber) = if opts.transport == crate::peer::Transport::Turn {
            let turn = crate::peer::TurnServerInfo::from_join(&join)
                .ok_or_else(|| ClientError::Protocol("the join response has no turn: UDP server".into()))?;
            (
                Peer::new_relayed(cert.as_ref(), opts.local_ip, &turn).await?,
                Peer::new_relayed(cert.as_ref(), opts.local_ip, &turn).await?,
            )
        } else {
            (
                Peer::new(cert.as_ref(), opts.local_ip, opts.transport, now)?,
                Peer::new(cert.as_ref(), opts.local_ip, opts.transport, now)?,
            )
        };
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::unbounded_channel();
        let mut driver = Driver::new(ws, publisher, subscriber, command_rx, event_tx);
        driver.drop_every_nth_rtp = opts.drop_every_nth_rtp;
        driver.downlink_delay = opts.downlink_delay;
        if join.ping_interval > 0 {
            driver.ping_every = Some(Duration::from_secs(join.ping_interval as u64));
        }
        let task = tokio::spawn(driver.run());
        Ok(Client {
            join,
            commands,
            events,
            observed: Observed::new(opts.record_media),
            timeout: opts.timeout,
            task,
        })
    }

    pub fn join_response(&self) -> &lk::JoinResponse {
        &self.join
    }

    /// Our `ParticipantInfo` from the JoinResponse.
    pub fn info(&self) -> &lk::ParticipantInfo {
        // Checked in connect_with: a JoinResponse without participant is refused.
        self.join.participant.as_ref().expect("checked at join")
    }

    /// Our `PA_` sid.
    pub fn sid(&self) -> &str {
        &self.info().sid
    }

    pub fn identity(&self) -> &str {
        &self.info().identity
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Everything observed so far (events that arrived are applied first).
    pub fn observed(&mut self) -> &Observed {
        self.pump();
        &self.observed
    }

    /// Take the RTP received so far (by track sid), leaving nothing recorded: for callers
    /// that process packets as they come (the load tester) rather than keep them.
    pub fn take_rtp(&mut self) -> std::collections::HashMap<String, Vec<crate::ReceivedRtp>> {
        self.pump();
        std::mem::take(&mut self.observed.rtp)
    }

    /// Take the keyframe requests received so far for our published tracks (mid, and rid of
    /// a simulcast layer): for publishers that answer them, as libwebrtc does.
    pub fn take_keyframe_requests(&mut self) -> Vec<(str0m::media::Mid, Option<str0m::media::Rid>)> {
        self.pump();
        std::mem::take(&mut self.observed.keyframe_requests)
    }

    fn pump(&mut self) {
        while let Ok(e) = self.events.try_recv() {
            self.observed.apply(e);
        }
    }

    /// Wait, at most the client's timeout, until `cond` holds; `what` names it in the error.
    pub async fn wait_until(
        &mut self,
        what: &str,
        cond: impl FnMut(&Observed) -> bool,
    ) -> Result<(), ClientError> {
        self.wait_until_for(what, self.timeout, cond).await
    }

    /// [`Client::wait_until`] with an explicit bound.
    pub async fn wait_until_for(
        &mut self,
        what: &str,
        limit: Duration,
        mut cond: impl FnMut(&Observed) -> bool,
    ) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            self.pump();
            if cond(&self.observed) {
                return Ok(());
            }
            if let Some(why) = &self.observed.stopped {
                return Err(ClientError::Closed(format!("while waiting for {what}: {why}")));
            }
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => self.observed.apply(e),
                Ok(None) => return Err(ClientError::Closed(format!("while waiting for {what}"))),
                Err(_) => return Err(timeout(what, limit)),
            }
        }
    }

    /// Keep recording events for `d` (e.g. to give a message time to arrive, or not).
    pub async fn settle(&mut self, d: Duration) {
        let _ = self.wait_until_for("nothing", d, |_| false).await;
    }

    /// Negotiate the publisher connection with its `_reliable` and `_lossy` channels; returns
    /// once it is connected and both channels are open.
    pub async fn connect_publisher(&mut self) -> Result<(), ClientError> {
        self.request("the publisher connection", Command::ConnectPublisher)
            .await
    }

    /// AddTrack, wait for TrackPublished, negotiate, wait for the publisher connection.
    pub async fn publish(&mut self, spec: TrackSpec) -> Result<LocalTrack, ClientError> {
        let what = format!("publishing track {}", spec.cid);
        self.request(&what, |reply| Command::Publish(spec, reply)).await
    }

    /// Queue one RTP packet on a published track. Sequence numbers are assigned in order.
    pub fn write_rtp(&self, track: &LocalTrack, rtp: RtpOut) -> Result<(), ClientError> {
        self.command(Command::WriteRtp {
            mid: track.mid,
            rid: None,
            pt: track.pt,
            rtp,
            video: track.kind.is_video(),
        })
    }

    /// Queue one RTP packet on simulcast layer `rid` of a published video track.
    pub fn write_rtp_layer(&self, track: &LocalTrack, rid: &str, rtp: RtpOut) -> Result<(), ClientError> {
        if !track.simulcast.iter().any(|r| r == rid) {
            return Err(ClientError::Usage(format!(
                "track {} has no simulcast layer {rid:?}",
                track.cid
            )));
        }
        self.command(Command::WriteRtp {
            mid: track.mid,
            rid: Some(rid.into()),
            pt: track.pt,
            rtp,
            video: track.kind.is_video(),
        })
    }

    /// Send a data packet on the publisher's channel of `kind`.
    pub async fn send_data(&mut self, kind: DataKind, packet: &lk::DataPacket) -> Result<(), ClientError> {
        let bytes = packet.encode_to_vec();
        self.request("a data channel write", |reply| Command::SendData {
            kind,
            bytes,
            reply,
        })
        .await
    }

    /// Send any signal request as is.
    pub fn send_signal(&self, msg: lk::signal_request::Message) -> Result<(), ClientError> {
        self.command(Command::Signal(msg))
    }

    /// Send `leave`, close the WebSocket and wait for the event loop to stop.
    pub async fn leave(self) -> Result<(), ClientError> {
        self.command(Command::Leave)?;
        tokio::time::timeout(self.timeout, self.task)
            .await
            .map_err(|_| timeout("the client to stop", self.timeout))?
            .map_err(|e| ClientError::Closed(format!("event loop panicked: {e}")))
    }

    fn command(&self, c: Command) -> Result<(), ClientError> {
        self.commands
            .send(c)
            .map_err(|_| ClientError::Closed("event loop is gone".into()))
    }

    async fn request<T>(
        &mut self,
        what: &str,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.command(make(tx))?;
        match tokio::time::timeout(self.timeout, rx).await {
            Err(_) => Err(timeout(what, self.timeout)),
            Ok(Err(_)) => Err(ClientError::Closed(format!("event loop dropped {what}"))),
            Ok(Ok(r)) => r,
        }
    }
}

/// The first server message, skipping WebSocket control frames.
async fn first_response(ws: &mut Ws) -> Result<Resp, ClientError> {
    loop {
        let frame = ws
            .next()
            .await
            .ok_or_else(|| ClientError::Protocol("WebSocket closed before JoinResponse".into()))?
            .map_err(|e| ClientError::Io(format!("websocket: {e}")))?;
        let resp = match frame {
            WsMessage::Binary(b) => lk::SignalResponse::decode(b.as_ref())
                .map_err(|e| ClientError::Protocol(format!("undecodable first frame: {e}")))?,
            WsMessage::Close(c) => {
                return Err(ClientError::Protocol(format!(
                    "WebSocket closed before JoinResponse: {c:?}"
                )))
            }
            _ => continue,
        };
        return resp
            .message
            .ok_or_else(|| ClientError::Protocol("empty first SignalResponse".into()));
    }
}

fn refusal(e: tungstenite::Error) -> ClientError {
    match e {
        tungstenite::Error::Http(resp) => ClientError::Refused {
            status: resp.status().as_u16(),
            body: resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        },
        other => ClientError::Io(format!("websocket connect: {other}")),
    }
}

fn timeout(what: &str, after: Duration) -> ClientError {
    ClientError::Timeout {
        what: what.to_string(),
        after,
    }
}
