//! Rate-limit arithmetic and state, with time passed in (`Instant`s or nanoseconds), so every
//! decision is deterministic and needs no runtime.
//!
//! - [`TokenBucket`]: one caller's token bucket kept as the instant it is full again.
//! - [`Gcra`] / [`AtomicGcra`]: the same arithmetic as GCRA (that instant is GCRA's
//!   theoretical arrival time) over nanoseconds, and lock-free on an `AtomicU64`.
//! - [`RateLimitPolicy`]: a service's local rate-limit policy (a total limit, a per-identity
//!   limit and overrides for named callers, optionally for one route), and
//!   [`InboundLimiter`], the policies of a service compiled with their state, which decides
//!   each call and keeps its state across updates that leave a policy unchanged. Per-caller
//!   state is bounded ([`MAX_TRACKED_CALLERS`] callers per policy).

mod callers;
mod gcra;
mod limiter;
mod policy;

pub use callers::MAX_TRACKED_CALLERS;
pub use gcra::{AtomicGcra, Gcra};
pub use limiter::{InboundLimiter, Limited};
pub use policy::{
    ClientMatch, LimitKind, MAX_BURST, MAX_OVERRIDES, MAX_REQUESTS_PER_SECOND, RateLimit,
    RateLimitOverride, RateLimitPolicy,
};

use std::time::{Duration, Instant};

/// A token bucket's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucketConfig {
    /// Requests admitted back to back from a full bucket (at least 1).
    pub burst: u32,
    /// How long the bucket takes to gain one token (at least 1 ms).
    pub refill: Duration,
}

/// One caller's bucket. It is born full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// The instant at which the bucket is (or was) full: each token taken pushes it one
    /// `refill` later. Keeping this one instant instead of a count and a timestamp makes
    /// refilling exact, with no fractions to carry.
    full_at: Instant,
}

impl TokenBucketConfig {
    /// The parameters with `burst` raised to 1 and `refill` to 1 ms where below.
    fn clamped(self) -> Self {
        Self {
            burst: self.burst.max(1),
            refill: self.refill.max(Duration::from_millis(1)),
        }
    }
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(now: Instant) -> Self {
        Self { full_at: now }
    }

    /// Takes one token at `now`; when the bucket is empty, `Err` with how long until a token
    /// is there (nothing is taken).
    pub fn try_take(&mut self, config: TokenBucketConfig, now: Instant) -> Result<(), Duration> {
        let config = config.clamped();
        // A bucket full in the past is simply full: start counting from `now`.
        let full_at = self.full_at.max(now);
        let next = full_at + config.refill;
        // Empty when even `burst` tokens' worth of refill would not reach `next` from `now`.
        let window = config.refill * config.burst;
        let deficit = next.saturating_duration_since(now);
        if deficit > window {
            return Err(deficit - window);
        }
        self.full_at = next;
        Ok(())
    }

    /// Whole tokens in the bucket at `now` (`burst` when it is full).
    pub fn available(&self, config: TokenBucketConfig, now: Instant) -> u32 {
        let config = config.clamped();
        let missing = self.full_at.saturating_duration_since(now);
        // Rounded up: a token partly refilled is not available yet.
        let missing_tokens = missing.as_nanos().div_ceil(config.refill.as_nanos());
        u32::try_from(u128::from(config.burst).saturating_sub(missing_tokens)).unwrap_or(0)
    }

    /// Whether the bucket is full at `now`: such a bucket says nothing a new one would not, so
    /// a limiter may forget it.
    pub fn is_full(&self, now: Instant) -> bool {
        self.full_at <= now
    }
}

#[cfg(test)]
mod limiter_tests;

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: TokenBucketConfig = TokenBucketConfig {
        burst: 3,
        refill: Duration::from_secs(10),
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Each step: seconds since the start, and what `try_take` answers then (`Err` with the
    /// wait in seconds).
    fn run(config: TokenBucketConfig, steps: &[(u64, Result<(), u64>)]) {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(start);
        for (i, &(at, expected)) in steps.iter().enumerate() {
            let got = bucket.try_take(config, start + secs(at));
            assert_eq!(got, expected.map_err(secs), "step {i} at {at}s");
        }
    }

    #[test]
    fn burst_then_one_per_refill() {
        run(
            CONFIG,
            &[
                (0, Ok(())),
                (0, Ok(())),
                (0, Ok(())),
                (0, Err(10)),
                (4, Err(6)),
                (10, Ok(())),
                (10, Err(10)),
                (25, Ok(())),
                (25, Err(5)),
                (30, Ok(())),
            ],
        );
    }

    #[test]
    fn a_long_pause_refills_no_more_than_burst() {
        run(
            CONFIG,
            &[
                (0, Ok(())),
                (1000, Ok(())),
                (1000, Ok(())),
                (1000, Ok(())),
                (1000, Err(10)),
            ],
        );
    }

    #[test]
    fn refusals_take_nothing() {
        // Asking again and again while empty does not push the next token further away.
        run(
            TokenBucketConfig {
                burst: 1,
                refill: secs(10),
            },
            &[
                (0, Ok(())),
                (1, Err(9)),
                (2, Err(8)),
                (3, Err(7)),
                (10, Ok(())),
            ],
        );
    }

    #[test]
    fn degenerate_parameters_are_clamped() {
        // A burst of 0 is 1 and a refill of 0 is 1 ms: never "unlimited".
        let config = TokenBucketConfig {
            burst: 0,
            refill: Duration::ZERO,
        };
        let start = Instant::now();
        let mut bucket = TokenBucket::new(start);
        assert_eq!(bucket.try_take(config, start), Ok(()));
        assert_eq!(
            bucket.try_take(config, start),
            Err(Duration::from_millis(1))
        );
        assert_eq!(bucket.try_take(config, start + secs(1)), Ok(()));
    }

    #[test]
    fn available_and_full() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(start);
        let table = [
            // (seconds, tokens taken at that instant, available after, full after)
            (0, 0, 3, true),
            (0, 2, 1, false),
            (5, 0, 1, false),
            (10, 0, 2, false),
            (20, 0, 3, true),
            (20, 3, 0, false),
            (50, 0, 3, true),
        ];
        for (at, take, available, full) in table {
            let now = start + secs(at);
            for _ in 0..take {
                bucket.try_take(CONFIG, now).expect("a token");
            }
            assert_eq!(bucket.available(CONFIG, now), available, "at {at}s");
            assert_eq!(bucket.is_full(now), full, "at {at}s");
        }
    }
}
