//! Exponential backoff with jitter: the one schedule for everything in the mesh that tries
//! again after a failure (endpoint connections, the control stream, certificate requests).
//!
//! Each wait doubles from `min` up to `max`; the wait handed out is ±25 % of it, so replicas
//! that failed together do not retry together. The randomness is the schedule's own
//! ([`fastrand::Rng`], seeded once), not process-global state, and [`Backoff::with_seed`]
//! makes a schedule reproducible in tests. Sleeping is the caller's business: this type only
//! says how long.

use std::time::Duration;

/// How far a wait strays from its base: ±25 %.
const JITTER: f64 = 0.25;

/// An exponential backoff schedule; see the module docs.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    /// Waits from `min`, doubling up to `max` (a `max` below `min` is taken as `min`).
    pub fn new(min: Duration, max: Duration) -> Self {
        Self::with_rng(min, max, fastrand::Rng::new())
    }

    /// [`Backoff::new`] with a fixed seed: the same waits every time.
    pub fn with_seed(min: Duration, max: Duration, seed: u64) -> Self {
        Self::with_rng(min, max, fastrand::Rng::with_seed(seed))
    }

    fn with_rng(min: Duration, max: Duration, rng: fastrand::Rng) -> Self {
        Self {
            min,
            max: max.max(min),
            current: min,
            rng,
        }
    }

    /// The next wait (jittered), and the schedule moves on: the base doubles up to `max`.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.peek_jittered();
        self.current = self.current.saturating_mul(2).min(self.max);
        wait
    }

    /// The base of the next wait, before jitter: what a caller with a deadline compares.
    pub fn base(&self) -> Duration {
        self.current
    }

    /// Back to `min`, after a success.
    pub fn reset(&mut self) {
        self.current = self.min;
    }

    fn peek_jittered(&mut self) -> Duration {
        let factor = 1.0 - JITTER + self.rng.f64() * 2.0 * JITTER;
        self.current.mul_f64(factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap_within_the_jitter() {
        let mut backoff = Backoff::with_seed(100 * MS, 1000 * MS, 7);
        let bases = [100, 200, 400, 800, 1000, 1000];
        for base in bases {
            assert_eq!(backoff.base(), base * MS);
            let wait = backoff.next_wait();
            assert!(
                wait >= base * MS * 3 / 4 && wait <= base * MS * 5 / 4,
                "{wait:?} for a base of {base} ms"
            );
        }
    }

    #[test]
    fn reset_starts_over_and_waits_spread() {
        let mut backoff = Backoff::with_seed(100 * MS, 10_000 * MS, 1);
        for _ in 0..5 {
            backoff.next_wait();
        }
        backoff.reset();
        assert_eq!(backoff.base(), 100 * MS);
        let waits: std::collections::BTreeSet<_> = (0..20)
            .map(|_| {
                backoff.reset();
                backoff.next_wait()
            })
            .collect();
        assert!(waits.len() > 10, "jitter spreads the waits: {waits:?}");
    }

    #[test]
    fn a_cap_below_the_start_is_the_start() {
        let mut backoff = Backoff::with_seed(100 * MS, 10 * MS, 3);
        backoff.next_wait();
        assert_eq!(backoff.base(), 100 * MS);
    }
}
