//! An axum service meshed the same way as a tonic one.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use examples::{WebReply, web_router};
use http_body_util::BodyExt;
use mesh_tests::{Config, Harness, listener, spiffe};
use tower::ServiceExt;

#[tokio::test]
async fn an_axum_service_is_called_over_mtls_with_both_identities_verified() {
    let l = listener().await.unwrap();
    let config = Config::new()
        .service("web", &[(l.local_addr().unwrap(), "web")])
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();

    let server = mesh_tower::Mesh::start(harness.settings("web", Some("web")))
        .await
        .unwrap();
    let router = web_router(server.identity().id().to_string());
    let serving = tokio::spawn(async move { server.serve(l, router).await });

    let client = harness.mesh("client").await.unwrap();
    let web = client
        .client::<axum::body::Body>("web.default")
        .await
        .unwrap();
    let response = web
        .oneshot(
            http::Request::get("/hello")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let reply: WebReply = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        reply,
        WebReply {
            server: spiffe("web"),
            caller: spiffe("client"),
        }
    );
    serving.abort();
}
