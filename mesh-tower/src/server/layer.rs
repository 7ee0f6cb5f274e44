//! [`MeshLayer`]: the mesh's server side for any tower HTTP service, a tonic server
//! (`Server::builder().layer(MeshLayer::new())`) and an axum `Router`
//! (`router.layer(MeshLayer::new())`) alike.
//!
//! For each request it reads the connection's [`MeshConnectInfo`] (put in the extensions by
//! the mesh's listener), puts the caller's verified [`PeerIdentity`] into the extensions,
//! measures and traces the call ([`super::telemetry`]), checks it against the service's rate
//! limits ([`super::rate_limit`]: 429 or RESOURCE_EXHAUSTED over a limit), and judges it by
//! the service's inbound policy ([`super::authz`]): a denied call gets 403 or
//! PERMISSION_DENIED naming the policy; an audit-allowed call, or one from a caller without a
//! certificate, carries its [`mesh_core::authz::Decision`] in the extensions (see
//! [`super::authz`]).
//!
//! It fails closed: a request without [`MeshConnectInfo`] did not come through the mesh's
//! listener (a server wired by mistake to a plain listener) and is refused with 401 or
//! UNAUTHENTICATED instead of being served to an unauthenticated caller.
//!
//! Layered twice (a router that carries `MeshLayer` served by [`crate::Mesh::serve`], which
//! applies it too), the inner one sees the request already admitted and passes it through: a
//! call is judged and measured once.

use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::{HeaderValue, Request, Response, StatusCode};
use mesh_core::authz::Decision;

use super::authz::Authorizer;
use super::connect_info::MeshConnectInfo;
use super::telemetry::InboundFuture;
use crate::explain;
use crate::identity::PeerIdentity;
use crate::refusal::{MESH_ERROR_HEADER, refusal};
use crate::telemetry::ObservedBody;

/// The mesh's server layer; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
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

/// A service behind the mesh's server layer ([`MeshLayer`]).
///
/// Its responses carry the mesh's [`ObservedBody`] (which records the call when the body
/// ends) around the service's body; tonic's server boxes whatever body its layers return, so
/// for tonic this is no second box.
#[derive(Debug, Clone)]
pub struct MeshService<S> {
    inner: S,
}

/// The inner call, or the mesh's refusal in its place.
type Judged<F, R, E> = Either<F, Ready<Result<Response<R>, E>>>;
/// A refusal before the call is measured.
type Refused<R, E> = Ready<Result<Response<ObservedBody<R>>, E>>;

impl<S, B, R> tower::Service<Request<B>> for MeshService<S>
where
    S: tower::Service<Request<B>, Response = Response<R>>,
    R: Default,
{
    type Response = Response<ObservedBody<R>>;
    type Error = S::Error;
    type Future = Either<InboundFuture<Judged<S::Future, R, S::Error>>, Refused<R, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if is_admitted(&request) {
            return Either::Left(InboundFuture::unmeasured(Either::Left(
                self.inner.call(request),
            )));
        }
        // One reference count: the connection's details are shared.
        let Some(info) = request.extensions().get::<MeshConnectInfo>().cloned() else {
            return refuse(
                &request,
                "the request did not arrive over the mesh's mTLS listener",
            );
        };
        // The call is in flight until its response body ends (for the idle timer).
        let busy = info.activity().begin();
        let (peer, authorizer) = (info.peer(), info.authorizer());
        if authorizer.is_none() && peer.is_none() {
            return refuse(&request, "the caller presented no client certificate");
        }
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer.clone());
        }
        let inner = &mut self.inner;
        // The verdict, for a caller allowed to ask for it that asked (see `crate::explain`).
        let explain =
            authorizer.is_some_and(Authorizer::explains) && explain::wanted(request.headers());
        let mut verdict = None;
        // Both headers found in one scan of the request's few.
        let (content_type, timeout) = mesh_core::headers::first_two(
            request.headers(),
            &http::header::CONTENT_TYPE,
            &crate::inbound_deadline::GRPC_TIMEOUT,
        );
        // The caller's deadline, inherited by the calls the handler makes while serving this.
        let deadline = timeout
            .and_then(crate::inbound_deadline::parse_grpc_timeout)
            .map(|timeout| std::time::Instant::now() + timeout);
        // Read once for telemetry and authorization.
        let grpc = mesh_core::route::is_grpc_content_type(content_type);
        // Telemetry wraps authorization, so a refused call is measured and traced too.
        let future = InboundFuture::instrument(
            authorizer.and_then(|authorizer| authorizer.measure(peer)),
            peer,
            grpc,
            request,
            busy,
            |mut request| match authorizer {
                Some(authorizer) => {
                    match authorizer.authorize_with_grpc(&mut request, peer, grpc) {
                        Ok(allowed) => {
                            if explain {
                                verdict = allowed
                                    .as_ref()
                                    .or_else(|| request.extensions().get::<Decision>())
                                    .and_then(|d| HeaderValue::from_str(&d.to_string()).ok());
                            }
                            Either::Left(inner.call(request))
                        }
                        Err(mut refusal) => {
                            if explain && let Some(why) = refusal.headers().get(MESH_ERROR_HEADER) {
                                let why = why.clone();
                                refusal.headers_mut().insert(explain::AUTHZ_HEADER, why);
                            }
                            Either::Right(ready(Ok(refusal)))
                        }
                    }
                }
                None => Either::Left(inner.call(request)),
            },
        );
        Either::Left(future.with_explanation(verdict).with_deadline(deadline))
    }
}

/// Whether an outer [`MeshService`] has let this request in already: only the mesh puts a
/// [`PeerIdentity`] (a verified caller) or a [`Decision`] (a permissive server's plaintext
/// caller that a policy allowed) into a request's extensions, and only once it is admitted.
fn is_admitted<B>(request: &Request<B>) -> bool {
    let extensions = request.extensions();
    extensions.get::<PeerIdentity>().is_some() || extensions.get::<Decision>().is_some()
}

/// The mesh's UNAUTHENTICATED (gRPC) or 401 (HTTP) for a request it cannot vouch for.
fn refuse<B, F, R: Default, E>(request: &Request<B>, why: &str) -> Either<F, Refused<R, E>> {
    let grpc = mesh_core::route::is_grpc(request.headers());
    let response: Response<R> = refusal(
        grpc,
        tonic::Code::Unauthenticated,
        StatusCode::UNAUTHORIZED,
        why,
    );
    Either::Right(ready(Ok(response.map(ObservedBody::unobserved))))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer, Service, ServiceExt};

    use super::*;

    type Body = http_body_util::Full<bytes::Bytes>;

    fn app() -> impl Service<Request<()>, Response = Response<Body>, Error = Infallible> + Clone {
        tower::service_fn(|_request: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Body::from("served")))
        })
    }

    #[tokio::test]
    async fn a_request_without_the_mesh_connection_is_refused_in_its_callers_form() {
        let service = MeshLayer::new().layer(app());
        let http = service.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(http.status(), StatusCode::UNAUTHORIZED);
        assert!(
            http.headers()[crate::MESH_ERROR_HEADER]
                .to_str()
                .unwrap()
                .contains("mesh's mTLS listener")
        );

        let grpc = Request::builder()
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .body(())
            .unwrap();
        let grpc = service.oneshot(grpc).await.unwrap();
        assert_eq!(grpc.status(), StatusCode::OK);
        assert_eq!(grpc.headers()["grpc-status"], "16");
    }

    #[tokio::test]
    async fn an_admitted_request_passes_an_inner_layer_untouched() {
        let service = MeshLayer::new().layer(app());
        let mut request = Request::new(());
        let peer = PeerIdentity::new(
            mesh_core::SpiffeId::parse("spiffe://mesh.local/ns/default/sa/client").unwrap(),
        );
        request.extensions_mut().insert(peer);
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body, "served");
    }
}
