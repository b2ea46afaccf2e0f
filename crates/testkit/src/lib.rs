//! Pylon's own test client and process harness.
//!
//! [`Server`] runs the real `pylon` binary on free loopback ports; [`Client`] joins it the way
//! a LiveKit SDK does in dual-PeerConnection mode (`/rtc` WebSocket, protobuf frames, a
//! publisher and a subscriber str0m peer in RTP mode), publishes RTP and data, and records
//! what it receives. Integration tests and `pylon load-test` are built on it.

mod client;
mod data;
mod driver;
mod error;
mod event;
mod peer;
mod sdp;
mod server;
mod token;
mod track;
pub mod vp8;

pub use client::{Client, ClientOptions, DEFAULT_TIMEOUT, PROTOCOL};
pub use data::{user_packet, DataKind, ReceivedData, LOSSY_LABEL, RELIABLE_LABEL};
pub use error::{ClientError, ServerError};
pub use event::{ClientEvent, Observed};
pub use peer::{
    client_rtc, client_rtc_with_crypto, client_rtc_with_red, client_rtc_with_vp9, PcKind, Peer, Transport,
};
pub use server::{Server, ServerOptions, TEST_API_KEY, TEST_API_SECRET};
pub use token::{ApiCredentials, TOKEN_VALIDITY_SECS};
pub use track::{LocalTrack, ReceivedRtp, RemoteTrack, RtpOut, TrackSpec, SIMULCAST_RIDS};

/// Re-exported so callers need not depend on them directly.
pub use livekit_protocol;
pub use str0m::media::{MediaKind, Mid};

/// Send the test process's `tracing` output (filtered by `RUST_LOG`) to the test harness's
/// captured output. Safe to call from every test.
pub fn init_test_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
