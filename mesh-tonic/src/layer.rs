//! [`MeshLayer`]: the mesh's server side for `tonic::transport::Server::builder().layer(..)`.
//!
//! It puts the caller's verified [`PeerIdentity`] into the request extensions, judges the
//! request by the service's inbound policy (a denied call gets PERMISSION_DENIED naming the
//! policy; the decision is in the extensions), and refuses (UNAUTHENTICATED) a request that did
//! not arrive through the mesh's mTLS incoming stream, so a server wired by mistake to a
//! plaintext listener fails closed instead of serving unauthenticated callers.

use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};

use http::{Request, Response};
use tonic::server::NamedService;

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

/// A tonic service behind the mesh's server layer. Passes `NamedService` through, so a single
/// wrapped service can still be added to a router.
#[derive(Debug, Clone)]
pub struct MeshService<S> {
    inner: S,
}

impl<S: NamedService> NamedService for MeshService<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<Request<B>> for MeshService<S>
where
    S: tower::Service<Request<B>, Response = Response<tonic::body::Body>>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Self::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // Clones of reference-counted handles only: no allocation per request.
        let Some((peer, authorizer)) = request
            .extensions()
            .get::<MeshConnectInfo>()
            .map(|info| (info.peer.clone(), info.authorizer.clone()))
        else {
            return refuse("the request did not arrive over the mesh's mTLS listener");
        };
        let Some(peer) = peer else {
            return refuse("the caller presented no client certificate");
        };
        request.extensions_mut().insert(peer.clone());
        match authorizer {
            Some(authorizer) => match authorizer.authorize(request, Some(&peer)) {
                Ok(request) => Either::Left(self.inner.call(request)),
                Err(refusal) => Either::Right(ready(Ok(refusal))),
            },
            None => Either::Left(self.inner.call(request)),
        }
    }
}

fn refuse<F, E>(why: &str) -> Either<F, Ready<Result<Response<tonic::body::Body>, E>>> {
    Either::Right(ready(Ok(tonic::Status::unauthenticated(why).into_http())))
}
