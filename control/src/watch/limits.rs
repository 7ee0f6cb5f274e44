//! How much of the Watch fan-out one identity may hold: streams, destinations per stream, and
//! destinations across all its streams.
//!
//! Any workload with a certificate can open Watch streams, and every destination it names costs
//! the control service a record per stream until the stream ends, known destination or not.
//! Without a bound per identity, one workload could hold any amount of the service's memory.
//! The limits are per SPIFFE identity because that is what a certificate proves; replicas of one
//! service share their identity, so the defaults leave room for a large deployment (each
//! replica holds one stream per mesh handle).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use mesh_core::SpiffeId;
use tonic::Status;

/// Bounds on the Watch streams of one identity. Over a bound, the stream is refused (or ended,
/// for an update) with `RESOURCE_EXHAUSTED` naming the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchLimits {
    /// Watch streams one identity may hold at once (default 1,024: a deployment of that many
    /// replicas, each with one mesh handle).
    pub max_streams_per_identity: usize,
    /// Destinations one subscription may name (default 1,024; a workload names the services
    /// it calls). The wire protocol's own ceiling, 4,096, applies above it.
    pub max_destinations_per_stream: usize,
    /// Destinations one identity may name across all its streams (default 65,536: 1,024
    /// replicas with 64 destinations each), which bounds what one identity costs the control
    /// service to some tens of megabytes.
    pub max_destinations_per_identity: usize,
}

impl Default for WatchLimits {
    fn default() -> Self {
        Self {
            max_streams_per_identity: 1024,
            max_destinations_per_stream: 1024,
            max_destinations_per_identity: 65_536,
        }
    }
}

impl WatchLimits {
    /// Checks the size of one subscription, before anything is allocated for it.
    pub(crate) fn check_destinations(&self, count: usize) -> Result<(), Status> {
        if count > self.max_destinations_per_stream {
            return Err(Status::resource_exhausted(format!(
                "destinations: {count} given, at most {} allowed (max_destinations_per_stream)",
                self.max_destinations_per_stream
            )));
        }
        Ok(())
    }
}

/// What each identity holds now. An identity's entry lives as long as one of its streams, so
/// the map is bounded by the streams open.
#[derive(Debug)]
pub(crate) struct Usage {
    limits: WatchLimits,
    held: Mutex<HashMap<SpiffeId, Held>>,
}

/// One identity's streams and the destinations they name.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    streams: usize,
    destinations: usize,
}

/// One subscribed stream's share of its identity's usage; given back when dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    usage: Arc<Usage>,
    identity: SpiffeId,
    destinations: usize,
}

// === impl Usage ===

impl Usage {
    pub(crate) fn new(limits: WatchLimits) -> Self {
        Self {
            limits,
            held: Mutex::default(),
        }
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> &WatchLimits {
        &self.limits
    }

    /// Counts one more stream of `identity` naming `destinations`, if its limits allow.
    pub(crate) fn acquire(
        self: &Arc<Self>,
        identity: &SpiffeId,
        destinations: usize,
    ) -> Result<Lease, Status> {
        let mut held = lock(&self.held);
        let current = held.get(identity).copied().unwrap_or_default();
        if current.streams >= self.limits.max_streams_per_identity {
            return Err(Status::resource_exhausted(format!(
                "{identity} already holds {} Watch streams, the most one identity may \
                 (max_streams_per_identity)",
                current.streams
            )));
        }
        self.check_total(identity, current.destinations + destinations)?;
        let entry = held.entry(identity.clone()).or_default();
        entry.streams += 1;
        entry.destinations += destinations;
        Ok(Lease {
            usage: self.clone(),
            identity: identity.clone(),
            destinations,
        })
    }

    fn check_total(&self, identity: &SpiffeId, total: usize) -> Result<(), Status> {
        if total > self.limits.max_destinations_per_identity {
            return Err(Status::resource_exhausted(format!(
                "destinations: {identity} would name {total} destinations across its Watch \
                 streams, at most {} allowed (max_destinations_per_identity)",
                self.limits.max_destinations_per_identity
            )));
        }
        Ok(())
    }

    /// Every identity holding a stream, with its streams and destinations (tests).
    #[cfg(test)]
    fn snapshot(&self) -> Vec<(String, usize, usize)> {
        let mut all: Vec<_> = lock(&self.held)
            .iter()
            .map(|(id, h)| (id.to_string(), h.streams, h.destinations))
            .collect();
        all.sort();
        all
    }
}

// === impl Lease ===

impl Lease {
    /// The stream now names `destinations` (a later `subscribe`), if the identity's limit
    /// allows; unchanged if not.
    pub(crate) fn resize(&mut self, destinations: usize) -> Result<(), Status> {
        let mut held = lock(&self.usage.held);
        let Some(entry) = held.get_mut(&self.identity) else {
            // This lease's entry exists until the lease is dropped.
            return Ok(());
        };
        let total = entry.destinations - self.destinations + destinations;
        self.usage.check_total(&self.identity, total)?;
        entry.destinations = total;
        self.destinations = destinations;
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut held = lock(&self.usage.held);
        if let Some(entry) = held.get_mut(&self.identity) {
            entry.streams = entry.streams.saturating_sub(1);
            entry.destinations = entry.destinations.saturating_sub(self.destinations);
            if entry.streams == 0 {
                held.remove(&self.identity);
            }
        }
    }
}

/// Locks `mutex`; a panic while it was held left counts that are each whole, still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use mesh_core::testing::trust_domain as td;

    use super::*;

    fn id(sa: &str) -> SpiffeId {
        SpiffeId::from_service_account(&td(), "default", sa).expect("valid")
    }

    fn usage(streams: usize, per_stream: usize, total: usize) -> Arc<Usage> {
        Arc::new(Usage::new(WatchLimits {
            max_streams_per_identity: streams,
            max_destinations_per_stream: per_stream,
            max_destinations_per_identity: total,
        }))
    }

    #[test]
    fn streams_per_identity_are_bounded_and_given_back() {
        let usage = usage(2, 10, 100);
        let (a, b) = (id("a"), id("b"));
        let first = usage.acquire(&a, 1).expect("1");
        let _second = usage.acquire(&a, 1).expect("2");
        let err = usage.acquire(&a, 1).expect_err("3");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(
            err.message().contains("max_streams_per_identity"),
            "{}",
            err.message()
        );
        usage.acquire(&b, 1).expect("another identity");
        drop(first);
        let _third = usage.acquire(&a, 1).expect("room again");
    }

    #[test]
    fn destinations_are_bounded_per_stream_and_per_identity() {
        let usage = usage(10, 10, 15);
        let limits = usage.limits();
        assert!(limits.check_destinations(10).is_ok());
        let err = limits.check_destinations(11).expect_err("11");
        assert!(
            err.message().starts_with("destinations: 11 given"),
            "{}",
            err.message()
        );
        let a = id("a");
        let mut first = usage.acquire(&a, 10).expect("10");
        let err = usage.acquire(&a, 6).expect_err("16 in all");
        assert!(
            err.message().contains("max_destinations_per_identity"),
            "{}",
            err.message()
        );
        let second = usage.acquire(&a, 5).expect("15 in all");
        assert!(first.resize(11).is_err(), "16 in all");
        first.resize(2).expect("7 in all");
        assert_eq!(usage.snapshot(), [(a.to_string(), 2, 7)]);
        drop(second);
        drop(first);
        assert!(usage.snapshot().is_empty(), "nothing left behind");
    }
}
