//! `with_replicas` against validating the whole written config.

use std::collections::BTreeMap;

use super::*;
use crate::config::{EndpointSpec, MeshConfig};
use crate::fixtures::{name, parse};
use crate::testing::trust_domain_named;

/// `front.web` routes to `greeter.default`; `other.apps` stands alone in its namespace.
const CONFIG: &str = r#"
services:
  - name: front
    namespace: web
    endpoints:
      - address: 10.0.1.1:8080
        identity: spiffe://cluster.local/ns/web/sa/front
    routes:
      - name: to-greeter
        rules:
          - backendRefs:
              - name: greeter
                namespace: default
  - name: greeter
    endpoints:
      - address: 10.0.0.1:8080
        identity: spiffe://cluster.local/ns/default/sa/greeter
  - name: other
    namespace: apps
    endpoints:
      - address: 10.0.2.1:8080
        identity: spiffe://cluster.local/ns/apps/sa/other
instanceZones:
  default/greeter-1: zone-a
"#;

fn td() -> TrustDomain {
    trust_domain_named("cluster.local")
}

fn valid() -> ValidConfig {
    parse(CONFIG).validate(&td()).expect("valid")
}

fn endpoint(address: &str, sa: &str) -> EndpointSpec {
    EndpointSpec {
        address: address.to_owned(),
        weight: None,
        zone: String::new(),
        for_zones: Vec::new(),
        labels: BTreeMap::new(),
        identity: format!("spiffe://cluster.local/ns/default/sa/{sa}"),
    }
}

/// greeter.default as written, with `endpoints`.
fn greeter(valid: &ValidConfig, endpoints: Vec<EndpointSpec>) -> ServiceSpec {
    ServiceSpec {
        endpoints,
        ..valid
            .service_spec(&name("greeter.default"))
            .expect("in the config")
            .clone()
    }
}

#[test]
fn equals_validating_the_whole_config_and_shares_what_did_not_change() {
    let before = valid();
    let services = vec![greeter(
        &before,
        vec![
            endpoint("10.0.0.1:8080", "greeter"),
            endpoint("10.0.0.2:8080", "greeter"),
        ],
    )];
    let zones = vec![
        ZoneChange {
            namespace: "default".into(),
            instance: "greeter-2".into(),
            zone: Some("zone-b".into()),
        },
        ZoneChange {
            namespace: "default".into(),
            instance: "greeter-1".into(),
            zone: None,
        },
    ];
    let after = before
        .with_replicas(services.clone(), zones.clone(), &td())
        .expect("valid");
    let whole: MeshConfig = written_with(&before, &services, &zones);
    assert_eq!(after, whole.validate(&td()).expect("valid"));
    assert_eq!(after.spec(), whole);
    assert_eq!(
        after.destination(&name("greeter.default")).endpoints.len(),
        2
    );
    assert_eq!(after.zone_of("default", "greeter-2"), "zone-b");
    assert_eq!(after.zone_of("default", "greeter-1"), "");

    // What did not change is the same copy; what did, and what sends to it, is not.
    assert!(after.same_service(&before, &name("other.apps")));
    assert!(!after.same_service(&before, &name("greeter.default")));
    assert!(
        !after.same_service(&before, &name("front.web")),
        "front's destination carries greeter's endpoints as a backend"
    );
    assert_eq!(
        after.services.namespaces(),
        before.services.namespaces(),
        "no namespace added or lost"
    );

    // Unchanged replicas: the same config.
    let same = before
        .with_replicas(
            vec![greeter(&before, vec![endpoint("10.0.0.1:8080", "greeter")])],
            Vec::new(),
            &td(),
        )
        .expect("valid");
    assert!(same.same_service(&before, &name("greeter.default")));
    assert_eq!(same, before);
}

/// The errors `with_replicas` refuses `services` with, checked to be those a whole validation
/// of the same config gives.
fn refused_as_the_whole_would_be(before: &ValidConfig, services: &[ServiceSpec]) -> String {
    let Err(ReplicasError::Invalid(errors)) =
        before.with_replicas(services.to_vec(), Vec::new(), &td())
    else {
        panic!("the replicas must be refused");
    };
    let whole = written_with(before, services, &[])
        .validate(&td())
        .expect_err("the whole config is refused");
    assert_eq!(errors.to_string(), whole.to_string());
    whole.to_string()
}

#[test]
fn invalid_replicas_give_the_errors_validating_the_whole_would() {
    let before = valid();
    let services = vec![greeter(
        &before,
        vec![
            endpoint("10.0.0.1:8080", "greeter"),
            endpoint("not-an-address", "greeter"),
            endpoint("10.0.0.3:8080", "Bad_Account"),
        ],
    )];
    let errors = refused_as_the_whole_would_be(&before, &services);
    assert!(
        errors.contains("services[1].endpoints[1].address"),
        "{errors}"
    );
}

#[test]
fn replicas_that_overflow_a_sender_s_destination_are_refused_as_the_whole_would_be() {
    let before = valid();
    // Big labels so that a few hundred endpoints pass the size of one destination.
    let labels: BTreeMap<String, String> = (0..40)
        .map(|i| (format!("{i:0>300}"), "v".repeat(63)))
        .collect();
    let endpoints: Vec<EndpointSpec> = (0..300)
        .map(|i| EndpointSpec {
            labels: labels.clone(),
            ..endpoint(&format!("10.1.{}.{}:8080", i / 250, i % 250), "greeter")
        })
        .collect();
    let services = vec![greeter(&before, endpoints)];
    let errors = refused_as_the_whole_would_be(&before, &services);
    // greeter's own destination, and front's, which carries greeter as a backend.
    assert!(errors.contains("services[0]"), "{errors}");
    assert!(errors.contains("services[1]"), "{errors}");
}

#[test]
fn more_than_replicas_or_an_unknown_service_asks_for_a_whole_validation() {
    let before = valid();
    let mut moved = greeter(&before, Vec::new());
    moved.port = Some(81);
    let mut unknown = greeter(&before, Vec::new());
    unknown.name = "nobody".into();
    for spec in [moved, unknown] {
        assert!(matches!(
            before.with_replicas(vec![spec], Vec::new(), &td()),
            Err(ReplicasError::NotReplicasOnly(_))
        ));
    }
}
