//! A meshed `helloworld.Greeter` server, configured by `MESH_*` environment variables.
//!
//! `GREETER_ADDR` (default `127.0.0.1:50051`) is where it listens; `GREETER_REPLICA` (default
//! the node name) is how it names itself in replies. It serves `grpc.health.v1.Health` next to
//! the greeter (following the mesh's readiness, `NOT_SERVING` while it drains), and, when
//! `GREETER_PROBE_ADDR` is set (`0.0.0.0:8086` in the Kubernetes example), the same health
//! service alone in plaintext there, for the kubelet's `grpc:` probes.

use anyhow::Context;
use examples::hello::greeter_server::GreeterServer;
use examples::{GreeterReplica, init_logging};
use mesh_tonic::{MeshLayer, MeshTonicExt};
use mesh_tower::Mesh;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging("info");
    let addr = std::env::var("GREETER_ADDR").unwrap_or_else(|_| "127.0.0.1:50051".to_owned());
    let mesh = Mesh::from_env().await.context("starting the mesh")?;
    let replica_name =
        std::env::var("GREETER_REPLICA").unwrap_or_else(|_| mesh.settings().node.clone());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding GREETER_ADDR {addr}"))?;
    println!(
        "greeter {replica_name} serving on {addr} as {}",
        mesh.identity().id()
    );
    let replica = GreeterReplica::new(replica_name, mesh.identity().id().to_string());
    let (health, health_service) = mesh.tonic_health().await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    if let Ok(probe_addr) = std::env::var("GREETER_PROBE_ADDR") {
        let probe = tokio::net::TcpListener::bind(&probe_addr)
            .await
            .with_context(|| format!("binding GREETER_PROBE_ADDR {probe_addr}"))?;
        let mut stopped = stopped.clone();
        tokio::spawn(mesh_tonic::health::serve_probe(
            probe,
            health_service.clone(),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
    }
    // The mesh's server limits (`MESH_SERVER_*`) on tonic's HTTP/2.
    mesh.tonic_server()
        .layer(MeshLayer::new())
        .add_service(health_service)
        .add_service(mesh.serving(GreeterServer::new(replica)))
        .serve_with_incoming_shutdown(mesh.tonic_incoming(listener)?, async {
            let _ = tokio::signal::ctrl_c().await;
            // Probes and balancers see NOT_SERVING while the calls in flight finish.
            health.drain().await;
        })
        .await?;
    let _ = stop.send(true);
    Ok(())
}
