//! What the benchmark (`src/main.rs`) and the profiling harness (`src/bin/profile_call.rs`)
//! share: plain-TLS channels and listeners for the tonic baselines, a meshed greeter server, and
//! a thread's CPU time. The greeters themselves and the `helloworld` protocol come from the
//! `examples` library.

use std::sync::Arc;

use examples::hello;
use examples::hello::greeter_server::Greeter;

pub mod tls_server;

/// A tonic channel on its own TCP + rustls + HTTP/2 connection to `addr`, checking the server
/// as `tls` says (server name: the IP address). The benchmarks' plain-TLS baselines and raw
/// control-service clients use it.
pub async fn tls_channel(
    addr: std::net::SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> anyhow::Result<tonic::transport::Channel> {
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let tls = tls.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let server_name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(server_name, tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect_with_connector(connector)
            .await?,
    )
}

/// Serves `greeter` behind [`MeshLayer`](mesh_tonic::MeshLayer) on `listener` over `mesh`'s
/// mTLS, in a task that keeps `mesh` running as long as it serves.
pub fn spawn_meshed_greeter<G: Greeter>(
    mesh: mesh_tower::Mesh,
    listener: tokio::net::TcpListener,
    greeter: G,
) -> anyhow::Result<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>> {
    use mesh_tonic::MeshTonicExt as _;
    let incoming = mesh.tonic_incoming(listener)?;
    Ok(tokio::spawn(async move {
        let _mesh = mesh;
        tonic::transport::Server::builder()
            .layer(mesh_tonic::MeshLayer::new())
            .add_service(hello::greeter_server::GreeterServer::new(greeter))
            .serve_with_incoming(incoming)
            .await
    }))
}

/// This thread's CPU time so far (nanoseconds from `/proc/thread-self/schedstat`; zero where
/// there is no such file).
pub fn thread_cpu_time() -> std::time::Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(std::time::Duration::ZERO, std::time::Duration::from_nanos)
}
