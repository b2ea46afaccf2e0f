//! A standing queue on a subscriber's downlink, told by the round trips its receiver reports.
//!
//! While a subscriber's video is held below what it asked for, str0m pads its link up to the
//! bandwidth estimate (`downlink.rs`), so that the estimate can grow toward the next layer. On
//! a narrow link with a drop-tail queue that keeps the link full: str0m's delay-based
//! estimator reacts to a queue that *grows* quickly, not to one that fills slowly and then
//! stays full, and its loss-based controller holds at a few per cent of loss. The link then
//! runs with its queue full, every packet waits the whole queue (half a second on a 400 kbit/s
//! link with a 25 kB queue), and packets are dropped all the time: each loss a freeze of at
//! least that round trip, and a repeat NACK answered into the same full queue. Measured with
//! `test_quality.py`'s 400 kbit/s subscriber: a round trip of 420–490 ms on every report while
//! the limit held, 8–80 packets lost in 10 s, freezes of 1–5 s in about one run in five on a
//! loaded machine.
//!
//! The round trip says what the estimator misses: the lowest one seen lately is the path, what
//! is above it is queue. [`StandingQueue`] reports a standing queue when a round trip exceeds
//! that base by [`ON_ABOVE`], and its end when one comes within [`OFF_BELOW`]. The downlink
//! then allocates at no more than the estimate at which the queue was found, holds its
//! padding under 0.8 of that, starts no probe, gives temporal steps no slack over the estimate
//! and lets no track climb to a higher layer (`Downlink::ceiling`, `Downlink::on_rtt`,
//! `allocate_within`, `no_climb`), so the queue drains.
//!
//! The base is the lowest round trip of the last one to two [`BASE_WINDOW`]s: a path whose
//! round trip rose for good (another route) becomes the new base within two windows.

use std::time::{Duration, Instant};

/// A round trip this far above the base: the queue stands.
pub const ON_ABOVE: Duration = Duration::from_millis(100);
/// A round trip within this of the base: the queue drained.
pub const OFF_BELOW: Duration = Duration::from_millis(40);
/// How long the lowest round trip of a window counts, at least (at most twice this).
pub const BASE_WINDOW: Duration = Duration::from_secs(30);

/// The round trips of one subscriber connection, and whether a queue stands on its path.
#[derive(Debug, Default, Clone, Copy)]
pub struct StandingQueue {
    /// The lowest round trip of the current window and of the one before it.
    lowest: [Option<Duration>; 2],
    window_from: Option<Instant>,
    standing: bool,
}

impl StandingQueue {
    /// Whether a queue stands on the path now.
    pub fn standing(&self) -> bool {
        self.standing
    }

    /// The lowest round trip seen lately: the path without a queue.
    pub fn base(&self) -> Option<Duration> {
        match self.lowest {
            [Some(a), Some(b)] => Some(a.min(b)),
            [a, b] => a.or(b),
        }
    }

    /// A round trip reported at `now`. Returns the new state when it changes.
    pub fn on_rtt(&mut self, now: Instant, rtt: Duration) -> Option<bool> {
        let from = *self.window_from.get_or_insert(now);
        if now.saturating_duration_since(from) >= BASE_WINDOW {
            self.lowest = [None, self.lowest[0]];
            self.window_from = Some(now);
        }
        self.lowest[0] = Some(self.lowest[0].map_or(rtt, |l| l.min(rtt)));
        let base = self.base().unwrap_or(rtt);
        let standing = if self.standing {
            rtt >= base.saturating_add(OFF_BELOW)
        } else {
            rtt > base.saturating_add(ON_ABOVE)
        };
        (standing != self.standing).then(|| {
            self.standing = standing;
            standing
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_round_trip_well_above_the_lowest_is_a_queue_until_one_comes_back_near_it() {
        let t0 = Instant::now();
        let mut q = StandingQueue::default();
        assert_eq!(q.on_rtt(t0, MS(450)), None, "the first report is the base");
        assert_eq!(q.on_rtt(t0 + MS(1), MS(20)), None);
        assert_eq!(q.base(), Some(MS(20)));
        assert_eq!(
            q.on_rtt(t0 + MS(2), MS(110)),
            None,
            "within 100 ms of the base: jitter"
        );
        // A 400 kbit/s link's 25 kB queue fills.
        assert_eq!(q.on_rtt(t0 + MS(3), MS(470)), Some(true));
        assert!(q.standing());
        assert_eq!(q.on_rtt(t0 + MS(4), MS(200)), None, "draining");
        assert_eq!(q.on_rtt(t0 + MS(5), MS(60)), None, "still 40 ms of queue");
        assert_eq!(q.on_rtt(t0 + MS(6), MS(59)), Some(false), "drained");
        assert!(!q.standing());
    }

    #[test]
    fn a_round_trip_that_rose_for_good_becomes_the_base_within_two_windows() {
        let t0 = Instant::now();
        let mut q = StandingQueue::default();
        q.on_rtt(t0, MS(20));
        assert_eq!(q.on_rtt(t0 + MS(1_000), MS(300)), Some(true));
        // Another route: 300 ms from now on. The first window's 20 ms counts for one more.
        let mut at = t0 + MS(1_000);
        let mut ended = None;
        while at < t0 + BASE_WINDOW * 3 {
            at += MS(1_000);
            if q.on_rtt(at, MS(300)) == Some(false) {
                ended = Some(at);
                break;
            }
        }
        let ended = ended.expect("the queue is taken back once the lowest round trip is 300 ms");
        assert!(ended >= t0 + BASE_WINDOW * 2 && ended <= t0 + BASE_WINDOW * 2 + MS(1_000));
        assert_eq!(q.base(), Some(MS(300)));
    }
}
