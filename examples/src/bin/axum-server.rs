//! A meshed axum service, configured by `MESH_*` environment variables.
//!
//! `AXUM_ADDR` (default `127.0.0.1:8080`) is where it listens. `GET /hello` answers with the
//! server's identity and the caller's verified identity.

use anyhow::Context;
use examples::{init_logging, web_router};
use mesh_tower::Mesh;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging("info");
    let addr = std::env::var("AXUM_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let mesh = Mesh::from_env().await.context("starting the mesh")?;
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding AXUM_ADDR {addr}"))?;
    println!("web serving on {addr} as {}", mesh.identity().id());
    let router = web_router(mesh.identity().id().to_string());
    tokio::select! {
        served = mesh.serve(listener, router) => served?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
