//! What this workload's calls to each destination service did, summed for the control
//! service's live view of the mesh: calls, failures and a latency sketch per destination,
//! drained into an `EdgeReport` on the Watch stream every few seconds (see `crate::control`).
//!
//! The request path pays for this with one relaxed atomic add per call (two when it failed)
//! on counters found when the snapshot arrived ([`EdgeCounters`], held by the client's metric
//! tables): no lock, no allocation, no hashing per call. Calls are not counted separately: a
//! call is one count in one latency bucket, and the calls of a report are the sum of its
//! buckets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mesh_core::latency::{BUCKETS, bucket_of};
use mesh_core::proto::{EdgeReport, EdgeStats, MAX_EDGE_REPORT_EDGES};
use mesh_core::snapshot::ServiceName;

/// The counters of one destination service since the last report.
#[derive(Debug, Default)]
pub(crate) struct EdgeCounters {
    failures: AtomicU64,
    /// Calls per latency bucket (`mesh_core::latency`).
    buckets: [AtomicU64; BUCKETS],
}

impl EdgeCounters {
    /// Counts one call that ended after `elapsed`, `failed` or not.
    #[inline]
    pub(crate) fn record(&self, failed: bool, elapsed: Duration) {
        // Relaxed: the counts are read every few seconds and need no order with anything.
        self.buckets[bucket_of(elapsed)].fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes the counts since the last drain: calls, failures, and calls per bucket.
    fn drain(&self) -> (u64, u64, Vec<u64>) {
        let failures = self.failures.swap(0, Ordering::Relaxed);
        let buckets: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.swap(0, Ordering::Relaxed))
            .collect();
        let calls = buckets.iter().fold(0u64, |sum, c| sum.saturating_add(*c));
        // A call counted in a bucket after the failures were taken is in the next report; one
        // whose failure was taken but not its bucket yet would make failures exceed calls.
        (calls, failures.min(calls), buckets)
    }
}

/// Every destination service this workload's clients call, with its counters.
#[derive(Debug, Default)]
pub(crate) struct Edges {
    by_destination: Mutex<HashMap<ServiceName, Arc<EdgeCounters>>>,
}

impl Edges {
    /// The counters of calls to `destination`, created on first use. Taken when a snapshot
    /// is compiled, never per call.
    pub(crate) fn counters(&self, destination: &ServiceName) -> Arc<EdgeCounters> {
        self.lock().entry(destination.clone()).or_default().clone()
    }

    /// Drains every destination's counts into a report of those that had calls, at most
    /// [`MAX_EDGE_REPORT_EDGES`] (the rest are dropped: the control service would ignore them);
    /// `None` when no call ended since the last report. Destinations no client uses any more
    /// are forgotten once drained.
    pub(crate) fn report(&self) -> Option<EdgeReport> {
        let mut edges = Vec::new();
        let mut map = self.lock();
        map.retain(|destination, counters| {
            let (calls, failures, latency_buckets) = counters.drain();
            if calls > 0 && edges.len() < MAX_EDGE_REPORT_EDGES {
                edges.push(EdgeStats {
                    destination: Some(destination.into()),
                    calls,
                    failures,
                    latency_buckets,
                });
            }
            // Held only here: no client table records into it any more.
            Arc::strong_count(counters) > 1
        });
        drop(map);
        (!edges.is_empty()).then_some(EdgeReport { edges })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServiceName, Arc<EdgeCounters>>> {
        self.by_destination
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> ServiceName {
        ServiceName::new("default", n).unwrap()
    }

    #[test]
    fn a_report_drains_the_counts_of_destinations_with_calls() {
        let edges = Edges::default();
        let greeter = edges.counters(&name("greeter"));
        let _idle = edges.counters(&name("idle"));
        greeter.record(false, Duration::from_micros(150));
        greeter.record(true, Duration::from_millis(3));
        greeter.record(false, Duration::from_micros(150));

        let report = edges.report().unwrap();
        assert_eq!(report.edges.len(), 1);
        let stats = &report.edges[0];
        let destination = stats.destination.as_ref().unwrap();
        assert_eq!(
            (destination.namespace.as_str(), destination.name.as_str()),
            ("default", "greeter")
        );
        assert_eq!((stats.calls, stats.failures), (3, 1));
        assert_eq!(stats.latency_buckets.len(), BUCKETS);
        assert_eq!(stats.latency_buckets[1], 2);
        assert_eq!(stats.latency_buckets.iter().sum::<u64>(), 3);

        // Drained: nothing new, nothing to report.
        assert!(edges.report().is_none());
        // Counters no client holds are forgotten.
        drop(greeter);
        drop(_idle);
        assert!(edges.report().is_none());
        assert!(edges.lock().is_empty());
    }

    #[test]
    fn a_report_has_at_most_the_edges_the_control_service_reads() {
        let edges = Edges::default();
        let held: Vec<_> = (0..MAX_EDGE_REPORT_EDGES + 5)
            .map(|i| {
                let counters = edges.counters(&name(&format!("s{i}")));
                counters.record(false, Duration::from_millis(1));
                counters
            })
            .collect();
        let report = edges.report().unwrap();
        assert_eq!(report.edges.len(), MAX_EDGE_REPORT_EDGES);
        drop(held);
    }
}
