//! The control service's metrics, through the `metrics` facade and rendered on the admin
//! port's `/metrics` (Prometheus naming: `mesh.control.acks` is scraped as
//! `mesh_control_acks_total`).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `mesh_control_subscribers` | gauge | `destination` |
//! | `mesh_control_acks_total`, `mesh_control_nacks_total` | counter | |
//! | `mesh_control_config_version` | gauge | |
//! | `mesh_control_config_propagation_duration_seconds` | histogram | |
//! | `mesh_control_certificates_issued_total` | counter | |
//! | `mesh_control_certificates_refused_total` | counter | `reason` |
//! | `mesh_control_config_reload_errors_total` | counter | `reason` |
//!
//! Subscribers per destination are counted from the registry when `/metrics` is rendered, so
//! the Watch path carries no gauge bookkeeping.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use mesh_core::snapshot::ServiceName;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

use crate::registry::Registry;

const SUBSCRIBERS: &str = "mesh.control.subscribers";
const ACKS: &str = "mesh.control.acks";
const NACKS: &str = "mesh.control.nacks";
const CONFIG_VERSION: &str = "mesh.control.config.version";
const PROPAGATION: &str = "mesh.control.config.propagation.duration";
const CERTS_ISSUED: &str = "mesh.control.certificates.issued";
const CERTS_REFUSED: &str = "mesh.control.certificates.refused";
const RELOAD_ERRORS: &str = "mesh.control.config.reload_errors";

/// Registers descriptions and units with the recorder in place.
pub(crate) fn describe() {
    describe_gauge!(SUBSCRIBERS, "Watch subscribers per destination they watch");
    describe_counter!(ACKS, "Snapshot versions acknowledged by subscribers");
    describe_counter!(NACKS, "Snapshot versions rejected by subscribers");
    describe_gauge!(CONFIG_VERSION, "Config version in force");
    describe_histogram!(
        PROPAGATION,
        Unit::Seconds,
        "Time from a config change to the last subscriber's ACK of it"
    );
    describe_counter!(CERTS_ISSUED, "Workload certificates issued");
    describe_counter!(CERTS_REFUSED, "Certificate requests refused, by reason");
    describe_counter!(RELOAD_ERRORS, "Config reloads refused, by reason");
}

/// A subscriber acknowledged `version`.
pub(crate) fn acked(registry: &Registry, version: u64) {
    metrics::counter!(ACKS).increment(1);
    registry.propagation.settled(version);
}

/// A subscriber rejected a version.
pub(crate) fn nacked() {
    metrics::counter!(NACKS).increment(1);
}

/// A certificate was issued.
pub(crate) fn certificate_issued() {
    metrics::counter!(CERTS_ISSUED).increment(1);
}

/// A certificate request was refused: `missing_token`, `unknown_token`, `refused_token`,
/// `unavailable` (the
/// authenticator could not decide), `bad_csr` or `internal`.
pub(crate) fn certificate_refused(reason: &'static str) {
    metrics::counter!(CERTS_REFUSED, "reason" => reason).increment(1);
}

/// A certificate request whose token was refused.
pub(crate) fn authn_refused(error: &crate::authn::AuthnError) {
    use crate::authn::AuthnError;
    certificate_refused(match error {
        AuthnError::Missing => "missing_token",
        AuthnError::Unknown => "unknown_token",
        AuthnError::Refused => "refused_token",
        AuthnError::Unavailable(_) => "unavailable",
    });
}

/// An edit of the config source was refused (`invalid`) or could not be read (`unreadable`).
pub(crate) fn reload_error(reason: &'static str) {
    metrics::counter!(RELOAD_ERRORS, "reason" => reason).increment(1);
}

/// Sets the gauges that are read from state (subscribers per destination, config version)
/// just before a scrape. Destinations that lost their last subscriber are set to 0, not left
/// at their last count.
pub(crate) fn refresh(registry: &Registry, version: u64, seen: &Mutex<BTreeSet<ServiceName>>) {
    metrics::gauge!(CONFIG_VERSION).set(version as f64);
    let mut counts = std::collections::BTreeMap::<ServiceName, u32>::new();
    for subscriber in registry.list() {
        for destination in subscriber.destinations {
            *counts.entry(destination.service).or_default() += 1;
        }
    }
    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    for destination in seen.iter() {
        if !counts.contains_key(destination) {
            metrics::gauge!(SUBSCRIBERS, "destination" => destination.to_string()).set(0.0);
        }
    }
    for (destination, count) in counts {
        metrics::gauge!(SUBSCRIBERS, "destination" => destination.to_string()).set(count);
        seen.insert(destination);
    }
}

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
            metrics::histogram!(PROPAGATION).record(started.elapsed().as_secs_f64());
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
