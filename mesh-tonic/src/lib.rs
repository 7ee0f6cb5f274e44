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
//! tonic::transport::Server::builder()
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

mod channel;
mod incoming;
mod status;

pub use channel::MeshChannel;
pub use incoming::{TonicIncoming, TonicTlsStream};
/// The mesh's server layer, the same for tonic and axum (see [`mesh_tower::server`]).
pub use mesh_tower::{Mesh, MeshConnectInfo, MeshLayer, MeshService, PeerIdentity};
pub use status::status_from_error;

/// The mesh's tonic entry points, on [`mesh_tower::Mesh`].
pub trait MeshTonicExt {
    /// A channel to `destination` (`name.namespace`, or `name` in this workload's namespace)
    /// that generated tonic clients accept.
    fn channel(
        &self,
        destination: &str,
    ) -> impl std::future::Future<Output = Result<MeshChannel, mesh_tower::StartError>> + Send;

    /// Accepts mTLS connections on `listener` for `Server::serve_with_incoming`; each carries
    /// the caller's identity to [`MeshLayer`].
    fn tonic_incoming(&self, listener: tokio::net::TcpListener) -> std::io::Result<TonicIncoming>;
}

impl MeshTonicExt for mesh_tower::Mesh {
    async fn channel(&self, destination: &str) -> Result<MeshChannel, mesh_tower::StartError> {
        let client = self.client::<tonic::body::Body>(destination).await?;
        Ok(MeshChannel::new(client))
    }

    fn tonic_incoming(&self, listener: tokio::net::TcpListener) -> std::io::Result<TonicIncoming> {
        Ok(TonicIncoming::new(self.incoming(listener)?))
    }
}
