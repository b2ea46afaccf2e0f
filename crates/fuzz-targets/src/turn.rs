//! The TURN core (`pylon-turn`): arbitrary datagrams and stream bytes from clients, requests
//! with arbitrary attributes that are correctly signed (so the authenticated handlers are
//! reached, not just the 401), and arbitrary datagrams from peers, with time passing. Nothing
//! panics, replies always parse, and only the node's media address is ever relayed to.
use pylon_turn::client::Session;
use pylon_turn::stun::{self, attr, Class, Message, Method, Writer};
use pylon_turn::{
    Client, FromClient, PeerPolicy, RelayBinder, ServerConfig, Transport, TurnSecret, TurnServer, REALM,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct Ports(u16);
impl RelayBinder for Ports {
    fn bind(&mut self, _v6: bool) -> Option<SocketAddr> {
        self.0 = self.0.wrapping_add(1);
        Some(SocketAddr::from(([10, 0, 0, 1], self.0)))
    }
}

const METHODS: [Method; 7] = [
    Method::Binding,
    Method::Allocate,
    Method::Refresh,
    Method::Send,
    Method::Data,
    Method::CreatePermission,
    Method::ChannelBind,
];

pub fn run(data: &[u8]) {
    let node: SocketAddr = "10.0.0.1:7882".parse().unwrap();
    let secret = TurnSecret::derive(b"fuzz");
    let mut now = Instant::now();
    let mut server = TurnServer::new(
        ServerConfig {
            policy: PeerPolicy::new(vec![node]),
            secret: secret.clone(),
            per_participant_limit: 3,
            max_allocations: 8,
        },
        now,
    );
    let cred = secret.mint("PA_fuzz", 1_000, 300);
    let mut session = Session::new(&cred.username, &cred.password, REALM);
    let (mut ports, mut out, mut buf) = (Ports(30000), Vec::new(), Vec::new());
    let clients = [
        Client {
            transport: Transport::Udp,
            addr: "192.0.2.1:5000".parse().unwrap(),
        },
        Client {
            transport: Transport::Stream,
            addr: "192.0.2.2:5000".parse().unwrap(),
        },
    ];
    // Every client starts allocated, so the rest reaches allocations, permissions, channels.
    for c in clients {
        pylon_turn::client::allocate_unauthenticated(&mut buf, [1; 12]);
        server.from_client(now, 1_000, c, &buf, &mut ports, &mut out);
        session.challenged(&Message::parse(&out).unwrap());
        session.allocate(&mut buf, [2; 12]);
        server.from_client(now, 1_000, c, &buf, &mut ports, &mut out);
    }
    let check = |action: FromClient<'_>, out: &[u8]| match action {
        FromClient::Reply => {
            Message::parse(out).expect("replies parse");
        }
        FromClient::Relay { peer, .. } => assert_eq!(peer, node, "only the node's media port"),
        FromClient::Nothing => {}
    };
    for (i, chunk) in data.split(|b| *b == 0xA5).enumerate() {
        let Some((&mode, rest)) = chunk.split_first() else {
            continue;
        };
        let client = clients[i % 2];
        match mode % 4 {
            0 => {
                let a = server.from_client(now, 1_000, client, rest, &mut ports, &mut out);
                check(a, &out);
            }
            1 => {
                // A signed request: method, then attributes as (type, length, value) records.
                let Some((&m, mut attrs)) = rest.split_first() else {
                    continue;
                };
                let method = METHODS[usize::from(m) % METHODS.len()];
                let mut w = Writer::new(&mut buf, method, Class::Request, [i as u8; 12]);
                while attrs.len() >= 3 {
                    let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
                    let len = usize::from(attrs[2]).min(attrs.len() - 3);
                    if kind != attr::MESSAGE_INTEGRITY && kind != attr::FINGERPRINT {
                        w.raw(kind, &attrs[3..3 + len]);
                    }
                    attrs = &attrs[3 + len..];
                }
                w.raw(attr::USERNAME, session.username.as_bytes())
                    .raw(attr::REALM, &session.realm)
                    .raw(attr::NONCE, &session.nonce)
                    .integrity(&session.key)
                    .fingerprint();
                let a = server.from_client(now, 1_000, client, &buf, &mut ports, &mut out);
                check(a, &out);
            }
            2 => {
                let relay = SocketAddr::from(([10, 0, 0, 1], 30001 + u16::from(mode >> 4) % 4));
                let peer = if mode & 0x08 == 0 {
                    node
                } else {
                    "10.0.0.1:9".parse().unwrap()
                };
                if server.from_peer(now, relay, peer, rest, &mut out).is_some() {
                    assert!(Message::parse(&out).is_ok() || stun::parse_channel_data(&out).is_some());
                }
            }
            _ => {
                // A byte stream, framed as the TLS/TCP listener frames it.
                let mut at = 0;
                while let Some(Ok(len)) = stun::stream_frame_len(&rest[at..]) {
                    let Some(frame) = rest.get(at..at + len) else {
                        break;
                    };
                    let a = server.from_client(now, 1_000, clients[1], frame, &mut ports, &mut out);
                    check(a, &out);
                    at += len;
                }
            }
        }
        now += Duration::from_secs(u64::from(mode >> 2));
        server.handle_timeout(now);
        while server.poll_released().is_some() {}
    }
    assert!(server.allocation_count() <= 8);
}
