//! Config fixtures and small parsers shared by the crate's unit tests (the test CA, the
//! trust domain and CSRs are in [`crate::testing`], shared with every crate).

use crate::config::MeshConfig;
use crate::snapshot::ServiceName;

/// A config as YAML parses it (not validated).
pub(crate) fn parse(yaml: &str) -> MeshConfig {
    serde_yaml::from_str(yaml).unwrap()
}

/// A service name `name.namespace` (or `name`).
pub(crate) fn name(s: &str) -> ServiceName {
    s.parse().unwrap()
}

/// A canary route with every kind of field, in the shape users write.
pub(crate) const ROUTES: &str = r#"
services:
  - name: greeter
    endpoints:
      - address: 10.0.0.1:8080
        identity: spiffe://cluster.local/ns/default/sa/greeter
    routes:
      - name: canary
        creationTimestamp: "2024-05-01T10:00:00Z"
        rules:
          - name: pinned
            matches:
              - headers: [{name: x-canary, value: "true"}]
            backendRefs: [{name: greeter-v2, port: 8080}]
            hedging: {maxAttempts: 3, delay: 20ms, nonFatalCodes: [503]}
          - name: split
            matches:
              - path: {type: PathPrefix, value: /api}
                method: POST
                headers: [{type: RegularExpression, name: X-User, value: "user-[0-9]+"}]
                queryParams: [{name: debug, value: "1"}]
              - path: {type: Exact, value: /health}
              - path: {type: RegularExpression, value: "/v[0-9]+/.*"}
            filters:
              - type: RequestHeaderModifier
                requestHeaderModifier:
                  set: [{name: X-Route, value: canary}]
                  add: [{name: X-Trace, value: "on"}]
                  remove: [X-Internal]
              - type: ResponseHeaderModifier
                responseHeaderModifier: {set: [{name: X-Served-By, value: mesh}]}
              - type: RequestMirror
                requestMirror: {backendRef: {name: shadow, port: 80}, percent: 5}
            backendRefs:
              - {name: greeter-v1, weight: 90}
              - {name: greeter-v2, weight: 10}
            timeouts: {request: 10s, backendRequest: 500ms}
            retry: {codes: [502, 503], attempts: 2, backoff: 100ms}
      - name: grpc
        kind: grpc
        creationTimestamp: 1700000000
        rules:
          - matches:
              - method: {service: helloworld.Greeter, method: SayHello}
                headers: [{name: x-tenant, value: a}]
              - method: {type: RegularExpression, method: "Say.*"}
            backendRefs: [{name: greeter-v2}]
            retry: {statuses: [UNAVAILABLE, RESOURCE_EXHAUSTED], backoff: 1s}
  - name: greeter-v1
    endpoints:
      - address: 10.0.0.2:8080
        identity: spiffe://cluster.local/ns/default/sa/greeter
  - name: greeter-v2
    endpoints:
      - address: 10.0.0.3:8080
        identity: spiffe://cluster.local/ns/default/sa/greeter
"#;
