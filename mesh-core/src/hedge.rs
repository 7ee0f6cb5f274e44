//! Hedging arithmetic: a backend's recent latency to response headers, kept in a small
//! windowed histogram, and the delay after which a call's next try is sent.
//!
//! The histogram has [`SUB_BUCKETS`] linear buckets per power of two of microseconds (each
//! within 1/8 of its value, as HdrHistogram with three significant bits), from 1 µs to about
//! 67 s, so a percentile is read with a few percent of error and recording is a leading-zero
//! count. Two generations of [`WindowedLatency::period`] each are kept: what is read covers
//! the last one to two periods, so the estimate follows a backend whose latency changes.
//!
//! A percentile delay has a floor ([`MIN_DELAY`]) and needs [`MIN_SAMPLES`] calls seen first:
//! until then no hedge is sent (a guess would either hedge every call or none usefully).
//! Time is passed in, so the type is deterministic and needs no runtime.

use std::time::{Duration, Instant};

use crate::snapshot::HedgeDelay;

/// Linear buckets per power of two (3 significant bits).
pub const SUB_BUCKETS: usize = 8;
/// Powers of two covered above the first linear stretch: up to 2^26 µs (about 67 s).
const OCTAVES: usize = 24;
/// Buckets in a histogram.
pub const BUCKETS: usize = SUB_BUCKETS * (OCTAVES + 1);
/// Calls a percentile delay needs seen (in the window) before any hedge is sent.
pub const MIN_SAMPLES: u64 = 100;
/// The shortest percentile delay: a backend answering in microseconds is not hedged at once.
pub const MIN_DELAY: Duration = Duration::from_millis(1);
/// How long one generation of the window lasts, by default.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);

/// The bucket of a duration of `micros` microseconds.
pub fn bucket_of(micros: u64) -> usize {
    let top = (SUB_BUCKETS << OCTAVES) as u64 - 1;
    let v = micros.min(top);
    if v < SUB_BUCKETS as u64 {
        // `v` is below 8.
        return v as usize;
    }
    let msb = (u64::BITS - 1 - v.leading_zeros()) as usize;
    // msb >= 3: the octave, and the three bits below the leading one.
    let sub = ((v >> (msb - 3)) & (SUB_BUCKETS as u64 - 1)) as usize;
    (msb - 2) * SUB_BUCKETS + sub
}

/// The microseconds bucket `i` holds: from its first to its last value, inclusive.
pub fn bucket_bounds(i: usize) -> (u64, u64) {
    if i < SUB_BUCKETS {
        return (i as u64, i as u64);
    }
    let msb = i / SUB_BUCKETS + 2;
    let sub = (i % SUB_BUCKETS) as u64;
    let width = 1u64 << (msb - 3);
    let lower = (SUB_BUCKETS as u64 + sub) << (msb - 3);
    (lower, lower + width - 1)
}

/// One generation's counts.
#[derive(Debug, Clone)]
struct Generation {
    counts: Box<[u32; BUCKETS]>,
    total: u64,
}

impl Generation {
    fn new() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            total: 0,
        }
    }

    fn clear(&mut self) {
        self.counts.fill(0);
        self.total = 0;
    }
}

/// A backend's recent latencies (see the module docs).
#[derive(Debug, Clone)]
pub struct WindowedLatency {
    period: Duration,
    /// When the current generation started.
    started: Instant,
    current: Generation,
    previous: Generation,
}

impl WindowedLatency {
    /// An empty window of generations of `period` (at least a second), starting at `now`.
    pub fn new(period: Duration, now: Instant) -> Self {
        Self {
            period: period.max(Duration::from_secs(1)),
            started: now,
            current: Generation::new(),
            previous: Generation::new(),
        }
    }

    /// How long one generation lasts.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Counts a try that took `elapsed` to its response headers (or, cancelled, at least
    /// `elapsed`).
    pub fn record(&mut self, elapsed: Duration, now: Instant) {
        self.rotate(now);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let slot = &mut self.current.counts[bucket_of(micros)];
        *slot = slot.saturating_add(1);
        self.current.total += 1;
    }

    /// Calls counted in the window.
    pub fn samples(&mut self, now: Instant) -> u64 {
        self.rotate(now);
        self.current.total + self.previous.total
    }

    /// The `percent` percentile (1 to 100) of the window, interpolated within its bucket;
    /// `None` with fewer than [`MIN_SAMPLES`] calls counted.
    pub fn percentile(&mut self, percent: u8, now: Instant) -> Option<Duration> {
        let total = self.samples(now);
        if total < MIN_SAMPLES {
            return None;
        }
        // The rank of the call at the percentile, 1-based: ceil(total × percent / 100).
        let rank = (total * u64::from(percent.clamp(1, 100))).div_ceil(100);
        let mut below = 0u64;
        for (i, (a, b)) in self
            .current
            .counts
            .iter()
            .zip(self.previous.counts.iter())
            .enumerate()
        {
            let count = u64::from(*a) + u64::from(*b);
            if below + count >= rank {
                let (lower, upper) = bucket_bounds(i);
                // The rank's place among the bucket's calls, spread evenly over its values.
                let within = (rank - below) as f64 / count as f64;
                let micros = lower as f64 + (upper - lower) as f64 * within;
                return Some(Duration::from_micros(micros.round() as u64));
            }
            below += count;
        }
        // Unreachable with consistent totals; the top bound is a safe answer.
        Some(Duration::from_micros(bucket_bounds(BUCKETS - 1).1))
    }

    /// Moves to a new generation when the current one is over.
    fn rotate(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.started);
        if age < self.period {
            return;
        }
        if age >= self.period * 2 {
            // Nothing recorded for a whole period: both generations are stale.
            self.previous.clear();
        } else {
            std::mem::swap(&mut self.previous, &mut self.current);
        }
        self.current.clear();
        self.started = now;
    }
}

/// How long after a try the next one is sent under `delay`, with `percentile` reading the
/// backend's window; `None`: no hedge (a percentile not known yet).
pub fn hedge_delay(
    delay: HedgeDelay,
    percentile: impl FnOnce(u8) -> Option<Duration>,
) -> Option<Duration> {
    match delay {
        HedgeDelay::Fixed(fixed) => Some(fixed),
        HedgeDelay::Percentile(p) => percentile(p).map(|d| d.max(MIN_DELAY)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_within_an_eighth() {
        let cases = [
            (0, 0),
            (7, 7),
            (8, 8),
            (15, 15),
            (16, 16),
            (17, 16),
            (18, 17),
            (1000, bucket_of(1000)),
            (u64::MAX, BUCKETS - 1),
        ];
        for (micros, bucket) in cases {
            assert_eq!(bucket_of(micros), bucket, "{micros} µs");
        }
        let mut next = 0;
        for i in 0..BUCKETS {
            let (lower, upper) = bucket_bounds(i);
            assert_eq!(lower, next, "bucket {i} starts where {} ends", i.max(1) - 1);
            assert_eq!((bucket_of(lower), bucket_of(upper)), (i, i), "bucket {i}");
            // A bucket's width is at most an eighth of its lower bound (beyond the first 8).
            if lower >= 8 {
                assert!((upper - lower + 1) * 8 <= lower, "bucket {i}");
            }
            next = upper + 1;
        }
        assert!(next >= 60_000_000, "covers a minute: {next} µs");
    }

    #[test]
    fn percentiles_need_enough_samples_and_read_the_tail() {
        let t0 = Instant::now();
        let mut window = WindowedLatency::new(Duration::from_secs(10), t0);
        let ms = Duration::from_millis;
        for _ in 0..99 {
            window.record(ms(2), t0);
        }
        assert_eq!(window.percentile(95, t0), None, "99 calls are too few");
        window.record(ms(2), t0);
        // 95 % of calls at 10 ms, 5 % at 200 ms (100 more calls).
        for i in 0..100 {
            window.record(if i % 20 == 0 { ms(200) } else { ms(10) }, t0);
        }
        let cases = [
            (50, ms(2), ms(10)),
            (90, ms(10), ms(12)),
            (99, ms(200), ms(226)),
        ];
        for (p, low, high) in cases {
            let found = window.percentile(p, t0).unwrap();
            assert!(
                found >= low.mul_f64(0.9) && found <= high,
                "p{p}: {found:?}"
            );
        }
    }

    #[test]
    fn the_window_forgets_after_two_periods() {
        let t0 = Instant::now();
        let period = Duration::from_secs(10);
        let mut window = WindowedLatency::new(period, t0);
        for _ in 0..200 {
            window.record(Duration::from_millis(50), t0);
        }
        // One period on: the first generation is the previous one, still read.
        let t1 = t0 + period;
        assert_eq!(window.samples(t1), 200);
        for _ in 0..200 {
            window.record(Duration::from_millis(5), t1);
        }
        let p95 = window.percentile(95, t1).unwrap();
        assert!(p95 >= Duration::from_millis(45), "{p95:?}");
        // Two periods on: only the second generation.
        let t2 = t1 + period;
        assert_eq!(window.samples(t2), 200);
        let p95 = window.percentile(95, t2).unwrap();
        assert!(p95 <= Duration::from_millis(6), "{p95:?}");
        // Idle for two periods: nothing left.
        assert_eq!(window.samples(t2 + period * 2), 0);
    }

    #[test]
    fn delays_are_fixed_or_a_floored_percentile() {
        let ms = Duration::from_millis;
        let cases: [(HedgeDelay, Option<Duration>, Option<Duration>); 5] = [
            (HedgeDelay::Fixed(ms(20)), None, Some(ms(20))),
            (
                HedgeDelay::Fixed(Duration::ZERO),
                Some(ms(5)),
                Some(Duration::ZERO),
            ),
            (HedgeDelay::Percentile(95), Some(ms(7)), Some(ms(7))),
            // Below the floor.
            (
                HedgeDelay::Percentile(95),
                Some(Duration::from_micros(80)),
                Some(MIN_DELAY),
            ),
            // Not enough calls seen: no hedge.
            (HedgeDelay::Percentile(95), None, None),
        ];
        for (i, (delay, read, expected)) in cases.into_iter().enumerate() {
            assert_eq!(hedge_delay(delay, |_| read), expected, "case {i}");
        }
    }
}
