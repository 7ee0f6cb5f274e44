//! Permissive mTLS: one port takes mTLS and plaintext; plaintext callers have no identity and
//! pass only policies that allow unauthenticated callers.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_tests::{Config, Harness, listener, spiffe};
use mesh_tonic::MeshTonicExt;
use tonic::transport::Endpoint;

async fn plaintext_hello(addr: std::net::SocketAddr) -> Result<String, tonic::Status> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    GreeterClient::new(channel)
        .say_hello(HelloRequest { name: "pat".into() })
        .await
        .map(|r| r.into_inner().message)
}

#[tokio::test]
async fn a_permissive_service_serves_mtls_and_plaintext_on_one_port() {
    let l = listener().await.unwrap();
    let addr = l.local_addr().unwrap();
    let config = Config::new()
        .service("greeter", &[(addr, "greeter")])
        .service_keys(
            "greeter",
            "mtls: permissive\ndefaultPolicy: all-unauthenticated",
        )
        .account("greeter")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();
    let replica = harness.greeter(l, "g1", "greeter").await.unwrap();

    // Plaintext: served, with no identity.
    let reply = plaintext_hello(addr).await.unwrap();
    assert!(reply.ends_with("to an unmeshed caller"), "{reply}");

    // mTLS on the same port: served, with the caller's identity.
    let client = harness.mesh("client").await.unwrap();
    let mut greeter = GreeterClient::new(client.channel("greeter.default").await.unwrap());
    let reply = greeter
        .say_hello(HelloRequest { name: "ann".into() })
        .await
        .unwrap()
        .into_inner()
        .message;
    assert!(reply.ends_with(&spiffe("client")), "{reply}");
    assert_eq!(replica.greeter.served(), 2);
}

#[tokio::test]
async fn plaintext_callers_pass_only_policies_that_allow_the_unauthenticated() {
    let l = listener().await.unwrap();
    let addr = l.local_addr().unwrap();
    let config = Config::new()
        .service("greeter", &[(addr, "greeter")])
        .service_keys(
            "greeter",
            "mtls: permissive\ndefaultPolicy: all-authenticated",
        )
        .account("greeter");
    let harness = Harness::start(&config).await.unwrap();
    let replica = harness.greeter(l, "g1", "greeter").await.unwrap();

    let status = plaintext_hello(addr).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert_eq!(replica.greeter.served(), 0);
}

#[tokio::test]
async fn a_strict_service_refuses_plaintext() {
    let l = listener().await.unwrap();
    let addr = l.local_addr().unwrap();
    let config = Config::new()
        .service("greeter", &[(addr, "greeter")])
        .service_keys("greeter", "defaultPolicy: all-unauthenticated")
        .account("greeter");
    let harness = Harness::start(&config).await.unwrap();
    let replica = harness.greeter(l, "g1", "greeter").await.unwrap();
    assert!(plaintext_hello(addr).await.is_err());
    assert_eq!(replica.greeter.served(), 0);
}
