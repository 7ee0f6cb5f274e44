//! Metric handles built ahead of the request path: a table per label set whose status label
//! picks a handle filled on first use, the client's tables per route and backend (built when a
//! snapshot arrives), and the server's per caller identity.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use std::time::Duration;

use http::StatusCode;
use mesh_core::snapshot::{Destination, ServiceName};
use metrics::{Counter, Histogram, Label};

use crate::edges::{EdgeCounters, Edges};

use super::{
    HTTP_CLIENT_DURATION, HTTP_SERVER_DURATION, RETRIES, RETRY_BUDGET_EXHAUSTED,
    RPC_CLIENT_DURATION, RPC_SERVER_DURATION, TIMEOUTS,
};

const GRPC_CODES: [&str; 17] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
];
const HTTP_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

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

/// The duration histograms of one label set, one handle per status (filled on first use, so
/// the status label is formatted once per process, never per call).
pub(crate) struct StatusTable {
    rpc: &'static str,
    http: &'static str,
    labels: Vec<Label>,
    grpc: [OnceLock<Histogram>; 17],
    classes: [OnceLock<Histogram>; 5],
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
    pub(crate) fn new(direction: Direction, mut labels: Vec<Label>) -> Self {
        let (rpc, http, value) = match direction {
            Direction::Inbound => (RPC_SERVER_DURATION, HTTP_SERVER_DURATION, "inbound"),
            Direction::Outbound => (RPC_CLIENT_DURATION, HTTP_CLIENT_DURATION, "outbound"),
        };
        labels.push(Label::from_static_parts("direction", value));
        Self {
            rpc,
            http,
            labels,
            grpc: std::array::from_fn(|_| OnceLock::new()),
            classes: std::array::from_fn(|_| OnceLock::new()),
            edge: None,
        }
    }

    /// The table, also counting every call in `edge`.
    fn with_edge(mut self, edge: Option<Arc<EdgeCounters>>) -> Self {
        self.edge = edge;
        self
    }

    /// Records one call that ended with `status` after `elapsed`.
    pub(crate) fn record(&self, status: Status, elapsed: Duration) {
        let histogram = match status {
            Status::Grpc(code) => {
                // Codes outside the spec are UNKNOWN, as gRPC clients read them.
                let index = usize::try_from(code).ok().filter(|c| *c < 17).unwrap_or(2);
                self.grpc[index].get_or_init(|| {
                    self.handle(self.rpc, "rpc_grpc_status_code", GRPC_CODES[index])
                })
            }
            Status::Http(status) => {
                let index = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
                self.classes[index].get_or_init(|| {
                    self.handle(self.http, "http_response_status_class", HTTP_CLASSES[index])
                })
            }
        };
        histogram.record(elapsed.as_secs_f64());
        if let Some(edge) = &self.edge {
            let failed = match status {
                Status::Grpc(code) => code != 0,
                Status::Http(status) => status.is_server_error(),
            };
            edge.record(failed, elapsed);
        }
    }

    fn handle(&self, name: &'static str, key: &'static str, value: &'static str) -> Histogram {
        let mut labels = self.labels.clone();
        labels.push(Label::from_static_parts(key, value));
        metrics::histogram!(name, labels)
    }
}

/// The client's metrics for one route and backend of a destination.
pub(crate) struct OutboundMetrics {
    pub(crate) durations: Arc<StatusTable>,
    pub(crate) retries: Counter,
    pub(crate) budget_exhausted: Counter,
    pub(crate) request_timeouts: Counter,
    pub(crate) try_timeouts: Counter,
}

impl OutboundMetrics {
    fn new(
        service: &str,
        destination: &str,
        route: &str,
        backend: &str,
        edge: Option<Arc<EdgeCounters>>,
    ) -> Self {
        let labels = vec![
            Label::new("service", service.to_owned()),
            Label::new("peer_service", destination.to_owned()),
            Label::new("route", route.to_owned()),
            Label::new("backend", backend.to_owned()),
        ];
        let with = |key: &'static str, value: &'static str| {
            let mut l = labels.clone();
            l.push(Label::from_static_parts(key, value));
            l
        };
        Self {
            retries: metrics::counter!(RETRIES, labels.clone()),
            budget_exhausted: metrics::counter!(RETRY_BUDGET_EXHAUSTED, labels.clone()),
            request_timeouts: metrics::counter!(TIMEOUTS, with("kind", "request")),
            try_timeouts: metrics::counter!(TIMEOUTS, with("kind", "try")),
            durations: Arc::new(StatusTable::new(Direction::Outbound, labels).with_edge(edge)),
        }
    }
}

/// The client's metrics for every route and backend a destination's snapshot names, built
/// when the snapshot arrives. Read without a lock: it is replaced with the routing state.
pub(crate) struct OutboundIndex {
    service: String,
    destination: String,
    /// Backend -> route name -> metrics; route `""` is "no route" (a destination without
    /// routes, or a request no route matched).
    by_backend: HashMap<ServiceName, HashMap<String, Arc<OutboundMetrics>>>,
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
        let dest = destination.service.to_string();
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
                        &dest,
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
            &dest,
            "",
            "",
            Some(edges.counters(&destination.service)),
        ));
        let direct = by_backend
            .get(&destination.service)
            .and_then(|routes| routes.get(""))
            .cloned()
            // Added first above; this is only a guard.
            .unwrap_or_else(|| unrouted.clone());
        Self {
            direct: (destination.service.clone(), direct),
            service: service.to_owned(),
            destination: dest,
            by_backend,
            unrouted,
        }
    }

    /// The metrics of `route` (`""` for none) and `backend`.
    pub(crate) fn get(&self, route: &str, backend: &ServiceName) -> Arc<OutboundMetrics> {
        if route.is_empty() && *backend == self.direct.0 {
            return self.direct.1.clone();
        }
        match self.by_backend.get(backend).and_then(|r| r.get(route)) {
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
