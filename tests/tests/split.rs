//! Weighted splits end to end: a route's `backendRefs` weights divide traffic within
//! statistical tolerance, weight 0 sends nothing, and a weight edited in the config file takes
//! effect while traffic runs without failing a call.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_tests::faults::scenarios;
use mesh_tests::greeter::{GreeterMode, replica_of};
use mesh_tests::web::{WebMode, get};
use mesh_tests::{Config, Harness, concurrently, listener};
use mesh_tonic::MeshTonicExt;

/// The share of `part` in `total`, in percent.
fn percent(part: usize, total: usize) -> f64 {
    part as f64 * 100.0 / total as f64
}

#[tokio::test]
async fn a_grpc_route_splits_90_10_and_weight_0_receives_nothing() {
    let (l1, l2, l3) = (
        listener().await.unwrap(),
        listener().await.unwrap(),
        listener().await.unwrap(),
    );
    let config = Config::new()
        .service("greeter", &[])
        .routes(
            "greeter",
            r#"
            - name: canary
              kind: grpc
              rules:
                - backendRefs:
                    - {name: greeter-v1, weight: 90}
                    - {name: greeter-v2, weight: 10}
                    - {name: greeter-v3, weight: 0}
            "#,
        )
        .service("greeter-v1", &[(l1.local_addr().unwrap(), "greeter")])
        .service("greeter-v2", &[(l2.local_addr().unwrap(), "greeter")])
        .service("greeter-v3", &[(l3.local_addr().unwrap(), "greeter")])
        .account("greeter")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let mode = GreeterMode::Normal;
    let v1 = harness.test_greeter(l1, "v1", "greeter", "greeter-v1", mode);
    let v2 = harness.test_greeter(l2, "v2", "greeter", "greeter-v2", mode);
    let v3 = harness.test_greeter(l3, "v3", "greeter", "greeter-v3", mode);
    let (v1, v2, v3) = tokio::try_join!(v1, v2, v3).unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let client = GreeterClient::new(client_mesh.channel("greeter").await.unwrap());

    const CALLS: usize = 1000;
    let replies = concurrently(CALLS, 16, move |i| {
        let mut client = client.clone();
        async move {
            let reply = client
                .say_hello(HelloRequest {
                    name: format!("call-{i}"),
                })
                .await
                .unwrap_or_else(|s| panic!("call {i} failed: {s:?}"));
            replica_of(&reply.into_inner().message).to_owned()
        }
    })
    .await;
    let mut counts = BTreeMap::<String, usize>::new();
    for replica in replies {
        *counts.entry(replica).or_default() += 1;
    }
    let v2_share = percent(counts.get("v2").copied().unwrap_or(0), CALLS);
    // 10 % of 1,000 calls has a standard deviation of under 1 point: ±5 points is > 5 sigma.
    assert!(
        (5.0..=15.0).contains(&v2_share),
        "v2 got {v2_share}%: {counts:?}"
    );
    assert_eq!(counts.values().sum::<usize>(), CALLS, "{counts:?}");
    assert_eq!(v1.greeter.received() + v2.greeter.received(), CALLS as u32);
    assert_eq!(v3.greeter.received(), 0, "weight 0 received calls");
    assert!(!counts.contains_key("v3"), "{counts:?}");
}

#[tokio::test]
async fn an_http_route_splits_70_30() {
    let (l1, l2) = (listener().await.unwrap(), listener().await.unwrap());
    let config = Config::new()
        .service("web", &[])
        .routes(
            "web",
            r#"
            - name: split
              rules:
                - backendRefs: [{name: web-v1, weight: 70}, {name: web-v2, weight: 30}]
            "#,
        )
        .service("web-v1", &[(l1.local_addr().unwrap(), "web")])
        .service("web-v2", &[(l2.local_addr().unwrap(), "web")])
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let v1 = harness.web(l1, "v1", "web", "web-v1", WebMode::Normal);
    let v2 = harness.web(l2, "v2", "web", "web-v2", WebMode::Normal);
    let (v1, v2) = tokio::try_join!(v1, v2).unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let client = client_mesh.client::<axum::body::Body>("web").await.unwrap();

    // 30 % of 2,000 calls has a standard deviation of about 1 point: ±5 points is ~5 sigma.
    const CALLS: usize = 2000;
    let replies = concurrently(CALLS, 16, move |i| {
        let client = client.clone();
        async move {
            let reply = get(&client, &format!("/split?call={i}")).await;
            assert_eq!(reply.status, http::StatusCode::OK, "call {i}: {reply:?}");
            reply.backend().unwrap().to_owned()
        }
    })
    .await;
    let v2_calls = replies.iter().filter(|r| *r == "v2").count();
    let v2_share = percent(v2_calls, CALLS);
    assert!((25.0..=35.0).contains(&v2_share), "v2 got {v2_share}%");
    assert_eq!(v1.log.count() + v2.log.count(), CALLS);
    assert_eq!(v2.log.count(), v2_calls);
}

#[tokio::test]
async fn a_weight_edited_in_the_config_file_takes_effect_without_failing_a_call() {
    let (l1, l2) = (listener().await.unwrap(), listener().await.unwrap());
    let (a1, a2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
    let with_weights = |v1: u32, v2: u32| scenarios::split(a1, a2, v1, v2);
    let harness = Harness::start(&with_weights(100, 0)).await.unwrap();
    let mode = GreeterMode::Normal;
    let v1 = harness.test_greeter(l1, "v1", "greeter", "greeter-v1", mode);
    let v2 = harness.test_greeter(l2, "v2", "greeter", "greeter-v2", mode);
    let (v1, v2) = tokio::try_join!(v1, v2).unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let client = GreeterClient::new(client_mesh.channel("greeter").await.unwrap());

    // Eight callers call back to back until told to stop, failing on any error.
    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = Vec::new();
    for t in 0..8 {
        let (mut client, stop) = (client.clone(), stop.clone());
        callers.push(tokio::spawn(async move {
            let mut replicas = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let reply = client
                    .say_hello(HelloRequest {
                        name: format!("t{t}c{i}"),
                    })
                    .await
                    .unwrap_or_else(|s| panic!("call {i} of caller {t} failed: {s:?}"));
                replicas.push(replica_of(&reply.into_inner().message).to_owned());
                i += 1;
            }
            replicas
        }));
    }

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(v2.greeter.received(), 0, "v2 had weight 0");
    assert!(v1.greeter.received() > 0, "no traffic before the edit");
    harness
        .reconfigure(&client_mesh, &with_weights(0, 100))
        .await
        .unwrap();
    // The client applies the snapshot right after the mesh receives it.
    let mut probe = client.clone();
    let mut switched = false;
    for _ in 0..100 {
        let reply = probe
            .say_hello(HelloRequest {
                name: "probe".into(),
            })
            .await
            .unwrap();
        if replica_of(&reply.into_inner().message) == "v2" {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(switched, "v2 never answered after the edit");
    let v1_after_switch = v1.greeter.received();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);

    let mut counts = BTreeMap::<String, usize>::new();
    for caller in callers {
        for replica in caller.await.unwrap() {
            *counts.entry(replica).or_default() += 1;
        }
    }
    // Every call succeeded (a failure panics its caller), both versions served, and once
    // the new weights were in force v1 got nothing more (calls in flight at the switch
    // excepted, at most one per caller).
    assert!(counts.get("v1").copied().unwrap_or(0) > 0, "{counts:?}");
    assert!(counts.get("v2").copied().unwrap_or(0) > 0, "{counts:?}");
    assert!(
        v1.greeter.received() <= v1_after_switch + 8,
        "v1 kept receiving calls after the switch: {} then {}",
        v1_after_switch,
        v1.greeter.received()
    );
    let after = concurrently(100, 8, move |i| {
        let mut client = client.clone();
        async move {
            let reply = client
                .say_hello(HelloRequest {
                    name: format!("after-{i}"),
                })
                .await
                .unwrap();
            replica_of(&reply.into_inner().message).to_owned()
        }
    })
    .await;
    assert!(after.iter().all(|r| r == "v2"), "{after:?}");
}
