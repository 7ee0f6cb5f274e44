//! End-user authentication in the config and on the wire: request authentications and
//! principal conditions validated with field paths, evaluated by authorization, and carried
//! through the wire unchanged.

use http::{HeaderMap, Method, Uri};

use crate::authz::{AuthzRequest, Reason, Verdict};
use crate::fixtures::{name, parse};
use crate::jwt::{Principal, Verifier};
use crate::proto;
use crate::route::RequestSummary;
use crate::snapshot::Snapshot;
use crate::testing::jwt::{TestKey, claims, jwks, now};
use crate::testing::trust_domain;

const ISS: &str = "https://issuer.test";

fn config(key: &TestKey) -> String {
    format!(
        r#"
services:
  - name: api
    defaultPolicy: all-authenticated
requestAuthentications:
  - name: users
    target: {{service: api}}
    jwtRules:
      - issuer: {ISS}
        audiences: [api]
        jwks: '{jwks}'
      - issuer: https://other.test
        jwksUri: http://127.0.0.1:9/jwks.json
        fromHeaders: [{{name: X-Jwt}}]
policies:
  - name: admins
    target: {{service: api}}
    action: ALLOW
    rules:
      - from: {{identities: ["*"]}}
        principal:
          requestPrincipals: ["{ISS}/*"]
          claims: [{{name: groups, values: [admin]}}]
      - from: {{identities: ["*"]}}
        principal: {{requestPrincipals: ["{ISS}/bob"]}}
        to: {{paths: [/bob]}}
      - from: {{identities: ["*"]}}
        to: {{paths: [/public]}}
"#,
        jwks = jwks(&[key])
    )
}

fn principal(sub: &str, groups: &[&str]) -> Principal {
    let mut claims = serde_json::Map::new();
    claims.insert("groups".to_owned(), serde_json::json!(groups));
    Principal {
        issuer: ISS.into(),
        subject: sub.to_owned(),
        claims,
    }
}

#[test]
fn rules_on_principals_decide_with_and_without_a_token() {
    let key = TestKey::es256("k");
    let valid = parse(&config(&key)).validate(&trust_domain()).unwrap();
    let inbound = valid.inbound(&name("api.default"));
    assert_eq!(inbound.jwt_rules.len(), 2);
    assert_eq!(
        valid.jwks_uris().collect::<Vec<_>>(),
        ["http://127.0.0.1:9/jwks.json"]
    );
    let peer = crate::SpiffeId::parse("spiffe://mesh.local/ns/web/sa/web").unwrap();
    let (admin, bob, carol) = (
        principal("alice", &["dev", "admin"]),
        principal("bob", &[]),
        principal("carol", &["dev"]),
    );
    let cases: [(&str, Option<&Principal>, Verdict, &str); 7] = [
        ("/any", Some(&admin), Verdict::Allow, "rules[0]"),
        ("/any", Some(&carol), Verdict::Deny, "no ALLOW"),
        ("/any", None, Verdict::Deny, "no ALLOW"),
        ("/bob", Some(&bob), Verdict::Allow, "rules[1]"),
        ("/bob", Some(&carol), Verdict::Deny, "no ALLOW"),
        ("/public", None, Verdict::Allow, "rules[2]"),
        ("/public", Some(&carol), Verdict::Allow, "rules[2]"),
    ];
    for (path, principal, verdict, why) in cases {
        let uri: Uri = path.parse().unwrap();
        let headers = HeaderMap::new();
        let summary = RequestSummary::new(&Method::GET, &uri, &headers);
        let mut request = AuthzRequest::new(&summary, Some(&peer));
        if let Some(principal) = principal {
            request = request.with_principal(principal);
        }
        let decision = inbound.evaluate(&request);
        assert_eq!(decision.verdict, verdict, "{path} {principal:?}");
        assert!(decision.to_string().contains(why), "{path}: {decision}");
        if verdict == Verdict::Allow {
            assert!(matches!(decision.reason, Reason::Policy { .. }));
        }
    }
}

#[test]
fn request_authentications_report_every_error_with_its_path() {
    let yaml = r#"
services:
  - name: api
requestAuthentications:
  - name: Bad_Name
    target: {service: api, route: r}
    jwtRules:
      - issuer: ""
        audiences: [""]
      - issuer: https://a.test
        jwksUri: ftp://x
        jwks: "{}"
        fromHeaders: [{name: "bad header"}, {name: x, prefix: "PPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPPP"}]
  - name: ghost
    target: {service: nope}
    jwtRules: []
  - name: dup
    target: {service: api}
    jwtRules:
      - {issuer: https://b.test, jwksUri: "file:///keys.json"}
      - {issuer: https://b.test, jwksUri: "https://b.test/jwks"}
policies:
  - name: p
    target: {service: api}
    action: ALLOW
    rules:
      - from: {identities: ["*"]}
        principal:
          requestPrincipals: ["a*b", "nobody"]
          claims: [{name: groups, values: []}]
"#;
    let errors = parse(yaml).validate(&trust_domain()).unwrap_err();
    let got: Vec<String> = errors.errors().iter().map(|e| e.path.clone()).collect();
    let want = [
        "policies[0].rules[0].principal.requestPrincipals[0]",
        "policies[0].rules[0].principal.requestPrincipals[1]",
        "policies[0].rules[0].principal.claims[0].values",
        "requestAuthentications[0].name",
        "requestAuthentications[0].target.route",
        "requestAuthentications[0].jwtRules[0].issuer",
        "requestAuthentications[0].jwtRules[0].audiences[0]",
        "requestAuthentications[0].jwtRules[0]",
        "requestAuthentications[0].jwtRules[1]",
        "requestAuthentications[0].jwtRules[1].jwksUri",
        "requestAuthentications[0].jwtRules[1].jwks",
        "requestAuthentications[0].jwtRules[1].fromHeaders[0].name",
        "requestAuthentications[0].jwtRules[1].fromHeaders[1].prefix",
        "requestAuthentications[1].jwtRules",
        "requestAuthentications[1].target.service",
        "requestAuthentications[2].jwtRules[1].issuer",
    ];
    assert_eq!(got, want, "{errors}");
}

#[test]
fn issuers_and_principal_conditions_cross_the_wire_and_verify_on_arrival() {
    let key = TestKey::ed25519("k");
    let valid = parse(&config(&key)).validate(&trust_domain()).unwrap();
    let model = Snapshot {
        inbound: Some(valid.inbound(&name("api.default"))),
        ..Snapshot::default()
    };
    let wire = proto::Snapshot::from(&model);
    let bytes = prost::Message::encode_to_vec(&wire);
    let decoded: proto::Snapshot = prost::Message::decode(bytes.as_slice()).unwrap();
    let back = Snapshot::try_from(decoded).unwrap();
    assert_eq!(back, model);

    let verifier = Verifier::new(&back.inbound.unwrap().jwt_rules).unwrap();
    let mut headers = HeaderMap::new();
    let token = key.sign(&claims(ISS, "alice", "api", now() + 60));
    headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
    let principal = verifier.verify(&headers, now()).unwrap().unwrap();
    assert_eq!(principal.subject, "alice");

    // A JWK Set the wire carries that does not parse is refused on arrival (NACKed).
    let mut bad = proto::Snapshot::from(&model);
    bad.inbound.as_mut().unwrap().jwt_rules[0].jwks = "{\"keys\": 1}".to_owned();
    let error = Snapshot::try_from(bad).unwrap_err().to_string();
    assert!(error.contains("inbound.jwtRules[0].jwks"), "{error}");
}
