//! The live view of the mesh on the admin port, without Prometheus: services as nodes, calls
//! between them as edges, from the `EdgeReport`s workloads send on their Watch streams
//! ([`edges`]) and from the subscriber registry.
//!
//! - `GET /ui`: one self-contained HTML page ([`page`]: inline CSS and JavaScript, SVG, no
//!   external resources) that draws the graph and redraws it every 2 s from the JSON below.
//! - `GET /ui/graph.json`: the data, described here. `meshctl top` and other tools read it;
//!   fields are only ever added to it (a change that is not an addition bumps `schema`).
//!
//! ```json
//! {
//!   "schema": 1,
//!   "generatedAtUnixMs": 1733558400000,
//!   "windowSeconds": 30,
//!   "reportIntervalSeconds": 5,
//!   "nodes": [
//!     {"name": "greeter.default", "kind": "service", "subscribers": 2, "stale": 0, "nacking": 0},
//!     {"name": "spiffe://mesh.local/ns/default/sa/demo-client", "kind": "workload",
//!      "subscribers": 1, "stale": 0, "nacking": 0}
//!   ],
//!   "edges": [
//!     {"from": "spiffe://mesh.local/ns/default/sa/demo-client", "to": "greeter.default",
//!      "calls": 1500, "failures": 3, "callsPerSecond": 50.0, "successRate": 0.998,
//!      "p50Ms": 0.42, "p99Ms": 3.1}
//!   ]
//! }
//! ```
//!
//! - `schema`: the version of this shape (1).
//! - `generatedAtUnixMs`: when the answer was computed, milliseconds since the Unix epoch.
//! - `windowSeconds`: how far back edges look; `reportIntervalSeconds`: how often workloads
//!   report (0: reports are off).
//! - `nodes`, sorted by `name`: every service a live subscriber serves, every subscriber that
//!   serves none (by its SPIFFE ID, `kind` `"workload"`), and every service an edge names.
//!   `subscribers` counts the live Watch streams of that service (or identity); `stale` those
//!   that have not acknowledged the last version sent to them; `nacking` those whose last
//!   refused version is on record (see `GET /subscribers`).
//! - `edges`, sorted by `from` then `to`: calls within the window from a caller (a service,
//!   or the SPIFFE ID of a workload that serves none) to a destination service: `calls` and
//!   `failures` (gRPC status not OK, HTTP 5xx, no response), `callsPerSecond` over the time the
//!   window covers, `successRate` from 0 to 1, and the `p50Ms` and `p99Ms` latencies read
//!   from the merged latency sketch (`mesh_core::latency`: within a factor of two, interpolated).
//!   Only edges with calls in the window are listed.

pub(crate) mod edges;
pub(crate) mod page;

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::watch::registry::SubscriberStatus;
use edges::{Edge, EdgeStore, WINDOW};

/// The version of the JSON shape.
pub(crate) const SCHEMA: u32 = 1;

/// `GET /ui/graph.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Graph {
    pub(crate) schema: u32,
    pub(crate) generated_at_unix_ms: u64,
    pub(crate) window_seconds: u64,
    pub(crate) report_interval_seconds: f64,
    pub(crate) nodes: Vec<Node>,
    pub(crate) edges: Vec<EdgeView>,
}

/// A node: a service, or a workload that serves none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) kind: NodeKind,
    pub(crate) subscribers: u32,
    pub(crate) stale: u32,
    pub(crate) nacking: u32,
}

/// What a node's name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum NodeKind {
    /// A service, `name.namespace`.
    Service,
    /// A workload that serves no service, by its SPIFFE ID.
    Workload,
}

/// An edge as the JSON shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EdgeView {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) calls_per_second: f64,
    pub(crate) success_rate: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

/// The graph at `now`, from the live `subscribers` and the edges in `store`.
pub(crate) fn graph(subscribers: &[SubscriberStatus], store: &EdgeStore, now: Instant) -> Graph {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for subscriber in subscribers {
        let (name, kind) = match &subscriber.own_service {
            Some(service) => (service.to_string(), NodeKind::Service),
            None => (subscriber.identity.to_string(), NodeKind::Workload),
        };
        let node = nodes
            .entry(name.clone())
            .or_insert_with(|| node(name, kind));
        node.subscribers += 1;
        if subscriber.last_acked_version != Some(subscriber.last_sent_version) {
            node.stale += 1;
        }
        if subscriber.last_nack.is_some() {
            node.nacking += 1;
        }
    }
    let edges: Vec<EdgeView> = store.edges(now).iter().map(edge_view).collect();
    for edge in &edges {
        // A caller is named by its identity only when it serves no service.
        let from_kind = if edge.from.starts_with("spiffe://") {
            NodeKind::Workload
        } else {
            NodeKind::Service
        };
        for (name, kind) in [(&edge.from, from_kind), (&edge.to, NodeKind::Service)] {
            nodes
                .entry(name.clone())
                .or_insert_with(|| node(name.clone(), kind));
        }
    }
    Graph {
        schema: SCHEMA,
        generated_at_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        window_seconds: WINDOW.as_secs(),
        report_interval_seconds: f64::from(store.interval_ms()) / 1000.0,
        nodes: nodes.into_values().collect(),
        edges,
    }
}

fn node(name: String, kind: NodeKind) -> Node {
    Node {
        name,
        kind,
        subscribers: 0,
        stale: 0,
        nacking: 0,
    }
}

fn edge_view(edge: &Edge) -> EdgeView {
    let counts = &edge.counts;
    let ms = |q: f64| {
        counts
            .latency
            .quantile(q)
            .map_or(0.0, |d| round(d.as_secs_f64() * 1000.0, 1000.0))
    };
    let success = if counts.calls == 0 {
        1.0
    } else {
        1.0 - counts.failures as f64 / counts.calls as f64
    };
    EdgeView {
        from: edge.from.clone(),
        to: edge.to.clone(),
        calls: counts.calls,
        failures: counts.failures,
        calls_per_second: round(edge.calls_per_second, 100.0),
        success_rate: round(success, 10_000.0),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
    }
}

/// `x` rounded to `1 / scale`: the JSON carries what is meaningful, not float noise.
fn round(x: f64, scale: f64) -> f64 {
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use mesh_core::latency::BUCKETS;
    use mesh_core::proto;
    use mesh_core::snapshot::ServiceName;
    use mesh_core::testing::trust_domain;

    use super::*;
    use crate::watch::registry::Nack;

    fn subscriber(account: &str, service: Option<&str>) -> SubscriberStatus {
        SubscriberStatus {
            id: 0,
            node: account.to_owned(),
            remote_addr: "127.0.0.1:1".parse().expect("valid"),
            identity: mesh_core::SpiffeId::from_service_account(
                &trust_domain(),
                "default",
                account,
            )
            .expect("valid"),
            own_service: service.map(|s| ServiceName::new("default", s).expect("valid")),
            destinations: vec![],
            connected_at: SystemTime::now(),
            last_sent_version: 2,
            last_acked_version: Some(2),
            last_nack: None,
            certificate_expires: None,
            certificate_issuer: None,
            grpc_services: Vec::new(),
            incremental: false,
            full_snapshots_sent: 0,
            increments_sent: 0,
            resyncs: 0,
        }
    }

    #[test]
    fn nodes_count_subscribers_and_edges_carry_their_numbers() {
        let store = Arc::new(EdgeStore::new(Duration::from_secs(5)));
        let now = Instant::now();
        let reporter = store.register(1, "web.default".into(), now);
        let mut latency_buckets = vec![0; BUCKETS];
        latency_buckets[4] = 100;
        reporter.record(
            "web.default",
            proto::EdgeReport {
                edges: vec![proto::EdgeStats {
                    destination: Some(proto::ServiceRef {
                        namespace: "default".into(),
                        name: "greeter".into(),
                        port: 0,
                    }),
                    calls: 100,
                    failures: 5,
                    latency_buckets,
                }],
            },
            now,
        );
        let mut stale = subscriber("greeter", Some("greeter"));
        stale.last_acked_version = Some(1);
        let mut nacking = subscriber("greeter", Some("greeter"));
        nacking.last_nack = Some(Nack {
            version: 2,
            error: "no".into(),
            details: vec![],
        });
        let subscribers = [
            stale,
            nacking,
            subscriber("client", None),
            subscriber("web", Some("web")),
        ];
        let graph = graph(&subscribers, &store, now);
        let names: Vec<_> = graph.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "greeter.default",
                "spiffe://mesh.local/ns/default/sa/client",
                "web.default"
            ]
        );
        assert_eq!(
            graph.nodes[0],
            Node {
                name: "greeter.default".into(),
                kind: NodeKind::Service,
                subscribers: 2,
                stale: 1,
                nacking: 1,
            }
        );
        assert_eq!(graph.nodes[1].kind, NodeKind::Workload);
        let edge = &graph.edges[0];
        assert_eq!(
            (edge.from.as_str(), edge.to.as_str()),
            ("web.default", "greeter.default")
        );
        assert_eq!(
            (edge.calls, edge.failures, edge.success_rate),
            (100, 5, 0.95)
        );
        // One report covers one interval: 100 calls in 5 s.
        assert_eq!(edge.calls_per_second, 20.0);
        assert!(edge.p50_ms >= 0.8 && edge.p50_ms <= 1.6, "{}", edge.p50_ms);
        assert!(
            edge.p99_ms >= edge.p50_ms && edge.p99_ms <= 1.6,
            "{}",
            edge.p99_ms
        );

        let json = serde_json::to_value(&graph).expect("serializes");
        assert_eq!(json["schema"], 1);
        assert_eq!(json["windowSeconds"], 30);
        assert_eq!(json["nodes"][1]["kind"], "workload");
        for key in [
            "from",
            "to",
            "calls",
            "failures",
            "callsPerSecond",
            "successRate",
            "p50Ms",
            "p99Ms",
        ] {
            assert!(json["edges"][0].get(key).is_some(), "{key}");
        }
    }
}
