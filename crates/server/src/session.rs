//! One signalling WebSocket: frames in → decoded requests to the worker; worker messages →
//! frames out. A frame we cannot decode disconnects this participant only. A client that
//! sends nothing for LiveKit's ping timeout (the SDKs ping every 5 s) is gone even if its TCP
//! connection looks open (a frozen process, a half-open path): the session ends, and the
//! participant leaves like any other whose signal died (after the resume window).

use axum::extract::ws::{Message, WebSocket};
use futures_util::FutureExt;
use futures_util::{SinkExt, StreamExt};
use livekit_protocol as lk;
use prost::Message as _;
use pylon_core::ids::SessionId;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

use crate::worker::{Command, SessionEvent, WorkerHandle};

/// Largest signal frame accepted (binary or JSON); SDP with many tracks stays well below
/// this. A larger one disconnects its sender with a precise reason; the WebSocket layer
/// refuses anything over [`MAX_MESSAGE`] before it is buffered whole.
pub const MAX_FRAME: usize = 1 << 20;
pub const MAX_MESSAGE: usize = 2 * MAX_FRAME;

/// A WebSocket's read buffer: signal frames are small (an SDP offer is a few KiB); a larger
/// frame grows it for its own read. The library's default, 128 KiB, per participant was a
/// noticeable share of a node's memory.
pub const READ_BUFFER: usize = 16 * 1024;
/// The most a WebSocket buffers before writing; every message is flushed at once anyway.
pub const WRITE_BUFFER: usize = 16 * 1024;

/// The signal messages a client may send: a burst of [`SIGNAL_BURST`], refilled at
/// [`SIGNAL_RATE`] a second. An SDK sends a few a second (pings every 5 s, track settings as
/// its video elements resize) and a few hundred at most when it joins with many tracks and
/// candidates. A client over the budget is told `Leave` (`SIGNAL_CLOSE`) and disconnected, so
/// no client can queue unbounded work on a media worker that serves other participants.
pub const SIGNAL_BURST: u32 = 1000;
pub const SIGNAL_RATE: u32 = 200;

/// A token bucket of signal messages.
struct Budget {
    tokens: f64,
    at: tokio::time::Instant,
}

impl Budget {
    fn new() -> Self {
        Self {
            tokens: f64::from(SIGNAL_BURST),
            at: tokio::time::Instant::now(),
        }
    }

    /// Take one message's token; false when the budget is spent.
    fn take(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * f64::from(SIGNAL_RATE);
        self.tokens = (self.tokens + refill).min(f64::from(SIGNAL_BURST));
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

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
    mut failing: watch::Receiver<bool>,
) {
    let (mut sink, mut stream) = socket.split();
    let mut json = false;
    let silence = std::time::Duration::from_secs(pylon_core::config::PING_TIMEOUT_SECS as u64);
    let mut deadline = tokio::time::Instant::now() + silence;
    let mut budget = Budget::new();
    // Set once the client went over its budget: its frames are dropped unread while the
    // worker's Leave goes out; the session ends at the worker's Close or at `deadline`.
    let mut flooded = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                info!(%session, "no signal from the client for the ping timeout: session ended");
                break;
            }
            // The node is failing (a media worker died): the client should come back through
            // the load balancer, to this node once restarted or to another.
            Ok(()) = failing.wait_for(|f| *f).map(|r| r.map(|_| ())) => {
                leave_and_close(&mut sink, &mut stream, json).await;
                break;
            }
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
                Some(SessionEvent::Close) => {
                    close_cleanly(&mut sink, &mut stream).await;
                    break;
                }
                // The worker dropped the session without closing it: it died.
                None => {
                    leave_and_close(&mut sink, &mut stream, json).await;
                    break;
                }
            },
            frame = stream.next() => match frame.inspect(|_| if !flooded { deadline = tokio::time::Instant::now() + silence }) {
                Some(Ok(Message::Binary(_) | Message::Text(_))) if flooded => {}
                Some(Ok(Message::Binary(_) | Message::Text(_))) if !budget.take() => {
                    flooded = true;
                    deadline = tokio::time::Instant::now() + CLOSE_HANDSHAKE;
                    guard.worker.send(Command::Flood { session });
                }
                Some(Ok(Message::Binary(b))) => {
                    let cmd = decode_binary(session, &b);
                    guard.worker.send(cmd);
                }
                Some(Ok(Message::Text(t))) => {
                    json = true;
                    let cmd = if t.len() > MAX_FRAME {
                        Command::Violation { session, why: format!("signal frame of {} bytes exceeds {MAX_FRAME}", t.len()) }
                    } else {
                        match serde_json::from_str::<lk::SignalRequest>(&t) {
                            Ok(req) => command(session, req),
                            Err(e) => Command::Violation { session, why: format!("malformed JSON signal message: {e}") },
                        }
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

/// Tell the client to reconnect (LiveKit `Leave`, action RECONNECT), then close.
async fn leave_and_close<S, R>(sink: &mut S, stream: &mut R, json: bool)
where
    S: futures_util::Sink<Message> + Unpin,
    R: futures_util::Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let leave = lk::SignalResponse {
        message: Some(lk::signal_response::Message::Leave(lk::LeaveRequest {
            can_reconnect: true,
            reason: lk::DisconnectReason::ServerShutdown as i32,
            action: lk::leave_request::Action::Reconnect as i32,
            regions: None,
        })),
    };
    let frame = if json {
        serde_json::to_string(&leave)
            .map(|s| Message::Text(s.into()))
            .ok()
    } else {
        Some(Message::Binary(leave.encode_to_vec().into()))
    };
    if let Some(frame) = frame {
        let _ = sink.send(frame).await;
    }
    close_cleanly(sink, stream).await;
}

/// How long the client gets to answer our Close frame.
const CLOSE_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(2);

/// Close with code 1000 and wait (briefly) for the client's Close: browsers report a socket
/// dropped before the closing handshake as "closed unexpectedly" (`wasClean` false, 1005), and
/// livekit-client logs that as an error.
async fn close_cleanly<S, R>(sink: &mut S, stream: &mut R)
where
    S: futures_util::Sink<Message> + Unpin,
    R: futures_util::Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let frame = axum::extract::ws::CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "".into(),
    };
    if sink.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE, async {
        while let Some(Ok(m)) = stream.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

fn decode_binary(session: SessionId, b: &[u8]) -> Command {
    if b.len() > MAX_FRAME {
        return Command::Violation {
            session,
            why: format!("signal frame of {} bytes exceeds {MAX_FRAME}", b.len()),
        };
    }
    match lk::SignalRequest::decode(b) {
        Ok(req) => command(session, req),
        Err(e) => Command::Violation {
            session,
            why: format!("malformed signal message: {e}"),
        },
    }
}

/// The core's command for a decoded request, or the violation that disconnects its sender.
fn command(session: SessionId, req: lk::SignalRequest) -> Command {
    match crate::wire::signal_command(req) {
        Ok(cmd) => Command::Signal {
            session,
            cmd: Box::new(cmd),
        },
        Err(e) => Command::Violation {
            session,
            why: e.to_string(),
        },
    }
}
