//! The embedded TURN server (`turn:` block) against raw TURN requests, over UDP and TLS: the
//! requests a hostile client would make and a real client never does. That real clients relay
//! media through it is `tests/e2e/test_networks.py` (the Python SDK, UDP blocked but TURN).
//!
//! In these tests the node's media address is 127.0.0.1:<rtc.udp_port> (dev mode), so
//! loopback is reachable on exactly that port and refused on every other.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pylon_testkit::{Server, ServerOptions, TEST_API_SECRET};
use pylon_turn::client::{self, Session};
use pylon_turn::stun::{attr, Class, Message};
use pylon_turn::{TurnSecret, REALM};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const DOMAIN: &str = "turn.pylon.test";
const RELAY_RANGE: (u16, u16) = (31000, 31999);

struct Turn {
    server: Server,
    udp: SocketAddr,
    tls: SocketAddr,
    /// The certificate the server presents (self-signed for [`DOMAIN`]).
    cert: rustls::pki_types::CertificateDer<'static>,
    /// Where its certificate and key files are: removed with it.
    dir: std::path::PathBuf,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let t = std::net::TcpListener::bind(u.local_addr().unwrap()).ok();
    match t {
        Some(_) => u.local_addr().unwrap().port(),
        None => free_port(),
    }
}

async fn start(name: &str) -> Turn {
    let cert = rcgen::generate_simple_self_signed(vec![DOMAIN.to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("pylon-turn-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let (udp, tls) = (free_port(), free_port());
    let mut opts = ServerOptions::new(env!("CARGO_BIN_EXE_pylon"), name);
    opts.extra_yaml = format!(
        "turn:\n  enabled: true\n  udp_port: {udp}\n  tls_port: {tls}\n  domain: {DOMAIN}\n  cert_file: {}\n  key_file: {}\n  relay_range_start: {}\n  relay_range_end: {}\n",
        cert_file.display(),
        key_file.display(),
        RELAY_RANGE.0,
        RELAY_RANGE.1
    );
    let server = Server::start_with(opts).await.expect("server with TURN starts");
    Turn {
        server,
        udp: SocketAddr::from(([127, 0, 0, 1], udp)),
        tls: SocketAddr::from(([127, 0, 0, 1], tls)),
        cert: cert.cert.der().clone(),
        dir,
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// One request over UDP; the reply's bytes.
fn ask_udp(sock: &UdpSocket, to: SocketAddr, req: &[u8]) -> Vec<u8> {
    sock.send_to(req, to).unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).expect("the TURN server answers");
    buf.truncate(n);
    buf
}

fn code(reply: &[u8]) -> (Class, Option<u16>) {
    let m = Message::parse(reply).expect("a STUN reply");
    (m.class, m.error_code())
}

/// The credential the join response gave this participant, and its URLs.
async fn credential(t: &Turn, identity: &str) -> (Vec<String>, String, String, String) {
    let c = t.server.client("turn", identity).await.expect("joins");
    let ice = c.join_response().ice_servers.clone();
    assert_eq!(ice.len(), 1, "one ICE server, the node's own TURN: {ice:?}");
    let s = &ice[0];
    (
        s.urls.clone(),
        s.username.clone(),
        s.credential.clone(),
        c.sid().to_string(),
    )
}

/// A fresh session that went through the 401 challenge over UDP.
fn challenged(sock: &UdpSocket, to: SocketAddr, user: &str, pass: &str) -> Session {
    let mut s = Session::new(user, pass, REALM);
    let mut buf = Vec::new();
    client::allocate_unauthenticated(&mut buf, [1; 12]);
    let reply = ask_udp(sock, to, &buf);
    assert_eq!(code(&reply), (Class::Error, Some(401)));
    s.challenged(&Message::parse(&reply).unwrap());
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_response_hands_out_a_short_lived_credential_per_participant() {
    let t = start("turn_join").await;
    let (urls, user, pass, sid) = credential(&t, "alice").await;
    assert_eq!(
        urls,
        vec![
            format!("turn:127.0.0.1:{}?transport=udp", t.udp.port()),
            format!("turns:{DOMAIN}:{}?transport=tcp", t.tls.port()),
        ]
    );
    let (expiry, who) = user.split_once(':').expect("<expiry>:<participant>");
    assert_eq!(who, sid);
    let left = expiry.parse::<u64>().unwrap() - unix_now();
    assert!((250..=300).contains(&left), "expires in about 300 s, not {left}");
    let (_, bob_user, bob_pass, _) = credential(&t, "bob").await;
    assert_ne!(
        (user, pass),
        (bob_user, bob_pass),
        "each participant gets its own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_turn_over_udp_refuses_bad_credentials_and_forbidden_peers() {
    let t = start("turn_udp").await;
    let (_, user, pass, sid) = credential(&t, "mallory").await;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();

    // Wrong, expired and foreign credentials: 401, and no allocation.
    let secret = TurnSecret::derive(TEST_API_SECRET.as_bytes());
    let expired = secret.mint(&sid, unix_now() - 1000, 300);
    let foreign = TurnSecret::derive(b"another deployment's secret").mint(&sid, unix_now(), 300);
    for (u, p, what) in [
        (user.as_str(), "not the password", "a wrong password"),
        (
            expired.username.as_str(),
            expired.password.as_str(),
            "an expired credential",
        ),
        (
            foreign.username.as_str(),
            foreign.password.as_str(),
            "another secret's credential",
        ),
    ] {
        let s = challenged(&sock, t.udp, u, p);
        s.allocate(&mut buf, [2; 12]);
        assert_eq!(
            code(&ask_udp(&sock, t.udp, &buf)),
            (Class::Error, Some(401)),
            "{what}"
        );
    }

    // The join response's credential allocates a relay in the configured range.
    let s = challenged(&sock, t.udp, &user, &pass);
    s.allocate(&mut buf, [3; 12]);
    let reply = ask_udp(&sock, t.udp, &buf);
    assert_eq!(code(&reply), (Class::Success, None));
    let m = Message::parse(&reply).unwrap();
    assert!(m.verify_integrity(&s.key));
    let relayed = m.xor_address(attr::XOR_RELAYED_ADDRESS).unwrap();
    assert!(
        (RELAY_RANGE.0..=RELAY_RANGE.1).contains(&relayed.port()),
        "{relayed}"
    );

    // Loopback, private, link-local (cloud metadata), unspecified and IPv4-in-IPv6 peers.
    for peer in [
        "10.0.0.1:80",
        "192.168.1.1:80",
        "169.254.169.254:80",
        "100.100.100.200:80",
        "0.0.0.0:80",
        "[::1]:80",
        "[::]:80",
        "[::ffff:127.0.0.1]:80",
        "[64:ff9b::a9fe:a9fe]:80",
        "8.8.8.8:53",
    ] {
        s.create_permission(&mut buf, [4; 12], peer.parse().unwrap());
        assert_eq!(
            code(&ask_udp(&sock, t.udp, &buf)),
            (Class::Error, Some(403)),
            "{peer}"
        );
    }
    // 127.0.0.1 is the node's media address here, so a permission for it is granted, but only
    // its media port is reachable: a channel to another loopback port is refused, and a Send
    // to a listener on loopback never arrives.
    let victim = UdpSocket::bind("127.0.0.1:0").unwrap();
    victim.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let victim_addr = victim.local_addr().unwrap();
    s.create_permission(&mut buf, [5; 12], victim_addr);
    assert_eq!(code(&ask_udp(&sock, t.udp, &buf)), (Class::Success, None));
    s.channel_bind(&mut buf, [6; 12], 0x4000, victim_addr);
    assert_eq!(code(&ask_udp(&sock, t.udp, &buf)), (Class::Error, Some(403)));
    client::send_indication(&mut buf, [7; 12], victim_addr, b"to a loopback service");
    sock.send_to(&buf, t.udp).unwrap();
    pylon_turn::stun::write_channel_data(&mut buf, 0x4000, b"through an unbound channel", false);
    sock.send_to(&buf, t.udp).unwrap();
    let mut got = [0u8; 64];
    assert!(
        victim.recv_from(&mut got).is_err(),
        "nothing reaches a loopback port that is not the media port"
    );
    // The media port itself: a channel to it is granted.
    let media = SocketAddr::from(([127, 0, 0, 1], t.server.udp_port()));
    s.channel_bind(&mut buf, [8; 12], 0x4001, media);
    assert_eq!(code(&ask_udp(&sock, t.udp, &buf)), (Class::Success, None));

    // Refresh to 0 deletes the allocation; a permission afterwards finds none.
    s.refresh(&mut buf, [9; 12], 0);
    assert_eq!(code(&ask_udp(&sock, t.udp, &buf)), (Class::Success, None));
    s.create_permission(&mut buf, [10; 12], media);
    assert_eq!(code(&ask_udp(&sock, t.udp, &buf)), (Class::Error, Some(437)));
    assert!(t.server.log().contains("TURN server listening"));
}

fn tls_connector(cert: &rustls::pki_types::CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One request over a stream; the reply frame.
async fn ask_stream<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, req: &[u8]) -> Vec<u8> {
    s.write_all(req).await.unwrap();
    let mut head = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
        .await
        .expect("a reply in time")
        .unwrap();
    let len = pylon_turn::stun::stream_frame_len(&head).unwrap().unwrap();
    let mut frame = head.to_vec();
    frame.resize(len, 0);
    s.read_exact(&mut frame[4..]).await.unwrap();
    frame
}

async fn tls_allocate(t: &Turn, user: &str, pass: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(t.tls).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(DOMAIN).unwrap();
    let mut tls = tls_connector(&t.cert)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let mut buf = Vec::new();
    client::allocate_unauthenticated(&mut buf, [1; 12]);
    let reply = ask_stream(&mut tls, &buf).await;
    assert_eq!(code(&reply), (Class::Error, Some(401)));
    let mut s = Session::new(user, pass, REALM);
    s.challenged(&Message::parse(&reply).unwrap());
    s.allocate(&mut buf, [2; 12]);
    assert_eq!(code(&ask_stream(&mut tls, &buf).await), (Class::Success, None));
    s.create_permission(&mut buf, [3; 12], "169.254.169.254:80".parse().unwrap());
    assert_eq!(code(&ask_stream(&mut tls, &buf).await), (Class::Error, Some(403)));
    tls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_over_tls_allocates_and_hostile_streams_do_not_stall_it() {
    let t = start("turn_tls").await;
    let (_, user, pass, _) = credential(&t, "carol").await;
    let _first = tls_allocate(&t, &user, &pass).await;

    // Three hundred connections that never finish a TLS handshake, one that claims a
    // 64 KiB frame and drips, and one that sends bytes that are neither STUN nor ChannelData.
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(t.tls).await.unwrap());
    }
    let name = rustls::pki_types::ServerName::try_from(DOMAIN).unwrap();
    let tcp = TcpStream::connect(t.tls).await.unwrap();
    let mut drip = tls_connector(&t.cert).connect(name.clone(), tcp).await.unwrap();
    drip.write_all(&[0x40, 0x00, 0xFF, 0xFF, 1, 2, 3]).await.unwrap();
    drip.flush().await.unwrap();
    let tcp = TcpStream::connect(t.tls).await.unwrap();
    let mut junk = tls_connector(&t.cert).connect(name, tcp).await.unwrap();
    junk.write_all(&[0xFF; 32]).await.unwrap();
    junk.flush().await.unwrap();
    let mut end = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), junk.read(&mut end)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a stream of junk is closed: {closed:?}"
    );

    // Meanwhile a new client over TLS and one over UDP are served.
    let _second = tls_allocate(&t, &user, &pass).await;
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let s = challenged(&sock, t.udp, &user, &pass);
    let mut buf = Vec::new();
    s.allocate(&mut buf, [9; 12]);
    assert_eq!(code(&ask_udp(&sock, t.udp, &buf)), (Class::Success, None));
    drop(idle);
}
