//! The one backoff computation every retry loop uses: exponential growth from a base,
//! a cap, optional jitter, and a server-given delay (`Retry-After`) that wins when
//! present. Each loop keeps its own policy (base, cap, jitter, what it retries and how
//! often); only the arithmetic is shared, so it is tested once.

use rand::Rng;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A backoff policy. Attempt `n` (0-based) waits `base × 2ⁿ`, at most `cap`, multiplied
/// by a factor drawn uniformly from the jitter range (`1.0..=1.0`, the default, is no
/// jitter; `0.0..=1.0` is "full jitter"). Jitter keeps clients that failed together
/// from retrying in lockstep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: (f64, f64),
    max_hint: Duration,
}

impl Backoff {
    /// Postgres unavailable (down, deadlock, not migrated): 200 ms doubling to 5 s, no
    /// jitter. Used by the dispatcher's workers and the `backfill` command.
    pub const POSTGRES_UNAVAILABLE: Backoff =
        Backoff::new(Duration::from_millis(200), Duration::from_secs(5));

    /// `base × 2ⁿ` capped at `cap`, without jitter; a server-given delay is taken as is.
    pub const fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            jitter: (1.0, 1.0),
            max_hint: Duration::MAX,
        }
    }

    /// Scales every delay by a factor drawn uniformly from `low..=high` (`low` ≤ `high`,
    /// both ≥ 0; out-of-order bounds are swapped).
    pub const fn jitter(mut self, low: f64, high: f64) -> Backoff {
        self.jitter = if low <= high {
            (low, high)
        } else {
            (high, low)
        };
        self
    }

    /// Full jitter: uniformly anywhere between no wait and the exponential delay.
    pub const fn full_jitter(self) -> Backoff {
        self.jitter(0.0, 1.0)
    }

    /// The longest server-given delay honoured; longer ones are cut to it.
    pub const fn max_hint(mut self, max: Duration) -> Backoff {
        self.max_hint = max;
        self
    }

    /// `base × 2^attempt`, at most `cap`, before jitter. Never overflows.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait before retry `attempt` (0-based): the ceiling scaled by the jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let (low, high) = self.jitter;
        if low == high {
            return ceiling.mul_f64(low.max(0.0));
        }
        ceiling.mul_f64(rand::thread_rng().gen_range(low.max(0.0)..=high.max(0.0)))
    }

    /// The server's delay when it gave one (at most [`Backoff::max_hint`]), else
    /// [`Backoff::delay`].
    pub fn delay_or(&self, attempt: u32, server: Option<Duration>) -> Duration {
        match server {
            Some(d) => d.min(self.max_hint),
            None => self.delay(attempt),
        }
    }

    /// Sleeps [`Backoff::delay`] for `attempt`; false when `stop` fired first.
    pub async fn sleep(&self, attempt: u32, stop: &CancellationToken) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(self.delay(attempt)) => true,
            _ = stop.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn grows_exponentially_up_to_the_cap_without_overflow() {
        let b = Backoff::new(MS(200), Duration::from_secs(5));
        let got: Vec<Duration> = (0..7).map(|a| b.delay(a)).collect();
        assert_eq!(
            got,
            [200, 400, 800, 1600, 3200, 5000, 5000].map(MS).to_vec()
        );
        for a in [31, 32, 64, u32::MAX] {
            assert_eq!(b.delay(a), Duration::from_secs(5));
        }
        let huge = Backoff::new(Duration::from_secs(u64::MAX / 2), Duration::MAX);
        assert_eq!(huge.ceiling(40), Duration::MAX);
    }

    #[test]
    fn jitter_stays_within_its_range_and_varies() {
        let b = Backoff::new(MS(1000), MS(10_000)).jitter(0.25, 1.0);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let d = b.delay(2);
            assert!((MS(1000)..=MS(4000)).contains(&d), "{d:?}");
            seen.insert(d);
        }
        assert!(seen.len() > 10, "jitter does not vary");
        let full = Backoff::new(MS(100), MS(100)).full_jitter();
        for _ in 0..200 {
            assert!(full.delay(0) <= MS(100));
        }
        // Above 1: a ±20% jitter may exceed the cap by its margin.
        let wide = Backoff::new(MS(1000), MS(1000)).jitter(1.2, 0.8);
        for _ in 0..200 {
            assert!((MS(800)..=MS(1200)).contains(&wide.delay(5)));
        }
    }

    #[test]
    fn a_server_delay_wins_within_its_limit() {
        let b = Backoff::new(MS(200), MS(10_000)).max_hint(Duration::from_secs(60));
        assert_eq!(
            b.delay_or(0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(b.delay_or(9, Some(Duration::ZERO)), Duration::ZERO);
        assert_eq!(
            b.delay_or(0, Some(Duration::from_secs(3600))),
            Duration::from_secs(60)
        );
        assert_eq!(b.delay_or(1, None), MS(400));
    }

    #[tokio::test]
    async fn sleep_stops_early_when_asked() {
        let stop = CancellationToken::new();
        assert!(Backoff::new(MS(1), MS(1)).sleep(0, &stop).await);
        stop.cancel();
        let long = Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
        assert!(!long.sleep(0, &stop).await);
    }
}
