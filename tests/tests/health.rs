//! `grpc.health.v1.Health` on a meshed tonic server (`mesh_tonic::health`): over real mTLS
//! with tonic-health's client, SERVING while the mesh is ready, NOT_SERVING once the server
//! drains; authorized like any call, so a deny-by-default service exempts the health path;
//! and the same status on the plaintext probe port that the kubelet's `grpc:` probe reaches.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use examples::GreeterReplica;
use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use examples::hello::greeter_server::GreeterServer;
use mesh_tests::{Config, Harness, listener};
use mesh_tonic::{MeshLayer, MeshTonicExt};
use mesh_tower::Mesh;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn status<T>(client: &mut HealthClient<T>) -> Result<ServingStatus, tonic::Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let reply = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(reply.into_inner().status())
}

#[tokio::test]
async fn health_follows_readiness_over_mtls_and_on_the_probe_port() {
    let started = Instant::now();
    let greeter_listener = listener().await.unwrap();
    let greeter_addr = greeter_listener.local_addr().unwrap();
    let config = Config::new()
        .service("greeter", &[(greeter_addr, "greeter")])
        // Nothing passes but the health check: it is exempt from authorization (not from mTLS).
        .service_keys(
            "greeter",
            "defaultPolicy: deny\nexemptPaths: [/grpc.health.v1.Health/Check]",
        )
        .account("greeter")
        .account("client");
    let harness = Harness::start(&config).await.unwrap();

    let mesh = Mesh::start(harness.settings("greeter", Some("greeter")))
        .await
        .unwrap();
    let (health, health_service) = mesh.tonic_health().await;
    let probe_listener = listener().await.unwrap();
    let probe_addr = probe_listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let probe = tokio::spawn(mesh_tonic::health::serve_probe(
        probe_listener,
        health_service.clone(),
        {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        },
    ));
    let replica = GreeterReplica::new("g1", mesh.identity().id().to_string());
    let server = tokio::spawn({
        let mesh = mesh.clone();
        let incoming = mesh.tonic_incoming(greeter_listener).unwrap();
        let mut stopped = stopped.clone();
        let health = health.clone();
        async move {
            mesh.tonic_server()
                .layer(MeshLayer::new())
                .add_service(health_service)
                .add_service(GreeterServer::new(replica))
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                    health.drain().await;
                })
                .await
        }
    });

    // Over the mesh (mTLS, the caller's identity checked): SERVING, and the exempt health
    // check passes where the greeter itself is denied.
    let client_mesh = harness.mesh("client").await.unwrap();
    let channel = client_mesh.channel("greeter").await.unwrap();
    let mut meshed = HealthClient::new(channel.clone());
    assert_eq!(status(&mut meshed).await.unwrap(), ServingStatus::Serving);
    let denied = GreeterClient::new(channel)
        .say_hello(HelloRequest { name: "ann".into() })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");

    // The probe port: plaintext HTTP/2, no client certificate, as the kubelet calls it.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{probe_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut probe_client = HealthClient::new(plain);
    assert_eq!(
        status(&mut probe_client).await.unwrap(),
        ServingStatus::Serving
    );
    // It serves health alone.
    let other = GreeterClient::new(probe_client_channel(probe_addr).await)
        .say_hello(HelloRequest { name: "ann".into() })
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::Unimplemented, "{other:?}");

    // A plaintext call to the mesh's port is refused (strict mTLS), health or not.
    let refused = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{greeter_addr}"))
            .unwrap()
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        status(&mut HealthClient::new(channel)).await
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(5), refused)
            .await
            .map_or(true, |r| r.is_err()),
        "plaintext health check on the mTLS port"
    );

    // Draining: NOT_SERVING at once, on both.
    health.drain().await;
    assert_eq!(
        status(&mut probe_client).await.unwrap(),
        ServingStatus::NotServing
    );
    assert_eq!(
        status(&mut meshed).await.unwrap(),
        ServingStatus::NotServing
    );

    // Readiness is followed: once the mesh it came from is gone, NOT_SERVING (checked on a
    // second health service whose mesh is dropped).
    let other_mesh = Mesh::start(harness.settings("greeter", Some("greeter")))
        .await
        .unwrap();
    let (_other_health, other_service) = other_mesh.tonic_health().await;
    let other_listener = listener().await.unwrap();
    let other_addr = other_listener.local_addr().unwrap();
    let _other_probe = tokio::spawn(mesh_tonic::health::serve_probe(
        other_listener,
        other_service,
        std::future::pending(),
    ));
    let mut other_client = HealthClient::new(probe_client_channel(other_addr).await);
    assert_eq!(
        status(&mut other_client).await.unwrap(),
        ServingStatus::Serving
    );
    drop(other_mesh);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = status(&mut other_client).await.unwrap();
        if now == ServingStatus::NotServing {
            break;
        }
        assert!(Instant::now() < deadline, "still {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let _ = stop.send(true);
    server.await.unwrap().unwrap();
    probe.await.unwrap().unwrap();
    println!("health test took {:?}", started.elapsed());
}

async fn probe_client_channel(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}
