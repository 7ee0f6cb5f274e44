//! Telemetry: golden metrics through the `metrics` facade, a span per request with W3C trace
//! context carried across services, and the admin endpoint that serves them.
//!
//! Metric names follow the OpenTelemetry semantic conventions and are exported to Prometheus
//! with the usual translation (dots become underscores, the unit becomes a suffix, counters end
//! in `_total`): `rpc.server.duration` is scraped as `rpc_server_duration_seconds`. The README
//! lists every metric with its labels.
//!
//! The request path stays cheap: the client's label sets and metric handles are built when a
//! snapshot arrives (one table per route and backend), the server's once per caller identity,
//! and the status label picks a handle from a small table filled on first use, so a call
//! formats no strings. The status of a gRPC call is read from its trailers when its body ends.
//!
//! Spans are plain `tracing` spans with OpenTelemetry attributes (`otel.kind`, `rpc.system`,
//! ...); with `tracing-opentelemetry` in the application's subscriber they become OpenTelemetry
//! spans, the server's parented on the caller's `traceparent`, and the client's injected into
//! the request it sends. Without such a subscriber they cost a disabled-callsite check.
//!
//! Decisions worth knowing:
//! - Label `route` is the matched route's name, `""` when the destination has no routes or no
//!   route matched; `backend` is `""` when the call failed before one was chosen. A raw path
//!   never becomes a label.
//! - The server side labels calls by the caller's verified `peer_identity`; it has no
//!   `peer_service` (nothing verified says which service a caller is part of).
//! - An HTTP call dropped before its response is not counted on the server (the caller counts
//!   its timeout); a gRPC call dropped before its status counts as `CANCELLED`.
//! - Handles made before a recorder is installed stay no-ops: an application that brings its
//!   own recorder installs it before `Mesh::start`.

mod admin;
mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
mod propagation;
mod record;

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

pub(crate) use self::admin::{AdminState, spawn as spawn_admin};
pub(crate) use self::metrics::{Direction, OutboundIndex, OutboundMetrics, StatusTable};
pub(crate) use self::propagation::set_remote_parent;
pub use self::propagation::{extract_context, inject_context, install_propagator};
pub use self::record::ObservedBody;
pub(crate) use self::record::{CallRecord, client_span, grpc_status, server_span};

use crate::discovery::Discovery;
use crate::identity::Identity;

/// `rpc.server.duration`: gRPC calls served, by duration (seconds).
pub const RPC_SERVER_DURATION: &str = "rpc.server.duration";
/// `rpc.client.duration`: gRPC calls made through the mesh, by duration (seconds).
pub const RPC_CLIENT_DURATION: &str = "rpc.client.duration";
/// `http.server.request.duration`: HTTP requests served (seconds).
pub const HTTP_SERVER_DURATION: &str = "http.server.request.duration";
/// `http.client.request.duration`: HTTP requests made through the mesh (seconds).
pub const HTTP_CLIENT_DURATION: &str = "http.client.request.duration";
/// Retries attempted (each try after the first).
pub const RETRIES: &str = "mesh.client.retries";
/// Retries wanted by the policy but refused by the retry budget.
pub const RETRY_BUDGET_EXHAUSTED: &str = "mesh.client.retry_budget_exhausted";
/// Timeouts: `kind="request"` (the call's deadline) or `kind="try"` (a per-try timeout).
pub const TIMEOUTS: &str = "mesh.client.timeouts";
/// Endpoints ejected by outlier detection.
pub const EJECTIONS: &str = "mesh.client.outlier_ejections";
/// Endpoints of a backend by `state`: `available`, `ejected`, `connecting`.
pub const ENDPOINTS: &str = "mesh.client.endpoints";
/// Authorization decisions by `policy` and `verdict` (`allow`, `deny`, `audit`).
pub const AUTHZ_DECISIONS: &str = "mesh.server.authz_decisions";
/// Seconds until the workload certificate expires.
pub const CERT_EXPIRY: &str = "mesh.certificate.expiry";
/// 1 while a Watch stream to the control service is open, else 0.
pub const CONTROL_CONNECTED: &str = "mesh.control.connected";
/// The version of the snapshot in use (0 before the first).
pub const CONFIG_VERSION: &str = "mesh.config.version";
/// Seconds since the snapshot in use arrived.
pub const CONFIG_AGE: &str = "mesh.config.age";
/// Snapshots refused (NACKed) by this workload.
pub const CONFIG_REJECTED: &str = "mesh.config.rejected";

/// How often time-based gauges (certificate expiry, snapshot age, endpoint states) are
/// refreshed for recorders that the mesh does not render itself.
const REFRESH: Duration = Duration::from_secs(5);

/// Registers descriptions and units with the recorder in place (once per process is enough;
/// repeating is harmless).
pub(crate) fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(RPC_SERVER_DURATION, Unit::Seconds, "gRPC calls served");
    describe_histogram!(
        RPC_CLIENT_DURATION,
        Unit::Seconds,
        "gRPC calls made through the mesh"
    );
    describe_histogram!(HTTP_SERVER_DURATION, Unit::Seconds, "HTTP requests served");
    describe_histogram!(
        HTTP_CLIENT_DURATION,
        Unit::Seconds,
        "HTTP requests made through the mesh"
    );
    describe_counter!(RETRIES, "Retries attempted");
    describe_counter!(
        RETRY_BUDGET_EXHAUSTED,
        "Retries refused by the retry budget"
    );
    describe_counter!(TIMEOUTS, "Calls or tries that timed out");
    describe_counter!(EJECTIONS, "Endpoints ejected by outlier detection");
    describe_gauge!(ENDPOINTS, "Endpoints of a backend by state");
    describe_counter!(
        AUTHZ_DECISIONS,
        "Authorization decisions by policy and verdict"
    );
    describe_gauge!(
        CERT_EXPIRY,
        Unit::Seconds,
        "Time until the workload certificate expires"
    );
    describe_gauge!(
        CONTROL_CONNECTED,
        "Whether the Watch stream to the control service is open"
    );
    describe_gauge!(CONFIG_VERSION, "Version of the snapshot in use");
    describe_gauge!(
        CONFIG_AGE,
        Unit::Seconds,
        "Time since the snapshot in use arrived"
    );
    describe_counter!(CONFIG_REJECTED, "Snapshots refused by this workload");
}

/// The counter of snapshots refused by the workload of `service`.
pub(crate) fn config_rejected(service: &str) -> ::metrics::Counter {
    ::metrics::counter!(CONFIG_REJECTED, "service" => service.to_owned())
}

/// Something whose gauges depend on time and are refreshed before each scrape.
pub(crate) trait Refresh: Send + Sync {
    fn refresh(&self, now: Instant);
}

/// The telemetry of one [`crate::Mesh`]: its own service's label, and what is refreshed before
/// a scrape.
pub(crate) struct MeshTelemetry {
    /// This workload's service (`greeter.default`), empty for a workload that serves nothing.
    pub(crate) service: String,
    /// Calls per destination service, for the control service's live view.
    pub(crate) edges: Arc<crate::edges::Edges>,
    refreshers: Mutex<Vec<Weak<dyn Refresh>>>,
    gauges: MeshGauges,
}

impl std::fmt::Debug for MeshTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTelemetry")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

struct MeshGauges {
    cert_expiry: ::metrics::Gauge,
    connected: ::metrics::Gauge,
    version: ::metrics::Gauge,
    age: ::metrics::Gauge,
}

impl MeshTelemetry {
    pub(crate) fn new(service: String) -> Self {
        let label = || vec![::metrics::Label::new("service", service.clone())];
        let gauges = MeshGauges {
            cert_expiry: ::metrics::gauge!(CERT_EXPIRY, label()),
            connected: ::metrics::gauge!(CONTROL_CONNECTED, label()),
            version: ::metrics::gauge!(CONFIG_VERSION, label()),
            age: ::metrics::gauge!(CONFIG_AGE, label()),
        };
        Self {
            service,
            edges: Arc::default(),
            refreshers: Mutex::new(Vec::new()),
            gauges,
        }
    }

    /// Refreshes `item`'s gauges before every scrape for as long as it lives.
    pub(crate) fn register(&self, item: Weak<dyn Refresh>) {
        let mut refreshers = self
            .refreshers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        refreshers.retain(|r| r.strong_count() > 0);
        refreshers.push(item);
    }

    /// Sets every time-based gauge: the mesh's own and each live backend's.
    pub(crate) fn refresh(&self, identity: &Identity, discovery: &Discovery) {
        let expiry = identity
            .svid()
            .not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        self.gauges.cert_expiry.set(expiry.as_secs_f64());
        let status = discovery.status();
        self.gauges
            .connected
            .set(if status.connected { 1.0 } else { 0.0 });
        // Versions stay far below 2^53: exact as a float.
        self.gauges.version.set(status.version as f64);
        if let Some(age) = status.staleness() {
            self.gauges.age.set(age.as_secs_f64());
        }
        let live: Vec<Arc<dyn Refresh>> = {
            let refreshers = self
                .refreshers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            refreshers.iter().filter_map(Weak::upgrade).collect()
        };
        let now = Instant::now();
        for item in live {
            item.refresh(now);
        }
        if let Some(handle) = mesh_process::prometheus::handle() {
            // Drains recorded histogram samples into their buckets, so memory stays bounded
            // between scrapes.
            handle.run_upkeep();
        }
    }
}

/// Refreshes the mesh's gauges every few seconds until the mesh goes away.
pub(crate) async fn refresh_forever(
    telemetry: Weak<MeshTelemetry>,
    identity: Identity,
    discovery: Weak<Discovery>,
) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (Some(telemetry), Some(discovery)) = (telemetry.upgrade(), discovery.upgrade()) else {
            return;
        };
        telemetry.refresh(&identity, &discovery);
    }
}
