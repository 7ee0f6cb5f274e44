//! Telemetry: golden metrics through the `metrics` facade, a span per request with W3C trace
//! context carried across services, and the admin endpoint that serves them.
//!
//! # Conventions
//!
//! Names and attributes follow the OpenTelemetry semantic conventions for RPC and HTTP, read
//! from the `open-telemetry/semantic-conventions` repository (v1.44.0, tagged 2026-08-04, and
//! its main branch after it, which is what v1.45 will be):
//!
//! - `docs/rpc/rpc-metrics.md`: `rpc.server.call.duration` and `rpc.client.call.duration`,
//!   histograms in seconds (`s`), with bucket boundaries `[0.005, 0.01, 0.025, 0.05, 0.075,
//!   0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]`. Attributes: `rpc.system.name` (required;
//!   `grpc` for gRPC), `rpc.method` (the fully-qualified method, `package.Service/Method`, as
//!   in `com.example.ExampleService/exampleMethod`; `_OTHER` when the method is not one the
//!   server recognises), the status code, `error.type` (if and only if the call failed: the
//!   status code's value), `server.address` / `server.port` (on the client: the address the
//!   caller used; opt-in on the server, so not set there). The RPC conventions are *Release
//!   Candidate* there, not yet *Stable*.
//! - The status code attribute: v1.44.0 names it `rpc.response.status_code`; the main branch
//!   renamed it `rpc.status_code` on 2026-08-05 (a breaking change, `.chloggen/3921.yaml`,
//!   issue 3870), so v1.45 carries `rpc.status_code`, which the mesh uses
//!   ([`attr::RPC_STATUS_CODE`]). Its value for gRPC is the status *name* (`OK`,
//!   `NOT_FOUND`, `DEADLINE_EXCEEDED`), not the number.
//! - `docs/rpc/grpc.md`: on a server only `UNKNOWN`, `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`,
//!   `INTERNAL`, `UNAVAILABLE` and `DATA_LOSS` are errors; on a client every status but `OK`.
//! - `docs/rpc/rpc-spans.md`: the span name is `{rpc.method}` (`_OTHER` gives
//!   `{rpc.system.name}`).
//! - `docs/http/http-metrics.md` (Stable): `http.server.request.duration` and
//!   `http.client.request.duration` in seconds, same buckets, with `http.request.method`
//!   (`GET` ... `PATCH`, else `_OTHER`), `http.response.status_code` (the number),
//!   `error.type` (the status code, for 5xx on a server and 4xx/5xx on a client) and
//!   `server.address` / `server.port` on the client. `http.route` (the application's route
//!   *template*) is not set: the mesh sits outside the application's router and never sees
//!   its templates; the mesh's own route name is `mesh.route`. `url.scheme` is not set either
//!   (every meshed call is HTTPS on the wire, a permissive server's plaintext calls aside).
//!
//! Prometheus' translation (the mesh's recorder, `mesh_process::prometheus`): dots become
//! underscores in names and labels, the unit becomes a suffix, counters end in `_total`:
//! `rpc.server.call.duration` is scraped as `rpc_server_call_duration_seconds` with labels
//! `rpc_system_name`, `rpc_method`, `rpc_status_code`, `error_type`. Labels the conventions do
//! not define are the mesh's own and start with `mesh.` (`mesh_service`, `mesh_destination`,
//! `mesh_route`, `mesh_backend`, `mesh_peer_identity`, ...). The README lists every metric.
//!
//! The request path stays cheap: the client's label sets and metric handles are built when a
//! snapshot arrives (one table per route and backend), the server's once per caller identity;
//! in a table, a call's method and status pick a handle made on first use, so a call formats
//! no strings. The status of a gRPC call is read from its trailers when its body ends. The
//! counters whose labels are known ahead (retries, timeouts, ejections) exist from the start,
//! at 0.
//!
//! Spans are plain `tracing` spans with OpenTelemetry attributes (`otel.kind`,
//! `rpc.system.name`, `rpc.method`, `rpc.status_code`, ...); with `tracing-opentelemetry` in the
//! application's subscriber they become OpenTelemetry spans, the server's parented on the
//! caller's `traceparent`, and the client's injected into the request it sends. Without such a
//! subscriber they cost a disabled-callsite check.
//!
//! Decisions worth knowing:
//! - Label `mesh_route` is the matched route's name, `""` when the destination has no routes
//!   or no route matched; `mesh_backend` is `""` when the call failed before one was chosen.
//!   A raw path never becomes a label; a gRPC method does, bounded (64 per label set, then
//!   `_OTHER`; a method the server answered `UNIMPLEMENTED` is `_OTHER` too).
//! - The server side labels calls by the caller's verified `mesh_peer_identity`; it has no
//!   destination (nothing verified says which service a caller is part of).
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
pub(crate) use self::metrics::{
    CallKind, Direction, OTHER, OutboundIndex, OutboundMetrics, StatusTable, http_method_index,
};
pub(crate) use self::propagation::set_remote_parent;
pub use self::propagation::{extract_context, inject_context, install_propagator};
pub use self::record::ObservedBody;
pub(crate) use self::record::{CallRecord, client_span, grpc_status, server_span};

use crate::discovery::Discovery;
use crate::identity::Identity;

/// `rpc.server.call.duration`: gRPC calls served, by duration (seconds).
pub const RPC_SERVER_DURATION: &str = "rpc.server.call.duration";
/// `rpc.client.call.duration`: gRPC calls made through the mesh, by duration (seconds).
pub const RPC_CLIENT_DURATION: &str = "rpc.client.call.duration";
/// `http.server.request.duration`: HTTP requests served (seconds).
pub const HTTP_SERVER_DURATION: &str = "http.server.request.duration";
/// `http.client.request.duration`: HTTP requests made through the mesh (seconds).
pub const HTTP_CLIENT_DURATION: &str = "http.client.request.duration";
/// Retries attempted (each try after the first).
pub const RETRIES: &str = "mesh.client.retries";
/// Hedged tries sent (each try of a hedged call after the first).
pub const HEDGES: &str = "mesh.client.hedges";
/// Hedged calls answered by a hedged try rather than by their first try.
pub const HEDGES_WON: &str = "mesh.client.hedges_won";
/// Retries (and hedges) wanted by the policy but refused by the retry budget.
pub const RETRY_BUDGET_EXHAUSTED: &str = "mesh.client.retry_budget_exhausted";
/// Timeouts: `mesh.kind="request"` (the call's deadline) or `kind="try"` (a per-try timeout).
pub const TIMEOUTS: &str = "mesh.client.timeouts";
/// Faults injected by a route's `FaultInjection` filter: `mesh.kind="delay"` or `"abort"`.
pub const FAULTS: &str = "mesh.client.faults";
/// Endpoints ejected by outlier detection.
pub const EJECTIONS: &str = "mesh.client.outlier_ejections";
/// Endpoints of a backend by `mesh.state`: `available`, `ejected`, `connecting`.
pub const ENDPOINTS: &str = "mesh.client.endpoints";
/// Authorization decisions by `mesh.policy` and `mesh.verdict` (`allow`, `deny`, `audit`).
pub const AUTHZ_DECISIONS: &str = "mesh.server.authz_decisions";
/// Requests refused for an invalid end-user token, by `mesh.reason` (`expired`,
/// `bad-signature`, `wrong-audience`...).
pub const JWT_REFUSALS: &str = "mesh.server.jwt_refusals";
/// Calls refused by a local rate limit, by `mesh.policy`, `mesh.limit` (`total`, `identity`,
/// `override`) and `mesh.peer_identity` (the first 256 callers limited by name, later ones as
/// `_OTHER`).
pub const RATE_LIMITED: &str = "mesh.server.rate_limited";
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

/// Attribute (label) names: the OpenTelemetry conventions' where they define one, `mesh.*`
/// for the mesh's own. Prometheus shows them with underscores (`rpc_method`, `mesh_service`).
pub mod attr {
    /// `rpc.system.name`: `grpc`.
    pub const RPC_SYSTEM_NAME: &str = "rpc.system.name";
    /// `rpc.method`: `package.Service/Method`, or `_OTHER`.
    pub const RPC_METHOD: &str = "rpc.method";
    /// `rpc.status_code`: the gRPC status name (`OK`, `NOT_FOUND`, ...). Named
    /// `rpc.response.status_code` up to semantic conventions v1.44.
    pub const RPC_STATUS_CODE: &str = "rpc.status_code";
    /// `error.type`: set if and only if the call failed (the status code's value).
    pub const ERROR_TYPE: &str = "error.type";
    /// `http.request.method`: `GET` ... `PATCH`, or `_OTHER`.
    pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
    /// `http.response.status_code`: the number.
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    /// `server.address` (client side): the destination the caller named.
    pub const SERVER_ADDRESS: &str = "server.address";
    /// `server.port` (client side): the destination's port, when the caller named one.
    pub const SERVER_PORT: &str = "server.port";
    /// The workload's own service (`MESH_SERVICE`, `""` for a pure client).
    pub const MESH_SERVICE: &str = "mesh.service";
    /// The destination service a client called.
    pub const MESH_DESTINATION: &str = "mesh.destination";
    /// The matched route's name (`""` for none).
    pub const MESH_ROUTE: &str = "mesh.route";
    /// The backend service a call went to (`""` when none was chosen).
    pub const MESH_BACKEND: &str = "mesh.backend";
    /// The caller's verified SPIFFE ID (server side; `""` for a plaintext caller).
    pub const MESH_PEER_IDENTITY: &str = "mesh.peer_identity";
    /// What kind of timeout: `request` or `try`.
    pub const MESH_KIND: &str = "mesh.kind";
    /// An endpoint's state: `available`, `ejected`, `connecting`.
    pub const MESH_STATE: &str = "mesh.state";
    /// The authorization policy that decided.
    pub const MESH_POLICY: &str = "mesh.policy";
    /// The authorization verdict: `allow`, `deny`, `audit`.
    pub const MESH_VERDICT: &str = "mesh.verdict";
    /// Why an end-user token was refused: `expired`, `bad-signature`...
    pub const MESH_REASON: &str = "mesh.reason";
    /// Which rate limit refused a call: `total`, `identity`, `override`.
    pub const MESH_LIMIT: &str = "mesh.limit";
}

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
    describe_counter!(
        FAULTS,
        "Calls delayed or aborted by a route's fault injection"
    );
    describe_counter!(EJECTIONS, "Endpoints ejected by outlier detection");
    describe_gauge!(ENDPOINTS, "Endpoints of a backend by state");
    describe_counter!(
        AUTHZ_DECISIONS,
        "Authorization decisions by policy and verdict"
    );
    describe_counter!(
        JWT_REFUSALS,
        "Requests refused for an invalid end-user token, by reason"
    );
    describe_counter!(
        RATE_LIMITED,
        "Calls refused by a local rate limit, by policy, limit and caller"
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
    let counter = ::metrics::counter!(CONFIG_REJECTED, attr::MESH_SERVICE => service.to_owned());
    counter.increment(0);
    counter
}

/// Something live the admin port reports on: its gauges depend on time and are refreshed
/// before each scrape, and `/debug/endpoints` shows its state.
pub(crate) trait Refresh: Send + Sync {
    fn refresh(&self, now: Instant);

    /// Its state as JSON, for operators.
    fn debug_view(&self, now: Instant) -> serde_json::Value;
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
        let label = || vec![::metrics::Label::new(attr::MESH_SERVICE, service.clone())];
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
    /// The live backends of this workload's clients, as `/debug/endpoints` shows them.
    pub(crate) fn debug_views(&self) -> Vec<serde_json::Value> {
        let now = Instant::now();
        self.live()
            .iter()
            .map(|item| item.debug_view(now))
            .collect()
    }

    /// What registered to be refreshed and is still alive.
    fn live(&self) -> Vec<Arc<dyn Refresh>> {
        let refreshers = self
            .refreshers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        refreshers.iter().filter_map(Weak::upgrade).collect()
    }

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
        let now = Instant::now();
        for item in self.live() {
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
