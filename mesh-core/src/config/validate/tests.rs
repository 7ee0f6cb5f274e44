//! Tests of config validation: a good config projected to destinations, and a bad one that
//! reports every error with its exact path.

use super::*;
use crate::spiffe::SpiffeId;

use crate::fixtures::{name, parse};
use crate::testing::trust_domain_named;

const GOOD: &str = r#"
services:
  - name: greeter
    endpoints:
      - address: 10.0.0.1:8080
        identity: spiffe://cluster.local/ns/default/sa/greeter
        zone: a
        labels: { version: v1 }
      - address: "[::1]:8080"
        weight: 3
        identity: spiffe://cluster.local/ns/default/sa/greeter
    routes:
      - name: split
        rules:
          - name: canary
            backendRefs:
              - name: greeter-v2
                weight: 10
              - name: greeter
                weight: 90
              - name: greeter-v2
                weight: 0
          - backendRefs:
              - name: missing
                namespace: other
  - name: greeter-v2
    endpoints:
      - address: 10.0.0.2:8080
        identity: spiffe://cluster.local/ns/default/sa/greeter
  - name: greeter
    namespace: prod
"#;

#[test]
fn good_config() {
    let valid = parse(GOOD)
        .validate(&trust_domain_named("cluster.local"))
        .unwrap();
    let services: Vec<String> = valid.services().map(ToString::to_string).collect();
    assert_eq!(
        services,
        ["greeter.default", "greeter-v2.default", "greeter.prod"]
    );
    assert!(valid.contains(&name("greeter.prod")));
    assert!(!valid.contains(&name("missing.other")));

    let greeter = valid.destination(&name("greeter.default"));
    assert!(greeter.found);
    assert_eq!(greeter.endpoints.len(), 2);
    let first = &greeter.endpoints[0];
    assert_eq!(first.address, "10.0.0.1:8080".parse().unwrap());
    assert_eq!(first.weight, 1, "an omitted weight is 1");
    assert_eq!(first.zone, "a");
    assert_eq!(first.labels.get("version").map(String::as_str), Some("v1"));
    assert_eq!(
        first.identity,
        SpiffeId::parse("spiffe://cluster.local/ns/default/sa/greeter").unwrap()
    );
    assert_eq!(greeter.endpoints[1].weight, 3);

    assert_eq!(greeter.routes.len(), 1);
    let rules = &greeter.routes[0].rules;
    assert_eq!(rules[0].name, "canary");
    let refs: Vec<(String, u32)> = rules[0]
        .backend_refs
        .iter()
        .map(|r| (r.service.to_string(), r.weight))
        .collect();
    assert_eq!(
        refs,
        [
            ("greeter-v2.default".to_owned(), 10),
            ("greeter.default".to_owned(), 90),
            ("greeter-v2.default".to_owned(), 0),
        ]
    );
    assert_eq!(rules[1].name, "");
    assert_eq!(rules[1].backend_refs[0].weight, 1, "an omitted weight is 1");

    // Each referenced service once, in order of first reference; unknown ones not found.
    let backends: Vec<(String, bool, usize)> = greeter
        .backends
        .iter()
        .map(|b| (b.service.to_string(), b.found, b.endpoints.len()))
        .collect();
    assert_eq!(
        backends,
        [
            ("greeter-v2.default".to_owned(), true, 1),
            ("greeter.default".to_owned(), true, 2),
            ("missing.other".to_owned(), false, 0),
        ]
    );

    let v2 = valid.destination(&name("greeter-v2.default"));
    assert!(v2.found);
    assert!(v2.routes.is_empty() && v2.backends.is_empty());

    let unknown = valid.destination(&name("nope.default"));
    assert_eq!(unknown, Destination::not_found(name("nope.default").into()));
}

#[test]
fn empty_config_is_valid() {
    let valid = MeshConfig::default()
        .validate(&trust_domain_named("cluster.local"))
        .unwrap();
    assert_eq!(valid.services().count(), 0);
}

#[test]
fn bad_config_reports_every_error_with_its_path() {
    let yaml = r#"
services:
  - name: greeter
    endpoints:
      - address: 10.0.0.1:8080
        identity: spiffe://cluster.local/ns/default/sa/greeter
      - address: 10.0.0.1:8080
        weight: 0
        identity: spiffe://other.org/ns/default/sa/greeter
    routes:
      - name: split
        rules:
          - name: a
            backendRefs:
              - name: Greeter_v2
                weight: 1000001
              - name: ok
                namespace: "-bad"
          - name: a
      - name: split
      - name: ""
  - name: Greeter
    namespace: default
    endpoints:
      - address: x
        weight: 2000000
        identity: spiffe://cluster.local/ns/default/sa/x/
      - address: 10.0.0.3:0
        identity: not-a-spiffe-id
  - name: greeter
    endpoints:
      - address: 0.0.0.0:80
        identity: spiffe://cluster.local/ns/default/sa/greeter
"#;
    let errors = parse(yaml)
        .validate(&trust_domain_named("cluster.local"))
        .unwrap_err();
    let got: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    let expected = [
        r#"services[0].endpoints[1].address: duplicate address "10.0.0.1:8080" (first at services[0].endpoints[0].address)"#,
        "services[0].endpoints[1].weight: weight 0 is out of range 1 to 1000000",
        r#"services[0].endpoints[1].identity: identity "spiffe://other.org/ns/default/sa/greeter" is not in trust domain "cluster.local""#,
        r#"services[0].routes[0].rules[0].backendRefs[0].name: invalid name "Greeter_v2": only lowercase letters, digits and '-' are allowed"#,
        "services[0].routes[0].rules[0].backendRefs[0].weight: weight 1000001 is out of range 0 to 1000000",
        r#"services[0].routes[0].rules[0].backendRefs[1].namespace: invalid namespace "-bad": must start and end with a letter or digit"#,
        r#"services[0].routes[0].rules[1].name: duplicate rule name "a" (first at services[0].routes[0].rules[0].name)"#,
        r#"services[0].routes[1].name: duplicate route name "split" (first at services[0].routes[0].name)"#,
        r#"services[0].routes[2].name: invalid route name "": empty name"#,
        r#"services[1].name: invalid name "Greeter": only lowercase letters, digits and '-' are allowed"#,
        r#"services[1].endpoints[0].address: invalid socket address "x""#,
        "services[1].endpoints[0].weight: weight 2000000 is out of range 1 to 1000000",
        r#"services[1].endpoints[0].identity: invalid SPIFFE ID "spiffe://cluster.local/ns/default/sa/x/": path must not end with '/'"#,
        r#"services[1].endpoints[1].address: invalid socket address "10.0.0.3:0": port 0 cannot be dialed"#,
        r#"services[1].endpoints[1].identity: invalid SPIFFE ID "not-a-spiffe-id": must start with "spiffe://" (lowercase)"#,
        r#"services[2]: duplicate service "greeter.default" (first at services[0])"#,
        r#"services[2].endpoints[0].address: invalid socket address "0.0.0.0:80": the unspecified address cannot be dialed"#,
    ];
    assert_eq!(got, expected);
    // The Display of the whole joins them in order.
    assert!(
        errors
            .to_string()
            .starts_with("services[0].endpoints[1].address: ")
    );
}

#[test]
fn unknown_fields_are_refused_by_serde() {
    let err =
        serde_yaml::from_str::<MeshConfig>("services: [{name: a, endpoint: []}]").unwrap_err();
    assert!(
        err.to_string().contains("unknown field `endpoint`"),
        "{err}"
    );
}

use crate::fixtures::ROUTES;

#[test]
fn routes_are_validated_into_typed_rules() {
    use crate::snapshot::{PathMatch, RouteFilter, RouteKind, RouteMatch, ValueMatch};
    use std::time::Duration;

    let valid = parse(ROUTES)
        .validate(&trust_domain_named("cluster.local"))
        .unwrap();
    let greeter = valid.destination(&name("greeter.default"));
    let canary = &greeter.routes[0];
    assert_eq!(canary.kind, RouteKind::Http);
    assert_eq!(canary.created, Some(1_714_557_600));
    let pinned = &canary.rules[0];
    let RouteMatch::Http(m) = &pinned.matches[0] else {
        panic!("http match expected")
    };
    assert_eq!(
        m.path,
        PathMatch::Prefix("/".to_owned()),
        "path defaults to /"
    );
    assert_eq!(m.headers[0].name, "x-canary");
    assert_eq!(m.headers[0].value, ValueMatch::Exact("true".to_owned()));
    assert_eq!(pinned.backend_refs[0].port, Some(8080));

    let split = &canary.rules[1];
    let RouteMatch::Http(api) = &split.matches[0] else {
        panic!("http match expected")
    };
    assert_eq!(api.method, Some(http::Method::POST));
    assert_eq!(api.headers[0].name, "x-user", "header names are normalised");
    assert!(
        matches!(&api.headers[0].value, ValueMatch::RegularExpression(p) if p.is_match("user-42") && !p.is_match("user-42x"))
    );
    assert_eq!(api.query_params[0].name, "debug");
    assert_eq!(split.filters.len(), 3);
    let RouteFilter::RequestMirror(mirror) = &split.filters[2] else {
        panic!("mirror expected")
    };
    assert_eq!(
        (
            mirror.backend.to_string().as_str(),
            mirror.port,
            mirror.percent
        ),
        ("shadow.default", Some(80), 5)
    );
    assert_eq!(split.timeouts.request, Some(Duration::from_secs(10)));
    assert_eq!(
        split.timeouts.backend_request,
        Some(Duration::from_millis(500))
    );
    let retry = split.retry.as_ref().unwrap();
    assert_eq!(retry.attempts, 2);
    assert!(retry.retries_status(http::StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(retry.backoff, Some(Duration::from_millis(100)));

    let grpc = &greeter.routes[1];
    assert_eq!(
        (grpc.kind, grpc.created),
        (RouteKind::Grpc, Some(1_700_000_000))
    );
    let retry = grpc.rules[0].retry.as_ref().unwrap();
    assert_eq!(retry.attempts, 1, "attempts default to 1");
    assert!(retry.retries_grpc(tonic::Code::ResourceExhausted));

    // Mirrors are resolved like backends: `shadow` is not in the config, so not found. A
    // backend is a service and the port the reference names.
    let backends: Vec<(String, Option<u16>, bool)> = greeter
        .backends
        .iter()
        .map(|b| (b.service.to_string(), b.port, b.found))
        .collect();
    assert_eq!(
        backends,
        [
            ("greeter-v2.default".to_owned(), Some(8080), true),
            ("greeter-v1.default".to_owned(), None, true),
            ("greeter-v2.default".to_owned(), None, true),
            ("shadow.default".to_owned(), Some(80), false),
        ]
    );
}

#[test]
fn bad_routes_report_every_error_with_its_path() {
    let yaml = r#"
services:
  - name: a
    routes:
      - name: r
        kind: tcp
        creationTimestamp: yesterday
        rules:
          - matches:
              - path: {type: Prefix, value: /x}
              - path: {type: PathPrefix, value: "no-slash"}
                method: FETCH
                headers:
                  - {name: "bad header", value: x}
                  - {name: X-A, value: "a"}
                  - {name: x-a, value: "b"}
                  - {type: RegularExpression, name: x-b, value: "(unclosed"}
                queryParams: [{type: Fuzzy, name: q, value: v}]
              - path: {type: Exact, value: "/a//b"}
            filters:
              - type: URLRewrite
              - type: RequestHeaderModifier
                responseHeaderModifier: {}
              - type: RequestMirror
                requestMirror: {backendRef: {name: m, port: 70000}, percent: 101}
            backendRefs: [{name: b, port: 0}]
            timeouts: {request: 1s, backendRequest: 2s}
            retry: {codes: [200], statuses: [UNAVAILABLE], attempts: 11, backoff: 1.5s}
      - name: g
        kind: grpc
        rules:
          - matches:
              - path: {value: /x}
                method: GET
              - method: {}
              - method: {service: "bad service", method: "1x"}
            retry: {codes: [503], statuses: [OK, NOPE]}
            timeouts: {request: 10x}
"#;
    let errors = parse(yaml)
        .validate(&trust_domain_named("cluster.local"))
        .unwrap_err();
    let got: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    let r = "services[0].routes[0]";
    let g = "services[0].routes[1]";
    let expected = vec![
        format!(r#"{r}.kind: unknown route kind "tcp": expected "http" or "grpc""#),
        format!(
            r#"{r}.creationTimestamp: invalid RFC 3339 time "yesterday": the 'year' component could not be parsed"#
        ),
        format!(
            r#"{r}.rules[0].matches[0].path.type: unknown path match type "Prefix": expected Exact, PathPrefix or RegularExpression"#
        ),
        format!(
            r#"{r}.rules[0].matches[1].headers[0].name: invalid header name "bad header": only letters, digits and !#$%&'*+-.^_`|~ are allowed"#
        ),
        format!(
            r#"{r}.rules[0].matches[1].headers[2].name: duplicate header "x-a" (first at {r}.rules[0].matches[1].headers[1].name)"#
        ),
        format!(
            r#"{r}.rules[0].matches[1].headers[3].value: invalid regular expression "(unclosed": unclosed group"#
        ),
        format!(
            r#"{r}.rules[0].matches[1].path.value: invalid path "no-slash": must start with '/'"#
        ),
        format!(
            r#"{r}.rules[0].matches[1].method: unknown method "FETCH": expected one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH"#
        ),
        format!(
            r#"{r}.rules[0].matches[1].queryParams[0].type: unknown match type "Fuzzy": expected Exact or RegularExpression"#
        ),
        format!(
            r#"{r}.rules[0].matches[2].path.value: invalid path "/a//b": must not contain '//'"#
        ),
        format!(
            r#"{r}.rules[0].filters[0].type: unsupported filter type "URLRewrite": expected RequestHeaderModifier, ResponseHeaderModifier, RequestMirror or FaultInjection"#
        ),
        format!(
            "{r}.rules[0].filters[1].requestHeaderModifier: required when type is RequestHeaderModifier"
        ),
        format!(
            "{r}.rules[0].filters[1].responseHeaderModifier: not allowed when type is RequestHeaderModifier"
        ),
        format!(
            "{r}.rules[0].filters[2].requestMirror.backendRef.port: port 70000 is out of range 1 to 65535"
        ),
        format!(
            "{r}.rules[0].filters[2].requestMirror.percent: percent 101 is out of range 0 to 100"
        ),
        format!("{r}.rules[0].timeouts.backendRequest: 2s is longer than the request timeout 1s"),
        format!(
            "{r}.rules[0].retry.statuses: gRPC statuses apply to gRPC routes; HTTP routes use codes"
        ),
        format!("{r}.rules[0].retry.codes[0]: status code 200 is out of range 400 to 599"),
        format!("{r}.rules[0].retry.attempts: 11 attempts is out of range 0 to 10"),
        format!(
            r#"{r}.rules[0].retry.backoff: invalid duration "1.5s": expected a unit: h, m, s or ms"#
        ),
        format!("{r}.rules[0].backendRefs[0].port: port 0 is out of range 1 to 65535"),
        format!("{g}.rules[0].matches[0].path: a gRPC route matches service and method, not paths"),
        format!(
            r#"{g}.rules[0].matches[0].method: a gRPC route matches {{service, method}}, not an HTTP method ("GET")"#
        ),
        format!("{g}.rules[0].matches[1].method: at least one of service and method is required"),
        format!(
            r#"{g}.rules[0].matches[2].method.service: invalid gRPC service "bad service": must be dot-separated identifiers such as helloworld.Greeter"#
        ),
        format!(
            r#"{g}.rules[0].matches[2].method.method: invalid gRPC method "1x": must start with a letter or '_'"#
        ),
        format!(
            r#"{g}.rules[0].timeouts.request: invalid duration "10x": expected a unit: h, m, s or ms"#
        ),
        format!(
            "{g}.rules[0].retry.codes: HTTP status codes apply to HTTP routes; gRPC routes use statuses"
        ),
        format!(r#"{g}.rules[0].retry.statuses[0]: unknown or non-error gRPC status "OK""#),
        format!(r#"{g}.rules[0].retry.statuses[1]: unknown or non-error gRPC status "NOPE""#),
    ];
    assert_eq!(got, expected);
}

const PORTS_AND_CONSUMERS: &str = r#"
services:
  - name: echo
    port: 80
    endpoints:
      - {address: "10.0.0.1:8080", identity: "spiffe://cluster.local/ns/default/sa/echo"}
    ports:
      - port: 7070
        endpoints:
          - {address: "10.0.0.1:7070", identity: "spiffe://cluster.local/ns/default/sa/echo"}
    routes:
      - name: grpc-port
        kind: grpc
        port: 7070
        rules: [{backendRefs: [{name: echo-v2, port: 7070}]}]
      - name: every-port
        rules: [{backendRefs: [{name: echo-v1}]}]
      - name: from-client
        namespace: client
        rules: [{backendRefs: [{name: echo-v2, namespace: default, port: 80}]}]
  - name: echo-v1
    endpoints:
      - {address: "10.0.0.2:8080", identity: "spiffe://cluster.local/ns/default/sa/echo"}
  - name: echo-v2
    port: 80
    endpoints:
      - {address: "10.0.0.3:8080", identity: "spiffe://cluster.local/ns/default/sa/echo"}
    ports:
      - port: 7070
        endpoints:
          - {address: "10.0.0.3:7070", identity: "spiffe://cluster.local/ns/default/sa/echo"}
"#;

fn key(s: &str) -> DestinationKey {
    s.parse().unwrap()
}

fn addresses(endpoints: &[Endpoint]) -> Vec<String> {
    endpoints.iter().map(|e| e.address.to_string()).collect()
}

fn route_names(destination: &Destination) -> Vec<&str> {
    destination.routes.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn each_port_has_its_endpoints_and_its_routes() {
    let valid = parse(PORTS_AND_CONSUMERS)
        .validate(&trust_domain_named("cluster.local"))
        .unwrap();
    let first = valid.destination_for(&key("echo.default"), None);
    assert_eq!(addresses(&first.endpoints), ["10.0.0.1:8080"]);
    assert_eq!(route_names(&first), ["every-port"]);
    assert_eq!(
        valid.destination_for(&key("echo.default:80"), None).routes,
        first.routes,
        "naming the first port is the same as naming none"
    );

    let grpc = valid.destination_for(&key("echo.default:7070"), None);
    assert_eq!(grpc.port, Some(7070));
    assert_eq!(addresses(&grpc.endpoints), ["10.0.0.1:7070"]);
    assert_eq!(route_names(&grpc), ["grpc-port", "every-port"]);
    let v2 = &grpc.backends[0];
    assert_eq!((v2.service.name.as_str(), v2.port), ("echo-v2", Some(7070)));
    assert_eq!(addresses(&v2.endpoints), ["10.0.0.3:7070"]);

    let missing = valid.destination_for(&key("echo.default:9999"), None);
    assert!(
        !missing.found,
        "a port the service does not have is not found"
    );
    let any_port = valid.destination_for(&key("echo-v1.default:1234"), None);
    assert!(any_port.found, "a service without ports takes any port");
}

#[test]
fn consumer_routes_replace_the_producer_routes_for_their_namespace_only() {
    let valid = parse(PORTS_AND_CONSUMERS)
        .validate(&trust_domain_named("cluster.local"))
        .unwrap();
    let client = valid.destination_for(&key("echo.default"), Some("client"));
    assert_eq!(route_names(&client), ["from-client"]);
    let v2 = &client.backends[0];
    assert_eq!(
        (v2.service.to_string(), v2.port),
        ("echo-v2.default".into(), Some(80))
    );
    assert_eq!(addresses(&v2.endpoints), ["10.0.0.3:8080"]);

    for other in [None, Some("default"), Some("elsewhere")] {
        let seen = valid.destination_for(&key("echo.default"), other);
        assert_eq!(route_names(&seen), ["every-port"], "caller in {other:?}");
    }
    // The consumer route attaches to every port, so it also replaces the gRPC port's routes.
    let client_grpc = valid.destination_for(&key("echo.default:7070"), Some("client"));
    assert_eq!(route_names(&client_grpc), ["from-client"]);
}

#[test]
fn bad_ports_and_route_namespaces_are_reported_with_their_paths() {
    let yaml = r#"
services:
  - name: a
    ports: [{port: 81}]
    routes:
      - {name: r, port: 81}
  - name: b
    port: 80
    ports: [{port: 80}, {port: 70000}]
    routes:
      - {name: r, port: 9999}
      - {name: r, namespace: Bad_NS}
      - {name: r, namespace: client}
      - {name: r, namespace: client}
"#;
    let errors = parse(yaml)
        .validate(&trust_domain_named("cluster.local"))
        .unwrap_err();
    let got: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "services[0].port: required when ports are listed: the port that endpoints serve",
            "services[1].ports[0].port: duplicate port 80 (first at services[1].port)",
            "services[1].ports[1].port: port 70000 is out of range 1 to 65535",
            "services[1].routes[0].port: the service has no port 9999",
            r#"services[1].routes[1].namespace: invalid namespace "Bad_NS": only lowercase letters, digits and '-' are allowed"#,
            r#"services[1].routes[3].name: duplicate route name "r" (first at services[1].routes[2].name)"#,
        ]
    );
}

/// The config's error messages, each with its path.
fn error_strings(config: &MeshConfig) -> Vec<String> {
    config
        .validate(&trust_domain_named("cluster.local"))
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// A service `big` with `count` endpoints, each with `labels` labels of 63-byte values.
fn big_service(count: usize, labels: usize) -> MeshConfig {
    let endpoints = (0..count)
        .map(|i| EndpointSpec {
            for_zones: Vec::new(),
            address: format!("10.{}.{}.{}:80", i / 62_500, (i / 250) % 250, i % 250 + 1),
            weight: None,
            zone: String::new(),
            labels: (0..labels)
                .map(|l| (format!("label-{l}"), "v".repeat(MAX_LABEL_VALUE_BYTES)))
                .collect(),
            identity: "spiffe://cluster.local/ns/default/sa/big".to_owned(),
        })
        .collect();
    let mut config = parse("services: [{name: small}, {name: big}]");
    config.services[1].endpoints = endpoints;
    config
}

#[test]
fn label_and_zone_sizes_are_bounded_with_their_paths() {
    let mut config = big_service(1, 0);
    let endpoint = &mut config.services[1].endpoints[0];
    endpoint
        .labels
        .insert("app".to_owned(), "a".repeat(MAX_LABEL_VALUE_BYTES + 1));
    endpoint
        .labels
        .insert("k".repeat(MAX_LABEL_KEY_BYTES + 1), "v".to_owned());
    endpoint.zone = "z".repeat(MAX_ZONE_BYTES + 1);
    assert_eq!(
        error_strings(&config),
        [
            "services[1].endpoints[0].zone: longer than 63 bytes".to_owned(),
            "services[1].endpoints[0].labels.app: longer than 63 bytes".to_owned(),
            format!(
                "services[1].endpoints[0].labels: key \"{}\"... is longer than 317 bytes",
                "k".repeat(32)
            ),
        ]
    );
    // At the bounds: valid.
    let mut config = big_service(1, 0);
    let endpoint = &mut config.services[1].endpoints[0];
    endpoint.labels.insert(
        "k".repeat(MAX_LABEL_KEY_BYTES),
        "a".repeat(MAX_LABEL_VALUE_BYTES),
    );
    endpoint.zone = "z".repeat(MAX_ZONE_BYTES);
    config
        .validate(&trust_domain_named("cluster.local"))
        .unwrap();
}

#[test]
fn zone_hints_and_instance_zones_are_bounded_with_their_paths() {
    let mut config = big_service(1, 0);
    config.services[1].endpoints[0].for_zones = (0..=MAX_ZONE_HINTS)
        .map(|i| format!("zone-{i}"))
        .chain(["z".repeat(MAX_ZONE_BYTES + 1)])
        .collect();
    config.instance_zones = BTreeMap::from([
        ("default/greeter-1".to_owned(), "zone-a".to_owned()),
        ("no-slash".to_owned(), "zone-a".to_owned()),
        (
            "default/greeter-2".to_owned(),
            "z".repeat(MAX_ZONE_BYTES + 1),
        ),
    ]);
    assert_eq!(
        error_strings(&config),
        [
            "services[1].endpoints[0].forZones: more than 8 zones",
            "services[1].endpoints[0].forZones[9]: longer than 63 bytes",
            "instanceZones[\"default/greeter-2\"]: zone longer than 63 bytes",
            "instanceZones[\"no-slash\"]: expected <namespace>/<instance>, e.g. default/greeter-7d9f-x2x4q",
        ]
    );
    let mut config = big_service(1, 0);
    config.services[1].endpoints[0].for_zones = vec!["zone-a".to_owned(); MAX_ZONE_HINTS];
    config.instance_zones = BTreeMap::from([("default/g-1".to_owned(), "zone-b".to_owned())]);
    let valid = config
        .validate(&trust_domain_named("cluster.local"))
        .unwrap();
    assert_eq!(valid.zone_of("default", "g-1"), "zone-b");
    assert_eq!(valid.zone_of("default", "g-2"), "");
    let big = valid.destination(&"big.default".parse().unwrap());
    assert_eq!(big.endpoints[0].for_zones.len(), MAX_ZONE_HINTS);
}

#[test]
fn a_destination_larger_than_a_snapshot_may_hold_is_refused_by_name() {
    // 4,000 endpoints of about 1 KB: over 3 MiB for the one destination.
    let errors = error_strings(&big_service(4_000, 12));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("services[1]: destination big.default takes "),
        "{errors:?}"
    );
    assert!(
        errors[0].contains("more than the 3145728 one destination may take"),
        "{errors:?}"
    );
    // The same service with a tenth of the endpoints is fine.
    big_service(400, 12)
        .validate(&trust_domain_named("cluster.local"))
        .unwrap();
}
