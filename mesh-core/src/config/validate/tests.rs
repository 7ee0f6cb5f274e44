//! Tests of config validation: a good config projected to destinations, and a bad one that
//! reports every error with its exact path.

use super::*;
use crate::spiffe::SpiffeId;

fn td() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

fn parse(yaml: &str) -> MeshConfig {
    serde_yaml::from_str(yaml).unwrap()
}

fn name(s: &str) -> ServiceName {
    s.parse().unwrap()
}

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
    let valid = parse(GOOD).validate(&td()).unwrap();
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
    assert_eq!(unknown, Destination::not_found(name("nope.default")));
}

#[test]
fn empty_config_is_valid() {
    let valid = MeshConfig::default().validate(&td()).unwrap();
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
    let errors = parse(yaml).validate(&td()).unwrap_err();
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
