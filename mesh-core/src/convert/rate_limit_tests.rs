//! Rate-limit policies from the config through validation to the wire and back, and the
//! errors (with their paths) of the config and of the wire.

use crate::config::MeshConfig;
use crate::fixtures::name;
use crate::proto;
use crate::rate::{ClientMatch, RateLimit};
use crate::snapshot::Snapshot;

const CONFIG: &str = r#"
services:
  - name: web
    routes: [{name: api}]
  - name: other
rateLimits:
  - name: web-total
    target: {service: web}
    total: {requestsPerSecond: 100}
  - name: web-api
    target: {service: web, route: api}
    identity: {requestsPerSecond: 10, burst: 20}
    overrides:
      - requestsPerSecond: 50
        clients:
          identities: [spiffe://mesh.local/ns/shop/sa/checkout]
          serviceAccounts: [ops/batch]
"#;

fn valid() -> crate::config::ValidConfig {
    let config: MeshConfig = serde_yaml::from_str(CONFIG).unwrap();
    config
        .validate(&crate::TrustDomain::new("mesh.local").unwrap())
        .unwrap()
}

#[test]
fn rate_limits_reach_their_service_and_round_trip() {
    let valid = valid();
    let inbound = valid.inbound(&name("web.default"));
    assert_eq!(inbound.rate_limits.len(), 2);
    let total = &inbound.rate_limits[0];
    assert_eq!(
        (&*total.name, total.route.as_deref(), total.total),
        (
            "web-total",
            None,
            Some(RateLimit {
                requests_per_second: 100,
                burst: 100
            })
        )
    );
    let api = &inbound.rate_limits[1];
    assert_eq!(api.route.as_deref(), Some("api"));
    assert_eq!(
        api.identity,
        Some(RateLimit {
            requests_per_second: 10,
            burst: 20
        })
    );
    assert_eq!(
        api.overrides[0].clients,
        [
            ClientMatch::Identity(
                crate::SpiffeId::parse("spiffe://mesh.local/ns/shop/sa/checkout").unwrap()
            ),
            ClientMatch::ServiceAccount {
                namespace: "ops".to_owned(),
                name: "batch".to_owned()
            }
        ]
    );
    assert!(valid.inbound(&name("other.default")).rate_limits.is_empty());

    let model = Snapshot {
        version: 3,
        inbound: Some(inbound),
        ..Snapshot::default()
    };
    let wire = proto::Snapshot::from(&model);
    let bytes = prost::Message::encode_to_vec(&wire);
    let decoded: proto::Snapshot = prost::Message::decode(bytes.as_slice()).unwrap();
    assert_eq!(Snapshot::try_from(decoded).unwrap(), model);
}

#[test]
fn the_config_reports_every_rate_limit_error_with_its_path() {
    let config: MeshConfig = serde_yaml::from_str(
        r#"
services:
  - name: web
rateLimits:
  - name: a
    target: {service: web}
  - name: a
    target: {service: nope}
    total: {requestsPerSecond: 0}
    identity: {requestsPerSecond: 10, burst: 2000000}
  - name: c
    target: {service: web, route: missing}
    overrides:
      - requestsPerSecond: 5
        clients: {}
      - requestsPerSecond: 5
        clients:
          identities: [spiffe://elsewhere/ns/a/sa/b]
          serviceAccounts: [justone]
"#,
    )
    .unwrap();
    let errors: Vec<String> = config
        .validate(&crate::TrustDomain::new("mesh.local").unwrap())
        .unwrap_err()
        .errors()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        [
            "rateLimits[0]: at least one of total, identity and overrides is required",
            r#"rateLimits[1].name: duplicate policy name "a" (first at rateLimits[0].name)"#,
            r#"rateLimits[1].target.service: unknown service "nope.default""#,
            "rateLimits[1].total.requestsPerSecond: 0 is out of range 1 to 1000000",
            "rateLimits[1].identity.burst: 2000000 is out of range 1 to 1000000",
            r#"rateLimits[2].target.route: service "web.default" has no route "missing""#,
            "rateLimits[2].overrides[0].clients: at least one of identities and serviceAccounts is required",
            r#"rateLimits[2].overrides[1].clients.identities[0]: identity "spiffe://elsewhere/ns/a/sa/b" is not in trust domain "mesh.local""#,
            r#"rateLimits[2].overrides[1].clients.serviceAccounts[0]: invalid service account "justone": expected namespace/name"#,
        ]
    );
}

#[test]
fn the_wire_rate_limits_are_validated_with_paths() {
    let model = Snapshot {
        inbound: Some(valid().inbound(&name("web.default"))),
        ..Snapshot::default()
    };
    let mut wire = proto::Snapshot::from(&model);
    {
        let limits = &mut wire.inbound.as_mut().unwrap().rate_limits;
        limits[0].total.as_mut().unwrap().requests_per_second = 0;
        limits[1].name = "web-total".to_owned();
        limits[1].overrides[0].limit = None;
        limits[1].overrides[0].service_accounts = vec!["x".to_owned()];
        // A burst of 0 is the default: not an error.
        limits[1].identity.as_mut().unwrap().burst = 0;
    }
    let got: Vec<String> = Snapshot::try_from(wire)
        .unwrap_err()
        .errors()
        .iter()
        .map(ToString::to_string)
        .collect();
    let p = "inbound.rateLimits";
    assert_eq!(
        got,
        [
            format!("{p}[0].total.requestsPerSecond: 0 is out of range 1 to 1000000"),
            format!(r#"{p}[1].name: duplicate policy name "web-total" (first at {p}[0].name)"#),
            format!("{p}[1].overrides[0].requestsPerSecond: 0 is out of range 1 to 1000000"),
            format!(
                r#"{p}[1].overrides[0].clients.serviceAccounts[0]: invalid service account "x": expected namespace/name"#
            ),
        ]
    );
}
