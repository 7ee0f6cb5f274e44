//! Peak-EWMA latency, lock-free: what P2C compares endpoints by.
//!
//! The estimate jumps to any latency above it (the "peak") and otherwise decays toward recent
//! observations with a time constant, so an endpoint that turns slow is avoided at once and one
//! that recovers wins traffic back gradually. Reads and updates are atomics, never a lock on
//! the request path; two updates racing may lose one observation, which only blurs an estimate.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How fast old observations are forgotten (as Finagle and Linkerd).
const DECAY: Duration = Duration::from_secs(10);

/// The estimate for an endpoint with no history. Deliberately optimistic: a pessimistic
/// default means that on a fast network a new replica costs more than the warm ones and P2C
/// never tries it; an optimistic one lets it take a call at once, and the peak rule replaces the
/// default with the real latency on the first response.
const DEFAULT_RTT: Duration = Duration::from_micros(100);

/// One endpoint's load: a peak-EWMA latency estimate and the calls in flight.
#[derive(Debug)]
pub(crate) struct PeakEwma {
    epoch: Instant,
    /// The estimate, in nanoseconds, as `f64` bits.
    rtt_ns: AtomicU64,
    /// When the estimate was last updated, in nanoseconds since `epoch`.
    updated_ns: AtomicU64,
    pending: AtomicU32,
    /// Until when (nanoseconds since `epoch`) the endpoint asked to be spared: it answered
    /// 429 or RESOURCE_EXHAUSTED; 0 when it did not.
    shedding_until_ns: AtomicU64,
}

/// How much costlier an endpoint that sheds load looks while it asked to be spared: enough
/// that P2C picks any endpoint that does not shed, while one that sheds is still picked over
/// none at all.
const SHEDDING_FACTOR: f64 = 1e6;

/// The longest an endpoint is spared for one answer, whatever `Retry-After` it sent.
pub(crate) const MAX_SHEDDING: Duration = Duration::from_secs(30);

impl PeakEwma {
    pub(crate) fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            rtt_ns: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            updated_ns: AtomicU64::new(nanos_since(epoch, Instant::now())),
            pending: AtomicU32::new(0),
            shedding_until_ns: AtomicU64::new(0),
        }
    }

    /// The cost P2C minimises: estimated latency × (calls in flight + 1) ÷ weight.
    pub(crate) fn cost(&self, weight: u32, now: Instant) -> f64 {
        let pending = f64::from(self.pending.load(Ordering::Relaxed));
        // The time since the epoch once: each conversion is about 45 instructions.
        let now_ns = nanos_since(self.epoch, now);
        let rtt = self.decayed(now_ns);
        let cost = rtt * (pending + 1.0) / f64::from(weight.max(1));
        if self.is_shedding_at(now_ns) {
            // At least 1 ns of estimate, so that even a cost of 0 is raised.
            return cost.max(1.0) * SHEDDING_FACTOR;
        }
        cost
    }

    /// The endpoint answered that it is overloaded (429, RESOURCE_EXHAUSTED), asking to be
    /// spared `for_` (from `Retry-After` or `grpc-retry-pushback-ms`, at most
    /// [`MAX_SHEDDING`]): its cost is raised until then.
    pub(crate) fn shedding(&self, now: Instant, for_: Duration) {
        let until = nanos_since(self.epoch, now + for_.min(MAX_SHEDDING));
        self.shedding_until_ns.fetch_max(until, Ordering::Relaxed);
    }

    /// Whether the endpoint asked, by its last 429 or RESOURCE_EXHAUSTED, to be spared until
    /// after `now`.
    pub(crate) fn is_shedding(&self, now: Instant) -> bool {
        self.is_shedding_at(nanos_since(self.epoch, now))
    }

    /// [`PeakEwma::is_shedding`] at `now_ns` since the epoch.
    fn is_shedding_at(&self, now_ns: u64) -> bool {
        now_ns < self.shedding_until_ns.load(Ordering::Relaxed)
    }

    /// The latency estimate now (decayed since the last response), for operators.
    pub(crate) fn estimate(&self, now: Instant) -> Duration {
        Duration::from_nanos(self.decayed(nanos_since(self.epoch, now)) as u64)
    }

    /// Calls in flight.
    pub(crate) fn in_flight(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    /// A call starts.
    pub(crate) fn start(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    /// A call that started at `sent` got its response (or failed) at `now`.
    pub(crate) fn complete(&self, sent: Instant, now: Instant) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
        let rtt = now.saturating_duration_since(sent).as_nanos() as f64;
        let now_ns = nanos_since(self.epoch, now);
        // One decay factor for both uses (the estimate decayed to now, then blended).
        let keep = self.keep(now_ns);
        let previous = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed)) * keep;
        let estimate = if rtt > previous {
            rtt
        } else {
            previous * keep + rtt * (1.0 - keep)
        };
        self.rtt_ns.store(estimate.to_bits(), Ordering::Relaxed);
        self.updated_ns.store(now_ns, Ordering::Relaxed);
    }

    /// The estimate decayed toward zero for the time since its last update, so an endpoint
    /// that was slow long ago gets tried again.
    fn decayed(&self, now_ns: u64) -> f64 {
        f64::from_bits(self.rtt_ns.load(Ordering::Relaxed)) * self.keep(now_ns)
    }

    /// The share of the estimate kept after the time since its last update.
    fn keep(&self, now_ns: u64) -> f64 {
        let updated = self.updated_ns.load(Ordering::Relaxed);
        decay_factor(now_ns.saturating_sub(updated) as f64 / DECAY.as_nanos() as f64)
    }
}

/// `e^-x` for `x >= 0`. Between calls of a busy client `x` is tiny (100 µs over a 10 s time
/// constant is 1e-5): then three terms of the series are exact to within `x³/6` (under
/// 2e-10 for `x` below 1e-3) and cost a few multiplications instead of a call to `exp`,
/// which P2C made four times a call (about 300 instructions in all under callgrind).
fn decay_factor(x: f64) -> f64 {
    if x < 1e-3 {
        1.0 - x + x * x * 0.5
    } else {
        (-x).exp()
    }
}

fn nanos_since(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_response_raises_the_estimate_at_once() {
        let t0 = Instant::now();
        let load = PeakEwma::new(t0);
        load.start();
        load.complete(t0, t0 + Duration::from_millis(50));
        let cost = load.cost(1, t0 + Duration::from_millis(50));
        assert!((cost - 50e6).abs() < 1e5, "{cost}");
    }

    #[test]
    fn calls_in_flight_and_weight_scale_the_cost() {
        let t0 = Instant::now();
        let load = PeakEwma::new(t0);
        let idle = load.cost(1, t0);
        load.start();
        load.start();
        assert!((load.cost(1, t0) / idle - 3.0).abs() < 1e-6);
        assert!((load.cost(3, t0) / idle - 1.0).abs() < 1e-6);
        assert_eq!(load.pending.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn the_decay_factor_is_e_to_the_minus_x_on_both_sides_of_the_series_bound() {
        for x in [
            0.0, 1e-9, 1e-5, 5e-4, 9.99e-4, 1e-3, 1.01e-3, 0.5, 1.0, 10.0,
        ] {
            let (got, want) = (decay_factor(x), (-x).exp());
            assert!(
                (got - want).abs() <= 2e-10 * want,
                "x = {x}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn the_estimate_decays_with_time() {
        let t0 = Instant::now();
        let load = PeakEwma::new(t0);
        load.start();
        load.complete(t0, t0 + Duration::from_millis(100));
        let later = t0 + Duration::from_millis(100) + DECAY;
        let cost = load.cost(1, later);
        // One time constant later: about e^-1 of 100 ms.
        assert!((cost / 100e6 - (-1f64).exp()).abs() < 0.01, "{cost}");
    }

    #[test]
    fn an_endpoint_that_sheds_costs_more_until_the_time_it_asked() {
        let epoch = Instant::now();
        let (shedding, calm) = (PeakEwma::new(epoch), PeakEwma::new(epoch));
        let now = epoch + Duration::from_millis(10);
        shedding.shedding(now, Duration::from_secs(2));
        assert!(shedding.cost(1, now) > calm.cost(1, now) * 1000.0);
        let later = now + Duration::from_secs(3);
        assert!((shedding.cost(1, later) - calm.cost(1, later)).abs() < 1.0);
        // Capped: an hour's Retry-After spares it for at most MAX_SHEDDING.
        shedding.shedding(later, Duration::from_secs(3600));
        assert!(shedding.cost(1, later + MAX_SHEDDING + Duration::from_secs(1)) < 1e6);
    }
}
