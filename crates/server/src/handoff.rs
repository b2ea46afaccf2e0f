//! Handing a datagram to the worker that owns its peer, without a lock or an allocation per
//! datagram in steady state.
//!
//! The landing worker copies the datagram into a buffer from its own pool and puts it in the
//! owner's inbox; the owner, once done, gives the buffer back through a bounded lock-free queue
//! (`std::sync::mpsc::sync_channel`, a fixed ring) without waking anyone: the landing worker
//! takes from its pool the next time it needs a buffer. A pool that ran dry allocates; a full
//! return queue drops the buffer. Both are bounded.

use std::net::SocketAddr;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use crate::directory::WorkerId;

/// Largest datagram handed over; WebRTC keeps packets under the path MTU.
pub const MAX_DATAGRAM: usize = 2048;

/// Buffers a worker keeps for reuse.
pub const POOL_SIZE: usize = 1024;

/// A datagram that landed on another worker's socket.
pub struct Handoff {
    pub from: WorkerId,
    pub source: SocketAddr,
    /// The datagram, in a buffer of the landing worker's pool.
    pub buf: Vec<u8>,
}

/// A worker's own buffers, and the queue they come home by.
pub struct Pool {
    home: Receiver<Vec<u8>>,
    returns: SyncSender<Vec<u8>>,
}

impl Default for Pool {
    fn default() -> Self {
        Self::with_capacity(POOL_SIZE)
    }
}

impl Pool {
    /// A pool keeping at most `n` returned buffers.
    pub fn with_capacity(n: usize) -> Self {
        let (returns, home) = sync_channel(n);
        Self { home, returns }
    }

    /// An empty buffer (a returned one if any) with room for a datagram and its framing.
    pub fn buffer(&self) -> Vec<u8> {
        let mut buf = self
            .home
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(MAX_DATAGRAM + 2));
        buf.clear();
        buf
    }

    /// Where other workers give this pool's buffers back.
    pub fn returns(&self) -> SyncSender<Vec<u8>> {
        self.returns.clone()
    }

    /// Package `bytes` from `source` for the owner; `None` if it is too large to be a
    /// datagram of ours.
    pub fn package(&self, from: WorkerId, source: SocketAddr, bytes: &[u8]) -> Option<Handoff> {
        if bytes.len() > MAX_DATAGRAM {
            return None;
        }
        let mut buf = self.buffer();
        buf.extend_from_slice(bytes);
        Some(Handoff { from, source, buf })
    }
}

/// Give a handed-off buffer back to the pool it came from.
pub fn give_back(returns: &SyncSender<Vec<u8>>, buf: Vec<u8>) {
    let _ = returns.try_send(buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_home_and_are_reused() {
        let pool = Pool::default();
        let src: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let h = pool.package(1, src, b"datagram").unwrap();
        assert_eq!(h.buf, b"datagram");
        let ptr = h.buf.as_ptr();
        give_back(&pool.returns(), h.buf);
        let again = pool.package(1, src, b"next").unwrap();
        assert_eq!(again.buf.as_ptr(), ptr, "the returned buffer is reused");
        assert!(pool.package(1, src, &[0; MAX_DATAGRAM + 1]).is_none());
    }
}
