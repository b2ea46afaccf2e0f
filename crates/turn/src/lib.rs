//! Pylon's embedded TURN server, sans-IO: see `docs/turn.md` for why it is ours and not a
//! library's, and `crates/server/src/turn.rs` for the sockets around it.
//!
//! - [`stun`]: the STUN/TURN message codec and TCP framing.
//! - [`credentials`]: the short-lived credentials clients get in the join response.
//! - [`peer`]: the peer policy (only the node's own media sockets are reachable).
//! - [`server`]: allocations, permissions, channels.
//! - [`client`]: the client side of the requests, for tests and the benchmark.

pub mod client;
pub mod credentials;
pub mod peer;
pub mod server;
pub mod stun;

pub use credentials::{Credential, TurnSecret, REALM};
pub use peer::{PeerPolicy, Refusal};
pub use server::{Client, FromClient, RelayBinder, ServerConfig, Stats, Transport, TurnServer};
