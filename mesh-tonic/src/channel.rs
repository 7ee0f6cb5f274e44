//! [`MeshChannel`]: the mesh's client stack as a channel generated tonic clients accept.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::header::USER_AGENT;
use http::{HeaderValue, Request, Response};
use mesh_tower::{BoxError, MeshClient, ResponseBody};

use crate::status::status_from_error;

/// What the channel says it is, as tonic's own channel sends `tonic/<version>`: servers and
/// their logs can tell meshed callers (and which mesh release) apart. An application's own
/// `user-agent` is kept.
const MESH_USER_AGENT: HeaderValue = HeaderValue::from_static(concat!(
    "mesh-tonic/",
    env!("CARGO_PKG_VERSION"),
    " tonic/0.14"
));

/// A channel to one destination through the mesh: discovery, balancing and mTLS. Cheap to
/// clone. Failures reach the caller as a `tonic::Status` that names the destination.
#[derive(Debug, Clone)]
pub struct MeshChannel {
    client: MeshClient<tonic::body::Body>,
}

impl MeshChannel {
    /// Wraps a mesh client.
    pub fn new(client: MeshClient<tonic::body::Body>) -> Self {
        Self { client }
    }
}

impl tower::Service<Request<tonic::body::Body>> for MeshChannel {
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.client
            .poll_ready(cx)
            .map_err(|e| Box::new(status_from_error(e)) as BoxError)
    }

    fn call(&mut self, mut request: Request<tonic::body::Body>) -> Self::Future {
        request
            .headers_mut()
            .entry(USER_AGENT)
            .or_insert(MESH_USER_AGENT);
        ResponseFuture {
            inner: self.client.call(request),
        }
    }
}

/// The future of a [`MeshChannel`] call; errors are `tonic::Status`es.
pub struct ResponseFuture {
    inner: <MeshClient<tonic::body::Body> as tower::Service<Request<tonic::body::Body>>>::Future,
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ResponseBody>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = ready!(Pin::new(&mut self.inner).poll(cx));
        Poll::Ready(result.map_err(|e| Box::new(status_from_error(e)) as BoxError))
    }
}
