//! Retries end to end: a retryable failure is retried and the retry succeeds, other failures
//! and bodies that cannot be replayed are sent once, and the retry budget caps what an
//! always-failing backend receives.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;

use axum::body::Body;
use bytes::Bytes;
use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_tests::greeter::{GreeterMode, replica_of};
use mesh_tests::web::{WebMode, WebReplica, get, send};
use mesh_tests::{Config, Harness, concurrently, listener};
use mesh_tonic::MeshTonicExt;
use mesh_tower::{Mesh, MeshClient};

/// A `web` service with one replica and a route that retries 503 `attempts` times.
async fn web_retrying(attempts: u32) -> (Harness, WebReplica, Mesh, MeshClient<Body>) {
    let l = listener().await.unwrap();
    let config = Config::new()
        .service("web", &[(l.local_addr().unwrap(), "web")])
        .routes(
            "web",
            &format!(
                r#"
                - name: retrying
                  rules:
                    - backendRefs: [{{name: web}}]
                      retry: {{codes: [503], attempts: {attempts}}}
                "#
            ),
        )
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let replica = harness
        .web(l, "w1", "web", "web", WebMode::Normal)
        .await
        .unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let client = client_mesh.client::<Body>("web").await.unwrap();
    (harness, replica, client_mesh, client)
}

fn post(path: &str, body: Body) -> http::Request<Body> {
    http::Request::post(path).body(body).unwrap()
}

#[tokio::test]
async fn http_503_is_retried_and_other_statuses_are_not() {
    let (_harness, replica, _mesh, client) = web_retrying(1).await;

    // Fails the first time, succeeds on the retry; the retry carries the whole body again.
    let reply = send(&client, post("/fail/503/1?id=a", Body::from("hello"))).await;
    assert_eq!(reply.status, http::StatusCode::OK, "{reply:?}");
    assert_eq!(reply.echo().body_len, 5);
    assert_eq!(replica.log.count_path("/fail/503/1?id=a"), 2);

    // Fails twice: one retry is all the route allows, and the caller sees the second 503.
    let reply = get(&client, "/fail/503/2?id=b").await;
    assert_eq!(reply.status, http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(replica.log.count_path("/fail/503/2?id=b"), 2);

    // 500 is not in `codes`: sent once.
    let reply = get(&client, "/fail/500/1?id=c").await;
    assert_eq!(reply.status, http::StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(replica.log.count_path("/fail/500/1?id=c"), 1);
}

#[tokio::test]
async fn bodies_that_cannot_be_replayed_are_sent_once_and_arrive_whole() {
    let (_harness, replica, _mesh, client) = web_retrying(2).await;

    // A streaming body whose first chunk is not ready when the call starts.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    let feeder = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        for chunk in ["stream", "ing"] {
            tx.send(Bytes::from(chunk)).await.unwrap();
        }
    });
    let path = "/fail/503/1?id=stream";
    let reply = send(&client, post(path, Body::from_stream(chunks))).await;
    feeder.await.unwrap();
    assert_eq!(
        reply.status,
        http::StatusCode::SERVICE_UNAVAILABLE,
        "{reply:?}"
    );
    assert_eq!(reply.echo().body_len, "streaming".len());
    assert_eq!(
        replica.log.count_path(path),
        1,
        "a streaming body was retried"
    );

    // A body over the 64 KiB replay limit.
    let big = vec![b'x'; 64 * 1024 + 1];
    let path = "/fail/503/1?id=big";
    let reply = send(&client, post(path, Body::from(big.clone()))).await;
    assert_eq!(reply.status, http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.echo().body_len, big.len());
    assert_eq!(
        replica.log.count_path(path),
        1,
        "an oversized body was retried"
    );

    // A body at the limit is still replayed.
    let path = "/fail/503/1?id=limit";
    let reply = send(&client, post(path, Body::from(vec![b'x'; 64 * 1024]))).await;
    assert_eq!(reply.status, http::StatusCode::OK);
    assert_eq!(reply.echo().body_len, 64 * 1024);
    assert_eq!(replica.log.count_path(path), 2);
}

#[tokio::test]
async fn grpc_unavailable_is_retried_and_internal_is_not() {
    let l = listener().await.unwrap();
    let config = Config::new()
        .service("greeter", &[(l.local_addr().unwrap(), "greeter")])
        .routes(
            "greeter",
            r#"
            - name: retrying
              kind: grpc
              rules:
                - backendRefs: [{name: greeter}]
                  retry: {statuses: [UNAVAILABLE], attempts: 2}
            "#,
        )
        .account("greeter")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let replica = harness
        .test_greeter(l, "g1", "greeter", "greeter", GreeterMode::Normal)
        .await
        .unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let mut client = GreeterClient::new(client_mesh.channel("greeter").await.unwrap());
    let mut hello = async |name: &str| {
        client
            .say_hello(HelloRequest { name: name.into() })
            .await
            .map(|r| r.into_inner().message)
    };

    let message = hello("fail-once:a").await.unwrap();
    assert_eq!(replica_of(&message), "g1");
    assert_eq!(replica.greeter.received_name("fail-once:a"), 2);

    let status = hello("fail-always:b").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(
        replica.greeter.received_name("fail-always:b"),
        3,
        "one try and two retries"
    );

    let status = hello("internal:c").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Internal);
    assert_eq!(replica.greeter.received_name("internal:c"), 1);
}

#[tokio::test]
async fn the_retry_budget_stops_a_retry_storm_against_an_always_failing_backend() {
    let (_harness, replica, _mesh, client) = web_retrying(3).await;

    // The default budget (as Finagle and Linkerd): retries may add 20 % of the requests of the
    // last 10 s plus a reserve of 10 per second over those 10 s. This test runs well within
    // 10 s, so for 200 failing calls the backend sees at most 200 + 200 × 20 % + 100 = 340
    // requests (not 4 × 200 = 800), and at least 200 + 100: the reserve is spent first.
    const CALLS: usize = 200;
    let started = std::time::Instant::now();
    let statuses = concurrently(CALLS, 8, move |i| {
        let client = client.clone();
        async move {
            get(&client, &format!("/fail/503/always?call={i}"))
                .await
                .status
        }
    })
    .await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(9),
        "the test ran too long for the bound"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == http::StatusCode::SERVICE_UNAVAILABLE)
    );
    let received = replica.log.count();
    assert!(
        (CALLS + 100..=CALLS + CALLS / 5 + 100).contains(&received),
        "the backend received {received} requests for {CALLS} calls"
    );
}
