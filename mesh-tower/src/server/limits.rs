//! The limits the mesh's server side puts on what a caller may ask of it, so that one
//! misbehaving or hostile caller cannot exhaust a server that everyone else is using.
//!
//! | limit                               | default                 | what a caller over it sees          |
//! |-------------------------------------|-------------------------|-------------------------------------|
//! | established connections per listener | [`DEFAULT_MAX_CONNECTIONS`] | the connection is closed right after its handshake (logged) |
//! | handshakes in progress per listener | [`DEFAULT_MAX_HANDSHAKES`] (never more than the connection limit) | the connection is closed right after accept |
//! | handshakes in progress per source IP | [`DEFAULT_MAX_HANDSHAKES_PER_IP`] | the connection is closed right after accept |
//! | TLS handshake time                  | [`DEFAULT_HANDSHAKE_TIMEOUT`] | the connection is closed (logged) |
//! | time to the first request's headers | [`DEFAULT_HEADER_TIMEOUT`] | the connection is closed (HTTP/1.1 also between requests) |
//! | time with no call in flight         | [`DEFAULT_IDLE_TIMEOUT`] (or never) | the connection is closed (TLS `close_notify`); the caller reconnects for its next call |
//! | concurrent HTTP/2 streams per connection | [`DEFAULT_MAX_CONCURRENT_STREAMS`] | advertised in SETTINGS; clients queue, extra streams are reset |
//! | request header size                 | [`DEFAULT_MAX_HEADER_LIST_SIZE`] | `431 Request Header Fields Too Large` |
//! | declared request body size          | [`DEFAULT_MAX_BODY_SIZE`] | `413 Payload Too Large`, the app never sees the request |
//! | streamed request body size          | [`DEFAULT_MAX_BODY_SIZE`] | `413 Payload Too Large` (the app's read fails at the limit) |
//!
//! Connections that have not finished their handshake are counted apart from established
//! ones: a flood of connections that never finish (or never start) their handshake takes at
//! most [`ServerLimits::max_handshakes`] sockets, and one source address at most
//! [`ServerLimits::max_handshakes_per_ip`], so it cannot take the slots of authenticated
//! connections. A listener holds at most `max_connections + max_handshakes` sockets.
//!
//! The connection counts, the handshake time, the time to the first request and the idle time
//! apply to every server fed by [`crate::MeshIncoming`], tonic's included (an HTTP/2 client
//! must send its first request's HEADERS in time: the connection preface and SETTINGS alone
//! do not count; and a connection is idle while no call is in flight, whatever pings or
//! window updates cross it). The idle bound needs [`crate::MeshLayer`] to count the calls,
//! which every meshed server has: a server without it refuses every request anyway.
//! The HTTP limits apply to [`crate::server::serve`] (and so to [`crate::Mesh::serve`]); a
//! tonic server gets the same streams, header size and keep-alive from
//! `mesh_tonic::server(limits)` (or `MeshTonicExt::tonic_server`). A gRPC request body is
//! bounded per message by each generated service's `max_decoding_message_size` (tonic's 4 MiB
//! by default), which the mesh leaves as the application configured it.
//!
//! Every limit can be set in code ([`ServerLimits`]'s `with_*` methods) or, for the servers of
//! [`crate::Mesh`], from `MESH_SERVER_*` environment variables (see
//! [`crate::MeshSettings::server_limits`]).
//!
//! Workloads speak TLS 1.3 only (see [`crate::tls`]): a client offering only TLS 1.2 is
//! refused with a `protocol_version` alert. ALPN offers what each server speaks: `h2` and
//! `http/1.1` for [`crate::server::serve`], `h2` only for tonic; a client that offers neither
//! gets a `no_application_protocol` alert. A refused client certificate is answered with the
//! TLS alert rustls chose (for example `unknown_ca` or `bad_certificate`), not a bare close.
//!
//! The body limit is judged twice. A request that declares a `content-length` over the limit
//! is answered before the application is called. A body sent without a declared length
//! (HTTP/1.1 chunked, or HTTP/2 DATA frames without `content-length`) reaches the application
//! as a [`LimitedBody`]: reading past the limit fails there (nothing more is read), and the
//! mesh answers `413` in place of whatever the application then responds. A response the
//! application had already started streaming before it read too far is cut off instead (the
//! caller sees the stream reset).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{Either, Ready, ready};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use crate::error::BoxError;
use crate::refusal::MESH_ERROR_HEADER;

/// Default number of established (handshaken) connections one listener holds open at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default number of connections one listener lets handshake at once; more are closed at
/// accept. A handshake takes a few milliseconds, so 256 in progress is a high rate of new
/// connections, and what a flood can hold is small next to the established connections.
pub const DEFAULT_MAX_HANDSHAKES: usize = 256;
/// Default number of connections from one source IP address that may handshake at once: a
/// single flooding source cannot take the whole handshake budget.
pub const DEFAULT_MAX_HANDSHAKES_PER_IP: usize = 32;
/// Default time a client has to finish its TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a client has, once its handshake is done, to send its first request's headers
/// (and, on HTTP/1.1, each later request's headers once it starts one).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a connection may stay open with no call in flight: long enough that a caller
/// which calls every few minutes keeps its connection (a reconnect costs a handshake), short
/// enough that connections a client forgot, or holds on purpose, give their slots back.
/// Envoy's default is an hour and gRPC's none; a mesh's callers reconnect cheaply.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Default number of concurrent HTTP/2 streams a client may open on one connection.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Default size of a request's header list (HTTP/2, as RFC 9113 counts it) and, for HTTP/1.1,
/// of the read buffer a request head must fit in: 64 KiB.
pub const DEFAULT_MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;
/// Default largest request body a request may declare: 16 MiB.
pub const DEFAULT_MAX_BODY_SIZE: u64 = 16 * 1024 * 1024;
/// How long an HTTP/2 connection may go without traffic before the server pings the client.
pub const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long the server waits for the answer to a keep-alive ping before closing.
pub const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The limits of one mesh server; see the [module documentation](self) for what each does.
/// [`ServerLimits::default`] gives the `DEFAULT_*` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerLimits {
    /// Established connections one listener holds open at once; more are closed right after
    /// their handshake.
    pub max_connections: usize,
    /// Connections one listener lets handshake at once (never more than `max_connections`);
    /// more are closed right after accept.
    pub max_handshakes: usize,
    /// Connections from one source IP address that may handshake at once; more are closed
    /// right after accept.
    pub max_handshakes_per_ip: usize,
    /// Time a client has to finish its TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a client has to send its (first, and on HTTP/1.1 each) request's headers.
    pub header_timeout: Duration,
    /// Time a connection may stay open with no call in flight; `None`: no limit.
    pub idle_timeout: Option<Duration>,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Largest request header list (HTTP/2) or request head (HTTP/1.1), in bytes.
    pub max_header_list_size: u32,
    /// Largest request body a request may declare, in bytes.
    pub max_body_size: u64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            max_handshakes_per_ip: DEFAULT_MAX_HANDSHAKES_PER_IP,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            max_header_list_size: DEFAULT_MAX_HEADER_LIST_SIZE,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
        }
    }
}

impl ServerLimits {
    /// Sets [`ServerLimits::max_connections`] (at least 1).
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Sets [`ServerLimits::max_handshakes`] (at least 1).
    pub fn with_max_handshakes(mut self, max: usize) -> Self {
        self.max_handshakes = max.max(1);
        self
    }

    /// Sets [`ServerLimits::max_handshakes_per_ip`] (at least 1).
    pub fn with_max_handshakes_per_ip(mut self, max: usize) -> Self {
        self.max_handshakes_per_ip = max.max(1);
        self
    }

    /// Sets [`ServerLimits::handshake_timeout`].
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`ServerLimits::header_timeout`].
    pub fn with_header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// Sets [`ServerLimits::idle_timeout`] (`None`: connections may stay idle for ever).
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`ServerLimits::max_concurrent_streams`] (at least 1).
    pub fn with_max_concurrent_streams(mut self, max: u32) -> Self {
        self.max_concurrent_streams = max.max(1);
        self
    }

    /// Sets [`ServerLimits::max_header_list_size`].
    pub fn with_max_header_list_size(mut self, max: u32) -> Self {
        self.max_header_list_size = max;
        self
    }

    /// Sets [`ServerLimits::max_body_size`].
    pub fn with_max_body_size(mut self, max: u64) -> Self {
        self.max_body_size = max;
        self
    }

    /// The HTTP/1.1 read buffer size: the header limit, but never under hyper's minimum (8 KiB).
    pub(crate) fn http1_buf_size(&self) -> usize {
        usize::try_from(self.max_header_list_size)
            .unwrap_or(usize::MAX)
            .max(8 * 1024)
    }
}

/// Answers `413 Payload Too Large` for a request whose declared `content-length` is over the
/// limit, without calling the application; cuts a body streamed without a declared length at
/// the limit and answers `413` for it too.
#[derive(Debug, Clone)]
pub(crate) struct BodyLimit<S> {
    inner: S,
    max: u64,
}

impl<S> BodyLimit<S> {
    pub(crate) fn new(inner: S, max: u64) -> Self {
        Self { inner, max }
    }
}

impl<S, B, R> tower::Service<Request<B>> for BodyLimit<S>
where
    S: tower::Service<Request<LimitedBody<B>>, Response = Response<R>>,
    S::Future: Send + 'static,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<LimitedFuture<S::Future>, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match declared {
            Some(length) if length > self.max => {
                tracing::debug!(
                    length,
                    max = self.max,
                    "request body over the limit refused"
                );
                Either::Right(ready(Ok(too_large())))
            }
            _ => {
                let over = Arc::new(AtomicBool::new(false));
                let request = request.map(|body| LimitedBody {
                    inner: body,
                    remaining: self.max,
                    over: over.clone(),
                });
                Either::Left(LimitedFuture {
                    inner: Box::pin(self.inner.call(request)),
                    over,
                })
            }
        }
    }
}

/// The `413` the mesh answers for a body over the limit.
fn too_large<R: Default>() -> Response<R> {
    let mut response = Response::new(R::default());
    *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    response.headers_mut().insert(
        MESH_ERROR_HEADER,
        HeaderValue::from_static("request body too large"),
    );
    // Tell an HTTP/1.1 client the connection will not read the rest of the body.
    response
        .headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The application's response, replaced by `413` when it read its request body past the limit.
pub struct LimitedFuture<F> {
    // Boxed: the application's future need not be `Unpin`.
    inner: Pin<Box<F>>,
    over: Arc<AtomicBool>,
}

impl<F, R, E> Future for LimitedFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
    R: Default,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = std::task::ready!(self.inner.as_mut().poll(cx));
        if self.over.load(Ordering::Relaxed) {
            tracing::debug!("streamed request body over the limit refused");
            return Poll::Ready(Ok(too_large()));
        }
        Poll::Ready(result)
    }
}

impl<F> std::fmt::Debug for LimitedFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitedFuture").finish_non_exhaustive()
    }
}

/// A request body as the application sees it behind the mesh's server: the caller's bytes,
/// until more than the server's body limit has come; reading past it fails with
/// [`BodyTooLarge`] and reads nothing more.
#[derive(Debug)]
pub struct LimitedBody<B = hyper::body::Incoming> {
    inner: B,
    remaining: u64,
    over: Arc<AtomicBool>,
}

/// The error a [`LimitedBody`] gives once its limit is passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("request body over the server's limit")]
pub struct BodyTooLarge;

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.over.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(BodyTooLarge.into())));
        }
        let frame = match std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
            if len > self.remaining {
                self.over.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(BodyTooLarge.into())));
            }
            self.remaining -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tower::{Service, ServiceExt};

    #[tokio::test]
    async fn declared_bodies_over_the_limit_get_413_and_others_pass() {
        let inner = tower::service_fn(
            |_: Request<LimitedBody<http_body_util::Empty<Bytes>>>| async {
                Ok::<_, std::convert::Infallible>(Response::new(String::from("app")))
            },
        );
        let mut limit = BodyLimit::new(inner, 10);
        let over = Request::post("/")
            .header("content-length", "11")
            .body(http_body_util::Empty::new())
            .unwrap();
        let response = limit.ready().await.unwrap().call(over).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(response.headers().contains_key(MESH_ERROR_HEADER));
        for request in [
            Request::post("/")
                .header("content-length", "10")
                .body(http_body_util::Empty::new()),
            Request::get("/").body(http_body_util::Empty::new()),
        ] {
            let response = limit
                .ready()
                .await
                .unwrap()
                .call(request.unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.body(), "app");
        }
    }

    #[tokio::test]
    async fn streamed_bodies_are_cut_at_the_limit_and_answered_413() {
        use http_body_util::BodyExt;

        // The app reads the whole body and answers with its length.
        let inner = tower::service_fn(
            |request: Request<LimitedBody<http_body_util::StreamBody<_>>>| async move {
                let answer = match request.into_body().collect().await {
                    Ok(body) => body.to_bytes().len().to_string(),
                    Err(error) => error.to_string(),
                };
                Ok::<_, std::convert::Infallible>(Response::new(answer))
            },
        );
        let mut limit = BodyLimit::new(inner, 10);
        let streamed = |chunks: &[&'static [u8]]| {
            let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = chunks
                .iter()
                .map(|c| Ok(Frame::data(Bytes::from_static(c))))
                .collect();
            Request::post("/")
                .body(http_body_util::StreamBody::new(futures_util::stream::iter(
                    frames,
                )))
                .unwrap()
        };
        let over = streamed(&[b"123456", b"78901"]);
        let response = limit.ready().await.unwrap().call(over).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(response.headers().contains_key(MESH_ERROR_HEADER));

        let at_limit = streamed(&[b"12345", b"67890"]);
        let response = limit.ready().await.unwrap().call(at_limit).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body(), "10");
    }

    #[test]
    fn the_http1_buffer_never_goes_under_hypers_minimum() {
        assert_eq!(
            ServerLimits::default()
                .with_max_header_list_size(100)
                .http1_buf_size(),
            8 * 1024
        );
        assert_eq!(ServerLimits::default().http1_buf_size(), 64 * 1024);
    }
}
