//! Graceful shutdown of a server served with `Mesh::serve_with_shutdown`: calls in flight
//! finish, the listener stops accepting, and the server returns within its grace period.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use mesh_tests::{Config, Harness, listener};
use tower::ServiceExt;

#[tokio::test]
async fn a_draining_server_finishes_calls_in_flight_and_stops_accepting() {
    let l = listener().await.unwrap();
    let addr = l.local_addr().unwrap();
    let config = Config::new()
        .service("web", &[(addr, "web")])
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let server = mesh_tower::Mesh::start(harness.settings("web", Some("web")))
        .await
        .unwrap();
    let router = axum::Router::new().route(
        "/slow",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            "done"
        }),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        server
            .serve_with_shutdown(
                l,
                router,
                async {
                    let _ = stopped.await;
                },
                Duration::from_secs(5),
            )
            .await
    });

    let client_mesh = harness.mesh("client").await.unwrap();
    let client = client_mesh
        .client::<axum::body::Body>("web.default")
        .await
        .unwrap();
    let slow = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .oneshot(
                    http::Request::get("/slow")
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap()
        }
    });
    // Let the call reach the handler, then stop the server while it runs.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    stop.send(()).unwrap();

    let response = slow.await.unwrap();
    assert_eq!(
        response.status(),
        http::StatusCode::OK,
        "the call in flight finished"
    );
    serving.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the server returned once its last call was done, not at the end of the grace period"
    );
    // The listener is closed: nothing accepts on the address any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
