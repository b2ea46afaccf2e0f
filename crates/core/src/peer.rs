//! One str0m peer connection of a hosted participant, and how the shard builds it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::media::{Mid, Rid};
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, Rtc};

use crate::ids::ParticipantKey;
use crate::shard::JoinError;

/// Which of a participant's two peer connections (named from the client's side).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PcKind {
    /// The client sends media here; the server answers its offers.
    Publisher,
    /// The server sends media here; the server makes the offers.
    Subscriber,
}

/// One peer connection of one participant: what the demux, the timers and the dirty list name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerRef {
    pub key: ParticipantKey,
    pub pc: PcKind,
}

/// Where a peer's packets come from: the client's address and the transport (UDP, or one
/// ICE/TCP connection from that address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Remote {
    pub proto: str0m::net::Protocol,
    pub addr: SocketAddr,
}

impl Remote {
    pub fn udp(addr: SocketAddr) -> Self {
        Self {
            proto: str0m::net::Protocol::Udp,
            addr,
        }
    }
}

/// Addresses one peer may be reached from at once (ICE candidates of one client; more would
/// let a client grow the shard's address index without bound by spraying STUN from new ports).
pub const MAX_PEER_ADDRS: usize = 4;

/// One str0m peer connection and its scheduling state.
pub struct Peer {
    pub rtc: Rtc,
    /// Our ICE username fragment, as indexed by the shard's demux.
    pub ufrag: String,
    /// When str0m next wants a timeout input.
    pub next_timeout: Instant,
    pub connected: bool,
    /// Source addresses routed to this peer, oldest first (at most [`MAX_PEER_ADDRS`]); each
    /// learnt only after str0m accepted a STUN request from it (integrity checked).
    pub addrs: Vec<Remote>,
    /// Set once the peer reported a fatal error; it is ticked no more.
    pub failed: bool,
    /// The cumulative counts str0m last reported per stream (for metrics' increments).
    pub stream_totals: StreamTotals,
}

/// How often str0m reports each stream's counters (NACKs, reported loss) for the metrics.
pub const STATS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// Per stream (mid, rid): the last cumulative [NACKs, packets lost, packets sent] str0m
/// reported, and the last round trip.
#[derive(Default)]
pub struct StreamTotals(rustc_hash::FxHashMap<(Mid, Option<Rid>), StreamLast>);

/// What a stream's reports said last.
type StreamLast = ([u64; 3], Option<Duration>);

impl StreamTotals {
    /// Record a stream's cumulative counts; returns how much each grew since the last report.
    pub fn update(&mut self, mid: Mid, rid: Option<Rid>, now: [u64; 3]) -> [u64; 3] {
        let (last, _) = self.0.entry((mid, rid)).or_default();
        let grew = std::array::from_fn(|i| now[i].saturating_sub(last[i]));
        *last = std::array::from_fn(|i| last[i].max(now[i]));
        grew
    }

    /// Record the round trip a stream's report carries; returns it when it is new. str0m
    /// repeats a stream's last round trip in every report until the receiver's next receiver
    /// report about that stream (libwebrtc reports audio every 5 s, video every second), and a
    /// stale one would speak for a queue that has long changed.
    pub fn fresh_rtt(&mut self, mid: Mid, rid: Option<Rid>, rtt: Duration) -> Option<Duration> {
        let (_, last) = self.0.entry((mid, rid)).or_default();
        (last.replace(rtt) != Some(rtt)).then_some(rtt)
    }
}

impl Peer {
    pub fn new(mut rtc: Rtc, now: Instant) -> Self {
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        Self {
            rtc,
            ufrag,
            next_timeout: now,
            connected: false,
            addrs: Vec::new(),
            failed: false,
            stream_totals: StreamTotals::default(),
        }
    }

    /// `f` on this connection's `Rtc`, with a panic inside str0m contained: the connection is
    /// marked failed and `Err(NotRun::Panicked)` returned, so the shard drops this participant
    /// and nobody else. str0m parses what the client sent (SRTCP included, once
    /// authenticated) and a parser bug reachable from the wire must not take the worker, and
    /// every room on it, down: its TWCC feedback parser overflowed on forged reports
    /// (`pylon-bench`'s hostile arena). A failed connection is never called again
    /// (`Err(NotRun::Failed)`).
    pub fn contained<R>(&mut self, f: impl FnOnce(&mut Rtc) -> R) -> Result<R, NotRun> {
        if self.failed {
            return Err(NotRun::Failed);
        }
        let rtc = &mut self.rtc;
        CONTAINING.set(true);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(rtc)));
        CONTAINING.set(false);
        result.map_err(|_| {
            self.failed = true;
            NotRun::Panicked
        })
    }
}

thread_local! {
    static CONTAINING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is inside [`Peer::contained`], where a panic is caught and ends one
/// connection: for a panic hook that aborts on every other panic (a fuzz target's).
pub fn containing() -> bool {
    CONTAINING.get()
}

/// Why [`Peer::contained`] returned no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRun {
    /// str0m panicked just now; the connection is failed from here on.
    Panicked,
    /// The connection had failed before (a str0m error or panic); str0m was not called.
    Failed,
}

/// Builds the shard's peer connections: ICE-lite, RTP mode, our codecs, one host candidate
/// (and a passive TCP one),
/// and the shard's one DTLS certificate (generating one per peer costs a key generation on
/// every join; mediasoup likewise shares one per worker).
pub struct PeerFactory {
    candidate: SocketAddr,
    /// The passive ICE/TCP candidate (RFC 6544), if TCP media is on.
    tcp_candidate: Option<SocketAddr>,
    dtls_cert: Option<str0m::config::DtlsCert>,
    /// Downlink bandwidth estimation on every connection (its starting estimate), when
    /// congestion control is on.
    bwe: Option<str0m::bwe::Bitrate>,
}

/// Where a connection's bandwidth estimate starts: enough for a 720p camera and audio, so
/// that a subscriber starts on the layer it asked for and the estimate falls when its link
/// is narrower (LiveKit likewise allocates freely until congestion shows).
pub const INITIAL_ESTIMATE_BPS: u64 = 1_000_000;

/// The RTP header extensions a connection negotiates: str0m's standard set, without the
/// transport-wide sequence number on a connection that only sends while congestion control is
/// off. Its only use there would be the receiver's feedback (every 50–100 ms per
/// subscriber, each a wake-up of the worker) for an estimator that is not running; LiveKit's
/// subscriber connection likewise carries transport-cc only with send-side estimation on.
/// Connections that receive keep it: publishers estimate their uplink from our feedback.
fn extensions(without_transport_cc: bool) -> ExtensionMap {
    let standard = ExtensionMap::standard();
    let mut exts = ExtensionMap::empty();
    for (id, ext) in standard.iter() {
        if !(without_transport_cc && matches!(ext, Extension::TransportSequenceNumber)) {
            exts.set(id, ext.clone());
        }
    }
    exts
}

impl PeerFactory {
    pub fn new(candidate: SocketAddr, tcp_candidate: Option<SocketAddr>, bwe: bool) -> Self {
        Self {
            candidate,
            tcp_candidate,
            bwe: bwe.then(|| str0m::bwe::Bitrate::bps(INITIAL_ESTIMATE_BPS)),
            dtls_cert: str0m::crypto::from_feature_flags()
                .dtls_provider
                .generate_certificate(),
        }
    }

    /// A server peer connection; `red`: offer and accept redundant audio (`red.rs`);
    /// `subscriber`: it only sends (the subscriber connection of a dual-PC client).
    pub fn build(&self, now: Instant, red: bool, subscriber: bool) -> Result<Peer, JoinError> {
        let mut builder = Rtc::builder();
        if let Some(cert) = &self.dtls_cert {
            builder = builder.set_dtls_cert(cert.clone());
        }
        let mut rtc = builder
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            // Redundant audio (RFC 2198) offered and accepted where the client takes it, as
            // LiveKit does: forwarded as is to receivers that negotiated it, as its primary
            // Opus block to the others.
            .enable_opus(true, red)
            .enable_vp8(true)
            .enable_h264(true)
            .enable_vp9(true)
            .enable_av1(true)
            .set_stats_interval(Some(STATS_INTERVAL))
            .enable_bwe(self.bwe)
            .set_extension_map(extensions(subscriber && self.bwe.is_none()))
            .build(now);
        let host = Candidate::host(self.candidate, "udp").map_err(|e| JoinError::Rtc(e.to_string()))?;
        rtc.add_local_candidate(host);
        if let Some(addr) = self.tcp_candidate {
            let tcp = Candidate::builder()
                .tcp()
                .host(addr)
                .tcptype(str0m::net::TcpType::Passive)
                .build()
                .map_err(|e| JoinError::Rtc(e.to_string()))?;
            rtc.add_local_candidate(tcp);
        }
        Ok(Peer::new(rtc, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a connection offers when it adds one video track to send.
    fn offer(bwe: bool, subscriber: bool) -> String {
        let now = Instant::now();
        let factory = PeerFactory::new("127.0.0.1:5000".parse().unwrap(), None, bwe);
        let mut peer = factory.build(now, false, subscriber).unwrap();
        let mut api = peer.rtc.sdp_api();
        api.add_media(
            str0m::media::MediaKind::Video,
            str0m::media::Direction::SendOnly,
            None,
            None,
            None,
        );
        let (offer, _) = api.apply().expect("an offer");
        offer.to_sdp_string()
    }

    #[test]
    fn a_sending_only_connection_carries_transport_cc_only_with_congestion_control() {
        let twcc = "transport-wide-cc";
        assert!(
            !offer(false, true).contains(twcc),
            "no feedback asked for that nothing reads"
        );
        assert!(offer(true, true).contains(twcc), "the estimator needs it");
        assert!(
            offer(false, false).contains(twcc),
            "publishers estimate their uplink from our feedback"
        );
        assert!(
            offer(false, true).contains("abs-send-time"),
            "the rest of the set stays"
        );
    }

    #[test]
    fn a_panic_is_contained_once_and_the_connection_is_never_called_again() {
        let now = Instant::now();
        let mut peer = Peer::new(Rtc::new(now), now);
        assert_eq!(peer.contained(|_| 7), Ok(7));
        assert!(!containing());
        let r: Result<(), NotRun> = peer.contained(|_| panic!("a str0m bug"));
        assert_eq!(r, Err(NotRun::Panicked));
        assert!(peer.failed && !containing());
        // Later input is not handed to the broken `Rtc`, and is not another panic to report.
        let mut called = false;
        assert_eq!(peer.contained(|_| called = true), Err(NotRun::Failed));
        assert!(!called);
    }
}
