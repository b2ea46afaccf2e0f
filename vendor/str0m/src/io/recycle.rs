//! Datagram buffers given back by the caller, reused for the next outgoing datagrams.
//!
//! Every SRTP/SRTCP datagram str0m sends is a `Vec<u8>` the caller receives in
//! [`Transmit::contents`][crate::net::Transmit]. A caller that copies the bytes into its own
//! socket buffers can hand the `Vec` back with [`recycle`]; the next datagram sent on the same
//! thread is then written into it instead of a new allocation. Callers that never recycle see
//! no change: buffers are only kept once something has been given back on that thread.
//!
//! The buffers live per thread (a media server drives its `Rtc` instances and sends their
//! output from one thread) and at most [`MAX_KEPT`] are kept, each with room for any datagram.

use std::cell::{Cell, RefCell};

use super::DATAGRAM_MAX_PACKET_SIZE;
use str0m_proto::DatagramSend;

/// Room in a kept buffer: any datagram plus the cipher's scratch and tag.
const CAPACITY: usize = DATAGRAM_MAX_PACKET_SIZE + 48;

/// At most this many buffers are kept per thread (about 2 MB).
const MAX_KEPT: usize = 1024;

thread_local! {
    static KEPT: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// Set once the caller has recycled on this thread: from then on new buffers are made
    /// with [`CAPACITY`], so that any of them can carry any later datagram.
    static RECYCLING: Cell<bool> = const { Cell::new(false) };
}

/// Gives a sent datagram's buffer back for the next outgoing datagram on this thread.
///
/// Call it once the datagram's bytes are no longer needed (copied into a socket buffer, or
/// sent). Buffers too small to carry any datagram are dropped.
pub fn recycle(datagram: DatagramSend) {
    let buf: Vec<u8> = datagram.into();
    if buf.capacity() < CAPACITY {
        // Not one of ours (or made before recycling started): from now on they are.
        let _ = RECYCLING.try_with(|r| r.set(true));
        return;
    }
    give_back(buf);
}

/// Keeps a buffer from [`buffer`] that str0m no longer needs (a scratch buffer), if it is
/// one with room for any datagram.
pub(crate) fn give_back(mut buf: Vec<u8>) {
    if buf.capacity() < CAPACITY {
        return;
    }
    buf.clear();
    let _ = KEPT.try_with(|k| {
        let mut k = k.borrow_mut();
        if k.len() < MAX_KEPT {
            k.push(buf);
        }
    });
}

/// A zeroed buffer of `len` bytes for an outgoing datagram: a recycled one if there is one.
pub(crate) fn buffer(len: usize) -> Vec<u8> {
    let kept = KEPT.try_with(|k| k.borrow_mut().pop()).ok().flatten();
    match kept {
        Some(mut buf) => {
            buf.resize(len, 0);
            buf
        }
        None if len <= CAPACITY && RECYCLING.try_with(Cell::get).unwrap_or(false) => {
            let mut buf = Vec::with_capacity(CAPACITY);
            buf.resize(len, 0);
            buf
        }
        None => vec![0; len],
    }
}
