//! Pylon's sans-IO SFU core.
//!
//! A [`Shard`] owns the instances of rooms at one place, the participants hosted there and
//! their str0m peer connections, and mirrors of the participants the room's other places
//! host ([`relay`] is the seam between places). The runtime feeds it inputs with the current
//! time and drains [`Output`]s; nothing here reads a clock, spawns a task or takes a lock.
//! See `docs/architecture.md`.

// LiveKit marks fields deprecated that today's SDKs still send and read; we must speak them.
#![allow(deprecated)]

pub mod admin;
pub mod allocator;
pub mod client;
pub mod codec_order;
pub mod command;
pub mod config;
pub mod data;
mod datachannel;
pub mod datatrack;
mod downlink;
pub mod dynacast;
mod events;
mod forward;
pub mod forwarder;
pub mod ids;
pub mod join_request;
pub mod keyframe;
pub mod limits;
pub mod loss;
mod membership;
mod mirror;
pub mod msid;
pub mod negotiation;
pub mod participant;
pub mod peer;
mod publish;
pub mod quality;
pub mod red;
pub mod relay;
pub mod resend;
pub mod room;
pub mod shard;
mod signal;
pub mod single_pc;
pub mod speakers;
pub mod standing_queue;
mod subscribe;
pub mod svc;
pub mod temporal;
pub mod timers;
pub mod track;
pub mod vp8_munger;

pub use command::SignalCommand;
pub use config::{CongestionControl, IceCredentials, RoomDefaults, ShardConfig};
pub use room::{Placement, RoomRecord};
pub use shard::{JoinError, JoinParams, Output, Received, ResumeParams, Shard, ShardEvent, ShardStats};
