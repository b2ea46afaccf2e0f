//! Links between nodes (and, next, regions): one authenticated, encrypted QUIC connection per
//! pair of places, carrying the core's relay messages (`pylon_core::relay`) for every room
//! they share.
//!
//! - `tls`: QUIC's encryption, with throwaway self-signed certificates;
//! - `auth`: who the peer is, proven with the cluster's shared secret over the TLS session;
//! - `wire`: the messages as protobuf frames, versioned by field number;
//! - `link`: an established link — state on a reliable stream, media as datagrams;
//! - `endpoint`: the node's relay socket, accepting and dialling.
//!
//! Not wired into `pylon serve` yet: the node directory (Redis) that tells nodes whom to link
//! to comes with it.

pub mod auth;
pub mod endpoint;
pub mod link;
pub mod tls;
pub mod wire;

pub use auth::{Peer, Refusal};
pub use endpoint::{Relay, RelayConfig};
pub use link::{LinkHandle, RelayStats};

use pylon_core::relay::RelayMessage;

/// Why the relay endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("relay setup failed: {0}")]
    Setup(String),
}

/// Where established links, their messages and their ends are reported (the node routes them
/// to its workers). Called from the links' tasks: implementations must not block.
pub trait Inbound: Send + Sync + 'static {
    fn link_up(&self, link: LinkHandle);
    fn link_down(&self, peer: &Peer);
    fn message(&self, peer: &Peer, msg: RelayMessage);
}
