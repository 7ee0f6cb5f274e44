//! Metric handles built ahead of the request path: a table per label set whose status label
//! picks a handle filled on first use, the client's tables per route and backend (built when a
//! snapshot arrives), and the server's per caller identity.
//!
//! A table holds, per gRPC method, one handle per status code, and per HTTP method and status
//! code one handle: each is made (and its labels formatted) the first time it is used, so a
//! call looks its handle up (a read lock and a hash of the method's path, no allocation) and
//! formats nothing.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::{Method, StatusCode};
use mesh_core::snapshot::{Destination, DestinationKey, ServiceName};
use metrics::{Counter, Histogram, Label, SharedString};

use crate::edges::{EdgeCounters, Edges};

use super::{
    FAULTS, HEDGES, HEDGES_WON, HTTP_CLIENT_DURATION, HTTP_SERVER_DURATION, RETRIES,
    RETRY_BUDGET_EXHAUSTED, RPC_CLIENT_DURATION, RPC_SERVER_DURATION, TIMEOUTS, attr,
};

/// gRPC status codes as `rpc.status_code` spells them, by code (mesh-core's, which configs use
/// too).
pub(crate) use mesh_core::GRPC_STATUS_NAMES as GRPC_CODE_NAMES;

/// gRPC `UNIMPLEMENTED`: the method is not one the server knows.
const UNIMPLEMENTED: usize = 12;

/// `rpc.method` of a method the server does not know, or past [`MAX_METHODS`].
pub(crate) const OTHER: &str = "_OTHER";

/// Distinct gRPC methods labelled per table; further ones are `_OTHER`. A server's methods are
/// a fixed set: this only bounds what odd callers can make the mesh remember.
const MAX_METHODS: usize = 64;

/// The index of a gRPC status code (codes outside the spec are `UNKNOWN`, as gRPC clients read
/// them).
pub(crate) fn grpc_index(code: i32) -> usize {
    usize::try_from(code).ok().filter(|c| *c < 17).unwrap_or(2)
}

/// Whether a gRPC status is an error on `direction`'s side. The gRPC conventions
/// (`docs/rpc/grpc.md`): on a server only `UNKNOWN`, `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`,
/// `INTERNAL`, `UNAVAILABLE` and `DATA_LOSS` are (the others are the caller's doing); on a
/// client every status but `OK` is.
pub(crate) fn grpc_is_error(direction: Direction, code: usize) -> bool {
    match direction {
        Direction::Inbound => matches!(code, 2 | 4 | 12 | 13 | 14 | 15),
        Direction::Outbound => code != 0,
    }
}

/// Whether an HTTP status is an error on `direction`'s side (`docs/http/http-spans.md`):
/// 5xx on a server, 4xx and 5xx on a client.
pub(crate) fn http_is_error(direction: Direction, status: StatusCode) -> bool {
    match direction {
        Direction::Inbound => status.is_server_error(),
        Direction::Outbound => status.is_client_error() || status.is_server_error(),
    }
}

/// `http.request.method` values the conventions know; any other is `_OTHER`.
const HTTP_METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", OTHER,
];

/// The index of `method` in [`HTTP_METHODS`].
pub(crate) fn http_method_index(method: &Method) -> u8 {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::CONNECT => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::PATCH => 8,
        _ => 9,
    }
}

/// How a call ended, for the status label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// A gRPC status code.
    Grpc(i32),
    /// An HTTP response status.
    Http(StatusCode),
}

/// Which side of a call the process is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Inbound,
    Outbound,
}

/// The histograms of one gRPC method of a table, one per status code.
pub(crate) struct MethodRow {
    method: SharedString,
    codes: [OnceLock<Histogram>; 17],
}

impl MethodRow {
    fn new(method: SharedString) -> Self {
        Self {
            method,
            codes: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

impl std::fmt::Debug for MethodRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MethodRow")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// What a call is, for its labels: a gRPC method's row, or an HTTP method.
#[derive(Debug, Clone)]
pub(crate) enum CallKind {
    Grpc(Arc<MethodRow>),
    Http(u8),
}

impl CallKind {
    pub(crate) fn is_grpc(&self) -> bool {
        matches!(self, Self::Grpc(_))
    }
}

/// The duration histograms of one label set (a caller, or a route and backend), by method and
/// status, each filled on first use.
pub(crate) struct StatusTable {
    direction: Direction,
    labels: Vec<Label>,
    methods: RwLock<HashMap<Box<str>, Arc<MethodRow>>>,
    /// The row last looked up: calls come in runs of one method, and comparing a path with it
    /// is far cheaper than splitting the path, taking the lock and hashing it (about 500
    /// instructions a call).
    last_method: ArcSwapOption<MethodRow>,
    other: Arc<MethodRow>,
    /// (HTTP method index, status code) -> histogram.
    http: RwLock<HashMap<(u8, u16), Histogram>>,
    /// The calls' destination for the control service's live view (outbound tables only).
    edge: Option<Arc<EdgeCounters>>,
}

impl std::fmt::Debug for StatusTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusTable")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl StatusTable {
    pub(crate) fn new(direction: Direction, labels: Vec<Label>) -> Self {
        Self {
            direction,
            labels,
            methods: RwLock::new(HashMap::new()),
            last_method: ArcSwapOption::empty(),
            other: Arc::new(MethodRow::new(SharedString::const_str(OTHER))),
            http: RwLock::new(HashMap::new()),
            edge: None,
        }
    }

    /// The table, also counting every call in `edge`.
    fn with_edge(mut self, edge: Option<Arc<EdgeCounters>>) -> Self {
        self.edge = edge;
        self
    }

    /// What a call to `path` with `method` is: `grpc` calls get their method's row.
    pub(crate) fn kind(&self, grpc: bool, path: &str, method: &Method) -> CallKind {
        if grpc {
            CallKind::Grpc(self.method_row(path))
        } else {
            CallKind::Http(http_method_index(method))
        }
    }

    /// The row of the gRPC method at `path` (`/package.Service/Method`): `rpc.method` is
    /// `package.Service/Method`, and a path of another shape is `_OTHER`.
    pub(crate) fn method_row(&self, path: &str) -> Arc<MethodRow> {
        if let Some(last) = &*self.last_method.load()
            && path.strip_prefix('/') == Some(&*last.method)
        {
            return last.clone();
        }
        let row = self.lookup_method_row(path);
        if !Arc::ptr_eq(&row, &self.other) {
            self.last_method.store(Some(row.clone()));
        }
        row
    }

    /// [`StatusTable::method_row`] without the one-entry cache.
    fn lookup_method_row(&self, path: &str) -> Arc<MethodRow> {
        // The same shape test as routing's (`/service/method`, both non-empty).
        let Some(method) = path
            .strip_prefix('/')
            .filter(|_| mesh_core::route::GrpcPath::parse(path).is_some())
        else {
            return self.other.clone();
        };
        if let Some(row) = self
            .methods
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(method)
        {
            return row.clone();
        }
        let mut methods = self.methods.write().unwrap_or_else(PoisonError::into_inner);
        if methods.len() >= MAX_METHODS && !methods.contains_key(method) {
            return self.other.clone();
        }
        methods
            .entry(method.into())
            .or_insert_with(|| Arc::new(MethodRow::new(SharedString::from(method.to_owned()))))
            .clone()
    }

    /// Records one call of `kind` that ended with `status` after `elapsed`.
    pub(crate) fn record(&self, kind: &CallKind, status: Status, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        match (kind, status) {
            (CallKind::Grpc(row), Status::Grpc(code)) => {
                let code = grpc_index(code);
                // The server did not know the method: not a method to name.
                let row = if code == UNIMPLEMENTED {
                    &self.other
                } else {
                    row
                };
                row.codes[code]
                    .get_or_init(|| self.grpc_handle(&row.method, code))
                    .record(seconds);
            }
            (CallKind::Http(method), Status::Http(status)) => {
                self.http_handle(*method, status).record(seconds);
            }
            // A gRPC call always ends with a gRPC status and an HTTP one with an HTTP status.
            _ => {}
        }
        if let Some(edge) = &self.edge {
            let failed = match status {
                Status::Grpc(code) => code != 0,
                Status::Http(status) => status.is_server_error(),
            };
            edge.record(failed, elapsed);
        }
    }

    fn grpc_handle(&self, method: &SharedString, code: usize) -> Histogram {
        let name = match self.direction {
            Direction::Inbound => RPC_SERVER_DURATION,
            Direction::Outbound => RPC_CLIENT_DURATION,
        };
        let mut labels = self.labels.clone();
        labels.push(Label::from_static_parts(attr::RPC_SYSTEM_NAME, "grpc"));
        labels.push(Label::new(attr::RPC_METHOD, method.clone()));
        labels.push(Label::from_static_parts(
            attr::RPC_STATUS_CODE,
            GRPC_CODE_NAMES[code],
        ));
        if grpc_is_error(self.direction, code) {
            labels.push(Label::from_static_parts(
                attr::ERROR_TYPE,
                GRPC_CODE_NAMES[code],
            ));
        }
        metrics::histogram!(name, labels)
    }

    fn http_handle(&self, method: u8, status: StatusCode) -> Histogram {
        let key = (method, status.as_u16());
        if let Some(histogram) = self
            .http
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return histogram.clone();
        }
        let name = match self.direction {
            Direction::Inbound => HTTP_SERVER_DURATION,
            Direction::Outbound => HTTP_CLIENT_DURATION,
        };
        let mut labels = self.labels.clone();
        labels.push(Label::from_static_parts(
            attr::HTTP_REQUEST_METHOD,
            HTTP_METHODS[usize::from(method).min(HTTP_METHODS.len() - 1)],
        ));
        let code = status.as_str();
        labels.push(Label::new(attr::HTTP_RESPONSE_STATUS_CODE, code.to_owned()));
        if http_is_error(self.direction, status) {
            labels.push(Label::new(attr::ERROR_TYPE, code.to_owned()));
        }
        let histogram = metrics::histogram!(name, labels);
        self.http
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_insert(histogram)
            .clone()
    }
}

/// The client's metrics for one route and backend of a destination.
pub(crate) struct OutboundMetrics {
    pub(crate) durations: Arc<StatusTable>,
    pub(crate) retries: Counter,
    pub(crate) hedges: Counter,
    pub(crate) hedges_won: Counter,
    pub(crate) budget_exhausted: Counter,
    pub(crate) request_timeouts: Counter,
    pub(crate) try_timeouts: Counter,
    /// Calls a fault injection filter delayed.
    pub(crate) fault_delays: Counter,
    /// Calls a fault injection filter aborted.
    pub(crate) fault_aborts: Counter,
}

impl OutboundMetrics {
    fn new(
        service: &str,
        destination: &DestinationKey,
        route: &str,
        backend: &str,
        edge: Option<Arc<EdgeCounters>>,
    ) -> Self {
        let dest = destination.service.to_string();
        let mut labels = vec![
            Label::new(attr::MESH_SERVICE, service.to_owned()),
            Label::new(attr::MESH_DESTINATION, dest.clone()),
            Label::new(attr::MESH_ROUTE, route.to_owned()),
            Label::new(attr::MESH_BACKEND, backend.to_owned()),
        ];
        let with = |key: &'static str, value: &'static str| {
            let mut l = labels.clone();
            l.push(Label::from_static_parts(key, value));
            l
        };
        let this = Self {
            retries: metrics::counter!(RETRIES, labels.clone()),
            hedges: metrics::counter!(HEDGES, labels.clone()),
            hedges_won: metrics::counter!(HEDGES_WON, labels.clone()),
            budget_exhausted: metrics::counter!(RETRY_BUDGET_EXHAUSTED, labels.clone()),
            request_timeouts: metrics::counter!(TIMEOUTS, with(attr::MESH_KIND, "request")),
            try_timeouts: metrics::counter!(TIMEOUTS, with(attr::MESH_KIND, "try")),
            fault_delays: metrics::counter!(FAULTS, with(attr::MESH_KIND, "delay")),
            fault_aborts: metrics::counter!(FAULTS, with(attr::MESH_KIND, "abort")),
            durations: Arc::new(
                StatusTable::new(Direction::Outbound, {
                    // The address the caller used: the destination's name (and port, when it
                    // named one).
                    labels.push(Label::new(attr::SERVER_ADDRESS, dest));
                    if let Some(port) = destination.port {
                        labels.push(Label::new(attr::SERVER_PORT, port.to_string()));
                    }
                    labels
                })
                .with_edge(edge),
            ),
        };
        // Every counter exists from the start, at 0: a rate over it is 0, not absent.
        for counter in [
            &this.retries,
            &this.hedges,
            &this.hedges_won,
            &this.budget_exhausted,
            &this.request_timeouts,
            &this.try_timeouts,
            &this.fault_delays,
            &this.fault_aborts,
        ] {
            counter.increment(0);
        }
        this
    }
}

/// Route and backend pairs up to which [`OutboundIndex::get`] searches a list.
const SEARCHED: usize = 16;

/// The client's metrics for every route and backend a destination's snapshot names, built
/// when the snapshot arrives. Read without a lock: it is replaced with the routing state.
pub(crate) struct OutboundIndex {
    service: String,
    destination: DestinationKey,
    /// Backend -> route name -> metrics; route `""` is "no route" (a destination without
    /// routes, or a request no route matched).
    by_backend: HashMap<ServiceName, HashMap<String, Arc<OutboundMetrics>>>,
    /// The same entries in a list, when there are at most [`SEARCHED`]: a destination's
    /// routes name a handful of backends, and comparing a route name and a backend with each
    /// is cheaper than hashing both with SipHash (two lookups, about 300 instructions a call).
    listed: Option<Vec<(String, ServiceName, Arc<OutboundMetrics>)>>,
    /// The destination's own backend without a route: what every call of a destination
    /// without routes uses, found without hashing.
    direct: (ServiceName, Arc<OutboundMetrics>),
    /// Calls that failed before a backend was chosen.
    unrouted: Arc<OutboundMetrics>,
}

impl OutboundIndex {
    /// The tables of `destination`'s routes and backends; calls are also counted per backend
    /// service in `edges`.
    pub(crate) fn new(service: &str, destination: &Destination, edges: &Edges) -> Self {
        let key = destination.key();
        let mut by_backend: HashMap<ServiceName, HashMap<String, Arc<OutboundMetrics>>> =
            HashMap::new();
        let mut add = |route: &str, backend: &ServiceName| {
            by_backend
                .entry(backend.clone())
                .or_default()
                .entry(route.to_owned())
                .or_insert_with(|| {
                    Arc::new(OutboundMetrics::new(
                        service,
                        &key,
                        route,
                        &backend.to_string(),
                        Some(edges.counters(backend)),
                    ))
                });
        };
        add("", &destination.service);
        for route in &destination.routes {
            for rule in &route.rules {
                for backend in &rule.backend_refs {
                    add(&route.name, &backend.service);
                }
            }
        }
        // Calls that failed before a backend was chosen count against the destination named.
        let unrouted = Arc::new(OutboundMetrics::new(
            service,
            &key,
            "",
            "",
            Some(edges.counters(&destination.service)),
        ));
        let entries = by_backend.values().map(HashMap::len).sum::<usize>();
        let listed = (entries <= SEARCHED).then(|| {
            by_backend
                .iter()
                .flat_map(|(backend, routes)| {
                    routes
                        .iter()
                        .map(|(route, metrics)| (route.clone(), backend.clone(), metrics.clone()))
                })
                .collect()
        });
        let direct = by_backend
            .get(&destination.service)
            .and_then(|routes| routes.get(""))
            .cloned()
            // Added first above; this is only a guard.
            .unwrap_or_else(|| unrouted.clone());
        Self {
            direct: (destination.service.clone(), direct),
            service: service.to_owned(),
            destination: key,
            by_backend,
            listed,
            unrouted,
        }
    }

    /// The metrics of `route` (`""` for none) and `backend`.
    pub(crate) fn get(&self, route: &str, backend: &ServiceName) -> Arc<OutboundMetrics> {
        if route.is_empty() && *backend == self.direct.0 {
            return self.direct.1.clone();
        }
        let found = match &self.listed {
            Some(listed) => listed
                .iter()
                .find(|(r, b, _)| r == route && b == backend)
                .map(|(_, _, metrics)| metrics),
            None => self.by_backend.get(backend).and_then(|r| r.get(route)),
        };
        match found {
            Some(metrics) => metrics.clone(),
            // Every route and backend of the snapshot is in the index; this is only a guard.
            None => Arc::new(OutboundMetrics::new(
                &self.service,
                &self.destination,
                route,
                &backend.to_string(),
                None,
            )),
        }
    }

    /// The metrics of calls that failed before a backend was chosen.
    pub(crate) fn unrouted(&self) -> Arc<OutboundMetrics> {
        self.unrouted.clone()
    }
}
