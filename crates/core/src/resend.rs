//! How far back a subscriber's forwarded video is kept for resends: as far as a NACK can come
//! back over that subscriber's round trip.
//!
//! A receiver asks for a lost packet when the next one arrives, so its NACK reaches the server
//! about one round trip after the packet left, and its first repeat one round trip later. The
//! round trip of a narrow access link includes its queue (a 25 kB queue is half a second of
//! 400 kbit/s), and mobile and satellite paths run at several hundred milliseconds: a cache
//! shorter than that answers no NACK at all, and every loss stays a hole until the next
//! keyframe. Each cached packet costs the subscriber about 430 bytes of str0m's bookkeeping
//! (the payload is shared), so the window stays at its floor on short paths, where a fixed
//! longer one was 40 % of a meeting's memory (`docs/benchmarks.md`).
//!
//! str0m re-creates a stream's cache when it is resized, dropping what it holds, so the window
//! moves in a few large steps: up at once when a longer round trip is reported, down only
//! after the shorter one has held for [`SHRINK_AFTER`].

use std::time::{Duration, Instant};

/// The window on a short path: a NACK and its repeat on a round trip up to 100 ms (the first
/// NACK alone up to ~290 ms).
pub const FLOOR: Duration = Duration::from_millis(300);
/// The windows there are; the last is the ceiling (a NACK and its repeat on a round trip of
/// up to 950 ms).
const STEPS: [Duration; 4] = [
    FLOOR,
    Duration::from_millis(600),
    Duration::from_millis(1200),
    Duration::from_millis(2000),
];
/// How long a shorter round trip must hold before the window shrinks.
pub const SHRINK_AFTER: Duration = Duration::from_secs(10);
/// The most packets kept per stream whatever the window (str0m's bound; 2 s of a 2.5 Mbit/s
/// stream of full-size packets).
pub const MAX_PACKETS: usize = 512;
/// Beyond two round trips: the receiver's wait for the next packet and its own timers.
const SLACK: Duration = Duration::from_millis(100);

/// One subscriber's resend window.
#[derive(Debug, Clone, Copy)]
pub struct ResendWindow {
    current: Duration,
    /// Since when every round trip reported needed a shorter window.
    shorter_since: Option<Instant>,
}

impl Default for ResendWindow {
    fn default() -> Self {
        Self {
            current: FLOOR,
            shorter_since: None,
        }
    }
}

impl ResendWindow {
    /// The window the subscriber's video streams have.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// The step that answers a NACK and one repeat over `rtt`.
    fn needed(rtt: Duration) -> Duration {
        let want = rtt.saturating_mul(2).saturating_add(SLACK);
        STEPS
            .iter()
            .copied()
            .find(|s| *s >= want)
            .unwrap_or(STEPS[STEPS.len() - 1])
    }

    /// A round trip reported at `now`; returns the new window when the streams must change.
    pub fn on_rtt(&mut self, now: Instant, rtt: Duration) -> Option<Duration> {
        let needed = Self::needed(rtt);
        if needed >= self.current {
            self.shorter_since = None;
            if needed == self.current {
                return None;
            }
            self.current = needed;
            return Some(needed);
        }
        let since = *self.shorter_since.get_or_insert(now);
        if now.saturating_duration_since(since) < SHRINK_AFTER {
            return None;
        }
        self.shorter_since = None;
        self.current = needed;
        Some(needed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn short_paths_keep_the_floor_and_long_ones_get_two_round_trips() {
        assert_eq!(ResendWindow::needed(MS(0)), FLOOR);
        assert_eq!(ResendWindow::needed(MS(100)), FLOOR);
        assert_eq!(ResendWindow::needed(MS(101)), MS(600));
        // A 400 kbit/s link with its 25 kB queue full: 450 ms.
        assert_eq!(ResendWindow::needed(MS(450)), MS(1200));
        assert_eq!(ResendWindow::needed(MS(900)), MS(2000));
        assert_eq!(ResendWindow::needed(Duration::MAX), MS(2000));
    }

    #[test]
    fn the_window_grows_at_once_and_shrinks_only_after_a_shorter_round_trip_held() {
        let t0 = Instant::now();
        let mut w = ResendWindow::default();
        assert_eq!(w.on_rtt(t0, MS(20)), None, "the floor already");
        assert_eq!(w.on_rtt(t0, MS(450)), Some(MS(1200)));
        assert_eq!(w.on_rtt(t0 + MS(1), MS(450)), None, "unchanged");
        // Shorter for a while, interrupted by one long report: the clock starts again.
        assert_eq!(w.on_rtt(t0 + MS(2_000), MS(20)), None);
        assert_eq!(w.on_rtt(t0 + MS(8_000), MS(500)), None);
        assert_eq!(w.on_rtt(t0 + MS(14_000), MS(20)), None);
        assert_eq!(w.on_rtt(t0 + MS(23_000), MS(20)), None);
        assert_eq!(w.on_rtt(t0 + MS(24_000), MS(20)), Some(FLOOR));
        assert_eq!(w.current(), FLOOR);
    }
}
