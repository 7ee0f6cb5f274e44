//! A call through `MeshChannel` says who made it, as tonic's own channel does
//! (`user-agent: mesh-tonic/<version> tonic/0.14`), unless the application set its own.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_tests::web::WebMode;
use mesh_tests::{Config, Harness, listener};
use mesh_tonic::MeshTonicExt;

#[tokio::test]
async fn a_mesh_channel_sends_a_user_agent_and_keeps_the_applications_own() {
    let l = listener().await.unwrap();
    let config = Config::new()
        .service("web", &[(l.local_addr().unwrap(), "web")])
        .account("web")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    // A plain HTTP server records what arrives; the gRPC calls it cannot answer fail, which is
    // beside the point.
    let web = harness
        .web(l, "w", "web", "web", WebMode::Normal)
        .await
        .unwrap();
    let client = harness.mesh("client").await.unwrap();
    let mut greeter = GreeterClient::new(client.channel("web").await.unwrap());
    let _ = greeter.say_hello(HelloRequest { name: "a".into() }).await;
    let mut own = tonic::Request::new(HelloRequest { name: "b".into() });
    own.metadata_mut()
        .insert("user-agent", "my-app/2".parse().unwrap());
    let _ = greeter.say_hello(own).await;

    let agents: Vec<String> = web
        .log
        .entries()
        .iter()
        .map(|seen| seen.headers["user-agent"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        agents,
        [
            format!("mesh-tonic/{} tonic/0.14", env!("CARGO_PKG_VERSION")),
            "my-app/2".to_owned()
        ]
    );
}
