//! The process's Prometheus recorder, shared by the mesh runtime and the control service so that
//! one admin port can render what both emit (tests and the demo run them in one process).
//!
//! The `metrics` facade has one global recorder per process. The mesh installs its own only when
//! nothing else has: an application that installed a recorder first keeps it, and the mesh's
//! metrics flow into that one instead (the mesh's `/metrics` then has nothing to render).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets for durations, in seconds: OpenTelemetry's advice for
/// `http.server.request.duration`, reused for every `*.duration` metric.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the mesh's Prometheus recorder as the global `metrics` recorder unless one is
/// installed already, and returns the handle that renders it; `None` when another recorder
/// owns the process. Only the first call tries; later calls return the same answer.
///
/// Names follow Prometheus' recommended naming: counters get `_total`, and a metric described
/// with a unit gets its suffix (`rpc.server.call.duration` in seconds is exported as
/// `rpc_server_call_duration_seconds`). Every metric whose name ends in `duration` is a real
/// histogram with [`DURATION_BUCKETS`].
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .with_recommended_naming(true)
                .set_buckets_for_metric(Matcher::Suffix("duration".into()), DURATION_BUCKETS)
                // The buckets are a non-empty constant: this cannot fail.
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            // Refused when the application installed its own recorder first: it keeps it.
            metrics::set_global_recorder(recorder).ok().map(|()| handle)
        })
        .as_ref()
}

/// The handle if [`install`] put the mesh's recorder in place.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get().and_then(Option::as_ref)
}
