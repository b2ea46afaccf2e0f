//! Node links over real QUIC on loopback: two nodes holding the secret link up and exchange
//! state and media; anyone else — a wrong secret, a replayed handshake, garbage, an oversized
//! frame — is refused, and the refusal is logged and counted. Links between regions are
//! proven with the regions' secret (never the cluster's) and carry the rooms' homes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use livekit_protocol as lk;
use pylon_core::ids::{RelayTrackId, RoomName, TrackSid};
use pylon_core::relay::{MediaExtensions, MediaPacket, ParticipantState, RelayMessage, RelayRtp};
use pylon_relay::{Inbound, LinkHandle, Peer, Receiver, Relay, RelayConfig, RoomHome, Secrets};
use tokio::sync::mpsc;

/// What a node's relay reported, in order.
#[derive(Debug)]
enum Event {
    Up(LinkHandle),
    Down(Peer),
    Message(Peer, RelayMessage),
    Homes(Peer, Vec<RoomHome>),
}

struct Events(mpsc::UnboundedSender<Event>);

struct Messages(Peer, mpsc::UnboundedSender<Event>);

impl Receiver for Messages {
    fn message(&mut self, msg: RelayMessage) {
        let _ = self.1.send(Event::Message(self.0.clone(), msg));
    }
    fn homes(&mut self, homes: Vec<RoomHome>) {
        let _ = self.1.send(Event::Homes(self.0.clone(), homes));
    }
}

impl Inbound for Events {
    fn link_up(&self, link: LinkHandle) -> Box<dyn Receiver> {
        let peer = link.peer().clone();
        let _ = self.0.send(Event::Up(link));
        Box::new(Messages(peer, self.0.clone()))
    }
    fn link_down(&self, link: &LinkHandle) {
        let _ = self.0.send(Event::Down(link.peer().clone()));
    }
}

fn node(name: &str, secret: &[u8]) -> (Arc<Relay>, mpsc::UnboundedReceiver<Event>) {
    region_node(name, "test", Secrets::cluster(secret))
}

fn region_node(name: &str, region: &str, secrets: Secrets) -> (Arc<Relay>, mpsc::UnboundedReceiver<Event>) {
    relay_node(name, region, secrets, true)
}

fn relay_node(
    name: &str,
    region: &str,
    secrets: Secrets,
    direct_media: bool,
) -> (Arc<Relay>, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let config = RelayConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        node: name.into(),
        region: region.into(),
        secrets,
        direct_media,
    };
    (
        Relay::bind(config, Arc::new(Events(tx))).expect("relay binds"),
        rx,
    )
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("an event within 10 s")
        .expect("the relay is alive")
}

async fn up(rx: &mut mpsc::UnboundedReceiver<Event>) -> LinkHandle {
    match next(rx).await {
        Event::Up(l) => l,
        other => panic!("link up expected, got {other:?}"),
    }
}

/// `a` dials `b`; both see the link up. Returns `a`'s handle to `b` and `b`'s to `a`.
async fn linked(
    a: &Arc<Relay>,
    a_rx: &mut mpsc::UnboundedReceiver<Event>,
    b: &Relay,
    b_rx: &mut mpsc::UnboundedReceiver<Event>,
) -> (LinkHandle, LinkHandle) {
    a.dial(addr(b));
    (up(a_rx).await, up(b_rx).await)
}

fn addr(r: &Relay) -> SocketAddr {
    r.local_addr().unwrap()
}

fn rtp(seq: u64) -> RelayMessage {
    let params = str0m::RtcConfig::new()
        .clear_codecs()
        .enable_vp8(true)
        .codec_config()
        .params()[0];
    RelayMessage::Rtp(RelayRtp {
        track: RelayTrackId(3),
        packet: MediaPacket {
            layer: 0,
            best: Some(0),
            seq,
            timestamp: seq as u32 * 3000,
            marker: true,
            keyframe: seq == 0,
            params: Some(params),
            red: false,
            ext: MediaExtensions::default(),
            payload: Arc::from(vec![0x5a; 1100]),
        },
    })
}

#[tokio::test]
async fn two_nodes_link_and_exchange_state_and_media() {
    let (a, mut a_rx) = node("node-a", b"cluster secret");
    let (b, mut b_rx) = node("node-b", b"cluster secret");
    let (to_b, to_a) = linked(&a, &mut a_rx, &b, &mut b_rx).await;
    assert_eq!(to_b.peer().node, "node-b");
    assert_eq!(to_a.peer().node, "node-a");

    let info = lk::ParticipantInfo {
        sid: "PA_alice".into(),
        identity: "alice".into(),
        version: 3,
        ..Default::default()
    };
    let hello = RelayMessage::Hello {
        room: RoomName::new("town"),
        reply: true,
        participants: vec![ParticipantState {
            info: info.clone(),
            tracks: vec![(TrackSid::new("TR_cam"), RelayTrackId(3))],
            subscribe_allow: None,
        }],
    };
    assert!(to_b.send(hello));
    match next(&mut b_rx).await {
        Event::Message(
            from,
            RelayMessage::Hello {
                room, participants, ..
            },
        ) => {
            assert_eq!(from.node, "node-a");
            assert_eq!(room.as_str(), "town");
            assert_eq!(participants[0].info, info);
        }
        other => panic!("hello expected, got {other:?}"),
    }

    // Media as datagrams: the first may overtake its codec's announcement and be dropped;
    // the rest arrive, each once.
    for seq in 0..50 {
        assert!(to_b.send(rtp(seq)));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut seqs = Vec::new();
    while seqs.len() < 45 {
        if let Event::Message(_, RelayMessage::Rtp(r)) = next(&mut b_rx).await {
            assert_eq!(r.packet.payload.len(), 1100);
            assert!(r.packet.params.is_some(), "the codec crossed");
            seqs.push(r.packet.seq);
        }
    }
    seqs.dedup();
    assert!(seqs.len() >= 45, "{seqs:?}");
    let stats = b.stats();
    assert!(stats.packets_received.load(std::sync::atomic::Ordering::Relaxed) >= 45);

    // Feedback the other way.
    assert!(to_a.send(RelayMessage::Keyframe {
        track: RelayTrackId(3)
    }));
    match next(&mut a_rx).await {
        Event::Message(_, RelayMessage::Keyframe { track }) => assert_eq!(track, RelayTrackId(3)),
        other => panic!("keyframe expected, got {other:?}"),
    }

    // A node that goes away is seen as a link down.
    b.close();
    loop {
        if let Event::Down(p) = next(&mut a_rx).await {
            assert_eq!(p.node, "node-b");
            break;
        }
    }
}

/// `n` media packets from `from`, 2 ms apart; how many of them `rx` received.
async fn media_crosses(from: &LinkHandle, rx: &mut mpsc::UnboundedReceiver<Event>, n: u64) -> u64 {
    for seq in 0..n {
        assert!(from.send(rtp(seq)));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut got = 0;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
        if let Event::Message(_, RelayMessage::Rtp(r)) = e {
            assert_eq!(r.packet.payload.len(), 1100);
            got += 1;
        }
    }
    got
}

fn count(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(std::sync::atomic::Ordering::Relaxed)
}

#[tokio::test]
async fn media_between_nodes_of_a_region_goes_direct_once_the_path_is_confirmed() {
    let (a, mut a_rx) = node("node-a", b"cluster secret");
    let (b, mut b_rx) = node("node-b", b"cluster secret");
    let (to_b, to_a) = linked(&a, &mut a_rx, &b, &mut b_rx).await;
    assert!(to_b.direct_port().is_some() && to_a.direct_port().is_some());
    let got = media_crosses(&to_b, &mut b_rx, 100).await;
    // The first packets go by QUIC (one may overtake its codec) while a probe confirms the
    // path; the rest go directly.
    assert!(got >= 95, "{got} of 100 arrived");
    let (sent, received) = (count(&a.stats().direct_sent), count(&b.stats().direct_received));
    assert!(
        sent >= 80 && received >= 80,
        "direct: {sent} sent, {received} received"
    );
    assert_eq!(count(&a.stats().media_dropped), 0);
    // And the other way.
    assert!(media_crosses(&to_a, &mut a_rx, 100).await >= 95);
    assert!(count(&b.stats().direct_sent) >= 80);
}

#[tokio::test]
async fn garbage_and_forgeries_on_a_links_direct_port_are_refused_and_media_still_flows() {
    let (a, mut a_rx) = node("node-a", b"cluster secret");
    let (b, mut b_rx) = node("node-b", b"cluster secret");
    let (to_b, to_a) = linked(&a, &mut a_rx, &b, &mut b_rx).await;
    assert!(media_crosses(&to_b, &mut b_rx, 50).await >= 45);
    let port = to_a.direct_port().expect("a direct path");
    let attacker = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut forged = vec![1u8];
    forged.extend_from_slice(&1_000_000u64.to_be_bytes());
    forged.extend_from_slice(&[0x5a; 1200]);
    let junk: [&[u8]; 5] = [&[], &[1; 10], &[2; 100], &forged, &[0xff; 3000]];
    for d in junk {
        attacker.send_to(d, ("127.0.0.1", port)).unwrap();
    }
    let dropped_before = count(&b.stats().media_dropped);
    assert!(
        media_crosses(&to_b, &mut b_rx, 50).await >= 48,
        "media still flows"
    );
    let dropped = count(&b.stats().media_dropped);
    assert!(
        dropped >= 4,
        "the garbage was counted ({dropped_before} then {dropped})"
    );
    assert!(to_b.is_open() && to_a.is_open(), "the link stays up");
}

#[tokio::test]
async fn a_node_without_direct_media_gets_media_by_quic() {
    let (a, mut a_rx) = relay_node("node-a", "test", Secrets::cluster(b"cluster secret"), true);
    let (b, mut b_rx) = relay_node("node-b", "test", Secrets::cluster(b"cluster secret"), false);
    let (to_b, to_a) = linked(&a, &mut a_rx, &b, &mut b_rx).await;
    assert!(to_a.direct_port().is_none());
    assert!(media_crosses(&to_b, &mut b_rx, 50).await >= 45);
    assert!(media_crosses(&to_a, &mut a_rx, 50).await >= 45);
    for r in [&a, &b] {
        assert_eq!(count(&r.stats().direct_sent), 0);
        assert_eq!(count(&r.stats().direct_received), 0);
    }
}

#[tokio::test]
async fn a_batch_arrives_in_order_and_a_link_far_behind_drops_only_its_media() {
    let (a, mut a_rx) = node("node-a", b"cluster secret");
    let (b, mut b_rx) = node("node-b", b"cluster secret");
    let (to_b, _) = linked(&a, &mut a_rx, &b, &mut b_rx).await;
    // The codec's announcement (on the stream) first, so no datagram overtakes it.
    loop {
        assert!(to_b.send(rtp(100)));
        let got = tokio::time::timeout(Duration::from_millis(50), b_rx.recv()).await;
        if let Ok(Some(Event::Message(_, RelayMessage::Rtp(_)))) = got {
            break;
        }
    }
    while tokio::time::timeout(Duration::from_millis(100), b_rx.recv())
        .await
        .is_ok()
    {}
    let before = b
        .stats()
        .packets_received
        .load(std::sync::atomic::Ordering::Relaxed);

    // One turn's messages: state and media interleaved; the list is taken.
    let mut batch = vec![
        rtp(0),
        RelayMessage::Keyframe {
            track: RelayTrackId(7),
        },
    ];
    batch.extend((1..20).map(rtp));
    batch.push(RelayMessage::Keyframe {
        track: RelayTrackId(8),
    });
    assert_eq!(to_b.send_batch(&mut batch), 0, "nothing dropped");
    assert!(batch.is_empty());
    let (mut keyframes, mut media) = (Vec::new(), 0);
    while keyframes.len() < 2 || media < 15 {
        match next(&mut b_rx).await {
            Event::Message(_, RelayMessage::Keyframe { track }) => keyframes.push(track.0),
            Event::Message(_, RelayMessage::Rtp(_)) => media += 1,
            other => panic!("batch messages expected, got {other:?}"),
        }
    }
    assert_eq!(keyframes, [7, 8], "state in the order it was sent");

    // More media than a link may queue: the batch's media are dropped and counted, its state
    // still goes.
    let limit = pylon_relay::link::MAX_QUEUED_MEDIA;
    let mut flood: Vec<RelayMessage> = (0..limit as u64 + 1).map(rtp).collect();
    flood.push(RelayMessage::Keyframe {
        track: RelayTrackId(9),
    });
    assert_eq!(to_b.send_batch(&mut flood), limit + 1);
    loop {
        match next(&mut b_rx).await {
            Event::Message(_, RelayMessage::Keyframe { track }) => {
                assert_eq!(track, RelayTrackId(9));
                break;
            }
            Event::Message(_, RelayMessage::Rtp(_)) => {}
            other => panic!("the flood's keyframe request expected, got {other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = b
        .stats()
        .packets_received
        .load(std::sync::atomic::Ordering::Relaxed)
        - before;
    assert!(received <= 20, "no media of the flood crossed: {received}");
}

#[tokio::test]
async fn a_wrong_secret_is_refused_on_both_sides() {
    let (a, mut a_rx) = node("node-a", b"one secret");
    let (b, mut b_rx) = node("node-b", b"another secret");
    a.dial(addr(&b));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(a_rx.try_recv().is_err(), "no link for the dialler");
    assert!(b_rx.try_recv().is_err(), "no link for the acceptor");
    let refused = |r: &Relay| r.stats().refused.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((refused(&a), refused(&b)), (1, 1));
}

#[tokio::test]
async fn garbage_on_the_relay_port_links_nobody() {
    let (b, mut b_rx) = node("node-b", b"secret");
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for len in [0usize, 1, 20, 1200, 1500] {
        let _ = socket.send_to(&vec![0x42; len], addr(&b)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b_rx.try_recv().is_err());
    // And the endpoint still links honest nodes.
    let (a, mut a_rx) = node("node-a", b"secret");
    a.dial(addr(&b));
    up(&mut a_rx).await;
    up(&mut b_rx).await;
}

#[tokio::test]
async fn a_node_cannot_link_to_itself_under_its_own_name() {
    let (a, mut a_rx) = node("node-a", b"secret");
    let (b, mut b_rx) = node("node-a", b"secret");
    a.dial(addr(&b));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(a_rx.try_recv().is_err() && b_rx.try_recv().is_err());
}

#[tokio::test]
async fn an_oversized_frame_closes_the_link() {
    let (b, mut b_rx) = node("node-b", b"secret");
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(pylon_relay::tls::client_config().unwrap());
    let conn = client.connect(addr(&b), "pylon-relay").unwrap().await.unwrap();
    let me = Peer {
        node: "node-x".into(),
        region: "test".into(),
    };
    pylon_relay::auth::dial(&conn, &Secrets::cluster(b"secret"), &me)
        .await
        .expect("a member's handshake");
    up(&mut b_rx).await;
    let mut stream = conn.open_uni().await.unwrap();
    // A length prefix of 1 GiB.
    stream.write_all(&[0x80, 0x80, 0x80, 0x80, 0x04]).await.unwrap();
    loop {
        if let Event::Down(p) = next(&mut b_rx).await {
            assert_eq!(p.node, "node-x");
            break;
        }
    }
    let reason = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("closed");
    assert!(reason.to_string().contains("exceeds"), "{reason}");
}

fn secrets(cluster: &[u8], regions: Option<&[u8]>) -> Secrets {
    Secrets {
        cluster: cluster.to_vec(),
        regions: regions.map(<[u8]>::to_vec),
    }
}

#[tokio::test]
async fn regions_link_with_the_region_secret_and_tell_each_other_their_homes() {
    // Same node name in both regions (each cluster names its pods alike): not "myself".
    let (a, mut a_rx) = region_node("pylon-0", "eu", secrets(b"eu cluster", Some(b"regions")));
    let (b, mut b_rx) = region_node("pylon-0", "us", secrets(b"us cluster", Some(b"regions")));
    a.dial(addr(&b));
    let link = up(&mut a_rx).await;
    assert_eq!(link.peer().region, "us");
    // Between regions media stays on QUIC (a gateway forwards only the relay port).
    assert!(link.direct_port().is_none());
    assert!(up(&mut b_rx).await.direct_port().is_none());
    let home = RoomHome {
        room: "town".into(),
        node: "pylon-0".into(),
        address: "10.0.0.1:7890".into(),
    };
    assert!(link.send_homes(vec![home.clone()]));
    match next(&mut b_rx).await {
        Event::Homes(p, homes) => {
            assert_eq!((p.region.as_str(), homes), ("eu", vec![home]));
        }
        other => panic!("homes expected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_region_link_is_refused_with_the_cluster_secret_or_without_a_region_secret() {
    // The other region holds our cluster's secret as its region secret: not enough.
    let (a, mut a_rx) = region_node("a", "eu", secrets(b"shared", Some(b"regions")));
    let (b, mut b_rx) = region_node("b", "us", secrets(b"us cluster", Some(b"shared")));
    a.dial(addr(&b));
    // A node without `relay.secret` refuses other regions even if the secrets match.
    let (c, mut c_rx) = region_node("c", "ap", secrets(b"regions", None));
    a.dial(addr(&c));
    tokio::time::sleep(Duration::from_secs(1)).await;
    for rx in [&mut a_rx, &mut b_rx, &mut c_rx] {
        assert!(rx.try_recv().is_err(), "no link");
    }
    let refused = |r: &Relay| r.stats().refused.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((refused(&a), refused(&b), refused(&c)), (2, 1, 1));
}
