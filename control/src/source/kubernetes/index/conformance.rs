//! The Gateway API mesh (GAMMA) conformance cases that fit the mesh, as fixtures with the
//! expected routing.
//!
//! Upstream: kubernetes-sigs/gateway-api, `conformance/mesh/manifests.yaml` (the base topology)
//! and `conformance/tests/mesh/*` (one route manifest and a table of requests per test; Apache
//! License 2.0, Copyright 2020 The Kubernetes Authors). The route objects below are those
//! manifests, reproduced; the requests and expectations are the upstream tables'.
//!
//! Each case runs the whole control-plane path: the base Services, EndpointSlices and Pods
//! and the case's routes go through the real [`ClusterIndex`] as watch events; the built
//! config's destination (what a client's snapshot carries) is compiled with mesh-core's
//! [`CompiledRoutes`], and each request of the case is routed as a client would route it.
//! Upstream names the serving backend by its pod name; here it is the backend service the
//! matched rule picks (a rule with one backend picks it for the whole `u32` space; weighted
//! rules are checked as exact shares of that space). "404" is [`RouteOutcome::NotFound`].
//!
//! A request's target is a Service and port as the upstream client dials it (`echo:7070`;
//! no port is the Service's first), seen from the producer namespace unless the case says
//! otherwise (consumer routes depend on the caller's namespace).
//!
//! Where the mesh does less than a case asks, the test asserts what the index does instead
//! and says why: filters other than the header modifiers and `RequestMirror` (redirects,
//! rewrites) and backend filters are refused.

use std::sync::Arc;

use gateway_api::grpcroutes::GrpcRoute;
use gateway_api::httproutes::HttpRoute;
use hyper::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use mesh_core::route::{
    BackendPick, CompiledRoutes, CompiledRule, RequestSummary, RouteOutcome, pick_backend,
};
use mesh_core::snapshot::{Destination, DestinationKey, HeaderModifier, RouteFilter, ServiceName};
use serde::Deserialize as _;
use serde_json::{Value, json};

use super::*;
use mesh_core::testing::trust_domain_named;

// === The base topology (conformance/mesh/manifests.yaml) ===

/// The producer namespace: the Services, their pods and the default client.
const NS: &str = "gateway-conformance-mesh";
/// The consumer namespace: a client only, no Service.
const CONSUMER_NS: &str = "gateway-conformance-mesh-consumer";

const V1_POD: &str = "echo-v1-5d8c6f7b9d-x7k2p";
const V2_POD: &str = "echo-v2-7f4b9c5d6e-q9m3z";
const V1_IP: &str = "10.244.1.11";
const V2_IP: &str = "10.244.1.12";

/// The echo Services' ports in manifests.yaml order: name, port, target port.
const ECHO_PORTS: &[(&str, i32, i32)] = &[
    ("http", 80, 8080),
    ("http-alt", 8080, 8080),
    ("https", 443, 8443),
    ("tcp", 9090, 9090),
    ("grpc", 7070, 7070),
];

fn obj<K: serde::de::DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("a valid object")
}

/// Service `name` selecting `app: echo` (and `version` when given), with `ports`.
fn echo_service(name: &str, version: Option<&str>, ports: &[(&str, i32, i32)]) -> Service {
    let mut selector = json!({"app": "echo"});
    if let Some(version) = version {
        selector["version"] = json!(version);
    }
    let ports: Vec<Value> = ports
        .iter()
        .map(|(name, port, target)| json!({"name": name, "port": port, "targetPort": target}))
        .collect();
    obj(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"type": "ClusterIP", "selector": selector, "ports": ports}
    }))
}

/// The pod of Deployment `echo-<version>` (default service account).
fn echo_pod(name: &str, version: &str) -> Pod {
    obj(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS,
                     "labels": {"app": "echo", "version": version,
                                "pod-template-hash": name.rsplit('-').nth(1)}},
        "spec": {"containers": [{"name": "echo",
                                 "image": "registry.k8s.io/gateway-api/conformance/echo-advanced:v0.1.0"}]}
    }))
}

/// The EndpointSlice the controller writes for `service` with `pods` (`(ip, pod name)`), ready.
fn echo_slice(service: &str, pods: &[(&str, &str)], ports: &[(&str, i32, i32)]) -> EndpointSlice {
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|(ip, pod)| {
            json!({
                "addresses": [ip],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "targetRef": {"kind": "Pod", "name": pod, "namespace": NS},
                "zone": "zone-a"
            })
        })
        .collect();
    let ports: Vec<Value> = ports
        .iter()
        .map(|(name, _, target)| json!({"name": name, "port": target, "protocol": "TCP"}))
        .collect();
    obj(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-abcde"), "namespace": NS,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints
    }))
}

/// The base topology with the Services' ports `ports`, every kind listed once.
fn topology(ports: &[(&str, i32, i32)]) -> ClusterIndex {
    let mut index = ClusterIndex::new(
        // The suite's cluster has Kubernetes' default trust domain.
        trust_domain_named("cluster.local"),
        None,
    );
    index.apply(Event::<Service>::Init);
    index.apply(Event::InitApply(echo_service("echo", None, ports)));
    index.apply(Event::InitApply(echo_service("echo-v1", Some("v1"), ports)));
    index.apply(Event::InitApply(echo_service("echo-v2", Some("v2"), ports)));
    index.apply(Event::<Service>::InitDone);
    index.apply(Event::<Pod>::Init);
    index.apply(Event::InitApply(echo_pod(V1_POD, "v1")));
    index.apply(Event::InitApply(echo_pod(V2_POD, "v2")));
    index.apply(Event::<Pod>::InitDone);
    index.apply(Event::<EndpointSlice>::Init);
    index.apply(Event::InitApply(echo_slice(
        "echo",
        &[(V1_IP, V1_POD), (V2_IP, V2_POD)],
        ports,
    )));
    index.apply(Event::InitApply(echo_slice(
        "echo-v1",
        &[(V1_IP, V1_POD)],
        ports,
    )));
    index.apply(Event::InitApply(echo_slice(
        "echo-v2",
        &[(V2_IP, V2_POD)],
        ports,
    )));
    index.apply(Event::<EndpointSlice>::InitDone);
    index.apply(Event::<HttpRoute>::InitDone);
    index.apply(Event::<GrpcRoute>::InitDone);
    index.apply(Event::<AuthorizationPolicy>::InitDone);
    index.apply(Event::<FaultInjection>::InitDone);
    index.apply(Event::<RequestAuthentication>::InitDone);
    index.apply(Event::<LocalRateLimitPolicy>::InitDone);
    assert!(index.unsynced().is_empty());
    index
}

/// conformance/mesh/manifests.yaml as it is: every echo Service has ports `http` (80, its
/// first), `http-alt`, `https`, `tcp` and `grpc` (7070).
fn mesh() -> ClusterIndex {
    topology(ECHO_PORTS)
}

/// Applies the route objects of a (possibly multi-document) YAML manifest.
fn apply_manifest(index: &mut ClusterIndex, yaml: &str) {
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(document).expect("valid YAML");
        match value["kind"].as_str() {
            Some("HTTPRoute") => index.apply(Event::Apply(obj::<HttpRoute>(value))),
            Some("GRPCRoute") => index.apply(Event::Apply(obj::<GrpcRoute>(value))),
            other => panic!("unexpected kind {other:?}"),
        };
    }
}

/// The index with `yaml`'s routes on top, built.
fn build_with(mut index: ClusterIndex, yaml: &str) -> Built {
    apply_manifest(&mut index, yaml);
    index.build().expect("builds")
}

fn svc(name: &str) -> ServiceName {
    ServiceName::new(NS, name).expect("valid")
}

/// `target` (`echo`, or `echo:7070` for one port) as a client in the producer namespace sees
/// it.
fn destination(built: &Built, target: &str) -> Destination {
    destination_from(built, target, NS)
}

/// `target` as a client in namespace `from` sees it.
fn destination_from(built: &Built, target: &str, from: &str) -> Destination {
    let (name, port) = match target.split_once(':') {
        Some((name, port)) => (name, Some(port.parse().expect("a port number"))),
        None => (target, None),
    };
    let key = DestinationKey {
        service: svc(name),
        port,
    };
    let destination = built.config.destination_for(&key, Some(from));
    assert!(destination.found, "{target} is known");
    destination
}

fn compiled(built: &Built, service: &str) -> CompiledRoutes {
    CompiledRoutes::new(&destination(built, service))
}

fn endpoint_addresses(destination: &Destination) -> Vec<String> {
    endpoint_addresses_of(&destination.endpoints)
}

fn endpoint_addresses_of(endpoints: &[mesh_core::snapshot::Endpoint]) -> Vec<String> {
    endpoints.iter().map(|e| e.address.to_string()).collect()
}

/// The status the index gives route `name`'s only parent.
fn parent_status<'a>(built: &'a Built, name: &str) -> &'a ParentStatus {
    let status = built
        .routes
        .iter()
        .find(|r| r.route.name == name)
        .unwrap_or_else(|| panic!("no status for {name}: {:?}", built.routes));
    assert_eq!(status.parents.len(), 1, "{status:?}");
    &status.parents[0]
}

fn assert_accepted(built: &Built, names: &[&str]) {
    assert!(built.refused.is_empty(), "{:?}", built.refused);
    for name in names {
        let parent = parent_status(built, name);
        assert_eq!(parent.accepted, Ok(()), "{name}");
        assert_eq!(parent.resolved_refs, Ok(()), "{name}");
    }
}

// === Requests ===

/// A request as the upstream harness sends it from inside the mesh.
struct Request {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Request {
    fn summary(&self) -> RequestSummary<'_> {
        RequestSummary::new(&self.method, &self.uri, &self.headers)
    }
}

fn header_map(headers: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    map
}

/// `GET <path and query>` with `headers` (the harness's default method).
fn get(path_and_query: &str, headers: &[(&str, &str)]) -> Request {
    Request {
        method: Method::GET,
        uri: path_and_query.parse().expect("uri"),
        headers: header_map(headers),
    }
}

/// The echo server's `Echo` RPC with `metadata`, as the harness's gRPC client calls it.
fn grpc_echo(metadata: &[(&str, &str)]) -> Request {
    let mut headers = header_map(metadata);
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/grpc+proto"),
    );
    Request {
        method: Method::POST,
        uri: "/proto.EchoTestService/Echo".parse().expect("uri"),
        headers,
    }
}

// === Routing ===

/// The backend `random` picks in `rule`, by position.
fn picked(rule: &CompiledRule, random: u32) -> Option<usize> {
    match pick_backend(rule, random) {
        BackendPick::Resolved { index, .. } | BackendPick::Unresolved { index, .. } => Some(index),
        BackendPick::NoBackend => None,
    }
}

/// How many of the 2^32 random values pick each backend of `rule`. `pick_backend` walks a
/// cumulative table, so the backend it picks never goes down as `random` goes up: each
/// backend's values are one run, found by binary search.
fn shares(rule: &CompiledRule) -> Vec<u64> {
    // The smallest random value that picks backend `i` or a later one (2^32 if none does).
    let first = |i: usize| -> u64 {
        let (mut lo, mut hi) = (0u64, 1u64 << 32);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let random = u32::try_from(mid).expect("below 2^32");
            if picked(rule, random).is_some_and(|p| p >= i) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    };
    let bounds: Vec<u64> = (0..=rule.backends().len()).map(first).collect();
    bounds.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Asserts that `rule` sends exactly `weight / total` of the `u32` space (to within one value,
/// as `pick_backend` promises) to each backend, in order; and that 500 evenly spread requests
/// pass upstream's distribution check (each share within ±0.05).
fn assert_weights(rule: &CompiledRule, expected: &[(&str, u32, bool)]) {
    let backends: Vec<(&str, u32, bool)> = rule
        .backends()
        .iter()
        .map(|b| {
            assert_eq!(b.backend_ref.service.namespace, NS);
            (
                b.backend_ref.service.name.as_str(),
                b.backend_ref.weight,
                b.found,
            )
        })
        .collect();
    assert_eq!(backends, expected, "backends (name, weight, found)");
    let total: u64 = expected.iter().map(|(_, w, _)| u64::from(*w)).sum();
    assert_eq!(rule.total_weight(), total);
    let space = 1u64 << 32;
    let counts = shares(rule);
    assert_eq!(
        counts.iter().sum::<u64>(),
        space,
        "every value picks a backend"
    );
    for ((name, weight, _), count) in expected.iter().zip(&counts) {
        // |count - weight * 2^32 / total| <= 1, in integers.
        let exact = u64::from(*weight) * space;
        assert!(
            (count * total).abs_diff(exact) <= total,
            "{name}: {count} of 2^32 values for weight {weight}/{total}"
        );
    }
    // Upstream sends 500 requests and wants each backend's share within 0.05 of its fraction,
    // and exactly the backends with weight > 0 seen.
    const REQUESTS: u64 = 500;
    let mut seen = vec![0u64; expected.len()];
    for i in 0..REQUESTS {
        let random = u32::try_from(i * space / REQUESTS + space / REQUESTS / 2).expect("u32");
        seen[picked(rule, random).expect("a backend")] += 1;
    }
    for ((name, weight, _), seen) in expected.iter().zip(&seen) {
        let share = f64::from(u32::try_from(*seen).expect("small")) / 500.0;
        let want = f64::from(*weight) / f64::from(u32::try_from(total).expect("small"));
        assert!((share - want).abs() <= 0.05, "{name}: {share} vs {want}");
        assert_eq!(*seen > 0, *weight > 0, "{name} seen iff its weight is > 0");
    }
}

/// Where a request goes, in the terms of the upstream tables.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Routed {
    /// No route is attached: the destination's own endpoints (any backend passes upstream).
    ServiceEndpoints,
    /// Routes are attached and none matches: HTTP 404.
    NotFound,
    /// The matched rule sends everything to this backend service.
    Backend(String),
}

fn backend(name: &str) -> Routed {
    Routed::Backend(name.to_owned())
}

/// Routes `request`: the outcome, and the matched rule if any.
fn route(routes: &CompiledRoutes, request: &Request) -> (Routed, Option<Arc<CompiledRule>>) {
    let summary = request.summary();
    let explanation = routes.explain(&summary);
    match routes.route(&summary) {
        RouteOutcome::NoRoutes => (Routed::ServiceEndpoints, None),
        RouteOutcome::NotFound => (Routed::NotFound, None),
        RouteOutcome::Matched(matched) => {
            let rule = matched.rule;
            let counts = shares(&rule);
            let only: Vec<usize> = (0..counts.len()).filter(|&i| counts[i] > 0).collect();
            assert_eq!(
                only.len(),
                1,
                "{} {}: the rule splits traffic ({counts:?}); {explanation}",
                request.method,
                request.uri
            );
            let target = &rule.backends()[only[0]];
            assert!(target.found, "{target:?}");
            assert_eq!(target.backend_ref.service.namespace, NS);
            let name = target.backend_ref.service.name.clone();
            (Routed::Backend(name), Some(rule))
        }
    }
}

/// Routes each `(request, expected)` and asserts the outcome, with the router's explanation
/// on failure.
fn assert_routes(routes: &CompiledRoutes, cases: &[(Request, Routed)]) {
    for (i, (request, expected)) in cases.iter().enumerate() {
        let (routed, _) = route(routes, request);
        assert_eq!(
            &routed,
            expected,
            "case {} ({} {} {:?}): {}",
            i + 1,
            request.method,
            request.uri,
            request.headers,
            routes.explain(&request.summary())
        );
    }
}

/// The rule `request` matches; panics unless one does.
fn matched_rule(routes: &CompiledRoutes, request: &Request) -> Arc<CompiledRule> {
    route(routes, request)
        .1
        .unwrap_or_else(|| panic!("{} {} matches no rule", request.method, request.uri))
}

/// The rule `request` matches, whatever its backends.
fn matched_rule_any(routes: &CompiledRoutes, request: &Request) -> Arc<CompiledRule> {
    match routes.route(&request.summary()) {
        RouteOutcome::Matched(matched) => matched.rule,
        other => panic!(
            "{} {}: {other:?}: {}",
            request.method,
            request.uri,
            routes.explain(&request.summary())
        ),
    }
}

/// The rule's only header modifier of the given kind.
fn modifier(rule: &CompiledRule, response: bool) -> &HeaderModifier {
    let found: Vec<&HeaderModifier> = rule
        .filters()
        .iter()
        .filter_map(|f| match (f, response) {
            (RouteFilter::ResponseHeaderModifier(m), true)
            | (RouteFilter::RequestHeaderModifier(m), false) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "{:?}", rule.filters());
    found[0]
}

/// The values of `name` in `headers` joined with `,`, as the upstream harness compares them.
fn joined(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// What the response carries after the matched rule's ResponseHeaderModifier, given a
/// backend response without the header.
fn response_header(rule: &CompiledRule, name: &str) -> Option<String> {
    let mut response = HeaderMap::new();
    for filter in rule.filters() {
        if let RouteFilter::ResponseHeaderModifier(m) = filter {
            m.apply(&mut response);
        }
    }
    joined(&response, name)
}

/// The headers the backend receives: the request's after the matched rule's request filters.
fn backend_headers(rule: &CompiledRule, request: &Request) -> HeaderMap {
    let mut headers = request.headers.clone();
    modifier(rule, false).apply(&mut headers);
    headers
}

// === Part A: the `mesh-*` tests ===

/// MeshBasic: no route; `echo` balances over both pods.
#[test]
fn mesh_basic() {
    let built = mesh().build().expect("builds");
    assert!(built.refused.is_empty(), "{:?}", built.refused);
    let echo = destination(&built, "echo");
    // The first port is `http` (80); its endpoints are the pods' target port 8080.
    assert_eq!(
        endpoint_addresses(&echo),
        [format!("{V1_IP}:8080"), format!("{V2_IP}:8080")]
    );
    assert!(echo.endpoints.iter().all(|e| e.identity.to_string()
        == "spiffe://cluster.local/ns/gateway-conformance-mesh/sa/default"));
    assert_routes(
        &CompiledRoutes::new(&echo),
        &[(get("/", &[]), Routed::ServiceEndpoints)],
    );
    assert_eq!(
        endpoint_addresses(&destination(&built, "echo-v1")),
        [format!("{V1_IP}:8080")]
    );
    assert_eq!(
        endpoint_addresses(&destination(&built, "echo-v2")),
        [format!("{V2_IP}:8080")]
    );
}

/// Modelled on upstream conformance/tests/mesh/mesh-split.yaml (MeshTrafficSplit).
const MESH_SPLIT: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: mesh-split
  namespace: gateway-conformance-mesh
spec:
  parentRefs:
  - group: \"\"
    kind: Service
    name: echo
  rules:
  - matches:
    - path:
        type: Exact
        value: /v1
    backendRefs:
    - name: echo-v1
      port: 80
  - matches:
    - path:
        type: Exact
        value: /v2
    backendRefs:
    - name: echo-v2
      port: 80
";

/// MeshTrafficSplit: a path-based split of `echo`.
#[test]
fn mesh_split() {
    let built = build_with(mesh(), MESH_SPLIT);
    assert_accepted(&built, &["mesh-split"]);
    let routes = compiled(&built, "echo");
    assert_routes(
        &routes,
        &[
            (get("/v1", &[]), backend("echo-v1")),
            (get("/v2", &[]), backend("echo-v2")),
            // Beyond the upstream table: a route is attached and no rule matches, so 404
            // (Exact is exact).
            (get("/", &[]), Routed::NotFound),
            (get("/v1/x", &[]), Routed::NotFound),
        ],
    );
    // The backends resolve to the v1 and v2 Services' own endpoints.
    let echo = destination(&built, "echo");
    let v1 = echo
        .backends
        .iter()
        .find(|b| b.service == svc("echo-v1"))
        .expect("echo-v1 is a backend");
    assert!(v1.found);
    assert_eq!(
        endpoint_addresses_of(&v1.endpoints),
        [format!("{V1_IP}:8080")]
    );
    // A route on `echo` changes nothing for `echo-v1` itself.
    assert_routes(
        &compiled(&built, "echo-v1"),
        &[(get("/v2", &[]), Routed::ServiceEndpoints)],
    );
}

/// Modelled on upstream conformance/tests/mesh/mesh-frontend.yaml (MeshFrontend).
const MESH_FRONTEND: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: mesh-split-v1
  namespace: gateway-conformance-mesh
spec:
  parentRefs:
  - group: \"\"
    kind: Service
    name: echo-v2
  rules:
  - filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set:
        - name: X-Header-Set
          value: set
    backendRefs:
    - name: echo-v2
      port: 80
";

/// MeshFrontend and MeshFrontendHostname: the route is the Service's, chosen by the
/// destination (never by `Host`).
///
/// MeshFrontend's case 2 (traffic sent to the echo-v2 *pod* IP sees no header) is outside the
/// index: a client only looks up routes for a Service it dials by name, and nothing in the
/// config maps a pod address to a destination, so there is nothing to assert here.
#[test]
fn mesh_frontend() {
    let built = build_with(mesh(), MESH_FRONTEND);
    assert_accepted(&built, &["mesh-split-v1"]);
    let v2 = compiled(&built, "echo-v2");
    // MeshFrontend 1, and MeshFrontendHostname 1 (`Host: echo-v1` sent to echo-v2).
    for request in [get("/", &[]), get("/", &[("host", "echo-v1")])] {
        let (routed, rule) = route(&v2, &request);
        assert_eq!(routed, backend("echo-v2"));
        let rule = rule.expect("matched");
        assert_eq!(
            response_header(&rule, "x-header-set").as_deref(),
            Some("set")
        );
    }
    // MeshFrontendHostname 2: echo-v1 dialed with `Host: echo-v2` has no route, so no header;
    // its own endpoints (the v1 pod) serve it.
    assert_routes(
        &compiled(&built, "echo-v1"),
        &[(get("/", &[("host", "echo-v2")]), Routed::ServiceEndpoints)],
    );
    assert_eq!(
        endpoint_addresses(&destination(&built, "echo-v1")),
        [format!("{V1_IP}:8080")]
    );
}

/// Modelled on upstream conformance/tests/mesh/mesh-ports.yaml (MeshPorts).
const MESH_PORTS: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: mesh-split-v1
  namespace: gateway-conformance-mesh
spec:
  parentRefs:
  - group: \"\"
    kind: Service
    name: echo-v1
    port: 80
  rules:
  - filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set:
        - name: X-Header-Set
          value: v1
    backendRefs:
    - name: echo-v1
      port: 80
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: mesh-split-v2
  namespace: gateway-conformance-mesh
spec:
  parentRefs:
  - group: \"\"
    kind: Service
    name: echo-v2
  rules:
  - filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set:
        - name: X-Header-Set
          value: v2
    backendRefs:
    - name: echo-v2
      port: 80
";

/// MeshPorts: parentRef `port` scopes a route to one port of its Service; no port is every
/// port.
#[test]
fn mesh_ports() {
    let built = build_with(mesh(), MESH_PORTS);
    assert_accepted(&built, &["mesh-split-v1", "mesh-split-v2"]);
    assert_eq!(parent_status(&built, "mesh-split-v1").parent.port, Some(80));
    assert_eq!(parent_status(&built, "mesh-split-v2").parent.port, None);
    // Cases 1, 3 and 4: echo-v1:80, echo-v2:80 and echo-v2:8080 get their route's header.
    for (target, service, header) in [
        ("echo-v1:80", "echo-v1", "v1"),
        ("echo-v2:80", "echo-v2", "v2"),
        ("echo-v2:8080", "echo-v2", "v2"),
    ] {
        let routes = CompiledRoutes::new(&destination(&built, target));
        let (routed, rule) = route(&routes, &get("/", &[]));
        assert_eq!(routed, backend(service), "{target}");
        let rule = rule.expect("matched");
        assert_eq!(
            response_header(&rule, "x-header-set").as_deref(),
            Some(header),
            "{target}"
        );
    }
    // A client naming no port dials the first port (80): the same as case 1.
    assert_eq!(
        route_names(&destination(&built, "echo-v1")),
        ["mesh-split-v1"]
    );
    // Case 2: echo-v1:8080 has no route (mesh-split-v1 is bound to port 80), so no header,
    // and echo-v1's own endpoints on that port's target serve it.
    let on_8080 = destination(&built, "echo-v1:8080");
    assert!(on_8080.routes.is_empty());
    assert_routes(
        &CompiledRoutes::new(&on_8080),
        &[(get("/", &[]), Routed::ServiceEndpoints)],
    );
    assert_eq!(endpoint_addresses(&on_8080), [format!("{V1_IP}:8080")]);

    // A parentRef port the Service does not have is not accepted.
    let on_8081 = MESH_PORTS
        .split("---")
        .next()
        .expect("first document")
        .replace("port: 80\n  rules", "port: 8081\n  rules");
    assert!(on_8081.contains("port: 8081"));
    let built = build_with(mesh(), &on_8081);
    let refusal = parent_status(&built, "mesh-split-v1")
        .accepted
        .clone()
        .expect_err("echo-v1 has no port 8081");
    assert_eq!(refusal.reason, "NoMatchingParent");
    assert!(
        refusal.message.contains("no port 8081"),
        "{}",
        refusal.message
    );
}

fn route_names(destination: &Destination) -> Vec<&str> {
    destination.routes.iter().map(|r| r.name.as_str()).collect()
}

/// Modelled on upstream conformance/tests/mesh/mesh-consumer-route.yaml (MeshConsumerRoute).
const MESH_CONSUMER_ROUTE: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: mesh-echo-add-header
  namespace: gateway-conformance-mesh-consumer
spec:
  parentRefs:
  - group: \"\"
    kind: Service
    name: echo-v1
    namespace: gateway-conformance-mesh
  rules:
  - filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set:
        - name: X-Header-Set
          value: set
    backendRefs:
    - name: echo-v1
      namespace: gateway-conformance-mesh
      port: 80
";

/// MeshConsumerRoute: a route in the consumer namespace on a producer's Service changes
/// traffic only for clients in the route's own namespace.
#[test]
fn mesh_consumer_route() {
    let built = build_with(mesh(), MESH_CONSUMER_ROUTE);
    let status = built
        .routes
        .iter()
        .find(|r| r.route.name == "mesh-echo-add-header")
        .expect("status");
    assert_eq!(status.route.namespace, CONSUMER_NS);
    assert_eq!(status.parents.len(), 1);
    let parent = &status.parents[0];
    assert_eq!(parent.parent.namespace.as_deref(), Some(NS));
    assert_eq!(parent.accepted, Ok(()));
    // The backendRef (echo-v1 in the producer namespace) resolves; the index does not ask
    // for a ReferenceGrant (upstream supplies none and expects none to be needed).
    assert_eq!(parent.resolved_refs, Ok(()));
    assert!(built.refused.is_empty(), "{:?}", built.refused);

    // Case 1: a client in the consumer namespace gets the header, served by echo-v1 (port 80).
    let consumer = destination_from(&built, "echo-v1:80", CONSUMER_NS);
    let routes = CompiledRoutes::new(&consumer);
    let (routed, rule) = route(&routes, &get("/", &[]));
    assert_eq!(routed, backend("echo-v1"));
    let rule = rule.expect("matched");
    assert_eq!(
        response_header(&rule, "x-header-set").as_deref(),
        Some("set")
    );
    let backend = &consumer.backends[0];
    assert_eq!(
        (backend.service.to_string(), backend.port),
        (format!("echo-v1.{NS}"), Some(80))
    );
    assert_eq!(
        endpoint_addresses_of(&backend.endpoints),
        [format!("{V1_IP}:8080")]
    );

    // Case 2: a client in the producer namespace sees no route and no header.
    let producer = destination(&built, "echo-v1:80");
    assert!(producer.routes.is_empty());
    assert_routes(
        &CompiledRoutes::new(&producer),
        &[(get("/", &[]), Routed::ServiceEndpoints)],
    );
    assert_eq!(endpoint_addresses(&producer), [format!("{V1_IP}:8080")]);
}

// === Part B: the `httproute-*` and `grpcroute-*` mesh tests ===

/// Modelled on upstream conformance/tests/mesh/httproute-simple-same-namespace.yaml
/// (MeshHTTPRouteSimpleSameNamespace).
const SIMPLE_SAME_NAMESPACE: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: gateway-conformance-mesh-test
  namespace: gateway-conformance-mesh
spec:
  parentRefs:
  - group: \"\"
    kind: Service
    name: echo
    port: 80
  rules:
  - backendRefs:
    - name: echo-v1
      port: 8080
";

/// MeshHTTPRouteSimpleSameNamespace: one catch-all rule to echo-v1 (never v2).
#[test]
fn httproute_simple_same_namespace() {
    let built = build_with(mesh(), SIMPLE_SAME_NAMESPACE);
    assert_accepted(&built, &["gateway-conformance-mesh-test"]);
    let routes = compiled(&built, "echo");
    assert_routes(&routes, &[(get("/", &[]), backend("echo-v1"))]);
    let rule = matched_rule(&routes, &get("/", &[]));
    assert_eq!(rule.backends()[0].backend_ref.port, Some(8080));
}

/// Modelled on upstream conformance/tests/mesh/httproute-matching.yaml (MeshHTTPRouteMatching).
const MATCHING: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: mesh-matching
  namespace: gateway-conformance-mesh
spec:
  parentRefs:
  - group: \"\"
    kind: Service
    name: echo
    port: 80
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /
    - headers:
      - name: version
        value: one
    backendRefs:
    - name: echo-v1
      port: 8080
  - matches:
    - path:
        type: PathPrefix
        value: /v2
    - headers:
      - name: version
        value: two
    backendRefs:
    - name: echo-v2
      port: 8080
";

/// MeshHTTPRouteMatching: path and header precedence, segment-wise prefixes.
#[test]
fn httproute_matching() {
    let built = build_with(mesh(), MATCHING);
    assert_accepted(&built, &["mesh-matching"]);
    assert_routes(
        &compiled(&built, "echo"),
        &[
            (get("/", &[]), backend("echo-v1")),
            (get("/example", &[]), backend("echo-v1")),
            (get("/", &[("Version", "one")]), backend("echo-v1")),
            (get("/v2", &[]), backend("echo-v2")),
            (get("/v2/example", &[]), backend("echo-v2")),
            // A header match beats the bare `/` prefix.
            (get("/", &[("Version", "two")]), backend("echo-v2")),
            (get("/v2/", &[]), backend("echo-v2")),
            // Not a segment prefix of `/v2`.
            (get("/v2example", &[]), backend("echo-v1")),
            (get("/foo/v2/example", &[]), backend("echo-v1")),
        ],
    );
}

/// Modelled on upstream conformance/tests/mesh/httproute-query-param-matching.yaml
/// (MeshHTTPRouteQueryParamMatching).
const QUERY_PARAM_MATCHING: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: mesh-query-param-matching
  namespace: gateway-conformance-mesh
spec:
  parentRefs:
  - group: \"\"
    kind: Service
    name: echo
    port: 80
  rules:
  - matches:
    - queryParams:
      - name: animal
        value: whale
    backendRefs:
    - name: echo-v1
      port: 8080
  - matches:
    - queryParams:
      - name: animal
        value: dolphin
    backendRefs:
    - name: echo-v2
      port: 8080
  - matches:
    - path:
        type: PathPrefix
        value: /path1
      queryParams:
      - name: animal
        value: whale
    backendRefs:
    - name: echo-v1
      port: 8080
  - matches:
    - headers:
      - name: version
        value: one
      queryParams:
      - name: animal
        value: whale
    backendRefs:
    - name: echo-v2
      port: 8080
  - matches:
    - path:
        type: PathPrefix
        value: /path3
      queryParams:
      - name: animal
        value: shark
    - path:
        type: PathPrefix
        value: /path4
      headers:
      - name: version
        value: three
      queryParams:
      - name: animal
        value: kraken
    backendRefs:
    - name: echo-v1
      port: 8080
  - matches:
    - path:
        type: PathPrefix
        value: /path5
    backendRefs:
    - name: echo-v1
      port: 8080
  - matches:
    - queryParams:
      - name: animal
        value: hydra
    backendRefs:
    - name: echo-v2
      port: 8080
";

/// MeshHTTPRouteQueryParamMatching: exact query values, ANDed and ORed with path and headers,
/// and their precedence.
#[test]
fn httproute_query_param_matching() {
    let built = build_with(mesh(), QUERY_PARAM_MATCHING);
    assert_accepted(&built, &["mesh-query-param-matching"]);
    assert_routes(
        &compiled(&built, "echo"),
        &[
            (get("/?animal=whale", &[]), backend("echo-v1")),
            (get("/?animal=dolphin", &[]), backend("echo-v2")),
            (
                get("/?animal=whale&otherparam=irrelevant", &[]),
                backend("echo-v1"),
            ),
            (
                get("/?animal=dolphin&color=yellow", &[]),
                backend("echo-v2"),
            ),
            (get("/?color=blue", &[]), Routed::NotFound),
            (get("/?animal=dog", &[]), Routed::NotFound),
            (get("/?animal=whaledolphin", &[]), Routed::NotFound),
            (get("/", &[]), Routed::NotFound),
            (get("/path1?animal=whale", &[]), backend("echo-v1")),
            // The rule with a header match wins.
            (
                get("/?animal=whale", &[("version", "one")]),
                backend("echo-v2"),
            ),
            (get("/path3?animal=shark", &[]), backend("echo-v1")),
            (
                get("/path4?animal=kraken", &[("version", "three")]),
                backend("echo-v1"),
            ),
            // Only part of an ANDed match.
            (get("/?animal=shark", &[]), Routed::NotFound),
            (get("/path4?animal=kraken", &[]), Routed::NotFound),
            // A path match outranks a query-parameter match.
            (get("/path5?animal=hydra", &[]), backend("echo-v1")),
        ],
    );
}

/// Modelled on upstream conformance/tests/mesh/httproute-named-rule.yaml
/// (MeshHTTPRouteNamedRule).
const NAMED_RULE: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: mesh-http-named-rules
  namespace: gateway-conformance-mesh
spec:
  parentRefs:
  - group: \"\"
    kind: Service
    name: echo
    port: 80
  rules:
  - name: named-rule
    matches:
    - path:
        type: PathPrefix
        value: /named
    backendRefs:
    - name: echo-v1
      port: 8080
  - matches:
    - path:
        type: PathPrefix
        value: /unnamed
    backendRefs:
    - name: echo-v2
      port: 8080
";

/// MeshHTTPRouteNamedRule: the rule `name` is accepted, carried, and changes no routing.
#[test]
fn httproute_named_rule() {
    let built = build_with(mesh(), NAMED_RULE);
    assert_accepted(&built, &["mesh-http-named-rules"]);
    let routes = compiled(&built, "echo");
    assert_routes(
        &routes,
        &[
            (get("/named", &[]), backend("echo-v1")),
            (get("/unnamed", &[]), backend("echo-v2")),
        ],
    );
    assert_eq!(
        matched_rule(&routes, &get("/named", &[])).rule_name(),
        "named-rule"
    );
    assert_eq!(matched_rule(&routes, &get("/unnamed", &[])).rule_name(), "");
}

/// Modelled on upstream conformance/tests/mesh/httproute-weight.yaml (MeshHTTPRouteWeight).
const HTTP_WEIGHT: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: mesh-weighted-backends
  namespace: gateway-conformance-mesh
spec:
  parentRefs:
  - group: \"\"
    kind: Service
    name: echo
    port: 80
  rules:
  - backendRefs:
    - name: echo-v1
      port: 8080
      weight: 70
    - name: echo-v2
      port: 8080
      weight: 30
";

/// MeshHTTPRouteWeight: 70/30, exactly over the `u32` space.
#[test]
fn httproute_weight() {
    let built = build_with(mesh(), HTTP_WEIGHT);
    assert_accepted(&built, &["mesh-weighted-backends"]);
    let routes = compiled(&built, "echo");
    let rule = matched_rule_any(&routes, &get("/", &[]));
    assert_weights(&rule, &[("echo-v1", 70, true), ("echo-v2", 30, true)]);
    // Both backends resolve to their own pods.
    let echo = destination(&built, "echo");
    let found: Vec<(&str, Vec<String>)> = echo
        .backends
        .iter()
        .map(|b| (b.service.name.as_str(), endpoint_addresses_of(&b.endpoints)))
        .collect();
    assert_eq!(
        found,
        [
            ("echo-v1", vec![format!("{V1_IP}:8080")]),
            ("echo-v2", vec![format!("{V2_IP}:8080")]),
        ]
    );
}

/// Modelled on upstream conformance/tests/mesh/grpcroute-weight.yaml (MeshGRPCRouteWeight).
const GRPC_WEIGHT: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: mesh-grpc-weighted-backends
  namespace: gateway-conformance-mesh
spec:
  parentRefs:
  - group: \"\"
    kind: Service
    name: echo
    port: 7070
  rules:
  - backendRefs:
    - name: echo-v1
      port: 7070
      weight: 70
    - name: echo-v2
      port: 7070
      weight: 30
    - name: echo-v3
      port: 7070
      weight: 0
";

/// MeshGRPCRouteWeight on `echo:7070`: 70/30 exactly, and the weight-0 backendRef to the
/// missing `echo-v3` never picked although it does not resolve. The route is bound to port
/// 7070 only: calls to the first port (80) keep `echo`'s own endpoints.
#[test]
fn grpc_route_weight() {
    let built = build_with(mesh(), GRPC_WEIGHT);
    assert_routes(
        &compiled(&built, "echo"),
        &[(grpc_echo(&[]), Routed::ServiceEndpoints)],
    );
    let parent = parent_status(&built, "mesh-grpc-weighted-backends");
    assert_eq!(parent.accepted, Ok(()));
    assert_eq!(
        parent
            .resolved_refs
            .as_ref()
            .expect_err("echo-v3 does not exist")
            .reason,
        "BackendNotFound"
    );
    // The gRPC port's endpoints are the pods' 7070.
    assert_eq!(
        endpoint_addresses(&destination(&built, "echo:7070")),
        [format!("{V1_IP}:7070"), format!("{V2_IP}:7070")]
    );
    let routes = compiled(&built, "echo:7070");
    let rule = matched_rule_any(&routes, &grpc_echo(&[]));
    assert_eq!(rule.route_name(), "mesh-grpc-weighted-backends");
    assert_weights(
        &rule,
        &[
            ("echo-v1", 70, true),
            ("echo-v2", 30, true),
            ("echo-v3", 0, false),
        ],
    );
    assert_eq!(shares(&rule)[2], 0, "echo-v3 is never picked");
}

/// Modelled on upstream conformance/tests/mesh/httproute-request-header-modifier.yaml
/// (MeshHTTPRouteRequestHeaderModifier).
const REQUEST_HEADER_MODIFIER: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: mesh-request-header-modifier
  namespace: gateway-conformance-mesh
spec:
  parentRefs:
  - group: \"\"
    kind: Service
    name: echo
    port: 80
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /set
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: X-Header-Set
          value: set-overwrites-values
    backendRefs:
    - name: echo-v1
      port: 8080
  - matches:
    - path:
        type: PathPrefix
        value: /add
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        add:
        - name: X-Header-Add
          value: add-appends-values
    backendRefs:
    - name: echo-v1
      port: 8080
  - matches:
    - path:
        type: PathPrefix
        value: /remove
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        remove:
        - X-Header-Remove
    backendRefs:
    - name: echo-v1
      port: 8080
  - matches:
    - path:
        type: PathPrefix
        value: /multiple
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: X-Header-Set-1
          value: header-set-1
        - name: X-Header-Set-2
          value: header-set-2
        add:
        - name: X-Header-Add-1
          value: header-add-1
        - name: X-Header-Add-2
          value: header-add-2
        - name: X-Header-Add-3
          value: header-add-3
        remove:
        - X-Header-Remove-1
        - X-Header-Remove-2
    backendRefs:
    - name: echo-v1
      port: 8080
  - matches:
    - path:
        type: PathPrefix
        value: /case-insensitivity
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: X-Header-Set
          value: header-set
        add:
        - name: X-Header-Add
          value: header-add
        remove:
        - X-Header-Remove
    backendRefs:
    - name: echo-v1
      port: 8080
";

/// One header-modifier case: the request, the backend it reaches, the headers the backend
/// must see (values joined with `,`) and those it must not.
type HeaderCase<'a> = (Request, &'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);

fn assert_header_cases(routes: &CompiledRoutes, cases: &[HeaderCase<'_>]) {
    for (i, (request, expected_backend, present, absent)) in cases.iter().enumerate() {
        let (routed, rule) = route(routes, request);
        assert_eq!(routed, backend(expected_backend), "case {}", i + 1);
        let seen = backend_headers(&rule.expect("matched"), request);
        for (name, value) in *present {
            assert_eq!(
                joined(&seen, name).as_deref(),
                Some(*value),
                "case {}: {name} in {seen:?}",
                i + 1
            );
        }
        for name in *absent {
            assert_eq!(joined(&seen, name), None, "case {}: {name}", i + 1);
        }
    }
}

/// MeshHTTPRouteRequestHeaderModifier: the rule's filter is carried into the rule, and
/// applied to the upstream cases' requests it gives what the backend must see.
#[test]
fn httproute_request_header_modifier() {
    let built = build_with(mesh(), REQUEST_HEADER_MODIFIER);
    assert_accepted(&built, &["mesh-request-header-modifier"]);
    let routes = compiled(&built, "echo");
    let rule = matched_rule(&routes, &get("/multiple", &[]));
    let multiple = modifier(&rule, false);
    let names = |pairs: &[(HeaderName, HeaderValue)]| -> Vec<String> {
        pairs
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().expect("ascii")))
            .collect()
    };
    assert_eq!(
        names(&multiple.set),
        [
            "x-header-set-1: header-set-1",
            "x-header-set-2: header-set-2"
        ]
    );
    assert_eq!(
        names(&multiple.add),
        [
            "x-header-add-1: header-add-1",
            "x-header-add-2: header-add-2",
            "x-header-add-3: header-add-3"
        ]
    );
    assert_eq!(
        multiple
            .remove
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>(),
        ["x-header-remove-1", "x-header-remove-2"]
    );

    assert_header_cases(
        &routes,
        &[
            (
                get("/set", &[("Some-Other-Header", "val")]),
                "echo-v1",
                &[
                    ("Some-Other-Header", "val"),
                    ("X-Header-Set", "set-overwrites-values"),
                ],
                &[],
            ),
            (
                get(
                    "/set",
                    &[
                        ("Some-Other-Header", "val"),
                        ("X-Header-Set", "some-other-value"),
                    ],
                ),
                "echo-v1",
                &[
                    ("Some-Other-Header", "val"),
                    ("X-Header-Set", "set-overwrites-values"),
                ],
                &[],
            ),
            (
                get("/add", &[("Some-Other-Header", "val")]),
                "echo-v1",
                &[
                    ("Some-Other-Header", "val"),
                    ("X-Header-Add", "add-appends-values"),
                ],
                &[],
            ),
            (
                get(
                    "/add",
                    &[
                        ("Some-Other-Header", "val"),
                        ("X-Header-Add", "some-other-value"),
                    ],
                ),
                "echo-v1",
                &[
                    ("Some-Other-Header", "val"),
                    ("X-Header-Add", "some-other-value,add-appends-values"),
                ],
                &[],
            ),
            (
                get("/remove", &[("X-Header-Remove", "val")]),
                "echo-v1",
                &[],
                &["X-Header-Remove"],
            ),
            (
                get(
                    "/multiple",
                    &[
                        ("X-Header-Set-2", "set-val-2"),
                        ("X-Header-Add-2", "add-val-2"),
                        ("X-Header-Remove-2", "remove-val-2"),
                        ("Another-Header", "another-header-val"),
                    ],
                ),
                "echo-v1",
                &[
                    ("X-Header-Set-1", "header-set-1"),
                    ("X-Header-Set-2", "header-set-2"),
                    ("X-Header-Add-1", "header-add-1"),
                    ("X-Header-Add-2", "add-val-2,header-add-2"),
                    ("X-Header-Add-3", "header-add-3"),
                    ("Another-Header", "another-header-val"),
                ],
                &["X-Header-Remove-1", "X-Header-Remove-2"],
            ),
            (
                get(
                    "/case-insensitivity",
                    &[
                        ("x-header-set", "original-val-set"),
                        ("x-header-add", "original-val-add"),
                        ("x-header-remove", "original-val-remove"),
                        ("Another-Header", "another-header-val"),
                    ],
                ),
                "echo-v1",
                &[
                    ("X-Header-Set", "header-set"),
                    ("X-Header-Add", "original-val-add,header-add"),
                    ("Another-Header", "another-header-val"),
                ],
                &["X-Header-Remove", "x-header-remove"],
            ),
        ],
    );
}

/// Modelled on upstream conformance/tests/mesh/grpcroute-request-header-modifier.yaml
/// (MeshGRPCRouteRequestHeaderModifier).
const GRPC_REQUEST_HEADER_MODIFIER: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: grpc-request-header-modifier
  namespace: gateway-conformance-mesh
spec:
  parentRefs:
  - group: \"\"
    kind: Service
    name: echo
    port: 7070
  rules:
  - matches:
    - headers:
      - name: x-test-case
        value: set
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: x-header-set
          value: set-overwrites-values
    backendRefs:
    - name: echo-v1
      port: 7070
  - matches:
    - headers:
      - name: x-test-case
        value: add
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        add:
        - name: x-header-add
          value: add-appends-values
    backendRefs:
    - name: echo-v1
      port: 7070
  - matches:
    - headers:
      - name: x-test-case
        value: remove
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        remove:
        - x-header-remove
    backendRefs:
    - name: echo-v1
      port: 7070
  - matches:
    - headers:
      - name: x-test-case
        value: multi
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: x-header-set-1
          value: header-set-1
        - name: x-header-set-2
          value: header-set-2
        add:
        - name: x-header-add-1
          value: header-add-1
        - name: x-header-add-2
          value: header-add-2
        remove:
        - x-header-remove-1
        - x-header-remove-2
    backendRefs:
    - name: echo-v2
      port: 7070
";

/// MeshGRPCRouteRequestHeaderModifier on `echo:7070`: metadata matches pick the rule, whose
/// filter gives the metadata the backend must see.
#[test]
fn grpc_route_request_header_modifier() {
    let built = build_with(mesh(), GRPC_REQUEST_HEADER_MODIFIER);
    assert_accepted(&built, &["grpc-request-header-modifier"]);
    assert_header_cases(
        &compiled(&built, "echo:7070"),
        &[
            (
                grpc_echo(&[
                    ("x-test-case", "set"),
                    ("some-other-header", "this-header-should-be-set"),
                    ("x-header-set", "this-value-should-be-overwritten"),
                ]),
                "echo-v1",
                &[
                    ("x-test-case", "set"),
                    ("some-other-header", "this-header-should-be-set"),
                    ("x-header-set", "set-overwrites-values"),
                ],
                &[],
            ),
            (
                grpc_echo(&[
                    ("x-test-case", "add"),
                    ("x-header-add", "this-value-should-be-appended"),
                ]),
                "echo-v1",
                &[
                    ("x-test-case", "add"),
                    (
                        "x-header-add",
                        "this-value-should-be-appended,add-appends-values",
                    ),
                ],
                &[],
            ),
            (
                grpc_echo(&[
                    ("x-test-case", "remove"),
                    ("x-header-remove", "this-should-be-removed"),
                ]),
                "echo-v1",
                &[("x-test-case", "remove")],
                &["x-header-remove"],
            ),
            (
                grpc_echo(&[
                    ("x-test-case", "multi"),
                    ("x-header-set-2", "set-header-2"),
                    ("x-header-add-2", "add-header-2"),
                    ("x-header-remove-2", "should-be-removed-2"),
                ]),
                "echo-v2",
                &[
                    ("x-test-case", "multi"),
                    ("x-header-set-1", "header-set-1"),
                    ("x-header-set-2", "header-set-2"),
                    ("x-header-add-1", "header-add-1"),
                    ("x-header-add-2", "add-header-2,header-add-2"),
                ],
                &["x-header-remove-1", "x-header-remove-2"],
            ),
        ],
    );
    // No rule matches a call without `x-test-case`: gRPC UNIMPLEMENTED (the 404 outcome).
    assert_routes(
        &compiled(&built, "echo:7070"),
        &[(grpc_echo(&[]), Routed::NotFound)],
    );
}

/// An HTTPRoute `name` on `echo` port 80 with one rule: PathPrefix `path`, `filters` (JSON),
/// and a backendRef to echo-v1 carrying `backend_filters` when given.
fn one_rule_route(
    name: &str,
    path: &str,
    filters: Value,
    backend_filters: Option<Value>,
) -> String {
    let mut backend = json!({"name": "echo-v1", "port": 8080});
    if let Some(f) = backend_filters {
        backend["filters"] = f;
    }
    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "echo", "port": 80}],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": path}}],
                "filters": filters,
                "backendRefs": [backend]
            }]
        }
    });
    serde_yaml::to_string(&route).expect("yaml")
}

/// The cases whose filters the mesh does not carry: each route is refused with the field
/// that is not supported (`UnsupportedValue`), and `echo` keeps its default routing. The
/// objects are each upstream test's first rule.
#[test]
fn unsupported_filters_are_refused() {
    let set_header = json!([{"type": "RequestHeaderModifier",
                           "requestHeaderModifier": {"set": [{"name": "X-Header-Set",
                                                              "value": "set-overwrites-values"}]}}]);
    let cases = [
        // Modelled on upstream httproute-request-header-modifier-backend.yaml
        // (MeshHTTPRouteBackendRequestHeaderModifier).
        (
            one_rule_route("backend-modifier", "/set", json!([]), Some(set_header)),
            "spec.rules[0].backendRefs[0].filters",
        ),
        // Modelled on upstream httproute-rewrite-path.yaml (MeshHTTPRouteRewritePath).
        (
            one_rule_route(
                "rewrite",
                "/prefix/one",
                json!([{"type": "URLRewrite",
                        "urlRewrite": {"path": {"type": "ReplacePrefixMatch",
                                                "replacePrefixMatch": "/one"}}}]),
                None,
            ),
            "filter \"URLRewrite\"",
        ),
        // Modelled on upstream httproute-redirect-host-and-status.yaml
        // (MeshHTTPRouteRedirectHostAndStatus); the 30x, path, port and scheme redirect
        // tests use the same filter type.
        (
            one_rule_route(
                "redirect",
                "/hostname-redirect",
                json!([{"type": "RequestRedirect",
                        "requestRedirect": {"hostname": "example.org"}}]),
                None,
            ),
            "filter \"RequestRedirect\"",
        ),
    ];
    for (yaml, field) in cases {
        let built = build_with(mesh(), &yaml);
        let name = built.routes[0].route.name.clone();
        let refusal = parent_status(&built, &name)
            .accepted
            .clone()
            .expect_err("refused");
        assert_eq!(refusal.reason, "UnsupportedValue", "{name}");
        assert!(
            refusal.message.contains(field),
            "{name}: {}",
            refusal.message
        );
        assert_routes(
            &compiled(&built, "echo"),
            &[(get("/", &[]), Routed::ServiceEndpoints)],
        );
    }
}
