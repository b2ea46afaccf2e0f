//! Forwarding micro-benchmark: one publisher packet in, N subscriber packets out, in memory.
//!
//! A [`Shard`] and str0m client peers (one publisher, N subscribers) exchange datagrams by
//! function call on a virtual clock: no sockets, no threads, no wall time. After the real
//! LiveKit join/offer/answer/ICE/DTLS sequence, the publisher sends VP8 packets and
//! [`measured_forwarding`] hands them to the shard and drains what it transmits. That function
//! is what `valgrind --tool=callgrind --toggle-collect=*measured_forwarding*` counts
//! (instructions per forwarded packet), and a counting allocator counts heap allocations
//! made inside it. Run through `bench/forwarding.sh`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use livekit_protocol as lk;
use lk::signal_request::Message as Req;
use lk::signal_response::Message as Resp;
use pylon_core::ids::SessionId;
use pylon_core::{JoinParams, Output, Shard, ShardConfig};
use pylon_testkit::vp8;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Event, Input, Rtc};

/// Counts allocations while [`COUNTING`] is set on this thread.
struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// With `--trace-allocs`: capture where this many more allocations happen.
    static TRACE_LEFT: Cell<u32> = const { Cell::new(0) };
    static TRACES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Record the caller of an allocation: the innermost frames in str0m or Pylon code.
fn trace_allocation() {
    if TRACE_LEFT.with(Cell::get) == 0 {
        return;
    }
    TRACE_LEFT.with(|t| t.set(t.get() - 1));
    // Allocations made while capturing are not counted (COUNTING is off meanwhile).
    COUNTING.with(|c| c.set(false));
    let bt = std::backtrace::Backtrace::force_capture().to_string();
    let frames: Vec<&str> = bt
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.contains(": ") && (l.contains("str0m") || l.contains("pylon_core") || l.contains("dimpl"))
        })
        .filter_map(|l| l.split_once(": ").map(|(_, f)| f))
        .take(3)
        .collect();

    TRACES.with(|t| t.borrow_mut().push(frames.join(" <- ")));
    COUNTING.with(|c| c.set(true));
}

#[allow(unsafe_code)] // GlobalAlloc is an unsafe trait; every call forwards to System.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            ALLOCATED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
            trace_allocation();
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            ALLOCATED_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
            trace_allocation();
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const SERVER: &str = "10.0.0.1:7882";
const STEP: Duration = Duration::from_millis(2);
const PAYLOAD: usize = 1000;

/// One client-side peer connection.
struct Peer {
    rtc: Rtc,
    addr: SocketAddr,
    connected: bool,
    media: Vec<Mid>,
    rtp_received: u64,
}

impl Peer {
    fn new(addr: SocketAddr, now: Instant) -> Peer {
        // A loopback address always makes a valid host candidate.
        let rtc = pylon_testkit::client_rtc(addr, None, now).expect("host candidate");
        Peer {
            rtc,
            addr,
            connected: false,
            media: Vec::new(),
            rtp_received: 0,
        }
    }
}

struct Client {
    session: SessionId,
    publisher: Peer,
    subscriber: Peer,
    pending_offer: Option<SdpPendingOffer>,
}

/// The whole in-memory network: the shard, its clients, the virtual clock.
struct Net {
    shard: Shard,
    clients: Vec<Client>,
    now: Instant,
    server: SocketAddr,
    /// Datagrams the shard transmitted, waiting for delivery to clients.
    to_clients: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// Datagrams clients transmitted, waiting for delivery to the shard.
    to_shard: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
}

impl Net {
    fn new(now: Instant) -> Net {
        let server: SocketAddr = SERVER.parse().expect("address");
        Net {
            shard: Shard::new(ShardConfig::new(server), now, 1_800_000_000_000, 1),
            clients: Vec::new(),
            now,
            server,
            to_clients: VecDeque::new(),
            to_shard: VecDeque::new(),
        }
    }

    fn join(&mut self, identity: &str) -> usize {
        let i = self.clients.len();
        let session = SessionId(i as u64 + 1);
        let params = JoinParams::standard(session, "bench", identity);
        self.shard.join(self.now, params).expect("join");
        let base = 10_000 + 2 * i as u16;
        let addr = |port: u16| -> SocketAddr { format!("10.0.1.1:{port}").parse().expect("address") };
        self.clients.push(Client {
            session,
            publisher: Peer::new(addr(base), self.now),
            subscriber: Peer::new(addr(base + 1), self.now),
            pending_offer: None,
        });
        i
    }

    fn signal(&mut self, session: SessionId, msg: Req) {
        let req = lk::SignalRequest { message: Some(msg) };
        let cmd = pylon_server::wire::signal_command(req).expect("the bench sends valid requests");
        self.shard.signal(self.now, session, cmd);
    }

    fn client_by_session(&mut self, session: SessionId) -> Option<&mut Client> {
        self.clients.iter_mut().find(|c| c.session == session)
    }

    /// Handle what the shard asked for: answer offers, apply answers, deliver datagrams.
    fn drain_shard(&mut self) {
        while let Some(out) = self.shard.poll_output() {
            match out {
                Output::Transmit(t) => {
                    self.to_clients
                        .push_back((t.source, t.destination, t.contents.to_vec()))
                }
                Output::Signal(session, resp) => match resp.message {
                    Some(Resp::Offer(sd)) => {
                        let Some(c) = self.client_by_session(session) else {
                            continue;
                        };
                        let offer = SdpOffer::from_sdp_string(&sd.sdp).expect("server offer parses");
                        let answer = c
                            .subscriber
                            .rtc
                            .sdp_api()
                            .accept_offer(offer)
                            .expect("accept offer");
                        let reply = lk::SessionDescription {
                            r#type: "answer".into(),
                            sdp: answer.to_sdp_string(),
                            id: sd.id,
                            ..Default::default()
                        };
                        self.signal(session, Req::Answer(reply));
                    }
                    Some(Resp::Answer(sd)) => {
                        let Some(c) = self.client_by_session(session) else {
                            continue;
                        };
                        let answer = SdpAnswer::from_sdp_string(&sd.sdp).expect("server answer parses");
                        if let Some(pending) = c.pending_offer.take() {
                            c.publisher
                                .rtc
                                .sdp_api()
                                .accept_answer(pending, answer)
                                .expect("accept answer");
                        }
                    }
                    _ => {}
                },
                Output::Close(_) | Output::Webhook(_) | Output::Relay(..) | Output::Event(_) => {}
            }
        }
    }

    fn peer_by_addr(&mut self, addr: SocketAddr) -> Option<&mut Peer> {
        self.clients.iter_mut().find_map(|c| {
            if c.publisher.addr == addr {
                Some(&mut c.publisher)
            } else if c.subscriber.addr == addr {
                Some(&mut c.subscriber)
            } else {
                None
            }
        })
    }

    /// Poll one peer until it times out, queueing what it transmits.
    fn poll_peer(peer: &mut Peer, to_shard: &mut VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>) {
        loop {
            match peer.rtc.poll_output().expect("client rtc") {
                str0m::Output::Timeout(_) => return,
                str0m::Output::Transmit(t) => {
                    to_shard.push_back((t.source, t.destination, t.contents.to_vec()))
                }
                str0m::Output::Event(e) => match e {
                    Event::Connected => peer.connected = true,
                    Event::MediaAdded(m) => peer.media.push(m.mid),
                    Event::RtpPacket(_) => peer.rtp_received += 1,
                    _ => {}
                },
            }
        }
    }

    /// Deliver everything queued, in both directions, until the network is quiet.
    fn settle(&mut self) {
        loop {
            self.drain_shard();
            let mut moved = false;
            while let Some((src, dst, data)) = self.to_clients.pop_front() {
                moved = true;
                let now = self.now;
                let mut to_shard = std::mem::take(&mut self.to_shard);
                if let Some(peer) = self.peer_by_addr(dst) {
                    if let Ok(r) = Receive::new(Protocol::Udp, src, dst, &data) {
                        peer.rtc
                            .handle_input(Input::Receive(now, r))
                            .expect("client input");
                    }
                    // RTP mode keeps one received packet: poll after every datagram.
                    Self::poll_peer(peer, &mut to_shard);
                }
                self.to_shard = to_shard;
            }
            for c in &mut self.clients {
                Self::poll_peer(&mut c.publisher, &mut self.to_shard);
                Self::poll_peer(&mut c.subscriber, &mut self.to_shard);
            }
            while let Some((src, dst, data)) = self.to_shard.pop_front() {
                moved = true;
                let _ = self.shard.receive(self.now, src, dst, &data);
            }
            if !moved {
                return;
            }
        }
    }

    /// Advance the virtual clock by `d` in steps, driving every timer.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += STEP;
            let now = self.now;
            self.shard.handle_timeout(now);
            for c in &mut self.clients {
                c.publisher
                    .rtc
                    .handle_input(Input::Timeout(now))
                    .expect("timeout");
                c.subscriber
                    .rtc
                    .handle_input(Input::Timeout(now))
                    .expect("timeout");
            }
            self.settle();
        }
    }

    /// AddTrack, then offer a send-only VP8 m-line; returns its mid once negotiated.
    fn publish_video(&mut self, i: usize) -> Mid {
        let session = self.clients[i].session;
        let add = lk::AddTrackRequest {
            cid: "cam".into(),
            name: "camera".into(),
            r#type: lk::TrackType::Video as i32,
            source: lk::TrackSource::Camera as i32,
            width: 1280,
            height: 720,
            ..Default::default()
        };
        self.signal(session, Req::AddTrack(add));
        let c = &mut self.clients[i];
        let mut api = c.publisher.rtc.sdp_api();
        let mid = api.add_media(
            MediaKind::Video,
            Direction::SendOnly,
            Some("s".into()),
            Some("cam".into()),
            None,
        );
        let (offer, pending) = api.apply().expect("an offer");
        c.pending_offer = Some(pending);
        let sd = lk::SessionDescription {
            r#type: "offer".into(),
            sdp: offer.to_sdp_string(),
            id: 1,
            ..Default::default()
        };
        self.signal(session, Req::Offer(sd));
        mid
    }
}

/// The measured section: the shard takes each publisher datagram and everything it then
/// transmits is collected, as the runtime's socket loop would.
#[inline(never)]
fn measured_forwarding(
    shard: &mut Shard,
    now: Instant,
    input: &[(SocketAddr, SocketAddr, Vec<u8>)],
    out: &mut Vec<Output>,
) {
    COUNTING.with(|c| c.set(true));
    for (src, dst, data) in input {
        let _ = shard.receive(now, *src, *dst, data);
        // As the worker does: drive what is due (str0m releases queued RTP on a timeout).
        if shard.poll_timeout() <= now {
            shard.handle_timeout(now);
        }
        while let Some(o) = shard.poll_output() {
            out.push(o);
        }
    }
    COUNTING.with(|c| c.set(false));
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let subscribers = arg("--subscribers", 10);
    let packets = arg("--packets", 2000);
    let mut net = Net::new(Instant::now());
    let publisher = net.join("publisher");
    for i in 0..subscribers {
        net.join(&format!("sub-{i}"));
    }
    let mid = net.publish_video(publisher);
    net.run_for(Duration::from_secs(3));
    assert!(
        net.clients[publisher].publisher.connected,
        "publisher never connected"
    );

    let mut seq = 1000u64;
    let mut ts = 0u32;
    let mut write = |net: &mut Net, keyframe: bool| {
        let body = vec![0x42u8; PAYLOAD];
        let payload = if keyframe {
            vp8::keyframe_start(1280, 720, &body)
        } else {
            vp8::delta_start(&body)
        };
        let now = net.now;
        let rtc = &mut net.clients[publisher].publisher.rtc;
        let pt = rtc
            .codec_config()
            .find(|p| p.spec().codec == str0m::format::Codec::Vp8)
            .map(|p| p.pt())
            .expect("VP8 negotiated");
        let mut api = rtc.direct_api();
        let tx = api.stream_tx_by_mid(mid, None).expect("send stream");
        tx.write_rtp(
            RtpWrite::new(pt, seq.into(), ts, now, payload)
                .marker(true)
                .nackable(true),
        );
        seq += 1;
        ts = ts.wrapping_add(3000);
    };
    // Warm up: keyframes until every subscriber receives media (subscriptions negotiated,
    // forwarding started), then steady-state traffic so buffers reach their size.
    for round in 0..2000 {
        write(&mut net, round % 30 == 0);
        net.run_for(STEP * 5);
        let ready = net.clients[1..].iter().all(|c| c.subscriber.rtp_received > 0);
        if ready && round > 300 {
            break;
        }
    }
    let receiving = net.clients[1..]
        .iter()
        .filter(|c| c.subscriber.rtp_received > 0)
        .count();
    assert_eq!(receiving, subscribers, "not every subscriber receives media");

    // Measure in batches: the publisher's datagrams for a batch are collected first, then
    // handed to the shard inside the measured function.
    if std::env::args().any(|a| a == "--trace-allocs") {
        TRACE_LEFT.with(|t| t.set(2000));
    }
    let mut allocations = 0u64;
    let mut bytes = 0u64;
    let mut forwarded = 0u64;
    let mut sent = 0;
    let before: u64 = net.clients[1..].iter().map(|c| c.subscriber.rtp_received).sum();
    while sent < packets {
        for _ in 0..10 {
            write(&mut net, sent % 300 == 0);
            sent += 1;
        }
        let mut input = VecDeque::new();
        let now = net.now;
        let peer = &mut net.clients[publisher].publisher;
        peer.rtc.handle_input(Input::Timeout(now)).expect("timeout");
        Net::poll_peer(peer, &mut input);
        let input: Vec<_> = input
            .into_iter()
            .filter(|(_, dst, _)| *dst == net.server)
            .collect();
        let mut out = Vec::with_capacity(input.len() * (subscribers + 2));
        let (a0, b0) = (
            ALLOCATIONS.load(Ordering::Relaxed),
            ALLOCATED_BYTES.load(Ordering::Relaxed),
        );
        measured_forwarding(&mut net.shard, net.now, &input, &mut out);
        allocations += ALLOCATIONS.load(Ordering::Relaxed) - a0;
        bytes += ALLOCATED_BYTES.load(Ordering::Relaxed) - b0;
        for o in out {
            if let Output::Transmit(t) = o {
                forwarded += 1;
                net.to_clients
                    .push_back((t.source, t.destination, t.contents.to_vec()));
            }
        }
        net.run_for(STEP * 10);
    }
    if std::env::args().any(|a| a == "--trace-allocs") {
        let mut by_site: HashMap<String, u32> = HashMap::new();
        TRACES.with(|t| {
            for site in t.borrow().iter() {
                *by_site.entry(site.clone()).or_default() += 1;
            }
        });
        let mut sites: Vec<_> = by_site.into_iter().collect();
        sites.sort_by_key(|s| std::cmp::Reverse(s.1));
        for (site, n) in sites {
            eprintln!("{n:>5}  {site}");
        }
    }
    let received: u64 = net.clients[1..]
        .iter()
        .map(|c| c.subscriber.rtp_received)
        .sum::<u64>()
        - before;
    let report = serde_json::json!({
        "subscribers": subscribers,
        "packets_in": packets,
        "datagrams_out": forwarded,
        "rtp_received_by_subscribers": received,
        "allocations_per_forwarded_packet": allocations as f64 / forwarded.max(1) as f64,
        "allocated_bytes_per_forwarded_packet": bytes as f64 / forwarded.max(1) as f64,
    });
    println!("{report}");
}
