//! Round trips between model and wire, and the wire's validation with paths.

use std::collections::BTreeMap;

use super::*;
use crate::spiffe::SpiffeId;

use crate::fixtures::name;

fn endpoint(address: &str, weight: u32) -> Endpoint {
    Endpoint {
        for_zones: vec!["zone-a".to_owned(), "zone-b".to_owned()],
        address: address.parse().unwrap(),
        weight,
        zone: "zone-a".to_owned(),
        labels: BTreeMap::from([("version".to_owned(), "v1".to_owned())]),
        identity: SpiffeId::parse("spiffe://cluster.local/ns/default/sa/greeter").unwrap(),
    }
}

fn snapshot() -> Snapshot {
    Snapshot {
        zone: "zone-c".to_owned(),
        inbound: None,
        trust_bundle: Vec::new(),
        version: 42,
        destinations: vec![
            Destination {
                service: name("greeter.default"),
                port: Some(7070),
                found: true,
                endpoints: vec![endpoint("10.0.0.1:80", 1), endpoint("[::1]:80", 7)],
                routes: vec![Route {
                    name: "split".to_owned(),
                    rules: vec![
                        RouteRule {
                            name: "canary".to_owned(),
                            backend_refs: vec![
                                BackendRef {
                                    service: name("greeter-v2.default"),
                                    port: Some(8080),
                                    weight: 0,
                                },
                                BackendRef {
                                    service: name("missing.other"),
                                    port: None,
                                    weight: 5,
                                },
                            ],
                            ..Default::default()
                        },
                        RouteRule::default(),
                    ],
                    ..Default::default()
                }],
                backends: vec![
                    Backend {
                        service: name("greeter-v2.default"),
                        port: Some(8080),
                        found: true,
                        endpoints: vec![endpoint("10.0.0.2:80", 1)],
                    },
                    Backend {
                        service: name("missing.other"),
                        port: None,
                        found: false,
                        endpoints: vec![],
                    },
                ],
            },
            Destination::not_found(name("nope.default").into()),
        ],
    }
}

#[test]
fn round_trip() {
    let model = snapshot();
    let wire = proto::Snapshot::from(&model);
    assert_eq!(wire.version, 42);
    assert_eq!(wire.destinations[0].endpoints[1].address, "[::1]:80");
    assert_eq!(wire.destinations[0].endpoints[1].weight, 7);
    assert_eq!(Snapshot::try_from(wire.clone()).unwrap(), model);

    // Through the encoded bytes too, as a client receives it.
    let bytes = prost::Message::encode_to_vec(&wire);
    let decoded: proto::Snapshot = prost::Message::decode(bytes.as_slice()).unwrap();
    assert_eq!(Snapshot::try_from(decoded).unwrap(), model);
}

#[test]
fn round_trip_from_validated_config() {
    let config: crate::config::MeshConfig = serde_yaml::from_str(
        r#"
services:
  - name: a
    endpoints: [{address: "127.0.0.1:1", identity: "spiffe://td/ns/default/sa/a"}]
    routes: [{name: r, rules: [{backendRefs: [{name: b}, {name: c, namespace: x}]}]}]
  - name: b
    endpoints: [{address: "127.0.0.1:2", weight: 9, identity: "spiffe://td/ns/default/sa/b"}]
"#,
    )
    .unwrap();
    let valid = config
        .validate(&crate::TrustDomain::new("td").unwrap())
        .unwrap();
    let model = Snapshot {
        zone: String::new(),
        inbound: None,
        trust_bundle: Vec::new(),
        version: 1,
        destinations: vec![
            valid.destination(&name("a.default")),
            valid.destination(&name("b.default")),
            valid.destination(&name("zzz.default")),
        ],
    };
    let wire = proto::Snapshot::from(&model);
    assert_eq!(Snapshot::try_from(wire).unwrap(), model);
}

#[test]
fn routes_round_trip_with_every_field() {
    let config: crate::config::MeshConfig = serde_yaml::from_str(crate::fixtures::ROUTES).unwrap();
    let valid = config
        .validate(&crate::TrustDomain::new("cluster.local").unwrap())
        .unwrap();
    let model = Snapshot {
        zone: String::new(),
        inbound: None,
        trust_bundle: Vec::new(),
        version: 7,
        destinations: vec![valid.destination(&name("greeter.default"))],
    };
    let wire = proto::Snapshot::from(&model);
    let rule = &wire.destinations[0].routes[0].rules[1];
    assert_eq!(rule.matches[0].path.as_ref().unwrap().r#type, "PathPrefix");
    assert_eq!(rule.timeouts.as_ref().unwrap().backend_request, "500ms");
    assert_eq!(
        wire.destinations[0].routes[1].rules[0]
            .retry
            .as_ref()
            .unwrap()
            .statuses,
        ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]
    );
    let bytes = prost::Message::encode_to_vec(&wire);
    let decoded: proto::Snapshot = prost::Message::decode(bytes.as_slice()).unwrap();
    assert_eq!(Snapshot::try_from(decoded).unwrap(), model);
}

#[test]
fn wire_routes_are_validated_with_the_config_rules() {
    let config: crate::config::MeshConfig = serde_yaml::from_str(crate::fixtures::ROUTES).unwrap();
    let valid = config
        .validate(&crate::TrustDomain::new("cluster.local").unwrap())
        .unwrap();
    let model = Snapshot {
        zone: String::new(),
        inbound: None,
        trust_bundle: Vec::new(),
        version: 7,
        destinations: vec![valid.destination(&name("greeter.default"))],
    };
    let mut wire = proto::Snapshot::from(&model);
    {
        let routes = &mut wire.destinations[0].routes;
        routes[0].kind = "udp".to_owned();
        let rule = &mut routes[0].rules[1];
        rule.matches[0].grpc_method = Some(proto::GrpcMethodMatch::default());
        rule.matches[2].path.as_mut().unwrap().value = "(".to_owned();
        rule.timeouts.as_mut().unwrap().request = "100ms".to_owned();
        rule.filters[2].request_mirror.as_mut().unwrap().backend_ref = None;
        rule.filters[0]
            .request_header_modifier
            .as_mut()
            .unwrap()
            .remove[0] = "bad name".to_owned();
        routes[1].rules[0].retry.as_mut().unwrap().statuses[0] = "UNAVALABLE".to_owned();
    }
    // The mirrored service is no longer listed either.
    wire.destinations[0].backends.pop();
    let errors = Snapshot::try_from(wire).unwrap_err();
    let got: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    let r = "destinations[0].routes[0]";
    let expected = [
        format!(r#"{r}.kind: unknown route kind "udp": expected "http" or "grpc""#),
        format!("{r}.rules[1].matches[0].grpcMethod: set together with method"),
        format!("{r}.rules[1].filters[2].requestMirror.backendRef: missing"),
        format!(r#"{r}.rules[1].matches[2].path.value: invalid regular expression "(": unclosed group"#),
        format!(r#"{r}.rules[1].filters[0].requestHeaderModifier.remove[0]: invalid header name "bad name": only letters, digits and !#$%&'*+-.^_`|~ are allowed"#),
        format!(r#"{r}.rules[1].filters[2].requestMirror.backendRef.name: invalid name "": empty name"#),
        format!("{r}.rules[1].timeouts.backendRequest: 500ms is longer than the request timeout 100ms"),
        r#"destinations[0].routes[1].rules[0].retry.statuses[0]: unknown or non-error gRPC status "UNAVALABLE""#.to_owned(),
    ];
    assert_eq!(got, expected);
}

#[test]
fn zero_endpoint_weight_on_the_wire_means_one() {
    let mut wire = proto::Snapshot::from(&snapshot());
    wire.destinations[0].endpoints[0].weight = 0;
    let model = Snapshot::try_from(wire).unwrap();
    assert_eq!(model.destinations[0].endpoints[0].weight, 1);
}

#[test]
fn the_wire_is_validated_with_paths() {
    let mut wire = proto::Snapshot::from(&snapshot());
    {
        let d = &mut wire.destinations[0];
        d.endpoints[1].address = "nowhere".to_owned();
        d.endpoints[1].weight = 1_000_001;
        d.endpoints[0].identity = "spiffe://cluster.local/ns//sa/x".to_owned();
        d.routes[0].rules[0].backend_refs[1].weight = 2_000_000;
        d.routes[0].rules[0].backend_refs[0].service = None;
        d.routes[0].rules[1].name = "Canary".to_owned();
        d.backends[0].service.as_mut().unwrap().name = "Greeter".to_owned();
        let copy = d.backends[0].endpoints[0].clone();
        d.backends[1].endpoints.push(copy.clone());
        d.backends[0].endpoints.push(copy);
    }
    wire.destinations[1].routes.push(proto::Route {
        name: "r".to_owned(),
        rules: vec![proto::RouteRule {
            backend_refs: vec![proto::BackendRef {
                service: Some((&name("elsewhere.default")).into()),
                weight: 1,
                port: 0,
            }],
            ..Default::default()
        }],
        ..Default::default()
    });
    wire.destinations.push(wire.destinations[1].clone());
    wire.destinations[2].routes.clear();

    let errors = Snapshot::try_from(wire).unwrap_err();
    let got: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    let expected = [
        r#"destinations[0].endpoints[0].identity: invalid SPIFFE ID "spiffe://cluster.local/ns//sa/x": path segments must not be empty"#,
        r#"destinations[0].endpoints[1].address: invalid socket address "nowhere""#,
        "destinations[0].endpoints[1].weight: weight 1000001 is out of range 1 to 1000000",
        "destinations[0].routes[0].rules[0].backendRefs[0].service: missing",
        "destinations[0].routes[0].rules[0].backendRefs[1].weight: weight 2000000 is out of range 0 to 1000000",
        r#"destinations[0].routes[0].rules[1].name: invalid rule name "Canary": only lowercase letters, digits, '-' and '.' are allowed"#,
        r#"destinations[0].backends[0].service.name: invalid name "Greeter": only lowercase letters, digits and '-' are allowed"#,
        r#"destinations[0].backends[0].endpoints[1].address: duplicate address "10.0.0.2:80" (first at destinations[0].backends[0].endpoints[0].address)"#,
        "destinations[0].backends[1].found: a backend that was not found must have no endpoints",
        "destinations[1].found: a destination that was not found must have no endpoints, routes or backends",
        r#"destinations[1].routes[0].rules[0].backendRefs[0].service: backend "elsewhere.default" is not listed in destinations[1].backends"#,
        r#"destinations[2].service: duplicate destination "nope.default" (first at destinations[1])"#,
    ];
    assert_eq!(got, expected);
}

#[test]
fn a_missing_destination_service_is_reported() {
    let wire = proto::Snapshot {
        base_version: 0,
        changes: Vec::new(),
        zone: String::new(),
        inbound: None,
        trust_bundle_der: Vec::new(),
        edge_report_interval_ms: 0,
        version: 3,
        destinations: vec![
            proto::Destination {
                service: Some(proto::ServiceRef {
                    namespace: String::new(),
                    name: "a".to_owned(),
                    port: 0,
                }),
                found: true,
                ..Default::default()
            },
            proto::Destination::default(),
        ],
    };
    let errors = Snapshot::try_from(wire).unwrap_err();
    let got: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            r#"destinations[0].service.namespace: invalid namespace "": empty name"#,
            "destinations[1].service: missing",
        ]
    );
}

const POLICY_CONFIG: &str = r#"
defaultPolicy: audit
services:
  - name: shop
    mtls: permissive
    exemptPaths: [/healthz, /ready/*]
    routes: [{name: admin}]
  - name: plain
policies:
  - name: everything
    target: {service: shop, route: admin}
    action: DENY
    mode: audit
    rules:
      - from:
          identities: ["*", "spiffe://mesh.local/ns/web/*", spiffe://mesh.local/ns/ops/sa/a]
          namespaces: [web]
          serviceAccounts: [ops/oncall]
          unauthenticated: true
        to:
          methods: [GET, DELETE]
          paths: [/items, /items/*]
          grpc: [{service: shop.Catalog, method: List}, {service: shop.Search}]
          ports: [8443]
      - from: {unauthenticated: true}
"#;

fn policy_snapshot() -> Snapshot {
    let config: crate::config::MeshConfig = serde_yaml::from_str(POLICY_CONFIG).unwrap();
    let valid = config
        .validate(&crate::TrustDomain::new("mesh.local").unwrap())
        .unwrap();
    Snapshot {
        zone: String::new(),
        version: 9,
        destinations: vec![],
        inbound: Some(valid.inbound(&name("shop.default"))),
        trust_bundle: Vec::new(),
    }
}

#[test]
fn inbound_policy_round_trips_with_every_field() {
    let model = policy_snapshot();
    let wire = proto::Snapshot::from(&model);
    let inbound = wire.inbound.as_ref().unwrap();
    assert_eq!(
        (inbound.mtls.as_str(), inbound.default_policy.as_str()),
        ("permissive", "audit")
    );
    assert_eq!(inbound.exempt_paths, ["/healthz", "/ready/*"]);
    let policy = &inbound.policies[0];
    assert_eq!(
        (
            policy.route.as_str(),
            policy.action.as_str(),
            policy.mode.as_str()
        ),
        ("admin", "DENY", "audit")
    );
    let from = policy.rules[0].from.as_ref().unwrap();
    assert_eq!(
        from.identities,
        [
            "*",
            "spiffe://mesh.local/ns/web/*",
            "spiffe://mesh.local/ns/ops/sa/a"
        ]
    );
    assert_eq!(from.service_accounts, ["ops/oncall"]);
    assert!(policy.rules[1].to.is_none());

    let bytes = prost::Message::encode_to_vec(&wire);
    let decoded: proto::Snapshot = prost::Message::decode(bytes.as_slice()).unwrap();
    assert_eq!(Snapshot::try_from(decoded).unwrap(), model);

    // A snapshot without an inbound policy stays without one.
    let plain = Snapshot {
        zone: String::new(),
        inbound: None,
        trust_bundle: Vec::new(),
        ..policy_snapshot()
    };
    assert_eq!(
        Snapshot::try_from(proto::Snapshot::from(&plain)).unwrap(),
        plain
    );
}

#[test]
fn empty_wire_mtls_and_mode_are_the_defaults() {
    let mut wire = proto::Snapshot::from(&policy_snapshot());
    let inbound = wire.inbound.as_mut().unwrap();
    inbound.mtls.clear();
    inbound.policies[0].mode.clear();
    let model = Snapshot::try_from(wire).unwrap();
    let inbound = model.inbound.unwrap();
    assert_eq!(inbound.mtls, crate::authz::MtlsMode::Strict);
    assert_eq!(inbound.policies[0].mode, crate::authz::PolicyMode::Enforce);
}

#[test]
fn the_wire_inbound_policy_is_validated_with_paths() {
    let mut wire = proto::Snapshot::from(&policy_snapshot());
    {
        let inbound = wire.inbound.as_mut().unwrap();
        inbound.service = None;
        inbound.mtls = "maybe".to_owned();
        inbound.default_policy.clear();
        inbound.exempt_paths.push("health".to_owned());
        let mut copy = inbound.policies[0].clone();
        let policy = &mut inbound.policies[0];
        policy.route = "Admin".to_owned();
        policy.action = "PERMIT".to_owned();
        let rule = &mut policy.rules[0];
        let from = rule.from.as_mut().unwrap();
        from.identities.push("spiffe://x/*/y".to_owned());
        from.service_accounts.push("oncall".to_owned());
        rule.to.as_mut().unwrap().ports.push(0);
        policy.rules[1].from = None;
        copy.rules.clear();
        inbound.policies.push(copy);
    }
    let errors = Snapshot::try_from(wire).unwrap_err();
    let got: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    let p = "inbound.policies[0]";
    let expected = [
        "inbound.service: missing".to_owned(),
        r#"inbound.mtls: unknown mTLS mode "maybe": expected strict or permissive"#.to_owned(),
        "inbound.defaultPolicy: missing".to_owned(),
        r#"inbound.exemptPaths[2]: invalid path "health": must start with '/'"#.to_owned(),
        format!(
            r#"{p}.route: invalid route name "Admin": only lowercase letters, digits, '-' and '.' are allowed"#
        ),
        format!(r#"{p}.action: unknown action "PERMIT": expected ALLOW or DENY"#),
        format!(
            r#"{p}.rules[0].from.identities[3]: invalid SPIFFE ID "spiffe://x/*/y": path has the character '*'; only letters, digits, '.', '-' and '_' are allowed"#
        ),
        format!(
            r#"{p}.rules[0].from.serviceAccounts[1]: invalid service account "oncall": expected namespace/name"#
        ),
        format!("{p}.rules[0].to.ports[1]: port 0 is out of range 1 to 65535"),
        format!("{p}.rules[1].from: required: the callers the rule is about"),
        r#"inbound.policies[1].name: duplicate policy name "everything" (first at inbound.policies[0].name)"#
            .to_owned(),
        "inbound.policies[1].rules: at least one rule is required".to_owned(),
    ];
    assert_eq!(got, expected);
}
