//! The client stack for one destination: discovery from the control service's snapshots, P2C
//! over peak-EWMA across the destination's endpoints, HTTP/2 over mTLS to each, where each
//! endpoint must present the identity discovery says it has.
//!
//! [`MeshClient`] is cheap to clone; clones share one balancer (behind a buffer), like tonic's
//! `Channel`.

mod destination;
mod discover;
mod endpoint;

use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use mesh_core::snapshot::ServiceName;
use tokio_stream::wrappers::WatchStream;
use tower::buffer::Buffer;

pub use destination::ResponseFuture;
pub(crate) use endpoint::jittered;

use crate::discovery::Discovery;
use crate::error::BoxError;
use crate::identity::Identity;
use destination::DestinationService;
use discover::EndpointDiscover;

/// How many calls may wait for the balancer at once, per destination.
const BUFFER_CAPACITY: usize = 1024;

/// A client for one destination service. Any HTTP request body with `Bytes` chunks can be
/// sent; tonic uses it through `mesh-tonic`'s channel, hyper or axum callers directly.
pub struct MeshClient<B> {
    destination: ServiceName,
    inner: Buffer<Request<B>, ResponseFuture>,
}

impl<B: Send + 'static> Clone for MeshClient<B> {
    fn clone(&self) -> Self {
        Self {
            destination: self.destination.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<B> std::fmt::Debug for MeshClient<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshClient")
            .field("destination", &self.destination)
            .finish()
    }
}

impl<B> MeshClient<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(
        destination: ServiceName,
        discovery: &Discovery,
        identity: Identity,
        ready_timeout: Duration,
    ) -> Self {
        // The logical name is the authority the server sees (`greeter.default`); it is always a
        // valid authority because both parts are DNS labels.
        let authority = Authority::try_from(destination.to_string())
            .unwrap_or_else(|_| Authority::from_static("mesh.invalid"));
        let discover = EndpointDiscover::new(
            destination.clone(),
            authority,
            identity,
            WatchStream::new(discovery.subscribe()),
        );
        let service = DestinationService::new(
            destination.clone(),
            discover,
            discovery.subscribe(),
            ready_timeout,
        );
        Self {
            destination,
            inner: Buffer::new(service, BUFFER_CAPACITY),
        }
    }

    /// The destination this client calls.
    pub fn destination(&self) -> &ServiceName {
        &self.destination
    }
}

impl<B> tower::Service<Request<B>> for MeshClient<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = tower::buffer::future::ResponseFuture<ResponseFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.inner.call(request)
    }
}
