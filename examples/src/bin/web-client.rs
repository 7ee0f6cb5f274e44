//! Calls the meshed axum service (`GET /hello`) through the mesh, configured by `MESH_*`
//! environment variables. `WEB_DEST` names the destination (default `web.default`).

use anyhow::Context;
use examples::{WebReply, init_logging};
use http_body_util::BodyExt;
use mesh_tower::Mesh;
use tower::ServiceExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging("warn");
    let destination = std::env::var("WEB_DEST").unwrap_or_else(|_| "web.default".to_owned());
    let mesh = Mesh::from_env().await.context("starting the mesh")?;
    let client = mesh.client::<axum::body::Body>(&destination).await?;
    let response = client
        .oneshot(http::Request::get("/hello").body(axum::body::Body::empty())?)
        .await
        .map_err(|e| anyhow::anyhow!("GET {destination}/hello: {e}"))?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let reply: WebReply = serde_json::from_slice(&body)
        .with_context(|| format!("{status}: {}", String::from_utf8_lossy(&body)))?;
    println!(
        "{status} from {} (the server saw the caller as {})",
        reply.server, reply.caller
    );
    Ok(())
}
