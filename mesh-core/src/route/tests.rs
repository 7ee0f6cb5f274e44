//! Table tests of matching and precedence (fixtures modelled on the GAMMA conformance cases),
//! weighted picking, and explanations.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use super::*;
use crate::config::MeshConfig;
use crate::snapshot::{RequestMirror, ServiceName};
use crate::spiffe::TrustDomain;

/// `echo` with the given routes, and the `echo-v1` / `echo-v2` backends.
fn compile(routes_yaml: &str) -> CompiledRoutes {
    let yaml = format!(
        r#"
services:
  - name: echo
    routes:
{}
  - name: echo-v1
    endpoints: [{{address: "10.0.0.1:8080", identity: "spiffe://td/ns/default/sa/echo"}}]
  - name: echo-v2
    endpoints: [{{address: "10.0.0.2:8080", identity: "spiffe://td/ns/default/sa/echo"}}]
"#,
        indent(routes_yaml, 6)
    );
    let config: MeshConfig = serde_yaml::from_str(&yaml).unwrap();
    let valid = config.validate(&TrustDomain::new("td").unwrap()).unwrap();
    CompiledRoutes::new(&valid.destination(&"echo.default".parse().unwrap()))
}

fn indent(s: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{pad}{l}\n"))
        .collect()
}

/// A request: `GET /x?y`, headers as `name: value` pairs; `grpc` sets the gRPC content type.
struct Req {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Req {
    let mut map = HeaderMap::new();
    for (n, v) in headers {
        map.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    Req {
        method: method.parse().unwrap(),
        uri: uri.parse().unwrap(),
        headers: map,
    }
}

fn grpc(path: &str, headers: &[(&str, &str)]) -> Req {
    let mut r = req("POST", path, headers);
    r.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    r
}

impl Req {
    fn summary(&self) -> RequestSummary<'_> {
        RequestSummary::new(&self.method, &self.uri, &self.headers)
    }
}

/// `route/rule -> backend` for a match (the first backend by weight), `404`, or `no-routes`.
fn outcome(routes: &CompiledRoutes, r: &Req) -> String {
    match routes.route(&r.summary()) {
        RouteOutcome::NoRoutes => "no-routes".to_owned(),
        RouteOutcome::NotFound => "404".to_owned(),
        RouteOutcome::Matched(m) => {
            let backend = match m.rule.pick_backend(0) {
                BackendPick::Resolved { backend, .. } => backend.service.name.clone(),
                BackendPick::Unresolved { backend, .. } => {
                    format!("{}(unresolved)", backend.service.name)
                }
                BackendPick::NoBackend => "none".to_owned(),
            };
            format!(
                "{}/{} -> {backend}",
                m.rule.route_name(),
                m.rule.rule_index()
            )
        }
    }
}

fn backend_of(routes: &CompiledRoutes, r: &Req) -> String {
    let o = outcome(routes, r);
    o.rsplit(" -> ").next().unwrap_or(&o).to_owned()
}

#[test]
fn gamma_httproute_matching() {
    let routes = compile(
        r#"
- name: mesh-matching
  rules:
    - matches: [{path: {type: PathPrefix, value: /}}, {headers: [{name: version, value: one}]}]
      backendRefs: [{name: echo-v1, port: 8080}]
    - matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]
      backendRefs: [{name: echo-v2, port: 8080}]
"#,
    );
    let cases = [
        ("/", None, "echo-v1"),
        ("/example", None, "echo-v1"),
        ("/", Some("one"), "echo-v1"),
        ("/v2", None, "echo-v2"),
        ("/v2/example", None, "echo-v2"),
        ("/", Some("two"), "echo-v2"),
        ("/v2/", None, "echo-v2"),
        ("/v2example", None, "echo-v1"),
        ("/foo/v2/example", None, "echo-v1"),
    ];
    for (path, version, expected) in cases {
        let headers: Vec<(&str, &str)> = version.map(|v| ("Version", v)).into_iter().collect();
        let r = req("GET", path, &headers);
        assert_eq!(backend_of(&routes, &r), expected, "{path} {version:?}");
    }
}

#[test]
fn gamma_query_param_matching() {
    let routes = compile(
        r#"
- name: mesh-query-param-matching
  rules:
    - matches: [{queryParams: [{name: animal, value: whale}]}]
      backendRefs: [{name: echo-v1}]
    - matches: [{queryParams: [{name: animal, value: dolphin}]}]
      backendRefs: [{name: echo-v2}]
    - matches: [{path: {value: /path1}, queryParams: [{name: animal, value: whale}]}]
      backendRefs: [{name: echo-v1}]
    - matches: [{headers: [{name: version, value: one}], queryParams: [{name: animal, value: whale}]}]
      backendRefs: [{name: echo-v2}]
    - matches:
        - {path: {value: /path3}, queryParams: [{name: animal, value: shark}]}
        - {path: {value: /path4}, headers: [{name: version, value: three}], queryParams: [{name: animal, value: kraken}]}
      backendRefs: [{name: echo-v1}]
    - matches: [{path: {value: /path5}}]
      backendRefs: [{name: echo-v1}]
    - matches: [{queryParams: [{name: animal, value: hydra}]}]
      backendRefs: [{name: echo-v2}]
"#,
    );
    let cases = [
        ("/?animal=whale", None, "echo-v1"),
        ("/?animal=dolphin", None, "echo-v2"),
        ("/?animal=whale&otherparam=irrelevant", None, "echo-v1"),
        ("/?animal=dolphin&color=yellow", None, "echo-v2"),
        ("/?color=blue", None, "404"),
        ("/?animal=dog", None, "404"),
        ("/?animal=whaledolphin", None, "404"),
        ("/", None, "404"),
        ("/path1?animal=whale", None, "echo-v1"),
        ("/?animal=whale", Some("one"), "echo-v2"),
        ("/path3?animal=shark", None, "echo-v1"),
        ("/path4?animal=kraken", Some("three"), "echo-v1"),
        ("/?animal=shark", None, "404"),
        ("/path4?animal=kraken", None, "404"),
        ("/path5?animal=hydra", None, "echo-v1"),
        // Beyond the conformance cases: the first of a repeated parameter counts, values are
        // percent-decoded.
        ("/?animal=dolphin&animal=whale", None, "echo-v2"),
        ("/?an%69mal=wh%61le", None, "echo-v1"),
    ];
    for (uri, version, expected) in cases {
        let headers: Vec<(&str, &str)> = version.map(|v| ("version", v)).into_iter().collect();
        let r = req("GET", uri, &headers);
        assert_eq!(backend_of(&routes, &r), expected, "{uri} {version:?}");
    }
}

#[test]
fn gamma_exact_paths_and_named_rules() {
    let routes = compile(
        r#"
- name: mesh-split
  rules:
    - matches: [{path: {type: Exact, value: /v1}}]
      backendRefs: [{name: echo-v1}]
    - name: second
      matches: [{path: {type: Exact, value: /v2}}]
      backendRefs: [{name: echo-v2}]
"#,
    );
    assert_eq!(
        outcome(&routes, &req("GET", "/v1", &[])),
        "mesh-split/0 -> echo-v1"
    );
    assert_eq!(
        outcome(&routes, &req("GET", "/v2", &[])),
        "mesh-split/1 -> echo-v2"
    );
    assert_eq!(outcome(&routes, &req("GET", "/v2/x", &[])), "404");
    assert_eq!(outcome(&routes, &req("GET", "/", &[])), "404");
}

#[test]
fn every_match_type() {
    let routes = compile(
        r#"
- name: types
  rules:
    - matches: [{path: {type: RegularExpression, value: "/users/[0-9]+"}}]
      backendRefs: [{name: echo-v1}]
    - matches: [{method: DELETE}]
      backendRefs: [{name: echo-v2}]
    - matches: [{path: {value: /h}, headers: [{type: RegularExpression, name: X-Id, value: "id-[a-f]+"}]}]
      backendRefs: [{name: echo-v1}]
    - matches: [{path: {value: /h}, headers: [{name: X-Multi, value: "a,b"}]}]
      backendRefs: [{name: echo-v2}]
    - matches: [{path: {value: /q}, queryParams: [{type: RegularExpression, name: n, value: "[0-9]{3}"}]}]
      backendRefs: [{name: echo-v1}]
"#,
    );
    let cases = [
        // Regular expressions match the whole path.
        (req("GET", "/users/42", &[]), "types/0 -> echo-v1"),
        (req("GET", "/users/42/x", &[]), "404"),
        (req("DELETE", "/anything", &[]), "types/1 -> echo-v2"),
        (req("GET", "/anything", &[]), "404"),
        // Header names are case-insensitive; values are case-sensitive.
        (
            req("GET", "/h", &[("x-id", "id-beef")]),
            "types/2 -> echo-v1",
        ),
        (req("GET", "/h", &[("X-ID", "id-BEEF")]), "404"),
        // A repeated header is compared as its values joined with commas.
        (
            req("GET", "/h", &[("x-multi", "a"), ("x-multi", "b")]),
            "types/3 -> echo-v2",
        ),
        (
            req("GET", "/h", &[("x-multi", "a,b")]),
            "types/3 -> echo-v2",
        ),
        (
            req("GET", "/h", &[("x-multi", "a"), ("x-multi", "c")]),
            "404",
        ),
        (req("GET", "/q?n=123", &[]), "types/4 -> echo-v1"),
        (req("GET", "/q?n=1234", &[]), "404"),
        (req("GET", "/q", &[]), "404"),
    ];
    for (r, expected) in cases {
        assert_eq!(
            outcome(&routes, &r),
            expected,
            "{} {} {:?}",
            r.method,
            r.uri,
            r.headers
        );
    }
}

/// Two candidates that both match one request; the first listed in `expected` wins, on the
/// given criterion.
#[test]
fn every_precedence_tie_break() {
    struct Case {
        name: &'static str,
        routes: &'static str,
        request: Req,
        winner: &'static str,
        criterion: Criterion,
    }
    let cases = [
        Case {
            name: "exact path beats a prefix, earlier rules and more headers",
            routes: r#"
- name: r
  rules:
    - matches: [{path: {value: /a}, headers: [{name: x, value: "1"}]}]
      backendRefs: [{name: echo-v2}]
    - matches: [{path: {type: Exact, value: /a}}]
      backendRefs: [{name: echo-v1}]
"#,
            request: req("GET", "/a", &[("x", "1")]),
            winner: "r/1",
            criterion: Criterion::PathType,
        },
        Case {
            name: "a regular expression beats a prefix",
            routes: r#"
- name: r
  rules:
    - matches: [{path: {value: /a/b/c/d}}]
      backendRefs: [{name: echo-v2}]
    - matches: [{path: {type: RegularExpression, value: "/a/.*"}}]
      backendRefs: [{name: echo-v1}]
"#,
            request: req("GET", "/a/b/c/d", &[]),
            winner: "r/1",
            criterion: Criterion::PathType,
        },
        Case {
            name: "longest prefix",
            routes: r#"
- name: r
  rules:
    - matches: [{path: {value: /a}, method: GET, headers: [{name: x, value: "1"}]}]
      backendRefs: [{name: echo-v2}]
    - matches: [{path: {value: /a/b/}}]
      backendRefs: [{name: echo-v1}]
"#,
            request: req("GET", "/a/b", &[("x", "1")]),
            winner: "r/1",
            criterion: Criterion::PathLength,
        },
        Case {
            name: "method match",
            routes: r#"
- name: r
  rules:
    - matches: [{headers: [{name: x, value: "1"}, {name: y, value: "2"}]}]
      backendRefs: [{name: echo-v2}]
    - matches: [{method: POST}]
      backendRefs: [{name: echo-v1}]
"#,
            request: req("POST", "/", &[("x", "1"), ("y", "2")]),
            winner: "r/1",
            criterion: Criterion::Method,
        },
        Case {
            name: "most header matches",
            routes: r#"
- name: r
  rules:
    - matches: [{headers: [{name: x, value: "1"}], queryParams: [{name: a, value: "1"}, {name: b, value: "2"}]}]
      backendRefs: [{name: echo-v2}]
    - matches: [{headers: [{name: x, value: "1"}, {name: y, value: "2"}]}]
      backendRefs: [{name: echo-v1}]
"#,
            request: req("GET", "/?a=1&b=2", &[("x", "1"), ("y", "2")]),
            winner: "r/1",
            criterion: Criterion::HeaderMatches,
        },
        Case {
            name: "most query parameter matches",
            routes: r#"
- name: r
  rules:
    - matches: [{queryParams: [{name: a, value: "1"}]}]
      backendRefs: [{name: echo-v2}]
    - matches: [{queryParams: [{name: a, value: "1"}, {name: b, value: "2"}]}]
      backendRefs: [{name: echo-v1}]
"#,
            request: req("GET", "/?a=1&b=2", &[]),
            winner: "r/1",
            criterion: Criterion::QueryParamMatches,
        },
        Case {
            name: "oldest route, and a route with a time before one without",
            routes: r#"
- name: a-new
  creationTimestamp: "2024-02-01T00:00:00Z"
  rules: [{backendRefs: [{name: echo-v2}]}]
- name: z-old
  creationTimestamp: 1700000000
  rules: [{backendRefs: [{name: echo-v1}]}]
- name: a-untimed
  rules: [{backendRefs: [{name: echo-v2}]}]
"#,
            request: req("GET", "/", &[]),
            winner: "z-old/0",
            criterion: Criterion::RouteAge,
        },
        Case {
            name: "route name, alphabetical",
            routes: r#"
- name: beta
  rules: [{backendRefs: [{name: echo-v2}]}]
- name: alpha
  rules: [{backendRefs: [{name: echo-v1}]}]
"#,
            request: req("GET", "/", &[]),
            winner: "alpha/0",
            criterion: Criterion::RouteName,
        },
        Case {
            name: "rule order",
            routes: r#"
- name: r
  rules:
    - matches: [{path: {value: /a}}]
      backendRefs: [{name: echo-v1}]
    - matches: [{path: {value: /a}}]
      backendRefs: [{name: echo-v2}]
"#,
            request: req("GET", "/a", &[]),
            winner: "r/0",
            criterion: Criterion::RuleOrder,
        },
        Case {
            name: "match order",
            routes: r#"
- name: r
  rules:
    - matches: [{path: {value: /a}}, {path: {value: /a/}}]
      backendRefs: [{name: echo-v1}]
"#,
            request: req("GET", "/a", &[]),
            winner: "r/0",
            criterion: Criterion::MatchOrder,
        },
    ];
    for case in cases {
        let routes = compile(case.routes);
        let got = outcome(&routes, &case.request);
        assert!(
            got.starts_with(&format!("{} ", case.winner)),
            "{}: {got}",
            case.name
        );
        let explanation = routes.explain(&case.request.summary());
        assert_eq!(
            explanation.criterion,
            Some(case.criterion),
            "{}: {explanation}",
            case.name
        );
    }
}

#[test]
fn grpc_routes_and_their_precedence() {
    let routes = compile(
        r#"
- name: grpc
  kind: grpc
  rules:
    - matches: [{method: {service: helloworld.Greeter}}]
      backendRefs: [{name: echo-v1}]
    - matches: [{method: {service: helloworld.Greeter, method: SayHello}}]
      backendRefs: [{name: echo-v2}]
    - matches: [{method: {type: RegularExpression, service: "helloworld\\..*", method: "Say.*"}}]
      backendRefs: [{name: echo-v1}]
    - matches: [{method: {method: Check}, headers: [{name: x-test-case, value: set}]}]
      backendRefs: [{name: echo-v2}]
    - matches: [{method: {method: Check}}]
      backendRefs: [{name: echo-v1}]
- name: http
  rules:
    - matches: [{path: {value: /web}}]
      backendRefs: [{name: echo-v2}]
"#,
    );
    let cases = [
        // Service and method beat service alone.
        (
            grpc("/helloworld.Greeter/SayHello", &[]),
            "grpc/1 -> echo-v2",
        ),
        (grpc("/helloworld.Greeter/Other", &[]), "grpc/0 -> echo-v1"),
        // Pattern characters count: `helloworld\..*` (13) beats nothing, loses to exact
        // `helloworld.Greeter` (18).
        (grpc("/helloworld.Other/SayHi", &[]), "grpc/2 -> echo-v1"),
        (
            grpc("/grpc.health.v1.Health/Check", &[("x-test-case", "set")]),
            "grpc/3 -> echo-v2",
        ),
        (
            grpc("/grpc.health.v1.Health/Check", &[]),
            "grpc/4 -> echo-v1",
        ),
        // gRPC requests see only the GRPCRoutes when there are any: no merging.
        (grpc("/web", &[]), "404"),
        // Other requests see only the HTTPRoutes.
        (req("GET", "/web", &[]), "http/0 -> echo-v2"),
        (req("POST", "/helloworld.Greeter/SayHello", &[]), "404"),
    ];
    for (r, expected) in cases {
        assert_eq!(outcome(&routes, &r), expected, "{}", r.uri);
    }
    let explanation = routes.explain(&grpc("/helloworld.Greeter/SayHello", &[]).summary());
    assert_eq!(
        explanation.criterion,
        Some(Criterion::MethodLength),
        "{explanation}"
    );
}

#[test]
fn grpc_rule_without_matches_matches_everything_and_http_routes_serve_grpc() {
    let grpc_routes = compile(
        r#"
- name: all
  kind: grpc
  rules: [{backendRefs: [{name: echo-v1}]}]
"#,
    );
    assert_eq!(
        outcome(&grpc_routes, &grpc("/a.B/C", &[])),
        "all/0 -> echo-v1"
    );
    assert_eq!(
        outcome(&grpc_routes, &grpc("/malformed", &[])),
        "all/0 -> echo-v1"
    );
    // Only GRPCRoutes attached: a plain HTTP request finds nothing.
    assert_eq!(outcome(&grpc_routes, &req("GET", "/", &[])), "404");

    let http_routes = compile(
        r#"
- name: web
  rules: [{matches: [{path: {value: /a.B}}], backendRefs: [{name: echo-v2}]}]
"#,
    );
    // Only HTTPRoutes attached: gRPC requests are matched by path like any HTTP request.
    assert_eq!(
        outcome(&http_routes, &grpc("/a.B/C", &[])),
        "web/0 -> echo-v2"
    );

    let none = compile("[]");
    assert_eq!(outcome(&none, &req("GET", "/", &[])), "no-routes");
    assert!(!none.has_routes());
}

/// The share of the `u32` space each backend of `rule` gets, sampling every 2^16th value.
fn shares(rule: &CompiledRule) -> Vec<(String, u32)> {
    let mut counts = vec![0u32; rule.backends().len()];
    let mut none = 0;
    for k in 0..=u16::MAX {
        let random = u32::from(k) << 16;
        match rule.pick_backend(random) {
            BackendPick::Resolved { index, .. } | BackendPick::Unresolved { index, .. } => {
                counts[index] += 1
            }
            BackendPick::NoBackend => none += 1,
        }
    }
    let mut out: Vec<(String, u32)> = rule
        .backends()
        .iter()
        .zip(counts)
        .map(|(b, c)| (b.backend_ref.service.name.clone(), c))
        .collect();
    if none > 0 {
        out.push(("none".to_owned(), none));
    }
    out
}

fn first_rule(routes: &CompiledRoutes, r: &Req) -> std::sync::Arc<CompiledRule> {
    match routes.route(&r.summary()) {
        RouteOutcome::Matched(m) => m.rule,
        other => panic!("no match: {other:?}"),
    }
}

#[test]
fn weighted_picking_is_exactly_proportional() {
    let routes = compile(
        r#"
- name: w
  rules:
    - matches: [{path: {value: /http}}]
      backendRefs: [{name: echo-v1, weight: 70}, {name: echo-v2, weight: 30}]
    - matches: [{path: {value: /grpc}}]
      backendRefs: [{name: echo-v1, weight: 70}, {name: echo-v2, weight: 30}, {name: echo-v3, weight: 0}]
    - matches: [{path: {value: /canary}}]
      backendRefs: [{name: echo-v1, weight: 9}, {name: missing, weight: 1}]
    - matches: [{path: {value: /zero}}]
      backendRefs: [{name: echo-v1, weight: 0}, {name: echo-v2, weight: 0}]
    - matches: [{path: {value: /empty}}]
"#,
    );
    // 65,536 samples: 70 % is 45,875.2, 30 % is 19,660.8.
    let rule = first_rule(&routes, &req("GET", "/http", &[]));
    assert_eq!(
        shares(&rule),
        [("echo-v1".into(), 45_876), ("echo-v2".into(), 19_660)]
    );
    // GAMMA MeshGRPCRouteWeight: a weight-0 reference to a missing service changes nothing.
    let rule = first_rule(&routes, &req("GET", "/grpc", &[]));
    assert_eq!(
        shares(&rule),
        [
            ("echo-v1".into(), 45_876),
            ("echo-v2".into(), 19_660),
            ("echo-v3".into(), 0)
        ]
    );
    // A missing backend keeps its share, and that share is reported unresolved.
    let rule = first_rule(&routes, &req("GET", "/canary", &[]));
    assert_eq!(
        shares(&rule),
        [("echo-v1".into(), 58_983), ("missing".into(), 6_553)]
    );
    assert!(matches!(
        rule.pick_backend(u32::MAX),
        BackendPick::Unresolved { index: 1, .. }
    ));
    assert!(matches!(
        rule.pick_backend(0),
        BackendPick::Resolved { index: 0, .. }
    ));
    // All weights 0, or no backends: nothing to pick.
    for path in ["/zero", "/empty"] {
        let rule = first_rule(&routes, &req("GET", path, &[]));
        assert_eq!(rule.total_weight(), 0);
        assert_eq!(pick_backend(&rule, 12345), BackendPick::NoBackend, "{path}");
    }
}

/// A small deterministic generator (SplitMix64), so the test needs no dependency.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn weight_zero_is_never_picked_and_shares_follow_weights() {
    let mut state = 7;
    for _ in 0..300 {
        let n = 1 + (splitmix(&mut state) % 6) as usize;
        let weights: Vec<u32> = (0..n)
            .map(|_| match splitmix(&mut state) % 4 {
                0 => 0,
                1 => 1_000_000,
                _ => (splitmix(&mut state) % 100) as u32,
            })
            .collect();
        let refs: Vec<String> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| format!("{{name: b{i}, weight: {w}}}"))
            .collect();
        let routes = compile(&format!(
            "- name: r\n  rules: [{{backendRefs: [{}]}}]\n",
            refs.join(", ")
        ));
        let rule = first_rule(&routes, &req("GET", "/", &[]));
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let got = shares(&rule);
        for (i, &w) in weights.iter().enumerate() {
            let count = u64::from(got[i].1);
            // Each backend's share of 65,536 samples is its weight's share, to within one.
            let expected = u64::from(w) * 65_536;
            if total == 0 {
                assert_eq!(count, 0);
            } else {
                assert!(
                    count * total + total >= expected && count * total <= expected + total,
                    "{weights:?}: {got:?}"
                );
            }
            if w == 0 {
                assert_eq!(count, 0, "{weights:?}");
            }
        }
        // The edges of the random space too, and random values: never a weight-0 backend.
        for random in [0, 1, u32::MAX - 1, u32::MAX]
            .into_iter()
            .chain((0..200).map(|_| splitmix(&mut state) as u32))
        {
            match rule.pick_backend(random) {
                BackendPick::Resolved { index, .. } | BackendPick::Unresolved { index, .. } => {
                    assert_ne!(weights[index], 0, "{weights:?} {random}")
                }
                BackendPick::NoBackend => assert_eq!(total, 0),
            }
        }
    }
}

#[test]
fn mirror_sampling_follows_percent() {
    let mirror = |percent| RequestMirror {
        backend: ServiceName::new("default", "shadow").unwrap(),
        port: None,
        percent,
    };
    for percent in [0, 1, 5, 50, 100] {
        let sampled = (0..=u16::MAX)
            .filter(|&k| mirror_sampled(&mirror(percent), u32::from(k) << 16))
            .count();
        assert_eq!(
            sampled,
            (65_536 * percent as usize).div_ceil(100),
            "{percent}"
        );
    }
}

#[test]
fn explanations_say_what_won_and_why() {
    let routes = compile(
        r#"
- name: canary
  rules:
    - name: pinned
      matches: [{headers: [{name: x-canary, value: "true"}]}]
      backendRefs: [{name: echo-v2}]
    - backendRefs: [{name: echo-v1, weight: 90}, {name: echo-v2, weight: 10}]
"#,
    );
    let pinned = req("GET", "/hello", &[("x-canary", "true")]);
    assert_eq!(
        routes.explain(&pinned.summary()).to_string(),
        r#"GET /hello matched route "canary" rule 0 ("pinned") by matches[0] (path PathPrefix "/", header x-canary Exact "true"); it outranks route "canary" rule 1 its implicit match-all (path PathPrefix "/") on number of header matches (1 > 0)"#
    );
    let plain = req("GET", "/hello", &[]);
    assert_eq!(
        routes.explain(&plain.summary()).to_string(),
        r#"GET /hello matched route "canary" rule 1 by its implicit match-all (path PathPrefix "/"); no other match"#
    );

    let strict = compile(
        r#"
- name: api
  rules:
    - matches: [{path: {type: Exact, value: /v1}, method: POST}]
      backendRefs: [{name: echo-v1}]
    - matches: [{path: {value: /v2}, queryParams: [{name: debug, value: "1"}]}]
      backendRefs: [{name: echo-v2}]
"#,
    );
    let explanation = strict.explain(&req("GET", "/v2/x?debug=0", &[]).summary());
    assert!(matches!(explanation.outcome, RouteOutcome::NotFound));
    assert_eq!(
        explanation.to_string(),
        r#"no route of echo.default matched GET /v2/x; route "api" rule 0 matches[0]: path "/v2/x" is not "/v1"; route "api" rule 1 matches[0]: query parameter debug is missing or not Exact "1""#
    );
    let explanation = strict.explain(&req("GET", "/v1", &[]).summary());
    assert!(explanation.to_string().ends_with("method GET is not POST; route \"api\" rule 1 matches[0]: path \"/v1\" is not under \"/v2\""), "{explanation}");

    let grpc_routes = compile(
        r#"
- name: g
  kind: grpc
  rules: [{matches: [{method: {service: a.B, method: C}}], backendRefs: [{name: echo-v1}]}]
"#,
    );
    assert_eq!(
        grpc_routes
            .explain(&grpc("/a.B/D", &[]).summary())
            .to_string(),
        r#"no route of echo.default matched gRPC /a.B/D; route "g" rule 0 matches[0]: method "D" does not match Exact "C""#
    );
    assert_eq!(
        compile("[]")
            .explain(&req("GET", "/", &[]).summary())
            .to_string(),
        "no routes are attached to echo.default: GET / goes to the service's own endpoints"
    );
}

#[test]
fn the_ranked_order_and_each_attempt_agree_with_routing() {
    let routes = compile(
        r#"
- name: canary
  rules:
    - backendRefs: [{name: echo-v1}]
    - name: pinned
      matches: [{headers: [{name: x-canary, value: "true"}]}, {path: {type: Exact, value: /v2}}]
      backendRefs: [{name: echo-v2}]
"#,
    );
    let order: Vec<(usize, Option<usize>, String)> = routes
        .ranked(crate::snapshot::RouteKind::Http)
        .into_iter()
        .map(|m| (m.rule.rule_index(), m.match_index, m.conditions))
        .collect();
    assert_eq!(
        order,
        [
            (1, Some(1), r#"path Exact "/v2""#.to_owned()),
            (
                1,
                Some(0),
                r#"path PathPrefix "/", header x-canary Exact "true""#.to_owned()
            ),
            (0, None, r#"path PathPrefix "/""#.to_owned()),
        ]
    );
    assert!(routes.ranked(crate::snapshot::RouteKind::Grpc).is_empty());

    let plain = req("GET", "/hello", &[]);
    let attempts = routes.attempts(&plain.summary());
    let failed: Vec<Option<&str>> = attempts.iter().map(|a| a.failed.as_deref()).collect();
    assert_eq!(
        failed,
        [
            Some(r#"path "/hello" is not "/v2""#),
            Some(r#"header x-canary is missing or not Exact "true""#),
            None,
        ]
    );
    let RouteOutcome::Matched(matched) = routes.route(&plain.summary()) else {
        panic!("matched");
    };
    let last = &attempts[2].candidate;
    assert_eq!(
        (last.rule.rule_index(), last.match_index),
        (matched.rule.rule_index(), matched.match_index)
    );
    // A request that matches the first candidate is checked against nothing else.
    assert_eq!(routes.attempts(&req("GET", "/v2", &[]).summary()).len(), 1);
}
