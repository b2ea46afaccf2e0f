//! Proving membership of the cluster: both ends of a link show they hold the shared secret —
//! the cluster's (the region's API secret) between nodes of one region, `relay.secret`
//! between regions ([`Secrets`]).
//!
//! On the first bidirectional stream of a new QUIC connection:
//! ```text
//! dialer   -> acceptor  ClientHello  "PYLONREL" version nonce(32) node region
//! acceptor -> dialer    ServerHello  version nonce(32) node region proof(32)
//! dialer   -> acceptor  ClientProof  proof(32)
//! ```
//! A proof is HMAC-SHA256 with the secret over the role, both hellos and 32 bytes of keying
//! material exported from this connection's TLS session. The exporter differs for every
//! connection, so a recorded handshake replayed on another connection proves nothing, and a
//! man in the middle (two TLS sessions) cannot relay a proof either.

use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use tokio::io::AsyncReadExt;

/// Protocol version spoken; a peer that speaks another is refused with that reason.
pub const VERSION: u16 = 1;
const MAGIC: &[u8; 8] = b"PYLONREL";
const EXPORTER_LABEL: &[u8] = b"EXPORTER-pylon-relay";
const PROOF_LABEL: &[u8] = b"pylon-relay-v1";
/// A handshake that takes longer is abandoned.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Who is at the other end, once proven.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The peer node's name (unique in the cluster).
    pub node: String,
    pub region: String,
}

/// The secrets a node proves membership with.
#[derive(Clone)]
pub struct Secrets {
    /// Between nodes of the node's own region.
    pub cluster: Vec<u8>,
    /// Between regions (`relay.secret`); None: links from other regions are refused.
    pub regions: Option<Vec<u8>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

impl Secrets {
    /// Only the cluster's secret (no region links).
    pub fn cluster(secret: &[u8]) -> Secrets {
        Secrets {
            cluster: secret.to_vec(),
            regions: None,
        }
    }

    /// The secret a link between `mine` and `theirs` (regions) is proven with.
    fn between(&self, mine: &str, theirs: &str) -> Result<&[u8], Refusal> {
        if mine == theirs {
            return Ok(&self.cluster);
        }
        (self.regions.as_deref()).ok_or_else(|| Refusal::NoRegionLinks(theirs.to_string()))
    }
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("not a pylon relay (bad magic)")]
    NotPylon,
    #[error("relay protocol version {0} (we speak {VERSION})")]
    Version(u16),
    #[error("proof of the shared secret does not match (wrong relay secret, or a replayed handshake)")]
    BadProof,
    #[error("malformed handshake: {0}")]
    Malformed(&'static str),
    #[error("the peer calls itself by our own name")]
    Myself,
    #[error("a node of region {0:?} linked, but this node has no relay secret for other regions")]
    NoRegionLinks(String),
    #[error("handshake timed out")]
    Timeout,
    #[error("connection failed during the handshake: {0}")]
    Io(String),
}

pub(crate) struct Hello {
    pub(crate) nonce: [u8; 32],
    pub(crate) node: String,
    pub(crate) region: String,
}

pub(crate) fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    rand::rng().fill_bytes(&mut n);
    n
}

fn io(e: impl std::fmt::Display) -> Refusal {
    Refusal::Io(e.to_string())
}

pub(crate) async fn write_hello(send: &mut quinn::SendStream, magic: bool, h: &Hello) -> Result<(), Refusal> {
    let mut buf = Vec::with_capacity(64 + h.node.len() + h.region.len());
    if magic {
        buf.extend_from_slice(MAGIC);
    }
    buf.extend_from_slice(&VERSION.to_be_bytes());
    buf.extend_from_slice(&h.nonce);
    for s in [&h.node, &h.region] {
        let b = s.as_bytes();
        buf.push(u8::try_from(b.len()).map_err(|_| Refusal::Malformed("name longer than 255 bytes"))?);
        buf.extend_from_slice(b);
    }
    send.write_all(&buf).await.map_err(io)
}

async fn read_name(recv: &mut quinn::RecvStream) -> Result<String, Refusal> {
    let len = recv.read_u8().await.map_err(io)?;
    let mut b = vec![0u8; usize::from(len)];
    recv.read_exact(&mut b).await.map_err(io)?;
    String::from_utf8(b).map_err(|_| Refusal::Malformed("name is not UTF-8"))
}

pub(crate) async fn read_hello(recv: &mut quinn::RecvStream, magic: bool) -> Result<Hello, Refusal> {
    if magic {
        let mut m = [0u8; 8];
        recv.read_exact(&mut m).await.map_err(io)?;
        if &m != MAGIC {
            return Err(Refusal::NotPylon);
        }
    }
    let version = recv.read_u16().await.map_err(io)?;
    if version != VERSION {
        return Err(Refusal::Version(version));
    }
    let mut nonce = [0u8; 32];
    recv.read_exact(&mut nonce).await.map_err(io)?;
    let node = read_name(recv).await?;
    let region = read_name(recv).await?;
    if node.is_empty() {
        return Err(Refusal::Malformed("empty node name"));
    }
    Ok(Hello { nonce, node, region })
}

pub(crate) fn proof(
    secret: &[u8],
    role: u8,
    exporter: &[u8; 32],
    dialer: &Hello,
    acceptor: &Hello,
) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(PROOF_LABEL);
    mac.update(&[role]);
    mac.update(exporter);
    for h in [dialer, acceptor] {
        mac.update(&h.nonce);
        for s in [&h.node, &h.region] {
            mac.update(&(s.len() as u32).to_be_bytes());
            mac.update(s.as_bytes());
        }
    }
    mac.finalize().into_bytes().into()
}

pub(crate) fn exporter(conn: &quinn::Connection) -> Result<[u8; 32], Refusal> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .map_err(|_| Refusal::Io("no TLS keying material".into()))?;
    Ok(out)
}

fn verify(expected: &[u8; 32], got: &[u8; 32]) -> Result<(), Refusal> {
    // In constant time: every byte is compared whatever the first difference.
    let mut diff = 0u8;
    for (a, b) in expected.iter().zip(got) {
        diff |= a ^ b;
    }
    if diff == 0 {
        Ok(())
    } else {
        Err(Refusal::BadProof)
    }
}

/// Our side of a handshake on a connection we dialled.
pub async fn dial(conn: &quinn::Connection, secrets: &Secrets, me: &Peer) -> Result<Peer, Refusal> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(io)?;
        let mine = Hello {
            nonce: nonce(),
            node: me.node.clone(),
            region: me.region.clone(),
        };
        write_hello(&mut send, true, &mine).await?;
        let theirs = read_hello(&mut recv, false).await?;
        let secret = secrets.between(&me.region, &theirs.region)?;
        let mut their_proof = [0u8; 32];
        recv.read_exact(&mut their_proof).await.map_err(io)?;
        let ex = exporter(conn)?;
        verify(&proof(secret, b'A', &ex, &mine, &theirs), &their_proof)?;
        if theirs.node == me.node && theirs.region == me.region {
            return Err(Refusal::Myself);
        }
        send.write_all(&proof(secret, b'D', &ex, &mine, &theirs))
            .await
            .map_err(io)?;
        send.finish().map_err(io)?;
        Ok(Peer {
            node: theirs.node,
            region: theirs.region,
        })
    })
    .await
    .unwrap_or(Err(Refusal::Timeout))
}

/// Our side of a handshake on a connection we accepted.
pub async fn accept(conn: &quinn::Connection, secrets: &Secrets, me: &Peer) -> Result<Peer, Refusal> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let (mut send, mut recv) = conn.accept_bi().await.map_err(io)?;
        let theirs = read_hello(&mut recv, true).await?;
        if theirs.node == me.node && theirs.region == me.region {
            return Err(Refusal::Myself);
        }
        let secret = secrets.between(&me.region, &theirs.region)?;
        let mine = Hello {
            nonce: nonce(),
            node: me.node.clone(),
            region: me.region.clone(),
        };
        let ex = exporter(conn)?;
        write_hello(&mut send, false, &mine).await?;
        send.write_all(&proof(secret, b'A', &ex, &theirs, &mine))
            .await
            .map_err(io)?;
        let mut their_proof = [0u8; 32];
        recv.read_exact(&mut their_proof).await.map_err(io)?;
        verify(&proof(secret, b'D', &ex, &theirs, &mine), &their_proof)?;
        send.finish().map_err(io)?;
        Ok(Peer {
            node: theirs.node,
            region: theirs.region,
        })
    })
    .await
    .unwrap_or(Err(Refusal::Timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(node: &str) -> Hello {
        Hello {
            nonce: [node.len() as u8; 32],
            node: node.into(),
            region: "r".into(),
        }
    }

    #[test]
    fn proofs_bind_the_secret_the_role_and_the_session() {
        let (a, b) = (hello("a"), hello("bb"));
        let ex = [1u8; 32];
        let p = proof(b"secret", b'D', &ex, &a, &b);
        assert_eq!(p, proof(b"secret", b'D', &ex, &a, &b));
        assert_ne!(p, proof(b"other", b'D', &ex, &a, &b), "another secret");
        assert_ne!(p, proof(b"secret", b'A', &ex, &a, &b), "the other role");
        assert_ne!(p, proof(b"secret", b'D', &[2u8; 32], &a, &b), "another session");
        assert_ne!(p, proof(b"secret", b'D', &ex, &b, &a), "swapped ends");
        assert_eq!(verify(&p, &p), Ok(()));
        assert_eq!(verify(&p, &[0; 32]), Err(Refusal::BadProof));
    }
}

#[cfg(test)]
mod replay {
    //! A recorded handshake, replayed on a new connection, proves nothing.
    use std::sync::Arc;

    use super::*;
    use crate::{tls, Inbound, LinkHandle, Receiver, Relay, RelayConfig};
    use pylon_core::relay::RelayMessage;

    struct Nobody;
    impl Inbound for Nobody {
        fn link_up(&self, _: LinkHandle) -> Box<dyn Receiver> {
            Box::new(Nobody)
        }
        fn link_down(&self, _: &LinkHandle) {}
    }
    impl Receiver for Nobody {
        fn message(&mut self, _: RelayMessage) {}
    }

    /// A dialler's side written by hand: the hello with `nonce`, and then `forced` as its
    /// proof if given (else the honest one). Returns the proof it sent.
    async fn dial_by_hand(conn: &quinn::Connection, nonce: [u8; 32], forced: Option<[u8; 32]>) -> [u8; 32] {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let mine = Hello {
            nonce,
            node: "intruder".into(),
            region: "r".into(),
        };
        write_hello(&mut send, true, &mine).await.unwrap();
        let theirs = read_hello(&mut recv, false).await.unwrap();
        let mut their_proof = [0u8; 32];
        recv.read_exact(&mut their_proof).await.unwrap();
        let honest = proof(b"secret", b'D', &exporter(conn).unwrap(), &mine, &theirs);
        let sent = forced.unwrap_or(honest);
        send.write_all(&sent).await.unwrap();
        send.finish().unwrap();
        sent
    }

    #[tokio::test]
    async fn a_replayed_proof_is_refused() {
        let config = RelayConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            node: "acceptor".into(),
            region: "r".into(),
            secrets: Secrets::cluster(b"secret"),
            direct_media: true,
        };
        let relay = Relay::bind(config, Arc::new(Nobody)).unwrap();
        let target = relay.local_addr().unwrap();
        let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        client.set_default_client_config(tls::client_config().unwrap());
        let refused = || relay.stats().refused.load(std::sync::atomic::Ordering::Relaxed);

        // A member's genuine handshake (the acceptor accepts it).
        let first = client.connect(target, "pylon-relay").unwrap().await.unwrap();
        let recorded = dial_by_hand(&first, [7; 32], None).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(refused(), 0);

        // The same hello and proof on a new connection: refused.
        let second = client.connect(target, "pylon-relay").unwrap().await.unwrap();
        dial_by_hand(&second, [7; 32], Some(recorded)).await;
        let closed = tokio::time::timeout(std::time::Duration::from_secs(5), second.closed()).await;
        assert!(closed.is_ok(), "the replayed connection is closed");
        assert_eq!(refused(), 1);
    }
}
