//! Packet loss on one incoming RTP stream, counted once and for good: a sequence number is
//! lost when it falls [`WINDOW`] numbers behind the highest one seen without having arrived.
//! A late or retransmitted packet inside the window repairs its gap, so the count only grows
//! (a Prometheus counter) and reordering or a NACK answered in time is not loss.
//!
//! Works on str0m's extended (64-bit, unwrapped) sequence numbers; a constant-size bitmap, no
//! allocation. Padding-only packets take sequence numbers too and must be recorded.

/// How far behind the newest packet a missing one is given up (about 0.1 s of HD video).
pub const WINDOW: u64 = 128;

/// A jump this far ahead is a restarted stream, not loss.
const RESTART: u64 = 3000;

#[derive(Debug, Default, Clone, Copy)]
pub struct LossCounter {
    /// The highest sequence number seen (`None` before the first packet).
    max: Option<u64>,
    /// Bit i: `max - i` arrived.
    seen: u128,
    /// How many bits of `seen` describe real sequence numbers (the stream's start is not loss).
    span: u64,
}

impl LossCounter {
    /// Record packet `seq`; returns how many sequence numbers were given up as lost by it.
    pub fn record(&mut self, seq: u64) -> u64 {
        let Some(max) = self.max else {
            *self = Self {
                max: Some(seq),
                seen: 1,
                span: 1,
            };
            return 0;
        };
        if seq <= max {
            let back = max - seq;
            if back < WINDOW {
                self.seen |= 1u128 << back;
            }
            return 0;
        }
        let ahead = seq - max;
        if ahead >= RESTART {
            *self = Self::default();
            return self.record(seq);
        }
        // Bits at positions >= WINDOW - ahead leave the window; of those that describe real
        // numbers (below `span`), the ones not seen are lost, and so is every number skipped
        // entirely beyond the window.
        let leaving_from = WINDOW.saturating_sub(ahead);
        let mut lost = 0;
        if leaving_from < self.span {
            let leaving = self.seen >> leaving_from;
            lost += (self.span - leaving_from) - u64::from(leaving.count_ones());
        }
        let skipped = ahead - 1;
        lost += skipped.saturating_sub(WINDOW - 1);
        self.seen = if ahead >= WINDOW {
            1
        } else {
            (self.seen << ahead) | 1
        };
        self.span = (self.span + ahead).min(WINDOW);
        self.max = Some(seq);
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: impl IntoIterator<Item = u64>) -> u64 {
        let mut c = LossCounter::default();
        seqs.into_iter().map(|s| c.record(s)).sum()
    }

    #[test]
    fn an_unbroken_stream_loses_nothing() {
        assert_eq!(run(1000..5000), 0);
    }

    #[test]
    fn a_gap_counts_once_it_leaves_the_window() {
        let mut c = LossCounter::default();
        let mut lost = 0;
        for s in (0..10).chain(13..(10 + WINDOW - 1)) {
            lost += c.record(s);
        }
        // Not yet: 10..13 are still inside the window (a NACK may bring them).
        assert_eq!(lost, 0);
        for s in (10 + WINDOW - 1)..(13 + 2 * WINDOW) {
            lost += c.record(s);
        }
        assert_eq!(lost, 3);
    }

    #[test]
    fn late_and_retransmitted_packets_repair_their_gap() {
        let seqs = (0..20)
            .filter(|s| *s != 5 && *s != 6)
            .chain([6, 5])
            .chain(20..1000);
        assert_eq!(run(seqs), 0);
        // A duplicate is not a gain either.
        assert_eq!(run((0..500).chain(400..1000)), 0);
    }

    #[test]
    fn a_jump_beyond_the_window_counts_every_skipped_number() {
        assert_eq!(run((0..50).chain(50 + 1000..50 + 1000 + 2 * WINDOW)), 1000);
    }

    #[test]
    fn the_start_of_a_stream_and_a_restart_are_not_loss() {
        // First packet mid-stream: nothing before it was lost.
        assert_eq!(run(70_000..70_500), 0);
        // A new stream far ahead (a new SSRC's numbering): no loss either.
        assert_eq!(run((0..500).chain(100_000..100_500)), 0);
    }

    #[test]
    fn every_other_packet_lost_is_half() {
        let seqs = (0..10_000u64).filter(|s| s % 2 == 0);
        let lost = run(seqs);
        // All but the last window's gaps are given up.
        assert!((4_900..=5_000).contains(&lost), "{lost}");
    }
}
