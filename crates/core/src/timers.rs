//! When each peer connection next wants a timeout input.
//!
//! A min-heap of deadlines with lazy deletion: rescheduling a peer pushes a new entry and the
//! old one is skipped when it surfaces. Finding what is due costs O(log n) per due peer, so a
//! loop turn no longer scans every participant (it did twice per turn). The heap is rebuilt
//! from the live deadlines when stale entries outnumber them, which bounds its size.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use rustc_hash::FxHashMap;

use crate::peer::PeerRef;

/// Stale entries allowed per live one before the heap is rebuilt.
const STALE_FACTOR: usize = 4;
/// Below this size the heap is never rebuilt (not worth it).
const MIN_REBUILD: usize = 256;

#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, PeerRef)>>,
    /// The live deadline of every scheduled peer.
    live: FxHashMap<PeerRef, Instant>,
}

impl Timers {
    /// Wake `peer` at `at` (replacing its previous deadline).
    pub fn schedule(&mut self, peer: PeerRef, at: Instant) {
        if self.live.insert(peer, at) == Some(at) {
            return;
        }
        self.heap.push(Reverse((at, peer)));
        if self.heap.len() > MIN_REBUILD.max(STALE_FACTOR * self.live.len()) {
            self.heap = self.live.iter().map(|(p, t)| Reverse((*t, *p))).collect();
        }
    }

    /// Forget `peer` (it is gone).
    pub fn cancel(&mut self, peer: PeerRef) {
        self.live.remove(&peer);
    }

    /// The earliest live deadline.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// A peer whose deadline is at or before `now`, removed from the schedule.
    pub fn pop_due(&mut self, now: Instant) -> Option<PeerRef> {
        self.drop_stale();
        let Reverse((t, peer)) = *self.heap.peek()?;
        if t > now {
            return None;
        }
        self.heap.pop();
        self.live.remove(&peer);
        Some(peer)
    }

    fn drop_stale(&mut self) {
        while let Some(Reverse((t, peer))) = self.heap.peek() {
            if self.live.get(peer) == Some(t) {
                return;
            }
            self.heap.pop();
        }
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ParticipantKey;
    use crate::peer::PcKind;
    use std::time::Duration;

    fn peer(k: u64) -> PeerRef {
        PeerRef {
            key: ParticipantKey(k),
            pc: PcKind::Publisher,
        }
    }

    #[test]
    fn due_peers_come_out_in_deadline_order_and_reschedules_replace() {
        let t = Instant::now();
        let mut timers = Timers::default();
        timers.schedule(peer(1), t + Duration::from_millis(30));
        timers.schedule(peer(2), t + Duration::from_millis(10));
        timers.schedule(peer(1), t + Duration::from_millis(5));
        timers.schedule(peer(3), t + Duration::from_millis(50));
        timers.cancel(peer(3));
        assert_eq!(timers.next_deadline(), Some(t + Duration::from_millis(5)));
        let due: Vec<_> = std::iter::from_fn(|| timers.pop_due(t + Duration::from_millis(40))).collect();
        assert_eq!(due, vec![peer(1), peer(2)], "peer 1's old 30 ms entry is stale");
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn stale_entries_are_bounded() {
        let t = Instant::now();
        let mut timers = Timers::default();
        for i in 0..100_000u64 {
            timers.schedule(peer(i % 10), t + Duration::from_micros(i));
        }
        assert!(timers.heap.len() <= MIN_REBUILD + 1, "{}", timers.heap.len());
        assert_eq!(timers.len(), 10);
    }
}
