//! [`MeshLayer`]: the mesh's server side for `tonic::transport::Server::builder().layer(..)`.
//!
//! It puts the caller's verified [`PeerIdentity`] into the request extensions, judges the
//! request by the service's inbound policy (a denied call gets PERMISSION_DENIED naming the
//! policy; the decision is in the extensions), and refuses (UNAUTHENTICATED) a request that did
//! not arrive through the mesh's mTLS incoming stream, so a server wired by mistake to a
//! plaintext listener fails closed instead of serving unauthenticated callers.
//!
//! Each request it lets in gets the mesh's server telemetry ([`mesh_tower::telemetry`]): a
//! span parented on the caller's trace context and the call's duration by gRPC status, read
//! from the trailers when the response ends. Denied calls are measured too.

use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};

use http::{Request, Response};
use mesh_tower::telemetry::{InboundFuture, ObservedBody};

use crate::incoming::MeshConnectInfo;

/// The layer; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct MeshLayer {
    _private: (),
}

impl MeshLayer {
    /// The mesh's server layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> tower::Layer<S> for MeshLayer {
    type Service = MeshService<S>;

    fn layer(&self, inner: S) -> MeshService<S> {
        MeshService { inner }
    }
}

/// A tonic service behind the mesh's server layer, for `Server::builder().layer(..)`.
///
/// Its responses carry the mesh's [`ObservedBody`] (which records the call when it ends)
/// around tonic's body: tonic's server boxes whatever body its layers return, so wrapping is
/// free of a second box.
#[derive(Debug, Clone)]
pub struct MeshService<S> {
    inner: S,
}

type Inner<F, E> = Either<F, Ready<Result<Response<tonic::body::Body>, E>>>;
type Observed = Response<ObservedBody<tonic::body::Body>>;

impl<S, B> tower::Service<Request<B>> for MeshService<S>
where
    S: tower::Service<Request<B>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Observed;
    type Error = S::Error;
    type Future =
        Either<InboundFuture<Inner<S::Future, S::Error>>, Ready<Result<Self::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // One reference count: the connection's details are shared.
        let Some(info) = request.extensions().get::<MeshConnectInfo>().cloned() else {
            return refuse("the request did not arrive over the mesh's mTLS listener");
        };
        let (peer, authorizer) = (info.peer(), info.authorizer());
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer.clone());
        }
        if authorizer.is_none() && peer.is_none() {
            return refuse("the caller presented no client certificate");
        }
        let inner = &mut self.inner;
        // Telemetry wraps authorization, so a refused call is measured and traced too.
        let observed =
            InboundFuture::instrument(authorizer, peer, request, |request| match authorizer {
                Some(authorizer) => match authorizer.authorize(request, peer) {
                    Ok(request) => Either::Left(inner.call(request)),
                    Err(refusal) => Either::Right(ready(Ok(refusal))),
                },
                None => Either::Left(inner.call(request)),
            });
        Either::Left(observed)
    }
}

fn refuse<F, E>(why: &str) -> Either<F, Ready<Result<Observed, E>>> {
    let refusal = tonic::Status::unauthenticated(why).into_http();
    Either::Right(ready(Ok(refusal.map(ObservedBody::unobserved))))
}
