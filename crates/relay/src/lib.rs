//! Links between nodes and between regions: one authenticated, encrypted QUIC connection per
//! pair of places, carrying the core's relay messages (`pylon_core::relay`) for every room
//! they share.
//!
//! - `tls`: QUIC's encryption, with throwaway self-signed certificates;
//! - `auth`: who the peer is, proven with the cluster's shared secret over the TLS session;
//! - `wire`: the messages as protobuf frames, versioned by field number;
//! - `link`: an established link — state on a reliable stream, media as datagrams;
//! - `direct`: media between nodes of one region as sealed UDP datagrams beside QUIC;
//! - `endpoint`: the node's relay socket, accepting and dialling.
//!
//! `pylon serve` uses it when a `redis:` block makes it a node of a region
//! (`pylon_server::cluster`).

pub mod auth;
pub mod direct;
pub mod endpoint;
pub mod link;
pub mod tls;
pub mod wire;

pub use auth::Secrets;
pub use auth::{Peer, Refusal};
pub use endpoint::{Relay, RelayConfig};
pub use link::{LinkHandle, RelayStats};
pub use wire::RoomHome;

use pylon_core::relay::RelayMessage;

/// Why the relay endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("relay setup failed: {0}")]
    Setup(String),
}

/// Where established links and their ends are reported (the node routes their messages to
/// its workers). Called from the links' tasks: implementations must not block.
pub trait Inbound: Send + Sync + 'static {
    /// A link is up. What it delivers goes to the returned receiver, which the link's reader
    /// task owns: per-link routing state needs no lock.
    fn link_up(&self, link: LinkHandle) -> Box<dyn Receiver>;
    /// The link ended (the handle says which one, should two links to one peer overlap).
    fn link_down(&self, link: &LinkHandle);
}

/// The messages of one link, in the order the peer sent them (state and feedback; media
/// datagrams may overtake them).
pub trait Receiver: Send + 'static {
    /// A message; the receiver may hold it until the next [`Receiver::flush`].
    fn message(&mut self, msg: RelayMessage);
    /// Nothing more has arrived for now: deliver what was held (the reader calls this after
    /// each stream frame and after each run of datagrams that were ready together, so a
    /// receiver can hand a run to its worker with one wake).
    fn flush(&mut self) {}
    /// Between regions: the peer's region says which of its nodes is home of these rooms.
    fn homes(&mut self, _homes: Vec<RoomHome>) {}
}
