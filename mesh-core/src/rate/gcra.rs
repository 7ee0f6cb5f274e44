//! The generic cell rate algorithm (GCRA): a rate limit kept as one number per key, the
//! theoretical arrival time (TAT) of the next request, in nanoseconds since an epoch the
//! caller picks. It is a token bucket seen from the other side: a bucket of `burst` tokens
//! gaining one every `interval` is full exactly when the TAT is not in the future.
//!
//! [`Gcra::decide`] is the pure arithmetic; [`AtomicGcra`] applies it to a TAT in an
//! `AtomicU64`, lock-free, so many calls in flight share one limit without a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A rate and its burst, as GCRA's emission interval and tolerance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gcra {
    /// Nanoseconds between two requests at the sustained rate (at least 1).
    interval_ns: u64,
    /// How far ahead of now the TAT may be for a request to be admitted:
    /// `interval * (burst - 1)`.
    tolerance_ns: u64,
}

impl Gcra {
    /// `requests_per_second` sustained, `burst` back to back from rest (both raised to 1
    /// where below, so a limit is never "unlimited" nor "nothing").
    pub fn per_second(requests_per_second: u32, burst: u32) -> Self {
        let interval_ns = 1_000_000_000 / u64::from(requests_per_second.max(1));
        Self::with_interval(Duration::from_nanos(interval_ns), burst)
    }

    /// One request every `interval` (at least 1 ns) sustained, `burst` (at least 1) back to
    /// back from rest.
    pub fn with_interval(interval: Duration, burst: u32) -> Self {
        let interval_ns = u64::try_from(interval.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(burst.max(1) - 1)),
        }
    }

    /// The nanoseconds between two requests at the sustained rate.
    pub fn interval_ns(&self) -> u64 {
        self.interval_ns
    }

    /// Decides a request at `now` (nanoseconds since the epoch) against the TAT `tat`: `Ok`
    /// with the TAT to store when it is admitted, `Err` with the nanoseconds until it would
    /// be. A TAT in the past is a full bucket: counting restarts from `now`.
    pub fn decide(&self, tat: u64, now: u64) -> Result<u64, u64> {
        let tat = tat.max(now);
        let ahead = tat - now;
        if ahead > self.tolerance_ns {
            return Err(ahead - self.tolerance_ns);
        }
        Ok(tat.saturating_add(self.interval_ns))
    }
}

/// A TAT shared by every call under one limit, updated with compare-and-swap.
#[derive(Debug, Default)]
pub struct AtomicGcra {
    tat: AtomicU64,
}

impl AtomicGcra {
    /// A limit at rest (its bucket full).
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one request at `now` under `limit`; `Err` with how long until one would be
    /// admitted (nothing is taken then).
    pub fn try_acquire(&self, limit: &Gcra, now: u64) -> Result<(), Duration> {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = limit.decide(tat, now).map_err(Duration::from_nanos)?;
            // Relaxed: the TAT orders nothing else; the CAS alone makes each admission count
            // once, however many calls race.
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }

    /// Whether the limit is at rest at `now`: such a state says nothing a new one would not,
    /// so a table of them may forget it.
    pub fn is_idle(&self, now: u64) -> bool {
        self.tat.load(Ordering::Relaxed) <= now
    }

    /// The TAT, for choosing what to forget first (the smallest is the closest to rest).
    pub fn tat(&self) -> u64 {
        self.tat.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Each step: milliseconds since the epoch and what is decided then (`Err` with the wait
    /// in ms), for 10/s with a burst of 3.
    #[test]
    fn burst_then_the_sustained_rate() {
        let limit = Gcra::per_second(10, 3);
        let gcra = AtomicGcra::new();
        let steps: &[(u64, Result<(), u64>)] = &[
            (1000, Ok(())),
            (1000, Ok(())),
            (1000, Ok(())),
            (1000, Err(100)),
            (1040, Err(60)),
            (1100, Ok(())),
            (1100, Err(100)),
            (1250, Ok(())),
            (1250, Err(50)),
            (1300, Ok(())),
            // A long rest refills no more than the burst.
            (9000, Ok(())),
            (9000, Ok(())),
            (9000, Ok(())),
            (9000, Err(100)),
        ];
        for (i, &(at, expected)) in steps.iter().enumerate() {
            let got = gcra.try_acquire(&limit, at * MS);
            assert_eq!(
                got,
                expected.map_err(Duration::from_millis),
                "step {i} at {at} ms"
            );
        }
    }

    #[test]
    fn degenerate_parameters_are_raised() {
        // 0/s is 1/s and a burst of 0 is 1: never "unlimited".
        let limit = Gcra::per_second(0, 0);
        assert_eq!(limit.decide(0, 0), Ok(1_000_000_000));
        assert_eq!(limit.decide(1_000_000_000, 0), Err(1_000_000_000));
        // A huge rate still has an interval of at least 1 ns.
        assert_eq!(Gcra::with_interval(Duration::ZERO, 1).interval_ns(), 1);
    }

    #[test]
    fn idle_when_at_rest() {
        let limit = Gcra::per_second(1, 1);
        let gcra = AtomicGcra::new();
        assert!(gcra.is_idle(0));
        gcra.try_acquire(&limit, 5).unwrap();
        assert!(!gcra.is_idle(5));
        assert!(gcra.is_idle(5 + 1_000_000_000));
    }

    #[test]
    fn racing_threads_admit_exactly_the_burst() {
        let limit = Gcra::per_second(1, 1000);
        let gcra = std::sync::Arc::new(AtomicGcra::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let gcra = gcra.clone();
                std::thread::spawn(move || {
                    (0..500)
                        .filter(|_| gcra.try_acquire(&limit, 0).is_ok())
                        .count()
                })
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(admitted, 1000);
    }
}
