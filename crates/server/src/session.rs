//! One signalling WebSocket: frames in → decoded requests to the worker; worker messages →
//! frames out. A frame we cannot decode disconnects this participant only.

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use livekit_protocol as lk;
use prost::Message as _;
use pylon_core::ids::SessionId;
use tokio::sync::mpsc;
use tracing::debug;

use crate::worker::{Command, SessionEvent, WorkerHandle};

/// Largest signal frame accepted; SDP with many tracks stays well below this.
pub const MAX_FRAME: usize = 1 << 20;

/// Tells the worker the session ended, even if the upgrade never happened.
pub struct CloseGuard {
    worker: WorkerHandle,
    session: SessionId,
}

impl CloseGuard {
    pub fn new(worker: WorkerHandle, session: SessionId) -> Self {
        Self { worker, session }
    }
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.worker.send(Command::Closed {
            session: self.session,
        });
    }
}

pub async fn run(
    socket: WebSocket,
    session: SessionId,
    mut rx: mpsc::Receiver<SessionEvent>,
    guard: CloseGuard,
) {
    let (mut sink, mut stream) = socket.split();
    let mut json = false;
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(SessionEvent::Message(msg)) => {
                    let frame = if json {
                        match serde_json::to_string(&*msg) {
                            Ok(s) => Message::Text(s.into()),
                            Err(_) => continue,
                        }
                    } else {
                        Message::Binary(msg.encode_to_vec().into())
                    };
                    if sink.send(frame).await.is_err() {
                        break;
                    }
                }
                Some(SessionEvent::Close) | None => {
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
            },
            frame = stream.next() => match frame {
                Some(Ok(Message::Binary(b))) => {
                    let cmd = decode_binary(session, &b);
                    guard.worker.send(cmd);
                }
                Some(Ok(Message::Text(t))) => {
                    json = true;
                    let cmd = match serde_json::from_str::<lk::SignalRequest>(&t) {
                        Ok(req) => Command::Signal { session, req: Box::new(req) },
                        Err(e) => Command::Violation { session, why: format!("malformed JSON signal message: {e}") },
                    };
                    guard.worker.send(cmd);
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => {
                    debug!(%session, "websocket error: {e}");
                    break;
                }
            },
        }
    }
    // Flush what the worker already queued (e.g. a Leave) is best effort; the guard's drop
    // tells the worker the session is gone.
    drop(guard);
}

fn decode_binary(session: SessionId, b: &[u8]) -> Command {
    if b.len() > MAX_FRAME {
        return Command::Violation {
            session,
            why: format!("signal frame of {} bytes exceeds {MAX_FRAME}", b.len()),
        };
    }
    match lk::SignalRequest::decode(b) {
        Ok(req) => Command::Signal {
            session,
            req: Box::new(req),
        },
        Err(e) => Command::Violation {
            session,
            why: format!("malformed signal message: {e}"),
        },
    }
}
