//! RFC 4571 framing for ICE over TCP (RFC 6544): every packet (STUN, DTLS, SRTP, SRTCP) is
//! preceded by its length as a 16-bit big-endian number.
//!
//! Sans-IO: the connection reads whatever the socket holds into [`Deframer::spare`], commits
//! it, and takes whole frames out; no allocation after construction. A frame longer than
//! [`MAX_FRAME`] is a protocol error (WebRTC keeps packets under the path MTU, so a longer
//! one is hostile or not WebRTC); the connection is closed, never buffered up to 64 KiB.

use thiserror::Error;

/// Largest frame accepted: the largest datagram a worker takes (`handoff::MAX_DATAGRAM`).
pub const MAX_FRAME: usize = crate::handoff::MAX_DATAGRAM;

/// The read buffer: several frames, so one read can carry many.
const BUF: usize = 8 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {0} bytes is over the limit of {MAX_FRAME}")]
    TooLarge(usize),
}

/// Splits a TCP byte stream into RFC 4571 frames.
pub struct Deframer {
    buf: Box<[u8]>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Default for Deframer {
    fn default() -> Self {
        Self {
            buf: vec![0; BUF].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }
}

impl Deframer {
    /// Where the next read goes. Never empty: a partial frame is at most `2 + MAX_FRAME`
    /// bytes, and the buffer holds more than that once compacted.
    pub fn spare(&mut self) -> &mut [u8] {
        let short = self.buf.len() - self.end < 2 + MAX_FRAME;
        if self.start == self.end || (short && self.start > 0) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`Self::spare`].
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next whole frame, if the stream holds one. Empty frames are skipped.
    pub fn next_frame(&mut self) -> Option<Result<&[u8], FrameError>> {
        loop {
            let held = &self.buf[self.start..self.end];
            if held.len() < 2 {
                return None;
            }
            let len = u16::from_be_bytes([held[0], held[1]]) as usize;
            if len > MAX_FRAME {
                return Some(Err(FrameError::TooLarge(len)));
            }
            if held.len() < 2 + len {
                return None;
            }
            let at = self.start + 2;
            self.start = at + len;
            if len > 0 {
                return Some(Ok(&self.buf[at..at + len]));
            }
        }
    }
}

/// Write `payload` as one frame into `out` (cleared first).
pub fn frame_into(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), FrameError> {
    if payload.len() > u16::MAX as usize {
        return Err(FrameError::TooLarge(payload.len()));
    }
    out.clear();
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut Deframer, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let spare = d.spare();
            let n = spare.len().min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            d.commit(n);
            bytes = &bytes[n..];
        }
    }

    fn frames(d: &mut Deframer) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(f) = d.next_frame() {
            out.push(f.expect("valid frame").to_vec());
        }
        out
    }

    #[test]
    fn frames_split_across_reads_come_out_whole_and_in_order() {
        let mut stream = Vec::new();
        let mut buf = Vec::new();
        for payload in [&b"stun"[..], b"", b"dtls record", &[7u8; 1500]] {
            frame_into(&mut buf, payload).unwrap();
            stream.extend_from_slice(&buf);
        }
        let mut d = Deframer::default();
        let mut got = Vec::new();
        // One byte at a time: a slow drip yields the same frames.
        for b in &stream {
            feed(&mut d, std::slice::from_ref(b));
            got.extend(frames(&mut d));
        }
        assert_eq!(
            got,
            vec![b"stun".to_vec(), b"dtls record".to_vec(), vec![7u8; 1500]]
        );
    }

    #[test]
    fn a_long_stream_of_frames_reuses_the_buffer() {
        let mut d = Deframer::default();
        let mut buf = Vec::new();
        frame_into(&mut buf, &[1u8; 1200]).unwrap();
        for _ in 0..1000 {
            feed(&mut d, &buf);
            assert_eq!(frames(&mut d).len(), 1);
        }
    }

    /// What the `ice_tcp_frames` fuzz target checks, on seeded random streams: however a stream
    /// is split into reads, the same frames (or the same error) come out.
    #[test]
    fn any_split_of_a_stream_yields_the_same_frames() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..200 {
            let mut stream = Vec::new();
            let mut buf = Vec::new();
            for _ in 0..rand() % 40 {
                let len = (rand() % (MAX_FRAME as u64 + 64)) as usize;
                if rand() % 8 == 0 {
                    stream.extend_from_slice(&(len as u16).to_be_bytes());
                } else {
                    frame_into(&mut buf, &vec![rand() as u8; len.min(MAX_FRAME)]).unwrap();
                    stream.extend_from_slice(&buf);
                }
            }
            let split = |piece: &mut dyn FnMut() -> usize| {
                let mut d = Deframer::default();
                let (mut out, mut at) = (Vec::new(), 0);
                while at < stream.len() {
                    let spare = d.spare();
                    assert!(!spare.is_empty());
                    let n = piece().clamp(1, spare.len()).min(stream.len() - at);
                    spare[..n].copy_from_slice(&stream[at..at + n]);
                    d.commit(n);
                    at += n;
                    while let Some(f) = d.next_frame() {
                        match f {
                            Ok(f) => out.push(Ok(f.to_vec())),
                            Err(e) => {
                                out.push(Err(e));
                                return out;
                            }
                        }
                    }
                }
                out
            };
            let whole = split(&mut || usize::MAX);
            let pieces = split(&mut || (rand() % 3000) as usize);
            assert_eq!(whole, pieces);
        }
    }

    #[test]
    fn a_huge_length_prefix_is_refused_before_its_body_arrives() {
        let mut d = Deframer::default();
        feed(&mut d, &[0xff, 0xff, 1, 2, 3]);
        assert_eq!(d.next_frame(), Some(Err(FrameError::TooLarge(0xffff))));
    }
}
