//! How hard the ingest side is pushing, so that the drain can step aside during a burst.
//!
//! The queue exists to absorb bursts: a callback's acknowledgement must not wait behind
//! the backlog being applied. Both share two cores with Postgres, so while callbacks pour
//! in the drain yields (see `apply::dispatch`), and it catches up once they ease off.
//!
//! "Busy" is judged from what this process can see cheaply:
//! - callbacks received in the current 100 ms window, at a rate of [`BUSY_RATE`] or more
//!   (above the 5,000/s the service is sized to apply as they come);
//! - or [`BUSY_IN_FLIGHT`] callbacks being handled at once: acks are slowing down, which
//!   catches a burst that the drain has already slowed below that rate.
//!
//! A busy reading holds for [`HOLD`], so the drain does not flap between two requests.
//! A burst is yielded to for [`MAX_YIELD`] at most: a load that lasts longer is the new
//! normal, and a drain that kept stepping aside would let the backlog (and the wallboard's
//! lag) grow without end. After that the drain shares the machine until callbacks have
//! been calm for [`CALM`].

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// Callbacks per second that make a burst.
pub const BUSY_RATE: u64 = 8_000;
/// Callbacks handled at once that make a burst.
pub const BUSY_IN_FLIGHT: usize = 48;
/// How long a busy reading lasts.
pub const HOLD: Duration = Duration::from_millis(300);
/// The longest the drain yields to one burst.
pub const MAX_YIELD: Duration = Duration::from_secs(30);
/// Calm that ends a burst (the next busy reading starts a new one).
pub const CALM: Duration = Duration::from_secs(10);
const WINDOW_MS: i64 = 100;

/// Ingest pressure, shared by the ingest handlers (writers) and the drain (reader).
#[derive(Debug, Default)]
pub struct Pressure {
    in_flight: AtomicUsize,
    /// Start (ms) of the current counting window, and the callbacks counted in it.
    window_ms: AtomicI64,
    in_window: AtomicU64,
    busy_until_ms: AtomicI64,
    /// When the current burst began.
    burst_since_ms: AtomicI64,
}

/// Held while one callback is being handled; dropping it ends the request.
#[must_use]
pub struct InFlight<'a>(&'a Pressure);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

impl Pressure {
    /// Counts one callback request (an Event Streams delivery counts once) from now
    /// until the guard is dropped.
    pub fn enter(&self) -> InFlight<'_> {
        self.enter_at(crate::util::now_ms())
    }

    fn enter_at(&self, now_ms: i64) -> InFlight<'_> {
        let in_flight = self.in_flight.fetch_add(1, Relaxed) + 1;
        let start = self.window_ms.load(Relaxed);
        let counted = if now_ms - start >= WINDOW_MS {
            // A new window; a lost race between two requests only miscounts one.
            self.window_ms.store(now_ms, Relaxed);
            self.in_window.store(1, Relaxed);
            1
        } else {
            self.in_window.fetch_add(1, Relaxed) + 1
        };
        if in_flight >= BUSY_IN_FLIGHT || counted >= BUSY_RATE * WINDOW_MS as u64 / 1000 {
            let was = self
                .busy_until_ms
                .fetch_max(now_ms + HOLD.as_millis() as i64, Relaxed);
            if now_ms - was >= CALM.as_millis() as i64 {
                self.burst_since_ms.store(now_ms, Relaxed);
            }
        }
        InFlight(self)
    }

    /// Whether the drain should yield to a burst now (see the module docs).
    pub fn busy(&self) -> bool {
        self.busy_at(crate::util::now_ms())
    }

    fn busy_at(&self, now_ms: i64) -> bool {
        now_ms < self.busy_until_ms.load(Relaxed)
            && now_ms - self.burst_since_ms.load(Relaxed) < MAX_YIELD.as_millis() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_load_below_the_rate_is_not_a_burst() {
        let p = Pressure::default();
        // 5,000/s: 500 per 100 ms window, one at a time, over two seconds.
        for i in 0..10_000i64 {
            let _r = p.enter_at(1_000_000 + i / 5);
            assert!(!p.busy_at(1_000_000 + i / 5), "busy at request {i}");
        }
    }

    #[test]
    fn a_fast_rate_or_many_at_once_is_a_burst_for_a_while() {
        let p = Pressure::default();
        let t = 5_000_000;
        for i in 0..(BUSY_RATE / 10) {
            let _r = p.enter_at(t + (i as i64 % 90));
        }
        assert!(p.busy_at(t + 90));
        assert!(p.busy_at(t + 90 + HOLD.as_millis() as i64 - 100));
        assert!(!p.busy_at(t + 100 + HOLD.as_millis() as i64));

        let q = Pressure::default();
        let held: Vec<_> = (0..BUSY_IN_FLIGHT - 1).map(|_| q.enter_at(t)).collect();
        assert!(!q.busy_at(t));
        let last = q.enter_at(t);
        assert!(q.busy_at(t));
        drop((held, last));
        assert_eq!(q.in_flight.load(Relaxed), 0);
    }

    #[test]
    fn a_burst_is_yielded_to_for_half_a_minute_at_most_then_calm_starts_afresh() {
        let p = Pressure::default();
        let t = 9_000_000;
        let max = MAX_YIELD.as_millis() as i64;
        // Endless overload: many at once, every 100 ms.
        let mut at = t;
        while at < t + max + 5_000 {
            let held: Vec<_> = (0..BUSY_IN_FLIGHT).map(|_| p.enter_at(at)).collect();
            assert_eq!(p.busy_at(at), at - t < max, "at +{} ms", at - t);
            drop(held);
            at += 100;
        }
        // Calm for long enough: the next burst is yielded to again.
        let later = at + (HOLD + CALM).as_millis() as i64;
        let _held: Vec<_> = (0..BUSY_IN_FLIGHT).map(|_| p.enter_at(later)).collect();
        assert!(p.busy_at(later));
    }
}
