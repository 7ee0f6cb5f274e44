//! One server stack: `MeshLayer` meshes a tonic server and an axum `Router` alike, judges a
//! call once however often it is layered, and refuses a request that did not come through
//! the mesh's listener.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use examples::hello::greeter_server::GreeterServer;
use examples::{PlainGreeter, WebReply, web_router};
use http_body_util::BodyExt;
use mesh_tests::{Config, Harness, listener, spiffe};
use mesh_tonic::MeshLayer;
use tower::ServiceExt;

const POLICIES: &str = r#"
policies:
  - name: client-may-get
    target: {service: web}
    action: ALLOW
    rules:
      - from: {identities: ["spiffe://mesh.local/ns/default/sa/client"]}
"#;

async fn get(mesh: &mesh_tower::Mesh, path: &str) -> http::Response<bytes::Bytes> {
    let web = mesh
        .client::<axum::body::Body>("web.default")
        .await
        .unwrap();
    let response = web
        .oneshot(
            http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    http::Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

/// How many `mesh_verdict` decisions the process's recorder counted for `policy`.
fn decisions(policy: &str, verdict: &str) -> u64 {
    let rendered = mesh_process::prometheus::install().unwrap().render();
    rendered
        .lines()
        .filter(|line| line.starts_with("mesh_server_authz_decisions_total{"))
        .filter(|line| line.contains(&format!("mesh_policy=\"{policy}\"")))
        .filter(|line| line.contains(&format!("mesh_verdict=\"{verdict}\"")))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[tokio::test]
async fn an_axum_router_carrying_the_layer_is_meshed_and_judged_once() {
    // Before any mesh: handles made before the recorder would record nothing.
    mesh_process::prometheus::install().unwrap();
    let l = listener().await.unwrap();
    let config = Config::new()
        .service("web", &[(l.local_addr().unwrap(), "web")])
        .service_keys("web", "defaultPolicy: deny")
        .top_level(POLICIES)
        .account("web")
        .account("client")
        .account("stranger");
    let harness = Harness::start(&config).await.unwrap();
    let server = mesh_tower::Mesh::start(harness.settings("web", Some("web")))
        .await
        .unwrap();
    // The router carries the layer, and `serve` applies it too: the call is judged once.
    let router = web_router(server.identity().id().to_string()).layer(MeshLayer::new());
    let incoming = server.incoming(l).unwrap();
    let serving = tokio::spawn(async move {
        let _server = server;
        mesh_tower::server::serve(incoming, router).await;
    });

    let client = harness.mesh("client").await.unwrap();
    let before = decisions("client-may-get", "allow");
    for _ in 0..3 {
        let response = get(&client, "/hello").await;
        assert_eq!(response.status(), http::StatusCode::OK);
        let reply: WebReply = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(
            reply,
            WebReply {
                server: spiffe("web"),
                caller: spiffe("client"),
            }
        );
    }
    assert_eq!(
        decisions("client-may-get", "allow") - before,
        3,
        "each call judged once"
    );

    // Deny by default: the layer answers for the router, naming why.
    let stranger = harness.mesh("stranger").await.unwrap();
    let response = get(&stranger, "/hello").await;
    assert_eq!(response.status(), http::StatusCode::FORBIDDEN);
    let reason = response.headers()[mesh_tower::MESH_ERROR_HEADER]
        .to_str()
        .unwrap();
    assert!(reason.contains("no ALLOW policy matched"), "{reason}");
    serving.abort();
}

#[tokio::test]
async fn a_tonic_server_behind_the_layer_refuses_requests_not_from_the_mesh_listener() {
    // The meshed greeter wired by mistake to a plain TCP listener.
    let l = listener().await.unwrap();
    let addr = l.local_addr().unwrap();
    let serving = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(MeshLayer::new())
            .add_service(GreeterServer::new(PlainGreeter))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
            .await
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = GreeterClient::new(channel)
        .say_hello(HelloRequest { name: "eve".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("mesh's mTLS listener"),
        "the refusal says why: {status:?}"
    );
    serving.abort();
}
