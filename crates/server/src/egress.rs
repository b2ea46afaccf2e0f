//! Egress batching: consecutive datagrams to one destination leave in one UDP GSO send.
//!
//! The shard drains one peer connection at a time, so a subscriber's forwarded packets come
//! out back to back; a video frame is several packets of (nearly) one size. The kernel takes
//! such a run as one buffer and a segment size and splits it late, which costs a fraction of
//! a system call per datagram (prior-art-performance.md: ~3.6 µs per `sendto` against
//! 0.2–0.8 µs per GSO segment on this machine). GSO's rule: every segment has the segment
//! size except the last, which may be shorter.
//!
//! [`Batcher`] is the decision, without I/O: it hands complete batches to a send function.

use std::net::SocketAddr;

/// The most a UDP send may carry (IPv4: 65,535 minus the IP and UDP headers).
const MAX_BATCH_BYTES: usize = 65_507;

/// One send: `contents` is one datagram, or several of `segment_size` bytes (the last may be
/// shorter) when `segment_size` is set.
#[derive(Debug, PartialEq, Eq)]
pub struct Batch<'a> {
    pub destination: SocketAddr,
    pub contents: &'a [u8],
    pub segment_size: Option<usize>,
}

/// Accumulates datagrams into GSO batches.
pub struct Batcher {
    buf: Vec<u8>,
    destination: Option<SocketAddr>,
    segment_size: usize,
    segments: usize,
    /// A shorter final segment was added; the batch takes nothing more.
    closed: bool,
    max_segments: usize,
}

impl Batcher {
    /// `max_segments`: what the socket supports (1 disables batching).
    pub fn new(max_segments: usize) -> Self {
        Self {
            buf: Vec::with_capacity(MAX_BATCH_BYTES),
            destination: None,
            segment_size: 0,
            segments: 0,
            closed: false,
            max_segments: max_segments.max(1),
        }
    }

    /// The most datagrams one send may carry.
    pub fn max_segments(&self) -> usize {
        self.max_segments
    }

    /// Follow the socket's limit when it changes (1: the path refused GSO, no batching).
    pub fn set_max_segments(&mut self, max_segments: usize) {
        self.max_segments = max_segments.max(1);
    }

    /// Add one datagram; a batch it cannot join is sent first.
    pub fn push(&mut self, destination: SocketAddr, datagram: &[u8], send: &mut impl FnMut(Batch<'_>)) {
        let joins = self.destination == Some(destination)
            && !self.closed
            && self.segments < self.max_segments
            && datagram.len() <= self.segment_size
            && self.buf.len() + datagram.len() <= MAX_BATCH_BYTES;
        if !joins {
            self.finish(send);
            self.destination = Some(destination);
            self.segment_size = datagram.len();
        }
        self.buf.extend_from_slice(datagram);
        self.segments += 1;
        self.closed = datagram.len() < self.segment_size;
    }

    /// Send what is pending.
    pub fn finish(&mut self, send: &mut impl FnMut(Batch<'_>)) {
        let Some(destination) = self.destination.take() else {
            return;
        };
        send(Batch {
            destination,
            contents: &self.buf,
            segment_size: (self.segments > 1).then_some(self.segment_size),
        });
        self.buf.clear();
        self.segments = 0;
        self.closed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Push `(port, len)` datagrams; return the sends as (port, total bytes, segment size).
    fn run(max: usize, input: &[(u16, usize)]) -> Vec<(u16, usize, Option<usize>)> {
        let mut b = Batcher::new(max);
        let mut out = Vec::new();
        let mut send = |x: Batch<'_>| out.push((x.destination.port(), x.contents.len(), x.segment_size));
        for &(port, len) in input {
            b.push(addr(port), &vec![0u8; len], &mut send);
        }
        b.finish(&mut send);
        out
    }

    #[test]
    fn equal_datagrams_to_one_destination_become_one_send() {
        assert_eq!(
            run(64, &[(1, 1200), (1, 1200), (1, 1200)]),
            vec![(1, 3600, Some(1200))]
        );
    }

    #[test]
    fn a_shorter_datagram_ends_the_batch_and_a_longer_one_starts_the_next() {
        assert_eq!(
            run(64, &[(1, 1200), (1, 1200), (1, 300), (1, 1200), (1, 1300)]),
            vec![(1, 2700, Some(1200)), (1, 1200, None), (1, 1300, None)]
        );
    }

    #[test]
    fn another_destination_or_the_segment_limit_starts_a_new_send() {
        assert_eq!(
            run(2, &[(1, 100), (2, 100), (2, 100), (2, 100)]),
            vec![(1, 100, None), (2, 200, Some(100)), (2, 100, None)]
        );
    }

    #[test]
    fn a_send_never_exceeds_the_udp_limit() {
        let sends = run(64, &[(1, 1400); 60]);
        assert!(sends.iter().all(|&(_, n, _)| n <= MAX_BATCH_BYTES));
        assert_eq!(sends.iter().map(|s| s.1).sum::<usize>(), 60 * 1400);
    }

    #[test]
    fn disabled_batching_sends_one_by_one() {
        assert_eq!(
            run(1, &[(1, 100), (1, 100)]),
            vec![(1, 100, None), (1, 100, None)]
        );
    }
}
