//! The mesh's own failures end to end: when it cannot deliver a call it answers itself, with
//! the status a caller expects (HTTP or gRPC) and a message that names what is missing.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_tests::web::{WebMode, get};
use mesh_tests::{Config, Harness, listener};
use mesh_tonic::MeshTonicExt;

/// A service `web` whose routes send `/missing` to a service that does not exist, `/zero` to
/// backends that all have weight 0, and `/empty` to a service without endpoints; `/ok` works.
fn config(ok: std::net::SocketAddr) -> Config {
    Config::new()
        .service("web", &[])
        .routes(
            "web",
            r#"
            - name: broken
              rules:
                - matches: [{path: {type: Exact, value: /missing}}]
                  backendRefs: [{name: nowhere}]
                - matches: [{path: {type: Exact, value: /zero}}]
                  backendRefs: [{name: web-ok, weight: 0}]
                - matches: [{path: {type: Exact, value: /empty}}]
                  backendRefs: [{name: web-empty}]
                - matches: [{path: {type: Exact, value: /ok}}]
                  backendRefs: [{name: web-ok}]
            "#,
        )
        .service("web-ok", &[(ok, "web")])
        .service("web-empty", &[])
        .account("web")
        .account("client")
}

#[tokio::test]
async fn http_callers_get_the_mesh_status_and_a_message_naming_what_is_missing() {
    let l = listener().await.unwrap();
    let harness = Harness::start(&config(l.local_addr().unwrap()))
        .await
        .unwrap();
    let ok = harness
        .web(l, "ok", "web", "web-ok", WebMode::Normal)
        .await
        .unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let client = client_mesh.client::<axum::body::Body>("web").await.unwrap();

    assert_eq!(get(&client, "/ok").await.status, http::StatusCode::OK);
    let cases = [
        ("/missing", 500, "nowhere.default"),
        ("/zero", 500, "weight above 0"),
        ("/empty", 503, "web-empty.default"),
    ];
    for (path, status, named) in cases {
        let reply = get(&client, path).await;
        assert_eq!(reply.status.as_u16(), status, "{path}: {reply:?}");
        let reason = reply.mesh_error().unwrap();
        assert!(reason.contains(named), "{path}: {reason}");
        let body = String::from_utf8_lossy(&reply.body);
        assert!(body.contains(named), "{path}: {body}");
        assert!(reply.backend().is_none(), "a backend answered {path}");
    }
    assert_eq!(ok.log.count(), 1);
}

#[tokio::test]
async fn grpc_callers_get_unavailable_with_a_message_naming_the_missing_backend() {
    let l = listener().await.unwrap();
    let config = Config::new()
        .service("greeter", &[(l.local_addr().unwrap(), "greeter")])
        .routes(
            "greeter",
            r#"
            - name: to-nowhere
              kind: grpc
              rules: [{backendRefs: [{name: greeter-v9}]}]
            "#,
        )
        .account("greeter")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let replica = harness.greeter(l, "g1", "greeter").await.unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    let mut client = GreeterClient::new(client_mesh.channel("greeter").await.unwrap());

    let status = client
        .say_hello(HelloRequest { name: "ann".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("greeter-v9.default")
            && status.message().contains("greeter.default"),
        "{status:?}"
    );
    assert_eq!(replica.greeter.served(), 0);
}

#[tokio::test]
async fn a_destination_the_control_service_does_not_know_is_named_in_every_answer() {
    let harness = Harness::start(&Config::new().account("client"))
        .await
        .unwrap();
    let client_mesh = harness.mesh("client").await.unwrap();
    // The control service answers for it (it does not exist), so a client is handed out, and
    // would work as soon as the service is added; until then every call says what is wrong.
    let client = client_mesh
        .client::<axum::body::Body>("nosuch")
        .await
        .unwrap();
    let reply = get(&client, "/").await;
    assert_eq!(reply.status, http::StatusCode::SERVICE_UNAVAILABLE);
    let reason = reply.mesh_error().unwrap();
    assert!(
        reason.contains("unknown destination nosuch.default"),
        "{reason}"
    );

    let mut grpc = GreeterClient::new(client_mesh.channel("nosuch").await.unwrap());
    let status = grpc
        .say_hello(HelloRequest { name: "ann".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("nosuch.default"), "{status:?}");
}
