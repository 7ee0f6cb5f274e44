//! Opening an HTTP/2 connection over mTLS to a peer, and sending requests on it.
//!
//! One function does TCP, TLS (with the mesh's verifier for the identity the peer must present)
//! and the HTTP/2 handshake; [`Http2Sender`] sends requests on the result, filling in the
//! `:scheme` and `:authority` that HTTP/2 needs when the caller gave only a path (as tonic does).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use crate::error::{BoxError, ConnectError};

/// How long TCP + TLS + HTTP/2 handshakes may take together.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The future that drives an HTTP/2 connection; it ends when the connection closes.
pub(crate) type Connection = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Connects to `addr` over TLS with `tls` (whose verifier decides which identity is accepted)
/// and performs the HTTP/2 handshake. The caller drives the returned connection future (or
/// spawns it); it ends when the peer goes away or every sender is dropped.
pub(crate) async fn connect_http2<B>(
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
) -> Result<(http2::SendRequest<B>, Connection), ConnectError>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let peer = addr.to_string();
    let handshake = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| ConnectError::Tcp {
                peer: peer.clone(),
                source,
            })?;
        // Small RPCs: waiting to coalesce writes only adds latency.
        let _ = tcp.set_nodelay(true);
        let server_name = ServerName::IpAddress(addr.ip().into());
        let tls_stream = tokio_rustls::TlsConnector::from(tls)
            .connect(server_name, tcp)
            .await
            .map_err(|source| ConnectError::Tls {
                peer: peer.clone(),
                source,
            })?;
        let (sender, connection) = http2::Builder::new(BoxingExecutor)
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            // Boxed: a rustls stream is large, and hyper moves the connection's task type
            // (whose size includes the stream) every time it spawns a call's futures;
            // behind a box that is a pointer, a few KB less copying per call.
            .handshake(TokioIo::new(Box::new(tls_stream)))
            .await
            .map_err(|source| ConnectError::Http2 {
                peer: peer.clone(),
                source,
            })?;
        let connection: Connection = Box::pin(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%addr, %error, "connection closed");
            }
        });
        Ok((sender, connection))
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout {
            peer,
            after: CONNECT_TIMEOUT,
        }),
    }
}

/// Spawns the futures hyper hands over (two per call on a client connection) boxed. hyper's
/// future type for a connection is an enum as large as its biggest variant, the connection's
/// own task, several KB; spawned unboxed, tokio copies that whole size a few times per call.
/// Boxed, it is copied once and tokio moves a pointer (tonic's channel does the same).
#[derive(Debug, Clone, Copy)]
struct BoxingExecutor;

impl<F> hyper::rt::Executor<F> for BoxingExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        let future: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(future);
        tokio::spawn(future);
    }
}

/// Gives a request the absolute URI that HTTP/2 needs (`:scheme` and `:authority`) when the
/// caller only set a path.
pub(crate) fn set_origin<B>(request: &mut Request<B>, authority: &Authority) {
    if request.uri().scheme().is_some() && request.uri().authority().is_some() {
        return;
    }
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    parts.scheme = Some(Scheme::HTTPS);
    parts.authority = Some(authority.clone());
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    // Scheme, authority and path are all set, which is all `from_parts` requires.
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

/// A tower service over one HTTP/2 connection (used for the control service's channel).
#[derive(Debug)]
pub(crate) struct Http2Sender<B> {
    sender: http2::SendRequest<B>,
    authority: Authority,
}

impl<B> Clone for Http2Sender<B> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
            authority: self.authority.clone(),
        }
    }
}

impl<B> Http2Sender<B> {
    pub(crate) fn new(sender: http2::SendRequest<B>, authority: Authority) -> Self {
        Self { sender, authority }
    }
}

impl<B> tower::Service<Request<B>> for Http2Sender<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = hyper::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Response<Incoming>, hyper::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.sender.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        set_origin(&mut request, &self.authority);
        Box::pin(self.sender.send_request(request))
    }
}
