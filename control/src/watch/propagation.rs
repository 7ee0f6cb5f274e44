//! How long a config version takes to reach the subscribers it changed, measured for the
//! `mesh_control_config_propagation_duration_seconds` histogram.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::admin::metrics;

/// Measures how long a config version takes to reach every subscriber it changed: from the
/// first send of a version (a config change wakes every stream at once, so this is within
/// microseconds of the change) until the last of the subscribers it was sent to ACKs it or
/// leaves.
#[derive(Debug, Default)]
pub(crate) struct Propagation {
    inner: Mutex<Tracking>,
}

#[derive(Debug, Default)]
struct Tracking {
    version: u64,
    started: Option<Instant>,
    pending: u64,
}

impl Propagation {
    /// `version` was sent to one more subscriber.
    pub(crate) fn sent(&self, version: u64) {
        let mut t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if version > t.version {
            *t = Tracking {
                version,
                started: Some(Instant::now()),
                pending: 0,
            };
        }
        if version == t.version {
            t.pending += 1;
        }
    }

    /// A subscriber that was sent `version` acknowledged it, or left without doing so.
    pub(crate) fn settled(&self, version: u64) {
        let mut t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if version != t.version || t.pending == 0 {
            return;
        }
        t.pending -= 1;
        if t.pending == 0
            && let Some(started) = t.started.take()
        {
            metrics::propagated(started.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn propagation_waits_for_the_last_subscriber_of_the_newest_version() {
        let p = Propagation::default();
        p.sent(2);
        p.sent(2);
        p.settled(2);
        assert!(
            p.inner.lock().unwrap().started.is_some(),
            "one still pending"
        );
        p.settled(1); // an old version: ignored
        p.settled(2);
        let t = p.inner.lock().unwrap();
        assert_eq!((t.version, t.pending), (2, 0));
        assert!(t.started.is_none(), "measured once");
        drop(t);
        p.settled(2); // an extra settle never underflows
        p.sent(3);
        assert_eq!(p.inner.lock().unwrap().pending, 1);
    }
}
