//! How busy one accepted connection is: its calls in flight and a count of their starts and
//! ends, kept by the server layer (one atomic add when a call starts, one when its response
//! ends) and read by the connection's idle timer (`server::idle`) when it fires.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One in-flight call in the low half; every start and end adds one to the high half, so a
/// reader sees a change even when as many calls ended as started.
const ONE_CHANGE: u64 = 1 << 32;

/// The activity of one connection, shared by its calls and its idle timer.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    state: AtomicU64,
}

/// What the idle timer reads: calls in flight, and whether anything changed since last time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen(u64);

impl Seen {
    /// Whether a call is in flight.
    pub(crate) fn busy(self) -> bool {
        self.0 & (ONE_CHANGE - 1) != 0
    }
}

impl Activity {
    /// Marks a call as started; it ends when the returned guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        // Relaxed: the timer needs no ordering with the call's other effects, only to see
        // the count change eventually (it re-reads at its next expiry).
        self.state.fetch_add(ONE_CHANGE + 1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// The calls in flight and the count of changes, now.
    pub(crate) fn seen(&self) -> Seen {
        Seen(self.state.load(Ordering::Relaxed))
    }
}

/// A call in flight on a connection (see [`Activity::begin`]); dropping it ends the call.
#[derive(Debug)]
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        // One more change, one call fewer: + 2^32 - 1. Never underflows the low half: each
        // guard subtracts only the one its `begin` added.
        self.0.state.fetch_add(ONE_CHANGE - 1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_in_flight_and_changes_are_seen() {
        let activity = Arc::new(Activity::default());
        let quiet = activity.seen();
        assert!(!quiet.busy());
        let first = activity.begin();
        let second = activity.begin();
        assert!(activity.seen().busy());
        drop(first);
        assert!(activity.seen().busy());
        drop(second);
        let after = activity.seen();
        assert!(!after.busy());
        assert_ne!(after, quiet, "calls came and went: a change");
        assert_eq!(activity.seen(), after, "nothing since: no change");
    }
}
