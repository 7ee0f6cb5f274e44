//! `apply(a, diff(a, b)) == b`, by property over endpoint sets, backends and routes, and the
//! size of an increment for one changed endpoint of a large service.

use proptest::prelude::*;
use prost::Message as _;

use super::*;

fn service(name: &str, port: u32) -> proto::ServiceRef {
    proto::ServiceRef {
        namespace: "default".into(),
        name: name.into(),
        port,
    }
}

fn endpoint(port: u16, weight: u32) -> proto::Endpoint {
    proto::Endpoint {
        address: format!("10.0.0.1:{port}"),
        weight,
        zone: String::new(),
        labels: Default::default(),
        identity: "spiffe://mesh.local/ns/default/sa/svc".into(),
        for_zones: Vec::new(),
    }
}

fn route(name: &str, backend: &str) -> proto::Route {
    proto::Route {
        name: name.into(),
        rules: vec![proto::RouteRule {
            backend_refs: vec![proto::BackendRef {
                service: Some(service(backend, 0)),
                weight: 1,
                port: 0,
            }],
            ..Default::default()
        }],
        kind: "http".into(),
        creation_timestamp: None,
    }
}

fn snapshot(version: u64, destinations: Vec<proto::Destination>) -> proto::Snapshot {
    proto::Snapshot {
        version,
        destinations,
        ..Default::default()
    }
}

fn destination(endpoints: Vec<proto::Endpoint>) -> proto::Destination {
    proto::Destination {
        service: Some(service("svc", 0)),
        found: true,
        endpoints,
        routes: Vec::new(),
        backends: Vec::new(),
    }
}

/// Endpoints with distinct addresses (ports 1 to 24) in any order, weights 1 to 3.
fn endpoints() -> impl Strategy<Value = Vec<proto::Endpoint>> {
    proptest::collection::btree_map(1u16..25, 1u32..4, 0..12)
        .prop_map(|m| {
            m.into_iter()
                .map(|(p, w)| endpoint(p, w))
                .collect::<Vec<_>>()
        })
        .prop_shuffle()
}

/// Endpoints where addresses may repeat.
fn endpoints_with_repeats() -> impl Strategy<Value = Vec<proto::Endpoint>> {
    proptest::collection::vec((1u16..6, 1u32..3), 0..8)
        .prop_map(|v| v.into_iter().map(|(p, w)| endpoint(p, w)).collect())
}

fn backends() -> impl Strategy<Value = Vec<proto::Backend>> {
    proptest::collection::btree_map(0u32..4, (endpoints(), any::<bool>()), 0..4)
        .prop_map(|m| {
            m.into_iter()
                .map(|(i, (endpoints, found))| proto::Backend {
                    service: Some(service(&format!("b{i}"), 0)),
                    endpoints: if found { endpoints } else { Vec::new() },
                    found,
                })
                .collect::<Vec<_>>()
        })
        .prop_shuffle()
}

fn routes() -> impl Strategy<Value = Vec<proto::Route>> {
    proptest::collection::vec((0u8..3, 0u8..4), 0..3).prop_map(|v| {
        v.into_iter()
            .map(|(r, b)| route(&format!("r{r}"), &format!("b{b}")))
            .collect()
    })
}

fn full_destination() -> impl Strategy<Value = proto::Destination> {
    (endpoints(), routes(), backends(), any::<bool>()).prop_map(
        |(endpoints, routes, backends, found)| proto::Destination {
            found,
            routes,
            backends,
            ..destination(endpoints)
        },
    )
}

/// Applies the increment from `a` to `b` and checks that `b` comes out.
fn round_trip(a: &proto::Snapshot, b: &proto::Snapshot) {
    let increment = diff(a, b).expect("same destinations: an increment");
    assert_eq!(increment.base_version, a.version);
    assert!(increment.destinations.is_empty());
    let mut state = a.clone();
    apply(&mut state, increment).expect("applies");
    assert_eq!(&state, b);
}

proptest! {
    #[test]
    fn applying_the_delta_of_endpoint_sets_gives_the_new_set(a in endpoints(), b in endpoints()) {
        round_trip(
            &snapshot(1, vec![destination(a)]),
            &snapshot(2, vec![destination(b)]),
        );
    }

    #[test]
    fn repeated_addresses_still_round_trip(
        a in endpoints_with_repeats(),
        b in endpoints_with_repeats(),
    ) {
        round_trip(
            &snapshot(1, vec![destination(a)]),
            &snapshot(2, vec![destination(b)]),
        );
    }

    #[test]
    fn applying_the_delta_of_routes_and_backends_gives_the_new_destination(
        a in full_destination(),
        b in full_destination(),
        other in endpoints(),
    ) {
        let second = proto::Destination {
            service: Some(service("other", 8080)),
            ..destination(other)
        };
        round_trip(
            &snapshot(4, vec![a, second.clone()]),
            &snapshot(9, vec![b, second]),
        );
    }
}

#[test]
fn one_endpoint_of_a_thousand_costs_about_one_endpoint() {
    let many: Vec<_> = (1..=1000).map(|p| endpoint(p, 1)).collect();
    let mut changed = many.clone();
    changed[500].weight = 2;
    let a = snapshot(1, vec![destination(many)]);
    let b = snapshot(2, vec![destination(changed.clone())]);
    let increment = diff(&a, &b).expect("an increment");
    let one = changed[500].encoded_len();
    assert!(
        increment.encoded_len() <= 2 * one + 64,
        "{} bytes for one endpoint of {one}",
        increment.encoded_len()
    );
    // Added in the middle, removed: positions keep the order exact.
    let mut moved = changed;
    moved.remove(10);
    moved.insert(700, endpoint(2000, 1));
    round_trip(&b, &snapshot(3, vec![destination(moved)]));
}

#[test]
fn unchanged_parts_are_left_out_and_a_gap_is_refused() {
    let a = snapshot(3, vec![destination(vec![endpoint(1, 1)])]);
    let mut b = a.clone();
    b.version = 4;
    let increment = diff(&a, &b).expect("an increment");
    assert!(increment.changes.is_empty(), "nothing changed");
    let mut stale = a.clone();
    stale.version = 2;
    assert_eq!(
        apply(&mut stale, increment),
        Err(DeltaError::Gap {
            version: 4,
            base: 3,
            have: 2
        })
    );
}

#[test]
fn what_an_increment_cannot_say_is_a_full_snapshot() {
    let a = snapshot(1, vec![destination(vec![])]);
    let other = proto::Destination {
        service: Some(service("other", 0)),
        ..destination(vec![])
    };
    assert_eq!(
        diff(&a, &snapshot(2, vec![other])),
        None,
        "another destination"
    );
    let zoned = proto::Snapshot {
        zone: "a".into(),
        ..a.clone()
    };
    assert_eq!(diff(&zoned, &a), None, "zone back to unknown");
    assert!(diff(&a, &zoned).is_some(), "a zone learnt");
    let unknown = proto::Snapshot {
        base_version: 1,
        version: 2,
        changes: vec![proto::DestinationChange {
            service: Some(service("nowhere", 0)),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut state = a.clone();
    let err = apply(&mut state, unknown).expect_err("unknown destination");
    assert!(err.to_string().starts_with("changes[0].service: "), "{err}");
}
