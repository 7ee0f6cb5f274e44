//! Overload-aware balancing: an endpoint that answers 429 (or RESOURCE_EXHAUSTED) is spared
//! for the time it asks (`Retry-After`, `grpc-retry-pushback-ms`; 1 s without one, 30 s at
//! most), so P2C sends the calls elsewhere. Without it a shedding endpoint, answering fast,
//! looked like the best one and drew load.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use mesh_tests::web::{WebMode, get};
use mesh_tests::{Config, Harness, listener};

#[tokio::test]
async fn an_endpoint_that_sheds_load_is_spared_and_calls_go_elsewhere() {
    let (shedding, calm) = (listener().await.unwrap(), listener().await.unwrap());
    let config = Config::new()
        .service(
            "web",
            &[
                (shedding.local_addr().unwrap(), "web"),
                (calm.local_addr().unwrap(), "web"),
            ],
        )
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let shedding = harness.web(
        shedding,
        "shedding",
        "web",
        "web",
        WebMode::Fail(http::StatusCode::TOO_MANY_REQUESTS),
    );
    let calm = harness.web(calm, "calm", "web", "web", WebMode::Normal);
    let (shedding, calm) = tokio::try_join!(shedding, calm).unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let client = client_mesh.client::<Body>("web").await.unwrap();

    // 16 calls in flight: a busy endpoint looks costlier to P2C, so without the penalty the
    // shedding one, answering as fast, took a large share.
    let statuses = mesh_tests::concurrently(400, 16, move |i| {
        let client = client.clone();
        async move { get(&client, &format!("/call/{i}")).await.status }
    })
    .await;
    let refused = statuses
        .iter()
        .filter(|s| **s == http::StatusCode::TOO_MANY_REQUESTS)
        .count();
    // The calls take well under the 1 s each 429 spares the endpoint for: after its first
    // answers (those in flight together), it gets no more.
    println!(
        "shedding replica: {} calls, refused {refused}; calm replica: {}",
        shedding.log.count(),
        calm.log.count()
    );
    assert!(shedding.log.count() <= 16, "{}", shedding.log.count());
    assert!(refused <= 16, "{refused}");
    assert!(calm.log.count() >= 384);
}
