//! Route matching end to end: a header match pins a request to a backend ahead of the
//! weighted rule, a request no route matches gets 404 / UNIMPLEMENTED without reaching any
//! backend, and a service without routes is served by its own endpoints.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_tests::greeter::{GreeterMode, replica_of};
use mesh_tests::web::{WebMode, get};
use mesh_tests::{Config, Harness, concurrently, listener};
use mesh_tonic::MeshTonicExt;

#[tokio::test]
async fn an_x_canary_header_pins_to_v2_and_other_calls_follow_the_weights() {
    let (l1, l2) = (listener().await.unwrap(), listener().await.unwrap());
    let config = Config::new()
        .service("greeter", &[])
        .routes(
            "greeter",
            r#"
            - name: canary
              kind: grpc
              rules:
                - matches:
                    - headers: [{name: x-canary, value: "true"}]
                  backendRefs: [{name: greeter-v2}]
                - backendRefs:
                    - {name: greeter-v1, weight: 90}
                    - {name: greeter-v2, weight: 10}
            "#,
        )
        .service("greeter-v1", &[(l1.local_addr().unwrap(), "greeter")])
        .service("greeter-v2", &[(l2.local_addr().unwrap(), "greeter")])
        .account("greeter")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let mode = GreeterMode::Normal;
    let v1 = harness.test_greeter(l1, "v1", "greeter", "greeter-v1", mode);
    let v2 = harness.test_greeter(l2, "v2", "greeter", "greeter-v2", mode);
    let (_v1, _v2) = tokio::try_join!(v1, v2).unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let client = GreeterClient::new(client_mesh.channel("greeter").await.unwrap());

    let call = move |canary: Option<&'static str>| {
        let client = client.clone();
        move |i: usize| {
            let mut client = client.clone();
            async move {
                let mut request = tonic::Request::new(HelloRequest {
                    name: format!("call-{i}"),
                });
                if let Some(value) = canary {
                    request
                        .metadata_mut()
                        .insert("x-canary", value.parse().unwrap());
                }
                let reply = client.say_hello(request).await.unwrap();
                replica_of(&reply.into_inner().message).to_owned()
            }
        }
    };
    let pinned = concurrently(200, 8, call(Some("true"))).await;
    assert!(pinned.iter().all(|r| r == "v2"), "{pinned:?}");

    // Without the header (or with another value) the weighted rule applies: mostly v1
    // (90 %, 200 calls: v1 below 75 % is more than 7 sigma away), some v2.
    for canary in [None, Some("false")] {
        let split = concurrently(200, 8, call(canary)).await;
        let v1_calls = split.iter().filter(|r| *r == "v1").count();
        assert!(
            (150..200).contains(&v1_calls),
            "x-canary {canary:?}: v1 answered {v1_calls} of 200"
        );
    }
}

#[tokio::test]
async fn a_request_no_route_matches_gets_404_or_unimplemented_and_reaches_no_backend() {
    let (lw, lg) = (listener().await.unwrap(), listener().await.unwrap());
    let config = Config::new()
        .service("web", &[(lw.local_addr().unwrap(), "web")])
        .routes(
            "web",
            r#"
            - name: only-api
              rules:
                - matches: [{path: {type: PathPrefix, value: /api}}]
                  backendRefs: [{name: web}]
            "#,
        )
        .service("greeter", &[(lg.local_addr().unwrap(), "greeter")])
        .routes(
            "greeter",
            r#"
            - name: only-other
              kind: grpc
              rules:
                - matches: [{method: {service: helloworld.Greeter, method: SayGoodbye}}]
                  backendRefs: [{name: greeter}]
            "#,
        )
        .account("web")
        .account("greeter")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let web = harness
        .web(lw, "w1", "web", "web", WebMode::Normal)
        .await
        .unwrap();
    let greeter = harness
        .test_greeter(lg, "g1", "greeter", "greeter", GreeterMode::Normal)
        .await
        .unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();

    let http = client_mesh.client::<axum::body::Body>("web").await.unwrap();
    let matched = get(&http, "/api/items").await;
    assert_eq!(matched.status, http::StatusCode::OK);
    let unmatched = get(&http, "/other").await;
    assert_eq!(
        unmatched.status,
        http::StatusCode::NOT_FOUND,
        "{unmatched:?}"
    );
    let reason = unmatched.mesh_error().unwrap();
    assert!(
        reason.contains("web.default") && reason.contains("GET /other"),
        "{reason}"
    );
    assert_eq!(
        web.log.count(),
        1,
        "the unmatched request reached the backend"
    );

    let mut grpc = GreeterClient::new(client_mesh.channel("greeter").await.unwrap());
    let status = grpc
        .say_hello(HelloRequest { name: "ann".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert!(status.message().contains("greeter.default"), "{status:?}");
    assert_eq!(greeter.greeter.received(), 0);
}

#[tokio::test]
async fn without_routes_a_service_is_served_by_its_own_endpoints() {
    let (l1, l2, lv) = (
        listener().await.unwrap(),
        listener().await.unwrap(),
        listener().await.unwrap(),
    );
    let config = Config::new()
        .service(
            "web",
            &[
                (l1.local_addr().unwrap(), "web"),
                (l2.local_addr().unwrap(), "web"),
            ],
        )
        // Another service's route to `web-v2` changes nothing for `web` itself.
        .service("shop", &[])
        .routes(
            "shop",
            "- {name: to-v2, rules: [{backendRefs: [{name: web-v2}]}]}",
        )
        .service("web-v2", &[(lv.local_addr().unwrap(), "web")])
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let w1 = harness.web(l1, "w1", "web", "web", WebMode::Normal);
    let w2 = harness.web(l2, "w2", "web", "web", WebMode::Normal);
    let v2 = harness.web(lv, "v2", "web", "web-v2", WebMode::Normal);
    let (w1, w2, v2) = tokio::try_join!(w1, w2, v2).unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let client = client_mesh.client::<axum::body::Body>("web").await.unwrap();

    let replies = concurrently(100, 8, move |i| {
        let client = client.clone();
        async move {
            let reply = get(&client, &format!("/any/path?{i}")).await;
            assert_eq!(reply.status, http::StatusCode::OK, "{reply:?}");
            reply.backend().unwrap().to_owned()
        }
    })
    .await;
    assert!(
        replies.iter().all(|r| r == "w1" || r == "w2"),
        "{replies:?}"
    );
    assert_eq!(w1.log.count() + w2.log.count(), 100);
    assert!(w1.log.count() > 0 && w2.log.count() > 0, "one replica idle");
    assert_eq!(v2.log.count(), 0);
}
