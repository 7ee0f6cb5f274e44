//! Fuzzing the parsers that take outside input, with proptest (no nightly toolchain needed):
//! the config YAML and its validation, snapshots off the wire, and route matching over
//! request paths, methods and headers. Every input is either taken or refused with an error:
//! no panic, and no allocation out of proportion to the input (the binary runs under a heap
//! cap of [`HEAP_CAP`]; a larger allocation aborts it).
//!
//! CI runs the default number of cases (`PROPTEST_CASES`, 256 per property); a longer run is
//! `PROPTEST_CASES=20000 cargo test -p mesh-core --test fuzz --release`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::alloc::System;

use cap::Cap;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use mesh_core::TrustDomain;
use mesh_core::config::MeshConfig;
use mesh_core::proto;
use mesh_core::route::{CompiledRoutes, RequestSummary};
use mesh_core::snapshot::Snapshot;
use proptest::prelude::*;
use proptest::test_runner::Config as RunnerConfig;
use prost::Message;
use serde_yaml::{Mapping, Value};

// === a heap cap ===

/// The most heap the whole test binary may hold at once. Inputs here are at most a few KiB
/// and the properties run a few at a time: a parser that reserves by a length it was told
/// (a hostile length prefix, an alias bomb) would blow far past this, and the allocation
/// failure aborts the binary: the test fails loudly.
const HEAP_CAP: usize = 256 << 20;

#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, HEAP_CAP);

fn runner() -> RunnerConfig {
    // `PROPTEST_CASES` sets the number of cases (256 by default).
    RunnerConfig::default()
}

// === inputs ===

/// A config with a route of every kind, as users write it: mutations start from here so
/// that they reach the validation of deep fields, not only the YAML syntax.
const SEED: &str = r#"
services:
  - name: greeter
    port: 80
    endpoints:
      - address: 10.0.0.1:8080
        identity: spiffe://cluster.local/ns/default/sa/greeter
        zone: zone-a
        forZones: [zone-a]
        labels: {version: v1}
    routes:
      - name: canary
        creationTimestamp: "2024-05-01T10:00:00Z"
        rules:
          - name: split
            matches:
              - path: {type: PathPrefix, value: /api}
                method: POST
                headers: [{type: RegularExpression, name: X-User, value: "user-[0-9]+"}]
                queryParams: [{name: debug, value: "1"}]
              - path: {type: RegularExpression, value: "/v[0-9]+/.*"}
            filters:
              - type: RequestHeaderModifier
                requestHeaderModifier: {set: [{name: X-Route, value: canary}], remove: [X-Internal]}
              - type: RequestMirror
                requestMirror: {backendRef: {name: shadow, port: 80}, percent: 5}
            backendRefs: [{name: greeter-v1, weight: 90}, {name: greeter-v2, weight: 10}]
            timeouts: {request: 10s, backendRequest: 500ms}
            retry: {codes: [502, 503], attempts: 2, backoff: 100ms}
      - name: grpc
        kind: grpc
        rules:
          - matches: [{method: {service: helloworld.Greeter, method: SayHello}}]
            backendRefs: [{name: greeter-v2}]
  - name: greeter-v1
    endpoints: [{address: 10.0.1.1:8080, identity: spiffe://cluster.local/ns/default/sa/greeter}]
  - name: greeter-v2
    endpoints: [{address: 10.0.2.1:8080, identity: spiffe://cluster.local/ns/default/sa/greeter}]
  - name: shadow
    port: 80
policies:
  - name: reads
    target: {service: greeter}
    action: ALLOW
    rules:
      - from: {namespaces: [web], serviceAccounts: [default/legacy]}
        to: {methods: [GET], paths: ["/api/*"]}
instanceZones: {default/client-1: zone-a}
"#;

/// Words the config uses, so that generated mappings often have keys it knows.
const WORDS: &[&str] = &[
    "services",
    "name",
    "namespace",
    "port",
    "ports",
    "endpoints",
    "address",
    "identity",
    "zone",
    "forZones",
    "labels",
    "weight",
    "routes",
    "rules",
    "matches",
    "path",
    "type",
    "value",
    "method",
    "headers",
    "queryParams",
    "filters",
    "backendRefs",
    "timeouts",
    "request",
    "backendRequest",
    "retry",
    "codes",
    "attempts",
    "backoff",
    "kind",
    "policies",
    "target",
    "action",
    "from",
    "to",
    "methods",
    "paths",
    "mtls",
    "defaultPolicy",
    "exemptPaths",
    "identities",
    "requestMirror",
    "percent",
    "fraction",
    "PathPrefix",
    "Exact",
    "RegularExpression",
    "ALLOW",
    "DENY",
    "grpc",
    "10.0.0.9:80",
    "spiffe://cluster.local/ns/a/sa/b",
    "1s",
    "0ms",
    "99999h",
    "(a+)+$",
    "[",
    "*",
    "",
    "instanceZones",
    "default/x",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(WORDS).prop_map(Value::from),
        "[ -~]{0,24}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
    ]
}

fn yaml_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Sequence),
            prop::collection::vec((prop::sample::select(WORDS), inner), 0..6).prop_map(|entries| {
                Value::Mapping(
                    entries
                        .into_iter()
                        .map(|(k, v)| (Value::from(k), v))
                        .collect::<Mapping>(),
                )
            }),
        ]
    })
}

/// Replaces the node that `choices` lead to (from `root`) with `replacement`: at each
/// sequence or mapping, a choice either stops here (one in four) or descends into the child
/// it selects.
fn mutate(root: &mut Value, choices: &[u32], replacement: Value) {
    let mut node = root;
    for choice in choices {
        let len = match &*node {
            Value::Sequence(s) => s.len(),
            Value::Mapping(m) => m.len(),
            _ => 0,
        };
        if len == 0 || choice % 4 == 0 {
            break;
        }
        let index = (*choice as usize / 4) % len;
        node = match node {
            Value::Sequence(s) => &mut s[index],
            Value::Mapping(m) => m.values_mut().nth(index).unwrap(),
            _ => unreachable!("len is 0 for scalars"),
        };
    }
    *node = replacement;
}

/// Validates `config`; for a valid one, every destination goes to the wire and back
/// unchanged, and its routes compile.
fn check_config(config: &MeshConfig) -> Result<(), TestCaseError> {
    let td = TrustDomain::new("cluster.local").unwrap();
    let Ok(valid) = config.validate(&td) else {
        return Ok(());
    };
    let services: Vec<_> = valid.services().cloned().collect();
    let snapshot = Snapshot {
        version: 1,
        destinations: services.iter().map(|s| valid.destination(s)).collect(),
        inbound: services.first().map(|s| valid.inbound(s)),
        trust_bundle: Vec::new(),
        zone: valid.zone_of("default", "client-1").to_owned(),
    };
    let wire = proto::Snapshot::from(&snapshot);
    let back = Snapshot::try_from(proto::Snapshot::decode(&*wire.encode_to_vec()).unwrap()).ok();
    prop_assert_eq!(back, Some(snapshot.clone()));
    for destination in &snapshot.destinations {
        let _ = CompiledRoutes::new(destination);
    }
    Ok(())
}

// === properties ===

#[test]
fn any_text_as_a_config_is_parsed_or_refused() {
    proptest!(runner(), |(text in "(?s).{0,400}")| {
        if let Ok(config) = serde_yaml::from_str::<MeshConfig>(&text) {
            check_config(&config)?;
        }
    });
}

#[test]
fn generated_config_trees_are_validated_or_refused() {
    proptest!(runner(), |(tree in yaml_value())| {
        let mut root = Mapping::new();
        root.insert("services".into(), Value::Sequence(vec![tree.clone()]));
        for value in [tree, Value::Mapping(root)] {
            if let Ok(config) = serde_yaml::from_value::<MeshConfig>(value) {
                check_config(&config)?;
            }
        }
    });
}

#[test]
fn mutated_configs_are_validated_or_refused() {
    let seed: Value = serde_yaml::from_str(SEED).unwrap();
    // The seed itself is valid: mutations start from a config that reaches every check.
    let config: MeshConfig = serde_yaml::from_value(seed.clone()).unwrap();
    config
        .validate(&TrustDomain::new("cluster.local").unwrap())
        .unwrap();
    let mutation = (prop::collection::vec(any::<u32>(), 1..8), yaml_value());
    proptest!(runner(), |(mutations in prop::collection::vec(mutation, 1..4))| {
        let mut value = seed.clone();
        for (choices, replacement) in mutations {
            mutate(&mut value, &choices, replacement);
        }
        if let Ok(config) = serde_yaml::from_value::<MeshConfig>(value) {
            check_config(&config)?;
        }
    });
}

/// The seed's snapshot encoded as the control service sends it.
fn seed_wire() -> Vec<u8> {
    let config: MeshConfig = serde_yaml::from_str(SEED).unwrap();
    let valid = config
        .validate(&TrustDomain::new("cluster.local").unwrap())
        .unwrap();
    let services: Vec<_> = valid.services().cloned().collect();
    let snapshot = Snapshot {
        version: 7,
        destinations: services.iter().map(|s| valid.destination(s)).collect(),
        inbound: services.first().map(|s| valid.inbound(s)),
        trust_bundle: Vec::new(),
        zone: "zone-a".to_owned(),
    };
    proto::Snapshot::from(&snapshot).encode_to_vec()
}

#[test]
fn any_bytes_as_a_snapshot_are_decoded_or_refused() {
    let seed = seed_wire();
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..16);
    proptest!(runner(), |(
        noise in prop::collection::vec(any::<u8>(), 0..512),
        edits in edits,
        cut in any::<prop::sample::Index>(),
    )| {
        // Random bytes, and the real message with bytes overwritten and its tail cut.
        let mut mutated = seed.clone();
        for (at, byte) in edits {
            let i = at.index(mutated.len());
            mutated[i] = byte;
        }
        mutated.truncate(cut.index(mutated.len() + 1));
        for bytes in [noise, mutated] {
            if let Ok(wire) = proto::Snapshot::decode(&*bytes) {
                let _ = Snapshot::try_from(wire);
            }
            let _ = proto::WatchRequest::decode(&*bytes);
            let _ = proto::CertifyRequest::decode(&*bytes);
        }
    });
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(&["x-user", "x-canary", "content-type", "x-route", "te"][..])
            .prop_map(str::to_owned),
        "[a-z0-9-]{1,20}",
    ]
}

#[test]
fn any_request_is_routed_or_refused() {
    let config: MeshConfig = serde_yaml::from_str(SEED).unwrap();
    let valid = config
        .validate(&TrustDomain::new("cluster.local").unwrap())
        .unwrap();
    let routes = CompiledRoutes::new(&valid.destination(&"greeter.default".parse().unwrap()));
    proptest!(runner(), |(
        method in "[A-Z]{1,10}",
        path in "(/[ -~&&[^?# ]]{0,16}){0,6}(\\?[ -~&&[^# ]]{0,30})?",
        headers in prop::collection::vec((header_name(), "[ -~]{0,40}"), 0..8),
        grpc in any::<bool>(),
    )| {
        let (Ok(method), Ok(uri)) = (method.parse::<Method>(), path.parse::<Uri>()) else {
            return Ok(());
        };
        let mut map = HeaderMap::new();
        if grpc {
            map.insert("content-type", HeaderValue::from_static("application/grpc"));
        }
        for (name, value) in &headers {
            if let (Ok(name), Ok(value)) =
                (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str()))
            {
                map.append(name, value);
            }
        }
        let summary = RequestSummary::new(&method, &uri, &map);
        let _ = routes.route(&summary);
        let _ = routes.explain(&summary);
    });
}
