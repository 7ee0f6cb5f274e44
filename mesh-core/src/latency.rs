//! The latency sketch workloads report to the control service (`EdgeStats.latency_buckets`):
//! call durations counted in [`BUCKETS`] fixed exponential buckets, so that a report is small
//! (24 counts), sketches merge by adding counts, and quantiles read from a merge are within a
//! factor of two of the truth (linear interpolation within the bucket narrows that in practice).
//!
//! Bucket 0 counts durations under [`FIRST_BOUND`] (100 µs); bucket `i` (1 to 22) those from
//! `FIRST_BOUND × 2^(i-1)` up to `FIRST_BOUND × 2^i`; bucket 23 everything from about 7 minutes
//! up. Both sides share this module, so the layout is defined once.

use std::time::Duration;

/// How many buckets a sketch has.
pub const BUCKETS: usize = 24;

/// The upper bound of bucket 0, in microseconds.
const FIRST_BOUND_MICROS: u64 = 100;

/// The upper bound of bucket 0.
pub const FIRST_BOUND: Duration = Duration::from_micros(FIRST_BOUND_MICROS);

/// The bucket a call that took `elapsed` is counted in. A division by a constant and a
/// leading-zero count: cheap enough for the request path.
pub fn bucket_of(elapsed: Duration) -> usize {
    // Durations beyond u64 microseconds (half a million years) land in the last bucket.
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    let units = micros / FIRST_BOUND_MICROS;
    // units 0 -> bucket 0; 1 -> 1; 2..=3 -> 2; 4..=7 -> 3; ...
    let bucket = (u64::BITS - units.leading_zeros()) as usize;
    bucket.min(BUCKETS - 1)
}

/// The bounds of bucket `i`: its lower bound, and its upper bound (none for the last bucket).
pub fn bucket_bounds(i: usize) -> (Duration, Option<Duration>) {
    let bound = |j: usize| FIRST_BOUND * (1u32 << j);
    match i {
        0 => (Duration::ZERO, Some(FIRST_BOUND)),
        i if i >= BUCKETS - 1 => (bound(BUCKETS - 2), None),
        i => (bound(i - 1), Some(bound(i))),
    }
}

/// Call counts per bucket: mergeable by addition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sketch {
    /// Calls per bucket.
    pub counts: [u64; BUCKETS],
}

impl Sketch {
    /// A sketch from the wire's counts: at most [`BUCKETS`] are read, missing ones are 0.
    pub fn from_counts(counts: &[u64]) -> Self {
        let mut sketch = Self::default();
        for (slot, count) in sketch.counts.iter_mut().zip(counts) {
            *slot = *count;
        }
        sketch
    }

    /// Counts one call that took `elapsed`.
    pub fn record(&mut self, elapsed: Duration) {
        let bucket = bucket_of(elapsed);
        self.counts[bucket] = self.counts[bucket].saturating_add(1);
    }

    /// Adds `other`'s counts to this one's.
    pub fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// How many calls the sketch counts.
    pub fn total(&self) -> u64 {
        self.counts
            .iter()
            .fold(0u64, |sum, c| sum.saturating_add(*c))
    }

    /// The duration under which a fraction `q` (0 to 1) of the calls fell, interpolated
    /// linearly within its bucket (the last bucket, unbounded, answers its lower bound); `None`
    /// for an empty sketch.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        // The rank of the call sought, 1-based: q = 0.99 of 100 calls is the 99th.
        let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0);
        let mut below = 0u64;
        for (i, &count) in self.counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            if (below + count) as f64 >= rank {
                let (lower, upper) = bucket_bounds(i);
                let Some(upper) = upper else {
                    return Some(lower);
                };
                let within = (rank - below as f64) / count as f64;
                return Some(lower + (upper - lower).mul_f64(within));
            }
            below += count;
        }
        // Unreachable with a consistent total; the largest bound is a safe answer.
        Some(bucket_bounds(BUCKETS - 1).0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_double_from_100_microseconds() {
        let us = Duration::from_micros;
        assert_eq!(bucket_of(Duration::ZERO), 0);
        assert_eq!(bucket_of(us(99)), 0);
        assert_eq!(bucket_of(us(100)), 1);
        assert_eq!(bucket_of(us(199)), 1);
        assert_eq!(bucket_of(us(200)), 2);
        assert_eq!(bucket_of(us(399)), 2);
        assert_eq!(bucket_of(us(400)), 3);
        assert_eq!(bucket_of(Duration::from_secs(3600)), BUCKETS - 1);
        assert_eq!(bucket_of(Duration::MAX), BUCKETS - 1);
        // Every bucket's bounds hold the durations counted in it.
        for i in 0..BUCKETS {
            let (lower, upper) = bucket_bounds(i);
            assert_eq!(bucket_of(lower), i, "lower bound of {i}");
            if let Some(upper) = upper {
                assert_eq!(bucket_of(upper - Duration::from_nanos(1000)), i);
                assert_eq!(bucket_of(upper), i + 1);
            }
        }
    }

    #[test]
    fn quantiles_fall_in_the_right_bucket_and_merge_adds() {
        let mut a = Sketch::default();
        for _ in 0..99 {
            a.record(Duration::from_millis(1));
        }
        let mut b = Sketch::default();
        b.record(Duration::from_millis(500));
        a.merge(&b);
        assert_eq!(a.total(), 100);
        let p50 = a.quantile(0.5).unwrap();
        // 1 ms is in [800 µs, 1.6 ms).
        assert!(p50 >= Duration::from_micros(800) && p50 < Duration::from_micros(1600));
        let p99 = a.quantile(0.99).unwrap();
        assert!(p99 <= Duration::from_micros(1600), "{p99:?}");
        let max = a.quantile(1.0).unwrap();
        assert!(
            max >= Duration::from_micros(409_600) && max <= Duration::from_micros(819_200),
            "{max:?}"
        );
        assert_eq!(Sketch::default().quantile(0.5), None);
    }

    #[test]
    fn wire_counts_are_read_up_to_the_bucket_count() {
        let sketch = Sketch::from_counts(&[1; BUCKETS + 10]);
        assert_eq!(sketch.total(), BUCKETS as u64);
        let sketch = Sketch::from_counts(&[0, 2]);
        assert_eq!(sketch.total(), 2);
        assert_eq!(sketch.counts[1], 2);
    }
}
