//! The edges of the live view: what subscribers' `EdgeReport`s say about their calls, kept per
//! subscriber and per destination over a sliding window, merged per edge (caller ->
//! destination) when the view is read.
//!
//! Time is cut into [`SLOT`]s; a subscriber's reports within one slot add up in that slot,
//! and a slot older than [`WINDOW`] is dropped. Everything is bounded by the streams open: a
//! subscriber keeps at most [`MAX_EDGES_PER_SUBSCRIBER`] destinations (a report is cut to
//! that many entries, and a new destination beyond it is ignored) with at most
//! `WINDOW / SLOT` slots each, and its data goes when its stream ends ([`EdgeReporter`]'s
//! drop) or ages out of the window.
//!
//! Each subscriber's entry has its own lock, taken by its stream when a report arrives (every
//! few seconds) and by readers of the view; the map of entries is locked only when a reporter
//! comes or goes and when the view is read.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mesh_core::latency::Sketch;
use mesh_core::proto::{self, MAX_EDGE_REPORT_EDGES};
use mesh_core::snapshot::ServiceName;

/// How far back the view looks.
pub(crate) const WINDOW: Duration = Duration::from_secs(30);

/// The width of one slot of the window.
pub(crate) const SLOT: Duration = Duration::from_secs(5);

/// Slots in the window.
const SLOTS: u64 = WINDOW.as_secs() / SLOT.as_secs();

/// The most destinations kept for one subscriber (its reports are cut to this many entries).
pub(crate) const MAX_EDGES_PER_SUBSCRIBER: usize = MAX_EDGE_REPORT_EDGES;

/// Why an entry of a report was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ReportError {
    /// The entry names no destination.
    #[error("edges[{0}].destination: missing")]
    MissingDestination(usize),
    /// The entry's destination is not a valid service name.
    #[error("edges[{index}].destination: {reason}")]
    InvalidDestination {
        /// The entry's index in the report.
        index: usize,
        /// Why the name was refused.
        reason: String,
    },
}

/// What became of one report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Recorded {
    /// Entries added to the window.
    pub(crate) kept: usize,
    /// Entries ignored because the report or the subscriber was over
    /// [`MAX_EDGES_PER_SUBSCRIBER`].
    pub(crate) over_limit: usize,
    /// Entries ignored because they were invalid, with the first reason.
    pub(crate) invalid: usize,
    /// Why the first invalid entry was ignored.
    pub(crate) first_error: Option<ReportError>,
}

/// Calls, failures and durations: what a report says about one destination, and what the
/// view adds up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) latency: Sketch,
}

impl Counts {
    fn merge(&mut self, other: &Counts) {
        self.calls = self.calls.saturating_add(other.calls);
        self.failures = self.failures.saturating_add(other.failures);
        self.latency.merge(&other.latency);
    }
}

/// One edge of the view: calls from `from` to `to` within the window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Edge {
    /// The caller: a service (`client.default`) or, for a workload that serves none, its
    /// SPIFFE ID.
    pub(crate) from: String,
    /// The service called (`greeter.default`).
    pub(crate) to: String,
    /// Everything within the window, summed over the caller's reporting subscribers.
    pub(crate) counts: Counts,
    /// Calls per second over the time the window covers (summed over subscribers).
    pub(crate) calls_per_second: f64,
}

/// Every reporting subscriber's recent edges.
#[derive(Debug)]
pub(crate) struct EdgeStore {
    /// Slot numbers count [`SLOT`]s from here.
    epoch: Instant,
    /// How often subscribers are asked to report; zero: never.
    interval: Duration,
    reporters: Mutex<HashMap<u64, Arc<Mutex<Reporter>>>>,
}

/// One subscriber's recent reports.
#[derive(Debug)]
struct Reporter {
    caller: String,
    /// When its first report on this stream arrived: its window covers no earlier time.
    first_report: Instant,
    /// Destination -> (slot number, counts) for the slots within the window, oldest first.
    edges: HashMap<String, VecDeque<(u64, Counts)>>,
}

/// A subscriber's entry in the [`EdgeStore`]; dropping it (when the stream ends) removes the
/// entry with its data.
#[derive(Debug)]
pub(crate) struct EdgeReporter {
    store: Arc<EdgeStore>,
    id: u64,
    entry: Arc<Mutex<Reporter>>,
}

// === impl EdgeStore ===

impl EdgeStore {
    /// An empty store whose subscribers are asked to report every `interval` (never when
    /// zero).
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            interval,
            reporters: Mutex::default(),
        }
    }

    /// The interval subscribers are asked to report at, for the snapshot's
    /// `edge_report_interval_ms` (0: never).
    pub(crate) fn interval_ms(&self) -> u32 {
        u32::try_from(self.interval.as_millis()).unwrap_or(u32::MAX)
    }

    /// The entry of subscriber `id` (unique for the life of the process), reporting as
    /// `caller`, starting at `now`.
    pub(crate) fn register(
        self: &Arc<Self>,
        id: u64,
        caller: String,
        now: Instant,
    ) -> EdgeReporter {
        let entry = Arc::new(Mutex::new(Reporter {
            caller,
            first_report: now,
            edges: HashMap::new(),
        }));
        lock(&self.reporters).insert(id, entry.clone());
        EdgeReporter {
            store: self.clone(),
            id,
            entry,
        }
    }

    /// Every edge within the window at `now`, summed over the subscribers that report it,
    /// sorted by caller then destination. Slots that aged out are dropped on the way.
    pub(crate) fn edges(&self, now: Instant) -> Vec<Edge> {
        let current = self.slot(now);
        let entries: Vec<_> = lock(&self.reporters).values().cloned().collect();
        let mut merged: BTreeMap<(String, String), Edge> = BTreeMap::new();
        for entry in entries {
            let mut reporter = lock(&entry);
            reporter.expire(current);
            let covered = self.covered(&reporter, current, now);
            for (destination, slots) in &reporter.edges {
                let mut counts = Counts::default();
                for (_, slot) in slots {
                    counts.merge(slot);
                }
                let edge = merged
                    .entry((reporter.caller.clone(), destination.clone()))
                    .or_insert_with(|| Edge {
                        from: reporter.caller.clone(),
                        to: destination.clone(),
                        counts: Counts::default(),
                        calls_per_second: 0.0,
                    });
                edge.counts.merge(&counts);
                edge.calls_per_second += counts.calls as f64 / covered.as_secs_f64();
            }
        }
        merged.into_values().collect()
    }

    /// The slot `now` falls in.
    fn slot(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() / SLOT.as_secs()
    }

    /// How much time a reporter's slots within the window cover at `now`: from the start of
    /// the oldest slot (or from its first report, if later), less one interval because a
    /// report tells of the interval before it; at least one interval.
    fn covered(&self, reporter: &Reporter, current: u64, now: Instant) -> Duration {
        let oldest = current.saturating_sub(SLOTS - 1);
        let oldest_start = self.epoch + SLOT * u32::try_from(oldest).unwrap_or(u32::MAX);
        let start = oldest_start.max(reporter.first_report);
        let interval = self.interval.max(Duration::from_millis(1));
        (now.saturating_duration_since(start) + interval).min(WINDOW + interval)
    }
}

// === impl EdgeReporter ===

impl EdgeReporter {
    /// Adds `report`, received at `now` from this subscriber as `caller` (which may change
    /// when the subscription does), to the current slot.
    pub(crate) fn record(&self, caller: &str, report: proto::EdgeReport, now: Instant) -> Recorded {
        let current = self.store.slot(now);
        let mut reporter = lock(&self.entry);
        if reporter.caller != caller {
            // Its calls so far were made as someone else: they stay that one's no longer.
            reporter.caller = caller.to_owned();
            reporter.edges.clear();
        }
        reporter.expire(current);
        let mut recorded = Recorded {
            over_limit: report.edges.len().saturating_sub(MAX_EDGES_PER_SUBSCRIBER),
            ..Recorded::default()
        };
        for (index, stats) in report
            .edges
            .into_iter()
            .take(MAX_EDGES_PER_SUBSCRIBER)
            .enumerate()
        {
            let destination = match destination(index, stats.destination.as_ref()) {
                Ok(destination) => destination,
                Err(error) => {
                    recorded.invalid += 1;
                    recorded.first_error.get_or_insert(error);
                    continue;
                }
            };
            if stats.calls == 0 {
                continue;
            }
            let counts = Counts {
                calls: stats.calls,
                // A report cannot fail more calls than it made.
                failures: stats.failures.min(stats.calls),
                latency: Sketch::from_counts(&stats.latency_buckets),
            };
            let known = reporter.edges.len();
            let slots = match reporter.edges.get_mut(&destination) {
                Some(slots) => slots,
                None if known >= MAX_EDGES_PER_SUBSCRIBER => {
                    recorded.over_limit += 1;
                    continue;
                }
                None => reporter.edges.entry(destination).or_default(),
            };
            match slots.back_mut() {
                Some((slot, sum)) if *slot == current => sum.merge(&counts),
                _ => slots.push_back((current, counts)),
            }
            recorded.kept += 1;
        }
        recorded
    }
}

impl Drop for EdgeReporter {
    fn drop(&mut self) {
        lock(&self.store.reporters).remove(&self.id);
    }
}

// === impl Reporter ===

impl Reporter {
    /// Drops the slots that left the window by slot `current`, and destinations left with none.
    fn expire(&mut self, current: u64) {
        let oldest = current.saturating_sub(SLOTS - 1);
        self.edges.retain(|_, slots| {
            while slots.front().is_some_and(|(slot, _)| *slot < oldest) {
                slots.pop_front();
            }
            !slots.is_empty()
        });
    }
}

/// The destination an entry names, as the view shows it (`greeter.default`).
fn destination(index: usize, wire: Option<&proto::ServiceRef>) -> Result<String, ReportError> {
    let wire = wire.ok_or(ReportError::MissingDestination(index))?;
    ServiceName::try_from(wire)
        .map(|name| name.to_string())
        .map_err(|e| ReportError::InvalidDestination {
            index,
            reason: e.to_string(),
        })
}

/// Locks `mutex`; a panic while it was held left plain data behind, still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use mesh_core::latency::BUCKETS;

    use super::*;

    fn stats(name: &str, calls: u64, failures: u64) -> proto::EdgeStats {
        let mut latency_buckets = vec![0; BUCKETS];
        // Every call took 1 to 1.6 ms.
        latency_buckets[4] = calls;
        proto::EdgeStats {
            destination: Some(proto::ServiceRef {
                namespace: "default".into(),
                name: name.into(),
                port: 0,
            }),
            calls,
            failures,
            latency_buckets,
        }
    }

    fn report(edges: Vec<proto::EdgeStats>) -> proto::EdgeReport {
        proto::EdgeReport { edges }
    }

    fn store() -> Arc<EdgeStore> {
        Arc::new(EdgeStore::new(SLOT))
    }

    #[test]
    fn reports_merge_per_edge_across_slots_and_subscribers() {
        let store = store();
        let t0 = store.epoch;
        let a = store.register(1, "client.default".into(), t0);
        let b = store.register(2, "client.default".into(), t0);
        a.record("client.default", report(vec![stats("greeter", 10, 1)]), t0);
        a.record(
            "client.default",
            report(vec![stats("greeter", 10, 0), stats("web", 4, 4)]),
            t0 + SLOT,
        );
        b.record(
            "client.default",
            report(vec![stats("greeter", 20, 1)]),
            t0 + SLOT,
        );

        let edges = store.edges(t0 + SLOT);
        assert_eq!(edges.len(), 2);
        let greeter = &edges[0];
        assert_eq!(
            (greeter.from.as_str(), greeter.to.as_str()),
            ("client.default", "greeter.default")
        );
        assert_eq!((greeter.counts.calls, greeter.counts.failures), (40, 2));
        assert_eq!(greeter.counts.latency.total(), 40);
        // Each subscriber's window covers two slots (10 s) since its first report: 20/10 + 20/10.
        assert!(
            (greeter.calls_per_second - 4.0).abs() < 1e-9,
            "{}",
            greeter.calls_per_second
        );
        let web = &edges[1];
        assert_eq!(
            (web.to.as_str(), web.counts.calls, web.counts.failures),
            ("web.default", 4, 4)
        );
    }

    #[test]
    fn slots_age_out_of_the_window_and_data_goes_with_the_stream() {
        let store = store();
        let t0 = store.epoch;
        let a = store.register(1, "client.default".into(), t0);
        a.record("client.default", report(vec![stats("greeter", 10, 0)]), t0);
        a.record(
            "client.default",
            report(vec![stats("greeter", 5, 0)]),
            t0 + WINDOW - SLOT,
        );
        // Still within: both slots.
        assert_eq!(store.edges(t0 + WINDOW - SLOT)[0].counts.calls, 15);
        // One window on, the first slot is gone.
        assert_eq!(store.edges(t0 + WINDOW)[0].counts.calls, 5);
        // And then the whole edge.
        assert!(store.edges(t0 + WINDOW * 2).is_empty());

        a.record(
            "client.default",
            report(vec![stats("greeter", 1, 0)]),
            t0 + WINDOW * 2,
        );
        assert_eq!(store.edges(t0 + WINDOW * 2).len(), 1);
        drop(a);
        assert!(store.edges(t0 + WINDOW * 2).is_empty());
        assert!(lock(&store.reporters).is_empty());
    }

    #[test]
    fn an_oversized_report_is_cut_and_a_subscriber_holds_a_bounded_number_of_edges() {
        let store = store();
        let t0 = store.epoch;
        let a = store.register(1, "client.default".into(), t0);
        let many: Vec<_> = (0..MAX_EDGES_PER_SUBSCRIBER + 10)
            .map(|i| stats(&format!("s{i}"), 1, 0))
            .collect();
        let recorded = a.record("client.default", report(many), t0);
        assert_eq!(recorded.kept, MAX_EDGES_PER_SUBSCRIBER);
        assert_eq!(recorded.over_limit, 10);
        assert_eq!(store.edges(t0).len(), MAX_EDGES_PER_SUBSCRIBER);

        // A new destination is refused while the subscriber holds the maximum; known ones add.
        let recorded = a.record(
            "client.default",
            report(vec![stats("new", 1, 0), stats("s0", 1, 0)]),
            t0 + SLOT,
        );
        assert_eq!((recorded.kept, recorded.over_limit), (1, 1));
        let edges = store.edges(t0 + SLOT);
        assert_eq!(edges.len(), MAX_EDGES_PER_SUBSCRIBER);
        assert!(edges.iter().all(|e| e.to != "new.default"));
    }

    #[test]
    fn invalid_entries_are_skipped_with_their_reason() {
        let store = store();
        let t0 = store.epoch;
        let a = store.register(1, "client.default".into(), t0);
        let mut bad = stats("Not_A_Name", 1, 0);
        let mut missing = stats("x", 1, 0);
        missing.destination = None;
        bad.failures = 7;
        let mut over = stats("greeter", 2, 9);
        over.latency_buckets = vec![1; BUCKETS + 40];
        let recorded = a.record("client.default", report(vec![missing, bad, over]), t0);
        assert_eq!((recorded.kept, recorded.invalid), (1, 2));
        assert_eq!(
            recorded.first_error,
            Some(ReportError::MissingDestination(0))
        );
        let edges = store.edges(t0);
        // Failures are capped at calls; extra buckets are ignored.
        assert_eq!((edges[0].counts.calls, edges[0].counts.failures), (2, 2));
        assert_eq!(edges[0].counts.latency.total(), BUCKETS as u64);
    }

    #[test]
    fn a_caller_that_changes_starts_afresh() {
        let store = store();
        let t0 = store.epoch;
        let a = store.register(1, "spiffe://mesh.local/ns/default/sa/web".into(), t0);
        a.record(
            "spiffe://mesh.local/ns/default/sa/web",
            report(vec![stats("greeter", 3, 0)]),
            t0,
        );
        a.record("web.default", report(vec![stats("greeter", 1, 0)]), t0);
        let edges = store.edges(t0);
        assert_eq!(edges.len(), 1);
        assert_eq!(
            (edges[0].from.as_str(), edges[0].counts.calls),
            ("web.default", 1)
        );
    }
}
