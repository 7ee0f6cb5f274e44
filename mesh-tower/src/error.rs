//! The errors a meshed call or the mesh's start-up can fail with. Each names the destination,
//! the peer or the setting concerned; `mesh-tonic` and the HTTP glue map them to statuses in one
//! place.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_core::snapshot::ServiceName;

/// A boxed error, as tower and hyper pass them around.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a call through the mesh failed before the destination answered.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The control service knows no such service.
    #[error("unknown destination {0}: the control service has no such service")]
    UnknownDestination(ServiceName),
    /// The destination exists but has no endpoints.
    #[error("no endpoints for {0}")]
    NoEndpoints(ServiceName),
    /// No endpoint became ready in time (all are unreachable or still connecting).
    #[error("no ready endpoint for {destination} after {waited:?}")]
    NoReadyEndpoint {
        /// The destination.
        destination: ServiceName,
        /// How long the call waited.
        waited: Duration,
    },
    /// The connection to an endpoint failed while the call was on it.
    #[error("call to {endpoint} failed: {source}")]
    Endpoint {
        /// The endpoint's address.
        endpoint: SocketAddr,
        /// What hyper said.
        #[source]
        source: hyper::Error,
    },
}

/// Why a connection to a peer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect failed.
    #[error("connect to {peer}: {source}")]
    Tcp {
        /// The peer's address.
        peer: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (including a peer that presented the wrong identity).
    #[error("TLS handshake with {peer}: {source}")]
    Tls {
        /// The peer's address.
        peer: String,
        /// The handshake error; a refused identity is spelled out here.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP/2 handshake failed.
    #[error("HTTP/2 handshake with {peer}: {source}")]
    Http2 {
        /// The peer's address.
        peer: String,
        /// What hyper said.
        #[source]
        source: hyper::Error,
    },
    /// The peer did not answer in time.
    #[error("connect to {peer}: timed out after {after:?}")]
    Timeout {
        /// The peer's address.
        peer: String,
        /// The limit.
        after: Duration,
    },
    /// No address could be resolved.
    #[error("resolve {peer}: {source}")]
    Resolve {
        /// The name.
        peer: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
}

/// Walks an error's `source()` chain for an error of type `E`.
pub fn find_in_chain<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}
