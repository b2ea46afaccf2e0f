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
//! is above it is queue. [`StandingQueue`] takes the round trips reported since the last
//! allocation turn together ([`StandingQueue::settle`]): a queue stands when the lowest of
//! them exceeds that base by [`ON_ABOVE`], and has drained when the lowest comes within
//! [`OFF_BELOW`]. A queue that stands delays every packet; a sender report that left right
//! behind a frame's burst waited out the burst, not a queue. Every stream's report gives its
//! own round trip, all read at one stats turn: in `bench/limits.sh`'s trace runs one stream of
//! a 1,200 kbit/s subscriber said 130–160 ms at every turn and another, read in the same
//! millisecond, under 1 ms. Taken one by one they found a queue and its end in the same
//! millisecond, which held padding for 20 s (`downlink.rs`'s `PAD_COOLDOWN`) in 7 of 8 runs.
//!
//! While a queue stands the downlink allocates at no more than the estimate at which it was
//! found, holds its padding under 0.8 of that, starts no probe, gives temporal steps no slack
//! over the estimate and lets no track climb to a higher layer (`Downlink::ceiling`,
//! `Downlink::settle_queue`, `allocate_within`, `no_climb`), so the queue drains.
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
    /// The lowest round trip reported since the last [`StandingQueue::settle`].
    since_settled: Option<Duration>,
    /// The round trip the last [`StandingQueue::settle`] judged by.
    judged: Option<Duration>,
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

    /// The round trip the last settle judged by: the lowest of its turn.
    pub fn judged(&self) -> Option<Duration> {
        self.judged
    }

    /// A round trip reported at `now`.
    pub fn on_rtt(&mut self, now: Instant, rtt: Duration) {
        let from = *self.window_from.get_or_insert(now);
        if now.saturating_duration_since(from) >= BASE_WINDOW {
            self.lowest = [None, self.lowest[0]];
            self.window_from = Some(now);
        }
        self.lowest[0] = Some(self.lowest[0].map_or(rtt, |l| l.min(rtt)));
        self.since_settled = Some(self.since_settled.map_or(rtt, |l| l.min(rtt)));
    }

    /// Judge the round trips reported since the last call by the lowest of them. Returns the
    /// new state when it changes (`None` too when nothing was reported).
    pub fn settle(&mut self) -> Option<bool> {
        let rtt = self.since_settled.take()?;
        self.judged = Some(rtt);
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

    /// Report `rtt` at `at` and settle at once (an allocation turn right after).
    fn turn(q: &mut StandingQueue, at: Instant, rtt: Duration) -> Option<bool> {
        q.on_rtt(at, rtt);
        q.settle()
    }

    #[test]
    fn a_round_trip_well_above_the_lowest_is_a_queue_until_one_comes_back_near_it() {
        let t0 = Instant::now();
        let mut q = StandingQueue::default();
        assert_eq!(turn(&mut q, t0, MS(450)), None, "the first report is the base");
        assert_eq!(turn(&mut q, t0 + MS(1), MS(20)), None);
        assert_eq!(q.base(), Some(MS(20)));
        assert_eq!(
            turn(&mut q, t0 + MS(2), MS(110)),
            None,
            "within 100 ms of the base: jitter"
        );
        // A 400 kbit/s link's 25 kB queue fills.
        assert_eq!(turn(&mut q, t0 + MS(3), MS(470)), Some(true));
        assert!(q.standing());
        assert_eq!(q.settle(), None, "nothing reported since");
        assert_eq!(turn(&mut q, t0 + MS(4), MS(200)), None, "draining");
        assert_eq!(turn(&mut q, t0 + MS(5), MS(60)), None, "still 40 ms of queue");
        assert_eq!(turn(&mut q, t0 + MS(6), MS(59)), Some(false), "drained");
        assert!(!q.standing());
    }

    #[test]
    fn the_round_trips_of_one_turn_are_judged_by_the_lowest() {
        let t0 = Instant::now();
        let mut q = StandingQueue::default();
        turn(&mut q, t0, MS(1));
        for n in 1..10 {
            // One stream's sender report waited behind a frame; another's, read at the same
            // stats turn, did not: no queue stands.
            let at = t0 + MS(2_000 * n);
            q.on_rtt(at, MS(150));
            q.on_rtt(at, MS(1));
            assert_eq!(q.settle(), None);
        }
        // Every report of a turn waited: the queue stands, whatever order they came in.
        q.on_rtt(t0 + MS(20_000), MS(150));
        q.on_rtt(t0 + MS(20_000), MS(420));
        assert_eq!(q.settle(), Some(true));
        // One report near the base among high ones: the queue drained at that moment.
        q.on_rtt(t0 + MS(22_000), MS(1));
        q.on_rtt(t0 + MS(22_000), MS(420));
        assert_eq!(q.settle(), Some(false));
    }

    #[test]
    fn a_round_trip_that_rose_for_good_becomes_the_base_within_two_windows() {
        let t0 = Instant::now();
        let mut q = StandingQueue::default();
        turn(&mut q, t0, MS(20));
        assert_eq!(turn(&mut q, t0 + MS(1_000), MS(300)), Some(true));
        // Another route: 300 ms from now on. The first window's 20 ms counts for one more.
        let mut at = t0 + MS(1_000);
        let mut ended = None;
        while at < t0 + BASE_WINDOW * 3 {
            at += MS(1_000);
            if turn(&mut q, at, MS(300)) == Some(false) {
                ended = Some(at);
                break;
            }
        }
        let ended = ended.expect("the queue is taken back once the lowest round trip is 300 ms");
        assert!(ended >= t0 + BASE_WINDOW * 2 && ended <= t0 + BASE_WINDOW * 2 + MS(1_000));
        assert_eq!(q.base(), Some(MS(300)));
    }
}
