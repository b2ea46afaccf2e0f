//! Media between the nodes of one region as plain UDP datagrams beside the link's QUIC
//! connection: sealed with AES-256-GCM under keys both ends export from the link's TLS
//! session, numbered, and checked against replays. No I/O here; `link.rs` owns the sockets.
//!
//! Why: a QUIC datagram costs each end its connection's state machine, packet protection,
//! acknowledgements and task hand-offs, about as much CPU as forwarding the packet to several
//! subscribers (docs/benchmarks.md, "Nodes of a region"). Inside a region the links run over
//! the cluster's own network, where that transport buys nothing media needs: a lost relayed
//! packet is repaired per hop by the subscriber's NACKs, and rates are per subscriber.
//! Between regions media stays on QUIC (a gateway Service forwards only the relay port).
//!
//! A datagram is `version (1) | packet number (8, big-endian) | sealed frame | tag (16)`: the
//! first nine bytes are the associated data, the packet number is the nonce (each direction
//! has its own key, so a nonce never repeats under one key), and a packet number already seen
//! or older than the last [`WINDOW`] is refused before any decryption.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

/// The format's version (first byte).
pub const VERSION: u8 = 1;
/// Version and packet number.
pub const HEADER: usize = 9;
/// AES-GCM's tag.
pub const TAG: usize = 16;
/// Largest datagram read; anything longer is cut short and fails its tag.
pub const MAX_DATAGRAM: usize = 2048;
/// Packet numbers behind the newest that are still accepted once (reordering on the path).
pub const WINDOW: u64 = 128;
/// Bytes of keying material a link exports: one key per direction.
pub const KEYING_MATERIAL: usize = 64;
/// The exporter label (RFC 5705 / RFC 8446 §7.5): distinct from anything else the session is
/// used for.
pub const LABEL: &[u8] = b"EXPORTER-pylon-relay-media-v1";

/// Why a datagram was refused. The sender (or whoever forged it) is at fault in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DirectError {
    #[error("datagram of {0} bytes is shorter than a header and a tag")]
    Short(usize),
    #[error("unknown format version {0}")]
    Version(u8),
    #[error("packet number {0} was already received or is too old")]
    Replayed(u64),
    #[error("authentication failed")]
    Forged,
}

/// The two directions' keys of one link, from the keying material both ends export.
pub fn split_keys(material: &[u8; KEYING_MATERIAL], dialed: bool) -> (Sealer, Opener) {
    let (dialer, acceptor) = material.split_at(KEYING_MATERIAL / 2);
    let (mine, theirs) = if dialed {
        (dialer, acceptor)
    } else {
        (acceptor, dialer)
    };
    (Sealer::new(mine), Opener::new(theirs))
}

fn key(bytes: &[u8]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes make an AES-256 key"))
}

fn nonce(number: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&number.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Seals this end's datagrams.
pub struct Sealer {
    key: LessSafeKey,
    next: u64,
}

impl Sealer {
    fn new(key_bytes: &[u8]) -> Self {
        Self {
            key: key(key_bytes),
            next: 0,
        }
    }

    /// Seal into `out` (cleared first) what `write` appends: the caller encodes its frame
    /// straight into the datagram's buffer, which is reused, so nothing is allocated.
    pub fn seal(&mut self, out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
        let number = self.next;
        self.next += 1;
        out.clear();
        out.push(VERSION);
        out.extend_from_slice(&number.to_be_bytes());
        write(out);
        let (header, body) = out.split_at_mut(HEADER);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce(number), Aad::from(&*header), body)
            .expect("AES-GCM seals any datagram-sized input");
        out.extend_from_slice(tag.as_ref());
    }
}

/// Opens the peer's datagrams.
pub struct Opener {
    key: LessSafeKey,
    window: Window,
}

impl Opener {
    fn new(key_bytes: &[u8]) -> Self {
        Self {
            key: key(key_bytes),
            window: Window::default(),
        }
    }

    /// The frame a datagram carries, decrypted in place.
    pub fn open<'a>(&mut self, datagram: &'a mut [u8]) -> Result<&'a [u8], DirectError> {
        if datagram.len() < HEADER + TAG {
            return Err(DirectError::Short(datagram.len()));
        }
        if datagram[0] != VERSION {
            return Err(DirectError::Version(datagram[0]));
        }
        let number = u64::from_be_bytes(datagram[1..HEADER].try_into().expect("eight bytes"));
        if !self.window.fresh(number) {
            return Err(DirectError::Replayed(number));
        }
        let (header, body) = datagram.split_at_mut(HEADER);
        let plain = self
            .key
            .open_in_place(nonce(number), Aad::from(&*header), body)
            .map_err(|_| DirectError::Forged)?;
        // Only an authentic packet moves the window, so forgeries cannot push it ahead.
        self.window.mark(number);
        Ok(plain)
    }
}

/// Packet numbers received: the newest and a bitmap of the [`WINDOW`] before it.
#[derive(Default)]
struct Window {
    /// Newest number received plus one (0: none yet).
    top: u64,
    /// Bit i: number `top - 1 - i` was received.
    seen: u128,
}

impl Window {
    fn fresh(&self, n: u64) -> bool {
        if n >= self.top {
            return true;
        }
        let behind = self.top - 1 - n;
        behind < WINDOW && self.seen & (1u128 << behind) == 0
    }

    fn mark(&mut self, n: u64) {
        if n >= self.top {
            let shift = n.saturating_add(1) - self.top;
            self.seen = if shift >= WINDOW { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.top = n.saturating_add(1);
        } else {
            self.seen |= 1u128 << (self.top - 1 - n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> ((Sealer, Opener), (Sealer, Opener)) {
        let material = [7u8; KEYING_MATERIAL];
        let mut m = material;
        m[40] = 9;
        (split_keys(&m, true), split_keys(&m, false))
    }

    fn sealed(s: &mut Sealer, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        s.seal(&mut out, |b| b.extend_from_slice(payload));
        out
    }

    #[test]
    fn what_one_end_seals_the_other_opens_and_nobody_else() {
        let ((mut dialer_tx, mut dialer_rx), (mut acceptor_tx, mut acceptor_rx)) = pair();
        let mut d = sealed(&mut dialer_tx, b"rtp frame");
        assert_eq!(d.len(), HEADER + 9 + TAG);
        assert_ne!(&d[HEADER..HEADER + 9], b"rtp frame", "the payload is encrypted");
        assert_eq!(acceptor_rx.open(&mut d.clone()).unwrap(), b"rtp frame");
        // Each direction has its own key: a datagram does not open at the end that sent it.
        assert_eq!(dialer_rx.open(&mut d), Err(DirectError::Forged));
        let mut back = sealed(&mut acceptor_tx, b"the other way");
        assert_eq!(dialer_rx.open(&mut back).unwrap(), b"the other way");
    }

    #[test]
    fn tampered_short_unknown_and_replayed_datagrams_are_refused() {
        let ((mut tx, _), (_, mut rx)) = pair();
        let d = sealed(&mut tx, b"frame");
        for i in 0..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 0x20;
            assert!(rx.open(&mut bad).is_err(), "a flipped bit at {i} is caught");
        }
        assert_eq!(rx.open(&mut [1u8; HEADER + TAG - 1]), Err(DirectError::Short(24)));
        assert_eq!(rx.open(&mut []), Err(DirectError::Short(0)));
        assert_eq!(rx.open(&mut [0u8; 40]), Err(DirectError::Version(0)));
        assert!(rx.open(&mut d.clone()).is_ok());
        assert_eq!(rx.open(&mut d.clone()), Err(DirectError::Replayed(0)));
    }

    #[test]
    fn reordering_within_the_window_is_accepted_once_and_older_is_refused() {
        let ((mut tx, _), (_, mut rx)) = pair();
        let all: Vec<Vec<u8>> = (0..300).map(|i| sealed(&mut tx, &[i as u8; 3])).collect();
        assert!(rx.open(&mut all[200].clone()).is_ok());
        assert!(rx.open(&mut all[199].clone()).is_ok(), "one behind");
        assert!(rx.open(&mut all[73].clone()).is_ok(), "127 behind");
        assert_eq!(
            rx.open(&mut all[72].clone()),
            Err(DirectError::Replayed(72)),
            "128 behind"
        );
        assert_eq!(rx.open(&mut all[199].clone()), Err(DirectError::Replayed(199)));
        assert!(rx.open(&mut all[299].clone()).is_ok(), "a jump ahead");
        assert!(
            rx.open(&mut all[201].clone()).is_ok(),
            "still in the window after the jump"
        );
        assert_eq!(rx.open(&mut all[200].clone()), Err(DirectError::Replayed(200)));
    }

    #[test]
    fn a_forgery_does_not_move_the_window() {
        let ((mut tx, _), (_, mut rx)) = pair();
        let first = sealed(&mut tx, b"a");
        let mut forged = sealed(&mut tx, b"b");
        forged[1..HEADER].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(rx.open(&mut forged), Err(DirectError::Forged));
        assert!(rx.open(&mut first.clone()).is_ok(), "number 0 is still fresh");
    }
}
