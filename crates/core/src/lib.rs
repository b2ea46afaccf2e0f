//! Pylon's sans-IO SFU core.
//!
//! A [`Shard`] owns rooms, participants and their str0m peer connections. The runtime feeds
//! it inputs with the current time and drains [`Output`]s; nothing here reads a clock,
//! spawns a task or takes a lock. See `docs/architecture.md`.

// LiveKit marks fields deprecated that today's SDKs still send and read; we must speak them.
#![allow(deprecated)]

pub mod admin;
pub mod config;
pub mod data;
pub mod forwarder;
pub mod ids;
pub mod keyframe;
pub mod limits;
mod media;
pub mod participant;
pub mod room;
pub mod shard;
mod signal;
pub mod vp8_munger;

pub use config::{RoomDefaults, ShardConfig};
pub use shard::{JoinError, JoinParams, Output, ResumeParams, Shard, ShardStats};
