//! Table-driven tests of policy evaluation, over policies written as users write them (YAML
//! through config validation), and of policy validation with field paths.

use http::{HeaderMap, HeaderValue, Method, Uri};

use super::*;
use crate::config::MeshConfig;
use crate::route::RequestSummary;
use crate::spiffe::SpiffeId;

use crate::fixtures::{name, parse};
use crate::testing::trust_domain;

/// Every kind of source, operation, default, exemption and mode, across a few services.
const POLICIES: &str = r#"
defaultPolicy: all-authenticated
services:
  - name: open
    defaultPolicy: all-unauthenticated
  - name: authn
  - name: closed
    defaultPolicy: deny
    exemptPaths: [/healthz, /grpc.health.v1.Health/Check, /ready/*]
  - name: watched
    defaultPolicy: audit
  - name: audited
    defaultPolicy: audit
  - name: trial
    defaultPolicy: deny
  - name: shop
    mtls: permissive
    defaultPolicy: deny
    exemptPaths: [/healthz]
    routes:
      - name: admin
        rules: [{matches: [{path: {type: PathPrefix, value: /admin}}]}]
policies:
  - name: block-legacy
    target: {service: shop}
    action: DENY
    rules:
      - from: {serviceAccounts: [legacy/batch]}
  - name: no-deletes-from-web
    target: {service: shop, namespace: default}
    action: DENY
    rules:
      - from: {namespaces: [web]}
        to: {methods: [DELETE]}
  - name: shop-reads
    target: {service: shop}
    action: ALLOW
    rules:
      - from: {identities: ["spiffe://mesh.local/ns/web/*"]}
        to: {methods: [GET, DELETE], paths: [/items, /items/*]}
      - from: {identities: [spiffe://mesh.local/ns/ops/sa/oncall]}
      - from: {unauthenticated: true}
        to: {paths: [/public/*]}
      - from: {identities: ["*"]}
        to:
          grpc: [{service: shop.Catalog, method: List}, {service: shop.Search}]
          ports: [8443]
  - name: admins
    target: {service: shop, route: admin}
    action: ALLOW
    rules:
      - from: {serviceAccounts: [ops/admin]}
  - name: trial-deny
    target: {service: shop}
    action: DENY
    mode: audit
    rules:
      - from: {namespaces: [trial]}
  - name: rollout
    target: {service: audited}
    action: ALLOW
    mode: audit
    rules:
      - from: {namespaces: [web]}
  - name: trial-allow
    target: {service: trial}
    action: ALLOW
    mode: audit
    rules:
      - from: {namespaces: [web]}
"#;

/// One request of the table.
struct Case {
    service: &'static str,
    /// `ns/sa` of a caller in the mesh's trust domain, a full SPIFFE ID, or `None`.
    peer: Option<&'static str>,
    method: &'static str,
    path: &'static str,
    grpc: bool,
    port: Option<u16>,
    route: Option<&'static str>,
    /// `verdict label[rule] (audit: allow|deny label[rule])`.
    expect: &'static str,
}

const fn http(
    service: &'static str,
    peer: Option<&'static str>,
    method: &'static str,
    path: &'static str,
    expect: &'static str,
) -> Case {
    Case {
        service,
        peer,
        method,
        path,
        grpc: false,
        port: None,
        route: None,
        expect,
    }
}

const fn grpc(
    service: &'static str,
    peer: Option<&'static str>,
    path: &'static str,
    port: Option<u16>,
    expect: &'static str,
) -> Case {
    Case {
        service,
        peer,
        method: "POST",
        path,
        grpc: true,
        port,
        route: None,
        expect,
    }
}

const fn routed(mut case: Case, route: &'static str) -> Case {
    case.route = Some(route);
    case
}

fn label(reason: &Reason) -> String {
    match reason {
        Reason::Policy { policy, rule, .. } => format!("{policy}[{rule}]"),
        other => other.policy().to_owned(),
    }
}

fn describe(decision: &Decision) -> String {
    let mut s = format!("{} {}", decision.verdict, label(&decision.reason));
    if let Some(audit) = &decision.audit {
        let verdict = if audit.allowed { "allow" } else { "deny" };
        s.push_str(&format!(" (audit: {verdict} {})", label(&audit.reason)));
    }
    s
}

fn peer_id(peer: &str) -> SpiffeId {
    if peer.starts_with("spiffe://") {
        SpiffeId::parse(peer).unwrap()
    } else {
        let (ns, sa) = peer.split_once('/').unwrap();
        SpiffeId::from_service_account(&trust_domain(), ns, sa).unwrap()
    }
}

#[test]
fn evaluation_table() {
    const WEB: Option<&str> = Some("web/frontend");
    let cases = [
        // Defaults: the service's own, else the mesh-wide one.
        http(
            "open",
            None,
            "GET",
            "/",
            "allow default:all-unauthenticated",
        ),
        http("open", WEB, "GET", "/", "allow default:all-unauthenticated"),
        http("authn", WEB, "GET", "/", "allow default:all-authenticated"),
        http("authn", None, "GET", "/", "deny default:all-authenticated"),
        http(
            "unknown",
            None,
            "GET",
            "/",
            "deny default:all-authenticated",
        ),
        http("closed", WEB, "GET", "/", "deny default:deny"),
        http(
            "watched",
            None,
            "GET",
            "/",
            "audit default:audit (audit: deny default:audit)",
        ),
        // Exemptions: exact and prefix, before any policy and any default.
        http("closed", None, "GET", "/healthz", "allow exempt"),
        http("closed", None, "GET", "/healthz/", "deny default:deny"),
        http("closed", None, "GET", "/ready/db", "allow exempt"),
        http("closed", None, "GET", "/readyz", "deny default:deny"),
        grpc(
            "closed",
            None,
            "/grpc.health.v1.Health/Check",
            None,
            "allow exempt",
        ),
        http(
            "shop",
            Some("legacy/batch"),
            "GET",
            "/healthz",
            "allow exempt",
        ),
        // DENY first: service accounts, and namespaces with a method condition.
        http(
            "shop",
            Some("legacy/batch"),
            "GET",
            "/items",
            "deny block-legacy[0]",
        ),
        http(
            "shop",
            Some("legacy/other"),
            "GET",
            "/items",
            "deny no-allow-matched",
        ),
        http(
            "shop",
            WEB,
            "DELETE",
            "/items",
            "deny no-deletes-from-web[0]",
        ),
        // ALLOW: identity prefix with methods and exact and prefix paths.
        http("shop", WEB, "GET", "/items", "allow shop-reads[0]"),
        http("shop", WEB, "GET", "/items/42", "allow shop-reads[0]"),
        http("shop", WEB, "GET", "/itemsx", "deny no-allow-matched"),
        http("shop", WEB, "POST", "/items", "deny no-allow-matched"),
        http(
            "shop",
            Some("webx/frontend"),
            "GET",
            "/items",
            "deny no-allow-matched",
        ),
        http(
            "shop",
            Some("spiffe://mesh.local/ns/web/sa/a/extra"),
            "GET",
            "/items",
            "allow shop-reads[0]",
        ),
        // An exact identity, with no `to`: every request.
        http(
            "shop",
            Some("ops/oncall"),
            "PATCH",
            "/anything",
            "allow shop-reads[1]",
        ),
        http(
            "shop",
            Some("ops/oncall-2"),
            "GET",
            "/items",
            "deny no-allow-matched",
        ),
        // Unauthenticated callers pass only what admits them.
        http("shop", None, "GET", "/public/a", "allow shop-reads[2]"),
        http("shop", None, "GET", "/items", "deny no-allow-matched"),
        http("shop", WEB, "GET", "/public/a", "deny no-allow-matched"),
        // gRPC service and method, ports, and `*` (any authenticated caller).
        grpc(
            "shop",
            Some("billing/x"),
            "/shop.Catalog/List",
            Some(8443),
            "allow shop-reads[3]",
        ),
        grpc(
            "shop",
            Some("billing/x"),
            "/shop.Catalog/Delete",
            Some(8443),
            "deny no-allow-matched",
        ),
        grpc(
            "shop",
            Some("billing/x"),
            "/shop.Search/Anything",
            Some(8443),
            "allow shop-reads[3]",
        ),
        grpc(
            "shop",
            Some("billing/x"),
            "/shop.Catalog/List",
            Some(9000),
            "deny no-allow-matched",
        ),
        grpc(
            "shop",
            Some("billing/x"),
            "/shop.Catalog/List",
            None,
            "deny no-allow-matched",
        ),
        grpc(
            "shop",
            None,
            "/shop.Catalog/List",
            Some(8443),
            "deny no-allow-matched",
        ),
        // Not a gRPC request (no gRPC content type): gRPC conditions never match.
        Case {
            grpc: false,
            ..grpc(
                "shop",
                Some("billing/x"),
                "/shop.Catalog/List",
                Some(8443),
                "deny no-allow-matched",
            )
        },
        // Route-targeted policies apply only to requests that matched the route.
        routed(
            http(
                "shop",
                Some("ops/admin"),
                "POST",
                "/admin/x",
                "allow admins[0]",
            ),
            "admin",
        ),
        http(
            "shop",
            Some("ops/admin"),
            "POST",
            "/admin/x",
            "deny no-allow-matched",
        ),
        routed(
            http("shop", WEB, "GET", "/items", "allow shop-reads[0]"),
            "admin",
        ),
        // An audit-mode DENY: allowed, recorded as what enforcement would deny.
        grpc(
            "shop",
            Some("trial/x"),
            "/shop.Search/Find",
            Some(8443),
            "audit shop-reads[3] (audit: deny trial-deny[0])",
        ),
        http(
            "shop",
            Some("trial/x"),
            "GET",
            "/items",
            "deny no-allow-matched (audit: deny trial-deny[0])",
        ),
        // An audit-mode ALLOW under the audit default: the rollout to default-deny.
        http(
            "audited",
            WEB,
            "GET",
            "/",
            "allow default:audit (audit: allow rollout[0])",
        ),
        http(
            "audited",
            Some("other/x"),
            "GET",
            "/",
            "audit default:audit (audit: deny no-allow-matched)",
        ),
        http(
            "audited",
            None,
            "GET",
            "/",
            "audit default:audit (audit: deny no-allow-matched)",
        ),
        // An audit-mode ALLOW under `deny`: denied, with what enforcing it would allow.
        http(
            "trial",
            WEB,
            "GET",
            "/",
            "deny default:deny (audit: allow trial-allow[0])",
        ),
        http(
            "trial",
            Some("other/x"),
            "GET",
            "/",
            "deny default:deny (audit: deny no-allow-matched)",
        ),
    ];

    let valid = parse(POLICIES).validate(&trust_domain()).unwrap();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let inbound = valid.inbound(&name(&format!("{}.default", case.service)));
        let method = Method::from_bytes(case.method.as_bytes()).unwrap();
        let uri: Uri = case.path.parse().unwrap();
        let mut headers = HeaderMap::new();
        if case.grpc {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
        }
        let summary = RequestSummary::new(&method, &uri, &headers);
        let peer = case.peer.map(peer_id);
        let mut request = AuthzRequest::new(&summary, peer.as_ref());
        if let Some(port) = case.port {
            request = request.with_port(port);
        }
        if let Some(route) = case.route {
            request = request.with_route(route);
        }
        let got = describe(&inbound.evaluate(&request));
        if got != case.expect {
            failures.push(format!(
                "case {i} ({} {} {} from {:?}): got {got:?}, expected {:?}",
                case.service, case.method, case.path, case.peer, case.expect
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn inbound_policy_carries_the_service_settings() {
    let valid = parse(POLICIES).validate(&trust_domain()).unwrap();
    assert_eq!(valid.default_policy(), DefaultPolicy::AllAuthenticated);

    let shop = valid.inbound(&name("shop.default"));
    assert_eq!(shop.mtls, MtlsMode::Permissive);
    assert_eq!(shop.default_policy, DefaultPolicy::Deny);
    assert_eq!(shop.exempt_paths, [PathPattern::Exact("/healthz".into())]);
    let names: Vec<&str> = shop.policies.iter().map(|p| &*p.name).collect();
    assert_eq!(
        names,
        [
            "block-legacy",
            "no-deletes-from-web",
            "shop-reads",
            "admins",
            "trial-deny"
        ],
        "only the service's own policies, in config order"
    );
    assert_eq!(shop.policies[3].route.as_deref(), Some("admin"));
    assert_eq!(
        shop.policies[2].rules[0].from.identities,
        [IdentityMatch::Prefix(
            "spiffe://mesh.local/ns/web/".to_owned()
        )],
        "the wildcard is compiled into a prefix"
    );

    let authn = valid.inbound(&name("authn.default"));
    assert_eq!(
        (authn.mtls, authn.default_policy),
        (MtlsMode::Strict, DefaultPolicy::AllAuthenticated)
    );
    assert_eq!(
        valid.inbound(&name("nope.default")),
        InboundPolicy::defaults(name("nope.default"), DefaultPolicy::AllAuthenticated)
    );

    // Without a mesh-wide default, every caller is allowed: adding the mesh changes nothing.
    let bare = parse("services: [{name: a}]")
        .validate(&trust_domain())
        .unwrap();
    assert_eq!(
        bare.inbound(&name("a.default")).default_policy,
        DefaultPolicy::AllUnauthenticated
    );
}

#[test]
fn decisions_say_why_for_callers_and_telemetry() {
    let valid = parse(POLICIES).validate(&trust_domain()).unwrap();
    let method = Method::GET;
    let uri: Uri = "/items".parse().unwrap();
    let headers = HeaderMap::new();
    let summary = RequestSummary::new(&method, &uri, &headers);
    let decide = |service: &str, peer: Option<&str>| {
        let peer = peer.map(peer_id);
        valid
            .inbound(&name(service))
            .evaluate(&AuthzRequest::new(&summary, peer.as_ref()))
    };

    let denied = decide("shop.default", Some("legacy/batch"));
    assert!(!denied.is_allowed());
    assert_eq!(
        denied.to_string(),
        r#"denied by DENY policy "block-legacy" (rules[0])"#
    );
    assert_eq!(
        (
            denied.verdict.as_str(),
            denied.reason.kind(),
            denied.reason.policy()
        ),
        ("deny", "policy", "block-legacy")
    );

    let unmatched = decide("shop.default", Some("other/x"));
    assert_eq!(
        unmatched.to_string(),
        "denied: no ALLOW policy matched the request"
    );
    assert_eq!(unmatched.reason.kind(), "no-allow-matched");

    assert_eq!(
        decide("authn.default", None).to_string(),
        r#"denied by the default policy "all-authenticated": the caller has no identity"#
    );
    assert_eq!(
        decide("closed.default", None).to_string(),
        r#"denied by the default policy "deny""#
    );
    let audit = decide("watched.default", None);
    assert!(audit.is_allowed());
    assert_eq!(audit.verdict.as_str(), "audit");
    assert_eq!(
        audit.to_string(),
        r#"allowed by the default policy "audit"; audit: would be denied by the default policy "audit""#
    );
    let allowed = decide("shop.default", Some("web/a"));
    assert_eq!(
        allowed.to_string(),
        r#"allowed by ALLOW policy "shop-reads" (rules[0])"#
    );

    // A decision can travel in request extensions.
    fn extension<T: Clone + Send + Sync + 'static>(_: &T) {}
    extension(&allowed);
}

#[test]
fn bad_policies_report_every_error_with_its_path() {
    let yaml = r#"
defaultPolicy: allow-all
services:
  - name: shop
    mtls: optional
    defaultPolicy: Deny
    exemptPaths: [healthz, "/a*b", "/ok/*"]
    routes: [{name: admin}]
policies:
  - name: Bad_Name
    target: {service: nope}
    rules: []
  - name: p
    target: {service: shop, route: missing}
    action: allow
    mode: dry-run
    rules:
      - to: {methods: [GET]}
      - from: {}
        to: {}
      - from:
          identities:
            - spiffe://other.org/ns/a/sa/b
            - "spiffe://mesh.local/ns/a*/x*"
            - "spiffe://other.org/*"
            - not-an-id*
          namespaces: [Web]
          serviceAccounts: [web, "a/B", "a/b/c"]
        to:
          methods: [FETCH]
          paths: ["/x/**", "/a//b"]
          grpc: [{service: "bad service"}, {service: ok.Svc, method: "1x"}]
          ports: [0, 70000]
  - name: p
    target: {service: shop, namespace: "-x"}
    action: DENY
    rules: [{from: {unauthenticated: true}}]
"#;
    let errors = parse(yaml).validate(&trust_domain()).unwrap_err();
    let got: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    let expected = [
        r#"services[0].mtls: unknown mTLS mode "optional": expected strict or permissive"#,
        r#"services[0].defaultPolicy: unknown default policy "Deny": expected all-unauthenticated, all-authenticated, deny or audit"#,
        r#"services[0].exemptPaths[0]: invalid path "healthz": must start with '/'"#,
        r#"services[0].exemptPaths[1]: invalid path "/a*b": '*' is only allowed at the end"#,
        r#"policies[0].name: invalid policy name "Bad_Name": only lowercase letters, digits, '-' and '.' are allowed"#,
        r#"policies[0].target.service: unknown service "nope.default""#,
        "policies[0].action: required: ALLOW or DENY",
        "policies[0].rules: at least one rule is required",
        r#"policies[1].target.route: service "shop.default" has no route "missing""#,
        r#"policies[1].action: unknown action "allow": expected ALLOW or DENY"#,
        r#"policies[1].mode: unknown mode "dry-run": expected enforce or audit"#,
        "policies[1].rules[0].from: required: the callers the rule is about",
        "policies[1].rules[1].from: at least one of identities, namespaces, serviceAccounts and unauthenticated is required",
        "policies[1].rules[1].to: at least one of methods, paths, grpc and ports is required; omit `to` to match every request",
        r#"policies[1].rules[2].from.identities[0]: identity "spiffe://other.org/ns/a/sa/b" is not in trust domain "mesh.local""#,
        r#"policies[1].rules[2].from.identities[1]: invalid identity pattern "spiffe://mesh.local/ns/a*/x*": invalid SPIFFE ID "spiffe://mesh.local/ns/a*/x": path has the character '*'; only letters, digits, '.', '-' and '_' are allowed"#,
        r#"policies[1].rules[2].from.identities[2]: identity "spiffe://other.org/*" is not in trust domain "mesh.local""#,
        r#"policies[1].rules[2].from.identities[3]: invalid identity pattern "not-an-id*": invalid SPIFFE ID "not-an-id": must start with "spiffe://" (lowercase)"#,
        r#"policies[1].rules[2].from.namespaces[0]: invalid namespace "Web": only lowercase letters, digits and '-' are allowed"#,
        r#"policies[1].rules[2].from.serviceAccounts[0]: invalid service account "web": expected namespace/name"#,
        r#"policies[1].rules[2].from.serviceAccounts[1]: invalid service account "a/B": name "B": only lowercase letters, digits and '-' are allowed"#,
        r#"policies[1].rules[2].from.serviceAccounts[2]: invalid service account "a/b/c": name "b/c": only lowercase letters, digits and '-' are allowed"#,
        r#"policies[1].rules[2].to.methods[0]: unknown method "FETCH": expected one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH"#,
        r#"policies[1].rules[2].to.paths[0]: invalid path "/x/**": '*' is only allowed at the end"#,
        r#"policies[1].rules[2].to.paths[1]: invalid path "/a//b": must not contain '//'"#,
        r#"policies[1].rules[2].to.grpc[0].service: invalid gRPC service "bad service": must be dot-separated identifiers such as helloworld.Greeter"#,
        r#"policies[1].rules[2].to.grpc[1].method: invalid gRPC method "1x": must start with a letter or '_'"#,
        "policies[1].rules[2].to.ports[0]: port 0 is out of range 1 to 65535",
        "policies[1].rules[2].to.ports[1]: port 70000 is out of range 1 to 65535",
        r#"policies[2].target.namespace: invalid namespace "-x": must start and end with a letter or digit"#,
        r#"defaultPolicy: unknown default policy "allow-all": expected all-unauthenticated, all-authenticated, deny or audit"#,
    ];
    assert_eq!(got, expected);
}

#[test]
fn policy_names_are_unique_per_namespace() {
    let yaml = r#"
services: [{name: a}, {name: a, namespace: other}]
policies:
  - {name: p, target: {service: a}, action: ALLOW, rules: [{from: {namespaces: [x]}}]}
  - {name: p, target: {service: a, namespace: other}, action: ALLOW, rules: [{from: {namespaces: [x]}}]}
  - {name: p, target: {service: a}, action: DENY, rules: [{from: {namespaces: [y]}}]}
"#;
    let errors = parse(yaml).validate(&trust_domain()).unwrap_err();
    let got: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [r#"policies[2].name: duplicate policy name "p" (first at policies[0].name)"#]
    );
}

#[test]
fn unknown_policy_fields_are_refused_by_serde() {
    let err = serde_yaml::from_str::<MeshConfig>(
        "policies: [{name: p, target: {service: a}, action: ALLOW, rules: [{from: {principals: [x]}}]}]",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("unknown field `principals`"),
        "{err}"
    );
}

#[test]
fn matchers_compiled_by_hand_behave_like_the_config() {
    let id = SpiffeId::parse("spiffe://mesh.local/ns/shop/sa/cart").unwrap();
    assert!(IdentityMatch::Any.matches(&id));
    assert!(IdentityMatch::Prefix("spiffe://mesh.local/ns/shop/".to_owned()).matches(&id));
    assert!(!IdentityMatch::Prefix("spiffe://mesh.local/ns/shop/sa/cartx".to_owned()).matches(&id));
    assert!(IdentityMatch::Exact(id.clone()).matches(&id));
    assert!(
        ServiceAccountRef {
            namespace: "shop".to_owned(),
            name: "cart".to_owned()
        }
        .matches(&id)
    );
    let not_k8s = SpiffeId::parse("spiffe://mesh.local/workload/cart").unwrap();
    assert!(
        !Source {
            namespaces: vec!["workload".to_owned()],
            ..Default::default()
        }
        .matches(Some(&not_k8s)),
        "namespaces only match /ns/<ns>/sa/<sa> identities"
    );
    assert!(
        !Source {
            identities: vec![IdentityMatch::Any],
            ..Default::default()
        }
        .matches(None),
        "`*` is any authenticated caller"
    );
    assert_eq!(
        IdentityMatch::Prefix("spiffe://mesh.local/ns/shop/".to_owned()).to_string(),
        "spiffe://mesh.local/ns/shop/*"
    );
    assert_eq!(PathPattern::Prefix("/api/".into()).to_string(), "/api/*");
    assert!(
        GrpcOperation {
            service: "a.B".to_owned(),
            method: None
        }
        .matches("a.B", "Any")
    );
}
