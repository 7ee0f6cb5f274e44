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
//! | `mesh_control_root_rotation_phase` | gauge (0 steady, 1 overlap, 2 issuing from the next root) | |
//! | `mesh_control_root_rotation_steps_total` | counter | `phase`, `reason` |
//! | `mesh_control_root_rotations_total` | counter (completed rotations) | |
//! | `mesh_control_root_expiry_timestamp_seconds` | gauge (Unix time the root in force expires) | |
//!
//! Subscribers per destination are counted from the registry when `/metrics` is rendered, so
//! the Watch path carries no gauge bookkeeping.
//!
//! This module only names and records: it depends on nothing else in the crate, so every part
//! that counts something (Certify, Watch, the config sources, the admin port) can use it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use mesh_core::snapshot::ServiceName;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

const SUBSCRIBERS: &str = "mesh.control.subscribers";
const ACKS: &str = "mesh.control.acks";
const NACKS: &str = "mesh.control.nacks";
const MESSAGES: &str = "mesh.control.watch.messages";
const RESYNCS: &str = "mesh.control.watch.resyncs";
const CONFIG_VERSION: &str = "mesh.control.config.version";
const PROPAGATION: &str = "mesh.control.config.propagation.duration";
const CERTS_ISSUED: &str = "mesh.control.certificates.issued";
const CERTS_REFUSED: &str = "mesh.control.certificates.refused";
const RELOAD_ERRORS: &str = "mesh.control.config.reload_errors";
const ROTATION_PHASE: &str = "mesh.control.root_rotation.phase";
const ROTATION_STEPS: &str = "mesh.control.root_rotation.steps";
const ROTATIONS: &str = "mesh.control.root_rotations";
const ROOT_EXPIRY: &str = "mesh.control.root_expiry_timestamp_seconds";

/// Registers descriptions and units with the recorder in place.
pub(crate) fn describe() {
    describe_gauge!(SUBSCRIBERS, "Watch subscribers per destination they watch");
    describe_counter!(ACKS, "Snapshot versions acknowledged by subscribers");
    describe_counter!(NACKS, "Snapshot versions rejected by subscribers");
    describe_counter!(
        MESSAGES,
        "Watch messages sent, by kind: full (a whole snapshot) or increment"
    );
    describe_counter!(
        RESYNCS,
        "Full snapshots subscribers asked for after an increment they could not apply"
    );
    describe_gauge!(CONFIG_VERSION, "Config version in force");
    describe_histogram!(
        PROPAGATION,
        Unit::Seconds,
        "Time from a config change to the last subscriber's ACK of it"
    );
    describe_counter!(CERTS_ISSUED, "Workload certificates issued");
    describe_counter!(CERTS_REFUSED, "Certificate requests refused, by reason");
    describe_counter!(RELOAD_ERRORS, "Config reloads refused, by reason");
    describe_gauge!(
        ROTATION_PHASE,
        "Root rotation phase: 0 steady, 1 overlap (both roots, issuing from the old), 2 issuing from the next root"
    );
    describe_counter!(
        ROTATION_STEPS,
        "Root rotation steps taken, by phase entered and reason"
    );
    describe_counter!(ROTATIONS, "Root rotations completed (the old root dropped)");
    describe_gauge!(ROOT_EXPIRY, "Unix time at which the root in force expires");
    // Every counter exists from the start, at 0 with each of its labels, so that a rate or an
    // alert on it has a series before the first event (`increase(...nacks_total[5m]) > 0`).
    for counter in [ACKS, NACKS, RESYNCS, CERTS_ISSUED] {
        metrics::counter!(counter).increment(0);
    }
    for kind in ["full", "increment"] {
        metrics::counter!(MESSAGES, "kind" => kind).increment(0);
    }
    for reason in CERTIFICATE_REFUSALS {
        metrics::counter!(CERTS_REFUSED, "reason" => *reason).increment(0);
    }
    for reason in RELOAD_ERROR_REASONS {
        metrics::counter!(RELOAD_ERRORS, "reason" => *reason).increment(0);
    }
}

/// Every `reason` of [`certificate_refused`].
const CERTIFICATE_REFUSALS: &[&str] = &[
    "missing_token",
    "unknown_token",
    "refused_token",
    "unavailable",
    "rate_limited",
    "bad_csr",
    "internal",
];

/// Every `reason` of [`reload_error`].
const RELOAD_ERROR_REASONS: &[&str] = &["invalid", "unreadable"];

/// Sets the rotation's phase gauge and the expiry of the root in force.
pub(crate) fn rotation_phase(phase: u8, root_expires: std::time::SystemTime) {
    metrics::gauge!(ROTATION_PHASE).set(f64::from(phase));
    let expires = root_expires
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    metrics::gauge!(ROOT_EXPIRY).set(expires);
}

/// Counts a rotation step into `phase` for `reason`; a step back to `steady` completes one.
pub(crate) fn rotation_step(phase: &'static str, reason: &'static str) {
    metrics::counter!(ROTATION_STEPS, "phase" => phase, "reason" => reason).increment(1);
    if phase == "steady" {
        metrics::counter!(ROTATIONS).increment(1);
    }
}

/// A subscriber acknowledged a version.
pub(crate) fn acked() {
    metrics::counter!(ACKS).increment(1);
}

/// A subscriber rejected a version.
pub(crate) fn nacked() {
    metrics::counter!(NACKS).increment(1);
}

/// A Watch message went out: an increment or a full snapshot.
pub(crate) fn watch_message(increment: bool) {
    let kind = if increment { "increment" } else { "full" };
    metrics::counter!(MESSAGES, "kind" => kind).increment(1);
}

/// A subscriber asked for a full snapshot after an increment it could not apply.
pub(crate) fn resynced() {
    metrics::counter!(RESYNCS).increment(1);
}

/// A certificate was issued.
pub(crate) fn certificate_issued() {
    metrics::counter!(CERTS_ISSUED).increment(1);
}

/// A certificate request was refused: `missing_token`, `unknown_token`, `refused_token`,
/// `unavailable` (the authenticator could not decide), `rate_limited`, `bad_csr` or
/// `internal` (each listed in [`CERTIFICATE_REFUSALS`]).
pub(crate) fn certificate_refused(reason: &'static str) {
    debug_assert!(CERTIFICATE_REFUSALS.contains(&reason), "{reason}");
    metrics::counter!(CERTS_REFUSED, "reason" => reason).increment(1);
}

/// An edit of the config source was refused (`invalid`) or could not be read (`unreadable`).
pub(crate) fn reload_error(reason: &'static str) {
    debug_assert!(RELOAD_ERROR_REASONS.contains(&reason), "{reason}");
    metrics::counter!(RELOAD_ERRORS, "reason" => reason).increment(1);
}

/// A config version reached the last subscriber it was sent to, `elapsed` after it was first
/// sent.
pub(crate) fn propagated(elapsed: Duration) {
    metrics::histogram!(PROPAGATION).record(elapsed.as_secs_f64());
}

/// Sets the gauges that are read from state (subscribers per destination, `counts`; config
/// version) just before a scrape. Destinations in `seen` that lost their last subscriber are
/// set to 0, not left at their last count.
pub(crate) fn refresh(
    version: u64,
    counts: BTreeMap<ServiceName, u32>,
    seen: &Mutex<BTreeSet<ServiceName>>,
) {
    metrics::gauge!(CONFIG_VERSION).set(version as f64);
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
