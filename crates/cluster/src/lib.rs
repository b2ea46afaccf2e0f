//! The region's directory in Redis: node leases, room records, room instances, identities
//! and participant slots, shared by the `pylon` nodes of one region.
//!
//! Redis is a directory only, never on the media or signalling path: when it is down, rooms
//! keep running and every call here fails fast with [`DirectoryError::Unavailable`]; when it
//! is back (even empty), [`Directory::renew`] answers [`Lease::Acquired`] and the node calls
//! [`Directory::reregister`] with what it holds. See `RENEW_INTERVAL` and `LEASE_TTL`.
//!
//! # Key schema
//! Every key starts with `pylon:{<region>}:` (the region is a hash tag: one slot per region).
//! Node ids and region names are `[A-Za-z0-9_.-]{1,64}`; room names, chosen by users, are
//! always the last part of a key.
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `node:<node>` | string, TTL [`LEASE_TTL`] | the lease: JSON `{node, region, relay_addr, participants, started_at_ms}` |
//! | `nodes` | set | node ids that registered (dead ones are removed by [`Directory::reap_dead_nodes`]) |
//! | `held:<node>` | set | rooms the node has an instance of |
//! | `rooms` | set | rooms with a record or instances |
//! | `epoch` | string | the last epoch issued (decimal) |
//! | `room:<room>` | hash | the record: `sid`, `created_ms`, `metadata`, `empty_timeout`, `departure_timeout`, `max_participants`, `home`, `epoch` |
//! | `instances:<room>` | set | nodes with an instance of the room |
//! | `identities:<room>` | hash | identity → `"<node> <participant sid>"` |
//! | `slots:<room>` | hash | node → participants it hosts (or reserved) in the room |
//!
//! Every change that touches more than one key is one Lua script (`src/lua/`), so it is
//! atomic. Readers ignore entries of nodes whose lease expired (instances, identities, slots);
//! the reaper deletes them later.
//!
//! # Fencing
//! A node becomes a room's home by creating its record or by taking over a record whose
//! home's lease expired; Redis then issues a new [`Epoch`], strictly above every earlier one.
//! Between two records of one room the higher epoch wins: re-registration never replaces a
//! record with a higher epoch, and a home deletes its room fenced by its epoch.
//!
//! # Not supported
//! Redis Cluster (`cluster_addresses` is refused: use one Redis or Sentinel).

mod config;
mod directory;
mod error;
mod health;
mod identity;
mod ids;
mod instances;
mod keys;
mod lease;
mod link;
mod lua;
mod reply;
mod reregister;
mod room;
mod slots;

pub use config::{ConfigError, Credentials, RedisConfig, Server, ServerAddr, Target};
pub use directory::Directory;
pub use error::DirectoryError;
pub use health::PROBE_TIMEOUT;
pub use identity::IdentityEntry;
pub use ids::{Epoch, InvalidName, NodeId, RegionName, RelayAddr};
pub use lease::{Lease, LiveNode, NodeInfo, LEASE_TTL, RENEW_INTERVAL};
pub use link::COMMAND_TIMEOUT;
pub use reregister::{HeldRoom, Reregistration};
pub use room::{Claim, NewRoom, RoomRecord, RoomSettings};
pub use slots::Reservation;
