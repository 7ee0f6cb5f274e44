//! Serving a tower HTTP service (an axum `Router`, or any other) on the mesh's accepted
//! connections with hyper: HTTP/2 or HTTP/1.1 as ALPN chose, the HTTP limits of
//! [`ServerLimits`], the connection's [`MeshConnectInfo`] in each request, the mesh's
//! [`MeshLayer`] around the service, and a graceful drain.
//!
//! tonic serves its own connections (`serve_with_incoming`) and gets the same layer from
//! `Server::builder().layer(MeshLayer::new())`, and the same HTTP/2 limits from
//! `mesh_tonic::server`.

use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tower::Layer;

use super::accept::MeshIncoming;
use super::connect_info::MeshConnectInfo;
use super::layer::MeshLayer;
use super::limits::{
    BodyLimit, HTTP2_KEEP_ALIVE_INTERVAL, HTTP2_KEEP_ALIVE_TIMEOUT, LimitedBody, ServerLimits,
};
use crate::error::BoxError;

/// What the mesh serves: a tower HTTP service of [`LimitedBody`] requests, cloned for each
/// connection and run on its task.
pub trait HttpService<ResBody>:
    tower::Service<
        Request<LimitedBody>,
        Response = http::Response<ResBody>,
        Future: Send + 'static,
        Error: Into<BoxError> + Send,
    > + Clone
    + Send
    + 'static
{
}

impl<S, ResBody> HttpService<ResBody> for S where
    S: tower::Service<
            Request<LimitedBody>,
            Response = http::Response<ResBody>,
            Future: Send + 'static,
            Error: Into<BoxError> + Send,
        > + Clone
        + Send
        + 'static
{
}

/// A response body an [`HttpService`] may answer with.
pub trait HttpBody:
    http_body::Body<Data: Send, Error: Into<BoxError>> + Default + Send + 'static
{
}

impl<B> HttpBody for B where
    B: http_body::Body<Data: Send, Error: Into<BoxError>> + Default + Send + 'static
{
}

/// Serves `service` (an axum `Router` or any tower HTTP service) on every connection of
/// `incoming`, over HTTP/2 or HTTP/1.1 as ALPN chose, behind the mesh's [`MeshLayer`]
/// (identity, telemetry, authorization; a `service` that carries the layer itself is judged
/// once) and the body limit. Runs until `incoming` ends.
pub async fn serve<S, ResBody>(incoming: MeshIncoming, service: S)
where
    S: HttpService<ResBody>,
    ResBody: HttpBody,
{
    serve_with_shutdown(incoming, service, std::future::pending(), Duration::ZERO).await;
}

/// Like [`serve()`], until `shutdown` completes; then drains: stops accepting (the listener
/// closes), tells every connection's peer to go elsewhere (HTTP/2 GOAWAY, or
/// `connection: close` after the current HTTP/1.1 request), lets calls in flight finish for up
/// to `grace`, and closes what is left.
pub async fn serve_with_shutdown<S, ResBody>(
    mut incoming: MeshIncoming,
    service: S,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) where
    S: HttpService<ResBody>,
    ResBody: HttpBody,
{
    use futures_util::StreamExt;
    let limits = *incoming.limits();
    let builder = http_builder(&limits);
    let draining = tokio::sync::watch::Sender::new(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            next = incoming.next() => match next {
                Some(Ok(stream)) => stream,
                _ => break,
            },
            () = &mut shutdown => break,
        };
        // Finished connections are reaped as new ones come, so the set stays small.
        while connections.try_join_next().is_some() {}
        let remote = stream.remote_addr();
        let service = WithConnectInfo {
            info: stream.connect_info().clone(),
            inner: MeshLayer::new().layer(BodyLimit::new(service.clone(), limits.max_body_size)),
        };
        let builder = builder.clone();
        let mut drain = draining.subscribe();
        connections.spawn(async move {
            // A client that starts no request in time (silent, or an HTTP/2 preface and
            // nothing more) is cut off by the stream itself (see `first_request`); an
            // HTTP/1.1 request head is bounded by hyper's header read timeout, a silent
            // HTTP/2 peer after its first request by keep-alive pings.
            let connection =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            tokio::pin!(connection);
            let result = tokio::select! {
                result = &mut connection => result,
                // The guard `wait_for` returns must not live across the await below.
                () = async { drop(drain.wait_for(|draining| *draining).await) } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(peer = %remote, %error, "connection ended with an error");
            }
        });
    }
    // Stop accepting first: the listener closes with `incoming`.
    drop(incoming);
    draining.send_replace(true);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "connections still open after the drain grace period; closing them"
        );
    }
}

/// The connection builder with `limits` applied.
fn http_builder(limits: &ServerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.http1_buf_size());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_size)
        .keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT);
    builder
}

/// Puts one connection's [`MeshConnectInfo`] into each of its requests, as tonic does with its
/// connection info.
#[derive(Debug, Clone)]
struct WithConnectInfo<S> {
    info: MeshConnectInfo,
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for WithConnectInfo<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.info.clone());
        self.inner.call(request)
    }
}
