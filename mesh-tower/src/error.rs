//! The errors a meshed call or the mesh's start-up can fail with. Each names the destination,
//! the peer or the setting concerned; `mesh-tonic` and the HTTP glue map them to statuses in one
//! place.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_core::snapshot::{DestinationKey, ServiceName};

/// A boxed error, as tower and hyper pass them around.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a call through the mesh failed before (or instead of) the destination answering. The
/// mesh answers such a call itself, with the status [`CallError::http_status`] or
/// [`CallError::grpc_code`] gives and this error's text as the message.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The control service knows no such service (or no such port of it).
    #[error("unknown destination {0}: the control service has no such service or port")]
    UnknownDestination(DestinationKey),
    /// Routes are attached to the destination and none matches the request.
    #[error("no route of {destination} matches {request}")]
    NoRoute {
        /// The destination.
        destination: ServiceName,
        /// The request, as `METHOD path`.
        request: String,
    },
    /// The matched rule picked a backend service that does not exist.
    #[error(
        "route {route} of {destination} sends this share of traffic to {backend}, which does not exist"
    )]
    UnresolvedBackend {
        /// The destination.
        destination: ServiceName,
        /// The route and rule.
        route: String,
        /// The missing backend.
        backend: ServiceName,
    },
    /// The matched rule has no backend with a weight above zero.
    #[error("route {route} of {destination} has no backend with a weight above 0")]
    NoBackend {
        /// The destination.
        destination: ServiceName,
        /// The route and rule.
        route: String,
    },
    /// The destination (or the backend picked) exists but has no endpoints.
    #[error("no endpoints for {0}")]
    NoEndpoints(ServiceName),
    /// No endpoint became available in time (all are unreachable, connecting or ejected).
    #[error("no ready endpoint for {destination} after {waited:?}")]
    NoReadyEndpoint {
        /// The destination or backend.
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
    /// The matched rule's `FaultInjection` filter aborted the call: it was never sent.
    #[error("fault injected by {route} of {destination}: abort with {status}")]
    FaultAbort {
        /// The destination.
        destination: ServiceName,
        /// The route and rule.
        route: String,
        /// The status the filter answers with.
        status: mesh_core::fault::AbortStatus,
    },
    /// The request timeout (the route's, or the caller's `grpc-timeout`) passed.
    #[error("{destination} did not answer within {after:?}")]
    Timeout {
        /// The destination.
        destination: ServiceName,
        /// The timeout.
        after: Duration,
    },
}

impl CallError {
    /// The HTTP status the mesh answers with: 404 no route, 500 no valid backend (as Gateway
    /// API requires), 503 nothing to send to or a broken connection, 504 timeout.
    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Self::NoRoute { .. } => StatusCode::NOT_FOUND,
            Self::UnresolvedBackend { .. } | Self::NoBackend { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::UnknownDestination(_)
            | Self::NoEndpoints(_)
            | Self::NoReadyEndpoint { .. }
            | Self::Endpoint { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::FaultAbort { status, .. } => status.http_status(),
        }
    }

    /// The gRPC status code the mesh answers with: UNIMPLEMENTED no route, DEADLINE_EXCEEDED
    /// timeout, UNAVAILABLE otherwise.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            Self::NoRoute { .. } => tonic::Code::Unimplemented,
            Self::Timeout { .. } => tonic::Code::DeadlineExceeded,
            Self::FaultAbort { status, .. } => status.grpc_code(),
            _ => tonic::Code::Unavailable,
        }
    }
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

/// Whether the server refused the request without processing it, so that it is safe to send
/// again anywhere, whatever its method (RFC 9113 sections 6.8 and 8.7): the stream was above the
/// last stream id of the server's graceful GOAWAY (a draining server), or the server reset it
/// with REFUSED_STREAM.
///
/// h2 reports the peer's GOAWAY (reason NO_ERROR) to exactly those streams: the ones above its
/// last stream id, and the ones opened after it, which never left. The streams at or below it
/// may have been processed; when their connection closes they fail with an I/O error instead.
/// A GOAWAY with an error reason is not trusted here: h2 may pass that on more widely.
pub(crate) fn refused_unprocessed(error: &hyper::Error) -> bool {
    find_in_chain::<h2::Error>(error).is_some_and(|h2| {
        let reason = h2.reason();
        h2.is_remote()
            && ((h2.is_go_away() && reason == Some(h2::Reason::NO_ERROR))
                || (h2.is_reset() && reason == Some(h2::Reason::REFUSED_STREAM)))
    })
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
