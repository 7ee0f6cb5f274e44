//! The index as a state machine: events in, config (and route status) out.

use gateway_api::grpcroutes::GrpcRoute;
use gateway_api::httproutes::HttpRoute;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use mesh_core::authz::DefaultPolicy;
use mesh_core::snapshot::{Destination, ServiceName};
use serde::Deserialize as _;
use serde_json::{Value, json};

use super::*;
use mesh_core::testing::trust_domain as td;

fn obj<K: serde::de::DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("a valid object")
}

fn service(ns: &str, name: &str) -> Service {
    obj(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"name": "grpc", "port": 80, "targetPort": 50051}]}
    }))
}

/// A slice of `service` with `(ip, pod, ready, serving)` endpoints on port 50051.
fn slice(
    ns: &str,
    name: &str,
    service: &str,
    endpoints: &[(&str, &str, bool, bool)],
) -> EndpointSlice {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, pod, ready, serving)| {
            json!({
                "addresses": [ip],
                "conditions": {"ready": ready, "serving": serving, "terminating": !ready},
                "targetRef": {"kind": "Pod", "name": pod, "namespace": ns},
                "zone": "zone-a"
            })
        })
        .collect();
    slice_with(ns, name, service, endpoints)
}

/// An IPv4 slice of `service` with one `grpc` port and `endpoints` as given.
fn slice_with(ns: &str, name: &str, service: &str, endpoints: Vec<Value>) -> EndpointSlice {
    obj(json!({
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": 50051, "protocol": "TCP"}],
        "endpoints": endpoints
    }))
}

fn pod(ns: &str, name: &str, sa: &str) -> Pod {
    obj(json!({
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"app": "x", "version": "v1", "pod-template-hash": "abc"}},
        "spec": {"serviceAccountName": sa, "containers": []}
    }))
}

fn http_route(ns: &str, name: &str, parent: Value, backends: &[(&str, i32)]) -> HttpRoute {
    let refs: Vec<Value> = backends
        .iter()
        .map(|(n, w)| json!({"name": n, "port": 80, "weight": w}))
        .collect();
    obj(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns, "generation": 3,
                     "creationTimestamp": "2024-05-01T10:00:00Z"},
        "spec": {
            "parentRefs": [parent],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/api"},
                             "headers": [{"type": "Exact", "name": "x-canary", "value": "1"}]}],
                "backendRefs": refs,
                "timeouts": {"request": "5s"}
            }]
        }
    }))
}

fn svc_parent(name: &str) -> Value {
    json!({"group": "", "kind": "Service", "name": name})
}

/// An index with every kind listed (empty) once.
fn synced() -> ClusterIndex {
    let mut index = ClusterIndex::new(td(), None);
    for done in [
        index.apply(Event::<Service>::InitDone),
        index.apply(Event::<EndpointSlice>::InitDone),
        index.apply(Event::<Pod>::InitDone),
        index.apply(Event::<HttpRoute>::InitDone),
        index.apply(Event::<GrpcRoute>::InitDone),
        index.apply(Event::<AuthorizationPolicy>::InitDone),
        index.apply(Event::<FaultInjection>::InitDone),
        index.apply(Event::<RequestAuthentication>::InitDone),
        index.apply(Event::<LocalRateLimitPolicy>::InitDone),
    ] {
        assert!(done, "a first InitDone is a change");
    }
    assert!(index.unsynced().is_empty());
    index
}

fn name(s: &str) -> ServiceName {
    s.parse().expect("valid")
}

fn destination(index: &ClusterIndex, service: &str) -> Destination {
    index
        .build()
        .expect("builds")
        .config
        .destination(&name(service))
}

fn addresses(index: &ClusterIndex, service: &str) -> Vec<String> {
    destination(index, service)
        .endpoints
        .iter()
        .map(|e| format!("{} {}", e.address, e.identity))
        .collect()
}

/// greeter.default with two ready pods.
fn greeter() -> ClusterIndex {
    let mut index = synced();
    index.apply(Event::Apply(service("default", "greeter")));
    index.apply(Event::Apply(pod("default", "g-1", "greeter")));
    index.apply(Event::Apply(pod("default", "g-2", "greeter")));
    index.apply(Event::Apply(slice(
        "default",
        "greeter-abc",
        "greeter",
        &[
            ("10.0.0.1", "g-1", true, true),
            ("10.0.0.2", "g-2", true, true),
        ],
    )));
    index
}

#[test]
fn is_unsynced_until_every_kind_is_listed() {
    let mut index = ClusterIndex::new(td(), None);
    assert_eq!(index.unsynced().len(), 9);
    index.apply(Event::<Service>::Init);
    index.apply(Event::InitApply(service("default", "greeter")));
    index.apply(Event::<Service>::InitDone);
    assert!(!index.unsynced().contains(&"services"));
    assert!(index.unsynced().contains(&"pods"));
}

#[test]
fn services_slices_and_pods_make_endpoints_with_identities() {
    let index = greeter();
    assert_eq!(
        addresses(&index, "greeter.default"),
        [
            "10.0.0.1:50051 spiffe://mesh.local/ns/default/sa/greeter",
            "10.0.0.2:50051 spiffe://mesh.local/ns/default/sa/greeter"
        ]
    );
    let endpoint = &destination(&index, "greeter.default").endpoints[0];
    assert_eq!(endpoint.zone, "zone-a");
    assert_eq!(
        endpoint.labels.get("version").map(String::as_str),
        Some("v1")
    );
    assert!(!endpoint.labels.contains_key("pod-template-hash"));
}

#[test]
fn the_same_config_as_the_file_source() {
    let index = greeter();
    let file = crate::source::file::parse(
        "\
services:
  - name: greeter
    namespace: default
    port: 80
    endpoints:
      - address: 10.0.0.1:50051
        identity: spiffe://mesh.local/ns/default/sa/greeter
        zone: zone-a
        labels: {app: x, version: v1}
      - address: 10.0.0.2:50051
        identity: spiffe://mesh.local/ns/default/sa/greeter
        zone: zone-a
        labels: {app: x, version: v1}
",
        &td(),
    )
    .expect("valid");
    assert_eq!(index.build().expect("builds").config, file.mesh);
}

#[test]
fn unready_endpoints_leave_and_terminating_ones_serve_only_as_a_last_resort() {
    let mut index = greeter();
    assert!(index.apply(Event::Apply(slice(
        "default",
        "greeter-abc",
        "greeter",
        &[
            ("10.0.0.1", "g-1", true, true),
            ("10.0.0.2", "g-2", false, true)
        ],
    ))));
    assert_eq!(addresses(&index, "greeter.default").len(), 1);
    // Both terminating but still serving: keep serving from them.
    index.apply(Event::Apply(slice(
        "default",
        "greeter-abc",
        "greeter",
        &[
            ("10.0.0.1", "g-1", false, true),
            ("10.0.0.2", "g-2", false, true),
        ],
    )));
    assert_eq!(addresses(&index, "greeter.default").len(), 2);
    // Not serving at all: gone.
    index.apply(Event::Apply(slice(
        "default",
        "greeter-abc",
        "greeter",
        &[
            ("10.0.0.1", "g-1", false, false),
            ("10.0.0.2", "g-2", false, false),
        ],
    )));
    assert!(addresses(&index, "greeter.default").is_empty());
}

#[test]
fn the_first_pods_of_a_service_may_subscribe_as_it_before_they_are_ready() {
    let mut index = synced();
    index.apply(Event::Apply(service("default", "greeter")));
    index.apply(Event::Apply(pod("default", "g-1", "greeter")));
    index.apply(Event::Apply(pod("default", "g-2", "greeter-canary")));
    // Starting: in the slice, neither ready nor serving.
    index.apply(Event::Apply(slice(
        "default",
        "greeter-abc",
        "greeter",
        &[
            ("10.0.0.1", "g-1", false, false),
            ("10.0.0.2", "g-2", false, false),
        ],
    )));
    assert!(addresses(&index, "greeter.default").is_empty());
    let config = index.build().expect("builds").config;
    let id =
        |sa: &str| SpiffeId::parse(&format!("spiffe://mesh.local/ns/default/sa/{sa}")).unwrap();
    assert!(config.is_served_by(&name("greeter.default"), &id("greeter")));
    assert!(config.is_served_by(&name("greeter.default"), &id("greeter-canary")));
    assert!(!config.is_served_by(&name("greeter.default"), &id("web")));
}

#[test]
fn endpoints_wait_for_their_pod_and_follow_its_service_account() {
    let mut index = synced();
    index.apply(Event::Apply(service("default", "greeter")));
    index.apply(Event::Apply(slice(
        "default",
        "s1",
        "greeter",
        &[("10.0.0.1", "g-1", true, true)],
    )));
    assert!(
        addresses(&index, "greeter.default").is_empty(),
        "pod unknown"
    );
    index.apply(Event::Apply(pod("default", "g-1", "greeter")));
    assert_eq!(addresses(&index, "greeter.default").len(), 1);
    index.apply(Event::Apply(pod("default", "g-1", "greeter-v2")));
    assert_eq!(
        addresses(&index, "greeter.default"),
        ["10.0.0.1:50051 spiffe://mesh.local/ns/default/sa/greeter-v2"]
    );
    index.apply(Event::Delete(pod("default", "g-1", "greeter-v2")));
    assert!(addresses(&index, "greeter.default").is_empty());
}

#[test]
fn several_slices_join_and_duplicates_collapse() {
    let mut index = greeter();
    index.apply(Event::Apply(pod("default", "g-3", "greeter")));
    index.apply(Event::Apply(slice(
        "default",
        "greeter-def",
        "greeter",
        &[
            ("10.0.0.3", "g-3", true, true),
            ("10.0.0.2", "g-2", true, true),
        ],
    )));
    assert_eq!(addresses(&index, "greeter.default").len(), 3);
    // A slice of another service, or of the same name in another namespace, does not join.
    index.apply(Event::Apply(slice(
        "shop",
        "greeter-x",
        "greeter",
        &[("10.0.0.9", "g-9", true, true)],
    )));
    assert_eq!(addresses(&index, "greeter.default").len(), 3);
    index.apply(Event::Delete(slice(
        "default",
        "greeter-def",
        "greeter",
        &[],
    )));
    assert_eq!(addresses(&index, "greeter.default").len(), 2);
}

#[test]
fn deleting_a_service_removes_it() {
    let mut index = greeter();
    assert!(index.apply(Event::Delete(service("default", "greeter"))));
    assert!(
        !index
            .build()
            .expect("builds")
            .config
            .contains(&name("greeter.default"))
    );
    assert!(!index.apply(Event::Delete(service("default", "greeter"))));
}

#[test]
fn a_relist_replaces_the_kind_as_a_whole() {
    let mut index = greeter();
    index.apply(Event::Apply(service("default", "other")));
    // The watch was down while `other` was deleted; the relist does not list it.
    assert!(!index.apply(Event::<Service>::Init));
    assert!(!index.apply(Event::InitApply(service("default", "greeter"))));
    assert!(
        index
            .build()
            .expect("builds")
            .config
            .contains(&name("other.default"))
    );
    assert!(index.apply(Event::<Service>::InitDone));
    let config = index.build().expect("builds").config;
    assert!(!config.contains(&name("other.default")));
    assert!(config.contains(&name("greeter.default")));
    // A relist that finds exactly what was there changes nothing.
    index.apply(Event::<Service>::Init);
    index.apply(Event::InitApply(service("default", "greeter")));
    assert!(!index.apply(Event::<Service>::InitDone));
}

#[test]
fn an_unchanged_object_is_not_a_change() {
    let mut index = greeter();
    assert!(!index.apply(Event::Apply(service("default", "greeter"))));
    // A label the mesh ignores does not churn a version either.
    let mut p = pod("default", "g-1", "greeter");
    p.metadata
        .labels
        .get_or_insert_default()
        .insert("pod-template-hash".into(), "zzz".into());
    assert!(!index.apply(Event::Apply(p)));
}

#[test]
fn producer_routes_attach_with_weights_and_follow_changes() {
    let mut index = greeter();
    index.apply(Event::Apply(service("default", "greeter-v2")));
    index.apply(Event::Apply(http_route(
        "default",
        "canary",
        svc_parent("greeter"),
        &[("greeter", 90), ("greeter-v2", 10)],
    )));
    let built = index.build().expect("builds");
    let dest = built.config.destination(&name("greeter.default"));
    assert_eq!(dest.routes.len(), 1, "{:?}", built.refused);
    let weights: Vec<u32> = dest.routes[0].rules[0]
        .backend_refs
        .iter()
        .map(|b| b.weight)
        .collect();
    assert_eq!(weights, [90, 10]);
    let status = &built.routes[0];
    assert_eq!(status.generation, Some(3));
    assert_eq!(status.parents[0].accepted, Ok(()));
    assert_eq!(status.parents[0].resolved_refs, Ok(()));

    // Weights change.
    index.apply(Event::Apply(http_route(
        "default",
        "canary",
        svc_parent("greeter"),
        &[("greeter", 50), ("greeter-v2", 50)],
    )));
    let dest = destination(&index, "greeter.default");
    let weights: Vec<u32> = dest.routes[0].rules[0]
        .backend_refs
        .iter()
        .map(|b| b.weight)
        .collect();
    assert_eq!(weights, [50, 50]);

    // Detach: the route now targets a Gateway, not the Service.
    index.apply(Event::Apply(http_route(
        "default",
        "canary",
        json!({"name": "edge"}),
        &[("greeter", 1)],
    )));
    assert!(destination(&index, "greeter.default").routes.is_empty());
    assert!(index.build().expect("builds").routes.is_empty());
}

#[test]
fn the_same_route_as_the_file_source() {
    let mut index = synced();
    index.apply(Event::Apply(service("default", "greeter")));
    index.apply(Event::Apply(service("default", "greeter-v2")));
    index.apply(Event::Apply(http_route(
        "default",
        "canary",
        svc_parent("greeter"),
        &[("greeter", 90), ("greeter-v2", 10)],
    )));
    let file = crate::source::file::parse(
        "\
services:
  - name: greeter
    port: 80
    routes:
      - name: canary
        kind: http
        creationTimestamp: 2024-05-01T10:00:00Z
        rules:
          - matches:
              - path: {type: PathPrefix, value: /api}
                headers: [{type: Exact, name: x-canary, value: '1'}]
            backendRefs:
              - {name: greeter, namespace: default, port: 80, weight: 90}
              - {name: greeter-v2, namespace: default, port: 80, weight: 10}
            timeouts: {request: 5s}
  - name: greeter-v2
    port: 80
",
        &td(),
    )
    .expect("valid");
    assert_eq!(index.build().expect("builds").config, file.mesh);
}

#[test]
fn parent_refs_follow_gamma() {
    let mut index = greeter();
    let cases = [
        (
            json!({"kind": "Service", "name": "greeter"}),
            false,
            "group defaults to Gateway API's",
        ),
        (
            json!({"group": "core", "kind": "Service", "name": "greeter"}),
            true,
            "core",
        ),
        (
            json!({"group": "", "kind": "Service", "name": "greeter", "port": 80}),
            true,
            "mesh port",
        ),
        (
            json!({"group": "", "kind": "Service", "name": "greeter", "port": 81}),
            false,
            "other port",
        ),
        (
            json!({"group": "", "kind": "Service", "name": "nope"}),
            false,
            "unknown service",
        ),
    ];
    for (parent, attached, why) in cases {
        index.apply(Event::Apply(http_route(
            "default",
            "r",
            parent,
            &[("greeter", 1)],
        )));
        assert_eq!(
            destination(&index, "greeter.default").routes.len(),
            usize::from(attached),
            "{why}"
        );
    }
}

#[test]
fn consumer_routes_apply_to_their_namespace_only() {
    let mut index = greeter();
    index.apply(Event::Apply(http_route(
        "shop",
        "mine",
        json!({"group": "", "kind": "Service", "name": "greeter", "namespace": "default"}),
        &[("greeter", 1)],
    )));
    let built = index.build().expect("builds");
    let key = name("greeter.default").into();
    let producer_view = built.config.destination_for(&key, Some("default"));
    assert!(producer_view.routes.is_empty(), "not for the producer");
    let shop_view = built.config.destination_for(&key, Some("shop"));
    assert_eq!(shop_view.routes[0].name, "mine");
    // The backend reference defaults to the route's namespace: there is no greeter in shop.
    let backend = &shop_view.backends[0];
    assert_eq!(
        (backend.service.to_string(), backend.found),
        ("greeter.shop".to_owned(), false)
    );
    assert_eq!(built.routes[0].parents[0].accepted, Ok(()));
}

#[test]
fn an_invalid_route_is_left_out_alone_with_its_field() {
    let mut index = greeter();
    let mut bad = http_route("default", "bad", svc_parent("greeter"), &[("greeter", 1)]);
    if let Some(rules) = &mut bad.spec.rules {
        rules[0].timeouts = Some(gateway_api::httproutes::HttpRouteRulesTimeouts {
            request: Some("1s".into()),
            backend_request: Some("2s".into()),
        });
    }
    index.apply(Event::Apply(bad));
    index.apply(Event::Apply(http_route(
        "default",
        "good",
        svc_parent("greeter"),
        &[("greeter", 1)],
    )));
    let built = index.build().expect("builds");
    let routes: Vec<String> = built
        .config
        .destination(&name("greeter.default"))
        .routes
        .iter()
        .map(|r| r.name.clone())
        .collect();
    assert_eq!(routes, ["good"]);
    let bad = built
        .routes
        .iter()
        .find(|r| r.route.name == "bad")
        .expect("status");
    let refusal = bad.parents[0].accepted.clone().expect_err("refused");
    assert!(
        refusal.message.contains("spec.rules[0].timeouts"),
        "{}",
        refusal.message
    );
    // The endpoints still flow.
    assert_eq!(
        built
            .config
            .destination(&name("greeter.default"))
            .endpoints
            .len(),
        2
    );
}

#[test]
fn unsupported_filters_and_backend_kinds_are_refused() {
    let mut index = greeter();
    let route: HttpRoute = obj(json!({
        "metadata": {"name": "redirect", "namespace": "default"},
        "spec": {"parentRefs": [svc_parent("greeter")],
                 "rules": [{"filters": [{"type": "RequestRedirect",
                                         "requestRedirect": {"statusCode": 301}}]}]}
    }));
    index.apply(Event::Apply(route));
    let route: HttpRoute = obj(json!({
        "metadata": {"name": "bucket", "namespace": "default"},
        "spec": {"parentRefs": [svc_parent("greeter")],
                 "rules": [{"backendRefs": [{"group": "storage.example", "kind": "Bucket",
                                             "name": "b"}]}]}
    }));
    index.apply(Event::Apply(route));
    let built = index.build().expect("builds");
    assert!(
        built
            .config
            .destination(&name("greeter.default"))
            .routes
            .is_empty()
    );
    let reasons: Vec<&str> = built
        .routes
        .iter()
        .map(|r| r.parents[0].accepted.as_ref().expect_err("refused").reason)
        .collect();
    assert_eq!(reasons, ["InvalidKind", "UnsupportedValue"]);
}

#[test]
fn unresolved_backends_are_reported() {
    let mut index = greeter();
    index.apply(Event::Apply(http_route(
        "default",
        "r",
        svc_parent("greeter"),
        &[("greeter", 1), ("missing", 1)],
    )));
    let built = index.build().expect("builds");
    let parent = &built.routes[0].parents[0];
    assert_eq!(parent.accepted, Ok(()));
    assert_eq!(
        parent.resolved_refs.as_ref().expect_err("missing").reason,
        "BackendNotFound"
    );
    let dest = built.config.destination(&name("greeter.default"));
    assert!(
        dest.backends
            .iter()
            .any(|b| b.service.name == "missing" && !b.found)
    );
}

/// An HTTPRoute on greeter whose one rule names the FaultInjection `fault`.
fn faulted_route() -> HttpRoute {
    obj(json!({
        "metadata": {"name": "chaos", "namespace": "default"},
        "spec": {"parentRefs": [svc_parent("greeter")],
                 "rules": [{"filters": [{"type": "ExtensionRef",
                                         "extensionRef": {"group": "policy.mesh.dev",
                                                          "kind": "FaultInjection",
                                                          "name": "fault"}}],
                            "backendRefs": [{"name": "greeter", "port": 80}]}]}
    }))
}

#[test]
fn an_extension_ref_to_a_fault_injection_is_inlined_and_a_missing_one_answers_500() {
    use mesh_core::snapshot::RouteFilter;
    let mut index = greeter();
    index.apply(Event::Apply(faulted_route()));

    // Missing: the rule stays, without backends (it answers 500), and status says why.
    let built = index.build().expect("builds");
    let parent = &built.routes[0].parents[0];
    assert_eq!(parent.accepted, Ok(()));
    let refusal = parent.resolved_refs.as_ref().expect_err("missing");
    assert_eq!(refusal.reason, "FilterNotFound");
    assert!(refusal.message.contains("default/fault"), "{refusal:?}");
    let dest = built.config.destination(&name("greeter.default"));
    assert!(dest.routes[0].rules[0].backend_refs.is_empty());
    assert!(dest.routes[0].rules[0].filters.is_empty());

    // Created: inlined, and the backends are back.
    let fault: FaultInjection = obj(json!({
        "apiVersion": "policy.mesh.dev/v1alpha1", "kind": "FaultInjection",
        "metadata": {"name": "fault", "namespace": "default"},
        "spec": {"abort": {"httpStatus": 503, "percent": 12.5}}
    }));
    assert!(index.apply(Event::Apply(fault)));
    let built = index.build().expect("builds");
    assert_eq!(built.routes[0].parents[0].resolved_refs, Ok(()));
    let rule = &built.config.destination(&name("greeter.default")).routes[0].rules[0];
    assert_eq!(rule.backend_refs.len(), 1);
    let [RouteFilter::FaultInjection(f)] = rule.filters.as_slice() else {
        panic!("{:?}", rule.filters);
    };
    assert_eq!(f.to_string(), "abort HTTP 503 for 12.5%");

    // One the route's kind cannot carry (a gRPC status on an HTTPRoute) is refused.
    let grpc_fault: FaultInjection = obj(json!({
        "apiVersion": "policy.mesh.dev/v1alpha1", "kind": "FaultInjection",
        "metadata": {"name": "fault", "namespace": "default"},
        "spec": {"abort": {"grpcStatus": "UNAVAILABLE"}}
    }));
    index.apply(Event::Apply(grpc_fault));
    let built = index.build().expect("builds");
    let refusal = built.routes[0].parents[0]
        .accepted
        .as_ref()
        .expect_err("refused");
    assert!(refusal.message.contains("grpcStatus"), "{refusal:?}");

    // An ExtensionRef to a kind the mesh does not know is refused, not skipped.
    let other: HttpRoute = obj(json!({
        "metadata": {"name": "other", "namespace": "default"},
        "spec": {"parentRefs": [svc_parent("greeter")],
                 "rules": [{"filters": [{"type": "ExtensionRef",
                                         "extensionRef": {"group": "example.com",
                                                          "kind": "Thing", "name": "x"}}]}]}
    }));
    index.apply(Event::Apply(other));
    let built = index.build().expect("builds");
    let other = built
        .routes
        .iter()
        .find(|r| r.route.name == "other")
        .expect("status");
    let refusal = other.parents[0].accepted.as_ref().expect_err("refused");
    assert_eq!(refusal.reason, "UnsupportedValue");
}

#[test]
fn grpc_routes_attach_with_method_matches() {
    let mut index = greeter();
    let route: GrpcRoute = obj(json!({
        "metadata": {"name": "hello", "namespace": "default"},
        "spec": {"parentRefs": [svc_parent("greeter")],
                 "rules": [{"matches": [{"method": {"type": "Exact",
                                                    "service": "helloworld.Greeter",
                                                    "method": "SayHello"}}],
                            "backendRefs": [{"name": "greeter", "port": 80}]}]}
    }));
    index.apply(Event::Apply(route));
    let dest = destination(&index, "greeter.default");
    assert_eq!(dest.routes.len(), 1);
    assert_eq!(dest.routes[0].name, "hello");
}

fn policy(ns: &str, name: &str, spec: Value) -> AuthorizationPolicy {
    obj(json!({
        "apiVersion": "policy.mesh.dev/v1alpha1", "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec
    }))
}

#[test]
fn policies_attach_to_their_service_and_bad_ones_are_left_out() {
    let mut index = greeter();
    index.apply(Event::Apply(policy(
        "default",
        "shop-may-greet",
        json!({"target": {"service": "greeter"}, "action": "ALLOW",
               "rules": [{"from": {"namespaces": ["shop"]},
                          "to": {"grpc": [{"service": "helloworld.Greeter"}]}}]}),
    )));
    index.apply(Event::Apply(policy(
        "default",
        "foreign",
        json!({"target": {"service": "greeter"}, "action": "DENY",
               "rules": [{"from": {"identities": ["spiffe://other.domain/ns/x/sa/y"]}}]}),
    )));
    index.apply(Event::Apply(policy(
        "default",
        "nowhere",
        json!({"target": {"service": "missing"}, "action": "DENY",
               "rules": [{"from": {"namespaces": ["x"]}}]}),
    )));
    let built = index.build().expect("builds");
    let inbound = built.config.inbound(&name("greeter.default"));
    let names: Vec<&str> = inbound.policies.iter().map(|p| &*p.name).collect();
    assert_eq!(names, ["shop-may-greet"]);
    assert!(
        built
            .refused
            .iter()
            .any(|r| r.contains("foreign") && r.contains("spec.rules[0]"))
    );
    assert!(built.refused.iter().any(|r| r.contains("nowhere")));
}

#[test]
fn service_annotations_set_inbound_settings_and_bad_ones_fail_closed() {
    let mut index = greeter();
    let mut svc = service("default", "greeter");
    svc.metadata.annotations = Some(
        [
            (
                DEFAULT_POLICY_ANNOTATION.to_owned(),
                "all-authenticated".to_owned(),
            ),
            (
                EXEMPT_PATHS_ANNOTATION.to_owned(),
                "/healthz, /ready".to_owned(),
            ),
        ]
        .into(),
    );
    index.apply(Event::Apply(svc.clone()));
    let inbound = index
        .build()
        .expect("builds")
        .config
        .inbound(&name("greeter.default"));
    assert_eq!(inbound.default_policy, DefaultPolicy::AllAuthenticated);
    assert_eq!(inbound.exempt_paths.len(), 2);

    svc.metadata.annotations = Some(
        [(
            DEFAULT_POLICY_ANNOTATION.to_owned(),
            "allow-everyone".to_owned(),
        )]
        .into(),
    );
    index.apply(Event::Apply(svc));
    let built = index.build().expect("builds");
    assert_eq!(
        built
            .config
            .inbound(&name("greeter.default"))
            .default_policy,
        DefaultPolicy::Deny
    );
    assert!(built.refused.iter().any(|r| r.contains("annotations")));
}

#[test]
fn the_example_manifests_index_into_a_valid_config() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/examples/greeter.yaml"
    ))
    .expect("the example is checked in");
    let mut index = synced();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = Value::deserialize(document).expect("YAML");
        match value["kind"].as_str().unwrap_or_default() {
            "Service" => index.apply(Event::Apply(obj::<Service>(value))),
            "HTTPRoute" => index.apply(Event::Apply(obj::<HttpRoute>(value))),
            "AuthorizationPolicy" => index.apply(Event::Apply(obj::<AuthorizationPolicy>(value))),
            "LocalRateLimitPolicy" => index.apply(Event::Apply(obj::<LocalRateLimitPolicy>(value))),
            _ => false,
        };
    }
    let built = index.build().expect("builds");
    assert!(built.refused.is_empty(), "{:?}", built.refused);
    let dest = built.config.destination(&name("greeter.default"));
    assert_eq!(dest.routes.len(), 1);
    assert_eq!(
        dest.routes[0].rules[0]
            .hedging
            .as_ref()
            .map(|h| h.max_attempts),
        Some(2),
        "the route's hedging annotation"
    );
    let inbound = built.config.inbound(&name("greeter.default"));
    assert_eq!(inbound.policies.len(), 1);
    assert_eq!(inbound.default_policy, DefaultPolicy::AllAuthenticated);
    assert_eq!(inbound.rate_limits.len(), 1);
    assert_eq!(&*inbound.rate_limits[0].name, "greeter-limits");
}

fn rate_limit(ns: &str, name: &str, spec: Value) -> LocalRateLimitPolicy {
    obj(json!({
        "apiVersion": "policy.mesh.dev/v1alpha1", "kind": "LocalRateLimitPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec
    }))
}

#[test]
fn rate_limits_attach_to_their_service_and_bad_ones_are_left_out() {
    let mut index = greeter();
    index.apply(Event::Apply(rate_limit(
        "default",
        "good",
        json!({"target": {"service": "greeter"}, "identity": {"requestsPerSecond": 5}}),
    )));
    index.apply(Event::Apply(rate_limit(
        "default",
        "bad-identity",
        json!({"target": {"service": "greeter"},
               "overrides": [{"requestsPerSecond": 5,
                              "clients": {"identities": ["spiffe://elsewhere/ns/a/sa/b"]}}]}),
    )));
    index.apply(Event::Apply(rate_limit(
        "default",
        "no-route",
        json!({"target": {"service": "greeter", "route": "nope"},
               "total": {"requestsPerSecond": 5}}),
    )));
    index.apply(Event::Apply(rate_limit(
        "shop",
        "elsewhere",
        json!({"target": {"service": "greeter"}, "total": {"requestsPerSecond": 5}}),
    )));
    let built = index.build().expect("builds");
    let inbound = built.config.inbound(&name("greeter.default"));
    let names: Vec<&str> = inbound.rate_limits.iter().map(|l| &*l.name).collect();
    assert_eq!(names, ["good"]);
    let mut refused = built.refused.clone();
    refused.sort();
    assert_eq!(
        refused,
        [
            r#"LocalRateLimitPolicy default/bad-identity: spec.overrides[0].clients.identities[0]: identity "spiffe://elsewhere/ns/a/sa/b" is not in trust domain "mesh.local""#,
            r#"LocalRateLimitPolicy default/no-route: spec.target.route: service "greeter.default" has no route "nope""#,
            "LocalRateLimitPolicy shop/elsewhere: spec.target.service: Service shop/greeter not found",
        ]
    );
}

#[test]
fn matches_filters_and_mirrors_carry_over() {
    let mut index = greeter();
    index.apply(Event::Apply(service("default", "shadow")));
    let route = |fraction: Value| -> HttpRoute {
        obj(json!({
            "metadata": {"name": "full", "namespace": "default"},
            "spec": {"parentRefs": [svc_parent("greeter")],
                     "rules": [{
                         "name": "reads",
                         "matches": [{"method": "GET",
                                      "queryParams": [{"type": "Exact", "name": "v", "value": "2"}]}],
                         "filters": [
                             {"type": "RequestHeaderModifier",
                              "requestHeaderModifier": {"set": [{"name": "x-mesh", "value": "1"}],
                                                        "remove": ["x-debug"]}},
                             {"type": "RequestMirror",
                              "requestMirror": {"backendRef": {"name": "shadow", "port": 80},
                                                "fraction": fraction}}
                         ],
                         "backendRefs": [{"name": "greeter", "port": 80}]}]}
        }))
    };
    index.apply(Event::Apply(route(
        json!({"numerator": 1, "denominator": 2}),
    )));
    let built = index.build().expect("builds");
    assert!(built.refused.is_empty(), "{:?}", built.refused);
    let dest = built.config.destination(&name("greeter.default"));
    let rule = &dest.routes[0].rules[0];
    assert_eq!(rule.name, "reads");
    assert_eq!(rule.filters.len(), 2);
    assert!(
        dest.backends
            .iter()
            .any(|b| b.service.name == "shadow" && b.found)
    );

    // A fraction that is no whole percentage is refused rather than rounded.
    index.apply(Event::Apply(route(
        json!({"numerator": 1, "denominator": 3}),
    )));
    let built = index.build().expect("builds");
    assert!(
        built
            .config
            .destination(&name("greeter.default"))
            .routes
            .is_empty()
    );
    assert!(
        built.refused.iter().any(|r| r.contains("whole percentage")),
        "{:?}",
        built.refused
    );
}

#[test]
fn ipv6_endpoints_and_named_ports() {
    let mut index = synced();
    index.apply(Event::Apply(obj::<Service>(json!({
        "metadata": {"name": "greeter", "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80}, {"name": "grpc", "port": 81}]}
    }))));
    index.apply(Event::Apply(pod("default", "g-1", "greeter")));
    index.apply(Event::Apply(obj::<EndpointSlice>(json!({
        "metadata": {"name": "s", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "greeter"}},
        "addressType": "IPv6",
        "ports": [{"name": "grpc", "port": 9000}, {"name": "http", "port": 8080}],
        "endpoints": [{"addresses": ["fd00::1"], "targetRef": {"kind": "Pod", "name": "g-1"}}]
    }))));
    // The mesh port is the Service's first (`http`): its target port comes from the slice.
    assert_eq!(
        addresses(&index, "greeter.default"),
        ["[fd00::1]:8080 spiffe://mesh.local/ns/default/sa/greeter"]
    );
}

#[test]
fn pods_get_the_zone_of_their_node_and_endpoints_carry_their_hints() {
    let mut index = greeter();
    // g-1 on node-a (zone-a); a client-only pod on the same node; one on a node no endpoint
    // reveals the zone of.
    let on = |name: &str, node: &str| -> Pod {
        obj(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"serviceAccountName": "greeter", "nodeName": node, "containers": []}
        }))
    };
    index.apply(Event::Apply(on("g-1", "node-a")));
    index.apply(Event::Apply(on("client-1", "node-a")));
    index.apply(Event::Apply(on("client-2", "node-x")));
    let slice: EndpointSlice = obj(json!({
        "metadata": {"name": "greeter-abc", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "greeter"}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": 50051, "protocol": "TCP"}],
        "endpoints": [{
            "addresses": ["10.0.0.1"],
            "targetRef": {"kind": "Pod", "name": "g-1", "namespace": "default"},
            "nodeName": "node-a",
            "zone": "zone-a",
            "hints": {"forZones": [{"name": "zone-a"}, {"name": "zone-b"}]}
        }]
    }));
    index.apply(Event::Apply(slice));
    let config = index.build().expect("builds").config;
    assert_eq!(config.zone_of("default", "g-1"), "zone-a");
    assert_eq!(config.zone_of("default", "client-1"), "zone-a");
    assert_eq!(config.zone_of("default", "client-2"), "");
    assert_eq!(config.zone_of("other", "client-1"), "");
    let endpoint = &destination(&index, "greeter.default").endpoints[0];
    assert_eq!(endpoint.for_zones, ["zone-a", "zone-b"]);
}

fn authn(ns: &str, name: &str, spec: Value) -> RequestAuthentication {
    obj(json!({
        "apiVersion": "policy.mesh.dev/v1alpha1", "kind": "RequestAuthentication",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec
    }))
}

#[test]
fn request_authentications_give_their_service_issuers_and_bad_ones_are_left_out() {
    let mut index = greeter();
    let rule = |iss: &str| json!({"issuer": iss, "jwksUri": format!("{iss}/jwks.json")});
    index.apply(Event::Apply(authn(
        "default",
        "a-users",
        json!({"target": {"service": "greeter"}, "jwtRules": [rule("https://a.test")]}),
    )));
    // The same issuer again for the same Service: refused, naming the field.
    index.apply(Event::Apply(authn(
        "default",
        "b-again",
        json!({"target": {"service": "greeter"}, "jwtRules": [rule("https://a.test")]}),
    )));
    // A Service that does not exist.
    index.apply(Event::Apply(authn(
        "default",
        "c-ghost",
        json!({"target": {"service": "ghost"}, "jwtRules": [rule("https://c.test")]}),
    )));
    // A URI the mesh cannot fetch.
    index.apply(Event::Apply(authn(
        "default",
        "d-ftp",
        json!({"target": {"service": "greeter"},
               "jwtRules": [{"issuer": "https://d.test", "jwksUri": "ftp://d.test/keys"}]}),
    )));
    // A policy rule on the principal, through the AuthorizationPolicy CRD.
    index.apply(Event::Apply(policy(
        "default",
        "admins",
        json!({"target": {"service": "greeter"}, "action": "ALLOW",
               "rules": [{"from": {"identities": ["*"]},
                          "principal": {"requestPrincipals": ["https://a.test/*"],
                                        "claims": [{"name": "groups", "values": ["admin"]}]}}]}),
    )));

    let built = index.build().expect("builds");
    let inbound = built.config.inbound(&name("greeter.default"));
    let issuers: Vec<&str> = inbound.jwt_rules.iter().map(|r| &*r.issuer).collect();
    assert_eq!(issuers, ["https://a.test"]);
    assert_eq!(
        built.config.jwks_uris().collect::<Vec<_>>(),
        ["https://a.test/jwks.json"]
    );
    let principal = inbound.policies[0].rules[0]
        .principal
        .as_ref()
        .expect("kept");
    assert_eq!(principal.claims[0].values, ["admin"]);
    let refused = built.refused.join("\n");
    for (object, why) in [
        ("b-again", "spec.jwtRules[0].issuer"),
        ("c-ghost", "Service default/ghost not found"),
        ("d-ftp", "spec.jwtRules[0].jwksUri"),
    ] {
        assert!(
            refused
                .lines()
                .any(|l| l.contains(object) && l.contains(why)),
            "{object}: {why}: {refused}"
        );
    }
}

#[test]
fn a_hedging_annotation_hedges_every_rule_and_a_bad_one_refuses_the_route() {
    use mesh_core::snapshot::{HedgeDelay, HedgingPolicy};

    let mut index = greeter();
    let annotated = |name: &str, value: &str| {
        let mut route = http_route("default", name, svc_parent("greeter"), &[("greeter", 1)]);
        route.metadata.annotations = Some(
            [("mesh.dev/hedging".to_owned(), value.to_owned())]
                .into_iter()
                .collect(),
        );
        route
    };
    index.apply(Event::Apply(annotated(
        "hedged",
        "{maxAttempts: 3, delay: 20ms, nonFatalCodes: [503]}",
    )));
    index.apply(Event::Apply(annotated("too-many", "{maxAttempts: 9}")));
    index.apply(Event::Apply(annotated("unparsable", "{maxAttempts: [")));
    let built = index.build().expect("builds");
    let dest = built.config.destination(&name("greeter.default"));
    let routes: Vec<&str> = dest.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(routes, ["hedged"], "{:?}", built.refused);
    assert_eq!(
        dest.routes[0].rules[0].hedging,
        Some(HedgingPolicy {
            max_attempts: 3,
            delay: HedgeDelay::Fixed(std::time::Duration::from_millis(20)),
            non_fatal_codes: vec![http::StatusCode::SERVICE_UNAVAILABLE],
            non_fatal_grpc_codes: Vec::new(),
        })
    );
    let refusal = |route: &str| {
        built
            .routes
            .iter()
            .find(|r| r.route.name == route)
            .expect("status")
            .parents[0]
            .accepted
            .clone()
            .expect_err("refused")
            .message
    };
    let too_many = refusal("too-many");
    assert!(
        too_many.contains("spec.rules[0].hedging.maxAttempts: 9 is out of range 2 to 5"),
        "{too_many}"
    );
    let unparsable = refusal("unparsable");
    assert!(
        unparsable.starts_with("metadata.annotations[mesh.dev/hedging]: "),
        "{unparsable}"
    );
}

// === the scope of one event ===

/// `services` Services `svc-<i>` of `per` endpoints each (one slice, `per` pods running as
/// `sa-<i>`), over namespaces of 10 Services.
fn cluster(services: usize, per: usize) -> ClusterIndex {
    let mut index = synced();
    for s in 0..services {
        let ns = format!("ns-{}", s / 10);
        index.apply(Event::Apply(service(&ns, &format!("svc-{s}"))));
        let mut endpoints = Vec::new();
        for e in 0..per {
            let pod_name = format!("svc-{s}-{e}");
            index.apply(Event::Apply(pod(&ns, &pod_name, &format!("sa-{s}"))));
            endpoints.push((format!("10.{}.{}.{e}", s / 250, s % 250), pod_name));
        }
        let endpoints: Vec<(&str, &str, bool, bool)> = endpoints
            .iter()
            .map(|(ip, pod)| (ip.as_str(), pod.as_str(), true, true))
            .collect();
        index.apply(Event::Apply(slice(
            &ns,
            &format!("svc-{s}-a"),
            &format!("svc-{s}"),
            &endpoints,
        )));
    }
    index
}

/// Moves one endpoint of `svc-3` in `ns-0` (its slice `svc-3-a`) to a new address.
fn move_one_endpoint(index: &mut ClusterIndex) {
    index.apply(Event::Apply(slice(
        "ns-0",
        "svc-3-a",
        "svc-3",
        &[("10.99.0.1", "svc-3-0", true, true)],
    )));
}

/// How many Service specs building after `change` made.
fn specs_built_by(index: &mut ClusterIndex, change: impl FnOnce(&mut ClusterIndex)) -> u64 {
    index.build().expect("builds");
    let before = index.specs_built();
    change(index);
    index.build().expect("builds");
    index.specs_built() - before
}

#[test]
fn one_event_rebuilds_only_the_services_it_touches_whatever_the_cluster_size() {
    for services in [10, 300] {
        let mut index = cluster(services, 5);
        assert_eq!(
            specs_built_by(&mut index, |_| {}),
            0,
            "{services} services: nothing changed, nothing rebuilt"
        );
        // One endpoint of one slice moves.
        let built = specs_built_by(&mut index, |index| {
            move_one_endpoint(index);
        });
        assert_eq!(built, 1, "{services} services: a slice change");
        assert_eq!(
            addresses(&index, "svc-3.ns-0"),
            ["10.99.0.1:50051 spiffe://mesh.local/ns/ns-0/sa/sa-3"]
        );
        // A pod changes its service account: its Service only.
        let built = specs_built_by(&mut index, |index| {
            index.apply(Event::Apply(pod("ns-0", "svc-5-1", "other")));
        });
        assert_eq!(built, 1, "{services} services: a pod change");
        // A Service goes away: nothing to build, and it is gone.
        let built = specs_built_by(&mut index, |index| {
            index.apply(Event::Delete(service("ns-0", "svc-7")));
        });
        assert_eq!(built, 0, "{services} services: a deletion");
        let config = index.build().expect("builds").config;
        assert!(config.services().all(|s| s.to_string() != "svc-7.ns-0"));
        assert_eq!(config.services().count(), services - 1);
    }
}

#[test]
fn a_relist_rebuilds_every_spec_and_the_result_matches_a_fresh_index() {
    let mut index = cluster(20, 3);
    index.build().expect("builds");
    // Changes one at a time, then a relist of the slices that drops one.
    index.apply(Event::Apply(pod("ns-1", "svc-12-0", "moved")));
    index.apply(Event::Delete(slice("ns-0", "svc-2-a", "svc-2", &[])));
    index.apply(Event::Apply(slice(
        "ns-0",
        "svc-4-b",
        "svc-4",
        &[("10.98.0.1", "svc-4-0", true, true)],
    )));
    let incremental = index.build().expect("builds").config;
    let before = index.specs_built();
    index.apply(Event::<EndpointSlice>::Init);
    index.apply(Event::<EndpointSlice>::InitDone);
    let relisted = index.build().expect("builds").config;
    assert_eq!(
        index.specs_built() - before,
        20,
        "every spec after a relist"
    );

    let mut fresh = cluster(20, 3);
    fresh.apply(Event::Apply(pod("ns-1", "svc-12-0", "moved")));
    fresh.apply(Event::Delete(slice("ns-0", "svc-2-a", "svc-2", &[])));
    fresh.apply(Event::Apply(slice(
        "ns-0",
        "svc-4-b",
        "svc-4",
        &[("10.98.0.1", "svc-4-0", true, true)],
    )));
    assert_eq!(incremental, fresh.build().expect("builds").config);
    // The relist listed no slices: every Service is left without endpoints.
    assert!(
        relisted
            .services()
            .all(|s| relisted.destination(s).endpoints.is_empty())
    );
}

/// The validations building after `change` made: (whole configs, Services validated alone).
fn validations_by(index: &mut ClusterIndex, change: impl FnOnce(&mut ClusterIndex)) -> (u64, u64) {
    index.build().expect("builds");
    let (whole, alone) = index.validations();
    change(index);
    let built = index.build().expect("builds");
    let (whole_after, alone_after) = index.validations();
    // Whatever the path, the config is the one a whole build gives.
    let fresh = index.build_whole_for_test().expect("builds");
    assert_eq!(built, fresh);
    (whole_after - whole, alone_after - alone)
}

#[test]
fn a_replicas_event_validates_only_its_services_and_equals_a_whole_build() {
    for services in [10, 300] {
        let mut index = cluster(services, 5);
        // svc-1 routes to svc-3 (both in ns-0): svc-3's endpoints are in svc-1's backends.
        index.apply(Event::Apply(http_route(
            "ns-0",
            "split",
            svc_parent("svc-1"),
            &[("svc-3", 1)],
        )));
        assert_eq!(
            validations_by(&mut index, |_| {}),
            (0, 0),
            "{services} services: nothing changed"
        );
        let moved = validations_by(&mut index, |index| {
            move_one_endpoint(index);
        });
        assert_eq!(moved, (0, 1), "{services} services: a slice change");
        let config = index.build().expect("builds").config;
        let front = config.destination(&name("svc-1.ns-0"));
        assert_eq!(
            front.backends[0].endpoints.len(),
            1,
            "svc-1 sees svc-3's one endpoint"
        );
        assert_eq!(
            validations_by(&mut index, |index| {
                index.apply(Event::Apply(pod("ns-0", "svc-5-1", "other")));
            }),
            (0, 1),
            "{services} services: a pod change"
        );
        // A pod whose service account makes no identity: left out and reported, as a whole
        // build reports it (`validations_by` compares the refusals too).
        assert_eq!(
            validations_by(&mut index, |index| {
                index.apply(Event::Apply(pod("ns-0", "svc-5-2", "Not_A_Label")));
            }),
            (0, 1),
            "{services} services: a pod refused"
        );
        let built = index.build().expect("builds");
        assert!(
            built
                .refused
                .iter()
                .any(|r| r.starts_with("Pod ns-0/svc-5-2")),
            "{:?}",
            built.refused
        );
        // A slice of a Service the cluster does not have: nothing to validate.
        assert_eq!(
            validations_by(&mut index, |index| {
                index.apply(Event::Apply(slice(
                    "ns-0",
                    "ghost-a",
                    "ghost",
                    &[("10.97.0.1", "svc-5-1", true, true)],
                )));
            }),
            (0, 0),
            "{services} services: a slice of no Service"
        );
        // Anything but replicas: whole.
        assert_eq!(
            validations_by(&mut index, |index| {
                index.apply(Event::Delete(service("ns-0", "svc-7")));
            }),
            (1, 0),
            "{services} services: a Service deleted"
        );
        assert_eq!(
            validations_by(&mut index, |index| {
                index.apply(Event::Delete(http_route(
                    "ns-0",
                    "split",
                    svc_parent("svc-1"),
                    &[],
                )));
            }),
            (1, 0),
            "{services} services: a route deleted"
        );
    }
}

/// A pod `name` of `sa` on `node`.
fn pod_on(ns: &str, name: &str, sa: &str, node: &str) -> Pod {
    obj(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"serviceAccountName": sa, "nodeName": node, "containers": []}
    }))
}

/// A slice of `service` with `(ip, pod, node, zone)` endpoints.
fn slice_on(
    ns: &str,
    name: &str,
    service: &str,
    endpoints: &[(&str, &str, &str, &str)],
) -> EndpointSlice {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, pod, node, zone)| {
            json!({
                "addresses": [ip],
                "targetRef": {"kind": "Pod", "name": pod, "namespace": ns},
                "nodeName": node,
                "zone": zone
            })
        })
        .collect();
    slice_with(ns, name, service, endpoints)
}

#[test]
fn zones_follow_slices_and_pods_without_a_whole_build() {
    let mut index = synced();
    index.apply(Event::Apply(service("default", "a")));
    index.apply(Event::Apply(service("default", "b")));
    index.apply(Event::Apply(pod_on("default", "a-1", "a", "node-1")));
    index.apply(Event::Apply(pod_on("default", "b-1", "b", "node-1")));
    index.apply(Event::Apply(pod_on("default", "b-2", "b", "node-2")));
    index.apply(Event::Apply(slice_on(
        "default",
        "a-x",
        "a",
        &[("10.0.0.1", "a-1", "node-1", "zone-1")],
    )));
    index.apply(Event::Apply(slice_on(
        "default",
        "b-x",
        "b",
        &[
            ("10.0.1.1", "b-1", "node-1", "zone-1"),
            ("10.0.1.2", "b-2", "node-2", "zone-2"),
        ],
    )));
    let zone = |index: &ClusterIndex, pod: &str| {
        index
            .build()
            .expect("builds")
            .config
            .zone_of("default", pod)
            .to_owned()
    };
    assert_eq!(zone(&index, "b-1"), "zone-1");
    // node-1 moves to zone-9 as slice b-x tells (the last slice naming it wins): both pods
    // on it follow.
    let counts = validations_by(&mut index, |index| {
        index.apply(Event::Apply(slice_on(
            "default",
            "b-x",
            "b",
            &[
                ("10.0.1.1", "b-1", "node-1", "zone-9"),
                ("10.0.1.2", "b-2", "node-2", "zone-2"),
            ],
        )));
    });
    assert_eq!(counts, (0, 1));
    assert_eq!(zone(&index, "a-1"), "zone-9");
    assert_eq!(zone(&index, "b-1"), "zone-9");
    // A pod moves to node-2.
    let counts = validations_by(&mut index, |index| {
        index.apply(Event::Apply(pod_on("default", "a-1", "a", "node-2")));
    });
    assert_eq!(counts, (0, 1));
    assert_eq!(zone(&index, "a-1"), "zone-2");
    // A pod goes away, and with it its zone.
    let counts = validations_by(&mut index, |index| {
        index.apply(Event::Delete(pod_on("default", "b-1", "b", "node-1")));
    });
    assert_eq!(counts, (0, 1));
    assert_eq!(zone(&index, "b-1"), "");
    // The slice that named node-2 goes: nothing names it a zone any more.
    validations_by(&mut index, |index| {
        index.apply(Event::Delete(slice_on("default", "b-x", "b", &[])));
    });
    assert_eq!(zone(&index, "a-1"), "");
}
