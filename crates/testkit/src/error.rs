//! Errors of the test client and the server harness, split by who is at fault.

use std::time::Duration;

/// Why a [`crate::Client`] operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the WebSocket upgrade with an HTTP status.
    #[error("server refused the join with HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    /// The server broke the protocol (wrong first message, undecodable frame, bad SDP).
    #[error("server violated the protocol: {0}")]
    Protocol(String),
    /// The server sent `leave` instead of `join` as its first message.
    #[error("server sent leave as its first message (reason {reason})")]
    LeftBeforeJoin { reason: i32 },
    /// The server did not answer in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    /// The server refused a request (e.g. AddTrack without permission).
    #[error("server refused the request: {0}")]
    NotAllowed(String),
    /// The caller asked for something this client cannot do in its state.
    #[error("invalid use of the client: {0}")]
    Usage(String),
    /// The client's event loop is gone (signalling closed or a peer connection failed).
    #[error("client is closed: {0}")]
    Closed(String),
    /// Socket or WebSocket I/O.
    #[error("i/o: {0}")]
    Io(String),
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e.to_string())
    }
}

/// Why the [`crate::Server`] harness could not start or query the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot prepare the server: {0}")]
    Setup(String),
    #[error("server exited before it was ready ({status}); log {log}:\n{tail}")]
    Exited {
        status: String,
        log: String,
        tail: String,
    },
    #[error("server not ready after {after:?}; log {log}:\n{tail}")]
    NotReady {
        after: Duration,
        log: String,
        tail: String,
    },
    #[error("http request failed: {0}")]
    Http(String),
}
