//! Multi-port services and consumer routes end to end: a client names one port of a service
//! (`greeter.default:7070`) and reaches that port's replicas and the routes bound to it; a
//! route in the caller's namespace (a consumer route) steers that caller only.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_tests::greeter::{GreeterMode, replica_of};
use mesh_tests::{Config, Harness, listener, spiffe};
use mesh_tonic::MeshTonicExt;
use mesh_tower::Mesh;

/// Which replica answers `calls` calls through `mesh` to `target`; panics unless all agree.
async fn answered_by(mesh: &Mesh, target: &str, calls: usize) -> String {
    let mut client = GreeterClient::new(mesh.channel(target).await.unwrap());
    let mut seen = Vec::new();
    for _ in 0..calls {
        let reply = client
            .say_hello(HelloRequest { name: "p".into() })
            .await
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        seen.push(replica_of(&reply.into_inner().message).to_owned());
    }
    seen.dedup();
    assert_eq!(seen.len(), 1, "{target}: answered by {seen:?}");
    seen.remove(0)
}

#[tokio::test]
async fn ports_have_their_own_replicas_and_routes_and_consumer_routes_steer_their_namespace() {
    let (l80, l7070, lv2) = (
        listener().await.unwrap(),
        listener().await.unwrap(),
        listener().await.unwrap(),
    );
    let (a80, a7070, av2) = (
        l80.local_addr().unwrap(),
        l7070.local_addr().unwrap(),
        lv2.local_addr().unwrap(),
    );
    let config = Config::new()
        .service("greeter", &[(a80, "greeter")])
        .service_keys(
            "greeter",
            &format!(
                r#"
                port: 80
                ports:
                  - port: 7070
                    endpoints: [{{address: "{a7070}", identity: "{}"}}]
                "#,
                spiffe("greeter")
            ),
        )
        .routes(
            "greeter",
            r#"
            - name: port-80-to-v2
              kind: grpc
              port: 80
              rules:
                - backendRefs: [{name: greeter-v2}]
            - name: shop-to-7070
              kind: grpc
              namespace: shop
              rules:
                - backendRefs: [{name: greeter, namespace: default, port: 7070}]
            "#,
        )
        .service("greeter-v2", &[(av2, "greeter")])
        .account("greeter")
        .account("client")
        .account_in("shop", "shopper");
    let harness = Harness::start(&config).await.unwrap();
    let mode = GreeterMode::Normal;
    let p80 = harness.test_greeter(l80, "port80", "greeter", "greeter", mode);
    let p7070 = harness.test_greeter(l7070, "port7070", "greeter", "greeter", mode);
    let v2 = harness.test_greeter(lv2, "v2", "greeter", "greeter-v2", mode);
    let (p80, p7070, v2) = tokio::try_join!(p80, p7070, v2).unwrap();

    // A client in the service's own namespace: the port-80 route sends the first port to v2;
    // port 7070 has no route of its own, so its own replica answers.
    let client = harness.mesh("client").await.unwrap();
    assert_eq!(answered_by(&client, "greeter.default", 20).await, "v2");
    assert_eq!(answered_by(&client, "greeter.default:80", 20).await, "v2");
    assert_eq!(
        answered_by(&client, "greeter.default:7070", 20).await,
        "port7070"
    );

    // A client in `shop`: its consumer route replaces the service's routes for it, on every
    // port, and sends everything to port 7070's replica.
    let shopper = harness.mesh("shopper").await.unwrap();
    assert_eq!(
        shopper.identity().id().namespace(),
        Some("shop"),
        "the caller really is in shop"
    );
    assert_eq!(
        answered_by(&shopper, "greeter.default", 20).await,
        "port7070"
    );
    assert_eq!(
        answered_by(&shopper, "greeter.default:7070", 20).await,
        "port7070"
    );

    assert_eq!(
        p80.greeter.received(),
        0,
        "port 80's own replica is routed around"
    );
    assert_eq!(v2.greeter.received(), 40);
    assert_eq!(p7070.greeter.received(), 60);

    // A port the service does not have: calls fail, naming the destination and its port.
    let mut missing = GreeterClient::new(shopper.channel("greeter.default:9999").await.unwrap());
    let status = missing
        .say_hello(HelloRequest { name: "p".into() })
        .await
        .unwrap_err();
    assert!(
        status.message().contains("greeter.default:9999"),
        "{status:?}"
    );
}
