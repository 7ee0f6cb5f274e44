//! Property tests (proptest): `SpiffeId` parsing and policy evaluation never panic and keep
//! their documented verdicts over generated input.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use http::{HeaderMap, Method, Uri};
use mesh_core::authz::{AuthzRequest, InboundPolicy, Verdict};
use mesh_core::config::MeshConfig;
use mesh_core::route::RequestSummary;
use mesh_core::snapshot::ServiceName;
use mesh_core::{SpiffeId, TrustDomain};
use proptest::prelude::*;

/// A trust domain the spec accepts: lowercase letters, digits, `.`, `-`, `_`.
fn trust_domain() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,30}"
}

/// A path segment the spec accepts, not `.` or `..`.
fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,12}".prop_filter("dot segments are refused", |s| s != "." && s != "..")
}

/// A DNS label (namespaces, service accounts).
fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?"
}

proptest! {
    #[test]
    fn any_text_parses_or_is_refused_without_panicking(text in ".{0,80}") {
        if let Ok(id) = SpiffeId::parse(&text) {
            // What is accepted is exactly what is written back.
            prop_assert_eq!(id.as_str(), text.as_str());
            prop_assert!(text.starts_with("spiffe://"));
        }
    }

    #[test]
    fn any_text_after_the_scheme_parses_or_is_refused(rest in "[ -~]{0,60}") {
        let text = format!("spiffe://{rest}");
        if let Ok(id) = SpiffeId::parse(&text) {
            prop_assert_eq!(id.to_string(), text);
            prop_assert!(!id.trust_domain().as_str().is_empty());
            prop_assert!(!id.trust_domain().as_str().chars().any(|c| c.is_ascii_uppercase()));
        }
    }

    #[test]
    fn valid_ids_round_trip(td in trust_domain(), path in prop::collection::vec(segment(), 0..5)) {
        let text = if path.is_empty() {
            format!("spiffe://{td}")
        } else {
            format!("spiffe://{td}/{}", path.join("/"))
        };
        let id = SpiffeId::parse(&text).unwrap();
        prop_assert_eq!(id.as_str(), text.as_str());
        prop_assert_eq!(id.trust_domain().as_str(), td.as_str());
        prop_assert_eq!(SpiffeId::parse(id.as_str()).unwrap(), id);
    }

    #[test]
    fn service_account_ids_keep_their_parts(td in trust_domain(), ns in label(), sa in label()) {
        let id = SpiffeId::from_service_account(&TrustDomain::new(&td).unwrap(), &ns, &sa).unwrap();
        prop_assert_eq!(id.namespace(), Some(ns.as_str()));
        prop_assert_eq!(id.service_account(), Some(sa.as_str()));
        prop_assert_eq!(id.as_str(), format!("spiffe://{td}/ns/{ns}/sa/{sa}"));
    }
}

/// The policies the evaluation properties run against.
const POLICIES: &str = r#"
services:
  - name: shop
    defaultPolicy: deny
    exemptPaths: [/healthz]
policies:
  - name: no-legacy
    target: {service: shop}
    action: DENY
    rules:
      - from: {serviceAccounts: [default/legacy]}
  - name: web-reads
    target: {service: shop}
    action: ALLOW
    rules:
      - from: {namespaces: [web]}
        to: {methods: [GET]}
"#;

fn shop_policy() -> InboundPolicy {
    let td = TrustDomain::new("mesh.local").unwrap();
    let config: MeshConfig = serde_yaml::from_str(POLICIES).unwrap();
    let valid = config.validate(&td).unwrap();
    valid.inbound(&"shop.default".parse::<ServiceName>().unwrap())
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::DELETE),
        Just(Method::PUT)
    ]
}

fn verdict(
    policy: &InboundPolicy,
    peer: Option<&SpiffeId>,
    method: &Method,
    path: &str,
) -> Verdict {
    let uri: Uri = path.parse().unwrap();
    let headers = HeaderMap::new();
    let summary = RequestSummary::new(method, &uri, &headers);
    policy.evaluate(&AuthzRequest::new(&summary, peer)).verdict
}

proptest! {
    #[test]
    fn evaluation_keeps_its_documented_verdicts(
        ns in label(),
        sa in label(),
        method in method(),
        path in "(/[a-z0-9]{1,8}){1,4}",
        authenticated in any::<bool>(),
    ) {
        let policy = shop_policy();
        let td = TrustDomain::new("mesh.local").unwrap();
        let id = SpiffeId::from_service_account(&td, &ns, &sa).unwrap();
        let peer = authenticated.then_some(&id);
        let got = verdict(&policy, peer, &method, &path);
        let expected = if path == "/healthz" {
            // Exempt paths always pass.
            Verdict::Allow
        } else if authenticated && ns == "default" && sa == "legacy" {
            // DENY first.
            Verdict::Deny
        } else if authenticated && ns == "web" && method == Method::GET {
            Verdict::Allow
        } else {
            // An ALLOW policy applies and none matched (and the default is deny anyway).
            Verdict::Deny
        };
        prop_assert_eq!(got, expected, "peer {:?} {} {}", peer, method, path);
        // The exempt path passes for anyone, whatever the method.
        prop_assert_eq!(verdict(&policy, peer, &method, "/healthz"), Verdict::Allow);
    }

    #[test]
    fn the_deny_policy_wins_over_any_allow(method in method(), path in "(/[a-z0-9]{1,8}){1,4}") {
        prop_assume!(path != "/healthz");
        let policy = shop_policy();
        let td = TrustDomain::new("mesh.local").unwrap();
        let legacy = SpiffeId::from_service_account(&td, "default", "legacy").unwrap();
        prop_assert_eq!(verdict(&policy, Some(&legacy), &method, &path), Verdict::Deny);
    }
}
