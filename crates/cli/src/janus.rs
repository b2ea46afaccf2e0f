//! Janus videoroom mode of `pylon load-test` (`--janus`): the same shape of load, sent to a
//! Janus 1.x server through its WebSocket API, so the two SFUs can be measured side by side.
//!
//! Each participant is one Janus session on its own WebSocket, with one handle that publishes
//! (audio + simulcast VP8, one peer connection) and one that subscribes to every other
//! publisher in the room (Janus 1.x multistream: one peer connection for all feeds). Media is
//! generated exactly as in LiveKit mode (`load_test::stamp`/`video_frame`), so subscribers
//! measure latency and loss the same way.
//!
//! Janus learns publishers only when they join, so this mode joins in two passes: every
//! publisher first, then every participant's subscription to the room's publishers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Rtc};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use pylon_testkit::Peer;

use crate::load_test::{self, LoadTestArgs, MediaPlan, TrackStats};

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How long one Janus request (and the plugin event it triggers) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Janus drops a session after 60 s without traffic.
const KEEPALIVE: Duration = Duration::from_secs(20);
const SIMULCAST_RIDS: [&str; 3] = ["q", "h", "f"];
const FIRST_SEQ: u64 = 1000;

/// A Janus session on one WebSocket. Requests are sequential: the reply (and the plugin event
/// a request triggers) carry the request's transaction id; anything else read meanwhile is
/// kept for the media loop (trickled candidates).
struct Session {
    ws: Ws,
    id: u64,
    next_tx: u64,
    trickled: Vec<(u64, String)>,
}

impl Session {
    async fn connect(url: &str) -> anyhow::Result<Session> {
        let mut req = url.into_client_request()?;
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "janus-protocol".parse()?);
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .with_context(|| format!("connecting to Janus at {url}"))?;
        let mut s = Session {
            ws,
            id: 0,
            next_tx: 0,
            trickled: Vec::new(),
        };
        let r = s.request(json!({"janus": "create"}), false).await?;
        s.id = r["data"]["id"].as_u64().context("create: no session id")?;
        Ok(s)
    }

    async fn send(&mut self, mut msg: Value) -> anyhow::Result<String> {
        self.next_tx += 1;
        let tx = format!("t{}", self.next_tx);
        msg["transaction"] = json!(tx);
        if self.id != 0 {
            msg["session_id"] = json!(self.id);
        }
        self.ws.send(Message::text(msg.to_string())).await?;
        Ok(tx)
    }

    /// Send `msg`; return the reply with its transaction, or with `plugin_event` the plugin's
    /// asynchronous event for it (after Janus's `ack`).
    async fn request(&mut self, msg: Value, plugin_event: bool) -> anyhow::Result<Value> {
        let what = msg["body"]["request"]
            .as_str()
            .or(msg["janus"].as_str())
            .unwrap_or("request")
            .to_string();
        let tx = self.send(msg).await?;
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| anyhow!("Janus did not answer {what} within {REQUEST_TIMEOUT:?}"))?
                .ok_or_else(|| anyhow!("Janus closed the WebSocket during {what}"))??;
            let Message::Text(text) = m else { continue };
            let v: Value = serde_json::from_str(&text)?;
            self.note_trickle(&v);
            if v["transaction"].as_str() != Some(tx.as_str()) {
                continue;
            }
            match v["janus"].as_str() {
                Some("ack") if plugin_event => continue,
                Some("error") => bail!("Janus refused {what}: {}", v["error"]),
                _ => {}
            }
            if let Some(err) = v["plugindata"]["data"]["error"].as_str() {
                bail!("videoroom refused {what}: {err}");
            }
            return Ok(v);
        }
    }

    async fn attach(&mut self) -> anyhow::Result<u64> {
        let r = self
            .request(
                json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
                false,
            )
            .await?;
        r["data"]["id"].as_u64().context("attach: no handle id")
    }

    async fn message(&mut self, handle: u64, body: Value, jsep: Option<Value>) -> anyhow::Result<Value> {
        let mut msg = json!({"janus": "message", "handle_id": handle, "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        self.request(msg, true).await
    }

    async fn end_of_candidates(&mut self, handle: u64) -> anyhow::Result<()> {
        self.send(json!({"janus": "trickle", "handle_id": handle, "candidate": {"completed": true}}))
            .await?;
        Ok(())
    }

    fn note_trickle(&mut self, v: &Value) {
        if v["janus"] == "trickle" {
            if let (Some(h), Some(c)) = (v["sender"].as_u64(), v["candidate"]["candidate"].as_str()) {
                self.trickled.push((h, c.to_string()));
            }
        }
    }
}

/// A client peer connection to Janus on `ip`, with its own DTLS certificate.
fn new_peer(ip: IpAddr) -> anyhow::Result<Peer> {
    Ok(Peer::new(None, ip, Default::default(), Instant::now())?)
}

/// Tick `peer` and poll it: datagrams go out, events are appended to `events`, and
/// `Connected` marks the peer connected. A failed peer is retried a second later.
fn service(peer: &mut Peer, events: &mut Vec<Event>) {
    let now = Instant::now();
    let from = events.len();
    if peer.tick(now).and_then(|()| peer.poll(events)).is_err() {
        peer.next_timeout = now + Duration::from_secs(1);
    }
    if events[from..].iter().any(|e| matches!(e, Event::Connected)) {
        peer.connected = true;
    }
}

/// Feed the datagrams already waiting on `peer`'s socket, without blocking, then service it.
fn pump(peer: &mut Peer, buf: &mut [u8], events: &mut Vec<Event>) {
    while let Ok((n, from)) = peer.socket.try_recv_from(buf) {
        let _ = peer.receive(Instant::now(), from, &buf[..n]);
    }
    service(peer, events);
}

/// Give the subscriber the candidates Janus trickled so far (the publisher's come in its
/// answer).
fn apply_trickled(session: &mut Session, subscriber: Option<&mut Peer>) {
    let trickled = std::mem::take(&mut session.trickled);
    let Some(peer) = subscriber else { return };
    for c in trickled
        .iter()
        .filter_map(|(_, c)| Candidate::from_sdp_string(c).ok())
    {
        peer.rtc.add_remote_candidate(c);
    }
}

/// A publisher's peer connection and what it sends on: (mid, payload type) per kind.
struct Sender {
    peer: Peer,
    audio: (Mid, Pt),
    video: Option<(Mid, Pt)>,
}

/// A publishing participant after its first pass.
struct Publishing {
    session: Session,
    sender: Sender,
    feed: u64,
}

/// One participant between the two join passes.
struct Member {
    publishing: Option<Publishing>,
    /// The session of a participant that only subscribes.
    session: Option<Session>,
    /// Time its first pass took.
    took: Duration,
}

fn negotiated_pt(rtc: &Rtc, mid: Mid, codec: Codec) -> anyhow::Result<Pt> {
    rtc.media(mid)
        .and_then(|m| {
            m.remote_pts().iter().copied().find(|pt| {
                rtc.codec_config()
                    .find(|c| c.pt() == *pt)
                    .is_some_and(|c| c.spec().codec == codec)
            })
        })
        .or_else(|| {
            rtc.codec_config()
                .find(|c| c.spec().codec == codec)
                .map(|c| c.pt())
        })
        .with_context(|| format!("no {codec:?} payload type negotiated"))
}

async fn publish(args: &LoadTestArgs, room: u64, identity: &str) -> anyhow::Result<Publishing> {
    let mut session = Session::connect(&args.url).await?;
    let handle = session.attach().await?;
    let joined = session
        .message(
            handle,
            json!({"request": "join", "ptype": "publisher", "room": room, "display": identity}),
            None,
        )
        .await?;
    let feed = joined["plugindata"]["data"]["id"]
        .as_u64()
        .context("join: no publisher id")?;
    let mut peer = new_peer(args.local_ip)?;
    let mut api = peer.rtc.sdp_api();
    let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let video = (!args.audio_only).then(|| {
        let simulcast = (!args.no_simulcast).then(|| {
            let mut s = Simulcast::new();
            for rid in SIMULCAST_RIDS {
                s.add_send_layer(SimulcastLayer::new(rid));
            }
            s
        });
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast)
    });
    let (offer, pending) = api.apply().context("nothing to offer")?;
    let r = session
        .message(
            handle,
            json!({"request": "publish", "audio": true, "video": video.is_some(), "bitrate": 0}),
            Some(json!({"type": "offer", "sdp": offer.to_sdp_string()})),
        )
        .await?;
    session.end_of_candidates(handle).await?;
    let sdp = r["jsep"]["sdp"].as_str().context("publish: no answer")?;
    let answer = SdpAnswer::from_sdp_string(sdp)?;
    peer.rtc.sdp_api().accept_answer(pending, answer)?;
    let audio_pt = negotiated_pt(&peer.rtc, audio, Codec::Opus)?;
    let video = match video {
        Some(mid) => Some((mid, negotiated_pt(&peer.rtc, mid, Codec::Vp8)?)),
        None => None,
    };
    Ok(Publishing {
        session,
        sender: Sender {
            peer,
            audio: (audio, audio_pt),
            video,
        },
        feed,
    })
}

/// Subscribe `session` to `feeds` on a new handle; returns the connected subscriber peer.
async fn subscribe(
    args: &LoadTestArgs,
    session: &mut Session,
    room: u64,
    feeds: &[u64],
) -> anyhow::Result<Peer> {
    let handle = session.attach().await?;
    // Pylon forwards the best layer; ask Janus for the same. Janus 1.1 numbers the rids in
    // the order they are offered and treats the first as the best, so with the LiveKit SDKs'
    // order (`q;h;f`, lowest first) its substream 0 is our top layer `f` (measured: substream 0
    // arrives at the top layer's rate, Janus's default substream at the lowest's).
    let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f, "substream": 0})).collect();
    let r = session
        .message(
            handle,
            json!({"request": "join", "ptype": "subscriber", "room": room, "streams": streams}),
            None,
        )
        .await?;
    let sdp = r["jsep"]["sdp"].as_str().context("subscriber join: no offer")?;
    let mut peer = new_peer(args.local_ip)?;
    let answer = peer.rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(sdp)?)?;
    session
        .message(
            handle,
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": answer.to_sdp_string()})),
        )
        .await?;
    session.end_of_candidates(handle).await?;
    Ok(peer)
}

/// Everything one participant does after joining: send its media (if it publishes), receive,
/// keep the session alive. Returns what it received per media section.
struct Running {
    session: Session,
    publisher: Option<Sender>,
    subscriber: Option<Peer>,
}

async fn run_participant(
    mut p: Running,
    plan: MediaPlan,
    start: Instant,
    until: Instant,
    received: Arc<AtomicU64>,
) -> HashMap<Mid, TrackStats> {
    let mut stats: HashMap<Mid, TrackStats> = HashMap::new();
    let mut seqs: HashMap<(Mid, Option<Rid>), u64> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    let (mut audio_sent, mut frames_sent) = (0u64, 0u64);
    let mut pub_buf = vec![0u8; 2048];
    let mut sub_buf = vec![0u8; 2048];
    let mut events = Vec::new();
    apply_trickled(&mut p.session, p.subscriber.as_mut());
    while Instant::now() < until + Duration::from_millis(500) {
        let next = [
            p.publisher.as_ref().map(|s| s.peer.next_timeout),
            p.subscriber.as_ref().map(|peer| peer.next_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(|| Instant::now() + Duration::from_millis(50))
        .max(Instant::now());
        tokio::select! {
            r = async { p.publisher.as_ref().unwrap().peer.socket.recv_from(&mut pub_buf).await }, if p.publisher.is_some() => {
                if let (Ok((n, from)), Some(s)) = (r, p.publisher.as_mut()) {
                    let _ = s.peer.receive(Instant::now(), from, &pub_buf[..n]);
                }
            }
            r = async { p.subscriber.as_ref().unwrap().socket.recv_from(&mut sub_buf).await }, if p.subscriber.is_some() => {
                if let (Ok((n, from)), Some(peer)) = (r, p.subscriber.as_mut()) {
                    let _ = peer.receive(Instant::now(), from, &sub_buf[..n]);
                }
            }
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = tick.tick() => {
                if let (Some(Sender { peer, audio, video }), true) = (p.publisher.as_mut(), Instant::now() < until) {
                    let elapsed = start.elapsed();
                    let now = Instant::now();
                    let mut api = peer.rtc.direct_api();
                    for rtp in plan.audio_due(elapsed, &mut audio_sent) {
                        let seq = seqs.entry((audio.0, None)).or_insert(FIRST_SEQ);
                        if let Some(tx) = api.stream_tx_by_mid(audio.0, None) {
                            tx.write_rtp(RtpWrite::new(audio.1, (*seq).into(), rtp.timestamp, now, rtp.payload).marker(rtp.marker));
                        }
                        *seq += 1;
                    }
                    if let Some((mid, pt)) = video {
                        for (layer, rtp) in plan.video_due(elapsed, &mut frames_sent) {
                            let rid = (!plan.single_layer()).then(|| Rid::from(SIMULCAST_RIDS[layer]));
                            let seq = seqs.entry((*mid, rid)).or_insert(FIRST_SEQ);
                            if let Some(tx) = api.stream_tx_by_mid(*mid, rid) {
                                tx.write_rtp(RtpWrite::new(*pt, (*seq).into(), rtp.timestamp, now, rtp.payload).marker(rtp.marker).nackable(true));
                            }
                            *seq += 1;
                        }
                    }
                }
            }
            m = p.session.ws.next() => {
                if let Some(Ok(Message::Text(text))) = m {
                    if let Ok(v) = serde_json::from_str::<Value>(&text) {
                        p.session.note_trickle(&v);
                    }
                    apply_trickled(&mut p.session, p.subscriber.as_mut());
                }
            }
            _ = keepalive.tick() => {
                let _ = p.session.send(json!({"janus": "keepalive"})).await;
            }
        }
        if let Some(s) = p.publisher.as_mut() {
            service(&mut s.peer, &mut events);
            events.clear();
        }
        if let Some(peer) = p.subscriber.as_mut() {
            service(peer, &mut events);
            for e in events.drain(..) {
                let Event::RtpPacket(pkt) = e else { continue };
                let Some(mid) = peer.rtc.direct_api().stream_rx(&pkt.header.ssrc).map(|s| s.mid()) else {
                    continue;
                };
                let s = stats.entry(mid).or_default();
                s.video = peer.rtc.media(mid).is_some_and(|m| m.kind() == MediaKind::Video);
                s.add_packet(*pkt.seq_no, &pkt.payload, SystemTime::now());
                received.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let _ = p.session.send(json!({"janus": "destroy"})).await;
    let _ = p.session.ws.close(None).await;
    stats
}

/// Create the room on Janus: no publisher limit, no bitrate cap, VP8 and Opus.
async fn create_room(args: &LoadTestArgs, room: u64) -> anyhow::Result<()> {
    let mut s = Session::connect(&args.url).await?;
    let h = s.attach().await?;
    let body = json!({
        "request": "create", "room": room, "publishers": args.publishers.max(1) + 1,
        "bitrate": 0, "fir_freq": 2, "audiocodec": "opus", "videocodec": "vp8",
        "permanent": false, "is_private": false,
    });
    s.request(json!({"janus": "message", "handle_id": h, "body": body}), false)
        .await?;
    let _ = s.send(json!({"janus": "destroy"})).await;
    Ok(())
}

/// Run the load against Janus; returns what the LiveKit mode's summary needs.
pub async fn run(
    args: &LoadTestArgs,
    server: Option<&load_test::ServerProbe>,
) -> anyhow::Result<load_test::Collected> {
    let mut join_ms = Vec::new();
    let mut errors = Vec::new();
    let before_join = server.map(|s| s.sample()).transpose()?;
    let base_room = 1_000_000 + u64::from(std::process::id());
    let mut rooms: Vec<Vec<Member>> = Vec::new();
    for r in 0..args.rooms {
        let room = base_room + r as u64;
        create_room(args, room).await?;
        let mut members = Vec::new();
        for n in 0..args.publishers + args.subscribers {
            let started = Instant::now();
            let identity = format!("{}-{r}-{n}", if n < args.publishers { "pub" } else { "sub" });
            let joined = if n < args.publishers {
                publish(args, room, &identity).await.map(|p| (Some(p), None))
            } else {
                Session::connect(&args.url).await.map(|s| (None, Some(s)))
            };
            match joined {
                Ok((publishing, session)) => members.push(Member {
                    publishing,
                    session,
                    took: started.elapsed(),
                }),
                Err(e) => errors.push(format!("{identity}: {e:#}")),
            }
            tokio::time::sleep(args.join_interval).await;
        }
        rooms.push(members);
    }
    // Janus offers a feed to subscribers only once its publisher's connection is up.
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut buf = vec![0u8; 2048];
    let mut events = Vec::new();
    loop {
        let mut waiting = 0;
        for p in rooms.iter_mut().flatten().filter_map(|m| m.publishing.as_mut()) {
            pump(&mut p.sender.peer, &mut buf, &mut events);
            events.clear();
            waiting += usize::from(!p.sender.peer.connected);
        }
        if waiting == 0 {
            break;
        }
        if Instant::now() > deadline {
            errors.push(format!(
                "{waiting} publisher connection(s) to Janus did not come up"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Second pass: each participant subscribes to every other publisher of its room. Janus
    // may still call a feed unknown for a moment after its connection is up; retry then,
    // keeping the publishers' connections serviced.
    let mut running = Vec::new();
    for (r, mut members) in rooms.into_iter().enumerate() {
        let room = base_room + r as u64;
        let feeds: Vec<u64> = members
            .iter()
            .filter_map(|m| m.publishing.as_ref().map(|p| p.feed))
            .collect();
        let mut subscribers = Vec::new();
        for i in 0..members.len() {
            let started = Instant::now();
            let own = members[i].publishing.as_ref().map(|p| p.feed);
            let others: Vec<u64> = feeds.iter().copied().filter(|f| Some(*f) != own).collect();
            let mut subscriber = None;
            for attempt in 0.. {
                if others.is_empty() {
                    break;
                }
                let m = &mut members[i];
                let session = match (&mut m.publishing, &mut m.session) {
                    (Some(p), _) => &mut p.session,
                    (None, Some(s)) => s,
                    (None, None) => break,
                };
                match subscribe(args, session, room, &others).await {
                    Ok(peer) => {
                        subscriber = Some(peer);
                        break;
                    }
                    Err(e) if attempt < 20 && format!("{e:#}").contains("No such feed") => {
                        let until = Instant::now() + Duration::from_millis(100);
                        while Instant::now() < until {
                            for p in members.iter_mut().filter_map(|m| m.publishing.as_mut()) {
                                pump(&mut p.sender.peer, &mut buf, &mut events);
                                events.clear();
                            }
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                    }
                    Err(e) => {
                        errors.push(format!("subscriber in room {room}: {e:#}"));
                        break;
                    }
                }
            }
            let took = members[i].took + started.elapsed();
            join_ms.push(took.as_secs_f64() * 1000.0);
            subscribers.push(subscriber);
        }
        for (m, subscriber) in members.into_iter().zip(subscribers) {
            let (session, publisher) = match (m.publishing, m.session) {
                (Some(p), _) => (p.session, Some(p.sender)),
                (None, Some(s)) => (s, None),
                (None, None) => continue,
            };
            running.push(Running {
                session,
                publisher,
                subscriber,
            });
        }
    }
    let joined = running.len();
    eprintln!(
        "load-test: {joined} Janus participants joined; sending media for {:?}",
        args.duration
    );
    let media_start = server.map(|s| s.sample()).transpose()?;
    let start = Instant::now();
    let until = start + args.duration;
    let received = Arc::new(AtomicU64::new(0));
    let plan = MediaPlan::new(args);
    let tasks: Vec<_> = running
        .into_iter()
        .map(|p| tokio::spawn(run_participant(p, plan.clone(), start, until, received.clone())))
        .collect();
    let mut last = 0;
    while Instant::now() < until + Duration::from_millis(500) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = received.load(Ordering::Relaxed);
        eprintln!(
            "load-test: {:>5.1}s  {joined} participants  {now:>8} packets received  {:>7} pkt/s",
            start.elapsed().as_secs_f64(),
            now - last
        );
        last = now;
    }
    let mut stats = Vec::new();
    for t in tasks {
        stats.extend(t.await.context("participant task")?.into_values());
    }
    let media_end = server.map(|s| s.sample()).transpose()?;
    Ok(load_test::Collected {
        joined,
        join_ms,
        errors,
        stats,
        receivers: Vec::new(),
        measured: args.duration.as_secs_f64(),
        before_join,
        media_start,
        media_end,
    })
}
