//! tonic glue for the mesh.
//!
//! # Getting started
//!
//! ```no_run
//! use mesh_tonic::{MeshLayer, MeshTonicExt};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mesh = mesh_tower::Mesh::from_env().await?;
//!
//! // Server: mTLS connections with the caller's identity, through the mesh's server layers.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
//! let incoming = mesh.tonic_incoming(listener)?;
//! # let routes = tonic::service::Routes::default();
//! // `tonic_server()` is `Server::builder()` with the mesh's server limits applied.
//! mesh.tonic_server()
//!     .layer(MeshLayer::new())
//!     .add_routes(routes)
//!     .serve_with_incoming(incoming);
//!
//! // Client: any generated tonic client accepts the channel.
//! let channel = mesh.channel("greeter.default").await?;
//! // let mut greeter = GreeterClient::new(channel);
//! # Ok(()) }
//! ```
//!
//! Handlers read the caller's verified SPIFFE ID with
//! `request.extensions().get::<mesh_tonic::PeerIdentity>()`.
//!
//! [`MeshLayer`] is `mesh-tower`'s, re-exported with [`Mesh`] so a tonic service depends on
//! this crate alone: it fails closed, refusing (UNAUTHENTICATED) a request that did not come
//! through the mesh's incoming stream.
//!
//! # Server limits
//!
//! A tonic server is bounded like [`Mesh::serve`] (see [`mesh_tower::server::limits`]): the
//! incoming stream applies the connection and handshake limits, the handshake time and the
//! time to the first request; [`server`] (or [`MeshTonicExt::tonic_server`], with the
//! workload's `MESH_SERVER_*` settings) gives a `Server` builder with the same HTTP/2 limits:
//! concurrent streams per connection (advertised in SETTINGS, streams over it refused),
//! the request header list size, and keep-alive pings. The listener offers only `h2` in ALPN,
//! as tonic speaks nothing else.
//!
//! A gRPC request body is bounded per message rather than in total: each generated service
//! keeps tonic's `max_decoding_message_size`, 4 MiB by default (a larger message is answered
//! RESOURCE_EXHAUSTED). The mesh's 16 MiB body limit is not applied to tonic: a streaming call
//! may rightly send more than that in many messages, and one message is already bounded lower.
//! A service that needs larger messages raises it on its generated server
//! (`GreeterServer::new(g).max_decoding_message_size(n)`).

mod channel;
pub mod health;
mod incoming;
mod status;

pub use channel::MeshChannel;
pub use health::MeshHealth;
pub use incoming::{TonicIncoming, TonicTlsStream};
pub use mesh_tower::ServerLimits;
/// The mesh's server layer, the same for tonic and axum (see [`mesh_tower::server`]).
pub use mesh_tower::{Mesh, MeshConnectInfo, MeshLayer, MeshService, PeerIdentity};
pub use status::status_from_error;

/// A tonic `Server` builder with the mesh's server `limits` applied: the HTTP/2 streams per
/// connection, the request header list size, and keep-alive pings (every
/// [`mesh_tower::server::limits::HTTP2_KEEP_ALIVE_INTERVAL`] of silence, the connection closed
/// when one goes unanswered for [`mesh_tower::server::limits::HTTP2_KEEP_ALIVE_TIMEOUT`]).
/// Add the mesh's layer and services as usual, and serve it a [`TonicIncoming`] built with the
/// same limits (the connection limits and timeouts apply there).
pub fn server(limits: &ServerLimits) -> tonic::transport::Server {
    use mesh_tower::server::limits::{HTTP2_KEEP_ALIVE_INTERVAL, HTTP2_KEEP_ALIVE_TIMEOUT};
    tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_header_list_size(limits.max_header_list_size)
        .http2_keepalive_interval(Some(HTTP2_KEEP_ALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEP_ALIVE_TIMEOUT))
        // tonic speaks HTTP/2 only; the listener offers only `h2` (see `tonic_incoming`).
        .accept_http1(false)
}

/// The mesh's tonic entry points, on [`mesh_tower::Mesh`].
pub trait MeshTonicExt {
    /// A channel to `destination` (`name.namespace`, or `name` in this workload's namespace)
    /// that generated tonic clients accept.
    fn channel(
        &self,
        destination: &str,
    ) -> impl std::future::Future<Output = Result<MeshChannel, mesh_tower::StartError>> + Send;

    /// Accepts mTLS connections on `listener` for `Server::serve_with_incoming`; each carries
    /// the caller's identity to [`MeshLayer`]. ALPN offers `h2` only; the workload's
    /// [`ServerLimits`] (`MESH_SERVER_*`) apply.
    fn tonic_incoming(&self, listener: tokio::net::TcpListener) -> std::io::Result<TonicIncoming>;

    /// A tonic `Server` builder with the workload's [`ServerLimits`] (`MESH_SERVER_*`)
    /// applied: [`server`] with `mesh.settings().server_limits`.
    fn tonic_server(&self) -> tonic::transport::Server;

    /// `service` (a generated `...Server`), after telling the control service that this
    /// process serves it (by its gRPC name, [`tonic::server::NamedService::NAME`]): wrap each
    /// service added to the server, `.add_service(mesh.serving(GreeterServer::new(g)))`, and
    /// `meshctl check --admin` can tell routes and policies that name a service no replica
    /// serves.
    fn serving<S: tonic::server::NamedService>(&self, service: S) -> S;

    /// `grpc.health.v1.Health` following the mesh's readiness, to add to the server, and its
    /// handle ([`MeshHealth::drain`] when shutting down). See [`health`].
    fn tonic_health(
        &self,
    ) -> impl std::future::Future<
        Output = (
            MeshHealth,
            health::HealthServer<tonic_health::server::HealthService>,
        ),
    > + Send;
}

impl MeshTonicExt for mesh_tower::Mesh {
    async fn channel(&self, destination: &str) -> Result<MeshChannel, mesh_tower::StartError> {
        let client = self.client::<tonic::body::Body>(destination).await?;
        Ok(MeshChannel::new(client))
    }

    fn tonic_incoming(&self, listener: tokio::net::TcpListener) -> std::io::Result<TonicIncoming> {
        let incoming = self.incoming_for(listener, mesh_tower::tls::ServerProtocols::Http2Only)?;
        Ok(TonicIncoming::new(incoming))
    }

    fn tonic_server(&self) -> tonic::transport::Server {
        server(&self.settings().server_limits)
    }

    fn serving<S: tonic::server::NamedService>(&self, service: S) -> S {
        self.serves_grpc(S::NAME);
        service
    }

    async fn tonic_health(
        &self,
    ) -> (
        MeshHealth,
        health::HealthServer<tonic_health::server::HealthService>,
    ) {
        MeshHealth::new(self).await
    }
}
