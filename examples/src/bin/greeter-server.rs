//! A meshed `helloworld.Greeter` server, configured by `MESH_*` environment variables.
//!
//! `GREETER_ADDR` (default `127.0.0.1:50051`) is where it listens; `GREETER_REPLICA` (default
//! the node name) is how it names itself in replies.

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
    // The mesh's server limits (`MESH_SERVER_*`) on tonic's HTTP/2.
    mesh.tonic_server()
        .layer(MeshLayer::new())
        .add_service(GreeterServer::new(replica))
        .serve_with_incoming_shutdown(mesh.tonic_incoming(listener)?, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
